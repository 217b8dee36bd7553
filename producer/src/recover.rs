//! Rebuilding the de-duplication state from the raw topic.
//!
//! The producer's memory of what it published lives in Kafka, not on local disk: every
//! heartbeat names the oldest offset its state still needs (`recovery_offset`). A starting
//! producer finds the newest heartbeat of its cluster near the end of its partition, re-reads
//! from that offset to the end, and knows exactly what was published, whatever happened to the
//! previous instance (SIGKILL, node loss, leader handover).

use std::time::Duration;

use kev_common::kafka::{partition_count, partition_for_key, KafkaSettings, LogEnds, RangeReader};
use kev_schemas::{Codec, RawKind};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;

use crate::dedup::DedupState;

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("schema registry unavailable while reading the raw topic back: {0}")]
    Registry(String),
}

impl RecoverError {
    /// The missing ACL that made reading `topic` back fail, if that is what it was.
    pub fn refused(&self, topic: &str) -> Option<kev_common::kafka::Refused> {
        use rdkafka::error::RDKafkaErrorCode::GroupAuthorizationFailed;
        match self {
            RecoverError::Kafka(e) if e.rdkafka_error_code() == Some(GroupAuthorizationFailed) => {
                kev_common::kafka::Refused::of(e, "describe", "the groups named kev-producer-* of its readers")
            }
            RecoverError::Kafka(e) => {
                kev_common::kafka::Refused::of(e, "read (describe, fetch)", &format!("topic {topic}"))
            }
            RecoverError::Registry(_) => None,
        }
    }
}

/// What recovery found, for logs and tests.
#[derive(Debug)]
pub struct Recovered {
    pub state: DedupState,
    pub partition: i32,
    pub read_from: i64,
    pub high_watermark: i64,
    pub records_read: u64,
    pub found_heartbeat: bool,
    /// The newest heartbeat's source (such as `watch:events.k8s.io/v1`) and the
    /// resourceVersion it had read past: where a new watch of the same source resumes.
    pub position: Option<(String, String)>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// Reads back what this cluster's producer published, up to the current end of its partition.
pub async fn rebuild(
    settings: &KafkaSettings,
    topic: &str,
    cluster: &str,
    codec: &Codec,
    transactional: bool,
) -> Result<Recovered, RecoverError> {
    let started = std::time::Instant::now();
    let partitions = partition_count(settings, topic, TIMEOUT)?;
    let partition = partition_for_key(cluster.as_bytes(), partitions);
    let consumer: BaseConsumer = settings
        .consumer_config(&[
            ("group.id", &format!("kev-producer-recovery-{cluster}")),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "false"),
        ])
        .create()?;
    // The end read, not only listed: a broker that lists it short would have this producer
    // publish its own tail again. A transactional producer (which has fenced its predecessor,
    // so that none of its own transactions is open) reads to the high watermark: records its
    // predecessor committed can lie after another cluster's open transaction, and this
    // read_committed reader then waits for that to end.
    let group = format!("kev-producer-log-end-{cluster}");
    let ends = if transactional { LogEnds::uncommitted(settings, &group)? } else { LogEnds::new(settings, &group)? };
    let (low, high) = ends.watermarks(topic, partition, TIMEOUT)?;
    let mut records_read = 0;

    // Find the newest heartbeat of this cluster, reading ever larger tails of the partition.
    let mut chunk = 2_000i64;
    let mut read_from = low;
    let mut found_heartbeat = false;
    let mut from = high;
    let mut position = None;
    while from > low {
        from = (high - chunk).max(low);
        let mut newest: Option<i64> = None;
        read_range(&consumer, topic, partition, from, high, cluster, codec, &mut records_read, |rec, _| {
            if rec.kind == RawKind::Heartbeat {
                if let Some(hb) = &rec.heartbeat {
                    newest = hb.recovery_offset.or(newest);
                    position = hb.resource_version.clone().map(|rv| (hb.source.clone(), rv));
                }
            }
        })
        .await?;
        if let Some(offset) = newest {
            read_from = offset.clamp(low, high);
            found_heartbeat = true;
            break;
        }
        chunk *= 4;
    }

    let mut state = DedupState::new(high);
    read_range(&consumer, topic, partition, read_from, high, cluster, codec, &mut records_read, |rec, offset| {
        if let Some(ev) = &rec.event {
            state.replay(&ev.uid, ev.namespace.as_deref(), &ev.resource_version, ev.normalized.count, ev.verb, offset);
        }
    })
    .await?;
    let elapsed = started.elapsed();
    metrics::histogram!("kev_producer_recovery_seconds").record(elapsed.as_secs_f64());
    metrics::counter!("kev_producer_recovery_records_read_total").increment(records_read);
    tracing::info!(
        partition,
        read_from,
        high,
        records_read,
        entries = state.len(),
        found_heartbeat,
        ?position,
        ?elapsed,
        "rebuilt de-duplication state from the raw topic"
    );
    Ok(Recovered { state, partition, read_from, high_watermark: high, records_read, found_heartbeat, position })
}

/// Reads `[from, to)` of one partition, passing this cluster's records to `apply` in order.
#[allow(clippy::too_many_arguments)]
async fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    cluster: &str,
    codec: &Codec,
    records_read: &mut u64,
    mut apply: impl FnMut(&kev_schemas::RawRecord, i64),
) -> Result<(), RecoverError> {
    let mut reader = RangeReader::new(consumer, topic, partition, from, to)?;
    while let Some(msg) = reader.next_message()? {
        *records_read += 1;
        if msg.key() != Some(cluster.as_bytes()) {
            continue;
        }
        let Some(payload) = msg.payload() else { continue };
        match codec.decode_raw(payload).await {
            Ok(rec) if rec.cluster == cluster => apply(&rec, msg.offset()),
            Ok(_) => {}
            Err(e) if e.is_retriable() => return Err(RecoverError::Registry(e.to_string())),
            Err(e) => {
                metrics::counter!("kev_producer_recovery_unreadable_total").increment(1);
                tracing::warn!(partition, offset = msg.offset(), error = %e, "a record of the raw topic cannot be read back; it is skipped");
            }
        }
    }
    Ok(())
}
