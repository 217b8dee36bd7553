//! What the raw topic must hold, checked record by record.

use std::collections::HashMap;
use std::net::SocketAddr;

use kev_common::devregistry::DevRegistry;
use kev_common::kafka::partition_for_key;
use kev_producer::readback::Published;
use kev_producer::ProducerConfig;
use kev_schemas::k8s::same_object;
use kev_schemas::RawKind;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

pub async fn registry(cancel: &CancellationToken) -> DevRegistry {
    DevRegistry::start(SocketAddr::from(([127, 0, 0, 1], 0)), cancel.clone()).await.unwrap()
}

/// A producer configuration for `broker` and `registry`, 3 partitions.
pub fn config(broker: &Broker, registry: &DevRegistry, cluster: &str) -> ProducerConfig {
    let mut cfg = ProducerConfig { kafka: broker.settings(), cluster_id: cluster.into(), ..Default::default() };
    cfg.registry.url = registry.url.clone();
    cfg.topic.partitions = 3;
    cfg.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg
}

/// (uid, resourceVersion) of an object.
pub fn version_key(v: &Value) -> (String, String) {
    (
        v["metadata"]["uid"].as_str().unwrap_or_default().to_string(),
        v["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string(),
    )
}

/// Asserts the topic holds every expected version exactly once, each equal field by field to
/// the object it was read from, all in the cluster's partition under the cluster's key. Returns
/// the number of event records.
pub fn assert_exactly_once(records: &[Published], expected: &[Value], cluster: &str, partitions: i32) -> usize {
    let by_key: HashMap<(String, String), &Value> = expected.iter().map(|v| (version_key(v), v)).collect();
    assert_eq!(by_key.len(), expected.len(), "expected versions are unique");
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let partition = partition_for_key(cluster.as_bytes(), partitions);
    for p in records {
        assert_eq!(p.key, cluster.as_bytes());
        assert_eq!(p.partition, partition, "all of a cluster's records share its partition");
        if p.record.kind != RawKind::Event {
            continue;
        }
        let e = p.record.event.as_ref().unwrap();
        let key = (e.uid.clone(), e.resource_version.clone());
        let source = by_key.get(&key).unwrap_or_else(|| panic!("published {key:?}, which was never served"));
        let back = e.object().unwrap().to_json();
        assert!(same_object(&back, source), "{key:?} differs from its source:\n{back}\n{source}");
        *seen.entry(key).or_default() += 1;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "published more than once: {duplicates:?}");
    let missing: Vec<_> = by_key.keys().filter(|k| !seen.contains_key(*k)).take(5).collect();
    assert!(missing.is_empty(), "{} versions were never published, such as {missing:?}", by_key.len() - seen.len());
    seen.len()
}
