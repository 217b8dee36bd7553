//! Scale across processes: `kev-enricher run` processes of one consumer group over the
//! partitions of one raw topic, as kev is deployed (one pod each), not tasks of one process:
//! each has its own librdkafka clients, allocator and threads to compete for the cores with.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kev_enricher::config::EnricherConfig;
use kev_enricher::records::Stream;
use kev_enricher::{replay, topics};
use kev_tests::bench::{process_cpu_seconds, progress, read_all, SourceWatch};
use kev_tests::broker::Broker;
pub use kev_tests::procs::without_kev_env;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer;
use serde_json::{json, Value};

use crate::feed;
use crate::Rec;

/// Builds this tree's binary `name` (release, package of the same name) so that the processes
/// run the code measured everywhere else in the run, not an older build; returns its path.
pub fn build(name: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "-p", name, "--bin", name])
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo build of {name} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(root.join("target/release").join(name))
}

/// One `kev-enricher run` process, its log in a file of its own.
struct Member {
    child: Child,
    log: PathBuf,
}

impl Member {
    fn spawn(binary: &Path, config: &Path, log: PathBuf) -> Member {
        let out = std::fs::File::create(&log).unwrap();
        let child = without_kev_env(&mut Command::new(binary))
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("RUST_LOG", "kev_enricher=info,warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Member { child, log }
    }

    /// Why it has ended, if it has: a member that ends on its own is a failed row.
    fn ended(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok()??;
        let said = std::fs::read_to_string(&self.log).unwrap_or_default();
        Some(format!("{} ended {status}: {}", self.log.display(), said.lines().next().unwrap_or("")))
    }

    fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }

    fn said(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log).unwrap_or_default().contains(text)
    }

    /// SIGTERM, as Kubernetes stops a pod, then its exit: whether it stopped cleanly.
    fn stop(mut self) -> Result<(), String> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let by = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => return Err(format!("{} ended {s}", self.log.display())),
                Ok(None) if Instant::now() < by => std::thread::sleep(Duration::from_millis(100)),
                _ => {
                    let _ = self.child.kill();
                    return Err(format!("{} did not stop within 60 s", self.log.display()));
                }
            }
        }
    }
}

/// The configuration file the members read: `cfg` itself, as JSON.
fn write_config(dir: &Path, name: &str, cfg: &EnricherConfig) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(cfg).unwrap()).unwrap();
    path
}

/// A configuration of its own for a run on the raw topic of `base`: its group, checkpoints and
/// output topics, all named with `suffix`.
fn own(base: &EnricherConfig, suffix: &str) -> EnricherConfig {
    let mut s = base.clone();
    s.topics = replay::suffixed(&base.topics, suffix);
    s.topics.checkpoints.push_str(suffix);
    s.group_id = format!("kev-bench{suffix}");
    s
}

/// A digest of every record of the output topics that does not depend on how the records of
/// different raw partitions interleave in an output partition (that differs from run to run;
/// the records do not): the wrapping sum of a hash of each (topic, key, value), with the count.
/// Equal digests mean the same records, up to a 64-bit hash collision.
fn output_digest(s: &EnricherConfig, suffix: &str) -> (u64, String) {
    let (mut sum, mut count) = (0u64, 0u64);
    for topic in Stream::ALL.map(|stream| stream.topic(&s.topics)) {
        let base = topic.trim_end_matches(suffix).to_string();
        read_all(&s.kafka, topic, "kev-bench-digest", |k, v| {
            let mut h = std::hash::DefaultHasher::new();
            (&base, k, v).hash(&mut h);
            sum = sum.wrapping_add(h.finish());
            count += 1;
        });
    }
    (count, format!("{sum:016x}"))
}

/// The group's committed offset of each partition, from one client asked again and again (a
/// new client each time is a load of its own on a busy broker).
struct Committed {
    consumer: BaseConsumer,
    tpl: rdkafka::TopicPartitionList,
}

impl Committed {
    fn new(s: &EnricherConfig, partitions: usize) -> Self {
        let consumer =
            s.kafka.client_config(&[("group.id", &s.group_id), ("enable.auto.commit", "false")]).create().unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition(&s.topics.raw, p);
        }
        Self { consumer, tpl }
    }

    fn offsets(&self) -> Option<Vec<i64>> {
        match self.consumer.committed_offsets(self.tpl.clone(), Duration::from_secs(10)) {
            Ok(t) => Some(t.elements().iter().map(|e| e.offset().to_raw().unwrap_or(0).max(0)).collect()),
            Err(e) => {
                eprintln!("committed offsets: {e}; asking again");
                None
            }
        }
    }
}

