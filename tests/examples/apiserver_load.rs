//! The producer process against a real kube-apiserver under load: where field exporters fail.
//!
//! OpenTelemetry's k8s_events receiver grew to about 1.7 GB at 100 events/s, and to 1-3 GB on
//! an unpaged initial LIST; kubernetes-event-exporter ran out of memory at about 5 events/s.
//! This benchmark runs kev's producer (the release binary, as a process of its own) against
//! kube-apiserver v1.35.8 and etcd (`kev_tests::kubeapi`) and an Apache Kafka broker, in one run:
//!
//! 1. `KEV_BENCH_STORED` (default 50,000) events written before the producer starts, so that its
//!    start is a paged LIST of all of them;
//! 2. a generator writing `KEV_BENCH_RATE` (default 100) events/s for `KEV_BENCH_SECONDS`
//!    (default 600) while the producer watches: new events and count bumps of earlier ones,
//!    from the real dumps; it stops by itself.
//!
//! It prints, per phase, the producer's CPU time per event and rate, its peak RSS (VmHWM), the
//! events published against those written (every version, by uid and resourceVersion), and in
//! phase 2 the watch lag: from the apiserver's answer to a write to the record being readable in
//! the raw topic, p50 / p99 / max. Targets: peak RSS under 64 MiB, every event published, lag
//! p99 under 1 s.
//!
//! cargo build --release -p kev-producer && cargo run --release -p kev-tests --example apiserver_load

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kev_producer::run;
use kev_schemas::RawKind;
use kev_tests::bench::{env_or, peak_rss_bytes, percentile, process_cpu_seconds};
use kev_tests::broker::{free_port, Broker};
use kev_tests::kubeapi::{EventWriter, KubeApi, KubeOptions, KUBE_VERSION};
use kev_tests::{data, expect, procs};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// (uid, resourceVersion) of a version.
type Key = (String, String);

