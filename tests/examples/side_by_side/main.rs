//! Side by side, on one Apache Kafka broker process, in one run: the ceiling (a consume-only reader of
//! the raw topic), the raw log a take-over re-reads (recovery), two peer stream processors (Quix
//! Streams, then Kafka Streams) computing the same 1-minute tumbling-window counts per
//! fingerprint, and kev's enricher end to end in its default mode and in `exactly_once` mode.
//! Then, on a second broker: `kev-enricher` processes of one group (1, 2 and 3) over 6
//! partitions and what a member joining costs ([`processes`]), the latency at a steady rate
//! ([`latency`]), and `kev-producer replay` beside a produce-only writer ([`producer`]); then
//! the memory of the engine and of the producer's de-duplication state as they grow (in child
//! processes, so that what they hold is theirs alone).
//!
//! cargo run --release -p kev-tests --example side_by_side
//!
//! Writes `BENCHMARKS-side-by-side.md` and `BENCHMARKS-side-by-side.json` at the repository root
//! (`KEV_BENCH_OUT` = another path without extension) and prints the table.
//!
//! The workload: the real dumps scaled by `kev_tests::scale` (the engine bench's scaler) to
//! `KEV_BENCH_EVENTS` (default 1,000,000) events over `KEV_BENCH_CLUSTERS` (default 16) cluster
//! ids, each cluster's records in event-time order, encoded as kev's raw records (Avro, Confluent
//! wire format, kev's development registry in process) and written to the raw topic
//! (`KEV_BENCH_PARTITIONS`, default 3, keyed by cluster) with the producer's Kafka settings.
//! The loader writes the records directly; `kev-producer replay` is measured on a dump of its
//! own ([`producer`]).
//!
//! Other settings: `KEV_BENCH_LOAD_BATCH` (the loader's `batch.num.messages`, default 10000); `KEV_BENCH_PEER_FORMAT` (`avro`, the default:
//! Quix reads the raw topic itself through the registry; `json`: a JSON copy of the workload in
//! its own topic, whose ceiling is then measured too); `KEV_BENCH_PEER_PYTHON` (default
//! `~/.cache/kev/quix-venv/bin/python`, see `benches/peer/requirements.txt`; `none` skips the
//! peer); `KEV_BENCH_STREAMS_PEER` (the Kafka Streams peer's build, default
//! `~/.cache/kev/streams-peer-<benches/peer/kafka-streams/build-id.sh>`, which
//! `scripts/prerequisites.sh --for-benchmarks` builds; it reads the Avro raw topic whatever the
//! Quix peer's format; `none` skips it); `KEV_BENCH_SCALE_EVENTS` (records of the scale rows,
//! default 200,000, 0 to skip them), `KEV_BENCH_SCALE_PARTITIONS` (default 6) and
//! `KEV_BENCH_SCALE_PROCESSES` (default `1,2,3`); `KEV_BENCH_REBALANCE_SECONDS` (the feed during
//! which members join, default 30, 0 to skip it); `KEV_BENCH_LATENCY_RATE` and
//! `KEV_BENCH_LATENCY_SECONDS` (the steady feed of the latency phase, and the rate of the joins'
//! feed; default 1,000 records/s for 60 s, 0 s to skip it); `KEV_BENCH_PRODUCER_EVENTS` (the
//! producer's scaled dump, default 200,000, 0 to skip it); `KEV_BENCH_KEEP_LOGS=1` (keep the
//! processes' configurations and logs);
//! `KEV_BENCH_MEMORY_GROUPS` (largest state of the memory runs, default 1,000,000, 0 to skip
//! them); `KEV_BENCH_HOLD` (`load` or `enricher`: keep the broker and registry up after that
//! phase, for working on the peer by hand); `KEV_BENCH_KAFKA_PROPERTIES` (`key=value;...`:
//! librdkafka properties for every client of this program, the ceiling's and kev's alike, such
//! as `queued.max.messages.kbytes=262144`; named in the report's header).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kev_common::kafka::RangeReader;
use kev_common::kafka::{ensure_topic, partition_for_key, KafkaSettings};
use kev_enricher::config::{EnricherConfig, ProcessingGuarantee};
use kev_enricher::decode::{decode, Source};
use kev_enricher::partition::{EngineSpec, PartitionEngine};
use kev_enricher::records::Stream;
use kev_enricher::{replay, topics};
use kev_schemas::{EventObservation, RawRecord};
use kev_tests::bench::{children_cpu_seconds, cpu_seconds, enrich_all, env_or, read_all, status_kib};
use kev_tests::broker::{Broker, BrokerOptions, KAFKA_VERSION};
use kev_tests::outputs::enricher_config;
use kev_tests::{expect, scale};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

mod feed;
mod latency;
mod processes;
mod producer;
mod report;

use report::{report_latency, report_producer, report_scale};

#[global_allocator]
static ALLOC: Counting = Counting;

/// mimalloc, the binaries' allocator, counting the bytes held once `COUNT` is on (the memory
/// runs only): the heap a state holds, exactly, where the RSS also moves with what the
/// allocator keeps or gives back.
struct Counting;

