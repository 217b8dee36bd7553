//! Postmortem replay: the enricher's records for an event-time range, re-derived from the raw
//! log, identical to what the live run emitted for that range.
//!
//! Which records belong to a range: those whose record timestamp (event time: see
//! [`crate::records::Record::timestamp_ms`]) is in `[from, to)`. Every record the engine emits
//! has a timestamp at or before the newest event time it has read, so a replay that starts from
//! a checkpoint whose newest event time is before `from` (or from the start of the raw log) sees
//! every record of the range being made, in the state the live run was in. It reads each
//! partition from there to its current end, because a straggler may still add to the range.
//!
//! The checkpoint to start from is found with the broker's timestamp lookup (ListOffsets by
//! time) on the checkpoint topic, checked against the records around its answer
//! ([`checkpoint::find_before`]): brokers differ in how well they answer it, and a wrong answer
//! falls back to reading the checkpoint topic newest first.

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kev_common::kafka::{partition_count, KafkaSettings, LogEnds, RangeReader};
use kev_schemas::Codec;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::checkpoint;
use crate::config::EnricherConfig;
use crate::decode::Source;
use crate::emit::{EmitError, Emitter};
use crate::live::{decode_retrying, RunError};
use crate::partition::{EngineSpec, PartitionEngine};
use crate::records::Record;

/// An event-time range, milliseconds, `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl TimeRange {
    pub fn contains(&self, t_ms: i64) -> bool {
        (self.from_ms..self.to_ms).contains(&t_ms)
    }
}

/// Where replayed records go.
pub enum Sink {
    /// JSON Lines: `{"topic", "key", "timestamp", "source", "value"}` per record.
    Jsonl(Box<dyn Write + Send>),
    /// The output topics, each name with a suffix so that a replay never mixes into the live
    /// topics by accident.
    Topics(Box<Emitter>),
    /// Kept in memory for the postmortem report.
    Report(Box<crate::report::ReportInput>),
}

/// A record a replay wrote, as a JSON line holds it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReplayedRecord {
    pub topic: String,
    pub key: String,
    pub timestamp: i64,
    /// `<raw topic>/<partition>/<offset>` of the raw record it was derived from.
    pub source: String,
    pub value: serde_json::Value,
}

/// What a replay did.
#[derive(Debug, Default, Clone)]
pub struct ReplayStats {
    pub records_read: u64,
    pub records_written: u64,
    /// Per partition: the offset it was read from and whether a checkpoint gave it.
    pub started_at: Vec<(i32, i64, bool)>,
    /// Per partition: how its checkpoint was looked for.
    pub time_lookups: Vec<(i32, checkpoint::TimeLookup)>,
}