/// Rows of `members` processes each, every row its own group and output topics on the raw
/// topic of `base` (loaded, `records` records): from every member having its partitions
/// until the group has committed every record. Then the digest of the row's outputs.
pub async fn throughput(
    binary: &Path,
    dir: &Path,
    base: &EnricherConfig,
    broker: &Broker,
    members: &[usize],
    records: u64,
) -> Vec<Value> {
    let (_, highs) = progress(base).await;
    let mut rows = Vec::new();
    for &n in members {
        let suffix = format!(".n{n}");
        let s = own(base, &suffix);
        topics::create(&s.kafka, &s.topics).await.unwrap();
        let config = write_config(dir, &format!("n{n}"), &s);
        let committed = Committed::new(&s, highs.len());
        let broker_cpu = broker.cpu_seconds();
        let started = Instant::now();
        let mut procs: Vec<Member> =
            (0..n).map(|i| Member::spawn(binary, &config, dir.join(format!("n{n}-{i}.log")))).collect();
        // Until every partition is committed to its end; a stuck row ends after 10 minutes, a
        // row whose process ended at once.
        let mut first_commit = None;
        let mut assigned = None;
        let mut failed = None;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if assigned.is_none() && procs.iter().all(|m| m.said("partitions assigned")) {
                assigned = Some(started.elapsed().as_secs_f64());
            }
            if let Some(why) = procs.iter_mut().find_map(Member::ended) {
                eprintln!("{n} process(es): {why}");
                failed = Some(why);
                break;
            }
            let Some(o) = committed.offsets() else { continue };
            if first_commit.is_none() && o.iter().any(|&c| c > 0) {
                first_commit = Some(started.elapsed().as_secs_f64());
            }
            if o.iter().zip(&highs).all(|(c, h)| c >= h) || started.elapsed() > Duration::from_secs(600) {
                break;
            }
        }
        let total = started.elapsed().as_secs_f64();
        // The rate counts from the moment every member had its partitions: the group join
        // before it (with Kafka's `group.initial.rebalance.delay.ms`) is the same for any
        // number of members.
        let secs = total - assigned.unwrap_or(0.0);
        let cpu: Vec<f64> = procs.iter().map(Member::cpu_seconds).collect();
        let broker_cpu = broker.cpu_seconds() - broker_cpu;
        let stopped: Vec<Result<(), String>> = procs.into_iter().map(Member::stop).collect();
        let (outputs, digest) = output_digest(&s, &suffix);
        let done = committed.offsets().unwrap_or_default();
        eprintln!("{n} process(es): {records} records in {secs:.2}s, CPU {cpu:?}, broker {broker_cpu:.1}s, {outputs} outputs, digest {digest}");
        rows.push(json!({
            "processes": n, "records": records, "seconds": secs, "rate": records as f64 / secs,
            "seconds_from_start": total, "all_assigned_after": assigned, "first_commit_after": first_commit, "committed": done, "high_watermarks": highs,
            "process_cpu_seconds": cpu, "broker_cpu_seconds": broker_cpu,
            "outputs": outputs, "digest": digest, "failed": failed,
            "stopped_cleanly": stopped.iter().all(Result::is_ok),
            "stop_errors": stopped.iter().filter_map(|r| r.as_ref().err()).collect::<Vec<_>>(),
        }));
    }
    rows
}

