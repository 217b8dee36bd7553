//! The producer watching a fake API server (the real list/watch protocol, fed with the real
//! events) into an Apache Kafka broker process: every (uid, resourceVersion) the server produced lands in
//! the raw topic exactly once and equals what the server sent, through drops, 410 Gone, the
//! 200-then-close of kubernetes#104171, malformed input, the core/v1 fallback and a leader
//! handover.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kev_common::telemetry::Health;
use kev_producer::readback::{self, Published};
use kev_producer::session::SessionStats;
use kev_producer::{run, ProducerConfig};
use kev_schemas::{RawKind, WatchVerb};
use kev_tests::broker::Broker;
use kev_tests::expect::{assert_exactly_once, config, registry};
use kev_tests::fakeapi::FakeApi;
use kev_tests::{data, init_logs, procs};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Harness {
    _tmp: tempfile::TempDir,
    _broker: Broker,
    api: FakeApi,
    cfg: ProducerConfig,
    /// Stops the producer.
    cancel: CancellationToken,
    /// Stops the registry when the harness goes away (it outlives the producer: the test reads
    /// the topic back after stopping the producer).
    _registry: tokio_util::sync::DropGuard,
}

impl Harness {
    async fn start(events_v1: bool, cluster: &str) -> Harness {
        init_logs();
        kev_common::telemetry::metrics_handle();
        let tmp = tempfile::tempdir().unwrap();
        let broker = Broker::start(tmp.path());
        let cancel = CancellationToken::new();
        let registry_cancel = CancellationToken::new();
        let registry = registry(&registry_cancel).await;
        let mut cfg = config(&broker, &registry, cluster);
        cfg.source.page_size = 100;
        cfg.heartbeat_interval_ms = 500;
        let api = FakeApi::start(events_v1).await;
        Harness { _tmp: tmp, _broker: broker, api, cfg, cancel, _registry: registry_cancel.drop_guard() }
    }

    fn client(&self) -> kube::Client {
        kube::Client::try_from(kube::Config::new(self.api.url.parse().unwrap())).unwrap()
    }

    /// Runs the producer in this process until the test cancels it.
    fn producer(&self) -> JoinHandle<SessionStats> {
        let (cfg, client, cancel) = (self.cfg.clone(), self.client(), self.cancel.clone());
        tokio::spawn(async move { run::watch(&cfg, client, Health::new(), cancel).await.unwrap() })
    }

    async fn records(&self) -> Vec<Published> {
        let codec = run::codec(&self.cfg).unwrap();
        readback::read_all(&self.cfg.kafka, &self.cfg.topic.name, &codec).await.unwrap()
    }

    /// Every version the server sent to a client, as it served them in `api_path`'s API.
    fn expected(&self, api_path: &str) -> Vec<Value> {
        self.api.served_history().into_iter().map(|v| self.api.serve_as(&v.object, api_path)).collect()
    }

