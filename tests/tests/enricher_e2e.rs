//! The enricher as processes against an Apache Kafka broker process, the registry test
//! double and the real dumps: SIGKILLs, a rebalance, poison records and a postmortem replay, each
//! compared with the reference (the same engine run in process over the raw log as it ended up).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kev_common::devregistry::DevRegistry;
use kev_common::kafka::ProcessingGuarantee;
use kev_common::telemetry::Health;
use kev_enricher::records::Stream;
use kev_enricher::EnricherConfig;
use kev_producer::{run as producer, ProducerConfig};
use kev_tests::broker::Broker;
use kev_tests::outputs::{self, assert_matches, counts, enricher_config, progress, read_outputs, wait_caught_up};
use kev_tests::{data, expect, init_logs, procs};
use rand::Rng;
use tokio_util::sync::CancellationToken;

struct Env {
    _tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    broker: Broker,
    registry: DevRegistry,
    cfg: EnricherConfig,
    config_file: PathBuf,
    cancel: CancellationToken,
}

async fn env() -> Env {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    eprintln!("logs in {} (kept when TEST_KEEP_LOGS is set)", dir.display());
    let broker = Broker::start(&dir);
    let cancel = CancellationToken::new();
    let registry = expect::registry(&cancel).await;
    let mut kafka = broker.settings();
    // A SIGKILLed member stays in the group until its session times out; 6 s instead of 45 s
    // keeps the restarts of these tests quick.
    kafka.properties.insert("session.timeout.ms".into(), "6000".into());
    let mut cfg = enricher_config(kafka, &registry.url);
    // Below the broker's record size, so that the test can write an oversized raw record.
    cfg.max_record_bytes = 100_000;
    let config_file = dir.join("enricher.toml");
    write_config(&config_file, &cfg, &[]);
    let tmp = if std::env::var_os("TEST_KEEP_LOGS").is_some() {
        let _ = tmp.keep();
        None
    } else {
        Some(tmp)
    };
    Env { _tmp: tmp, dir, broker, registry, cfg, config_file, cancel }
}

/// Writes `cfg`'s settings that the processes need as a TOML file, with `properties` added to the
/// librdkafka pass-through ones.
fn write_config(path: &std::path::Path, cfg: &EnricherConfig, properties: &[(&str, &str)]) {
    write_config_with(path, cfg, properties, "")
}

/// The same, with `top` (TOML lines of top-level settings) first.
fn write_config_with(path: &std::path::Path, cfg: &EnricherConfig, properties: &[(&str, &str)], top: &str) {
    let mut props: BTreeMap<&str, &str> = cfg.kafka.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    props.extend(properties.iter().copied());
    let mut text = format!(
        "{top}\ncommit_interval_ms = {}\ncheckpoint_interval_ms = {}\nmax_record_bytes = {}\n\n[registry]\nurl = \"{}\"\n\n\
         [topics]\nretention_ms = {}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[kafka]\nbootstrap_servers = \"{}\"\n\n\
         [kafka.properties]\n",
        cfg.commit_interval_ms,
        cfg.checkpoint_interval_ms,
        cfg.max_record_bytes,
        cfg.registry.url,
        cfg.topics.retention_ms,
        cfg.kafka.bootstrap_servers
    );
    for (k, v) in props {
        text.push_str(&format!("\"{k}\" = \"{v}\"\n"));
    }
    std::fs::write(path, text).unwrap();
}

impl Env {
    fn producer_config(&self, cluster: &str) -> ProducerConfig {
        let mut p = expect::config(&self.broker, &self.registry, cluster);
        p.topic.name = self.cfg.topics.raw.clone();
        p
    }

    /// Publishes `files` under `cluster`, as fast as it can.
    async fn publish(&self, cluster: &str, files: &[&str]) {
        let p = self.producer_config(cluster);
        let files = files.iter().map(|f| data::dir().join(f)).collect();
        producer::replay(&p, files, Health::new(), self.cancel.clone()).await.unwrap();
    }

    /// Publishes the troubleshoot dump (968 distinct event times) under its name in the
    /// background, at most `gap_ms` apart, so that events keep arriving while enrichers come
    /// and go.
    fn feed(&self, gap_ms: u64) -> tokio::task::JoinHandle<Result<(), kev_producer::run::RunError>> {
        self.feed_with(gap_ms, ProcessingGuarantee::AtLeastOnce)
    }