/// Replays `range` over every partition of the raw topic into `sink`.
pub async fn replay(
    cfg: &EnricherConfig,
    spec: &EngineSpec,
    codec: &Codec,
    range: TimeRange,
    sink: &mut Sink,
    stop: &CancellationToken,
) -> Result<ReplayStats, RunError> {
    let timeout = Duration::from_secs(10);
    let consumer = reader(&cfg.kafka, &cfg.group_id)?;
    let partitions = partition_count(&cfg.kafka, &cfg.topics.raw, timeout)?;
    let ckpt_partitions = partition_count(&cfg.kafka, &cfg.topics.checkpoints, timeout).unwrap_or(1);
    let from_us = range.from_ms.saturating_mul(1000);

    // Where each partition starts, first, so that the progress bar knows the total.
    let ends = LogEnds::new(&cfg.kafka, &cfg.log_end_group())?;
    let mut plan = Vec::new();
    let mut lookups = Vec::new();
    for p in 0..partitions {
        let (low, high) = ends.watermarks(&cfg.topics.raw, p, timeout)?;
        let key = checkpoint::key(&cfg.group_id, &cfg.topics.raw, p);
        let (found, lookup) = checkpoint::find_before(
            &consumer,
            &ends,
            &cfg.topics.checkpoints,
            checkpoint::partition_of(p, ckpt_partitions),
            &key,
            from_us,
            |m| (low..=high).contains(&m.next_offset),
        )?;
        plan.push((p, low, high, found));
        lookups.push((p, lookup));
    }
    let total: i64 = plan.iter().map(|(_, low, high, c)| high - c.as_ref().map_or(*low, |c| c.next_offset)).sum();
    let bar = ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} replay {bar:40} {pos}/{len} raw records ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let mut stats = ReplayStats { time_lookups: lookups, ..Default::default() };
    let mut out = Vec::new();
    // Nobody asks a replay for readiness; the retries report through their logs.
    let health = kev_common::telemetry::Health::new();
    for (p, low, high, found) in plan {
        let (from, state, from_checkpoint) = match found {
            Some(c) => (c.next_offset, c.state, true),
            None => (low, Default::default(), false),
        };
        stats.started_at.push((p, from, from_checkpoint));
        tracing::info!(partition = p, from, high, from_checkpoint, "replaying partition");
        let mut pe = PartitionEngine::new(p, spec.engine(state), from);
        let mut reader = RangeReader::new(&consumer, &cfg.topics.raw, p, from, high)?;
        while let Some(msg) = reader.next_message()? {
            let Some(decoded) = decode_retrying(codec, Source::of(&msg), cfg.max_record_bytes, &health, stop).await
            else {
                return Ok(stats);
            };
            pe.apply(decoded, msg.offset(), &mut out);
            stats.records_read += 1;
            bar.inc(1);
            for r in out.drain(..) {
                if !range.contains(r.timestamp_ms()) {
                    continue;
                }
                write(sink, &cfg.topics, &r, p, msg.offset(), stop).await?;
                stats.records_written += 1;
            }
        }
    }
    if let Sink::Topics(e) = sink {
        while !e.flush(Duration::from_secs(10)).map_err(RunError::Delivery)? {
            tracing::info!("waiting for Kafka to acknowledge the replayed records");
        }
    }
    bar.finish_and_clear();
    Ok(stats)
}

async fn write(
    sink: &mut Sink,
    topics: &crate::config::TopicsSettings,
    r: &Record,
    partition: i32,
    offset: i64,
    stop: &CancellationToken,
) -> Result<(), RunError> {
    match sink {
        Sink::Jsonl(w) => {
            let line = ReplayedRecord {
                topic: r.stream().topic(topics).to_string(),
                key: String::from_utf8_lossy(&r.key()).into_owned(),
                timestamp: r.timestamp_ms(),
                source: format!("{}/{partition}/{offset}", topics.raw),
                value: r.to_json(),
            };
            let mut bytes = serde_json::to_vec(&line).expect("JSON values serialise");
            bytes.push(b'\n');
            w.write_all(&bytes).map_err(|e| RunError::Emit(EmitError::Encode(format!("writing the replay: {e}"))))
        }
        Sink::Topics(e) => Ok(e.emit(r, partition, offset, stop).await?),
        Sink::Report(input) => {
            input.add(r.clone());
            Ok(())
        }
    }
}

/// A consumer for assigned reads (no group membership, no commits).
pub fn reader(kafka: &KafkaSettings, group_id: &str) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
    kafka
        .consumer_config(&[
            ("group.id", &format!("{group_id}-replay")),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
        ])
        .create()
}

/// The output topics with `suffix` appended to each name.
pub fn suffixed(topics: &crate::config::TopicsSettings, suffix: &str) -> crate::config::TopicsSettings {
    let mut t = topics.clone();
    for stream in crate::records::Stream::ALL {
        stream.topic_mut(&mut t).push_str(suffix);
    }
    for route in &mut t.routes {
        route.topic.push_str(suffix);
    }
    t
}

/// Parses an RFC 3339 time (`2024-01-31T10:00:00Z`) into milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2024-01-31T10:00:00Z: {e}"))
}
