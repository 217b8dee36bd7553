//! The topics the enricher reads and writes, created with the right cleanup policy.

use kev_common::kafka::{ensure_topic, KafkaSettings};
use rdkafka::error::KafkaError;

use crate::config::TopicsSettings;
use crate::records::Stream;

/// Creates the missing output and checkpoint topics. Aggregates and incidents are compacted
/// (each key's newest record is its current value: a ksqlDB TABLE); enriched events, dead
/// letters and checkpoints are deleted after `retention_ms`. Existing topics are left as they
/// are. The raw topic is the producer's.
pub async fn create(kafka: &KafkaSettings, t: &TopicsSettings) -> Result<(), KafkaError> {
    let retention = t.retention_ms.to_string();
    for stream in Stream::ALL {
        let configs: Vec<(&str, &str)> = if stream.compacted() {
            vec![("cleanup.policy", "compact")]
        } else {
            vec![("cleanup.policy", "delete"), ("retention.ms", &retention)]
        };
        ensure_topic(kafka, stream.topic(t), t.partitions, t.replication, &configs).await?;
    }
    ensure_topic(
        kafka,
        &t.checkpoints,
        t.partitions,
        t.replication,
        &[("cleanup.policy", "delete"), ("retention.ms", &retention)],
    )
    .await
}
