//! kev deployed on a real node the way its users deploy it: the Dockerfile's runtime images
//! (built here with buildah on a distroless base made from Debian packages), `deploy/base`
//! through the node's kustomize overlay (`tests/deploy/node`), the producer's two replicas
//! sharing a Lease and the enricher's consumer group, Ready through their own probes and
//! talking to the apiserver with their projected ServiceAccount tokens. A workload deployed,
//! scaled, rolled and deleted makes the kubelet, the scheduler and the controllers speak; every
//! event the apiserver holds at the end is in the raw topic exactly once, as it returns it, also
//! across leader kills and a leader frozen and woken after the takeover. An enricher killed
//! mid-stream, a wrong Kafka address, and the Helm chart installed with a Secret missing and
//! then upgraded while events flow are the other tests. Each leaves the machine as it found it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kev_enricher::EnricherConfig;
use kev_producer::readback::{self, Published};
use kev_producer::{run, ProducerConfig};
use kev_schemas::k8s::same_object;
use kev_schemas::RawKind;
use kev_tests::broker::{Broker, BrokerOptions, NODE_KAFKA};
use kev_tests::expect::version_key;
use kev_tests::images::ImageSpec;
use kev_tests::node::{apply, MachineState, Node};
use kev_tests::outputs;
use kev_tests::registry::Apicurio;
use kev_tests::wait::until;
use kev_tests::workloads;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

/// The pods of namespace `ns`, their phase, readiness and container states, and the last lines
/// of each container's log (read through the apiserver from the kubelet).
async fn describe(client: &kube::Client, ns: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut out = String::new();
    for p in pods.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
        let name = p.metadata.name.clone().unwrap_or_default();
        let status = p.status.as_ref();
        out += &format!(
            "pod {name}: {:?} conditions {:?} containers {:?}\n",
            status.and_then(|s| s.phase.clone()),
            status.and_then(|s| s.conditions.clone()),
            status.and_then(|s| s.container_statuses.clone()),
        );
        let logs = pods
            .logs(&name, &kube::api::LogParams { tail_lines: Some(20), ..Default::default() })
            .await
            .unwrap_or_else(|e| format!("(no log: {e})"));
        out += &format!("--- log of {name}\n{logs}\n");
    }
    out
}

/// Waits until Deployment `ns/name` has rolled out: its generation observed, and `replicas`
/// replicas updated and Ready.
async fn rolled_out(client: &kube::Client, ns: &str, name: &str, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    until(
        &format!("Deployment {ns}/{name} rolled out with {replicas} Ready"),
        Duration::from_secs(180),
        || async {
            let d = deployments.get(name).await.ok()?;
            let s = d.status?;
            let done = s.observed_generation >= d.metadata.generation
                && s.updated_replicas == Some(replicas)
                && s.ready_replicas == Some(replicas)
                && s.replicas == Some(replicas);
            done.then_some(())
        },
        async || describe(client, ns).await,
    )
    .await;
}

