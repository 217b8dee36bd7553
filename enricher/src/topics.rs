//! The topics the enricher reads and writes, created with the right cleanup policy.

use std::time::Duration;

use kev_common::kafka::{ensure_topic, partition_count, KafkaSettings, Refused};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

use crate::config::{EnricherConfig, TopicsSettings};
use crate::records::Stream;

/// Creates the missing output and checkpoint topics. Aggregates and incidents are compacted
/// (each key's newest record is its current value: a ksqlDB TABLE); enriched events, dead
/// letters and checkpoints are deleted after `retention_ms`. Existing topics are left as they
/// are. The raw topic is the producer's. Route topics get their stream's policy.
pub async fn create(kafka: &KafkaSettings, t: &TopicsSettings) -> Result<(), TopicsError> {
    let retention = t.retention_ms.to_string();
    let ensure_topic = |topic: &str, configs: &[(&str, &str)]| {
        let (topic, configs): (String, Vec<(String, String)>) =
            (topic.to_string(), configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        async move {
            let configs: Vec<(&str, &str)> = configs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            ensure_topic(kafka, &topic, t.partitions, t.replication, &configs).await.map_err(|e| {
                match Refused::of(&e, "describe or create", &format!("topic {topic}")) {
                    Some(r) => TopicsError::Refused(r),
                    None => TopicsError::Kafka(e),
                }
            })
        }
    };
    for stream in Stream::ALL {
        let configs: Vec<(&str, &str)> = if stream.compacted() {
            vec![("cleanup.policy", "compact")]
        } else {
            vec![("cleanup.policy", "delete"), ("retention.ms", &retention)]
        };
        ensure_topic(stream.topic(t), &configs).await?;
        for route in t.routes.iter().filter(|r| r.stream.stream() == stream) {
            ensure_topic(&route.topic, &configs).await?;
        }
    }
    ensure_topic(&t.checkpoints, &[("cleanup.policy", "delete"), ("retention.ms", &retention)]).await
}

/// Why the topics could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// The group's committed offset and the high watermark of each raw partition, in partition
/// order (both empty while the raw topic does not exist): how far the group is from the end of
/// the raw log, for a caller deciding it is done (the first-run command, tests, benchmarks).
pub fn group_progress(cfg: &EnricherConfig) -> Result<(Vec<i64>, Vec<i64>), KafkaError> {
    let timeout = Duration::from_secs(10);
    let c: BaseConsumer =
        cfg.kafka.client_config(&[("group.id", &cfg.group_id), ("enable.auto.commit", "false")]).create()?;
    let Ok(n) = partition_count(&cfg.kafka, &cfg.topics.raw, timeout) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let ends = kev_common::kafka::LogEnds::new(&cfg.kafka, &cfg.log_end_group())?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut highs = Vec::new();
    for p in 0..n {
        tpl.add_partition(&cfg.topics.raw, p);
        highs.push(ends.watermarks(&cfg.topics.raw, p, timeout)?.1);
    }
    // A group that has never committed reads as 0 everywhere.
    let committed = match c.committed_offsets(tpl, timeout) {
        Ok(t) => t.elements().iter().map(|e| e.offset().to_raw().unwrap_or(0).max(0)).collect(),
        Err(_) => vec![0; n as usize],
    };
    Ok((committed, highs))
}

/// Whether the group has committed every raw partition up to its current end (false while the
/// raw topic does not exist).
pub fn group_caught_up(cfg: &EnricherConfig) -> Result<bool, KafkaError> {
    let (committed, highs) = group_progress(cfg)?;
    Ok(!highs.is_empty() && committed.len() == highs.len() && committed.iter().zip(&highs).all(|(c, h)| c >= h))
}
