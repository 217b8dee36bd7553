//! Redaction and filters of the producer, end to end through librdkafka's in-process mock
//! cluster and the registry test double: what reaches the raw topic, byte for byte, and what
//! the metrics say was dropped.

use std::net::SocketAddr;
use std::path::Path;

use kev_common::devregistry::DevRegistry;
use kev_common::telemetry::Health;
use kev_producer::session::SessionStats;
use kev_producer::{run as producer, ProducerConfig};
use kev_schemas::{Codec, RawKind};
use metrics_exporter_prometheus::PrometheusBuilder;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::Message;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// The sbctl dump (real events of a support bundle) as JSON objects.
fn sbctl() -> Vec<Value> {
    kev_tests::data::objects("sbctl.jsonl.gz")
}

fn write_dump(dir: &Path, events: &[Value]) -> std::path::PathBuf {
    let path = dir.join("dump.jsonl");
    let text: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    std::fs::write(&path, text.join("\n")).unwrap();
    path
}

/// Replays `dump` under `cfg` into a fresh mock cluster; returns the session's counts, every
/// raw record's value bytes, and the Prometheus text of the metrics the run recorded.
fn replay(mut cfg: ProducerConfig, dump: &Path) -> (SessionStats, Vec<Vec<u8>>, String) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (stats, values) = metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let cancel = CancellationToken::new();
            let mock = MockCluster::new(1).unwrap();
            mock.create_topic(&cfg.topic.name, 1, 1).unwrap();
            cfg.kafka.bootstrap_servers = mock.bootstrap_servers();
            cfg.topic.create = false;
            let registry = DevRegistry::start(SocketAddr::from(([127, 0, 0, 1], 0)), cancel.clone()).await.unwrap();
            cfg.registry.url = registry.url.clone();
            let stats = producer::replay(&cfg, vec![dump.to_path_buf()], Health::new(), cancel.clone()).await.unwrap();
            let values = read_values(&cfg);
            cancel.cancel();
            (stats, values)
        })
    });
    (stats, values, handle.render())
}

fn read_values(cfg: &ProducerConfig) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer =
        cfg.kafka.client_config(&[("group.id", "redaction-test"), ("auto.offset.reset", "earliest")]).create().unwrap();
    let (_, high) = consumer.fetch_watermarks(&cfg.topic.name, 0, std::time::Duration::from_secs(10)).unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&cfg.topic.name, 0, rdkafka::Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut values = Vec::new();
    while (values.len() as i64) < high {
        if let Some(m) = consumer.poll(std::time::Duration::from_secs(10)) {
            values.push(m.unwrap().payload().unwrap_or_default().to_vec());
        } else {
            panic!("raw topic holds {high} records but only {} could be read", values.len());
        }
    }
    values
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Events of the raw topic, decoded (heartbeats left out).
fn decode_events(values: &[Vec<u8>]) -> Vec<kev_schemas::EventObservation> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let cancel = CancellationToken::new();
        let registry = DevRegistry::start(SocketAddr::from(([127, 0, 0, 1], 0)), cancel.clone()).await.unwrap();
        // Ids are per registry: register the schema in this one under the same id (1).
        registry.register("kev.events.raw-value", kev_schemas::schema::RAW_RECORD);
        let codec = Codec::new(&registry.url, &Default::default(), std::time::Duration::from_secs(5)).unwrap();
        let mut events = Vec::new();
        for v in values {
            let r = codec.decode_raw(v).await.unwrap();
            if r.kind == RawKind::Event {
                events.push(r.event.unwrap());
            }
        }
        events
    })
}

#[test]
fn secrets_in_real_shaped_events_never_reach_the_raw_topic() {
    let secrets = [
        "Pa55w0rd-XYZ",
        "sk_live_TOKEN123456789",
        "AKIAIOSFODNN7EXAMPLE",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl",
        "hunter2-secret-value",
        "ann-T0KEN-999999",
    ];
    let mut events = sbctl();
    let backoff = events.iter().position(|e| e["reason"] == "BackOff").unwrap();
    events[backoff]["message"] = json!(format!(
        "Liveness probe failed: Get \"https://admin:{}@10.0.0.5:8443/health\": Authorization: Bearer {} rejected",
        secrets[0], secrets[1]
    ));
    // Fields kev does not model are preserved as JSON in `extra`: they are redacted too, as are
    // the modelled ones such as annotations.
    events[backoff]["debugCommand"] = json!(format!("deploy --password={}", secrets[4]));
    events[backoff]["metadata"]["annotations"] =
        json!({"example.com/auth": format!("{{\"token\": \"{}\"}}", secrets[5])});
    let pulled = events.iter().position(|e| e["reason"] == "Pulled").unwrap();
    events[pulled]["message"] =
        json!(format!("Pulled with AWS_ACCESS_KEY_ID={} and token {} in 2s", secrets[2], secrets[3]));
    let dir = tempfile::tempdir().unwrap();
    let dump = write_dump(dir.path(), &events);

    let (stats, values, metrics) = replay(ProducerConfig::default(), &dump);
    assert_eq!(stats.published as usize, events.len(), "redaction drops nothing");
    for v in &values {
        for s in secrets {
            assert!(!contains(v, s), "secret {s} reached the raw topic");
        }
    }
    let decoded = decode_events(&values);
    let backoff_uid = events[backoff]["metadata"]["uid"].as_str().unwrap();
    let e = decoded.iter().find(|e| e.uid == backoff_uid).unwrap();
    let note = e.normalized.note.as_deref().unwrap();
    assert_eq!(
        note,
        "Liveness probe failed: Get \"https://[REDACTED]@10.0.0.5:8443/health\": Authorization: Bearer [REDACTED] rejected"
    );
    let core = e.core.as_ref().unwrap();
    assert_eq!(core.message.as_deref(), Some(note), "the preserved original is redacted the same way");
    assert!(core.extra.as_deref().unwrap_or_default().contains("deploy --password=[REDACTED]"), "{:?}", core.extra);
    let annotations = core.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["example.com/auth"], "{\"token\": \"[REDACTED]\"}");
    // Untouched events are byte-for-byte what the API server sent.
    let scheduled = events.iter().find(|e| e["reason"] == "Scheduled").unwrap();
    let s = decoded.iter().find(|e| e.uid == scheduled["metadata"]["uid"].as_str().unwrap()).unwrap();
    assert_eq!(s.normalized.note.as_deref(), scheduled["message"].as_str());
    for (rule, n) in [
        ("url-credentials", 1),
        ("bearer-token", 1),
        ("aws-access-key-id", 1),
        ("jwt", 1),
        ("secret-assignment", 1),
        ("secret-flag", 1),
    ] {
        assert!(
            metrics.contains(&format!("kev_producer_redactions_total{{rule=\"{rule}\"}} {n}")),
            "{rule}:\n{metrics}"
        );
    }
}

