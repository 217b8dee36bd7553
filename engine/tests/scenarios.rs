//! Scenarios absent from the public dumps (OOMKilling, Evicted, NodeNotReady followed by
//! TaintManagerEviction, FailedAttachVolume). The events are built here field by field from the
//! Kubernetes API reference (core/v1 Event: involvedObject, reason, message, source, count,
//! firstTimestamp, lastTimestamp) with messages in the form the kubelet, the node lifecycle
//! controller and the attach/detach controller write; they are not recorded data.

use kev_engine::rules::RuleSet;
use kev_engine::{Engine, EngineConfig, Output};
use kev_schemas::{EventObject, EventObservation, Incident, IncidentStatus, Severity, WatchVerb};

struct Ev<'a> {
    kind: &'a str,
    name: &'a str,
    reason: &'a str,
    ty: &'a str,
    message: &'a str,
    host: &'a str,
    t: i64,
}

fn obs(i: usize, e: &Ev) -> EventObservation {
    let ns = if e.kind == "Node" { serde_json::Value::Null } else { serde_json::json!("shop") };
    let ts = kev_schemas::time::format_micros(1_700_000_000_000_000 + e.t * 1_000_000);
    let json = serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{}.{i}", e.name), "namespace": if e.kind == "Node" { "default" } else { "shop" },
                     "uid": format!("uid-{i}"), "resourceVersion": (1000 + i).to_string()},
        "involvedObject": {"kind": e.kind, "name": e.name, "namespace": ns},
        "reason": e.reason, "type": e.ty, "message": e.message,
        "source": {"component": "kubelet", "host": e.host},
        "count": 1, "firstTimestamp": ts, "lastTimestamp": ts
    });
    EventObservation::new(EventObject::from_json(json).unwrap(), WatchVerb::Added, 1, 0)
}

fn run(events: &[Ev]) -> (Vec<Incident>, Vec<Output>) {
    let mut engine = Engine::new(EngineConfig::default(), RuleSet::defaults());
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        engine.on_event("lab", obs(i, e), 0, i as i64, &mut out);
    }
    // An hour later, a heartbeat: quiet incidents resolve.
    let hb = kev_schemas::Heartbeat {
        producer_time: 1_700_000_000_000 + 3_600_000,
        event_time_high: None,
        resource_version: None,
        source: "test".into(),
        producer_id: "test".into(),
        recovery_offset: None,
    };
    engine.on_heartbeat("lab", &hb, &mut out);
    let incidents =
        out.iter().filter_map(|o| if let Output::Incident(i) = o { Some(i.clone()) } else { None }).collect();
    (incidents, out)
}

const POD: &str = "cart-7d4b9c8f6d-x2v9q";

#[test]
fn oom_on_a_node_explains_the_restarts_of_its_pods() {
    let (incidents, out) = run(&[
        Ev {
            kind: "Pod",
            name: POD,
            reason: "Scheduled",
            ty: "Normal",
            message: "Successfully assigned shop/cart-7d4b9c8f6d-x2v9q to node-7",
            host: "",
            t: 0,
        },
        Ev {
            kind: "Node",
            name: "node-7",
            reason: "OOMKilling",
            ty: "Warning",
            message: "Memory cgroup out of memory: Killed process 4242 (java) total-vm:4194304kB, anon-rss:2097152kB",
            host: "node-7",
            t: 60,
        },
        Ev {
            kind: "Pod",
            name: POD,
            reason: "BackOff",
            ty: "Warning",
            message: "Back-off restarting failed container cart in pod cart-7d4b9c8f6d-x2v9q_shop(0b1c)",
            host: "node-7",
            t: 90,
        },
        Ev {
            kind: "Pod",
            name: POD,
            reason: "BackOff",
            ty: "Warning",
            message: "Back-off restarting failed container cart in pod cart-7d4b9c8f6d-x2v9q_shop(0b1c)",
            host: "node-7",
            t: 150,
        },
    ]);
    let oom = incidents.iter().find(|i| i.rule == "oom-restarts").expect("an OOM incident");
    // One pod restarting for 90 s after an OOM on its node: an error, not yet an outage.
    assert_eq!(oom.severity, Severity::Error);
    assert!(oom.summary.contains("node node-7"), "{}", oom.summary);
    assert_eq!(oom.root_reason.as_deref(), Some("OOMKilling"));
    assert!(incidents.iter().any(|i| i.rule == "oom-restarts" && i.status == IncidentStatus::Resolved));
    let graded = out.iter().find_map(|o| match o {
        Output::Enriched(e) if e.reason.as_deref() == Some("OOMKilling") => Some(e.severity),
        _ => None,
    });
    assert_eq!(graded, Some(Severity::Critical));
}

