//! What the pipeline benchmarks (`tests/examples`) share: reading a topic once, running
//! enrichers until their group has committed everything, asking a busy broker again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kev_common::kafka::{partition_count, KafkaSettings, LogEnds};
use kev_common::telemetry::Health;
use kev_enricher::config::EnricherConfig;
use kev_enricher::partition::EngineSpec;
use kev_enricher::{live, topics};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use tokio_util::sync::CancellationToken;

/// Logs on stderr, filtered by `RUST_LOG` (default warnings only), so that a benchmark's stdout
/// keeps only its table (`RUST_LOG=kev_enricher=debug` shows the enricher's take-overs and
/// commit barriers with their durations).
pub fn logs_to_stderr() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Every record of `topic` now, read once, every partition at once as a group member fetches
/// them (the enricher and the peer do): `each` gets (key, payload) per record. Returns
/// (records, seconds). The ends are read, not listed ([`LogEnds`]); a partition that stays
/// silent for 30 s below its end panics, naming where it stopped.
pub fn read_all(settings: &KafkaSettings, topic: &str, group: &str, mut each: impl FnMut(&[u8], &[u8])) -> (u64, f64) {
    let c: BaseConsumer =
        settings.client_config(&[("group.id", group), ("enable.auto.commit", "false")]).create().unwrap();
    let ends = LogEnds::new(settings, "kev-bench-log-end").unwrap();
    let n = partition_count(settings, topic, Duration::from_secs(10)).unwrap();
    let (mut next, mut highs) = (Vec::new(), Vec::new());
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..n {
        let (low, high) = ends.watermarks(topic, p, Duration::from_secs(10)).unwrap();
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(low)).unwrap();
        next.push(low);
        highs.push(high);
    }
    let started = Instant::now();
    c.assign(&tpl).unwrap();
    let (mut records, mut idle) = (0u64, 0);
    while next.iter().zip(&highs).any(|(a, h)| a < h) {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle = 0;
                let p = m.partition() as usize;
                if m.offset() >= next[p] {
                    next[p] = m.offset() + 1;
                    records += 1;
                    each(m.key().unwrap_or_default(), m.payload().unwrap_or_default());
                }
            }
            Some(Err(e)) => eprintln!("reading {topic}: {e}"),
            None => {
                idle += 1;
                assert!(idle < 150, "reading {topic}: nothing for 30 s at {next:?} of {highs:?}");
            }
        }
    }
    (records, started.elapsed().as_secs_f64())
}