static COUNT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static HELD: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: every call is passed on to mimalloc unchanged; the counters only observe sizes.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        if COUNT.load(Ordering::Relaxed) {
            HELD.fetch_add(l.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: the caller's layout, passed on.
        unsafe { mimalloc::MiMalloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        if COUNT.load(Ordering::Relaxed) {
            HELD.fetch_sub(l.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: a pointer this allocator gave out, with its layout.
        unsafe { mimalloc::MiMalloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        if COUNT.load(Ordering::Relaxed) {
            HELD.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: as in `dealloc`, and the caller's new size.
        unsafe { mimalloc::MiMalloc.realloc(p, l, new) }
    }
}

fn held() -> i64 {
    HELD.load(Ordering::Relaxed) as i64
}

/// One record of the workload: its cluster (the key), its event time in ms, its bytes.
struct Rec {
    cluster: usize,
    time_ms: i64,
    value: Vec<u8>,
}

/// Counts the broker's acknowledgements.
#[derive(Default)]
struct Acks {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The loaded raw topics keep their records forever: they carry the dumps' event times as
/// record timestamps, years old, and Kafka deletes by record time.
const KEEP: &[(&str, &str)] = &[("retention.ms", "-1")];

/// Writes `records` to `topic` keyed by cluster, with the producer's settings (idempotent,
/// acks=all, lz4, linger 10 ms), until every one is acknowledged; each record to its cluster's
/// partition as the producer's murmur2_random partitioner places it. One client per partition,
/// as the loader always has (tansu 0.6.0's memory storage, the broker of the first runs, was
/// seen to file the records of a request for several partitions under one of them).
/// Returns (acknowledged, failed, seconds).
fn load(
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
    batch: usize,
    names: &[String],
    records: &[Rec],
) -> (u64, u64, f64) {
    let partition: Vec<i32> = names.iter().map(|n| partition_for_key(n.as_bytes(), partitions)).collect();
    load_placed(settings, topic, &partition, batch, names, records)
}

/// The same, cluster `c`'s records to partition `partition[c]`.
fn load_placed(
    settings: &KafkaSettings,
    topic: &str,
    partition: &[i32],
    batch: usize,
    names: &[String],
    records: &[Rec],
) -> (u64, u64, f64) {
    let partitions = partition.iter().max().map_or(1, |p| p + 1);
    let batch = batch.to_string();
    let clients: Vec<BaseProducer<Acks>> = (0..partitions)
        .map(|_| {
            let mut props = feed::PRODUCER_SETTINGS.to_vec();
            props.extend([
                ("message.timeout.ms", "0"),
                ("queue.buffering.max.messages", "200000"),
                ("batch.num.messages", batch.as_str()),
            ]);
            settings.client_config(&props).create_with_context(Acks::default()).unwrap()
        })
        .collect();
    let started = Instant::now();
    for r in records {
        let p = partition[r.cluster];
        let client = &clients[p as usize];
        let mut rec =
            BaseRecord::to(topic).partition(p).key(names[r.cluster].as_bytes()).payload(&r.value).timestamp(r.time_ms);
        loop {
            match client.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    client.poll(Duration::from_millis(5));
                }
            }
        }
        client.poll(Duration::ZERO);
    }
    let (mut ok, mut failed) = (0, 0);
    for c in &clients {
        c.flush(Duration::from_secs(600)).unwrap();
        ok += c.context().ok.load(Ordering::Relaxed);
        failed += c.context().failed.load(Ordering::Relaxed);
    }
    (ok, failed, started.elapsed().as_secs_f64())
}

/// Records per partition the load should leave: each cluster's count in its partition.
fn expected_per_partition(partitions: i32, names: &[String], records: &[Rec]) -> Vec<i64> {
    let mut out = vec![0i64; partitions as usize];
    for r in records {
        out[partition_for_key(names[r.cluster].as_bytes(), partitions) as usize] += 1;
    }
    out
}

/// The workload, in the order it is written: each cluster's records in event-time order (as a
/// producer watching that cluster publishes them), clusters interleaved record by record.
fn interleave(mut per_cluster: Vec<Vec<Rec>>) -> Vec<Rec> {
    for c in &mut per_cluster {
        c.sort_by_key(|r| r.time_ms);
    }
    let total = per_cluster.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    let mut iters: Vec<_> = per_cluster.into_iter().map(Vec::into_iter).collect();
    while out.len() < total {
        for it in &mut iters {
            if let Some(r) = it.next() {
                out.push(r);
            }
        }
    }
    out
}

/// Reads `topic` once, consume only, every partition at once: (records, bytes, seconds).
fn ceiling(settings: &KafkaSettings, topic: &str, group: &str) -> (u64, u64, f64) {
    let mut bytes = 0u64;
    let (n, secs) = read_all(settings, topic, group, |_, v| bytes += v.len() as u64);
    (n, bytes, secs)
}

/// Counts the records a read_committed reader of `topic` gets, every partition from its start
/// to its end (commit markers are not records, so the high watermarks cannot tell this).
fn committed_records(settings: &KafkaSettings, topic: &str) -> u64 {
    let c: BaseConsumer = settings
        .client_config(&[
            ("group.id", "kev-bench-committed"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "true"),
        ])
        .create()
        .unwrap();
    let n = kev_common::kafka::partition_count(settings, topic, Duration::from_secs(10)).unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let (mut records, mut ended, mut idle) = (0u64, std::collections::BTreeSet::new(), 0);
    while ended.len() < n as usize {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => {
                idle = 0;
                records += 1;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => eprintln!("reading {topic}: {e}"),
            None => {
                idle += 1;
                assert!(idle < 150, "reading {topic}: nothing for 30 s, {records} records, ended {ended:?}");
            }
        }
    }
    records
}

fn high_watermarks(settings: &KafkaSettings, topic: &str) -> Vec<i64> {
    let mut cfg = EnricherConfig { kafka: settings.clone(), ..Default::default() };
    cfg.topics.raw = topic.to_string();
    cfg.group_id = "kev-bench-watermarks".into();
    kev_enricher::topics::group_progress(&cfg).unwrap().1
}

/// With `KEV_BENCH_HOLD=<phase>`, for working on the peer by hand: after that phase the broker
/// and registry stay up until the process is killed.
async fn hold(phase: &str, broker: &Broker, registry: &str) {
    if std::env::var("KEV_BENCH_HOLD").is_ok_and(|h| h == phase) {
        eprintln!("holding after {phase}: broker {} registry {registry}", broker.bootstrap());
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// A peer's run: its JSON line (or why there is none) and its peak RSS in bytes, read from
/// `/proc` every 100 ms while it runs (the last reading before it ends).
async fn run_peer(mut cmd: tokio::process::Command, name: &str) -> (Result<Value, String>, u64) {
    use std::process::Stdio;
    let child = match cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return (Err(format!("cannot start {name}: {e}")), 0),
    };
    let peak = Arc::new(AtomicU64::new(0));
    let watch = child.id().map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(kev_tests::bench::peak_rss_bytes(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let out = child.wait_with_output().await;
    if let Some(w) = watch {
        w.abort();
    }
    let peak = peak.load(Ordering::Relaxed);
    let out = match out {
        Ok(o) => o,
        Err(e) => return (Err(format!("waiting for {name}: {e}")), peak),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let log = String::from_utf8_lossy(&out.stderr);
    eprint!("{log}");
    let result = match (out.status.success(), line) {
        (true, Some(l)) => serde_json::from_str(l).map_err(|e| format!("{name} printed {l}: {e}")),
        _ => {
            let tail: Vec<&str> = log.lines().filter(|l| !l.starts_with(' ')).rev().take(3).collect();
            Err(format!("{name} exited with {}; last lines of its log: {}", out.status, tail.join(" / ")))
        }
    };
    (result, peak)
}

/// The peer: Quix Streams in its venv, on `topic`. Its JSON line, or why there is none, and
/// its peak RSS.
async fn peer(
    python: &str,
    broker: &str,
    topic: &str,
    format: &str,
    registry: &str,
    records: u64,
) -> (Result<Value, String>, u64) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let state = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(root.join("benches/peer/quix_windows.py"))
        .env("KEV_PEER_BROKER", broker)
        .env("KEV_PEER_TOPIC", topic)
        .env("KEV_PEER_FORMAT", format)
        .env("KEV_PEER_REGISTRY", registry)
        .env("KEV_PEER_RECORDS", records.to_string())
        .env("KEV_PEER_GROUP", format!("quix-bench-{}", std::process::id()))
        .env("KEV_PEER_OUTPUT", format!("{topic}.quix-windows"))
        .env("KEV_PEER_STATE", state.path().join("state"));
    run_peer(cmd, "the Quix peer").await
}

/// The Kafka Streams peer (`benches/peer/kafka-streams`), built into `dir` by the
/// prerequisites, on the Avro raw `topic`, with the Quix peer's environment: its JSON line, or
/// why there is none, and its peak RSS. The JVM runs with its defaults (`java` from
/// `$JAVA_HOME`, else `PATH`).
async fn streams_peer(
    dir: &str,
    broker: &str,
    topic: &str,
    registry: &str,
    records: u64,
) -> (Result<Value, String>, u64) {
    let jar = PathBuf::from(dir).join("kev-streams-peer.jar");
    if !jar.is_file() {
        return (
            Err(format!(
                "no build at {dir} (run scripts/prerequisites.sh --for-benchmarks, or set KEV_BENCH_STREAMS_PEER)"
            )),
            0,
        );
    }
    let java = std::env::var("JAVA_HOME").map_or_else(|_| PathBuf::from("java"), |h| PathBuf::from(h).join("bin/java"));
    let state = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(java);
    cmd.arg("-cp")
        .arg(format!("{}:{dir}/lib/*", jar.display()))
        .arg("dev.kev.peer.StreamsWindows")
        .env("KEV_PEER_BROKER", broker)
        .env("KEV_PEER_TOPIC", topic)
        .env("KEV_PEER_FORMAT", "avro")
        .env("KEV_PEER_REGISTRY", registry)
        .env("KEV_PEER_RECORDS", records.to_string())
        .env("KEV_PEER_GROUP", format!("streams-bench-{}", std::process::id()))
        .env("KEV_PEER_OUTPUT", format!("{topic}.streams-windows"))
        .env("KEV_PEER_STATE", state.path().join("state"));
    run_peer(cmd, "the Kafka Streams peer").await
}

/// Starts a new peak of this process's resident memory (`VmHWM`, by writing 5 to
/// `/proc/self/clear_refs`) before an in-process phase; returns its RSS then, KiB.
fn reset_peak_rss() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .unwrap_or(0);
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("PRETTY_NAME=")).map(|l| l[13..].trim_matches('"').to_string()))
        .unwrap_or_default();
    format!(
        "{} vCPU ({cpu}), {} GiB, {os}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem / 1024 / 1024
    )
}

fn command_version(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(if o.stdout.is_empty() { &o.stderr } else { &o.stdout }).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// What a take-over re-reads to rebuild a partition's state without a checkpoint, done as the
/// enricher's take-over does it (range reader, decode, engine apply; outputs dropped) over the
/// first `len` records of `partition`: (records, seconds, seconds until the first record).
async fn recovery(cfg: &EnricherConfig, partition: i32, len: i64) -> (u64, f64, f64) {
    let spec = EngineSpec::load(cfg).unwrap();
    let codec = cfg.registry.codec().unwrap();
    let c: BaseConsumer =
        cfg.kafka.client_config(&[("group.id", "bench-recovery"), ("enable.auto.commit", "false")]).create().unwrap();
    let (low, high) = kev_common::kafka::LogEnds::new(&cfg.kafka, "kev-bench-log-end")
        .unwrap()
        .watermarks(&cfg.topics.raw, partition, Duration::from_secs(10))
        .unwrap();
    let started = Instant::now();
    let mut pe = PartitionEngine::new(partition, spec.engine(Default::default()), low);
    let mut reader = RangeReader::new(&c, &cfg.topics.raw, partition, low, (low + len).min(high)).unwrap();
    let (mut discard, mut n, mut first) = (Vec::new(), 0u64, 0.0);
    while let Some(m) = reader.next_message().unwrap() {
        if n == 0 {
            first = started.elapsed().as_secs_f64();
        }
        let d = decode(&codec, Source::of(&m), cfg.max_record_bytes).await.unwrap();
        pe.apply(d, m.offset(), &mut discard);
        discard.clear();
        n += 1;
    }
    (n, started.elapsed().as_secs_f64(), first)
}

// ---- Memory, in a child process each -------------------------------------------------------

/// Sizes at which the memory runs report, up to `max`.
fn checkpoints(max: usize) -> Vec<usize> {
    [1_000, 10_000, 100_000, 1_000_000, 10_000_000].into_iter().filter(|&n| n <= max).collect()
}

/// The engine's memory as open window groups grow: copies of the real events, copy `j` in
/// namespace `bench-{j}`, all in one minute of event time so that no window closes, fed to one
/// engine; at each checkpoint its open groups, its own state count and the process's RSS.
fn memory_engine(max: usize) -> Value {
    use kev_engine::rules::RuleSet;
    use kev_engine::{Engine, EngineConfig};
    let base = scale::base(false);
    let mut engine = Engine::new(EngineConfig::default(), RuleSet::defaults());
    let t0 = base[0].normalized.event_time - base[0].normalized.event_time % 60_000_000;
    let mut out = Vec::new();
    COUNT.store(true, Ordering::Relaxed);
    let rss0 = status_kib("VmRSS");
    let mut rows = Vec::new();
    let mut marks = checkpoints(max).into_iter().peekable();
    let (mut i, mut events) = (0usize, 0u64);
    while let Some(&mark) = marks.peek() {
        let j = i / base.len();
        let mut o: EventObservation = base[i % base.len()].clone();
        let ns = format!("bench-{j}");
        o.namespace = Some(ns.clone());
        o.uid = format!("{}-{j}", o.uid);
        if let Some(r) = o.normalized.regarding.as_mut() {
            r.namespace = Some(ns);
        }
        o.normalized.event_time = t0 + (i % 50_000_000) as i64;
        engine.on_event("bench-memory", o, 0, i as i64, &mut out);
        out.clear();
        i += 1;
        events += 1;
        if i % (mark / 100).max(100) == 0 {
            let size = engine.state_size();
            if size.open_groups >= mark {
                let rss = status_kib("VmRSS");
                rows.push(json!({
                    "open_groups": size.open_groups,
                    "events": events,
                    "state_bytes": size.approx_bytes,
                    "memo_bytes": size.memo_bytes,
                    "rss_kib": rss,
                    "heap_bytes": held(),
                }));
                marks.next();
            }
        }
    }
    json!({"rss_before_kib": rss0, "peak_rss_kib": status_kib("VmHWM"), "rows": rows})
}

/// The producer's de-duplication state (what it holds per live Event object) as it grows: the
/// real events' uids, namespaces and resource versions, copy `k` with uid suffix `-k`, published
/// and acknowledged.
fn memory_producer(max: usize) -> Value {
    use kev_producer::dedup::DedupState;
    use kev_schemas::WatchVerb;
    let base = scale::base(false);
    let mut state = DedupState::new(0);
    COUNT.store(true, Ordering::Relaxed);
    let rss0 = status_kib("VmRSS");
    let mut rows = Vec::new();
    let mut i = 0usize;
    for mark in checkpoints(max) {
        while state.len() < mark {
            let o = &base[i % base.len()];
            let uid = format!("{}-{}", o.uid, i / base.len());
            state.published(&uid, o.namespace.as_deref(), &o.resource_version, o.normalized.count, WatchVerb::Added);
            state.acknowledged(&uid, &o.resource_version, i as i64);
            i += 1;
        }
        let rss = status_kib("VmRSS");
        rows.push(json!({
            "objects": state.len(),
            "rss_kib": rss,
            "heap_bytes": held(),
        }));
    }
    json!({"rss_before_kib": rss0, "peak_rss_kib": status_kib("VmHWM"), "rows": rows})
}

fn child(what: &str, max: usize) -> Result<Value, String> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--memory", what, &max.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).map_err(|e| format!("{what} memory run: {e}: {}", stdout.trim()))
}

// ---- Reporting ------------------------------------------------------------------------------

fn rate(n: u64, secs: f64) -> f64 {
    n as f64 / secs.max(1e-9)
}

fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

#[tokio::main]
async fn main() {
    kev_tests::bench::logs_to_stderr();
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "--memory" {
        let max: usize = args[3].parse().unwrap();
        let v = if args[2] == "engine" { memory_engine(max) } else { memory_producer(max) };
        println!("{v}");
        return;
    }
    let events: usize = env_or("KEV_BENCH_EVENTS", 1_000_000);
    let clusters: usize = env_or("KEV_BENCH_CLUSTERS", 16);
    let partitions: i32 = env_or("KEV_BENCH_PARTITIONS", 3);
    let scale_events: usize = env_or("KEV_BENCH_SCALE_EVENTS", 200_000.min(events));
    let memory_max: usize = env_or("KEV_BENCH_MEMORY_GROUPS", 1_000_000);
    let scale_partitions: i32 = env_or("KEV_BENCH_SCALE_PARTITIONS", 6);
    let scale_processes: Vec<usize> = std::env::var("KEV_BENCH_SCALE_PROCESSES")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .map(|n| n.trim().parse().expect("KEV_BENCH_SCALE_PROCESSES: numbers, such as 1,2,3"))
        .collect();
    let rebalance_seconds: u64 = env_or("KEV_BENCH_REBALANCE_SECONDS", 30);
    let latency_rate: u64 = env_or("KEV_BENCH_LATENCY_RATE", 1_000);
    let latency_seconds: u64 = env_or("KEV_BENCH_LATENCY_SECONDS", 60);
    let producer_events: usize = env_or("KEV_BENCH_PRODUCER_EVENTS", 200_000);
    let client_properties = std::env::var("KEV_BENCH_KAFKA_PROPERTIES").unwrap_or_default();
    let peer_format = std::env::var("KEV_BENCH_PEER_FORMAT").unwrap_or_else(|_| "avro".into());
    let home = std::env::var("HOME").unwrap_or_default();
    let python =
        std::env::var("KEV_BENCH_PEER_PYTHON").unwrap_or_else(|_| format!("{home}/.cache/kev/quix-venv/bin/python"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let streams_dir = std::env::var("KEV_BENCH_STREAMS_PEER").unwrap_or_else(|_| {
        let build = root.join("benches/peer/kafka-streams/build-id.sh");
        format!("{home}/.cache/kev/streams-peer-{}", command_version(build.to_str().unwrap(), &[]))
    });
    // The commit the run starts from: one made while it runs must not be named as its.
    let commit = command_version("git", &["-C", root.to_str().unwrap(), "rev-parse", "--short", "HEAD"]);
    let out_base =
        std::env::var("KEV_BENCH_OUT").map(PathBuf::from).unwrap_or_else(|_| root.join("BENCHMARKS-side-by-side"));
    let run_started = Instant::now();
    // The binaries the scale and producer phases run, built now, before anything is timed.
    let enricher_binary = processes::build("kev-enricher");
    let producer_binary = processes::build("kev-producer");
    for e in [enricher_binary.as_ref().err(), producer_binary.as_ref().err()].into_iter().flatten() {
        eprintln!("{e}");
    }

    let shm = std::path::Path::new("/dev/shm");
    let tmp = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let cancel = CancellationToken::new();
    let registry = expect::registry(&cancel).await;

    // The workload, encoded once (Avro; JSON too when the peer reads JSON).
    let names: Vec<String> = (0..clusters).map(|c| format!("cluster-{c}")).collect();
    let codec =
        kev_schemas::codec::RegistrySettings { url: registry.url.clone(), ..Default::default() }.codec().unwrap();
    let base = scale::base(true);
    let built = Instant::now();
    let mut avro: Vec<Vec<Rec>> = (0..clusters).map(|_| Vec::new()).collect();
    let mut json_recs: Vec<Vec<Rec>> = (0..clusters).map(|_| Vec::new()).collect();
    let want_json = peer_format == "json";
    for (cluster, batch) in scale::batches(&base, events, clusters) {
        let c: usize = cluster.trim_start_matches("cluster-").parse().unwrap();
        for o in batch {
            let time_ms = o.normalized.event_time / 1000;
            let record = RawRecord::event(cluster.clone(), o);
            if want_json {
                json_recs[c].push(Rec { cluster: c, time_ms, value: serde_json::to_vec(&record).unwrap() });
            }
            let value = codec.encode_raw(&EnricherConfig::default().topics.raw, &record).await.unwrap();
            avro[c].push(Rec { cluster: c, time_ms, value });
        }
    }
    drop(base);
    let avro = interleave(avro);
    let json_recs = interleave(json_recs);
    eprintln!("workload: {} records built in {:.1}s", avro.len(), built.elapsed().as_secs_f64());
    let mut per_partition: BTreeMap<i32, Vec<&str>> = BTreeMap::new();
    for n in &names {
        per_partition.entry(partition_for_key(n.as_bytes(), partitions)).or_default().push(n);
    }

    let load_batch: usize = env_or("KEV_BENCH_LOAD_BATCH", 10_000);
    let storage_label = if tmp.path().starts_with(shm) { "log in /dev/shm" } else { "log on disk" };
    let broker = Broker::start(tmp.path());
    let mut cfg = enricher_config(broker.settings(), &registry.url);
    cfg.commit_interval_ms = 1_000;
    cfg.checkpoint_interval_ms = 60_000;
    cfg.topics.partitions = partitions;
    // Extra librdkafka properties for every client of the run (the ceiling's, kev's, the
    // loader's): `KEV_BENCH_KAFKA_PROPERTIES="fetch.wait.max.ms=50;queued.min.messages=200000"`.
    for kv in client_properties.split(';').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').expect("KEV_BENCH_KAFKA_PROPERTIES: key=value;key=value");
        cfg.kafka.properties.insert(k.trim().to_string(), v.trim().to_string());
    }
    topics::create(&cfg.kafka, &cfg.topics).await.unwrap();
    ensure_topic(&cfg.kafka, &cfg.topics.raw, partitions, 1, KEEP).await.unwrap();

    // 1. Load the raw topic; check the broker holds what it acknowledged.
    let (acked, failed, load_s) = load(&cfg.kafka, &cfg.topics.raw, partitions, load_batch, &names, &avro);
    let highs = high_watermarks(&cfg.kafka, &cfg.topics.raw);
    let held: i64 = highs.iter().sum();
    eprintln!("loaded {acked} acknowledged, {failed} failed in {load_s:.1}s; high watermarks {highs:?}");

    hold("load", &broker, &registry.url).await;

    // 2. The ceiling. Each in-process phase's peak RSS is this process's over the phase (with
    // the workload it holds; its RSS before the phase beside it).
    let rss_before = reset_peak_rss();
    let (cpu, broker_cpu) = (cpu_seconds(), broker.cpu_seconds());
    let (ceil_n, ceil_bytes, ceil_s) = ceiling(&cfg.kafka, &cfg.topics.raw, "bench-ceiling");
    let ceil_cpu = (cpu_seconds() - cpu, broker.cpu_seconds() - broker_cpu);
    let ceil_rss = (rss_before, status_kib("VmHWM"));
    let ceil_rate = rate(ceil_n, ceil_s);
    eprintln!("ceiling: {ceil_n} records in {ceil_s:.2}s");
    let expected = expected_per_partition(partitions, &names, &avro);
    let consistent = acked == avro.len() as u64 && highs == expected && ceil_n == acked;

    // 3. Recovery: the raw log a take-over without a checkpoint re-reads, at growing lengths of
    // the main raw topic's fullest partition (reads only, like the ceiling).
    let fullest = highs.iter().enumerate().max_by_key(|(_, h)| **h).map_or(0, |(p, _)| p as i32);
    let longest = highs.get(fullest as usize).copied().unwrap_or(0);
    let mut recovery_rows = Vec::new();
    recovery(&cfg, fullest, 1_000).await; // warm-up: the registry lookup, the first fetches
    for len in [10_000i64, 100_000, 1_000_000].into_iter().filter(|&l| l < longest).chain([longest]) {
        let (n, secs, first) = recovery(&cfg, fullest, len).await;
        eprintln!("recovery: {n} records of partition {fullest} in {secs:.2}s (first after {first:.2}s)");
        recovery_rows.push(json!({"partition": fullest, "records": n, "seconds": secs, "first_record_after": first, "rate": rate(n, secs)}));
    }

    // 4. The peer, before the enricher (as in the runs on tansu, whose sqlite storage was seen
    // to stop answering when Quix joined its group after the enricher had run on it).
    let mut json_ceiling = None;
    let peer_topic = if want_json {
        let topic = format!("{}.json", cfg.topics.raw);
        ensure_topic(&cfg.kafka, &topic, partitions, 1, KEEP).await.unwrap();
        let (a, f, s) = load(&cfg.kafka, &topic, partitions, load_batch, &names, &json_recs);
        eprintln!("JSON copy: {a} acknowledged, {f} failed in {s:.1}s");
        let (n, b, s) = ceiling(&cfg.kafka, &topic, "bench-ceiling-json");
        json_ceiling = Some((n, b, s));
        topic
    } else {
        cfg.topics.raw.clone()
    };
    drop(json_recs);
    let (cpu, broker_cpu) = (children_cpu_seconds(), broker.cpu_seconds());
    let (peer_result, peer_rss) = if python == "none" {
        (Err("skipped (KEV_BENCH_PEER_PYTHON=none)".to_string()), 0)
    } else {
        peer(&python, &broker.bootstrap(), &peer_topic, &peer_format, &registry.url, acked).await
    };
    let peer_cpu = (children_cpu_seconds() - cpu, broker.cpu_seconds() - broker_cpu);
    eprintln!("peer: {peer_result:?}");
    let peer_rate = peer_result
        .as_ref()
        .ok()
        .map(|v| rate(v["records"].as_u64().unwrap_or(0), v["seconds"].as_f64().unwrap_or(0.0)));

    // 4b. The Kafka Streams peer, after Quix, on the Avro raw topic.
    let (cpu, broker_cpu) = (children_cpu_seconds(), broker.cpu_seconds());
    let (streams_result, streams_rss) = if streams_dir == "none" {
        (Err("skipped (KEV_BENCH_STREAMS_PEER=none)".to_string()), 0)
    } else {
        streams_peer(&streams_dir, &broker.bootstrap(), &cfg.topics.raw, &registry.url, acked).await
    };
    let streams_cpu = (children_cpu_seconds() - cpu, broker.cpu_seconds() - broker_cpu);
    eprintln!("Kafka Streams peer: {streams_result:?}");
    let streams_rate = streams_result
        .as_ref()
        .ok()
        .map(|v| rate(v["records"].as_u64().unwrap_or(0), v["seconds"].as_f64().unwrap_or(0.0)));

    // 5. kev's enricher, one instance.
    let rss_before = reset_peak_rss();
    let (cpu, broker_cpu) = (cpu_seconds(), broker.cpu_seconds());
    let (stats, enrich_s) = enrich_all(&cfg, 1, &cancel).await;
    let kev_cpu = (cpu_seconds() - cpu, broker.cpu_seconds() - broker_cpu);
    let kev_rss = (rss_before, status_kib("VmHWM"));
    let kev_rate = rate(stats.records_in, enrich_s);
    // What the output topics hold against what was acknowledged: they are written with
    // multi-record batches and are not read back otherwise.
    let outputs_held: i64 = Stream::ALL
        .map(|s| s.topic(&cfg.topics))
        .into_iter()
        .map(|t| high_watermarks(&cfg.kafka, t).iter().sum::<i64>())
        .sum();
    eprintln!("enricher: {stats:?} in {enrich_s:.2}s");

    // 5b. The same in `exactly_once` mode, from the same raw topic: its own group, transactional
    // id and output topics; every output and the group's offsets in one transaction per commit
    // barrier.
    let mut ecfg = cfg.clone();
    ecfg.processing_guarantee = ProcessingGuarantee::ExactlyOnce;
    ecfg.transactional_id = Some("kev-bench-eos-0".into());
    ecfg.group_id = "kev-bench-eos".into();
    ecfg.topics = replay::suffixed(&cfg.topics, ".eos");
    ecfg.topics.raw = cfg.topics.raw.clone();
    ecfg.topics.checkpoints.push_str(".eos");
    topics::create(&ecfg.kafka, &ecfg.topics).await.unwrap();
    let rss_before = reset_peak_rss();
    let (cpu, broker_cpu) = (cpu_seconds(), broker.cpu_seconds());
    let (eos_stats, eos_s) = enrich_all(&ecfg, 1, &cancel).await;
    let eos_cpu = (cpu_seconds() - cpu, broker.cpu_seconds() - broker_cpu);
    let eos_rss = (rss_before, status_kib("VmHWM"));
    let eos_rate = rate(eos_stats.records_in, eos_s);
    eprintln!("enricher, exactly_once: {eos_stats:?} in {eos_s:.2}s");
    // What a read_committed reader sees of its outputs: the high watermarks also count the
    // transactions' commit markers.
    let eos_visible: u64 =
        Stream::ALL.map(|s| s.topic(&ecfg.topics)).into_iter().map(|t| committed_records(&ecfg.kafka, t)).sum();

    hold("enricher", &broker, &registry.url).await;

    // 6. Scale, latency and the producer, on a broker of their own (the same storage, fresh):
    // the main broker, after the runs above, was seen here to answer fetches of a new topic
    // slowly.
    drop(broker);
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    // Kafka's own `group.initial.rebalance.delay.ms` (the test brokers' is 0): processes
    // started together join the group's first generation together, as a Deployment's pods do.
    let options = BrokerOptions {
        properties: vec![("group.initial.rebalance.delay.ms".into(), "3000".into())],
        ..Default::default()
    };
    let b = Broker::start_with(dir.path(), options);
    // The processes' configurations and logs (`KEV_BENCH_KEEP_LOGS=1` keeps them).
    let work = tempfile::tempdir().unwrap();
    eprintln!("processes' logs in {}", work.path().display());
    let mut scale_rows = Vec::new();
    let mut rebalance_result = Value::Null;
    let mut scale_ceiling = Value::Null;
    if let (true, Ok(binary)) = (scale_events > 0, &enricher_binary) {
        let mut s = cfg.clone();
        s.kafka = b.settings();
        s.topics.raw.push_str(".scale");
        s.topics.partitions = scale_partitions;
        ensure_topic(&s.kafka, &s.topics.raw, scale_partitions, 1, KEEP).await.unwrap();
        let slice = &avro[..scale_events.min(avro.len())];
        // Cluster c on partition c mod n: keyed by murmur2, the 16 cluster ids fill the 6
        // partitions very unevenly (one holds none), and the rows would measure that skew.
        let placed: Vec<i32> = (0..names.len() as i32).map(|c| c % scale_partitions).collect();
        let (a, f, ls) = load_placed(&s.kafka, &s.topics.raw, &placed, load_batch, &names, slice);
        let (cn, _, cs) = ceiling(&s.kafka, &s.topics.raw, "bench-ceiling-scale");
        eprintln!("scale: loaded {a} ({f} failed) in {ls:.1}s; ceiling {cn} in {cs:.2}s");
        let mut per_partition = vec![0i64; scale_partitions as usize];
        for r in slice {
            per_partition[placed[r.cluster] as usize] += 1;
        }
        let by_key = expected_per_partition(scale_partitions, &names, slice);
        scale_ceiling = json!({"records": cn, "seconds": cs, "rate": rate(cn, cs), "loaded": a, "load_failed": f,
            "expected_per_partition": per_partition, "per_partition_if_keyed_by_murmur2": by_key});
        scale_rows = processes::throughput(binary, work.path(), &s, &b, &scale_processes, a).await;
        if rebalance_seconds > 0 {
            let feed: Vec<&Rec> =
                avro.iter().cycle().skip(scale_events).take((latency_rate * rebalance_seconds) as usize).collect();
            let joins = scale_processes.iter().max().copied().unwrap_or(1).saturating_sub(1).max(1);
            let every = Duration::from_secs(rebalance_seconds / (joins as u64 + 1));
            rebalance_result =
                processes::rebalance(binary, work.path(), &s, &names, &placed, &feed, latency_rate, every, joins).await;
            eprintln!("rebalance: {rebalance_result}");
        }
    }
    let mut latency_result = Value::Null;
    if latency_seconds > 0 {
        let mut s = cfg.clone();
        s.kafka = b.settings();
        s.topics = replay::suffixed(&cfg.topics, ".latency");
        s.topics.raw.push_str(".latency");
        s.topics.checkpoints.push_str(".latency");
        s.group_id = "kev-bench-latency".into();
        topics::create(&s.kafka, &s.topics).await.unwrap();
        ensure_topic(&s.kafka, &s.topics.raw, partitions, 1, KEEP).await.unwrap();
        let feed: Vec<&Rec> =
            avro.iter().cycle().skip(scale_events).take((latency_rate * latency_seconds) as usize).collect();
        latency_result = latency::run(&s, 1, load_batch, &names, &feed, latency_rate, &cancel).await;
        eprintln!("latency: {latency_result}");
    }
    let producer_result = if producer_events == 0 {
        Err("skipped (KEV_BENCH_PRODUCER_EVENTS=0)".to_string())
    } else {
        match &producer_binary {
            Ok(binary) => {
                let (dump, n) = producer::scaled_dump(work.path(), producer_events);
                let log = work.path().join("producer.log");
                let r = producer::run(binary, &b.settings(), &registry.url, &dump, n, &log).await;
                eprintln!("producer: {r}");
                Ok(r)
            }
            Err(e) => Err(e.clone()),
        }
    };
    drop(b);
    if std::env::var("KEV_BENCH_KEEP_LOGS").is_ok_and(|v| v == "1") {
        let _ = work.keep();
    }
    cancel.cancel();
    drop(avro);

    // 7. Memory, each in a child process.
    let (mem_engine, mem_producer) = if memory_max > 0 {
        (child("engine", memory_max), child("producer", memory_max))
    } else {
        (Err("skipped".to_string()), Err("skipped".to_string()))
    };

    // The report.
    let avg_bytes = ceil_bytes as f64 / ceil_n.max(1) as f64;
    let versions = json!({
        "kev": env!("CARGO_PKG_VERSION"),
        "git": commit,
        "rustc": command_version("rustc", &["--version"]),
        "kafka": format!("Apache Kafka {KAFKA_VERSION}"),
        "java": command_version("java", &["-version"]).lines().next().unwrap_or("").to_string(),
        "librdkafka": rdkafka::util::get_rdkafka_version().1,
        "peer": peer_result.as_ref().ok().map(|v| format!("quixstreams {} on Python {}", v["quixstreams"].as_str().unwrap_or("?"), v["python"].as_str().unwrap_or("?"))),
        "streams_peer": streams_result.as_ref().ok().map(|v| format!("kafka-streams {} (RocksDB {}, Avro {}) on Java {}", v["kafka_streams"].as_str().unwrap_or("?"), v["rocksdb"].as_str().unwrap_or("?"), v["avro"].as_str().unwrap_or("?"), v["java"].as_str().unwrap_or("?"))),
    });
    let per = |secs: f64, n: u64| secs / n.max(1) as f64;
    let peer_n = peer_result.as_ref().ok().and_then(|v| v["records"].as_u64());
    let streams_n = streams_result.as_ref().ok().and_then(|v| v["records"].as_u64());
    let ratios = json!({
        "kev_over_peer": peer_rate.map(|r| kev_rate / r),
        "kev_exactly_once_over_peer": peer_rate.map(|r| eos_rate / r),
        "kev_over_streams_peer": streams_rate.map(|r| kev_rate / r),
        "kev_exactly_once_over_streams_peer": streams_rate.map(|r| eos_rate / r),
        "cpu_per_record_peer_over_kev": peer_n.map(|n| per(peer_cpu.0, n) / per(kev_cpu.0, stats.records_in).max(1e-12)),
        "cpu_per_record_streams_peer_over_kev": streams_n.map(|n| per(streams_cpu.0, n) / per(kev_cpu.0, stats.records_in).max(1e-12)),
    });
    let figures = json!({
        "date": command_version("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "machine": machine(),
        "versions": versions,
        "broker": {"storage": storage_label, "partitions": partitions},
        "client_properties": client_properties,
        "workload": {"events": events, "clusters": clusters, "clusters_per_partition": per_partition,
            "average_record_bytes": avg_bytes, "built_seconds": built.elapsed().as_secs_f64()},
        "load": {"acknowledged": acked, "failed": failed, "seconds": load_s, "rate": rate(acked, load_s), "high_watermarks": highs},
        "counts_consistent": consistent,
        "ceiling": {"records": ceil_n, "bytes": ceil_bytes, "seconds": ceil_s, "rate": ceil_rate},
        "enricher": {"records_in": stats.records_in, "records_out": stats.records_out, "dead_letters": stats.dead_letters,
            "commits": stats.commits, "seconds": enrich_s, "rate": kev_rate, "outputs_held_by_high_watermarks": outputs_held},
        "enricher_exactly_once": {"records_in": eos_stats.records_in, "records_out": eos_stats.records_out, "dead_letters": eos_stats.dead_letters,
            "commits": eos_stats.commits, "seconds": eos_s, "rate": eos_rate, "outputs_read_committed": eos_visible},
        "json_ceiling": json_ceiling.map(|(n, b, s)| json!({"records": n, "bytes": b, "seconds": s, "rate": rate(n, s)})),
        "peer": match &peer_result { Ok(v) => v.clone(), Err(e) => json!({"error": e}) },
        "peer_format": peer_format,
        "streams_peer": match &streams_result { Ok(v) => v.clone(), Err(e) => json!({"error": e}) },
        "streams_peer_rate": streams_rate,
        "ratios": ratios,
        "cpu_seconds": {
            "ceiling": {"process": ceil_cpu.0, "broker": ceil_cpu.1},
            "peer": {"process": peer_cpu.0, "broker": peer_cpu.1},
            "streams_peer": {"process": streams_cpu.0, "broker": streams_cpu.1},
            "enricher": {"process": kev_cpu.0, "broker": kev_cpu.1},
            "enricher_exactly_once": {"process": eos_cpu.0, "broker": eos_cpu.1},
        },
        "peak_rss_kib": {
            "ceiling": {"before": ceil_rss.0, "peak": ceil_rss.1},
            "enricher": {"before": kev_rss.0, "peak": kev_rss.1},
            "enricher_exactly_once": {"before": eos_rss.0, "peak": eos_rss.1},
            "peer": peer_rss / 1024,
            "streams_peer": streams_rss / 1024,
        },
        "scale": scale_rows,
        "scale_partitions": scale_partitions,
        "scale_ceiling": scale_ceiling,
        "rebalance": rebalance_result,
        "latency": latency_result,
        "producer": match &producer_result { Ok(v) => v.clone(), Err(e) => json!({"error": e}) },
        "memory_engine": match &mem_engine { Ok(v) => v.clone(), Err(e) => json!({"error": e}) },
        "memory_producer": match &mem_producer { Ok(v) => v.clone(), Err(e) => json!({"error": e}) },
        "load_batch": load_batch,
        "recovery": recovery_rows,
        "run_seconds": run_started.elapsed().as_secs_f64(),
    });

    let mut md = String::new();
    let mut line = |s: String| {
        println!("{s}");
        md.push_str(&s);
        md.push('\n');
    };
    line("# Benchmarks side by side: the ceiling, kev, a peer stream processor, and scale".into());
    line(String::new());
    line("Generated by `cargo run --release -p kev-tests --example side_by_side`; every figure below is one".into());
    line("that run printed (raw numbers in `BENCHMARKS-side-by-side.json`). Nothing here is edited by hand.".into());
    line(String::new());
    line(format!("- date: {}", figures["date"].as_str().unwrap_or("")));
    line(format!("- machine: {}", figures["machine"].as_str().unwrap_or("")));
    line(format!(
        "- versions: kev {} ({}), {}, {}, librdkafka {}, peer: {}, Kafka Streams peer: {}",
        versions["kev"].as_str().unwrap_or(""),
        versions["git"].as_str().unwrap_or(""),
        versions["rustc"].as_str().unwrap_or(""),
        versions["kafka"].as_str().unwrap_or(""),
        versions["librdkafka"].as_str().unwrap_or(""),
        versions["peer"].as_str().unwrap_or("not run"),
        versions["streams_peer"].as_str().unwrap_or("not run")
    ));
    line(format!(
        "- broker: one Apache Kafka KRaft node (512 MiB heap), {storage_label}, loader batches of at most {} records (`batch.num.messages`), raw topic of {partitions} partitions keyed by cluster ({})",
        load_batch,
        per_partition.iter().map(|(p, c)| format!("partition {p}: {}", c.join(", "))).collect::<Vec<_>>().join("; ")
    ));
    line(format!(
        "- client properties: {}",
        if client_properties.is_empty() {
            "librdkafka's defaults and kev's own settings".to_string()
        } else {
            format!("`{client_properties}` (`KEV_BENCH_KAFKA_PROPERTIES`) on every client of this program: the loader, the ceiling and kev alike; the peer keeps its own")
        }
    ));
    line(format!(
        "- workload: the real dumps scaled by `kev_tests::scale` to {} events over {clusters} cluster ids, each cluster's records in event-time order; kev's raw records (Avro, Confluent wire format, development registry), {avg_bytes:.0} bytes on average; no heartbeats",
        thousands(events as f64)
    ));
    line(format!(
        "- counts: {} records built, {acked} acknowledged, {failed} failed, {held} held by the partitions' high watermarks ({highs:?}, expected {expected:?}), {ceil_n} read back: {}",
        events,
        if consistent { "consistent" } else { "**INCONSISTENT: the broker did not keep exactly what it acknowledged**" }
    ));
    line(String::new());
    line("## Throughput, one run, one broker".into());
    line(String::new());
    line("What each does with the same raw topic: the ceiling reads it and decodes nothing. kev's enricher decodes each Avro record, runs the engine (grades, templates, fingerprints, 1-minute event-time windows, correlation into incidents), writes an enriched record for every event plus window aggregates and incidents (Avro, registry) to four topics, and commits behind its acknowledgement barrier. The peer (`benches/peer/quix_windows.py`) decodes each record with Quix's Avro deserializer through the same registry, takes the event time as the record's timestamp, masks the message with kev's template masks ported to Python (same patterns, same order, memoised), and counts events per (cluster, namespace, kind, reason, template) in 1-minute tumbling windows (5 s grace), kept per message key (the cluster, as the topic is keyed) as one count per fingerprint, with no repartition; it writes a record per closed window and its changelog. The Kafka Streams peer (`benches/peer/kafka-streams`, Java) does the same with Kafka Streams' DSL on the Avro raw topic: Apache Avro's Java reader with the registered writer schema, kev's masks ported to java.util.regex (memoised per task), the event time as the record's timestamp (a `TimestampExtractor`), `groupByKey` on the cluster (no repartition topic, as Quix and kev), 1-minute tumbling windows with 5 s grace emitted on window close, one count per fingerprint in the window's value, in a RocksDB window store with its changelog and record cache; one record per closed window. Each is timed from its start (group join included) until it has processed every record.".into());
    line(String::new());
    line("| measure | records | seconds | records/s |".into());
    line("|---|---|---|---|".into());
    line(format!(
        "| load: raw records written with the producer's Kafka settings, acknowledged | {acked} | {load_s:.2} | {} |",
        thousands(rate(acked, load_s))
    ));
    line(format!(
        "| ceiling: consume-only rdkafka reader of the raw topic | {ceil_n} | {ceil_s:.2} | {} |",
        thousands(ceil_rate)
    ));
    if let Some((n, b, s)) = json_ceiling {
        line(format!(
            "| ceiling of the JSON copy the peer reads ({:.0} bytes a record) | {n} | {s:.2} | {} |",
            b as f64 / n.max(1) as f64,
            thousands(rate(n, s))
        ));
    }
    line(format!(
        "| kev enricher, 1 instance: consume, decode, engine, encode, produce 4 topics ({} records out), commit | {} | {enrich_s:.2} | {} |",
        stats.records_out,
        stats.records_in,
        thousands(kev_rate)
    ));
    line(format!(
        "| kev enricher, 1 instance, `exactly_once`: the same, outputs and offsets in one transaction per commit barrier ({} transactions, {} records out) | {} | {eos_s:.2} | {} |",
        eos_stats.commits,
        eos_stats.records_out,
        eos_stats.records_in,
        thousands(eos_rate)
    ));
    match &peer_result {
        Ok(v) => line(format!(
            "| peer: Quix Streams, 1 process, {peer_format} from `{peer_topic}`, 1-minute tumbling counts per fingerprint ({} window counts closed; first record after {:.1} s) | {} | {:.2} | {} |",
            v["windows_closed"], v["first_record_after"].as_f64().unwrap_or(0.0), v["records"], v["seconds"].as_f64().unwrap_or(0.0), thousands(peer_rate.unwrap_or(0.0))
        )),
        Err(e) => line(format!("| peer: Quix Streams | not measured: {} | | |", e.replace('|', "/").replace('\n', " "))),
    }
    match &streams_result {
        Ok(v) => line(format!(
            "| peer: Kafka Streams, 1 process, {} stream threads, avro from `{}`, 1-minute tumbling counts per fingerprint ({} window counts closed in {} window records; first record after {:.1} s) | {} | {:.2} | {} |",
            v["settings"]["num.stream.threads"], cfg.topics.raw, v["windows_closed"], v["window_records_written"], v["first_record_after"].as_f64().unwrap_or(0.0), v["records"], v["seconds"].as_f64().unwrap_or(0.0), thousands(streams_rate.unwrap_or(0.0))
        )),
        Err(e) => line(format!("| peer: Kafka Streams | not measured: {} | | |", e.replace('|', "/").replace('\n', " "))),
    }
    line(String::new());
    line(format!(
        "The enricher's {} acknowledged output records: the output topics' high watermarks add up to {outputs_held}{}.",
        stats.records_out,
        if outputs_held == stats.records_out as i64 { "" } else { " (**not what was acknowledged**)" }
    ));
    line(format!(
        "In `exactly_once` mode, {} output records acknowledged; a read_committed reader of its output topics reads {eos_visible}{}.",
        eos_stats.records_out,
        if eos_visible == eos_stats.records_out { "" } else { " (**not what was acknowledged**)" }
    ));
    line(String::new());
    line("CPU time per raw record in the same phases (user + system, all threads; a peer's is its own process's, Python's or the JVM's, read once it has ended; the broker's is the Kafka process's in the same phase), steadier than the rates when the machine is shared; and the peak resident memory of the process doing the work (a peer's read from `/proc` every 100 ms while it runs; the ceiling and kev run in this benchmark's process, whose peak is reset before the phase and holds the workload too, its RSS before the phase in brackets):".into());
    line(String::new());
    line("| phase | its process, us per record | the broker, us per record | its process, peak RSS MiB |".into());
    line("|---|---|---|---|".into());
    let us = |secs: f64, n: u64| format!("{:.1}", 1e6 * secs / n.max(1) as f64);
    let mib =
        |(before, peak): (u64, u64)| format!("{:.0} ({:.0} before)", peak as f64 / 1024.0, before as f64 / 1024.0);
    line(format!("| ceiling | {} | {} | {} |", us(ceil_cpu.0, ceil_n), us(ceil_cpu.1, ceil_n), mib(ceil_rss)));
    line(format!(
        "| kev enricher | {} | {} | {} |",
        us(kev_cpu.0, stats.records_in),
        us(kev_cpu.1, stats.records_in),
        mib(kev_rss)
    ));
    line(format!(
        "| kev enricher, `exactly_once` | {} | {} | {} |",
        us(eos_cpu.0, eos_stats.records_in),
        us(eos_cpu.1, eos_stats.records_in),
        mib(eos_rss)
    ));
    if let Some(n) = peer_n {
        line(format!(
            "| peer: Quix Streams | {} | {} | {:.0} |",
            us(peer_cpu.0, n),
            us(peer_cpu.1, n),
            peer_rss as f64 / 1048576.0
        ));
    }
    if let Some(n) = streams_n {
        line(format!(
            "| peer: Kafka Streams | {} | {} | {:.0} |",
            us(streams_cpu.0, n),
            us(streams_cpu.1, n),
            streams_rss as f64 / 1048576.0
        ));
    }
    if let Ok(v) = &streams_result {
        let settings = |m: &Value| {
            m.as_object()
                .map(|o| {
                    o.iter().map(|(k, v)| format!("`{k}={}`", v.to_string().trim_matches('"'))).collect::<Vec<_>>()
                })
                .unwrap_or_default()
                .join(", ")
        };
        line(String::new());
        line(format!(
            "Kafka Streams peer: settings beyond `application.id`, `bootstrap.servers` and `state.dir`: {}; defaults kept: {}; JVM defaults (no options); topology: {}.",
            settings(&v["settings"]),
            settings(&v["defaults"]),
            v["topology"].as_str().unwrap_or("")
        ));
    }
    line(String::new());
    line("| ratio | value | target |".into());
    line("|---|---|---|".into());
    let kc = kev_rate / ceil_rate;
    line(format!("| kev / ceiling | {:.0}% | >= 60%: {} |", 100.0 * kc, met(kc >= 0.6)));
    let kev_us = 1e6 * kev_cpu.0 / stats.records_in.max(1) as f64;
    line(format!("| kev's process, CPU per raw record | {kev_us:.1} us | <= 5 us: {} |", met(kev_us <= 5.0)));
    let ec = eos_rate / ceil_rate;
    line(format!("| kev `exactly_once` / ceiling | {:.0}% | >= 60%: {} |", 100.0 * ec, met(ec >= 0.6)));
    line(format!("| kev `exactly_once` / kev default mode | {:.0}% | |", 100.0 * eos_rate / kev_rate));
    if let Some(pr) = peer_rate {
        let kp = kev_rate / pr;
        line(format!("| kev / peer | {kp:.1}x | >= 20x: {} |", met(kp >= 20.0)));
        line(format!("| kev `exactly_once` / peer | {:.1}x | |", eos_rate / pr));
        if let Some(cp) = ratios["cpu_per_record_peer_over_kev"].as_f64() {
            line(format!("| CPU time per record, peer / kev (their own processes) | {cp:.1}x | |"));
        }
        line(format!("| peer / ceiling | {:.0}% | |", 100.0 * pr / ceil_rate));
        if let Some((n, _, s)) = json_ceiling {
            line(format!("| peer / ceiling of its JSON topic | {:.0}% | |", 100.0 * pr / rate(n, s)));
        }
    }
    if let Some(sr) = streams_rate {
        let ks = kev_rate / sr;
        line(format!("| kev / Kafka Streams | {ks:.1}x | >= 3x: {} |", met(ks >= 3.0)));
        line(format!("| kev `exactly_once` / Kafka Streams | {:.1}x | |", eos_rate / sr));
        if let Some(cp) = ratios["cpu_per_record_streams_peer_over_kev"].as_f64() {
            line(format!("| CPU time per record, Kafka Streams / kev (their own processes) | {cp:.1}x | |"));
        }
        line(format!("| Kafka Streams / ceiling | {:.0}% | |", 100.0 * sr / ceil_rate));
    }
    report_scale(&mut line, &figures, scale_events.min(acked as usize));
    report_latency(&mut line, &figures["latency"]);
    report_producer(&mut line, &figures["producer"]);
    line(String::new());
    line("## Memory as state grows (in process, one child process per table)".into());
    line(String::new());
    match &mem_engine {
        Ok(v) => {
            line("Engine (what the enricher holds per partition): copies of the real events in new namespaces, all in one minute of event time, so every window group stays open.".into());
            line(String::new());
            line("| open window groups | events fed | heap held, MiB | heap per group, bytes | heap growth per group since the previous row, bytes | target <= 300 | engine's own state count per group, bytes | RSS MiB |".into());
            line("|---|---|---|---|---|---|---|---|".into());
            let (mut g0, mut h0) = (0.0, 0.0);
            for r in v["rows"].as_array().into_iter().flatten() {
                let g = r["open_groups"].as_f64().unwrap_or(1.0);
                let h = r["heap_bytes"].as_f64().unwrap_or(0.0);
                let per = (h - h0) / (g - g0);
                line(format!(
                    "| {} | {} | {:.1} | {:.0} | {per:.0} | {} | {:.0} | {:.0} |",
                    r["open_groups"],
                    r["events"],
                    h / 1048576.0,
                    h / g,
                    met(per <= 300.0),
                    r["state_bytes"].as_f64().unwrap_or(0.0) / g,
                    r["rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
                ));
                (g0, h0) = (g, h);
            }
            line(String::new());
            line(format!("Heap held: bytes allocated and not freed since the engine was built, counted by the allocator (exact, without the allocator's own rounding); the outputs of each event are dropped at once. Peak RSS {:.0} MiB, {:.0} MiB before feeding (the input events and what loading them left).", v["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0, v["rss_before_kib"].as_f64().unwrap_or(0.0) / 1024.0));
        }
        Err(e) => line(format!("Engine: not measured: {e}")),
    }
    line(String::new());
    match &mem_producer {
        Ok(v) => {
            line(
                "Producer (its de-duplication state: one entry per live Event object; it keeps no window groups):"
                    .into(),
            );
            line(String::new());
            line("| live objects tracked | heap held, MiB | heap per object, bytes | heap growth per object since the previous row, bytes | RSS MiB |".into());
            line("|---|---|---|---|---|".into());
            let (mut n0, mut h0) = (0.0, 0.0);
            for r in v["rows"].as_array().into_iter().flatten() {
                let n = r["objects"].as_f64().unwrap_or(1.0);
                let h = r["heap_bytes"].as_f64().unwrap_or(0.0);
                line(format!(
                    "| {} | {:.1} | {:.0} | {:.0} | {:.0} |",
                    r["objects"],
                    h / 1048576.0,
                    h / n,
                    (h - h0) / (n - n0),
                    r["rss_kib"].as_f64().unwrap_or(0.0) / 1024.0
                ));
                (n0, h0) = (n, h);
            }
        }
        Err(e) => line(format!("Producer: not measured: {e}")),
    }
    line(String::new());
    line("## State recovery against the raw log re-read".into());
    line(String::new());
    line("A take-over without a checkpoint re-reads its partition from the start: measured as the enricher's take-over does it (range reader, decode, engine apply, outputs dropped), in process, on the main raw topic; the group join and the checkpoint lookup are not in it.".into());
    line(String::new());
    line("| raw records re-read | seconds | records/s |".into());
    line("|---|---|---|".into());
    for r in &recovery_rows {
        line(format!(
            "| {} | {:.2} | {} |",
            r["records"],
            r["seconds"].as_f64().unwrap_or(0.0),
            thousands(r["rate"].as_f64().unwrap_or(0.0))
        ));
    }
    line(format!("Whole run: {:.0} s.", run_started.elapsed().as_secs_f64()));
    std::fs::write(out_base.with_extension("md"), md).unwrap();
    std::fs::write(out_base.with_extension("json"), serde_json::to_string_pretty(&figures).unwrap()).unwrap();
    eprintln!("wrote {} and .json", out_base.with_extension("md").display());
}