    /// Waits until the producer has seen the newest version of every object and the topic holds
    /// as many event records as the server sent versions.
    async fn wait_published(&self) -> Vec<Published> {
        let deadline = Instant::now() + Duration::from_secs(180);
        while self.api.served_history().last().map(|v| v.rv) != self.api.history().last().map(|v| v.rv) {
            assert!(Instant::now() < deadline, "the producer never read the newest version");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let want = self.api.served_history().len();
        let codec = run::codec(&self.cfg).unwrap();
        loop {
            // The topic does not exist until the producer has started.
            let records = readback::read_all(&self.cfg.kafka, &self.cfg.topic.name, &codec).await.unwrap_or_default();
            let events = records.iter().filter(|p| p.record.kind == RawKind::Event).count();
            if events >= want {
                return records;
            }
            assert!(Instant::now() < deadline, "only {events} of {want} versions published after 180s");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn finish(self, producer: JoinHandle<SessionStats>, api_path: &str) -> (Vec<Published>, SessionStats, usize) {
        let records = self.wait_published().await;
        // Give a duplicate, if the producer were to make one, time to land before checking.
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.cancel.cancel();
        let stats = producer.await.unwrap();
        let records = if records.len() == self.records().await.len() { records } else { self.records().await };
        let expected = self.expected(api_path);
        let n = assert_exactly_once(&records, &expected, &self.cfg.cluster_id, self.cfg.topic.partitions);
        self.api.stop();
        (records, stats, n)
    }
}

fn count(requests: &[String], needle: &str) -> usize {
    requests.iter().filter(|r| r.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_publishes_every_version_once_with_count_deltas() {
    let h = Harness::start(true, "watched").await;
    let objects = data::all_objects();
    let (initial, live) = objects.split_at(objects.len() / 2);
    for o in initial {
        h.api.apply(o.clone());
    }
    let producer = h.producer();
    for chunk in live.chunks(500) {
        for o in chunk {
            h.api.apply(o.clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Repeats and deletions, as a live cluster makes them.
    let history = h.api.history();
    let uids: Vec<String> = history.iter().map(|v| v.object["metadata"]["uid"].as_str().unwrap().to_string()).collect();
    let mut bumped = Vec::new();
    for uid in uids.iter().step_by(50).take(200) {
        h.api.bump(uid, 3);
        bumped.push(uid.clone());
    }
    for uid in uids.iter().skip(25).step_by(50).take(100) {
        h.api.delete(uid);
    }
    let total_versions = h.api.history().len();
    let api = h.api.clone();
    let (records, stats, n) = h.finish(producer, "/apis/events.k8s.io/v1").await;
    let requests_before_finish = api.requests();

    // A version replaced before any LIST or WATCH showed it is invisible to every client; the
    // data set has 12 uids with two versions, so at most 12 can be.
    assert!(total_versions - n <= 12, "{n} of {total_versions} versions were served");
    let events: Vec<_> = records.iter().filter_map(|p| p.record.event.as_ref()).collect();
    assert!(events.iter().all(|e| e.api_version == "events.k8s.io/v1"), "served as events.k8s.io/v1");
    let modified_bumps = events.iter().filter(|e| e.verb == WatchVerb::Modified && e.new_occurrences == 3).count();
    assert!(modified_bumps >= bumped.len(), "every +3 bump carries new_occurrences 3 ({modified_bumps})");
    let deleted = events.iter().filter(|e| e.verb == WatchVerb::Deleted).count();
    assert_eq!(deleted, 100);
    assert!(events.iter().filter(|e| e.verb == WatchVerb::Deleted).all(|e| e.new_occurrences == 0));
    assert!(count(&requests_before_finish, "limit=100") >= 2, "the initial LIST was paged");
    assert!(count(&requests_before_finish, "watch=true") >= 1);
    let heartbeats = records.iter().filter(|p| p.record.kind == RawKind::Heartbeat).count();
    assert!(heartbeats > 0);
    println!(
        "watch: {n} versions of {} real events (+200 count bumps, 100 deletions) published exactly once; \
         {} duplicates suppressed; {heartbeats} heartbeats",
        objects.len(),
        stats.duplicates
    );
}

/// Feeds `objects` while the producer runs, in small batches.
async fn feed(api: &FakeApi, objects: &[Value]) {
    for chunk in objects.chunks(100) {
        for o in chunk {
            api.apply(o.clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_connection_dropped_mid_stream() {
    let h = Harness::start(true, "dropped").await;
    let objects = data::objects("troubleshoot.jsonl.gz");
    h.api.set_drop_watch_after(Some(150));
    let producer = h.producer();
    feed(&h.api, &objects).await;
    let api = h.api.clone();
    let (_, _, n) = h.finish(producer, "/apis/events.k8s.io/v1").await;
    let watches = api.watches_served();
    assert!(watches >= 10, "the stream was cut again and again ({watches} watches)");
    println!("watch dropped every 150 events ({watches} watches): {n} versions exactly once");
}

/// Publishes 1,000 events, then makes the producer's resourceVersion too old: its watch drops,
/// events keep coming and the server compacts its history. `close_empty` watches from the stale
/// version are answered with 200 and an immediate close (kubernetes#104171) instead of 410.
/// Returns what `Harness::finish` returns, and the server's 410 count and LIST requests.
async fn stale_resource_version(cluster: &str, close_empty: u32) -> (SessionStats, usize, usize, usize) {
    let h = Harness::start(true, cluster).await;
    let objects = data::objects("troubleshoot.jsonl.gz");
    let (before, after) = objects.split_at(1_000);
    let producer = h.producer();
    feed(&h.api, before).await;
    h.wait_published().await;
    h.api.set_close_empty(close_empty);
    h.api.compact();
    h.api.drop_watches();
    for o in &after[..500] {
        h.api.apply(o.clone());
    }
    feed(&h.api, &after[500..]).await;
    let api = h.api.clone();
    let (_, stats, n) = h.finish(producer, "/apis/events.k8s.io/v1").await;
    (stats, n, api.gone_sent(), count(&api.requests(), "limit=100"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_410_gone_relists_without_loss_or_duplicates() {
    let (stats, n, gone, lists) = stale_resource_version("gone", 0).await;
    assert!(gone >= 1, "the server answered 410");
    assert!(lists >= 2, "the producer listed again after 410");
    assert!(stats.duplicates >= 990, "the relist re-read what was published and suppressed it ({})", stats.duplicates);
    println!(
        "410 Gone after compaction: relisted, {} duplicates suppressed, {n} versions exactly once",
        stats.duplicates
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_200_then_close_for_a_stale_version_relists() {
    let (stats, n, gone, lists) = stale_resource_version("stale-rv", 10).await;
    assert_eq!(gone, 0, "the server never said 410");
    assert!(lists >= 2, "the producer listed again after empty watches");
    assert!(stats.duplicates >= 990, "a relist happened ({} duplicates suppressed)", stats.duplicates);
    println!("200-then-close on a stale resourceVersion: relisted, {n} versions exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_and_objects_are_counted_and_skipped() {
    let h = Harness::start(true, "malformed").await;
    let objects = data::objects("sbctl.jsonl.gz");
    let producer = h.producer();
    h.wait_published().await;
    h.api.set_malformed_next_watch();
    h.api.drop_watches();
    feed(&h.api, &objects).await;
    let (_, stats, n) = h.finish(producer, "/apis/events.k8s.io/v1").await;
    assert_eq!(n, objects.len());
    assert!(stats.invalid >= 1, "the object without a uid was counted ({})", stats.invalid);
    let metrics = kev_common::telemetry::metrics_handle().render();
    assert!(metrics.contains("kev_producer_events_invalid_total{reason=\"malformed_watch_line\"}"), "{metrics}");
    assert!(metrics.contains("kev_producer_events_invalid_total{reason=\"missing_field\"}"), "{metrics}");
    println!("a line that is not JSON and an Event without a uid were counted and skipped; {n} versions exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_cluster_without_events_v1_falls_back_to_core_v1() {
    let h = Harness::start(false, "old-cluster").await;
    let objects = data::objects("support-bundle-kit.jsonl.gz");
    let more = data::objects("sbctl.jsonl.gz");
    for o in &objects {
        h.api.apply(o.clone());
    }
    let producer = h.producer();
    feed(&h.api, &more).await;
    let api = h.api.clone();
    let (records, _, n) = h.finish(producer, "/api/v1").await;
    let requests = api.requests();
    assert_eq!(n, objects.len() + more.len());
    assert!(records.iter().filter_map(|p| p.record.event.as_ref()).all(|e| e.api_version == "v1"));
    assert!(count(&requests, "GET /apis/events.k8s.io/v1") >= 1, "discovery was asked: {requests:?}");
    assert!(count(&requests, "/api/v1/events") >= 2, "list and watch went to core/v1");
    assert_eq!(count(&requests, "/apis/events.k8s.io/v1/events"), 0);
    println!("no events.k8s.io on the server: fell back to core/v1, {n} versions exactly once (the 9 events.k8s.io/v1 objects of support-bundle-kit served as core/v1)");
}

/// A producer process, SIGKILLed when dropped so that a failing test leaves nothing behind.
struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A kubeconfig that points at the fake API server.
fn kubeconfig(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: kev\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_only_the_leader_publishes_and_a_kill_hands_over() {
    let h = Harness::start(true, "ha").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig(dir.path(), &h.api.url);
    let spawn = |id: &str| -> Replica {
        Replica(
            procs::command("kev-producer")
                .arg("watch")
                .env("KUBECONFIG", &kubeconfig)
                .env("KEV_KAFKA__BOOTSTRAP_SERVERS", &h.cfg.kafka.bootstrap_servers)
                .env("KEV_REGISTRY__URL", &h.cfg.registry.url)
                .env("KEV_CLUSTER_ID", &h.cfg.cluster_id)
                .env("KEV_PRODUCER_ID", id)
                .env("KEV_HEARTBEAT_INTERVAL_MS", "500")
                .env("KEV_HTTP__LISTEN", "127.0.0.1:0")
                .env("KEV_LEADER_ELECTION__ENABLED", "true")
                .env("KEV_LEADER_ELECTION__LEASE_DURATION_S", "4")
                .env("KEV_LEADER_ELECTION__RENEW_DEADLINE_S", "3")
                .env("KEV_LEADER_ELECTION__RETRY_PERIOD_S", "1")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        )
    };
    let lease = |api: &FakeApi| api.lease_holder("kev", "kev-producer-ha");
    let wait_for = |api: Arc<FakeApi>, want: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while lease(&api).as_deref() != Some(want) {
            assert!(Instant::now() < deadline, "{want} never became the leader (holder {:?})", lease(&api));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let api = Arc::new(h.api.clone());
    let objects = data::objects("troubleshoot.jsonl.gz");
    let (first, second) = objects.split_at(1_500);

    let a = spawn("replica-a");
    wait_for(api.clone(), "replica-a").await;
    let b = spawn("replica-b");
    feed(&h.api, first).await;
    h.wait_published().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lease(&h.api).as_deref(), Some("replica-a"), "the leader keeps its Lease");

    drop(a); // SIGKILL: no release, the Lease must expire
    let killed_at = Instant::now();
    feed(&h.api, second).await;
    wait_for(api.clone(), "replica-b").await;
    let handover = killed_at.elapsed();
    let records = h.wait_published().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(b);
    let records = if records.len() == h.records().await.len() { records } else { h.records().await };

    let n =
        assert_exactly_once(&records, &h.expected("/apis/events.k8s.io/v1"), &h.cfg.cluster_id, h.cfg.topic.partitions);
    assert!(objects.len() - n <= 12, "{n} of {} versions were served", objects.len());
    // Who wrote what: every heartbeat of replica-a comes before every heartbeat of replica-b,
    // so the two never published at the same time.
    let producers: Vec<&str> =
        records.iter().filter_map(|p| p.record.heartbeat.as_ref()).map(|hb| hb.producer_id.as_str()).collect();
    let first_b = producers.iter().position(|p| *p == "replica-b").expect("replica-b published after the handover");
    assert!(producers[..first_b].iter().all(|p| *p == "replica-a"));
    assert!(producers[first_b..].iter().all(|p| *p == "replica-b"), "replica-a published after the handover");
    assert!(producers[..first_b].len() > 2, "replica-a published while it led");
    println!(
        "two replicas: only the leader published; SIGKILL of the leader handed over in {handover:?}; \
         {n} versions exactly once across the handover"
    );
    h.cancel.cancel();
}