/// What runs for a test: the node, and inside its sandbox the broker and the registry (none
/// for a test of a broker that is not there).
struct Cluster {
    node: Node,
    kafka: Option<(Broker, Apicurio)>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    fn start(with_kafka: bool) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let scratch = tmp.path().join("images");
        let images =
            [ImageSpec::kev("producer", &scratch), ImageSpec::kev("enricher", &scratch), workloads::busybox_image()];
        let started = Instant::now();
        let node = Node::start(tmp.path(), &images);
        println!("node Ready with kev's images in {:.1} s", started.elapsed().as_secs_f64());
        for image in &images[..2] {
            let archive = image.archive(node.sandbox());
            let mb = archive.metadata().unwrap().len() as f64 / 1e6;
            println!("image {}: {mb:.1} MB as an OCI archive", image.reference);
        }
        let kafka = with_kafka.then(|| {
            let sandbox = Some(node.sandbox().clone());
            let broker =
                Broker::start_with(tmp.path(), BrokerOptions { sandbox: sandbox.clone(), ..Default::default() });
            (broker, Apicurio::start_in(&tmp.path().join("registry"), sandbox))
        });
        Cluster { node, kafka, _tmp: tmp }
    }

    fn broker(&self) -> &Broker {
        &self.kafka.as_ref().unwrap().0
    }

    fn registry_url(&self) -> String {
        self.kafka.as_ref().unwrap().1.url()
    }

    /// How the harness reads the raw topic the producer pods write (the node overlay's
    /// `config/producer.yaml`, through the machine-side ports).
    fn producer_config(&self) -> ProducerConfig {
        let mut cfg =
            ProducerConfig { kafka: self.broker().settings(), cluster_id: "kev-node".into(), ..Default::default() };
        cfg.registry.url = self.registry_url();
        cfg.topic.partitions = 3;
        cfg
    }

    /// The enricher pods' configuration (the overlay's `config/enricher.yaml`), through the
    /// machine-side ports: what the harness reads their outputs and the reference with.
    fn enricher_config(&self) -> EnricherConfig {
        let mut cfg = EnricherConfig { kafka: self.broker().settings(), ..Default::default() };
        cfg.registry.url = self.registry_url();
        cfg
    }
}

/// Runs `test` on a new cluster (with the broker and the registry when `with_kafka`), then
/// stops everything and checks that the machine is as it was before.
fn on_a_node(with_kafka: bool, test: impl AsyncFnOnce(&Cluster)) {
    kev_tests::init_logs();
    let before = MachineState::read();
    let cluster = Cluster::start(with_kafka);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(test(&cluster));
    drop(rt);
    drop(cluster);
    assert_eq!(MachineState::read(), before, "the machine is as it was before the node started");
}

/// The node overlay rendered (`tests/deploy/node`), checked to name the images the harness
/// built, and edited by `edit` (a test's misconfiguration).
fn node_overlay(edit: impl Fn(&mut Value)) -> Vec<Value> {
    let mut objects = kev_tests::manifests::render(&kev_tests::repo().join("tests/deploy/node"));
    let images: BTreeSet<String> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .flat_map(|o| o["spec"]["template"]["spec"]["containers"].as_array().unwrap())
        .map(|c| c["image"].as_str().unwrap().to_string())
        .collect();
    let version = env!("CARGO_PKG_VERSION");
    let built =
        BTreeSet::from([format!("kev.local/kev-producer:{version}"), format!("kev.local/kev-enricher:{version}")]);
    assert_eq!(images, built, "the overlay names the images the harness builds");
    objects.iter_mut().for_each(edit);
    objects
}

/// Applies `objects` and waits until both Deployments have rolled out with 2 Ready.
async fn deploy(client: &kube::Client, objects: &[Value]) {
    let started = Instant::now();
    apply(client, objects).await;
    rolled_out(client, "kev", "kev-producer", 2).await;
    rolled_out(client, "kev", "kev-enricher", 2).await;
    println!("kev's pods Ready through their probes {:.1} s after the apply", started.elapsed().as_secs_f64());
}

/// The pod holding the producer's Lease.
async fn lease_holder(client: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kev");
    leases.get("kev-producer-leader").await.ok()?.spec?.holder_identity
}

/// The pods of a Deployment (by its `app.kubernetes.io/name` label).
async fn pods_of(client: &kube::Client, app: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kev");
    let selector = format!("app.kubernetes.io/name={app}");
    pods.list(&ListParams::default().labels(&selector)).await.unwrap().items
}

/// The names of kev's pods not being deleted.
async fn kev_pods(client: &kube::Client) -> BTreeSet<String> {
    let pods = [pods_of(client, "kev-producer").await, pods_of(client, "kev-enricher").await].concat();
    pods.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).filter_map(|p| p.metadata.name).collect()
}

