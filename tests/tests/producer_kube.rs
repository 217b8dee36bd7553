//! The producer against a real kube-apiserver (v1.35.8, built from the Go module proxy) and
//! etcd: events created the way components create them, through both APIs, from the real dumps;
//! every version lands in the raw topic exactly once and equals what the apiserver returns for
//! it. The fake API server (`producer_watch.rs`) stays for faults a real server will not make on
//! demand.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kev_common::telemetry::Health;
use kev_producer::readback::{self, Published};
use kev_producer::session::SessionStats;
use kev_producer::{run, ProducerConfig};
use kev_schemas::RawKind;
use kev_tests::broker::Broker;
use kev_tests::expect::{assert_exactly_once, config, registry, version_key};
use kev_tests::kubeapi::{EventWriter, KubeApi, KubeOptions};
use kev_tests::{data, init_logs};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Harness {
    _tmp: tempfile::TempDir,
    _broker: Broker,
    api: KubeApi,
    cfg: ProducerConfig,
    cancel: CancellationToken,
    _registry: tokio_util::sync::DropGuard,
}

impl Harness {
    async fn start(options: KubeOptions, cluster: &str) -> Harness {
        init_logs();
        kev_common::telemetry::metrics_handle();
        let tmp = tempfile::tempdir().unwrap();
        let broker = Broker::start(tmp.path());
        let api = KubeApi::start(tmp.path(), options);
        let registry_cancel = CancellationToken::new();
        let registry = registry(&registry_cancel).await;
        let mut cfg = config(&broker, &registry, cluster);
        cfg.source.page_size = 100;
        cfg.heartbeat_interval_ms = 500;
        Harness {
            _tmp: tmp,
            _broker: broker,
            api,
            cfg,
            cancel: CancellationToken::new(),
            _registry: registry_cancel.drop_guard(),
        }
    }

    fn producer(&self) -> JoinHandle<SessionStats> {
        let (cfg, client, cancel) = (self.cfg.clone(), self.api.admin(), self.cancel.clone());
        tokio::spawn(async move { run::watch(&cfg, client, Health::new(), cancel).await.unwrap() })
    }

