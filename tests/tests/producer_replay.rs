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
    sigkill_at_random_points("at_least_once").await;
}

/// `exactly_once`: the same kills; each restarted producer fences the killed one, whose open
/// transaction Kafka aborts, before it reads the topic back (read_committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_in_exactly_once_mode_loses_and_duplicates_nothing() {
    sigkill_at_random_points("exactly_once").await;
}

/// SIGKILLs a producer replaying every dump (`guarantee`: its processing_guarantee) 12 times,
/// restarting it each time, then checks that every version is in the topic exactly once.
async fn sigkill_at_random_points(guarantee: &str) {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let cancel = CancellationToken::new();
    let registry = registry(&cancel).await;
    let cfg = config(&broker, &registry, "killed");
    let sources = data::all_objects();
    let partition = partition_for_key(cfg.cluster_id.as_bytes(), cfg.topic.partitions);
    let high = || partition_end(&cfg, partition);
    // About 1 ms a event, so that a dozen kills land mid-stream.
    let spawn = || replaying(&cfg, guarantee, 1, &data::files()).stderr(Stdio::inherit()).spawn().unwrap();

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
    // Transactions leave their commit and abort markers at offsets of their own, which a
    // reader never sees: the partition ends past its last record.
    let (end, visible) = (high(), records.iter().filter(|r| r.partition == partition).count() as i64);
    if guarantee == "exactly_once" {
        assert!(end > visible, "no transaction markers: the partition ends at {end} with {visible} records");
    } else {
        assert_eq!(end, visible, "the partition's offsets are all records");
    }
    println!(
        "{guarantee}: {} SIGKILLs ({mid_stream} while records were being written; partition end offset at each kill: \
         {progress:?}); {events} of {} events in the topic exactly once: 0 lost, 0 duplicated; {visible} records \
         readable in offsets up to {end}",
        kills,
        sources.len()
    );
    assert!(kills >= 10, "only {kills} kills happened before the replay completed");
    assert!(mid_stream >= 5, "only {mid_stream} kills landed while records were being written");
    cancel.cancel();
}

/// Where `partition` of `cfg`'s raw topic ends for a read_committed reader (0 before it exists).
fn partition_end(cfg: &kev_producer::ProducerConfig, partition: i32) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = cfg.kafka.client_config(&[]).create().unwrap();
    c.fetch_watermarks(&cfg.topic.name, partition, Duration::from_secs(5)).map(|(_, h)| h).unwrap_or(0)
}

/// A `kev-producer replay` process of `cfg`'s cluster over `files` in replayed time, with
/// gaps of at most `max_gap_ms`, under `guarantee`.
fn replaying(
    cfg: &kev_producer::ProducerConfig,
    guarantee: &str,
    max_gap_ms: u64,
    files: &[std::path::PathBuf],
) -> Command {
    let mut c = procs::command("kev-producer");
    c.args(["replay", "--speed", "1"])
        .args(files)
        .env("KEV_SOURCE__MAX_GAP_MS", max_gap_ms.to_string())
        .env("KEV_KAFKA__BOOTSTRAP_SERVERS", &cfg.kafka.bootstrap_servers)
        .env("KEV_REGISTRY__URL", &cfg.registry.url)
        .env("KEV_CLUSTER_ID", &cfg.cluster_id)
        .env("KEV_TOPIC__PARTITIONS", cfg.topic.partitions.to_string())
        .env("KEV_HTTP__LISTEN", "127.0.0.1:0")
        .env("KEV_PROCESSING_GUARANTEE", guarantee)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

/// `exactly_once` with two producers of one cluster running at once under one transactional
/// id (two leaders, a Lease misconfigured): each new session of one fences the other, until
/// one has been fenced three times and stops, naming the id. The other completes, and every
/// version is in the topic once: a fenced producer commits nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_producers_with_one_transactional_id_one_stops_naming_it_and_nothing_is_duplicated() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let cancel = CancellationToken::new();
    let registry = registry(&cancel).await;
    let cfg = config(&broker, &registry, "rivals");
    let files = [data::dir().join("troubleshoot.jsonl.gz")];
    let partition = partition_for_key(cfg.cluster_id.as_bytes(), cfg.topic.partitions);
    let high = || partition_end(&cfg, partition);
    let spawn = |log: &str| {
        let log = std::fs::File::create(tmp.path().join(log)).unwrap();
        replaying(&cfg, "exactly_once", 20, &files).stderr(log).spawn().unwrap()
    };
    let a = spawn("a.log");
    let started = Instant::now();
    while high() == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "the first producer never published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = spawn("b.log");
    let mut rivals = [(a, "a.log"), (b, "b.log")];
    let (first, status) = loop {
        if let Some(found) = rivals.iter_mut().enumerate().find_map(|(i, (c, _))| c.try_wait().unwrap().map(|s| (i, s)))
        {
            break found;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "neither producer stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(tmp.path().join(rivals[first].1)).unwrap();
    assert!(!status.success(), "the fenced producer exited with {status}:\n{text}");
    assert!(text.contains("fenced 3 times") && text.contains("kev-producer-rivals"), "{text}");
    let survivor = &mut rivals[1 - first].0;
    let status = survivor.wait().unwrap();
    assert!(status.success(), "the other producer completes");

    let codec = run::codec(&cfg).unwrap();
    let records = readback::read_all(&cfg.kafka, &cfg.topic.name, &codec).await.unwrap();
    let sources = data::objects("troubleshoot.jsonl.gz");
    let events = assert_exactly_once(&records, &sources, &cfg.cluster_id, cfg.topic.partitions);
    let error = text.lines().find(|l| l.contains("Error:")).unwrap_or_default();
    println!(
        "two producers, one transactional id: {} stopped after {:?} ({error}); {events} events exactly once",
        rivals[first].1,
        started.elapsed()
    );
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
