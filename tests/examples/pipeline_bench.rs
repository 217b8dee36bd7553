//! The whole pipeline through a real broker process: the producer replays the real dumps under
//! several cluster ids into the raw topic, then, in the same run on the same broker and topic,
//! a consume-only rdkafka reader (the ceiling) and the enricher each read the whole raw topic.
//!
//! cargo run --release -p kev-tests --example pipeline_bench
//!
//! `KEV_BENCH_CLUSTERS` (default 4) copies of the 13,800 real events, one cluster id each, spread
//! over `KEV_BENCH_PARTITIONS` (default 3) partitions. tansu runs with its sqlite storage: its
//! memory storage (0.6.0) was seen here to give records of one produce batch overlapping offsets
//! (the consumer read 28,566 records from partitions whose high watermarks summed to 28,155), so
//! neither a watermark-bounded ceiling nor "caught up" can be measured on it;
//! `KEV_BENCH_STORAGE=memory` runs it anyway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kev_common::kafka::{partition_count, RangeReader};
use kev_common::telemetry::Health;
use kev_enricher::partition::EngineSpec;
use kev_enricher::{live, topics};
use kev_producer::run as producer;
use kev_tests::broker::{Broker, Storage};
use kev_tests::outputs::{enricher_config, progress};
use kev_tests::{data, expect};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let clusters: usize = env_or("KEV_BENCH_CLUSTERS", 4);
    let partitions: i32 = env_or("KEV_BENCH_PARTITIONS", 3);
    let sqlite = std::env::var("KEV_BENCH_STORAGE").map_or(true, |s| s != "memory");
    let tmp = tempfile::tempdir().unwrap();
    let broker =
        Broker::start(if sqlite { Storage::Sqlite(tmp.path().join("tansu.db")) } else { Storage::Memory }, tmp.path());
    let cancel = CancellationToken::new();
    let registry = expect::registry(&cancel).await;
    let mut cfg = enricher_config(broker.settings(), &registry.url);
    cfg.commit_interval_ms = 1_000;
    cfg.checkpoint_interval_ms = 60_000;
    cfg.topics.partitions = partitions;
    topics::create(&cfg.kafka, &cfg.topics).await.unwrap();

    // 1. The producer fills the raw topic.
    let started = Instant::now();
    let mut published = 0;
    for c in 0..clusters {
        let mut p = expect::config(&broker, &registry, &format!("bench-{c}"));
        p.topic.partitions = partitions;
        let stats = producer::replay(&p, data::files(), Health::new(), cancel.clone()).await.unwrap();
        published += stats.published + stats.heartbeats;
    }
    let produce_s = started.elapsed().as_secs_f64();
    let (_, highs) = progress(&cfg);
    let raw_records: i64 = highs.iter().sum();
    eprintln!("producer: {published} records in {produce_s:.1}s; raw topic holds {raw_records}");

    // 2. The ceiling: read every raw record, decode nothing.
    let c: BaseConsumer = cfg.kafka.client_config(&[("group.id", "bench-ceiling")]).create().unwrap();
    let started = Instant::now();
    let mut ceiling_records = 0u64;
    let mut ceiling_bytes = 0usize;
    for p in 0..partition_count(&cfg.kafka, &cfg.topics.raw, Duration::from_secs(10)).unwrap() {
        let (low, high) = c.fetch_watermarks(&cfg.topics.raw, p, Duration::from_secs(10)).unwrap();
        let mut r = RangeReader::new(&c, &cfg.topics.raw, p, low, high).unwrap();
        while let Some(m) = r.next_message().unwrap() {
            ceiling_records += 1;
            ceiling_bytes += m.payload_len();
        }
    }
    let ceiling_s = started.elapsed().as_secs_f64();
    let ceiling_rate = ceiling_records as f64 / ceiling_s;
    eprintln!("ceiling: {ceiling_records} records in {ceiling_s:.2}s");

    // 3. The enricher over the same raw topic, from the start, until it has committed it all.
    let spec = EngineSpec::load(&cfg).unwrap();
    let codec = Arc::new(cfg.registry.codec().unwrap());
    let stop = cancel.child_token();
    let started = Instant::now();
    let run = {
        let (cfg, spec, codec, stop) = (cfg.clone(), spec.clone(), codec.clone(), stop.clone());
        tokio::spawn(async move { live::run_until_stopped(&cfg, &spec, codec, Health::new(), stop).await })
    };
    let caught_up =
        |committed: Vec<i64>| committed.len() == highs.len() && committed.iter().zip(&highs).all(|(c, h)| c >= h);
    while !caught_up(progress(&cfg).0) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let enrich_s = started.elapsed().as_secs_f64();
    stop.cancel();
    let stats = run.await.unwrap();
    let enrich_rate = stats.records_in as f64 / enrich_s;
    eprintln!("enricher: {stats:?} in {enrich_s:.2}s");

    let storage = if sqlite { "sqlite" } else { "memory" };
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| broker | tansu 0.6.0, {storage} storage, {partitions} partitions |");
    println!("| raw records | {raw_records} ({clusters} clusters x 13,800 real events + heartbeats), {:.0} bytes each on average |", ceiling_bytes as f64 / ceiling_records.max(1) as f64);
    println!("| producer (dump replay, publish, acks) | {:.0} records/s |", published as f64 / produce_s);
    println!("| ceiling: consume-only reader of the raw topic | {ceiling_rate:.0} records/s |");
    println!(
        "| enricher end to end (consume, decode, engine, encode, produce 4 topics, commit) | {enrich_rate:.0} records/s, {} records out |",
        stats.records_out
    );
    println!("| enricher / ceiling | {:.0}% (target >= 50%) |", 100.0 * enrich_rate / ceiling_rate);
    cancel.cancel();
}
