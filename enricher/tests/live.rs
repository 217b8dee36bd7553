//! The live enricher on librdkafka's in-process mock cluster (fast; the end-to-end tests on a
//! real broker process are in `tests/tests/enricher_*.rs`): what it emits equals the engine run
//! over the raw log, and a clean stop and restart mid-stream neither loses nor repeats a record.

use std::net::SocketAddr;
use std::time::Duration;

use kev_common::devregistry::DevRegistry;
use kev_common::kafka::KafkaSettings;
use kev_common::telemetry::Health;
use kev_enricher::partition::EngineSpec;
use kev_enricher::records::Stream;
use kev_enricher::{live, EnricherConfig};
use kev_producer::{run as producer, ProducerConfig};
use kev_tests::outputs::{self, assert_matches, counts, enricher_config, read_outputs, wait_caught_up};
use kev_tests::{data, init_logs};
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

struct Setup {
    _mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    registry: DevRegistry,
    cfg: EnricherConfig,
    cancel: CancellationToken,
}

async fn setup() -> Setup {
    init_logs();
    let cancel = CancellationToken::new();
    let mock = MockCluster::new(1).unwrap();
    let registry = DevRegistry::start(SocketAddr::from(([127, 0, 0, 1], 0)), cancel.clone()).await.unwrap();
    let mut kafka = KafkaSettings { bootstrap_servers: mock.bootstrap_servers(), ..Default::default() };
    // The mock cluster does not end a member's session when it leaves: a restarted member
    // would wait out the previous one's session (45 s by default).
    kafka.properties.insert("session.timeout.ms".into(), "6000".into());
    let mut cfg = enricher_config(kafka, &registry.url);
    // The mock cluster has no CreateTopics.
    cfg.topics.create = false;
    let t = &cfg.topics;
    for topic in [&t.raw, &t.enriched, &t.aggregates, &t.incidents, &t.dead_letters, &t.checkpoints] {
        mock.create_topic(topic, 3, 1).unwrap();
    }
    Setup { _mock: mock, registry, cfg, cancel }
}

/// Publishes `files` under `cluster` with the producer, as in production.
async fn publish(s: &Setup, cluster: &str, files: &[&str]) {
    let mut p = ProducerConfig { kafka: s.cfg.kafka.clone(), cluster_id: cluster.into(), ..Default::default() };
    p.registry.url = s.registry.url.clone();
    p.topic.create = false;
    p.topic.name = s.cfg.topics.raw.clone();
    let files = files.iter().map(|f| data::dir().join(f)).collect();
    producer::replay(&p, files, Health::new(), s.cancel.clone()).await.unwrap();
}

fn start(s: &Setup) -> (CancellationToken, tokio::task::JoinHandle<live::RunStats>) {
    let stop = s.cancel.child_token();
    let cfg = s.cfg.clone();
    let spec = EngineSpec::load(&cfg).unwrap();
    let codec = std::sync::Arc::new(cfg.registry.codec().unwrap());
    let st = stop.clone();
    let h = tokio::spawn(async move { live::run(&cfg, &spec, codec, Health::new(), st).await.unwrap() });
    (stop, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_output_is_the_engine_over_the_raw_log() {
    let s = setup().await;
    publish(&s, "small", &["kspan.jsonl.gz", "sbctl.jsonl.gz", "support-bundle-kit.jsonl.gz"]).await;
    publish(&s, "troubleshoot", &["troubleshoot.jsonl.gz"]).await;
    let (stop, h) = start(&s);
    wait_caught_up(&s.cfg, Duration::from_secs(120)).await;
    stop.cancel();
    let stats = h.await.unwrap();
    let codec = s.cfg.registry.codec().unwrap();
    let reference = outputs::reference(&s.cfg, &codec).await;
    let live = read_outputs(&s.cfg);
    let cmp = assert_matches(&live, &reference, true);
    let c = counts(&live);
    assert!(c[&Stream::Enriched] > 3_000, "{c:?}");
    assert!(c[&Stream::Aggregates] > 500, "{c:?}");
    assert!(c[&Stream::Incidents] > 0, "{c:?}");
    assert_eq!(c.get(&Stream::DeadLetters).copied().unwrap_or(0), 0);
    assert_eq!(cmp.duplicates, 0);
    println!("{stats:?}; outputs {c:?}");
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_mid_stream_and_a_restart_repeat_nothing() {
    let s = setup().await;
    let t0 = std::time::Instant::now();
    publish(&s, "troubleshoot", &["troubleshoot.jsonl.gz"]).await;
    eprintln!("published in {:?}", t0.elapsed());
    // A slow first run, stopped part way.
    let mut slow = s.cfg.clone();
    slow.commit_interval_ms = 50;
    let (stop, h) = {
        let stop = s.cancel.child_token();
        let spec = EngineSpec::load(&slow).unwrap();
        let codec = std::sync::Arc::new(slow.registry.codec().unwrap());
        let st = stop.clone();
        (stop, tokio::spawn(async move { live::run(&slow, &spec, codec, Health::new(), st).await.unwrap() }))
    };
    outputs::wait_started(&s.cfg, Duration::from_secs(60)).await;
    stop.cancel();
    let first = h.await.unwrap();
    assert!(first.records_in > 0 && first.records_in < 2_995, "stopped mid-stream: {first:?}");
    // More raw records arrive while it is down; then it restarts and catches up.
    publish(&s, "small", &["kspan.jsonl.gz", "sbctl.jsonl.gz"]).await;
    eprintln!("second publish at {:?}", t0.elapsed());
    let (stop, h) = start(&s);
    wait_caught_up(&s.cfg, Duration::from_secs(120)).await;
    eprintln!("caught up at {:?}", t0.elapsed());
    stop.cancel();
    let second = h.await.unwrap();
    let codec = s.cfg.registry.codec().unwrap();
    let reference = outputs::reference(&s.cfg, &codec).await;
    let cmp = assert_matches(&read_outputs(&s.cfg), &reference, true);
    assert_eq!(cmp.duplicates, 0);
    // The clean stop checkpointed at its last commit: nothing to re-read.
    assert_eq!(second.recovered_records, 0, "{second:?}");
    println!("first run {first:?}; second run {second:?}; {cmp:?}");
    s.cancel.cancel();
}