#[test]
fn node_not_ready_then_taint_evictions_is_one_incident_on_the_node() {
    let mut events = vec![
        Ev {
            kind: "Pod",
            name: "web-1",
            reason: "Scheduled",
            ty: "Normal",
            message: "Successfully assigned shop/web-1 to node-3",
            host: "",
            t: 0,
        },
        Ev {
            kind: "Pod",
            name: "web-2",
            reason: "Scheduled",
            ty: "Normal",
            message: "Successfully assigned shop/web-2 to node-3",
            host: "",
            t: 0,
        },
        Ev {
            kind: "Node",
            name: "node-3",
            reason: "NodeNotReady",
            ty: "Normal",
            message: "Node node-3 status is now: NodeNotReady",
            host: "",
            t: 100,
        },
    ];
    for pod in ["web-1", "web-2"] {
        events.push(Ev {
            kind: "Pod",
            name: pod,
            reason: "TaintManagerEviction",
            ty: "Normal",
            message: "Marking for deletion Pod shop/web",
            host: "",
            t: 400,
        });
    }
    let (incidents, _) = run(&events);
    let ids: std::collections::BTreeSet<_> =
        incidents.iter().filter(|i| i.rule == "node-trouble-evictions").map(|i| i.incident_id.clone()).collect();
    assert_eq!(ids.len(), 1, "one incident for the node, not one per pod");
    let last = incidents.iter().rev().find(|i| i.rule == "node-trouble-evictions").unwrap();
    assert!(last.summary.contains("NodeNotReady on node node-3"), "{}", last.summary);
    assert!(last.summary.contains("2 pod(s)"), "{}", last.summary);
    assert_eq!(last.member_uids.len(), 3);
}

#[test]
fn failed_attach_volume_then_restarts() {
    let (incidents, _) = run(&[
        Ev { kind: "Pod", name: "db-0", reason: "FailedAttachVolume", ty: "Warning", message: "AttachVolume.Attach failed for volume \"pvc-4f2e\" : rpc error: code = DeadlineExceeded desc = context deadline exceeded (timeout)", host: "", t: 0 },
        Ev { kind: "Pod", name: "db-0", reason: "BackOff", ty: "Warning", message: "Back-off restarting failed container postgres in pod db-0_shop(77aa)", host: "node-1", t: 120 },
        Ev { kind: "Pod", name: "db-0", reason: "BackOff", ty: "Warning", message: "Back-off restarting failed container postgres in pod db-0_shop(77aa)", host: "node-1", t: 240 },
    ]);
    let inc = incidents.iter().rev().find(|i| i.rule == "volume-failure-restarts").expect("an incident");
    assert!(
        inc.summary
            .starts_with("FailedAttachVolume of volume pvc-4f2e (timeout) on pod db-0 preceded 2 (BackOff) within 4m"),
        "{}",
        inc.summary
    );
}

#[test]
fn evicted_is_graded_as_a_resource_error() {
    let (_, out) = run(&[Ev { kind: "Pod", name: "batch-1", reason: "Evicted", ty: "Warning", message: "The node was low on resource: memory. Container worker was using 1843552Ki, which exceeds its request of 512Mi.", host: "node-2", t: 0 }]);
    let e = out.iter().find_map(|o| if let Output::Enriched(e) = o { Some(e) } else { None }).unwrap();
    assert_eq!((e.severity, e.category.as_str()), (Severity::Error, "resources"));
}

#[test]
fn backoff_escalates_to_error_when_it_repeats() {
    let events: Vec<Ev> = (0..6)
        .map(|i| Ev {
            kind: "Pod",
            name: POD,
            reason: "BackOff",
            ty: "Warning",
            message: "Back-off restarting failed container cart in pod x",
            host: "n",
            t: i * 60,
        })
        .collect();
    let (_, out) = run(&events);
    let severities: Vec<Severity> =
        out.iter().filter_map(|o| if let Output::Enriched(e) = o { Some(e.severity) } else { None }).collect();
    assert_eq!(severities[..4], [Severity::Warning; 4]);
    assert_eq!(severities[4..], [Severity::Error; 2], "the fifth BackOff within 10 minutes is an error");
}
