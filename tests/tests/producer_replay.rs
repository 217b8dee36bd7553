//! The producer replaying the real dumps into an Apache Kafka broker process: every (uid,
//! resourceVersion) exactly once, each record equal to its source object, across restarts,
//! SIGKILLs, a broker outage and a registry outage.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kev_common::kafka::partition_for_key;
use kev_common::telemetry::Health;
use kev_producer::readback;
use kev_producer::run;
use kev_tests::broker::Broker;
use kev_tests::expect::{assert_exactly_once, config, registry};
use kev_tests::{data, init_logs, procs};
use rand::Rng;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_the_real_dumps_publishes_every_version_once_field_by_field() {
    let tmp = tempfile::tempdir().unwrap();
    replay_twice(tmp.path()).await;
}

/// Replays the real dumps, then again as a restarted producer would: every version published
/// once, field by field, and the second run publishes nothing.
async fn replay_twice(dir: &std::path::Path) {
    init_logs();
    let broker = Broker::start(dir);
    let cancel = CancellationToken::new();
    let registry = registry(&cancel).await;
    let cfg = config(&broker, &registry, "real-dumps");
    let sources = data::all_objects();

    let first = run::replay(&cfg, data::files(), Health::new(), cancel.clone()).await.unwrap();
    assert_eq!(first.published as usize, sources.len());
    assert_eq!(first.invalid, 0);

    // A second run over the same dumps (a restart after completion) publishes nothing new.
    let second = run::replay(&cfg, data::files(), Health::new(), cancel.clone()).await.unwrap();
    assert_eq!(second.published, 0);
    assert_eq!((second.duplicates + second.stale) as usize, sources.len());

    let codec = run::codec(&cfg).unwrap();
    let records = readback::read_all(&cfg.kafka, &cfg.topic.name, &codec).await.unwrap();
    let events = assert_exactly_once(&records, &sources, &cfg.cluster_id, cfg.topic.partitions);
    let shapes = records.iter().filter_map(|p| p.record.event.as_ref()).fold(HashMap::new(), |mut m, e| {
        *m.entry(e.api_version.clone()).or_insert(0) += 1;
        m
    });
    assert_eq!(shapes.get("events.k8s.io/v1"), Some(&9), "{shapes:?}");
    println!(
        "replayed {} real events ({shapes:?}) into Kafka: {events} published exactly once, 0 lost, 0 duplicated; \
         second run suppressed {} duplicates",
        sources.len(),
        second.duplicates
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let cancel = CancellationToken::new();
    let registry = registry(&cancel).await;
    let cfg = config(&broker, &registry, "killed");
    let sources = data::all_objects();
    let partition = partition_for_key(cfg.cluster_id.as_bytes(), cfg.topic.partitions);
    let high = || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let c: BaseConsumer = cfg.kafka.client_config(&[]).create().unwrap();
        c.fetch_watermarks(&cfg.topic.name, partition, Duration::from_secs(5)).map(|(_, h)| h).unwrap_or(0)
    };
    let spawn = || {
        Command::new(procs::binary("kev-producer"))
            // About 1 ms a event, so that a dozen kills land mid-stream.
            .args(["replay", "--speed", "1"])
            .env("KEV_SOURCE__MAX_GAP_MS", "1")
            .args(data::files())
            .env("KEV_KAFKA__BOOTSTRAP_SERVERS", &cfg.kafka.bootstrap_servers)
            .env("KEV_REGISTRY__URL", &cfg.registry.url)
            .env("KEV_CLUSTER_ID", &cfg.cluster_id)
            .env("KEV_TOPIC__PARTITIONS", cfg.topic.partitions.to_string())
            .env("KEV_HTTP__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };

    let mut rng = rand::rng();
    let (mut kills, mut mid_stream) = (0, 0);
    let mut progress = Vec::new();
    'runs: while kills < 12 {
        let before = high();
        let mut child = spawn();
        // Wait until this run is publishing, then kill it at a random point.
        let started = Instant::now();
        while high() <= before {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "the producer exited by itself with {status}");
                break 'runs; // it had nothing left to publish
            }
            assert!(started.elapsed() < Duration::from_secs(120), "the producer never started publishing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wait = Duration::from_millis(rng.random_range(0..1_500));
        tokio::time::sleep(wait).await;
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the producer exited by itself with {status}");
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        let after = high();
        if after > before {
            mid_stream += 1;
        }
        progress.push(after);
    }
    let status = spawn().wait().unwrap();
    assert!(status.success(), "the last run completes");

    let codec = run::codec(&cfg).unwrap();
    let records = readback::read_all(&cfg.kafka, &cfg.topic.name, &codec).await.unwrap();
    let events = assert_exactly_once(&records, &sources, &cfg.cluster_id, cfg.topic.partitions);
    println!(
        "{} SIGKILLs ({mid_stream} while records were being written; partition end offset at each kill: {progress:?}); \
         {events} of {} events in the topic exactly once: 0 lost, 0 duplicated",
        kills,
        sources.len()
    );
    assert!(kills >= 10, "only {kills} kills happened before the replay completed");
    assert!(mid_stream >= 5, "only {mid_stream} kills landed while records were being written");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_for_a_while_loses_and_duplicates_nothing() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(tmp.path());
    let cancel = CancellationToken::new();
    let registry = registry(&cancel).await;
    let mut cfg = config(&broker, &registry, "outage");
    cfg.source.speed = 2_000.0;
    cfg.source.max_gap_ms = 50;
    let file = data::dir().join("openshift-azure.jsonl.gz");
    let sources = data::objects("openshift-azure.jsonl.gz");

    let replay = {
        let (cfg, cancel, file) = (cfg.clone(), cancel.clone(), file.clone());
        tokio::spawn(async move { run::replay(&cfg, vec![file], Health::new(), cancel).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.kill();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!replay.is_finished(), "the replay waits for the broker");
    broker.restart();
    let stats =
        tokio::time::timeout(Duration::from_secs(240), replay).await.expect("replay finishes").unwrap().unwrap();

    let codec = run::codec(&cfg).unwrap();
    let records = readback::read_all(&cfg.kafka, &cfg.topic.name, &codec).await.unwrap();
    let events = assert_exactly_once(&records, &sources, &cfg.cluster_id, cfg.topic.partitions);
    println!(
        "broker down {:?} mid-replay: {events} events exactly once ({} published by the producer's sessions, {} duplicates suppressed)",
        down.elapsed(),
        stats.published,
        stats.duplicates
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_for_a_while_loses_and_duplicates_nothing() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let cancel = CancellationToken::new();
    let registry = registry(&cancel).await;
    let cfg = config(&broker, &registry, "registry-outage");
    let sources = data::objects("troubleshoot.jsonl.gz");

    registry.set_unavailable(true);
    let health = Health::new();
    let replay = {
        let (cfg, cancel, health) = (cfg.clone(), cancel.clone(), health.clone());
        tokio::spawn(
            async move { run::replay(&cfg, vec![data::dir().join("troubleshoot.jsonl.gz")], health, cancel).await },
        )
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!replay.is_finished(), "nothing can be published while the registry is down");
    assert!(!health.is_ready(), "readiness reports the outage");
    assert!(health.reason().contains("registry"), "{}", health.reason());
    registry.set_unavailable(false);
    let stats =
        tokio::time::timeout(Duration::from_secs(120), replay).await.expect("replay finishes").unwrap().unwrap();
    assert_eq!(stats.published as usize, sources.len());

    let codec = run::codec(&cfg).unwrap();
    let records = readback::read_all(&cfg.kafka, &cfg.topic.name, &codec).await.unwrap();
    assert_exactly_once(&records, &sources, &cfg.cluster_id, cfg.topic.partitions);
    cancel.cancel();
}
