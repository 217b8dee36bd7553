//! Engine throughput and state size over the real dumps scaled to a million events.
//!
//! The 13,800 real events of `tests/data/k8s-events` are copied (renamed objects and uids,
//! shifted in time, spread over 8 cluster ids) until there are `KEV_BENCH_EVENTS` (default
//! 1,000,000), then fed to one engine on one thread. Prints events/s on one core, by wall time
//! and by the thread's CPU time (the machine is shared: CPU time is the steadier of the two),
//! open groups, state bytes per open group (the engine's own estimate, and the process's peak
//! RSS), and a digest of every output record in order, so that a change that should not change
//! the output can be shown not to. `KEV_BENCH_NO_DIGEST=1` leaves the digest out, for a profiler
//! (`perf record`) to see the engine rather than the formatting of its outputs.
//!
//! cargo run --release -p kev-engine --example engine_bench

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use kev_engine::rules::RuleSet;
use kev_engine::{Engine, EngineConfig, Output};

// The engine allocates an output record per event; with mimalloc instead of glibc's malloc the
// engine ran 318k -> 356k events/s here (BENCHMARKS.md). The binaries are to ship with it too.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Events fed between two readings of the clocks. Their outputs are digested outside the timed
/// part, then dropped inside it (dropping what the engine made is part of its cost); the chunk
/// is small so that the outputs are still in cache when they are dropped, as when the caller
/// drops each at once.
const CHUNK: usize = 256;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall and CPU time of the timed parts.
#[derive(Default)]
struct Timer {
    wall: Duration,
    cpu: Duration,
}

impl Timer {
    fn time<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let (w, c) = (Instant::now(), thread_cpu());
        let r = f();
        self.cpu += thread_cpu() - c;
        self.wall += w.elapsed();
        r
    }
}

/// xxh3 of the Debug form of every output record in order, and of how many records each event
/// made, so a record moved from one event to the next changes it too.
struct Digest {
    h: xxhash_rust::xxh3::Xxh3,
}

impl std::fmt::Write for Digest {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.h.update(s.as_bytes());
        Ok(())
    }
}

fn main() {
    let target: usize = std::env::var("KEV_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let base = kev_tests::scale::base(false);
    let copies = target.div_ceil(base.len());
    let clusters = 8;
    let mut engine = Engine::new(EngineConfig::default(), RuleSet::defaults());
    let mut out: Vec<Output> = Vec::with_capacity(4 * CHUNK);
    let mut per_event: Vec<usize> = Vec::with_capacity(CHUNK);
    let (mut events, mut enriched, mut aggregates, mut incidents) = (0usize, 0usize, 0usize, 0usize);
    let mut timer = Timer::default();
    let mut digest = Digest { h: xxhash_rust::xxh3::Xxh3::new() };
    let mut peak_open = 0;
    let rss_before = peak_rss_kib();
    // Under a profiler, digesting the outputs (about half of the whole run) hides the engine.
    let digesting = std::env::var_os("KEV_BENCH_NO_DIGEST").is_none();
    // Each batch is built outside the timed section.
    for (cluster, batch) in kev_tests::scale::batches(&base, target, clusters) {
        let mut batch = batch.into_iter().peekable();
        while batch.peek().is_some() {
            // The engine takes each observation and drops what it does not move into its output:
            // that is part of its cost.
            timer.time(|| {
                for o in batch.by_ref().take(CHUNK) {
                    engine.on_event(&cluster, o, 0, events as i64, &mut out);
                    per_event.push(out.len());
                    events += 1;
                }
            });
            let mut from = 0;
            for &to in &per_event {
                if digesting {
                    write!(digest, "{}|", to - from).expect("digest");
                }
                for o in &out[from..to] {
                    if digesting {
                        writeln!(digest, "{o:?}").expect("digest");
                    }
                    match o {
                        Output::Enriched(_) => enriched += 1,
                        Output::Aggregate(_) => aggregates += 1,
                        Output::Incident(_) => incidents += 1,
                    }
                }
                from = to;
            }
            per_event.clear();
            timer.time(|| out.clear());
        }
        peak_open = peak_open.max(engine.state_size().open_groups);
    }
    let size = engine.state_size();
    peak_open = peak_open.max(size.open_groups);
    let rate = events as f64 / timer.wall.as_secs_f64();
    let cpu_rate = events as f64 / timer.cpu.as_secs_f64();
    let met = |ok: bool| if ok { "met" } else { "missed" };
    println!("events: {events} ({} real events x {copies} copies over {clusters} clusters)", base.len());
    println!(
        "engine time: {:.2} s wall, {:.2} s CPU on one thread -> {:.0} events/s per core by wall time, {:.0} by CPU time (target >= 500000: {})",
        timer.wall.as_secs_f64(),
        timer.cpu.as_secs_f64(),
        rate,
        cpu_rate,
        met(rate >= 500_000.0)
    );
    println!("outputs: {enriched} enriched, {aggregates} aggregates, {incidents} incident records");
    if digesting {
        println!("output digest (xxh3 of every record in order): {:016x}", digest.h.digest());
    } else {
        println!("output digest: not computed (KEV_BENCH_NO_DIGEST is set)");
    }
    let groups = size.open_groups + size.retained_groups;
    let per_group = size.approx_bytes as f64 / groups.max(1) as f64;
    println!(
        "state at the end: {} open + {} retained window groups, {} repetition keys, {} correlation entries, ~{} bytes ({per_group:.0} bytes per group, target <= 300: {})",
        size.open_groups, size.retained_groups, size.repetition_keys, size.correlation_entries, size.approx_bytes,
        met(per_group <= 300.0)
    );
    println!(
        "memos (templates by message, rule candidates, correlation reasons; not state): ~{} bytes",
        size.memo_bytes
    );
    println!(
        "peak open groups: {peak_open}; peak RSS {} MiB (before the run {} MiB, most of it the input batches)",
        peak_rss_kib() / 1024,
        rss_before / 1024
    );
}