/// Runs `instances` enrichers of one group on `cfg` until the group has committed every raw
/// record there is now. Returns their summed statistics and the seconds from their start.
///
/// The raw topic's ends are read once, before; while the enrichers run only the group's
/// committed offsets are asked, by one client, twice a second: asking for the ends too, with a
/// new client ten times a second, was a load of its own on a busy broker.
pub async fn enrich_all(cfg: &EnricherConfig, instances: usize, cancel: &CancellationToken) -> (live::RunStats, f64) {
    let spec = EngineSpec::load(cfg).unwrap();
    let codec = Arc::new(cfg.registry.codec().unwrap());
    let (_, highs) = progress(cfg).await;
    let watcher: BaseConsumer =
        cfg.kafka.client_config(&[("group.id", &cfg.group_id), ("enable.auto.commit", "false")]).create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..highs.len() as i32 {
        tpl.add_partition(&cfg.topics.raw, p);
    }
    let stop = cancel.child_token();
    let started = Instant::now();
    let runs: Vec<_> = (0..instances)
        .map(|_| {
            let (cfg, spec, codec, stop) = (cfg.clone(), spec.clone(), codec.clone(), stop.clone());
            tokio::spawn(async move { live::run_until_stopped(&cfg, &spec, codec, Health::new(), stop).await })
        })
        .collect();
    loop {
        // Often enough that the reading adds little to a phase of a few seconds.
        tokio::time::sleep(Duration::from_millis(50)).await;
        match watcher.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(t) => {
                let done = t.elements().iter().zip(&highs).all(|(e, h)| e.offset().to_raw().unwrap_or(0).max(0) >= *h);
                if done {
                    break;
                }
            }
            Err(e) => eprintln!("committed offsets: {e}; asking again"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let mut total = live::RunStats::default();
    for r in runs {
        let s = r.await.unwrap().expect("the enricher was refused nothing");
        total.records_in += s.records_in;
        total.records_out += s.records_out;
        total.dead_letters += s.dead_letters;
        total.recovered_records += s.recovered_records;
        total.commits += s.commits;
    }
    (total, secs)
}

/// The group's progress, asked again while the busy broker times the question out.
pub async fn progress(cfg: &EnricherConfig) -> (Vec<i64>, Vec<i64>) {
    loop {
        match topics::group_progress(cfg) {
            Ok(p) => return p,
            Err(e) => eprintln!("progress: {e}; asking again"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the group has committed the whole raw topic, asked again likewise.
pub async fn caught_up(cfg: &EnricherConfig) -> bool {
    loop {
        match topics::group_caught_up(cfg) {
            Ok(c) => return c,
            Err(e) => eprintln!("progress: {e}; asking again"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// CPU seconds this process has used so far, all threads (user + system, from
/// `/proc/self/stat`, in clock ticks of 10 ms): what a phase cost, less noisy than its wall time
/// on a busy machine. 0 where there is no procfs.
pub fn cpu_seconds() -> f64 {
    process_cpu_seconds("/proc/self/stat")
}

/// CPU time (user + system) of the process whose `stat` file is at `path`, in seconds.
pub fn process_cpu_seconds(path: &str) -> f64 {
    // utime and stime are fields 14 and 15 of the line.
    stat_seconds(path, [11, 12])
}

/// CPU seconds of this process's children that have ended and been waited for (a peer run as a
/// child process, read before and after it).
pub fn children_cpu_seconds() -> f64 {
    // cutime and cstime are fields 16 and 17 of the line.
    stat_seconds("/proc/self/stat", [13, 14])
}

/// The sum of two clock-tick fields of a `stat` file, counted after the command name (which is
/// in parentheses and may hold spaces), in seconds. 0 where there is no procfs.
fn stat_seconds(path: &str, fields: [usize; 2]) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else { return 0.0 };
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(fields[0]) + ticks(fields[1])) / 100.0
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A line of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`), 0 where there is none.
pub fn status_kib(field: &str) -> u64 {
    process_status_kib("/proc/self/status", field)
}

/// Peak resident memory (`VmHWM`) of process `pid`, bytes; 0 where there is no procfs.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    process_status_kib(&format!("/proc/{pid}/status"), "VmHWM") * 1024
}

/// A line of the `status` file at `path` in KiB, 0 where there is none.
fn process_status_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// An output record read back: the (partition, offset) of the raw record it came from, and when
/// it was read.
pub type Seen = ((i32, i64), Instant);

/// Reads an output topic on a thread of its own from `from` in every partition, noting for each
/// record the raw record it came from (its `kev.source` header, `topic/partition/offset`) and
/// when it arrived: the reading end of the latency measurements.
pub struct SourceWatch {
    seen: Arc<Mutex<Vec<Seen>>>,
    reading: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl SourceWatch {
    /// Every record of `topic` from `from`.
    pub fn start(settings: &KafkaSettings, topic: &str, partitions: i32, from: rdkafka::Offset) -> Self {
        Self::reading(settings, topic, partitions, from, false)
    }

    /// Only the first record of each key of `topic` from its start: for an incidents topic, the
    /// event that opened each incident and when a reader downstream could know of it.
    pub fn first_per_key(settings: &KafkaSettings, topic: &str, partitions: i32) -> Self {
        Self::reading(settings, topic, partitions, rdkafka::Offset::Beginning, true)
    }

    fn reading(settings: &KafkaSettings, topic: &str, partitions: i32, from: rdkafka::Offset, first: bool) -> Self {
        let c: BaseConsumer = settings
            .client_config(&[("group.id", "bench-latency-reader"), ("fetch.wait.max.ms", "5")])
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, from).unwrap();
        }
        c.assign(&tpl).unwrap();
        let (seen, reading) = (Arc::<Mutex<Vec<Seen>>>::default(), Arc::new(AtomicBool::new(true)));
        let thread = {
            let (seen, reading) = (seen.clone(), reading.clone());
            std::thread::spawn(move || {
                let mut keys = std::collections::HashSet::new();
                while reading.load(Ordering::Relaxed) {
                    let Some(Ok(m)) = c.poll(Duration::from_millis(50)) else { continue };
                    let at = Instant::now();
                    if first && !m.key().is_some_and(|k| keys.insert(k.to_vec())) {
                        continue;
                    }
                    if let Some(source) = source_of(&m) {
                        seen.lock().unwrap().push((source, at));
                    }
                }
            })
        };
        Self { seen, reading, thread }
    }

    /// What has been read so far.
    pub fn seen(&self) -> MutexGuard<'_, Vec<Seen>> {
        self.seen.lock().unwrap()
    }

    /// Stops reading; everything read.
    pub fn stop(self) -> Vec<Seen> {
        self.reading.store(false, Ordering::Relaxed);
        self.thread.join().unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// The raw (partition, offset) named by a record's `kev.source` header.
fn source_of(m: &impl Message) -> Option<(i32, i64)> {
    let h = m.headers()?;
    let v = h.iter().find(|h| h.key == "kev.source")?.value?;
    let mut parts = std::str::from_utf8(v).ok()?.rsplit('/');
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    Some((partition, offset))
}

/// CPU seconds of each thread of this process so far, by thread id, with the thread's name.
pub fn threads_cpu() -> std::collections::BTreeMap<u32, (String, f64)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for t in tasks.flatten() {
        let Ok(tid) = t.file_name().to_string_lossy().parse::<u32>() else { continue };
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_string();
        let cpu = process_cpu_seconds(&t.path().join("stat").to_string_lossy());
        out.insert(tid, (name, cpu));
    }
    out
}

/// The CPU each thread name used between two [`threads_cpu`] readings, busiest first: where a
/// phase's CPU time went (librdkafka names its threads `rdk:broker<id>`, `rdk:main`; tokio's
/// are `tokio-runtime-w`).
pub fn threads_cpu_since(before: &std::collections::BTreeMap<u32, (String, f64)>) -> Vec<(String, f64)> {
    let mut by_name: std::collections::BTreeMap<String, f64> = Default::default();
    for (tid, (name, cpu)) in threads_cpu() {
        let used = cpu - before.get(&tid).map_or(0.0, |b| b.1);
        if used > 0.0 {
            *by_name.entry(name).or_default() += used;
        }
    }
    let mut v: Vec<_> = by_name.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}