/// The container ID (`containerd://...`) of pod `name`'s first container.
async fn container_id(client: &kube::Client, name: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kev");
    let pod = pods.get(name).await.unwrap();
    pod.status.unwrap().container_statuses.unwrap()[0].container_id.clone().expect("a running container")
}

/// Waits until a live producer renews the Lease after `since`, and returns the holder with how
/// long it took. `killed` is the pod whose process died at `since`: when it holds the Lease
/// again, the renewal must come from its restarted container (after that one started), not from
/// a request the dead one had in flight.
async fn renewed_after(client: &kube::Client, since: Instant, killed: &str) -> (String, Duration) {
    let micros = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros();
    let wall = micros(chrono::Utc::now() - chrono::Duration::from_std(since.elapsed()).unwrap());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kev");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kev");
    let holder = until(
        "the Lease renewed by a live producer",
        Duration::from_secs(60),
        || async {
            let spec = leases.get("kev-producer-leader").await.ok()?.spec?;
            let (holder, renewed) = (spec.holder_identity?, spec.renew_time?.0.as_microsecond());
            let after = if holder == killed {
                let pod = pods.get(killed).await.ok()?;
                let c = pod.status?.container_statuses?.into_iter().next()?;
                let started = c.state?.running?.started_at?.0.as_microsecond();
                (c.restart_count >= 1).then_some(started.max(wall))?
            } else {
                wall
            };
            (renewed > after).then_some(holder)
        },
        async || describe(client, "kev").await,
    )
    .await;
    (holder, since.elapsed())
}