/// What a member joining costs: one member runs, caught up, on a fresh raw topic of `base`'s
/// partitions; `records` are fed at `rate` records/s, and after `join_every`, and again after
/// each `join_every`, one more member starts, up to `joins` more. For each join: per raw
/// partition, the longest pause (300 ms or more) between two enriched records read back after
/// the member started, and when its last pause ended; the join's cost is the time from the
/// member's start until the last partition's last pause ended (every partition flowing again).
#[allow(clippy::too_many_arguments)]
pub async fn rebalance(
    binary: &Path,
    dir: &Path,
    base: &EnricherConfig,
    names: &[String],
    placed: &[i32],
    records: &[&Rec],
    rate: u64,
    join_every: Duration,
    joins: usize,
) -> Value {
    let mut s = own(base, ".rebalance");
    s.topics.raw.push_str(".rebalance");
    let partitions = s.topics.partitions;
    topics::create(&s.kafka, &s.topics).await.unwrap();
    kev_common::kafka::ensure_topic(&s.kafka, &s.topics.raw, partitions, 1, crate::KEEP).await.unwrap();
    let config = write_config(dir, "rebalance", &s);
    let mut procs = vec![Member::spawn(binary, &config, dir.join("rebalance-0.log"))];
    let ready_by = Instant::now() + Duration::from_secs(120);
    while !procs[0].said("partitions assigned") && Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The take-over of the empty partitions and the reader's start.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // From the start of the fresh output topic: a reader placed at its end may resolve the end
    // only after the first outputs are there, and miss them.
    let watch = SourceWatch::start(&s.kafka, &s.topics.enriched, partitions, rdkafka::Offset::Beginning);
    let p = feed::producer(&s.kafka, 10_000);
    let mut joined: Vec<Instant> = Vec::new();
    let feed_s = feed::feed(&p, &s.topics.raw, placed, names, records, rate, |t| {
        if joined.len() < joins && t >= join_every * (joined.len() as u32 + 1) {
            let i = procs.len();
            procs.push(Member::spawn(binary, &config, dir.join(format!("rebalance-{i}.log"))));
            joined.push(Instant::now());
        }
    })
    .await;
    feed::wait_read_back(&p, &watch, records.len()).await;
    let seen = watch.stop();
    let stopped: Vec<Result<(), String>> = procs.into_iter().map(Member::stop).collect();
    let sent = p.context().get();
    let mut copies: HashMap<(i32, i64), usize> = HashMap::new();
    let mut arrivals: BTreeMap<i32, Vec<Instant>> = BTreeMap::new();
    for (k, at) in &seen {
        if sent.contains_key(k) {
            *copies.entry(*k).or_default() += 1;
            if copies[k] == 1 {
                arrivals.entry(k.0).or_default().push(*at);
            }
        }
    }
    for a in arrivals.values_mut() {
        a.sort();
    }
    let fed_end = Instant::now();
    let rows: Vec<Value> = joined
        .iter()
        .enumerate()
        .map(|(i, &at)| {
            let until = joined.get(i + 1).copied().unwrap_or(fed_end);
            // Per partition, of the gaps of 300 ms or more between consecutive arrivals that
            // end after the join and before the next one (the feed's own gaps are 10 ms ticks
            // spread over the partitions): the longest, and when the last one ended.
            let pauses: BTreeMap<i32, (f64, f64)> = arrivals
                .iter()
                .map(|(p, a)| {
                    let gaps = a.windows(2).filter(|w| w[1] > at && w[1] <= until).map(|w| {
                        (w[1].duration_since(w[0]).as_secs_f64(), w[1].duration_since(at).as_secs_f64())
                    });
                    let gaps: Vec<(f64, f64)> = gaps.filter(|g| g.0 >= 0.3).collect();
                    let longest = gaps.iter().map(|g| g.0).fold(0.0, f64::max);
                    let last_end = gaps.iter().map(|g| g.1).fold(0.0, f64::max);
                    (*p, (longest, last_end))
                })
                .collect();
            let flowing = pauses.values().map(|g| g.1).fold(0.0, f64::max);
            let longest = pauses.values().map(|g| g.0).fold(0.0, f64::max);
            json!({"members_after": i + 2, "flowing_again_after_s": flowing, "longest_pause_s": longest,
                "pauses": pauses.iter().map(|(p, g)| json!({"partition": p, "pause_s": g.0, "ended_after_s": g.1})).collect::<Vec<_>>()})
        })
        .collect();
    let mut acknowledged_per_partition = vec![0u64; partitions as usize];
    for (p, _) in sent.keys() {
        acknowledged_per_partition[*p as usize] += 1;
    }
    let read_back_per_partition: Vec<usize> = (0..partitions).map(|p| arrivals.get(&p).map_or(0, Vec::len)).collect();
    // Where the records not read back are: (first, last, count) of their offsets, and the
    // partition's last offset fed, per partition.
    let mut missing: BTreeMap<i32, (i64, i64, u64, i64)> = BTreeMap::new();
    for &(p, o) in sent.keys() {
        let m = missing.entry(p).or_insert((i64::MAX, -1, 0, -1));
        m.3 = m.3.max(o);
        if !copies.contains_key(&(p, o)) {
            (m.0, m.1, m.2) = (m.0.min(o), m.1.max(o), m.2 + 1);
        }
    }
    let missing: Vec<Value> = missing
        .iter()
        .filter(|(_, m)| m.2 > 0)
        .map(|(p, m)| json!({"partition": p, "first": m.0, "last": m.1, "count": m.2, "last_fed": m.3}))
        .collect();
    json!({
        "partitions": partitions, "fed": records.len(), "rate": rate, "feed_seconds": feed_s,
        "acknowledged": sent.len(), "read_back": copies.len(),
        "acknowledged_per_partition": acknowledged_per_partition, "read_back_per_partition": read_back_per_partition,
        "not_read_back": missing,
        "read_more_than_once": copies.values().filter(|c| **c > 1).count(),
        "joins": rows,
        "stopped_cleanly": stopped.iter().all(Result::is_ok),
        "stop_errors": stopped.iter().filter_map(|r| r.as_ref().err()).collect::<Vec<_>>(),
    })
}