    /// The same, published under `guarantee`: in `exactly_once` mode the raw topic then holds
    /// transactions, whose markers the enricher must commit past.
    fn feed_with(
        &self,
        gap_ms: u64,
        guarantee: ProcessingGuarantee,
    ) -> tokio::task::JoinHandle<Result<(), kev_producer::run::RunError>> {
        let mut p = self.producer_config("troubleshoot");
        p.processing_guarantee = guarantee;
        p.source.speed = 1.0;
        p.source.max_gap_ms = gap_ms;
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            producer::replay(&p, vec![data::dir().join("troubleshoot.jsonl.gz")], Health::new(), cancel).await?;
            Ok(())
        })
    }

    fn enricher(&self, args: &[&str], log: &str) -> Child {
        self.enricher_with(args, log, &[])
    }

    /// An enricher process with extra librdkafka properties.
    fn enricher_with(&self, args: &[&str], log: &str, properties: &[(&str, &str)]) -> Child {
        self.enricher_configured(args, log, properties, "")
    }

    /// An enricher process with extra librdkafka properties and top-level settings (TOML).
    fn enricher_configured(&self, args: &[&str], log: &str, properties: &[(&str, &str)], top: &str) -> Child {
        let config = self.dir.join(format!("{log}.toml"));
        write_config_with(&config, &self.cfg, properties, top);
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        procs::command("kev-enricher")
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("RUST_LOG", "kev_enricher=info,warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    async fn reference(&self) -> outputs::ByKey {
        let codec = self.cfg.registry.codec().unwrap();
        outputs::reference(&self.cfg, &codec).await
    }
}