/// When each version became readable in the raw topic, from a reader of its own.
fn read_raw(cfg: &kev_producer::ProducerConfig, seen: Arc<Mutex<HashMap<Key, Instant>>>, stop: CancellationToken) {
    let codec = run::codec(cfg).unwrap();
    let consumer: StreamConsumer = cfg
        .kafka
        .client_config(&[
            ("group.id", "bench-apiserver-reader"),
            ("fetch.wait.max.ms", "10"),
            ("auto.offset.reset", "earliest"),
        ])
        .create()
        .unwrap();
    consumer.subscribe(&[&cfg.topic.name]).unwrap();
    tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                m = consumer.recv() => m,
                _ = stop.cancelled() => return,
            };
            let Ok(m) = m else { continue };
            let at = Instant::now();
            let Some(payload) = m.payload() else { continue };
            if let Ok(r) = codec.decode_raw(payload).await {
                if r.kind == RawKind::Event {
                    if let Some(e) = r.event {
                        seen.lock().unwrap().entry((e.uid, e.resource_version)).or_insert(at);
                    }
                }
            }
        }
    });
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    kev_tests::bench::logs_to_stderr();
    let stored: usize = env_or("KEV_BENCH_STORED", 50_000);
    let rate: f64 = env_or("KEV_BENCH_RATE", 100.0);
    let seconds: u64 = env_or("KEV_BENCH_SECONDS", 600);
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let api = KubeApi::start(tmp.path(), KubeOptions::default());
    let stop = CancellationToken::new();
    let registry = expect::registry(&stop).await;
    let mut cfg = expect::config(&broker, &registry, "load");
    cfg.topic.partitions = 3;
    println!(
        "kube-apiserver {KUBE_VERSION}, Apache Kafka {}; {stored} stored events, then {rate}/s for {seconds} s",
        kev_tests::broker::KAFKA_VERSION
    );

    // The real dumps' core/v1 events, renamed so that each copy is new.
    let sources: Vec<Value> = data::all_objects().into_iter().filter(|o| o.get("involvedObject").is_some()).collect();
    let copy = |i: usize| {
        let mut e = sources[i % sources.len()].clone();
        let name = format!("{}.{i:x}", e["metadata"]["name"].as_str().unwrap_or("event"));
        e["metadata"]["name"] = Value::String(name);
        e
    };

    // Phase 1: events stored before the producer starts, written by 8 writers at once.
    let started = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|k| {
            let batch: Vec<Value> = (0..stored).filter(|i| i % 8 == k).map(copy).collect();
            let client = api.admin();
            tokio::spawn(async move {
                let mut w = EventWriter::without_read_back(client);
                for e in &batch {
                    w.create_core(e).await;
                }
                w.written
            })
        })
        .collect();
    let mut written: Vec<(String, String, Instant)> = Vec::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    println!("phase 1: {} events stored in {:.0} s", written.len(), started.elapsed().as_secs_f64());

    let seen: Arc<Mutex<HashMap<Key, Instant>>> = Arc::default();
    read_raw(&cfg, seen.clone(), stop.clone());
    let http = free_port();
    let kubeconfig = api.kubeconfig(None);
    let mut producer = procs::command("kev-producer")
        .arg("watch")
        .env("KUBECONFIG", &kubeconfig)
        .env("KEV_KAFKA__BOOTSTRAP_SERVERS", &cfg.kafka.bootstrap_servers)
        .env("KEV_REGISTRY__URL", &cfg.registry.url)
        .env("KEV_CLUSTER_ID", &cfg.cluster_id)
        .env("KEV_HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = producer.id();
    let stat = format!("/proc/{pid}/stat");
    let phase1 = Instant::now();
    let all_seen = |keys: &[(String, String, Instant)]| {
        let s = seen.lock().unwrap();
        keys.iter().filter(|(u, r, _)| s.contains_key(&(u.clone(), r.clone()))).count()
    };
    while all_seen(&written) < written.len() {
        assert!(
            phase1.elapsed() < Duration::from_secs(900),
            "phase 1: only {} of {} published",
            all_seen(&written),
            written.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (t1, cpu1, rss1) = (phase1.elapsed().as_secs_f64(), process_cpu_seconds(&stat), peak_rss_bytes(pid));
    println!(
        "phase 1 (paged initial LIST of {} events): {:.1} s, {:.0} events/s, {:.1} us CPU per event, peak RSS {:.1} MiB",
        written.len(),
        t1,
        written.len() as f64 / t1,
        cpu1 * 1e6 / written.len() as f64,
        mib(rss1)
    );

    // Phase 2: a steady rate of new events and repeats, for `seconds`.
    let mut w = EventWriter::without_read_back(api.admin());
    let phase2 = Instant::now();
    let (cpu_before, mut next) = (process_cpu_seconds(&stat), Instant::now());
    let mut i = stored;
    let mut recent: Vec<(String, String)> = Vec::new();
    while phase2.elapsed() < Duration::from_secs(seconds) {
        next += Duration::from_secs_f64(1.0 / rate);
        if i % 4 == 3 && !recent.is_empty() {
            let (ns, name) = recent[i % recent.len()].clone();
            w.bump_core(&ns, &name, &chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).await;
        } else if let Some(created) = w.create_core(&copy(i)).await {
            recent.push(created);
            if recent.len() > 1000 {
                recent.remove(0);
            }
        }
        i += 1;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    let phase2_written = w.written.clone();
    let wrote_for = phase2.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    while all_seen(&phase2_written) < phase2_written.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu2 = process_cpu_seconds(&stat) - cpu_before;
    let rss2 = peak_rss_bytes(pid);
    let published = all_seen(&phase2_written);
    let mut lags: Vec<f64> = {
        let s = seen.lock().unwrap();
        phase2_written
            .iter()
            .filter_map(|(u, r, at)| {
                s.get(&(u.clone(), r.clone())).map(|seen| seen.saturating_duration_since(*at).as_secs_f64())
            })
            .collect()
    };
    lags.sort_by(f64::total_cmp);
    let _ = producer.kill();
    let _ = producer.wait();
    stop.cancel();
    println!(
        "phase 2 ({:.0} events/s written for {:.0} s): {} of {} versions published; {:.1} us CPU per event; \
         watch lag p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; peak RSS {:.1} MiB",
        phase2_written.len() as f64 / wrote_for,
        wrote_for,
        published,
        phase2_written.len(),
        cpu2 * 1e6 / phase2_written.len().max(1) as f64,
        percentile(&lags, 0.5) * 1e3,
        percentile(&lags, 0.99) * 1e3,
        lags.last().copied().unwrap_or(0.0) * 1e3,
        mib(rss2)
    );
    println!(
        "targets: peak RSS {:.1} MiB of 64 ({}), every event published ({}), lag p99 {:.0} ms of 1000 ({})",
        mib(rss2),
        if rss2 < 64 << 20 { "met" } else { "missed" },
        if published == phase2_written.len() && all_seen(&written) == written.len() { "met" } else { "missed" },
        percentile(&lags, 0.99) * 1e3,
        if percentile(&lags, 0.99) < 1.0 { "met" } else { "missed" }
    );
}
