//! The enricher's configuration: one struct, every default a named function with its reason.

use std::path::PathBuf;
use std::time::Duration;

use kev_common::kafka::KafkaSettings;
use kev_common::telemetry::HttpSettings;
use kev_engine::correlate::{default_rules, parse_rules, CorrelationRule};
use kev_engine::rules::{RuleSet, RulesError};
use kev_engine::EngineConfig;
use kev_schemas::codec::RegistrySettings;
use serde::Deserialize;

pub use kev_common::kafka::ProcessingGuarantee;

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnricherConfig {
    /// Consumer group of the enricher instances; also names their checkpoints. Default
    /// `kev-enricher`.
    #[serde(default = "default_group")]
    pub group_id: String,
    #[serde(default)]
    pub kafka: KafkaSettings,
    #[serde(default)]
    pub registry: RegistrySettings,
    #[serde(default)]
    pub topics: TopicsSettings,
    /// The engine: window size, allowed lateness, incident timing.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Classification rules merged over the shipped ones (`engine/rules/default.yaml`).
    #[serde(default)]
    pub rules_file: Option<PathBuf>,
    /// Correlation rules replacing the shipped ones (`engine/rules/correlation.yaml`).
    #[serde(default)]
    pub correlation_file: Option<PathBuf>,
    /// Milliseconds between commits. At each, kev waits until Kafka has acknowledged every
    /// output derived so far, then commits the input offsets: the longer, the fewer pauses, the
    /// more output a crash re-emits. Default 1000.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// Milliseconds between engine checkpoints. A restart re-reads the raw log from the newest
    /// checkpoint, so this bounds recovery time; keep it far below the raw topic's retention.
    /// Default 60000.
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    /// `at_least_once` (the default): outputs are a deterministic function of the raw log and
    /// the commit barrier commits the input offsets once Kafka has acknowledged them, so a
    /// crash re-emits byte-identical records; works on any Kafka-protocol broker.
    /// `exactly_once`: each barrier commits the outputs, the checkpoints and the input offsets
    /// in one Kafka transaction (Apache Kafka 2.5 or later), so a `read_committed` reader sees
    /// every output once.
    #[serde(default)]
    pub processing_guarantee: ProcessingGuarantee,
    /// `transactional.id` of this instance in `exactly_once` mode: unique among the live
    /// instances and kept across an instance's restarts (a StatefulSet pod's name), so that a
    /// restarted instance fences its predecessor's open transaction at once instead of
    /// waiting for it to time out. Default `<group_id>-<HOSTNAME>`.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// Raw records larger than this many bytes are dead-lettered unread. Default 1048576.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    #[serde(default)]
    pub http: HttpSettings,
    /// Incidents posted to Alertmanager (see `alerts`). Default off.
    #[serde(default)]
    pub alerting: crate::alerts::AlertingSettings,
    /// Logs as JSON lines instead of text. Default false.
    #[serde(default)]
    pub log_json: bool,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsSettings {
    /// The raw topic the producer writes. Default `kev.events.raw`.
    #[serde(default = "default_raw")]
    pub raw: String,
    /// Enriched events, keyed by the regarding object. Default `kev.events.enriched`.
    #[serde(default = "default_enriched")]
    pub enriched: String,
    /// Window aggregates, keyed by fingerprint and window start (compacted). Default
    /// `kev.events.aggregates`.
    #[serde(default = "default_aggregates")]
    pub aggregates: String,
    /// Incidents, keyed by incident id, each record the whole incident (compacted). Default
    /// `kev.incidents`.
    #[serde(default = "default_incidents")]
    pub incidents: String,
    /// Raw records the enricher cannot read. Default `kev.events.dlq`.
    #[serde(default = "default_dead_letters")]
    pub dead_letters: String,
    /// The enricher's engine checkpoints (internal; JSON, not Avro). Default
    /// `kev.enricher.checkpoints`.
    #[serde(default = "default_checkpoints")]
    pub checkpoints: String,
    /// Partitions of the topics kev creates. Default 3.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of the topics kev creates. Default 1 (set 3 in production).
    #[serde(default = "default_replication")]
    pub replication: i32,
    /// Retention of the delete-policy topics kev creates (enriched events, dead letters,
    /// checkpoints), in milliseconds. Default 604800000 (7 days).
    #[serde(default = "default_retention_ms")]
    pub retention_ms: i64,
    /// Create missing topics at start. Default true.
    #[serde(default = "yes")]
    pub create: bool,
    /// Extra topics that receive copies of the records matching a rule, for teams that
    /// consume only their slice (see `routes`). Default none.
    #[serde(default)]
    pub routes: Vec<crate::routes::RouteSettings>,
}

impl TopicsSettings {
    /// Every topic the enricher writes: the four output streams, then its checkpoints. The one
    /// list error messages and checks name them by.
    pub fn written(&self) -> [&str; 5] {
        [&self.enriched, &self.aggregates, &self.incidents, &self.dead_letters, &self.checkpoints].map(String::as_str)
    }
}

fn default_group() -> String {
    "kev-enricher".into()
}
fn default_commit_interval_ms() -> u64 {
    1_000
}
fn default_checkpoint_interval_ms() -> u64 {
    60_000
}
fn default_max_record_bytes() -> usize {
    1 << 20
}
fn default_raw() -> String {
    "kev.events.raw".into()
}
fn default_enriched() -> String {
    "kev.events.enriched".into()
}
fn default_aggregates() -> String {
    "kev.events.aggregates".into()
}
fn default_incidents() -> String {
    "kev.incidents".into()
}
fn default_dead_letters() -> String {
    "kev.events.dlq".into()
}
fn default_checkpoints() -> String {
    "kev.enricher.checkpoints".into()
}
fn default_partitions() -> i32 {
    3
}
fn default_replication() -> i32 {
    1
}
fn default_retention_ms() -> i64 {
    7 * 24 * 3600 * 1000
}
fn yes() -> bool {
    true
}

impl Default for EnricherConfig {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

impl Default for TopicsSettings {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

/// A rules file that cannot be read or is wrong: refused at startup with the file and reason.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Rules(#[from] RulesError),
}

impl EnricherConfig {
    /// The group of the log-end probe's consumer, under the group's own name as a prefix, so
    /// that the group's prefixed ACL covers it (it never joins or commits).
    pub fn log_end_group(&self) -> String {
        format!("{}-log-end", self.group_id)
    }

    /// The `transactional.id` of this instance in `exactly_once` mode.
    pub fn transactional_id(&self) -> String {
        self.transactional_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "kev".into());
            format!("{}-{host}", self.group_id)
        })
    }

    pub fn exactly_once(&self) -> bool {
        self.processing_guarantee == ProcessingGuarantee::ExactlyOnce
    }

    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms.max(10))
    }

    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms.max(100))
    }

    /// The classification rules: the shipped ones with the user's file merged over them.
    pub fn rules(&self) -> Result<RuleSet, LoadError> {
        match &self.rules_file {
            None => Ok(RuleSet::defaults()),
            Some(path) => {
                let text = read(path)?;
                Ok(RuleSet::with_overrides(&text, &path.display().to_string())?)
            }
        }
    }

    /// The correlation rules: the user's file, else the shipped ones.
    pub fn correlations(&self) -> Result<Vec<CorrelationRule>, LoadError> {
        match &self.correlation_file {
            None => Ok(default_rules()),
            Some(path) => Ok(parse_rules(&read(path)?, &path.display().to_string())?),
        }
    }

    /// A short hash of everything that shapes the engine's output (engine settings and rule
    /// texts), stored in checkpoints so that a restore under another configuration says so.
    pub fn engine_fingerprint(&self) -> Result<String, LoadError> {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(serde_json::to_string(&self.engine).unwrap_or_default().as_bytes());
        for f in [&self.rules_file, &self.correlation_file].into_iter().flatten() {
            h.update(read(f)?.as_bytes());
        }
        Ok(format!("{:016x}", h.digest()))
    }
}

fn read(path: &PathBuf) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Io { path: path.clone(), source })
}
