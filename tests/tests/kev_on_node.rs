//! kev deployed on a real node the way its users deploy it: the Dockerfile's runtime images
//! (built here with buildah on a distroless base made from Debian packages), `deploy/base`
//! through the node's kustomize overlay (`tests/deploy/node`), the producer's two replicas
//! sharing a Lease and the enricher's consumer group, Ready through their own probes and
//! talking to the apiserver with their projected ServiceAccount tokens. A workload deployed,
//! scaled, rolled and deleted makes the kubelet, the scheduler and the controllers speak; every
//! event the apiserver holds at the end is in the raw topic exactly once, as it returns it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kev_producer::readback::{self, Published};
use kev_producer::{run, ProducerConfig};
use kev_schemas::k8s::same_object;
use kev_schemas::RawKind;
use kev_tests::broker::{Broker, BrokerOptions};
use kev_tests::expect::version_key;
use kev_tests::images::{ImageSpec, BUSYBOX_TAG};
use kev_tests::node::{apply, MachineState, Node};
use kev_tests::registry::Apicurio;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Polls `check` until it returns `Some`; after `limit`, fails with `what` and `context()`.
async fn until<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
    context: impl AsyncFnOnce() -> String,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if started.elapsed() > limit {
            panic!("{what}: not within {limit:?}\n{}", context().await);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

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

/// What runs for the test: the node, and inside its sandbox the broker and the registry.
struct Cluster {
    node: Node,
    broker: Broker,
    registry: Apicurio,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let scratch = tmp.path().join("images");
        let images = [
            ImageSpec::kev("producer", &scratch),
            ImageSpec::kev("enricher", &scratch),
            ImageSpec::busybox(&format!("kev.local/busybox:{BUSYBOX_TAG}"), &["/bin/busybox"]),
        ];
        let started = Instant::now();
        let node = Node::start(tmp.path(), &images);
        println!("node Ready with kev's images in {:.1} s", started.elapsed().as_secs_f64());
        for image in &images[..2] {
            let archive = image.archive(node.sandbox());
            println!(
                "image {}: {:.1} MB as an OCI archive",
                image.reference,
                archive.metadata().unwrap().len() as f64 / 1e6
            );
        }
        let broker = Broker::start_with(
            tmp.path(),
            BrokerOptions { sandbox: Some(node.sandbox().clone()), ..Default::default() },
        );
        let registry = Apicurio::start_in(&tmp.path().join("registry"), Some(node.sandbox().clone()));
        Cluster { node, broker, registry, _tmp: tmp }
    }

    /// How the harness reads the raw topic the producer pods write (the node overlay's
    /// `config/producer.yaml`, through the machine-side ports).
    fn producer_config(&self) -> ProducerConfig {
        let mut cfg =
            ProducerConfig { kafka: self.broker.settings(), cluster_id: "kev-node".into(), ..Default::default() };
        cfg.registry.url = self.registry.url();
        cfg.topic.partitions = 3;
        cfg
    }
}

/// Every event the apiserver holds, through events.k8s.io/v1 (the API the producer watches),
/// as a watch would return it.
fn events_now(node: &Node) -> Vec<Value> {
    let list = node.api.get("/apis/events.k8s.io/v1/events").expect("listing events");
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    for item in &mut items {
        item["apiVersion"] = json!("events.k8s.io/v1");
        item["kind"] = json!("Event");
    }
    items
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
async fn run_workload(client: &kube::Client) {
    let ns = "shop";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap())
        .await
        .unwrap();
    let container = json!({
        "name": "web",
        "image": format!("kev.local/busybox:{BUSYBOX_TAG}"),
        "imagePullPolicy": "Never",
        "args": ["sh", "-c", "echo ok > /www/index.html && exec busybox httpd -f -p 8080 -h /www"],
        "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1},
        "volumeMounts": [{"name": "www", "mountPath": "/www"}],
    });
    let web = json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "dnsPolicy": "Default",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [container],
                    "volumes": [{"name": "www", "emptyDir": {}}],
                },
            },
        },
    });
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

#[test]
fn kev_on_a_real_node_publishes_every_event_of_the_cluster_exactly_once() {
    kev_tests::init_logs();
    let before = MachineState::read();
    let cluster = Cluster::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = cluster.node.client();
        let objects = kev_tests::manifests::render(&repo().join("tests/deploy/node"));
        let images: BTreeSet<&str> = objects
            .iter()
            .filter(|o| o["kind"] == "Deployment")
            .flat_map(|o| o["spec"]["template"]["spec"]["containers"].as_array().unwrap())
            .map(|c| c["image"].as_str().unwrap())
            .collect();
        assert_eq!(
            images,
            BTreeSet::from([
                format!("kev.local/kev-producer:{}", env!("CARGO_PKG_VERSION")).as_str(),
                format!("kev.local/kev-enricher:{}", env!("CARGO_PKG_VERSION")).as_str()
            ]),
            "the overlay names the images the harness builds"
        );
        let started = Instant::now();
        apply(&client, &objects).await;
        rolled_out(&client, "kev", "kev-producer", 2).await;
        rolled_out(&client, "kev", "kev-enricher", 2).await;
        println!("kev's pods Ready through their probes {:.1} s after the apply", started.elapsed().as_secs_f64());

        run_workload(&client).await;
        let expected = events_now(&cluster.node);
        let records = published(&cluster.producer_config(), &expected).await;

        // Exactly once: no version twice in the topic, and each version the apiserver holds
        // now equal to what it returns.
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
        for component in ["kubelet", "default-scheduler", "deployment-controller", "replicaset-controller"] {
            assert!(per_component.contains_key(component), "no event from {component}: {per_component:?}");
        }
    });
    drop(rt);
    drop(cluster);
    assert_eq!(MachineState::read(), before, "the machine is as it was before the node started");
}