/// Waits until a process's log holds `text`.
async fn wait_for_log(log: &std::path::Path, text: &str) {
    let started = Instant::now();
    while !std::fs::read_to_string(log).unwrap_or_default().contains(text) {
        assert!(started.elapsed() < Duration::from_secs(120), "{} never said {text:?}", log.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, and wait for a clean exit.
fn terminate(mut child: Child) {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the enricher exited with {status}");
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the enricher did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_changes_no_output() {
    sigkill_at_random_points("").await;
}

/// `exactly_once`: the same kills, and a `read_committed` reader of every output topic sees no
/// duplicate at all: each key's records are the uninterrupted run's, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_in_exactly_once_mode_duplicates_nothing() {
    // One transactional id for every restart, as a StatefulSet pod keeps its name: each new
    // process fences the killed one and aborts its open transaction.
    sigkill_at_random_points("processing_guarantee = \"exactly_once\"\ntransactional_id = \"kev-enricher-test-0\"")
        .await;
}

/// `exactly_once` with two enricher processes (transactional ids of their own): one is killed
/// mid-stream and not restarted, the other takes its partitions over once the group notices;
/// the killed one's open transaction is aborted when it times out. A `read_committed` reader
/// sees no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_exactly_once_members_one_killed_mid_stream_duplicate_nothing() {
    let env = env().await;
    env.publish("small", &["kspan.jsonl.gz", "sbctl.jsonl.gz"]).await;
    let feed = env.feed(40);
    let member = [("session.timeout.ms", "3000"), ("heartbeat.interval.ms", "500"), ("max.poll.interval.ms", "15000")];
    let top = |id: &str| format!("processing_guarantee = \"exactly_once\"\ntransactional_id = \"{id}\"");
    let mut a = env.enricher_configured(&["run"], "a.log", &member, &top("kev-enricher-test-a"));
    outputs::wait_started(&env.cfg, Duration::from_secs(60)).await;
    let b = env.enricher_configured(&["run"], "b.log", &member, &top("kev-enricher-test-b"));
    wait_for_log(&env.dir.join("b.log"), "partitions assigned").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!feed.is_finished(), "events were still arriving at the kill");
    a.kill().unwrap(); // SIGKILL, with a transaction open
    a.wait().unwrap();
    let killed_at = progress(&env.cfg).0;
    feed.await.unwrap().unwrap();
    wait_caught_up(&env.cfg, Duration::from_secs(300)).await;
    terminate(b);
    let cmp = assert_matches(&read_outputs(&env.cfg), &env.reference().await, true);
    assert_eq!(cmp.duplicates, 0);
    let b_log = std::fs::read_to_string(env.dir.join("b.log")).unwrap();
    assert!(b_log.contains("partition taken over"), "B took A's partitions over:\n{b_log}");
    println!("exactly_once, two members, one SIGKILLed at committed offsets {killed_at:?}: {cmp:?}, none duplicated");
    env.cancel.cancel();
}

/// `exactly_once` with two live processes given one transactional id (a configuration
/// mistake): each new run of one fences the other's producer, until one has been fenced three
/// times and stops for good, naming the id. The other goes on alone, and a `read_committed`
/// reader sees every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_members_with_one_transactional_id_one_stops_naming_it_and_nothing_is_duplicated() {
    let env = env().await;
    env.publish("small", &["kspan.jsonl.gz", "sbctl.jsonl.gz"]).await;
    let feed = env.feed(40);
    let member = [("session.timeout.ms", "3000"), ("heartbeat.interval.ms", "500"), ("max.poll.interval.ms", "15000")];
    let id = "kev-enricher-test-shared";
    let top = format!("processing_guarantee = \"exactly_once\"\ntransactional_id = \"{id}\"");
    let a = env.enricher_configured(&["run"], "a.log", &member, &top);
    outputs::wait_started(&env.cfg, Duration::from_secs(60)).await;
    let b = env.enricher_configured(&["run"], "b.log", &member, &top);
    let started = Instant::now();
    let mut members = [(a, "a.log"), (b, "b.log")];
    let (stopped, status) = loop {
        if let Some((i, status)) =
            members.iter_mut().enumerate().find_map(|(i, (c, _))| c.try_wait().unwrap().map(|s| (i, s)))
        {
            break (i, status);
        }
        assert!(started.elapsed() < Duration::from_secs(180), "neither member stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    let [(a, a_log), (b, b_log)] = members;
    let (survivor, stopped_log) = if stopped == 0 { (b, a_log) } else { (a, b_log) };
    let text = std::fs::read_to_string(env.dir.join(stopped_log)).unwrap();
    assert!(!status.success(), "the fenced member exited with {status}:\n{text}");
    assert!(text.contains("fenced 3 times in 10 minutes") && text.contains(id), "{text}");
    feed.await.unwrap().unwrap();
    wait_caught_up(&env.cfg, Duration::from_secs(300)).await;
    terminate(survivor);
    let cmp = assert_matches(&read_outputs(&env.cfg), &env.reference().await, true);
    assert_eq!(cmp.duplicates, 0);
    let error = text.lines().find(|l| l.contains("Error:")).unwrap_or_default();
    println!("one transactional id, two live members: {stopped_log} stopped after {took:?} ({error}); {cmp:?}");
    env.cancel.cancel();
}

/// The broker SIGKILLed mid-stream and restarted on its log directory, in both delivery modes
/// (of the producer feeding the raw topic, and of the enricher): both wait out the outage and
/// carry on; nothing is lost, and in `exactly_once` mode nothing is duplicated either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigkilled_mid_stream_loses_nothing() {
    broker_sigkilled_mid_stream("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigkilled_mid_stream_in_exactly_once_mode_duplicates_nothing() {
    broker_sigkilled_mid_stream("processing_guarantee = \"exactly_once\"\ntransactional_id = \"kev-enricher-test-0\"")
        .await;
}

async fn broker_sigkilled_mid_stream(top: &str) {
    let exactly_once = top.contains("exactly_once");
    let mut env = env().await;
    env.publish("small", &["kspan.jsonl.gz", "sbctl.jsonl.gz"]).await;
    // In exactly_once mode the feeding producer's transactions live through the outage too.
    let guarantee = if exactly_once { ProcessingGuarantee::ExactlyOnce } else { ProcessingGuarantee::AtLeastOnce };
    let feed = env.feed_with(40, guarantee);
    let enricher = env.enricher_configured(&["run"], "enricher.log", &[], top);
    outputs::wait_started(&env.cfg, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (before, _) = progress(&env.cfg);
    env.broker.kill();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!feed.is_finished(), "events were still arriving when the broker died");
    env.broker.start_again();
    feed.await.unwrap().unwrap();
    wait_caught_up(&env.cfg, Duration::from_secs(300)).await;
    let outage = down.elapsed();
    terminate(enricher);
    let cmp = assert_matches(&read_outputs(&env.cfg), &env.reference().await, exactly_once);
    if exactly_once {
        assert_eq!(cmp.duplicates, 0);
    }
    let log = std::fs::read_to_string(env.dir.join("enricher.log")).unwrap();
    let restarts = log.matches("starting over from the last commit").count();
    println!(
        "{} broker SIGKILLed at committed offsets {before:?}, back after 5 s, all caught up {outage:?} after the \
         kill; {restarts} runs started over; {cmp:?}",
        if exactly_once { "exactly_once:" } else { "at_least_once:" }
    );
    env.cancel.cancel();
}

/// Kills an enricher process 12 times while events arrive, restarting it each time, with the
/// top-level settings `top`; then compares the outputs with the reference, exactly (no
/// duplicate) in `exactly_once` mode.
async fn sigkill_at_random_points(top: &str) {
    let exactly_once = top.contains("exactly_once");
    let env = env().await;
    // Events keep arriving for about two minutes while the enricher is killed and restarted;
    // in exactly_once mode they are published in transactions too.
    let guarantee = if exactly_once { ProcessingGuarantee::ExactlyOnce } else { ProcessingGuarantee::AtLeastOnce };
    let feed = env.feed_with(150, guarantee);
    // A killed member stays in the group until its session expires and the group rebalances:
    // short timeouts keep each restart quick.
    let member = [("session.timeout.ms", "3000"), ("heartbeat.interval.ms", "500"), ("max.poll.interval.ms", "15000")];
    let mut rng = rand::rng();
    let (mut kills, mut mid_stream, mut at) = (0, 0, Vec::new());
    while kills < 12 {
        let mut child = env.enricher_configured(&["run"], &format!("run-{kills}.log"), &member, top);
        // Wait until this instance has committed something, then kill it at a random point.
        let before: i64 = progress(&env.cfg).0.iter().sum();
        let started = Instant::now();
        while progress(&env.cfg).0.iter().sum::<i64>() == before && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1_500))).await;
        assert!(child.try_wait().unwrap().is_none(), "the enricher exited by itself");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        eprintln!("kill {kills} after {:?}", started.elapsed());
        let (committed, highs) = progress(&env.cfg);
        if committed != highs || !feed.is_finished() {
            mid_stream += 1;
        }
        at.push(committed.iter().sum::<i64>());
    }
    feed.await.unwrap().unwrap();
    let last = env.enricher_configured(&["run"], "final.log", &member, top);
    wait_for_log(&env.dir.join("final.log"), "partitions assigned").await;
    wait_caught_up(&env.cfg, Duration::from_secs(300)).await;
    terminate(last);

    // The test's reader is librdkafka's default, read_committed.
    let cmp = assert_matches(&read_outputs(&env.cfg), &env.reference().await, exactly_once);
    println!(
        "{} {kills} SIGKILLs ({mid_stream} mid-stream; offsets committed at each kill {at:?}); outputs equal the \
         uninterrupted run's (distinct records and final value per key); the log holds {} records for the \
         reference's {}: {} re-emitted duplicates visible to read_committed",
        if exactly_once { "exactly_once:" } else { "at_least_once:" },
        cmp.records,
        cmp.reference_records,
        cmp.duplicates
    );
    if exactly_once {
        assert_eq!(cmp.duplicates, 0);
        let logs: String = (0..kills)
            .map(|k| std::fs::read_to_string(env.dir.join(format!("run-{k}.log"))).unwrap_or_default())
            .collect();
        assert!(logs.contains("exactly_once: transactions initialised"), "the runs were transactional");
    }
    assert!(mid_stream >= 10, "only {mid_stream} kills landed mid-stream");
    env.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joins_and_one_leaves_mid_stream_and_a_replay_gives_the_live_records() {
    let env = env().await;
    env.publish("small", &["kspan.jsonl.gz", "sbctl.jsonl.gz", "support-bundle-kit.jsonl.gz"]).await;
    // Events arrive for about 40 s.
    let feed = env.feed(40);
    let a = env.enricher(&["run"], "a.log");
    outputs::wait_started(&env.cfg, Duration::from_secs(60)).await;
    let b = env.enricher(&["run"], "b.log");
    // B joins: the group rebalances while events flow. Then A leaves.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(!feed.is_finished(), "events were still arriving when the membership changed");
    terminate(a);
    feed.await.unwrap().unwrap();
    wait_caught_up(&env.cfg, Duration::from_secs(300)).await;
    terminate(b);
    let live = read_outputs(&env.cfg);
    let cmp = assert_matches(&live, &env.reference().await, true);
    let a_log = std::fs::read_to_string(env.dir.join("a.log")).unwrap();
    let b_log = std::fs::read_to_string(env.dir.join("b.log")).unwrap();
    assert!(a_log.contains("partitions revoked"), "A handed partitions over:\n{a_log}");
    assert!(b_log.contains("partition taken over"), "B took partitions over:\n{b_log}");
    println!("two members, one joining and one leaving mid-stream: {:?}, {cmp:?}", counts(&live));

    // A postmortem replay of the middle of the troubleshoot dump.
    let mut times: Vec<i64> =
        live[&Stream::Enriched].values().flatten().map(|r| r.timestamp).filter(|t| *t > 0).collect();
    times.sort();
    let (t1, t2) = (times[times.len() * 2 / 5], times[times.len() * 7 / 10]);
    let rfc = |t: i64| {
        chrono::DateTime::from_timestamp_millis(t).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let jsonl = env.dir.join("replay.jsonl");
    let replay_log = env.dir.join("replay.log");
    let status = procs::command("kev-enricher")
        .arg("--config")
        .arg(&env.config_file)
        .args(["replay", "--from", &rfc(t1), "--to", &rfc(t2), "--topic-suffix", ".replay"])
        .stderr(std::fs::File::create(&replay_log).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(&replay_log).unwrap());
    let status = procs::command("kev-enricher")
        .arg("--config")
        .arg(&env.config_file)
        .args(["replay", "--from", &rfc(t1), "--to", &rfc(t2), "--output"])
        .arg(&jsonl)
        .stderr(std::fs::File::create(env.dir.join("replay-jsonl.log")).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let replay_text = std::fs::read_to_string(&replay_log).unwrap();
    assert!(replay_text.contains(", true)"), "some partition started from a checkpoint:\n{replay_text}");
    // On Kafka the checkpoint was found by the broker's timestamp lookup, checked, not by
    // reading the checkpoint topic newest first.
    assert!(
        replay_text.contains("Verified") && !replay_text.contains("Unverified"),
        "the time lookups were verified:\n{replay_text}"
    );

    let mut replayed_cfg = env.cfg.clone();
    replayed_cfg.topics = kev_enricher::replay::suffixed(&env.cfg.topics, ".replay");
    let replayed = read_outputs(&replayed_cfg);
    let mut in_range = 0;
    for s in [Stream::Enriched, Stream::Aggregates, Stream::Incidents] {
        let pick = |by: &outputs::ByKey| -> Vec<outputs::Rec> {
            let mut v: Vec<_> = by
                .get(&s)
                .map(|m| m.values().flatten().filter(|r| (t1..t2).contains(&r.timestamp)).cloned().collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        let (l, r) = (pick(&live), pick(&replayed));
        assert!(!l.is_empty() || s == Stream::Incidents, "{s:?}: the range holds records");
        assert!(l == r, "{s:?}: the replay's {} records differ from the live run's {} in range", r.len(), l.len());
        in_range += l.len();
    }
    let lines = std::fs::read_to_string(&jsonl).unwrap().lines().count();
    assert_eq!(lines, in_range, "the JSON Lines file holds the same records");
    println!(
        "replay of [{}, {}): {in_range} records, byte-identical to the live run's; {replay_text}",
        rfc(t1),
        rfc(t2)
    );
    env.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_and_the_partition_keeps_flowing() {
    use kev_schemas::schema::RAW_RECORD;
    use rdkafka::message::{Headers, Message};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let env = env().await;
    env.publish("small", &["kspan.jsonl.gz"]).await;
    let settings = env.cfg.kafka.clone();
    let raw: FutureProducer = settings.client_config(&[]).create().unwrap();
    let send = |payload: Vec<u8>| {
        let raw = &raw;
        let topic = env.cfg.topics.raw.clone();
        async move {
            raw.send(FutureRecord::to(&topic).key("small").payload(&payload), Duration::from_secs(10)).await.unwrap()
        }
    };
    // 1. Garbage. 2. Wire format naming a schema id the registry does not have. 3. Too large.
    let garbage_offset = send(b"\x17not avro at all".to_vec()).await.offset;
    send([&[0u8, 0, 0, 0x27, 0x0f][..], b"body"].concat()).await;
    send(vec![0u8; env.cfg.max_record_bytes + 1]).await;
    // 4. A record from a newer version of the raw schema (one more field, with a default).
    let mut v2: serde_json::Value = serde_json::from_str(RAW_RECORD).unwrap();
    v2["fields"].as_array_mut().unwrap().push(serde_json::json!(
        {"name": "added_later", "type": "string", "default": "", "doc": "A field of a newer producer."}
    ));
    let v2_text = v2.to_string();
    let v2_schema = apache_avro::Schema::parse_str(&v2_text).unwrap();
    let v2_id = env.registry.register(&format!("{}-value", env.cfg.topics.raw), &v2_text);
    let (_, obs) = data::observations().into_iter().find(|(c, _)| c == "support-bundle-kit").unwrap();
    let newer_uid = obs.uid.clone();
    let mut value = apache_avro::to_value(kev_schemas::RawRecord::event("small", obs)).unwrap();
    if let apache_avro::types::Value::Record(fields) = &mut value {
        fields.push(("added_later".into(), apache_avro::types::Value::String("from the future".into())));
    }
    let body = apache_avro::writer::datum::GenericDatumWriter::builder(&v2_schema)
        .build()
        .unwrap()
        .write_value_to_vec(value.resolve(&v2_schema).unwrap())
        .unwrap();
    send([&[0u8][..], &v2_id.to_be_bytes(), &body].concat()).await;
    // Then ordinary events again, in the same partition.
    env.publish("small", &["sbctl.jsonl.gz"]).await;

    let child = env.enricher(&["run"], "run.log");
    wait_caught_up(&env.cfg, Duration::from_secs(180)).await;
    terminate(child);
    let live = read_outputs(&env.cfg);
    let cmp = assert_matches(&live, &env.reference().await, true);

    // The dead letters, with what was wrong, where it came from, and headers.
    let dead = outputs::read_topic(&env.cfg.kafka, &env.cfg.topics.dead_letters);
    assert_eq!(dead.len(), 3, "three poison records, three dead letters");
    let codec = env.cfg.registry.codec().unwrap();
    let mut kinds = BTreeMap::new();
    for (_, _, rec) in &dead {
        let d: kev_schemas::DeadLetter =
            codec.decode(&rec.value, &kev_schemas::schema::DEAD_LETTER_SCHEMA).await.unwrap();
        assert_eq!(d.source_topic, env.cfg.topics.raw);
        assert!(d.source_offset >= garbage_offset && d.source_offset < garbage_offset + 3, "{d:?}");
        assert!(d.value.as_ref().is_some_and(|v| v.len() <= kev_enricher::decode::DEAD_LETTER_VALUE_BYTES));
        kinds.insert(d.error_kind.clone(), d.error.clone());
    }
    assert_eq!(kinds.keys().collect::<Vec<_>>(), ["oversized", "unknown_schema", "wire_format"], "{kinds:?}");
    let c: rdkafka::consumer::BaseConsumer = env.cfg.kafka.client_config(&[("group.id", "t")]).create().unwrap();
    let mut r = kev_common::kafka::RangeReader::new(&c, &env.cfg.topics.dead_letters, dead[0].0, 0, 1).unwrap();
    let m = r.next_message().unwrap().unwrap();
    let headers: Vec<_> = m.headers().unwrap().iter().map(|h| h.key.to_string()).collect();
    assert!(headers.contains(&"kev.error.kind".to_string()) && headers.contains(&"kev.source".to_string()));

    // The newer record decoded, and the events after the poison were enriched.
    let enriched = &live[&Stream::Enriched];
    let newer =
        enriched.values().flatten().filter(|r| r.value.windows(newer_uid.len()).any(|w| w == newer_uid.as_bytes()));
    assert_eq!(newer.count(), 1, "the newer-schema record was enriched");
    assert!(counts(&live)[&Stream::Enriched] > 54 + 67, "{:?}", counts(&live));
    println!("dead letters: {kinds:?}; {cmp:?}");
    env.cancel.cancel();
}