/// The producer's Lease timing, as `deploy/base` leaves it (the producer's defaults): a dead
/// leader's Lease expires this long after the standby last saw it renewed, and the standby
/// looks this often. So a leader that dies without releasing the Lease is replaced within the
/// duration and two retries (one to see the last renewal, one to see the expiry), 19 s.
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Checks the raw topic against every event the apiserver holds now: each version there once,
/// equal to what the apiserver returns, and no version twice anywhere in the topic. Returns
/// the events per reporting component.
async fn assert_every_event_published_once(cluster: &Cluster) -> BTreeMap<String, usize> {
    let expected = cluster.node.events();
    let records = published(&cluster.producer_config(), &expected).await;
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for p in records.iter().filter(|p| p.record.kind == RawKind::Event) {
        let e = p.record.event.as_ref().unwrap();
        *seen.entry((e.uid.clone(), e.resource_version.clone())).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published more than once: {twice:?}");
    let by_key: BTreeMap<(String, String), &Published> = records
        .iter()
        .filter_map(|p| p.record.event.as_ref().map(|e| ((e.uid.clone(), e.resource_version.clone()), p)))
        .collect();
    let mut per_component: BTreeMap<String, usize> = BTreeMap::new();
    for e in &expected {
        let p = by_key[&version_key(e)];
        let back = p.record.event.as_ref().unwrap().object().unwrap().to_json();
        assert!(same_object(&back, e), "{:?} differs from the apiserver's:\n{back}\n{e}", version_key(e));
        *per_component.entry(reporter(e)).or_default() += 1;
    }
    println!(
        "{} events held by the apiserver, each published once ({} versions in the raw topic); by component: {per_component:?}",
        expected.len(),
        seen.len()
    );
    per_component
}

/// The component that reported an event, whichever API wrote it.
fn reporter(e: &Value) -> String {
    e["reportingController"]
        .as_str()
        .filter(|c| !c.is_empty())
        .or(e["deprecatedSource"]["component"].as_str())
        .unwrap_or("(none)")
        .to_string()
}

/// A Deployment deployed, scaled up, rolled to a new template and deleted, each step awaited.
async fn run_workload(client: &kube::Client, ns: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap())
        .await
        .unwrap();
    let web = workloads::web(1);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments.create(&PostParams::default(), &serde_json::from_value(web).unwrap()).await.unwrap();
    rolled_out(client, ns, "web", 1).await;
    for step in [
        json!({"spec": {"replicas": 3}}),
        json!({"spec": {"template": {"metadata": {"annotations": {"kev.test/rollout": "2"}}}}}),
    ] {
        deployments.patch("web", &PatchParams::default(), &Patch::Merge(step)).await.unwrap();
        rolled_out(client, ns, "web", 3).await;
    }
    deployments.delete("web", &DeleteParams::foreground()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    until(
        "the workload's pods gone",
        Duration::from_secs(120),
        || async { pods.list(&ListParams::default()).await.ok().filter(|l| l.items.is_empty()).map(|_| ()) },
        async || describe(client, ns).await,
    )
    .await;
}

/// The raw topic's event records once it holds every version in `expected`.
async fn published(cfg: &ProducerConfig, expected: &[Value]) -> Vec<Published> {
    let codec = run::codec(cfg).unwrap();
    let want: BTreeSet<(String, String)> = expected.iter().map(version_key).collect();
    let started = Instant::now();
    loop {
        let records = readback::read_all(&cfg.kafka, &cfg.topic.name, &codec).await.unwrap_or_default();
        let have: BTreeSet<(String, String)> = records
            .iter()
            .filter_map(|p| p.record.event.as_ref())
            .map(|e| (e.uid.clone(), e.resource_version.clone()))
            .collect();
        let missing = want.difference(&have).count();
        if missing == 0 {
            return records;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{missing} of {} versions the apiserver holds are not in the raw topic after 120 s",
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A workload deployed, scaled, rolled and deleted: every event in the raw topic once. Then
/// the producer that holds the Lease is killed twice while another workload runs, its container
/// outright and then its pod by a force delete: a live replica holds the Lease again within
/// its duration and two retries (19 s), and still every event is there exactly once.
#[test]
fn kev_on_a_real_node_publishes_every_event_once_across_leader_kills() {
    on_a_node(true, async |cluster| {
        let client = cluster.node.client();
        deploy(&client, &node_overlay(|_| {})).await;
        run_workload(&client, "shop").await;
        let per_component = assert_every_event_published_once(cluster).await;
        for component in ["kubelet", "default-scheduler", "deployment-controller", "replicaset-controller"] {
            assert!(per_component.contains_key(component), "no event from {component}: {per_component:?}");
        }

        // The leader's container killed outright, with events being made meanwhile.
        let workload = tokio::spawn({
            let client = client.clone();
            async move { run_workload(&client, "shop-2").await }
        });
        // A restarted container keeps its pod's name, so either replica may hold the Lease next.
        let lease = LEASE_DURATION + 2 * RETRY_PERIOD;
        let leader = lease_holder(&client).await.expect("a leader");
        let killed_at = Instant::now();
        let killed = cluster.node.kill_container(&container_id(&client, &leader).await);
        assert!(killed > 0, "no process in the leader's container");
        let (second, took) = renewed_after(&client, killed_at, &leader).await;
        println!("container of {leader} SIGKILLed: {second} renews the Lease {:.1} s later", took.as_secs_f64());
        assert!(took <= lease, "the Lease was renewed after {took:?}");

        // The leader's pod force-deleted; the other replica must take over.
        let pods: Api<Pod> = Api::namespaced(client.clone(), "kev");
        let deleted_at = Instant::now();
        pods.delete(&second, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
        let (third, took) = renewed_after(&client, deleted_at, &second).await;
        assert_ne!(third, second, "a force-deleted pod holds the Lease");
        println!("pod {second} force-deleted: {third} holds the Lease {:.1} s later", took.as_secs_f64());
        assert!(took <= lease, "the standby took over after {took:?}");
        workload.await.unwrap();
        rolled_out(&client, "kev", "kev-producer", 2).await;
        assert_every_event_published_once(cluster).await;
        kev_tests::data::capture(
            "rollout-and-leader-kills",
            "tests/tests/kev_on_node.rs::kev_on_a_real_node_publishes_every_event_once_across_leader_kills",
            &cluster.node.events(),
        );
    });
}

/// The leader frozen, not dead (SIGSTOP on its container's processes, as a stalled process or
/// node leaves it): the standby takes over at the Lease's expiry (within its duration and two
/// retries) while a workload's events flow. The old leader is frozen at a quiet moment (so that
/// librdkafka holds none of its records) and woken right after the takeover, with the
/// workload's watch events waiting for it and a Kafka producer of its own: it must hand nothing
/// more to Kafka, as its leadership term ran out while it was frozen. Every event is in the raw
/// topic once. Its liveness probe is given two minutes here, so that the kubelet does not
/// restart it before it wakes.
#[test]
fn a_frozen_leader_woken_after_the_takeover_publishes_nothing_twice() {
    on_a_node(true, async |cluster| {
        let client = cluster.node.client();
        let patient = node_overlay(|o| {
            if o["kind"] == "Deployment" && o["metadata"]["name"] == "kev-producer" {
                o["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["failureThreshold"] = json!(12);
            }
        });
        deploy(&client, &patient).await;
        run_workload(&client, "shop").await;
        assert_every_event_published_once(cluster).await;
        let leader = lease_holder(&client).await.expect("a leader");
        let container = container_id(&client, &leader).await;
        let frozen_at = Instant::now();
        assert!(cluster.node.signal_container(&container, libc::SIGSTOP) > 0, "no process in {leader}");
        let workload = tokio::spawn({
            let client = client.clone();
            async move { run_workload(&client, "shop-2").await }
        });
        let (next, took) = renewed_after(&client, frozen_at, &leader).await;
        assert_ne!(next, leader, "a frozen process renewed the Lease");
        assert!(took <= LEASE_DURATION + 2 * RETRY_PERIOD, "the standby took over after {took:?}");
        assert!(cluster.node.signal_container(&container, libc::SIGCONT) > 0, "{leader} gone while frozen");
        println!("{leader} frozen: {next} holds the Lease {:.1} s later; {leader} woken", took.as_secs_f64());
        let pods: Api<Pod> = Api::namespaced(client.clone(), "kev");
        let log = until(
            &format!("{leader} standing by after it woke"),
            Duration::from_secs(60),
            || async {
                let log = pods.logs(&leader, &Default::default()).await.ok()?;
                log.contains("lost the Lease; standing by").then_some(log)
            },
            async || describe(&client, "kev").await,
        )
        .await;
        let guarded = log.contains("the leadership term ran out");
        println!("{leader} woke and stood by; stopped by its term's check before a record: {guarded}");
        workload.await.unwrap();
        let restarts = pods.get(&leader).await.unwrap().status.unwrap().container_statuses.unwrap()[0].restart_count;
        assert_eq!(restarts, 0, "{leader} was restarted, so it never woke as a stale leader");
        assert_every_event_published_once(cluster).await;
    });
}

/// One enricher pod's container killed outright while a workload's events flow through: when
/// the raw topic stops growing (the producer scaled to zero) and the group has caught up, every
/// output topic holds what the same engine, run in process over the raw log, emits.
#[test]
fn an_enricher_killed_mid_stream_emits_what_an_uninterrupted_run_does() {
    on_a_node(true, async |cluster| {
        let client = cluster.node.client();
        deploy(&client, &node_overlay(|_| {})).await;
        let cfg = cluster.enricher_config();
        let workload = tokio::spawn({
            let client = client.clone();
            async move { run_workload(&client, "shop").await }
        });
        outputs::wait_started(&cfg, Duration::from_secs(120)).await;
        let victim = pods_of(&client, "kev-enricher").await[0].metadata.name.clone().unwrap();
        let killed = cluster.node.kill_container(&container_id(&client, &victim).await);
        assert!(killed > 0, "no process in {victim}'s container");
        workload.await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "kev");
        let restarted = pods.get(&victim).await.unwrap().status.unwrap().container_statuses.unwrap()[0].restart_count;
        assert!(restarted >= 1, "{victim} was restarted by the kubelet");
        rolled_out(&client, "kev", "kev-enricher", 2).await;

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kev");
        let zero = json!({"spec": {"replicas": 0}});
        deployments.patch("kev-producer", &PatchParams::default(), &Patch::Merge(zero)).await.unwrap();
        until(
            "the producer's pods gone",
            Duration::from_secs(60),
            || async { pods_of(&client, "kev-producer").await.is_empty().then_some(()) },
            async || describe(&client, "kev").await,
        )
        .await;
        outputs::wait_caught_up(&cfg, Duration::from_secs(120)).await;
        let codec = cfg.registry.codec().unwrap();
        let live = outputs::read_outputs(&cfg);
        let reference = outputs::reference(&cfg, &codec).await;
        let cmp = outputs::assert_matches(&live, &reference, cfg.exactly_once());
        println!(
            "enricher {victim} killed mid-stream: {} output records, {} in the uninterrupted reference, {} duplicates; per stream {:?}",
            cmp.records,
            cmp.reference_records,
            cmp.duplicates,
            outputs::counts(&live)
        );
        assert!(cmp.reference_records > 0, "the reference emitted nothing");
    });
}

/// Waits for a running `app` pod whose readiness probe answers 503 with a body that contains
/// `says` (any case), then checks that it is not Ready and has never restarted (no crash loop).
/// Returns the pod's name and its log.
async fn not_ready_saying(cluster: &Cluster, app: &str, says: &str) -> (String, String) {
    let client = cluster.node.client();
    // Running, and asked by its readiness probe more than once.
    let pod = until(
        &format!("a running {app} pod answering its probes"),
        Duration::from_secs(120),
        || async {
            let pods = pods_of(&client, app).await;
            pods.into_iter().find(|p| {
                let s = p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first().cloned());
                s.and_then(|s| s.started.filter(|&b| b).map(|_| s.state))
                    .flatten()
                    .is_some_and(|st| st.running.is_some())
            })
        },
        async || describe(&client, "kev").await,
    )
    .await;
    let name = pod.metadata.name.clone().unwrap();
    let path = format!("/api/v1/namespaces/kev/pods/{name}:8080/proxy/readyz");
    let last = std::sync::Mutex::new(None);
    let why = until(
        &format!("{name} saying why it is not ready"),
        Duration::from_secs(60),
        || async {
            let (status, body) = cluster.node.api.get_with_status(&path)?;
            let body = String::from_utf8_lossy(&body).into_owned();
            *last.lock().unwrap() = Some((status, body.clone()));
            (status == 503 && body.to_lowercase().contains(says)).then_some(body)
        },
        async || {
            let answer = last.lock().unwrap().clone();
            format!("last answer: {answer:?}\n{}", describe(&client, "kev").await)
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kev");
    let log = pods.logs(&name, &Default::default()).await.unwrap();
    let status = pods.get(&name).await.unwrap().status.unwrap();
    let ready = status.conditions.unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "True");
    let restarts = status.container_statuses.unwrap()[0].restart_count;
    println!("{name}: ready {ready}, {restarts} restarts, /readyz: {why}");
    assert!(!ready, "{name} is Ready while it says: {why}");
    assert_eq!(restarts, 0, "{name} restarted:\n{log}");
    (name, log)
}

/// Kafka's address wrong (nothing listens there): every kev pod stays up and not Ready, and
/// says why in its readiness body and its log; none crash-loops.
#[test]
fn a_wrong_kafka_address_keeps_the_pods_not_ready_saying_why() {
    on_a_node(false, async |cluster| {
        let client = cluster.node.client();
        let objects = node_overlay(|o| {
            if o["kind"] == "ConfigMap" {
                for (_, text) in o["data"].as_object_mut().unwrap() {
                    *text = json!(text.as_str().unwrap().replace(NODE_KAFKA, "10.250.0.1:9"));
                }
            }
        });
        apply(&client, &objects).await;
        for app in ["kev-producer", "kev-enricher"] {
            let (name, log) = not_ready_saying(cluster, app, "kafka").await;
            assert!(log.contains("10.250.0.1:9"), "{name}'s log names the address it cannot reach:\n{log}");
        }
    });
}

/// kev installed with its Helm chart (`tests/deploy/node/helm-values.yaml`) and upgraded once
/// while a workload's events flow: the enricher's Kafka Secret does not exist at the install,
/// so its pods wait, not Ready and never restarted, naming the missing file on /readyz and in
/// their log, and become Ready once the Secret is created (the kubelet fills the optional
/// volume in). The upgrade rolls both Deployments; afterwards every event the apiserver holds
/// is in the raw topic exactly once.
#[test]
fn installed_by_helm_and_upgraded_kev_loses_and_duplicates_nothing() {
    on_a_node(true, async |cluster| {
        let client = cluster.node.client();
        let helm = kev_tests::helm::Helm::new();
        let kubeconfig = cluster.node.api.kubeconfig(None);
        let chart = kev_tests::helm::chart();
        let values = kev_tests::repo().join("tests/deploy/node/helm-values.yaml");
        let release = |verb: &str, extra: &[&str]| {
            let mut args = vec![verb, "kev", chart.to_str().unwrap(), "--namespace", "kev"];
            args.extend_from_slice(&["--kubeconfig", kubeconfig.to_str().unwrap(), "-f", values.to_str().unwrap()]);
            args.extend_from_slice(extra);
            let started = Instant::now();
            helm.run(&args);
            println!("helm {verb} {extra:?} done in {:.1} s", started.elapsed().as_secs_f64());
        };
        release("install", &["--create-namespace"]);
        rolled_out(&client, "kev", "kev-producer", 2).await;

        // The enricher's Secret is missing: waiting, saying so, not crash-looping.
        let (name, log) = not_ready_saying(cluster, "kev-enricher", "kafka.secret_properties_dir").await;
        assert!(log.contains("holds no property file"), "{name}'s log says what it waits for:\n{log}");
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "kev");
        let secret = json!({
            "metadata": {"name": "kev-enricher-kafka"},
            "stringData": {"client.id": "kev-enricher-on-the-node"},
        });
        let created = Instant::now();
        secrets.create(&PostParams::default(), &serde_json::from_value(secret).unwrap()).await.unwrap();
        rolled_out(&client, "kev", "kev-enricher", 2).await;
        println!("the enricher Ready {:.1} s after its Secret was created", created.elapsed().as_secs_f64());
        for pod in pods_of(&client, "kev-enricher").await {
            let restarts = pod.status.unwrap().container_statuses.unwrap()[0].restart_count;
            assert_eq!(restarts, 0, "{:?} restarted while it waited", pod.metadata.name);
        }

        // The upgrade, a rolling update of both Deployments, while events are made.
        let workload = tokio::spawn({
            let client = client.clone();
            async move { run_workload(&client, "shop").await }
        });
        outputs::wait_started(&cluster.enricher_config(), Duration::from_secs(120)).await;
        let before = kev_pods(&client).await;
        release(
            "upgrade",
            &[
                "--set-string",
                "producer.podAnnotations.kev\\.test/release=2,enricher.podAnnotations.kev\\.test/release=2",
            ],
        );
        rolled_out(&client, "kev", "kev-producer", 2).await;
        rolled_out(&client, "kev", "kev-enricher", 2).await;
        let after = kev_pods(&client).await;
        assert!(before.is_disjoint(&after), "every pod replaced by the upgrade: {before:?} then {after:?}");
        workload.await.unwrap();
        let per_component = assert_every_event_published_once(cluster).await;
        println!("across the Helm upgrade: 0 lost, 0 duplicated; by component {per_component:?}");
    });
}
