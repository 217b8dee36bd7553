//! One raw partition's engine and position: the code the live consumer, its recovery and the
//! postmortem replay all run, so that they cannot disagree.

use kev_engine::correlate::CorrelationRule;
use kev_engine::engine::EngineState;
use kev_engine::rules::RuleSet;
use kev_engine::{Engine, EngineConfig, Output};

use crate::config::{EnricherConfig, LoadError};
use crate::decode::Decoded;
use crate::records::Record;

/// Everything an engine is built from, loaded and checked once at startup.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    pub config: EngineConfig,
    pub rules: RuleSet,
    pub correlations: Vec<CorrelationRule>,
    /// Hash of the settings and rule texts, written into checkpoints.
    pub fingerprint: String,
}

impl EngineSpec {
    pub fn load(cfg: &EnricherConfig) -> Result<Self, LoadError> {
        Ok(Self {
            config: cfg.engine.clone(),
            rules: cfg.rules()?,
            correlations: cfg.correlations()?,
            fingerprint: cfg.engine_fingerprint()?,
        })
    }

    pub fn engine(&self, state: EngineState) -> Engine {
        Engine::restore(self.config.clone(), self.rules.clone(), state).with_correlations(self.correlations.clone())
    }
}

/// The engine of one raw partition and the next offset it expects.
pub struct PartitionEngine {
    pub partition: i32,
    engine: Engine,
    /// Every record before this offset is in the engine's state.
    pub next_offset: i64,
    scratch: Vec<Output>,
}

impl PartitionEngine {
    pub fn new(partition: i32, engine: Engine, next_offset: i64) -> Self {
        Self { partition, engine, next_offset, scratch: Vec::new() }
    }

    /// Applies the record read at `offset`, appending what it makes to `out`.
    pub fn apply(&mut self, decoded: Decoded, offset: i64, out: &mut Vec<Record>) {
        match decoded {
            Decoded::Raw(r) => {
                self.engine.on_record(r, self.partition, offset, &mut self.scratch);
                out.extend(self.scratch.drain(..).map(Record::Engine));
            }
            Decoded::Dead(d) => out.push(Record::Dead(d)),
        }
        self.next_offset = offset + 1;
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}
