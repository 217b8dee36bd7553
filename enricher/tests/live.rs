//! The live enricher on librdkafka's in-process mock cluster (fast; the end-to-end tests on a
//! real broker process are in `tests/tests/enricher_*.rs`): what it emits equals the engine run
//! over the raw log, and a clean stop and restart mid-stream neither loses nor repeats a record;
//! routes carry exactly their slice, and incidents fire and resolve in a real Alertmanager.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use kev_common::devregistry::DevRegistry;
use kev_common::kafka::KafkaSettings;
use kev_common::telemetry::Health;
use kev_enricher::partition::EngineSpec;
use kev_enricher::records::Stream;
use kev_enricher::{live, EnricherConfig};
use kev_producer::{run as producer, ProducerConfig};
use kev_schemas::schema::{ENRICHED_EVENT_SCHEMA, INCIDENT_SCHEMA};
use kev_schemas::{EnrichedEvent, Incident, IncidentStatus, Severity};
use kev_tests::outputs::{self, assert_matches, counts, enricher_config, read_outputs, wait_caught_up};
use kev_tests::{data, init_logs};
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

struct Setup {
    _mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    registry: DevRegistry,
    cfg: EnricherConfig,
    cancel: CancellationToken,
}

async fn setup() -> Setup {
    init_logs();
    let cancel = CancellationToken::new();
    let mock = MockCluster::new(1).unwrap();
    let registry = DevRegistry::start(SocketAddr::from(([127, 0, 0, 1], 0)), cancel.clone()).await.unwrap();
    let mut kafka = KafkaSettings { bootstrap_servers: mock.bootstrap_servers(), ..Default::default() };
    // The mock cluster does not end a member's session when it leaves: a restarted member
    // would wait out the previous one's session (45 s by default).
    kafka.properties.insert("session.timeout.ms".into(), "6000".into());
    let mut cfg = enricher_config(kafka, &registry.url);
    // The mock cluster has no CreateTopics.
    cfg.topics.create = false;
    let t = &cfg.topics;
    for topic in std::iter::once(t.raw.as_str()).chain(t.written()) {
        mock.create_topic(topic, 3, 1).unwrap();
    }
    Setup { _mock: mock, registry, cfg, cancel }
}

/// Publishes `files` under `cluster` with the producer, as in production.
async fn publish(s: &Setup, cluster: &str, files: &[&str]) {
    let mut p = ProducerConfig { kafka: s.cfg.kafka.clone(), cluster_id: cluster.into(), ..Default::default() };
    p.registry.url = s.registry.url.clone();
    p.topic.create = false;
    p.topic.name = s.cfg.topics.raw.clone();
    let files = files.iter().map(|f| data::dir().join(f)).collect();
    producer::replay(&p, files, Health::new(), s.cancel.clone()).await.unwrap();
}

