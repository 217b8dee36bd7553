//! Latency at a steady rate under capacity: from a raw record handed to the producer to its
//! enriched record readable downstream, and to the first record of each incident it opened.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kev_common::telemetry::Health;
use kev_enricher::config::EnricherConfig;
use kev_enricher::live;
use kev_enricher::partition::EngineSpec;
use kev_tests::bench::{percentile, SourceWatch};
use rdkafka::producer::Producer;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::feed;
use crate::Rec;

/// `p50_ms`, `p99_ms` and `max_ms` of `ms`, sorted here.
fn quantiles(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    let q = |x: f64| if ms.is_empty() { Value::Null } else { json!(percentile(&ms, x)) };
    json!({"matched": ms.len(), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": ms.last().copied()})
}

/// `instances` enrichers (in this process, kev's live code with `s` as configured) run on `s`
/// (caught up) while `records` are written to its raw topic at `rate` records/s. The enrichers'
/// start and group join happen before the feed; the first 2 s of the feed are a warm-up.
pub async fn run(
    s: &EnricherConfig,
    instances: usize,
    load_batch: usize,
    names: &[String],
    records: &[&Rec],
    rate: u64,
    cancel: &CancellationToken,
) -> Value {
    // On a storage that keeps only single-record batches, the enrichers' outputs are written so
    // too here, so that the reader finds them where the broker said they are.
    let mut s = s.clone();
    if load_batch == 1 {
        s.kafka.properties.insert("batch.num.messages".into(), "1".into());
    }
    let s = &s;
    let partitions = s.topics.partitions;
    // From the start of the fresh output topics: a reader placed at the end may resolve it only
    // after the first outputs are there, and miss them.
    let watch = SourceWatch::start(&s.kafka, &s.topics.enriched, partitions, rdkafka::Offset::Beginning);
    let incidents = SourceWatch::first_per_key(&s.kafka, &s.topics.incidents, partitions);
    let spec = EngineSpec::load(s).unwrap();
    let codec = Arc::new(s.registry.codec().unwrap());
    let stop = cancel.child_token();
    let healths: Vec<Arc<Health>> = (0..instances).map(|_| Health::new()).collect();
    let runs: Vec<_> = healths
        .iter()
        .map(|h| {
            let (cfg, spec, codec, stop, h) = (s.clone(), spec.clone(), codec.clone(), stop.clone(), h.clone());
            tokio::spawn(async move { live::run_until_stopped(&cfg, &spec, codec, h, stop).await })
        })
        .collect();
    // The group join, the take-over and the readers' start: 8 s, then until every instance
    // says it is ready.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let ready_by = Instant::now() + Duration::from_secs(120);
    while !healths.iter().all(|h| h.is_ready()) && Instant::now() < ready_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = feed::producer(&s.kafka, load_batch);
    let started = Instant::now();
    let feed_s = feed::feed(&p, &s.topics.raw, &feed::by_key(names, partitions), names, records, rate, |_| {}).await;
    feed::wait_read_back(&p, &watch, records.len()).await;
    // Incidents of the last records may come a little after their enriched records.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = watch.stop();
    let opened = incidents.stop();
    stop.cancel();
    for r in runs {
        r.await.unwrap().expect("the enricher was refused nothing");
    }
    let sent = p.context().get();
    let warm = started + Duration::from_secs(2);
    let mut first_seen: HashMap<(i32, i64), Instant> = HashMap::new();
    for (k, at) in &seen {
        first_seen.entry(*k).or_insert(*at);
    }
    let since = |(k, at): (&(i32, i64), &Instant)| {
        sent.get(k).filter(|s| **s >= warm).map(|s| at.duration_since(*s).as_secs_f64() * 1e3)
    };
    let enriched = quantiles(first_seen.iter().filter_map(since).collect());
    let incident = quantiles(opened.iter().filter_map(|(k, at)| since((k, at))).collect());
    let counted = sent.values().filter(|s| **s >= warm).count();
    json!({"fed": records.len(), "rate": rate, "feed_seconds": feed_s, "acknowledged": sent.len(),
        "after_warm_up": counted, "matched": enriched["matched"], "p50_ms": enriched["p50_ms"],
        "p99_ms": enriched["p99_ms"], "max_ms": enriched["max_ms"],
        "incidents_opened": opened.len(), "incident": incident})
}
