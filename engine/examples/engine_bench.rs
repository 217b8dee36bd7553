//! Engine throughput and state size over the real dumps scaled to a million events.
//!
//! The 13,800 real events of `tests/data/k8s-events` are copied (renamed objects and uids,
//! shifted in time, spread over 8 cluster ids) until there are `KEV_BENCH_EVENTS` (default
//! 1,000,000), then fed to one engine on one thread. Prints events/s on one core, open groups and
//! state bytes per open group (the engine's own estimate, and the process's peak RSS).
//!
//! cargo run --release -p kev-engine --example engine_bench

use std::time::{Duration, Instant};

use kev_engine::rules::RuleSet;
use kev_engine::{Engine, EngineConfig, Output};
use kev_schemas::EventObservation;

// The engine allocates an output record per event; with mimalloc instead of glibc's malloc the
// engine ran 318k -> 356k events/s here (BENCHMARKS.md). The binaries are to ship with it too.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The real events, in event-time order, without their original objects: the engine reads the
/// normalised view, and a million original objects would only fill memory.
fn base() -> Vec<EventObservation> {
    let mut out: Vec<EventObservation> = kev_tests::data::observations()
        .into_iter()
        .map(|(_, mut o)| {
            o.core = None;
            o.events_v1 = None;
            o
        })
        .collect();
    out.sort_by_key(|o| o.normalized.event_time);
    out
}

/// Copy `k` of an observation: renamed objects and uids, shifted by `k` hours.
fn copy(o: &EventObservation, k: usize) -> EventObservation {
    let mut c = o.clone();
    c.uid = format!("{}-{k}", o.uid);
    c.normalized.event_time += k as i64 * 3_600_000_000;
    if let Some(r) = c.normalized.regarding.as_mut() {
        r.name = r.name.as_ref().map(|n| format!("{n}-c{k}"));
    }
    c
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let target: usize = std::env::var("KEV_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let base = base();
    let copies = target.div_ceil(base.len());
    let clusters = 8;
    let mut engine = Engine::new(EngineConfig::default(), RuleSet::defaults());
    let mut out: Vec<Output> = Vec::with_capacity(1024);
    let (mut events, mut enriched, mut aggregates, mut incidents) = (0usize, 0usize, 0usize, 0usize);
    let mut busy = Duration::ZERO;
    let mut peak_open = 0;
    let rss_before = peak_rss_kib();
    'all: for k in 0..copies {
        // Build a batch outside the timed section.
        let batch: Vec<(String, EventObservation)> =
            base.iter().map(|o| (format!("cluster-{}", k % clusters), copy(o, k / clusters))).collect();
        let started = Instant::now();
        for (cluster, o) in &batch {
            engine.on_event(cluster, o, 0, events as i64, &mut out);
            for o in out.drain(..) {
                match o {
                    Output::Enriched(_) => enriched += 1,
                    Output::Aggregate(_) => aggregates += 1,
                    Output::Incident(_) => incidents += 1,
                }
            }
            events += 1;
            if events == target {
                busy += started.elapsed();
                break 'all;
            }
        }
        busy += started.elapsed();
        peak_open = peak_open.max(engine.state_size().open_groups);
    }
    let size = engine.state_size();
    peak_open = peak_open.max(size.open_groups);
    let rate = events as f64 / busy.as_secs_f64();
    println!("events: {events} ({} real events x {copies} copies over {clusters} clusters)", base.len());
    println!(
        "engine time: {:.2} s on one thread -> {:.0} events/s per core (target >= 500000: {})",
        busy.as_secs_f64(),
        rate,
        if rate >= 500_000.0 { "met" } else { "missed" }
    );
    println!("outputs: {enriched} enriched, {aggregates} aggregates, {incidents} incident records");
    let groups = size.open_groups + size.retained_groups;
    let per_group = size.approx_bytes as f64 / groups.max(1) as f64;
    println!(
        "state at the end: {} open + {} retained window groups, {} repetition keys, {} correlation entries, ~{} bytes ({per_group:.0} bytes per group, target <= 300: {})",
        size.open_groups, size.retained_groups, size.repetition_keys, size.correlation_entries, size.approx_bytes,
        if per_group <= 300.0 { "met" } else { "missed" }
    );
    println!(
        "peak open groups: {peak_open}; peak RSS {} MiB (before the run {} MiB, most of it the input batches)",
        peak_rss_kib() / 1024,
        rss_before / 1024
    );
}