fn start(s: &Setup) -> (CancellationToken, tokio::task::JoinHandle<live::RunStats>) {
    let stop = s.cancel.child_token();
    let cfg = s.cfg.clone();
    let spec = EngineSpec::load(&cfg).unwrap();
    let codec = std::sync::Arc::new(cfg.registry.codec().unwrap());
    let st = stop.clone();
    let h = tokio::spawn(async move { live::run(&cfg, &spec, codec, Health::new(), None, st).await.unwrap() });
    (stop, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_output_is_the_engine_over_the_raw_log() {
    let s = setup().await;
    publish(&s, "small", &["kspan.jsonl.gz", "sbctl.jsonl.gz", "support-bundle-kit.jsonl.gz"]).await;
    publish(&s, "troubleshoot", &["troubleshoot.jsonl.gz"]).await;
    let (stop, h) = start(&s);
    wait_caught_up(&s.cfg, Duration::from_secs(120)).await;
    stop.cancel();
    let stats = h.await.unwrap();
    let codec = s.cfg.registry.codec().unwrap();
    let reference = outputs::reference(&s.cfg, &codec).await;
    let live = read_outputs(&s.cfg);
    let cmp = assert_matches(&live, &reference, true);
    let c = counts(&live);
    assert!(c[&Stream::Enriched] > 3_000, "{c:?}");
    assert!(c[&Stream::Aggregates] > 500, "{c:?}");
    assert!(c[&Stream::Incidents] > 0, "{c:?}");
    assert_eq!(c.get(&Stream::DeadLetters).copied().unwrap_or(0), 0);
    assert_eq!(cmp.duplicates, 0);
    println!("{stats:?}; outputs {c:?}");
    s.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_mid_stream_and_a_restart_repeat_nothing() {
    let s = setup().await;
    let t0 = std::time::Instant::now();
    // Enough records that the first run cannot finish them between its first commit and the
    // stop (with 3,201 records it once did, after the enricher got faster).
    publish(&s, "troubleshoot", &["troubleshoot.jsonl.gz", "openshift-aws.jsonl.gz"]).await;
    let first_batch: i64 = outputs::progress(&s.cfg).1.iter().sum();
    eprintln!("published {first_batch} records in {:?}", t0.elapsed());
    // A slow first run, stopped part way.
    let mut slow = s.cfg.clone();
    slow.commit_interval_ms = 50;
    let (stop, h) = {
        let stop = s.cancel.child_token();
        let spec = EngineSpec::load(&slow).unwrap();
        let codec = std::sync::Arc::new(slow.registry.codec().unwrap());
        let st = stop.clone();
        (stop, tokio::spawn(async move { live::run(&slow, &spec, codec, Health::new(), None, st).await.unwrap() }))
    };
    outputs::wait_started(&s.cfg, Duration::from_secs(60)).await;
    stop.cancel();
    let first = h.await.unwrap();
    assert!(first.records_in > 0 && (first.records_in as i64) < first_batch, "stopped mid-stream: {first:?}");
    // More raw records arrive while it is down; then it restarts and catches up.
    publish(&s, "small", &["kspan.jsonl.gz", "sbctl.jsonl.gz"]).await;
    eprintln!("second publish at {:?}", t0.elapsed());
    let (stop, h) = start(&s);
    wait_caught_up(&s.cfg, Duration::from_secs(120)).await;
    eprintln!("caught up at {:?}", t0.elapsed());
    stop.cancel();
    let second = h.await.unwrap();
    let codec = s.cfg.registry.codec().unwrap();
    let reference = outputs::reference(&s.cfg, &codec).await;
    let cmp = assert_matches(&read_outputs(&s.cfg), &reference, true);
    assert_eq!(cmp.duplicates, 0);
    // The clean stop checkpointed at its last commit: nothing to re-read.
    assert_eq!(second.recovered_records, 0, "{second:?}");
    println!("first run {first:?}; second run {second:?}; {cmp:?}");
    s.cancel.cancel();
}

/// The newest record of each incident in the incidents topic, decoded.
async fn latest_incidents(s: &Setup, topic: &str) -> BTreeMap<String, Incident> {
    let codec = s.cfg.registry.codec().unwrap();
    let mut latest = BTreeMap::new();
    for (_, _, rec) in outputs::read_topic(&s.cfg.kafka, topic) {
        let i: Incident = codec.decode(&rec.value, &INCIDENT_SCHEMA).await.unwrap();
        latest.insert(i.incident_id.clone(), i);
    }
    latest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_carry_exactly_the_matching_records() {
    let mut s = setup().await;
    s.cfg.topics.routes = serde_norway::from_str(
        "[{name: volume-incidents, topic: kev.incidents.volume, stream: incidents, min_severity: error, category: 'volume-failure-restarts'},
          {name: openshift-apiserver, topic: kev.events.apiserver, stream: enriched, namespace: 'openshift-apiserver.*'}]",
    )
    .unwrap();
    for topic in ["kev.incidents.volume", "kev.events.apiserver"] {
        s._mock.create_topic(topic, 3, 1).unwrap();
    }
    publish(&s, "aws", &["openshift-aws.jsonl.gz"]).await;
    let (stop, h) = start(&s);
    wait_caught_up(&s.cfg, Duration::from_secs(120)).await;
    stop.cancel();
    h.await.unwrap();

    let all = read_outputs(&s.cfg);
    // Volume failures that led to restarts, graded error or worse (the dump has warnings of that
    // rule too): every record of the main topic of that rule and grade, same key and value.
    let codec = s.cfg.registry.codec().unwrap();
    let mut severe = Vec::new();
    for recs in all[&Stream::Incidents].values() {
        for r in recs {
            let i: Incident = codec.decode(&r.value, &INCIDENT_SCHEMA).await.unwrap();
            if i.severity >= Severity::Error && i.rule == "volume-failure-restarts" {
                severe.push((r.key.clone(), i));
            }
        }
    }
    let mut routed = Vec::new();
    for (_, _, r) in outputs::read_topic(&s.cfg.kafka, "kev.incidents.volume") {
        routed.push((r.key.clone(), codec.decode::<Incident>(&r.value, &INCIDENT_SCHEMA).await.unwrap()));
    }
    severe.sort_by(|a, b| (&a.0, a.1.updated_at, a.1.status as u8).cmp(&(&b.0, b.1.updated_at, b.1.status as u8)));
    routed.sort_by(|a, b| (&a.0, a.1.updated_at, a.1.status as u8).cmp(&(&b.0, b.1.updated_at, b.1.status as u8)));
    assert!(!severe.is_empty());
    assert_eq!(routed, severe);
    assert!(severe.len() < counts(&all)[&Stream::Incidents], "the route is a slice, not a copy of all");

    // Enriched events of the apiserver namespaces: the same records, in the same order per key.
    let mut expected = 0;
    let mut routed_events: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for (_, _, r) in outputs::read_topic(&s.cfg.kafka, "kev.events.apiserver") {
        routed_events.entry(r.key).or_default().push(r.value);
    }
    for (key, recs) in &all[&Stream::Enriched] {
        let mut matching = Vec::new();
        for r in recs {
            let e: EnrichedEvent = codec.decode(&r.value, &ENRICHED_EVENT_SCHEMA).await.unwrap();
            if e.namespace.as_deref().is_some_and(|n| n.starts_with("openshift-apiserver")) {
                matching.push(r.value.clone());
            }
        }
        expected += matching.len();
        if !matching.is_empty() {
            assert_eq!(routed_events.get(key), Some(&matching));
        }
    }
    assert!(expected > 50, "{expected}");
    assert_eq!(routed_events.values().map(Vec::len).sum::<usize>(), expected);
    println!(
        "routes: {} of {} incident records, {expected} of {} enriched events",
        severe.len(),
        counts(&all)[&Stream::Incidents],
        counts(&all)[&Stream::Enriched]
    );
    s.cancel.cancel();
}

/// A real Alertmanager (Debian's `prometheus-alertmanager`) on 127.0.0.1, killed on drop.
struct Alertmanager {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    async fn start() -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        // A short resolve_timeout: an alert not re-sent within 5 s ends, so the test sees
        // whether kev keeps its open incidents' alerts alive.
        std::fs::write(
            &config,
            "global:\n  resolve_timeout: 5s\nroute:\n  receiver: none\n  group_wait: 1s\n  group_interval: 1s\n\
             receivers:\n  - name: none\n",
        )
        .unwrap();
        let port = kev_tests::broker::free_port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = std::process::Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No gossip with peers: a single test instance.
            .arg("--cluster.listen-address=")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus-alertmanager must be installed (scripts/prerequisites.sh --for-tests)");
        let url = format!("http://127.0.0.1:{port}");
        let started = std::time::Instant::now();
        while !reqwest::get(format!("{url}/-/ready")).await.is_ok_and(|r| r.status().is_success()) {
            assert!(started.elapsed() < Duration::from_secs(30), "Alertmanager not ready after 30s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Alertmanager { child, url, _dir: dir }
    }

    /// The alerts Alertmanager holds as active (not resolved), by incident id.
    async fn active(&self) -> BTreeMap<String, serde_json::Value> {
        let alerts: Vec<serde_json::Value> =
            reqwest::get(format!("{}/api/v2/alerts", self.url)).await.unwrap().json().await.unwrap();
        let now = chrono::Utc::now();
        alerts
            .into_iter()
            .filter(|a| {
                let ends = chrono::DateTime::parse_from_rfc3339(a["endsAt"].as_str().unwrap()).unwrap();
                a["status"]["state"] == "active" && ends > now
            })
            .map(|a| (a["labels"]["incident_id"].as_str().unwrap().to_string(), a))
            .collect()
    }

    /// Waits until the active alerts are exactly `expected`'s ids.
    async fn wait_for(&self, expected: &BTreeSet<String>) -> BTreeMap<String, serde_json::Value> {
        let started = std::time::Instant::now();
        loop {
            let active = self.active().await;
            if active.keys().cloned().collect::<BTreeSet<_>>() == *expected {
                return active;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Alertmanager holds {:?}, expected {expected:?}",
                active.keys().collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_alerting(s: &Setup) -> (CancellationToken, tokio::task::JoinHandle<live::RunStats>) {
    let stop = s.cancel.child_token();
    let cfg = s.cfg.clone();
    let spec = EngineSpec::load(&cfg).unwrap();
    let codec = std::sync::Arc::new(cfg.registry.codec().unwrap());
    let st = stop.clone();
    (
        stop,
        tokio::spawn(async move {
            live::run_until_stopped(&cfg, &spec, codec, Health::new(), st)
                .await
                .expect("the mock cluster refuses nothing")
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_incidents_fire_in_alertmanager_and_resolved_ones_stop() {
    let am = Alertmanager::start().await;
    let mut s = setup().await;
    s.cfg.alerting.alertmanager_url = Some(am.url.clone());
    s.cfg.alerting.labels = BTreeMap::from([("team".to_string(), "platform".to_string())]);
    s.cfg.alerting.resend_interval_ms = 1_000;
    let wanted = |i: &Incident| i.severity >= Severity::Warning && i.status != IncidentStatus::Resolved;

    // The first 60% (in event time) of a must-gather of 2021-08-03: it ends in the middle of
    // incidents, which are still open.
    let mut objects = data::objects("openshift-aws.jsonl.gz");
    kev_producer::dump::sort_by_event_time(&mut objects);
    objects.truncate(objects.len() * 6 / 10);
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("openshift-aws-part.jsonl");
    std::fs::write(&part, objects.iter().map(|o| o.to_string() + "\n").collect::<String>()).unwrap();
    publish(&s, "ocp", &[part.to_str().unwrap()]).await;
    let (stop, h) = start_alerting(&s);
    wait_caught_up(&s.cfg, Duration::from_secs(120)).await;
    let first = latest_incidents(&s, &s.cfg.topics.incidents).await;
    let open: BTreeSet<String> = first.values().filter(|i| wanted(i)).map(|i| i.incident_id.clone()).collect();
    // None has resolved yet: the whole dump spans 12.5 minutes of event time, and an incident
    // resolves after 10 quiet minutes. Part two below resolves them.
    assert!(!open.is_empty(), "some incidents are still open at the end of the dump");
    let active = am.wait_for(&open).await;
    println!("after part one: {} incidents, {} open with an active alert", first.len(), active.len());
    for (id, alert) in &active {
        let i = &first[id];
        let labels = &alert["labels"];
        assert_eq!(labels["alertname"], "KevIncident");
        assert_eq!(labels["cluster"], "ocp");
        assert_eq!(labels["rule"], i.rule.as_str());
        assert_eq!(labels["severity"], kev_enricher::report::severity_name(i.severity));
        assert_eq!(labels["team"], "platform");
        assert!(labels.get("scope").is_some() && labels.get("namespace").is_some(), "{labels}");
        assert_eq!(alert["annotations"]["summary"], i.summary.as_str());
    }

    // The enricher restarts: the new process knows the open incidents only from the state it
    // rebuilds when it takes the partition over (on the next raw record: here the producer's
    // heartbeat, as every few seconds in production), and keeps their alerts firing past
    // Alertmanager's resolve_timeout.
    stop.cancel();
    h.await.unwrap();
    let (stop, h) = start_alerting(&s);
    publish(&s, "ocp", &[part.to_str().unwrap()]).await;
    wait_caught_up(&s.cfg, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after_restart: BTreeSet<String> = am.active().await.into_keys().collect();
    assert_eq!(after_restart, open, "the open incidents' alerts outlive a restart");

    // A month later on the same cluster: event time moves past every quiet period, so the
    // incidents of August resolve, and their alerts stop firing.
    publish(&s, "ocp", &["openshift-azure.jsonl.gz"]).await;
    wait_caught_up(&s.cfg, Duration::from_secs(120)).await;
    let second = latest_incidents(&s, &s.cfg.topics.incidents).await;
    for id in &open {
        assert_eq!(second[id].status, IncidentStatus::Resolved, "{id} resolved by the later events");
    }
    let still_open: BTreeSet<String> = second.values().filter(|i| wanted(i)).map(|i| i.incident_id.clone()).collect();
    assert!(still_open.is_disjoint(&open));
    am.wait_for(&still_open).await;
    println!(
        "after part two: {} incidents, {} of part one resolved, {} open",
        second.len(),
        open.len(),
        still_open.len()
    );
    stop.cancel();
    h.await.unwrap();
    s.cancel.cancel();
}