#[test]
fn filters_drop_what_the_rules_say_count_it_by_rule_and_keep_node_events() {
    let mut events = sbctl();
    let template = events.iter().find(|e| e["reason"] == "BackOff").unwrap().clone();
    // A Node event as the API server files it (namespace default, no namespace on the
    // regarding object), and a Pod event of namespace default.
    let mut node = template.clone();
    node["metadata"]["uid"] = json!("node-event-1");
    node["metadata"]["name"] = json!("node-1.17a");
    node["metadata"]["namespace"] = json!("default");
    node["involvedObject"] = json!({"kind": "Node", "name": "node-1", "uid": "node-1"});
    node["reason"] = json!("NodeNotReady");
    node["message"] = json!("Node node-1 status is now: NodeNotReady");
    let mut default_pod = template.clone();
    default_pod["metadata"]["uid"] = json!("default-pod-event-1");
    default_pod["metadata"]["namespace"] = json!("default");
    default_pod["involvedObject"]["namespace"] = json!("default");
    events.push(node);
    events.push(default_pod);
    let dir = tempfile::tempdir().unwrap();
    let dump = write_dump(dir.path(), &events);
    let namespaces: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["involvedObject"]["namespace"].as_str()).collect();
    // The bundle's events are all of velero; the added Pod event is of another namespace.
    assert_eq!(namespaces.into_iter().collect::<Vec<_>>(), ["default", "velero"]);

    let mut cfg = ProducerConfig::default();
    cfg.source.namespaces = vec!["velero".into()];
    cfg.filter = serde_norway::from_str(
        "drop: [{name: normal-container-lifecycle, type: Normal, reason: 'Pulled|Created|Started'}]",
    )
    .unwrap();
    let (stats, values, metrics) = replay(cfg, &dump);

    let decoded = decode_events(&values);
    let in_velero = |e: &Value| e["involvedObject"]["namespace"] == "velero";
    let lifecycle =
        |e: &Value| e["type"] == "Normal" && ["Pulled", "Created", "Started"].contains(&e["reason"].as_str().unwrap());
    let expected: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| (in_velero(e) && !lifecycle(e)) || e["reason"] == "NodeNotReady")
        .map(|e| e["metadata"]["uid"].as_str().unwrap())
        .collect();
    let published: std::collections::BTreeSet<&str> = decoded.iter().map(|e| e.uid.as_str()).collect();
    assert_eq!(published, expected);
    assert!(published.contains("node-event-1"), "the Node event passes the namespace list");
    let other_namespaces = events.iter().filter(|e| !in_velero(e) && e["reason"] != "NodeNotReady").count();
    let dropped_lifecycle = events.iter().filter(|e| in_velero(e) && lifecycle(e)).count();
    assert!(dropped_lifecycle > 0 && other_namespaces > 0);
    assert_eq!(stats.filtered as usize, other_namespaces + dropped_lifecycle);
    assert!(metrics.contains(&format!(
        "kev_producer_events_filtered_total{{rule=\"normal-container-lifecycle\"}} {dropped_lifecycle}"
    )));
    assert!(metrics
        .contains(&format!("kev_producer_events_filtered_total{{rule=\"source.namespaces\"}} {other_namespaces}")));
}

/// The shipped rules are tuned to secret shapes, not to ordinary event text: over the 13,800
/// real events they change nothing (no secret is in those public dumps), so names that
/// correlation needs (Secrets, ConfigMaps, volumes, pods) are never masked by accident.
#[test]
fn shipped_rules_leave_the_real_events_alone() {
    let redactor = kev_producer::redact::Redactor::new(&Default::default()).unwrap();
    let mut objects = kev_tests::data::all_objects();
    assert_eq!(objects.len(), 13_800);
    let mut changed = Vec::new();
    for o in &mut objects {
        let before = o.to_string();
        redactor.redact(o, &mut |rule| changed.push(rule.to_string()));
        if !changed.is_empty() {
            panic!("rules {changed:?} changed a real event:\n{before}\n{o}");
        }
    }
}
