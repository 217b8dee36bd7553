//! The whole pipeline through a real broker process, every phase in one run on one broker:
//!
//! 1. the producer replays the real dumps under several cluster ids into the raw topic;
//! 2. the ceiling: a consume-only rdkafka reader of the whole raw topic;
//! 3. the pass-through ceiling: the same read, every record re-produced unchanged to another
//!    topic with the enricher's producer settings and acknowledged (what any consume-transform-
//!    produce job pays the broker, with no processing at all);
//! 4. the enricher over the whole raw topic, from the start, until it has committed all of it,
//!    in its default mode and then (its own group and output topics) in `exactly_once` mode;
//! 5. latency: a fresh raw topic fed at a steady rate well under capacity while an enricher
//!    runs on it; for each raw record, the time from handing it to the producer to seeing its
//!    enriched record in the output topic (matched by the `kev.source` header).
//!
//! cargo run --release -p kev-tests --example pipeline_bench
//!
//! `KEV_BENCH_CLUSTERS` (default 16) copies of the 13,800 real events, one cluster id each, spread
//! over `KEV_BENCH_PARTITIONS` (default 3) partitions; `KEV_BENCH_LIVE_RATE` (records/s, default
//! 200) and `KEV_BENCH_LIVE_SECONDS` (default 20) shape phase 5; `KEV_BENCH_COMMIT_MS` (the
//! commit barrier's interval, default 1,000) and `KEV_BENCH_FETCH_WAIT_MS` (the latency phase's
//! `fetch.wait.max.ms`) try the enricher's two knobs. The broker is Apache Kafka (one KRaft
//! node, `kev_tests::broker`) with its log in `/dev/shm` where there is one, so that the disk of
//! a shared machine is not what is measured.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kev_common::kafka::ensure_topic;
use kev_common::telemetry::Health;
use kev_enricher::config::ProcessingGuarantee;
use kev_enricher::partition::EngineSpec;
use kev_enricher::{emit, live, replay, topics};
use kev_producer::run as producer;
use kev_tests::bench::{
    caught_up, cpu_seconds, enrich_all, env_or, percentile, progress, read_all, threads_cpu, threads_cpu_since,
    SourceWatch,
};
use kev_tests::broker::{Broker, KAFKA_VERSION};
use kev_tests::outputs::enricher_config;
use kev_tests::{data, expect};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::Offset;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    kev_tests::bench::logs_to_stderr();
    let clusters: usize = env_or("KEV_BENCH_CLUSTERS", 16);
    let partitions: i32 = env_or("KEV_BENCH_PARTITIONS", 3);
    let live_rate: u64 = env_or("KEV_BENCH_LIVE_RATE", 200);
    let live_seconds: u64 = env_or("KEV_BENCH_LIVE_SECONDS", 20);
    let shm = std::path::Path::new("/dev/shm");
    let tmp = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let broker = Broker::start(tmp.path());
    let cancel = CancellationToken::new();
    let registry = expect::registry(&cancel).await;
    let mut cfg = enricher_config(broker.settings(), &registry.url);
    // `KEV_BENCH_COMMIT_MS`: the commit barrier's interval (default 1 s): each barrier waits
    // until every output sent so far is acknowledged, with consumption stopped meanwhile.
    cfg.commit_interval_ms = env_or("KEV_BENCH_COMMIT_MS", 1_000);
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
    let (_, highs) = progress(&cfg).await;
    let raw_records: i64 = highs.iter().sum();
    eprintln!("producer: {published} records in {produce_s:.1}s; raw topic holds {raw_records}");

    // 2. The ceiling: read every raw record, decode nothing.
    let mut ceiling_bytes = 0usize;
    let (cpu, broker_cpu) = (cpu_seconds(), broker.cpu_seconds());
    let (ceiling_records, ceiling_s) =
        read_all(&cfg.kafka, &cfg.topics.raw, "bench-ceiling", |_, v| ceiling_bytes += v.len());
    let (ceiling_cpu, ceiling_broker_cpu) = (cpu_seconds() - cpu, broker.cpu_seconds() - broker_cpu);
    let ceiling_rate = ceiling_records as f64 / ceiling_s;
    eprintln!("ceiling: {ceiling_records} records in {ceiling_s:.2}s");

    // 3. The pass-through ceiling: the same read, each record re-produced as it is, until the
    // broker has acknowledged every one.
    ensure_topic(&cfg.kafka, "kev.bench.passthrough", partitions, 1, &[]).await.unwrap();
    let out = emit::producer(&cfg.kafka, None).unwrap();
    // The latency feed of phase 5 is kept from this read: the first cluster's first records.
    let mut feed = Vec::new();
    let want = (live_rate * live_seconds) as usize;
    let started = Instant::now();
    let (cpu, broker_cpu) = (cpu_seconds(), broker.cpu_seconds());
    let (passed, _) = read_all(&cfg.kafka, &cfg.topics.raw, "bench-passthrough", |k, v| {
        if k == b"bench-0" && feed.len() < want {
            feed.push((k.to_vec(), v.to_vec()));
        }
        let mut rec = rdkafka::producer::BaseRecord::to("kev.bench.passthrough").key(k).payload(v);
        loop {
            match out.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    });
    out.flush(Timeout::Never).unwrap();
    let through_s = started.elapsed().as_secs_f64();
    let (through_cpu, through_broker_cpu) = (cpu_seconds() - cpu, broker.cpu_seconds() - broker_cpu);
    if let Some(e) = out.context().failure() {
        panic!("pass-through deliveries failed: {e}");
    }
    let through_rate = passed as f64 / through_s;
    eprintln!("pass-through: {passed} records in {through_s:.2}s");

    // 4. The enricher over the same raw topic, from the start, until it has committed it all.
    let (cpu, broker_cpu, threads) = (cpu_seconds(), broker.cpu_seconds(), threads_cpu());
    let (stats, enrich_s) = enrich_all(&cfg, 1, &cancel).await;
    let enrich_threads = threads_cpu_since(&threads);
    let (enrich_cpu, enrich_broker_cpu) = (cpu_seconds() - cpu, broker.cpu_seconds() - broker_cpu);
    let enrich_rate = stats.records_in as f64 / enrich_s;
    eprintln!("enricher: {stats:?} in {enrich_s:.2}s");

    // 4b. The same in `exactly_once` mode: its own group and output topics, one transaction per
    // commit barrier.
    let mut ecfg = cfg.clone();
    ecfg.processing_guarantee = ProcessingGuarantee::ExactlyOnce;
    ecfg.transactional_id = Some("kev-bench-eos-0".into());
    ecfg.group_id = "kev-bench-eos".into();
    let raw = cfg.topics.raw.clone();
    ecfg.topics = replay::suffixed(&cfg.topics, ".eos");
    ecfg.topics.raw = raw;
    ecfg.topics.checkpoints.push_str(".eos");
    topics::create(&ecfg.kafka, &ecfg.topics).await.unwrap();
    let (cpu, broker_cpu) = (cpu_seconds(), broker.cpu_seconds());
    let (eos_stats, eos_s) = enrich_all(&ecfg, 1, &cancel).await;
    let (eos_cpu, eos_broker_cpu) = (cpu_seconds() - cpu, broker.cpu_seconds() - broker_cpu);
    let eos_rate = eos_stats.records_in as f64 / eos_s;
    eprintln!("enricher, exactly_once: {eos_stats:?} in {eos_s:.2}s");

    // 5. Latency: a fresh raw topic, fed at a steady rate with the first cluster's records while
    // an enricher (its own group and output topics) runs on it.
    let mut lcfg = cfg.clone();
    lcfg.group_id = "kev-bench-latency".into();
    lcfg.topics = replay::suffixed(&cfg.topics, ".latency");
    lcfg.topics.raw.push_str(".latency");
    lcfg.topics.checkpoints.push_str(".latency");
    lcfg.topics.partitions = 1;
    // `KEV_BENCH_FETCH_WAIT_MS`: the latency phase's enricher with this `fetch.wait.max.ms`
    // (librdkafka's default is 500: how long a fetch waits at the end of the log).
    if let Ok(ms) = std::env::var("KEV_BENCH_FETCH_WAIT_MS") {
        lcfg.kafka.properties.insert("fetch.wait.max.ms".into(), ms);
    }
    topics::create(&lcfg.kafka, &lcfg.topics).await.unwrap();
    ensure_topic(&lcfg.kafka, &lcfg.topics.raw, 1, 1, &[]).await.unwrap();
    let spec = EngineSpec::load(&lcfg).unwrap();
    let codec = Arc::new(lcfg.registry.codec().unwrap());
    // Heartbeats have no enriched record: counted, so that the matched count can be checked.
    let mut fed_heartbeats = 0;
    for (_, v) in &feed {
        if codec.decode_raw(v).await.unwrap().kind == kev_schemas::RawKind::Heartbeat {
            fed_heartbeats += 1;
        }
    }
    let stop = cancel.child_token();
    let run = {
        let (lcfg, stop) = (lcfg.clone(), stop.clone());
        tokio::spawn(async move { live::run_until_stopped(&lcfg, &spec, codec, Health::new(), stop).await })
    };
    // Sent instants by raw offset, filled as the broker acknowledges each record.
    let sent: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let watch = SourceWatch::start(&lcfg.kafka, &lcfg.topics.enriched, 1, Offset::Beginning);
    let feeder: FutureProducer = cfg
        .kafka
        .client_config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "10"),
            ("compression.type", "lz4"),
        ])
        .create()
        .unwrap();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / live_rate as f64));
    let mut deliveries = Vec::new();
    let started = Instant::now();
    for (k, v) in &feed {
        tick.tick().await;
        let at = Instant::now();
        let f = feeder.send_result(FutureRecord::to(&lcfg.topics.raw).key(k).payload(v)).map_err(|(e, _)| e).unwrap();
        let sent = sent.clone();
        deliveries.push(tokio::spawn(async move {
            let offset = f.await.unwrap().map_err(|(e, _)| e).unwrap().offset;
            sent.lock().unwrap().insert(offset, at);
        }));
    }
    for d in deliveries {
        d.await.unwrap();
    }
    let feed_s = started.elapsed().as_secs_f64();
    while !caught_up(&lcfg).await {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = watch.stop();
    stop.cancel();
    run.await.unwrap().expect("the enricher was refused nothing");
    let sent = sent.lock().unwrap();
    let mut latencies: Vec<f64> =
        seen.iter().filter_map(|((_, o), at)| sent.get(o).map(|s| at.duration_since(*s).as_secs_f64() * 1e3)).collect();
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "latency: {} of {} fed records matched ({fed_heartbeats} heartbeats), fed in {feed_s:.1}s",
        latencies.len(),
        feed.len()
    );

    let storage = if tmp.path().starts_with(shm) { "log in /dev/shm" } else { "log on disk" };
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| broker | Apache Kafka {KAFKA_VERSION} (one KRaft node, 512 MiB heap), {storage}, {partitions} partitions |"
    );
    println!("| raw records | {raw_records} ({clusters} clusters x 13,800 real events + heartbeats), {:.0} bytes each on average |", ceiling_bytes as f64 / ceiling_records.max(1) as f64);
    println!("| producer (dump replay, publish, acks) | {:.0} records/s |", published as f64 / produce_s);
    println!("| ceiling: consume-only reader of the raw topic | {ceiling_rate:.0} records/s |");
    println!("| pass-through: consume, re-produce unchanged, acked | {through_rate:.0} records/s |");
    println!(
        "| enricher end to end (consume, decode, engine, encode, produce 4 topics, commit) | {enrich_rate:.0} records/s, {} records out ({:.2} per raw record) |",
        stats.records_out,
        stats.records_out as f64 / stats.records_in.max(1) as f64
    );
    println!(
        "| enricher end to end, `exactly_once` (one transaction per commit barrier, {} commits) | {eos_rate:.0} records/s, {} records out |",
        eos_stats.commits, eos_stats.records_out
    );
    println!(
        "| CPU time of this process per raw record (all its threads; the broker's not counted): ceiling, pass-through, enricher, enricher exactly_once | {:.1} us, {:.1} us, {:.1} us, {:.1} us |",
        1e6 * ceiling_cpu / ceiling_records.max(1) as f64,
        1e6 * through_cpu / passed.max(1) as f64,
        1e6 * enrich_cpu / stats.records_in.max(1) as f64,
        1e6 * eos_cpu / eos_stats.records_in.max(1) as f64
    );
    println!(
        "| CPU time of the broker process per raw record in the same phases: ceiling, pass-through, enricher, enricher exactly_once | {:.1} us, {:.1} us, {:.1} us, {:.1} us |",
        1e6 * ceiling_broker_cpu / ceiling_records.max(1) as f64,
        1e6 * through_broker_cpu / passed.max(1) as f64,
        1e6 * enrich_broker_cpu / stats.records_in.max(1) as f64,
        1e6 * eos_broker_cpu / eos_stats.records_in.max(1) as f64
    );
    let busiest: Vec<String> = enrich_threads
        .iter()
        .take(6)
        .map(|(name, s)| format!("{name} {:.1} us", 1e6 * s / stats.records_in.max(1) as f64))
        .collect();
    println!("| the enricher phase's CPU time per raw record by thread name, busiest first | {} |", busiest.join(", "));
    println!("| enricher / ceiling | {:.0}% (target >= 50%) |", 100.0 * enrich_rate / ceiling_rate);
    println!("| enricher exactly_once / ceiling | {:.0}% |", 100.0 * eos_rate / ceiling_rate);
    println!("| enricher / pass-through | {:.0}% |", 100.0 * enrich_rate / through_rate);
    if latencies.is_empty() {
        println!("| latency | not measured: no enriched record of the feed was matched to its raw record |");
    } else {
        println!(
            "| latency, raw record handed to the producer -> its enriched record read back, {} of {} records fed at {live_rate}/s ({fed_heartbeats} heartbeats, which have none) | p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms |",
            latencies.len(),
            feed.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1]
        );
    }
    cancel.cancel();
}