    /// Waits until the topic holds `want` event records (or more), then a second for a
    /// duplicate to land if one were coming.
    async fn wait_published(&self, want: usize) -> Vec<Published> {
        let deadline = Instant::now() + Duration::from_secs(180);
        let codec = run::codec(&self.cfg).unwrap();
        loop {
            let records = readback::read_all(&self.cfg.kafka, &self.cfg.topic.name, &codec).await.unwrap_or_default();
            let events = records.iter().filter(|p| p.record.kind == RawKind::Event).count();
            if events >= want {
                tokio::time::sleep(Duration::from_secs(1)).await;
                return readback::read_all(&self.cfg.kafka, &self.cfg.topic.name, &codec).await.unwrap();
            }
            if Instant::now() > deadline {
                // The caller's exactly-once check names what is missing.
                eprintln!("only {events} of {want} versions published after 180 s");
                return records;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The real dumps' events written through core/v1 (with count bumps) and through
/// events.k8s.io/v1 (with series updates), half before the producer starts (its paged initial
/// LIST) and half while it watches: every version the apiserver returned lands exactly once,
/// equal to it, and the producer found events.k8s.io/v1 in the real discovery document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_written_through_either_api_is_published_once_as_the_apiserver_returns_it() {
    let h = Harness::start(KubeOptions::default(), "real-apiserver").await;
    let groups = h.api.admin().list_api_groups().await.unwrap();
    let events = groups.groups.iter().find(|g| g.name == "events.k8s.io").expect("events.k8s.io is served");
    assert!(events.versions.iter().any(|v| v.version == "v1"), "{:?}", events.versions);

    let mut w = EventWriter::new(h.api.admin());
    // Up to 250 core/v1 events of each dump, so that every dump's quirks meet the real validation.
    let sources: Vec<Value> = data::files()
        .iter()
        .flat_map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            data::objects(&name).into_iter().filter(|o| o.get("involvedObject").is_some()).take(250)
        })
        .collect();
    assert!(sources.len() >= 700, "{} events", sources.len());
    let (before, during) = (&sources[..300], &sources[300..600]);
    let mut core = Vec::new();
    for s in before {
        core.extend(w.create_core(s).await);
    }
    let written_before = w.versions.len();
    let producer = h.producer();
    for s in during {
        core.extend(w.create_core(s).await);
    }
    let at = "2026-12-04T10:00:00Z";
    for (ns, name) in core.iter().step_by(4).take(100) {
        w.bump_core(ns, name, at).await;
    }
    let mut v1 = Vec::new();
    for (i, s) in sources[600..700].iter().enumerate() {
        v1.push(w.create_v1(s, &format!("kev-v1-{i:03}")).await);
    }
    for (ns, name) in v1.iter().step_by(2) {
        w.bump_series(ns, name, 2, "2026-12-04T10:00:01.123456Z").await;
    }
    for (ns, name) in v1.iter().step_by(4) {
        w.bump_series(ns, name, 3, "2026-12-04T10:00:02.654321Z").await;
    }

    let others = w.adopt_others().await;
    let written = w.versions.len();
    let records = h.wait_published(written).await;
    h.cancel.cancel();
    let stats = producer.await.unwrap();
    let n = assert_exactly_once(&records, &w.versions, &h.cfg.cluster_id, h.cfg.topic.partitions);
    assert_eq!(n, written);
    let keys: BTreeSet<_> = w.versions.iter().map(version_key).collect();
    assert_eq!(keys.len(), written, "every write made a new resourceVersion");
    // The events.k8s.io/v1 shape, for events written through either API.
    let v1_shape = records.iter().filter_map(|p| p.record.event.as_ref()).filter(|e| e.events_v1.is_some()).count();
    assert_eq!(v1_shape, written, "the producer watched events.k8s.io/v1");
    println!(
        "real apiserver: {written} versions ({written_before} written before the producer started; {} core/v1 creates, 100 count bumps, {} events.k8s.io/v1 creates, {} series updates; the apiserver's own: {others:?}), {n} published exactly once; adapted: {:?}; {stats:?}",
        core.len(),
        v1.len(),
        v1.iter().step_by(2).count() + v1.iter().step_by(4).count(),
        w.adapted
    );
}

/// A producer process watching the real apiserver with `kubeconfig`; SIGKILLed when dropped.
struct Proc {
    child: std::process::Child,
    http: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(h: &Harness, kubeconfig: &std::path::Path, id: &str, env: &[(&str, &str)]) -> Proc {
        let http = kev_tests::broker::free_port();
        let mut c = kev_tests::procs::command("kev-producer");
        c.arg("watch")
            .env("KUBECONFIG", kubeconfig)
            .env("KEV_KAFKA__BOOTSTRAP_SERVERS", &h.cfg.kafka.bootstrap_servers)
            .env("KEV_REGISTRY__URL", &h.cfg.registry.url)
            .env("KEV_CLUSTER_ID", &h.cfg.cluster_id)
            .env("KEV_PRODUCER_ID", id)
            .env("KEV_HEARTBEAT_INTERVAL_MS", "500")
            .env("KEV_SOURCE__PAGE_SIZE", "100")
            .env("KEV_HTTP__LISTEN", format!("127.0.0.1:{http}"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        for (k, v) in env {
            c.env(k, v);
        }
        Proc { child: c.spawn().unwrap(), http }
    }

    /// The sum of a counter over its labels, from the process's /metrics (0 when absent).
    async fn metric(&self, name: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.http);
        let text = match reqwest::get(&url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => return 0.0,
        };
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGSTOP or SIGCONT.
    fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }
}

/// The sources of the writer tests: the core/v1 events of every dump, in order.
fn core_sources() -> Vec<Value> {
    data::files()
        .iter()
        .flat_map(|f| data::objects(&f.file_name().unwrap().to_string_lossy()))
        .filter(|o| o.get("involvedObject").is_some())
        .collect()
}

/// Writes `sources` through core/v1, a count bump after every third, `gap` apart, each write
/// and its read-back under `turn` so that the test can hold the writer between two writes.
fn write_in_background(
    client: kube::Client,
    sources: Vec<Value>,
    gap: Duration,
    turn: std::sync::Arc<tokio::sync::Mutex<()>>,
) -> JoinHandle<EventWriter> {
    tokio::spawn(async move {
        let mut w = EventWriter::new(client);
        for (i, s) in sources.iter().enumerate() {
            {
                let _held = turn.lock().await;
                if let Some((ns, name)) = w.create_core(s).await {
                    if i % 3 == 0 {
                        w.bump_core(&ns, &name, "2026-12-04T10:00:00Z").await;
                    }
                }
            }
            tokio::time::sleep(gap).await;
        }
        w
    })
}

/// Ten SIGKILLs of the producer process while events are being written, each restarted, and a
/// restart of the apiserver in the middle: every version exactly once, and the producer that
/// lived through the apiserver's restart counted its watch restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_and_an_apiserver_restart_mid_stream_lose_and_duplicate_nothing() {
    use rand::Rng;
    let mut h = Harness::start(KubeOptions::default(), "killed").await;
    let kubeconfig = h.api.kubeconfig(None);
    let turn = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let mut sources: Vec<Value> = core_sources().into_iter().take(1_000).collect();
    // The producer watches before the writing starts: what was created and changed again
    // before any producer listed exists for it only in its newest version.
    let mut producer = Proc::spawn(&h, &kubeconfig, "p", &[]);
    let mut first = EventWriter::new(h.api.admin());
    first.create_core(&sources.remove(0)).await;
    h.wait_published(1).await;
    let writer = write_in_background(h.api.admin(), sources, Duration::from_millis(30), turn.clone());
    let (mut kills, mut mid_stream, mut restarts_seen) = (0, 0, 0.0);
    let started = Instant::now();
    while kills < 10 {
        let wait = rand::rng().random_range(1_500..4_000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if kills == 5 {
            // The apiserver goes away and comes back between two writes.
            let _held = turn.lock().await;
            h.api.kill_apiserver();
            tokio::time::sleep(Duration::from_secs(2)).await;
            h.api.start_apiserver_again();
            let deadline = Instant::now() + Duration::from_secs(30);
            while restarts_seen == 0.0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                restarts_seen = producer.metric("kev_producer_watch_restarts_total").await;
            }
        }
        drop(producer);
        kills += 1;
        if !writer.is_finished() {
            mid_stream += 1;
        }
        producer = Proc::spawn(&h, &kubeconfig, "p", &[]);
    }
    let mut w = writer.await.unwrap();
    w.versions.extend(first.versions);
    w.adopt_others().await;
    let written = w.versions.len();
    let records = h.wait_published(written).await;
    drop(producer);
    let n = assert_exactly_once(&records, &w.versions, &h.cfg.cluster_id, h.cfg.topic.partitions);
    assert_eq!(n, written);
    assert!(mid_stream >= 10, "only {mid_stream} of {kills} kills landed while events were written");
    assert!(restarts_seen >= 1.0, "the producer alive through the apiserver's restart counted no watch restart");
    println!(
        "real apiserver: {kills} SIGKILLs ({mid_stream} mid-stream) and an apiserver restart over {:.0} s; \
         {written} versions written, {n} published exactly once; watch restarts counted through the \
         apiserver restart: {restarts_seen}; adapted: {:?}",
        started.elapsed().as_secs_f64(),
        w.adapted
    );
}

/// With no watch cache, a watch from a resourceVersion that etcd compacted away ends in 410
/// Gone: the producer is paused (SIGSTOP) while the apiserver restarts, events are written and
/// etcd is compacted past what it saw; resumed, it gets 410, lists again, and still publishes
/// every version exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_resource_version_is_gone_and_the_producer_lists_again() {
    let mut h = Harness::start(KubeOptions { no_watch_cache: true, ..Default::default() }, "compacted").await;
    let kubeconfig = h.api.kubeconfig(None);
    let sources = core_sources();
    let mut w = EventWriter::new(h.api.admin());
    for s in &sources[..200] {
        w.create_core(s).await;
    }
    let producer = Proc::spawn(&h, &kubeconfig, "p", &[]);
    h.wait_published(w.versions.len()).await;
    producer.signal("-STOP");
    h.api.kill_apiserver();
    h.api.start_apiserver_again();
    w.client = h.api.admin();
    for s in &sources[200..300] {
        w.create_core(s).await;
    }
    let newest: u64 = w.versions.last().unwrap()["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    h.api.compact(newest);
    w.adopt_others().await;
    producer.signal("-CONT");
    let records = h.wait_published(w.versions.len()).await;
    let gone = producer.metric("kev_producer_watch_gone_total").await;
    drop(producer);
    let n = assert_exactly_once(&records, &w.versions, &h.cfg.cluster_id, h.cfg.topic.partitions);
    assert!(gone >= 1.0, "no 410 Gone was counted");
    println!("real apiserver, no watch cache: etcd compacted to {newest}; 410 Gone counted {gone} time(s); {n} versions exactly once");
}

/// The path of a resource's collection on the API server, for the kinds `deploy/base/rbac.yaml`
/// holds, in namespace `ns`.
fn collection(kind: &str, ns: &str) -> String {
    match kind {
        "ServiceAccount" => format!("/api/v1/namespaces/{ns}/serviceaccounts"),
        "ClusterRole" => "/apis/rbac.authorization.k8s.io/v1/clusterroles".into(),
        "ClusterRoleBinding" => "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into(),
        "Role" => format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
        "RoleBinding" => format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
        other => panic!("deploy/base/rbac.yaml holds a {other}, which this test does not know"),
    }
}

/// `deploy/base/rbac.yaml` applied in namespace `kev` (the kustomization's namespace), with
/// `edit` applied to each object first. Returns the producer ServiceAccount's token.
async fn apply_rbac(w: &mut EventWriter, edit: impl Fn(&mut Value)) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/base/rbac.yaml")).unwrap();
    w.namespace("kev").await;
    for doc in serde_norway::Deserializer::from_str(&text) {
        let mut o: Value = serde::Deserialize::deserialize(doc).unwrap();
        edit(&mut o);
        let kind = o["kind"].as_str().unwrap().to_string();
        w.send("POST", &collection(&kind, "kev"), "application/json", &o)
            .await
            .unwrap_or_else(|e| panic!("applying {kind} {}: {e}", o["metadata"]["name"]));
    }
    let req =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}});
    let path = "/api/v1/namespaces/kev/serviceaccounts/kev-producer/token";
    let answer = w.send("POST", path, "application/json", &req).await.unwrap();
    answer["status"]["token"].as_str().unwrap().to_string()
}

