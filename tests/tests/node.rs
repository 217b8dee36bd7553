//! A real node: kubelet, containerd, runc and CNI with the control plane, in a sandbox of the
//! tests' own (`kev_tests::node`). It runs a Deployment of an image built here with its probes
//! passing, restarts a container that exits, and leaves the machine as it found it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kev_tests::node::{MachineState, Node, NODE_NAME};
use kev_tests::wait::until;
use kev_tests::workloads;
use kube::api::{ListParams, PostParams};
use kube::Api;
use serde_json::json;

const NS: &str = "node-test";

#[test]
fn a_node_runs_pods_and_leaves_the_machine_as_found() {
    kev_tests::init_logs();
    let before = MachineState::read();
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::start(tmp.path(), &[workloads::busybox_image()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = node.client();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap())
            .await
            .unwrap();

        // A Deployment whose readiness and liveness probes ask its own HTTP server.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
        let web = workloads::web(1);
        deployments.create(&PostParams::default(), &serde_json::from_value(web).unwrap()).await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        let web_pod = until(
            "the Deployment's pod Ready through its probes",
            Duration::from_secs(120),
            || async {
                let d = deployments.get("web").await.ok()?;
                (d.status?.available_replicas? == 1).then_some(())?;
                let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
                list.items.into_iter().find(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
            },
            async || node.log("kubelet"),
        )
        .await;
        let status = web_pod.status.as_ref().unwrap();
        assert_eq!(web_pod.spec.as_ref().unwrap().node_name.as_deref(), Some(NODE_NAME));
        let ip = status.pod_ip.as_deref().unwrap();
        assert!(ip.starts_with("10.244.0."), "the pod's address comes from the CNI range: {ip}");
        let container = &status.container_statuses.as_ref().unwrap()[0];
        assert!(container.ready && container.restart_count == 0, "probes pass, no restart: {container:?}");

        // A pod whose container exits: the kubelet restarts it, backing off.
        pods.create(&PostParams::default(), &serde_json::from_value(workloads::failing_pod("crasher")).unwrap())
            .await
            .unwrap();
        let restarted = until(
            "the exiting container restarted twice",
            Duration::from_secs(120),
            || async {
                let p = pods.get("crasher").await.ok()?;
                let c = p.status?.container_statuses?.into_iter().next()?;
                (c.restart_count >= 2).then_some(c)
            },
            async || node.log("kubelet"),
        )
        .await;
        let last = restarted.last_state.as_ref().and_then(|s| s.terminated.as_ref()).expect("a terminated last state");
        assert_eq!(last.exit_code, 3, "{restarted:?}");

        // What the components said about it, as Events: the scheduler, the kubelet.
        let events: Api<Event> = Api::namespaced(client.clone(), NS);
        let said = until(
            "the kubelet's BackOff event for the crashing pod",
            Duration::from_secs(60),
            || async {
                let list = events.list(&ListParams::default()).await.ok()?;
                let about = |name: &str, reason: &str| {
                    list.items
                        .iter()
                        .any(|e| e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason))
                };
                about("crasher", "BackOff").then_some(list.items)
            },
            async || node.log("kubelet"),
        )
        .await;
        let from = |component: &str, reason: &str| {
            said.iter().any(|e| {
                e.reason.as_deref() == Some(reason)
                    && (e.source.as_ref().and_then(|s| s.component.as_deref()) == Some(component)
                        || e.reporting_component.as_deref() == Some(component))
            })
        };
        assert!(from("default-scheduler", "Scheduled"), "the scheduler's Scheduled event");
        assert!(from("kubelet", "Started"), "the kubelet's Started event");
        assert!(from("deployment-controller", "ScalingReplicaSet"), "the controller-manager's event");
    });
    kev_tests::data::capture(
        "probes-and-a-crashing-container",
        "tests/tests/node.rs::a_node_runs_pods_and_leaves_the_machine_as_found",
        &node.events(),
    );
    drop(rt);
    drop(node);
    assert_eq!(MachineState::read(), before, "the machine is as it was before the node started");
}