/// The environment of a producer as `deploy/base` runs it: leader election on the Lease
/// `kev/kev-producer-leader`.
const DEPLOYED: [(&str, &str); 5] = [
    ("KEV_LEADER_ELECTION__ENABLED", "true"),
    ("KEV_LEADER_ELECTION__LEASE_NAME", "kev-producer-leader"),
    ("KEV_LEADER_ELECTION__LEASE_DURATION_S", "4"),
    ("KEV_LEADER_ELECTION__RENEW_DEADLINE_S", "3"),
    ("KEV_LEADER_ELECTION__RETRY_PERIOD_S", "1"),
];

/// The Lease's holder.
async fn lease_holder(w: &EventWriter) -> Option<String> {
    let req = http::Request::get("/apis/coordination.k8s.io/v1/namespaces/kev/leases/kev-producer-leader")
        .body(Vec::new())
        .unwrap();
    let lease: Value = w.client.request(req).await.ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// The producer's /readyz: (ready, what it says).
async fn readiness(p: &Proc) -> (bool, String) {
    match reqwest::get(format!("http://127.0.0.1:{}/readyz", p.http)).await {
        Ok(r) => (r.status().is_success(), r.text().await.unwrap_or_default()),
        Err(e) => (false, e.to_string()),
    }
}

/// Two replicas run with exactly the RBAC of `deploy/base` and a TokenRequest token of its
/// ServiceAccount, not the admin's: only the Lease holder publishes, and a SIGKILL of the
/// holder hands over within the lease duration with every version exactly once. Then each of
/// two verbs is taken away (events `watch`, the Lease `update`): a producer reports the refused
/// verb and resource within seconds, is not ready, and keeps running and retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_exactly_deploys_rbac_two_replicas_hand_over_and_a_missing_verb_is_reported() {
    let h = Harness::start(KubeOptions::default(), "rbac").await;
    let mut w = EventWriter::new(h.api.admin());
    let token = apply_rbac(&mut w, |_| {}).await;
    let kubeconfig = h.api.kubeconfig(Some(&token));
    let sources = core_sources();
    for s in &sources[..150] {
        w.create_core(s).await;
    }
    let a = Proc::spawn(&h, &kubeconfig, "replica-a", &DEPLOYED);
    let deadline = Instant::now() + Duration::from_secs(60);
    while lease_holder(&w).await.as_deref() != Some("replica-a") {
        assert!(Instant::now() < deadline, "replica-a never took the Lease with the deployed RBAC");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = Proc::spawn(&h, &kubeconfig, "replica-b", &DEPLOYED);
    for s in &sources[150..300] {
        w.create_core(s).await;
    }
    h.wait_published(w.versions.len()).await;
    assert_eq!(lease_holder(&w).await.as_deref(), Some("replica-a"), "the leader keeps its Lease");
    drop(a);
    let killed = Instant::now();
    // Events keep coming while the Lease changes hands; the holder is watched meanwhile.
    let turn = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let during = write_in_background(h.api.admin(), sources[300..450].to_vec(), Duration::from_millis(10), turn);
    while lease_holder(&w).await.as_deref() != Some("replica-b") {
        assert!(killed.elapsed() < Duration::from_secs(60), "replica-b never took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let handover = killed.elapsed();
    w.versions.extend(during.await.unwrap().versions);
    w.adopt_others().await;
    let records = h.wait_published(w.versions.len()).await;
    drop(b);
    let n = assert_exactly_once(&records, &w.versions, &h.cfg.cluster_id, h.cfg.topic.partitions);
    let producers: Vec<&str> =
        records.iter().filter_map(|p| p.record.heartbeat.as_ref()).map(|hb| hb.producer_id.as_str()).collect();
    let first_b = producers.iter().position(|p| *p == "replica-b").expect("replica-b published after the handover");
    assert!(producers[first_b..].iter().all(|p| *p == "replica-b"), "replica-a published after the handover");
    assert!(handover < Duration::from_secs(4) + Duration::from_secs(3), "handover took {handover:?}");
    println!(
        "deployed RBAC, two replicas: SIGKILL of the leader handed over in {handover:?}; {n} versions exactly once"
    );

    // Each verb taken away in turn, and the roles put back as they were after.
    for (verb, resource) in [("watch", "events"), ("update", "leases")] {
        let before = set_role_rules(&w, |_, rules| {
            let mut rules = rules.clone();
            for rule in rules.as_array_mut().unwrap() {
                if rule["resources"][0] == resource {
                    let verbs: Vec<Value> =
                        rule["verbs"].as_array().unwrap().iter().filter(|v| *v != verb).cloned().collect();
                    rule["verbs"] = Value::Array(verbs);
                }
            }
            rules
        })
        .await;
        let started = Instant::now();
        let p = Proc::spawn(&h, &kubeconfig, &format!("without-{verb}"), &DEPLOYED);
        let said = loop {
            let (ready, text) = readiness(&p).await;
            if !ready && text.contains("cannot") && text.contains(verb) && text.contains(resource) {
                break text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no refusal of {verb} {resource} reported: ready={ready}, {text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let reported = started.elapsed();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut p = p;
        assert!(p.child.try_wait().unwrap().is_none(), "the producer exited instead of retrying");
        let (ready, _) = readiness(&p).await;
        assert!(!ready, "the producer became ready without {verb} on {resource}");
        assert!(p.metric("kev_producer_kubernetes_refusals_total").await >= 2.0, "it retried");
        println!("without {verb} on {resource}: reported after {reported:?}, still running and not ready: {said}");
        // The roles as they were, for the next round.
        set_role_rules(&w, |path, _| before[path].clone()).await;
    }
}

/// Replaces the rules of the producer's two roles of `deploy/base/rbac.yaml` with
/// `rules(path, current rules)`; returns the rules each had, by path.
async fn set_role_rules(w: &EventWriter, rules: impl Fn(&str, &Value) -> Value) -> BTreeMap<String, Value> {
    let mut before = BTreeMap::new();
    for kind in ["clusterroles/kev-producer-events-reader", "namespaces/kev/roles/kev-producer-lease"] {
        let path = format!("/apis/rbac.authorization.k8s.io/v1/{kind}");
        let mut role = w.get(&path).await;
        let new = rules(&path, &role["rules"]);
        before.insert(path.clone(), std::mem::replace(&mut role["rules"], new));
        w.send("PUT", &path, "application/json", &role).await.unwrap();
    }
    before
}

/// Server-side selectors on the real apiserver: a namespace list with the events of
/// cluster-scoped objects, and a field selector, publish exactly the matching versions. With a
/// watch cache sized for events, the watches get bookmarks, and the producer counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_are_applied_by_the_real_server_and_bookmarks_come_from_its_watch_cache() {
    let h = Harness::start(KubeOptions { events_watch_cache: true, ..Default::default() }, "selected").await;
    let mut w = EventWriter::new(h.api.admin());
    for s in core_sources().iter().step_by(5).take(600) {
        w.create_core(s).await;
    }
    w.adopt_others().await;
    // The two namespaces with the most Warning events.
    let warnings: BTreeMap<String, usize> =
        w.versions.iter().filter(|v| v["type"] == "Warning").fold(BTreeMap::new(), |mut m, v| {
            *m.entry(v["metadata"]["namespace"].as_str().unwrap().to_string()).or_default() += 1;
            m
        });
    let mut ranked: Vec<(&String, &usize)> = warnings.iter().filter(|(n, _)| *n != "default").collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let namespaces: Vec<&String> = ranked.iter().take(2).map(|(n, _)| *n).collect();
    let list = namespaces.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(",");
    let p = Proc::spawn(
        &h,
        &h.api.kubeconfig(None),
        "p",
        &[("KEV_SOURCE__NAMESPACES", &list), ("KEV_SOURCE__FIELD_SELECTOR", "type=Warning")],
    );
    let wanted: Vec<Value> = w
        .versions
        .iter()
        .filter(|v| {
            // The events of cluster-scoped objects (filed under `default`) come too.
            let ns = v["metadata"]["namespace"].as_str().unwrap();
            let cluster_scoped = v["regarding"]["namespace"].as_str().unwrap_or_default().is_empty();
            (namespaces.iter().any(|n| *n == ns) || (ns == "default" && cluster_scoped)) && v["type"] == "Warning"
        })
        .cloned()
        .collect();
    assert!(wanted.len() >= 20 && wanted.len() < w.versions.len() / 2, "{} of {}", wanted.len(), w.versions.len());
    let records = h.wait_published(wanted.len()).await;
    let n = assert_exactly_once(&records, &wanted, &h.cfg.cluster_id, h.cfg.topic.partitions);
    println!("namespaces {list} (and default) with type=Warning: {n} of {} versions, exactly those", w.versions.len());
    // The watch cache sends each watcher a bookmark about once a minute.
    let started = Instant::now();
    let mut bookmarks = 0.0;
    while bookmarks < 1.0 {
        assert!(started.elapsed() < Duration::from_secs(150), "no bookmark in 150 s with the events watch cache on");
        tokio::time::sleep(Duration::from_secs(1)).await;
        bookmarks = p.metric("kev_producer_watch_bookmarks_total").await;
    }
    println!("events watch cache on: {bookmarks} bookmark(s) after {:.0} s", started.elapsed().as_secs_f64());
    drop(p);
}
