//! The engine over events real components emitted on the tests' real node
//! (`tests/data/kev-node`: the kubelet, scheduler, controllers and kube-proxy of v1.35.8, in the
//! events.k8s.io/v1 shape the producer publishes).

use std::collections::BTreeMap;

use kev_engine::rules::RuleSet;
use kev_engine::{Engine, EngineConfig};
use kev_schemas::{EventObservation, Incident};

mod common;
use common::incidents_of;

/// One capture's events (`tests/data/kev-node/<capture>.jsonl.gz`, named in each event's
/// `_source.locator`) as observations, the capture's name as their cluster, in event-time order.
fn observations(capture: &str) -> Vec<(String, EventObservation)> {
    let mut obs: Vec<EventObservation> = kev_tests::data::objects_in(&kev_tests::data::node_dir())
        .into_iter()
        .filter(|v| v["_source"]["locator"].as_str().is_some_and(|l| l.starts_with(&format!("{capture}/"))))
        .map(|v| {
            let obj = kev_schemas::EventObject::from_json(v).unwrap();
            let count = kev_schemas::normalize::normalize(&obj).count;
            EventObservation::new(obj, kev_schemas::WatchVerb::Added, count, 0)
        })
        .collect();
    assert!(!obs.is_empty(), "no events of {capture}");
    obs.sort_by_key(|o| (o.normalized.event_time, o.uid.clone()));
    obs.into_iter().map(|o| (capture.to_string(), o)).collect()
}

fn incidents(input: &[(String, EventObservation)]) -> BTreeMap<String, Incident> {
    incidents_of(&mut Engine::new(EngineConfig::default(), RuleSet::defaults()), input)
}

/// Every reason the real node's components emitted meets a rule of its own: none falls to
/// "other" (the kubelet's CgroupV1 notice did, until it had one).
#[test]
fn every_reason_the_real_node_emitted_has_a_deliberate_category() {
    let rules = RuleSet::defaults();
    let mut uncategorised = Vec::new();
    let mut reasons = std::collections::BTreeSet::new();
    for capture in CAPTURES {
        for (_, o) in observations(capture) {
            let reason = o.normalized.reason.clone().unwrap_or_default();
            if rules.first_match(&o.normalized).is_none() {
                uncategorised.push(reason.clone());
            }
            reasons.insert(reason);
        }
    }
    println!("{} reasons on the real node: {reasons:?}", reasons.len());
    assert!(reasons.len() >= 15, "{reasons:?}");
    assert!(uncategorised.is_empty(), "reasons without a rule: {uncategorised:?}");
}

/// A Deployment deployed, scaled, rolled and deleted twice over (namespaces `shop` and
/// `shop-2`) opens no incident about its pods, whose readiness probes fail while they start.
/// The capture also holds the producer's leader pod force-deleted after a readiness failure at
/// its start: `probe-failure-restarts` takes the deletion's Killing ("Stopping container") for
/// a restart the probe caused, a false incident left to the fault suite of issue 31 (narrowing
/// the rule changes the incidents of the public dumps too).
#[test]
fn healthy_rollouts_on_the_real_node_open_no_incident() {
    let found = incidents(&observations("rollout-and-leader-kills"));
    for i in found.values() {
        println!("  [{}] {:?} {:?} {}", i.cluster, i.rule, i.severity, i.summary);
    }
    let in_shop = |r: &kev_schemas::ResourceRef| r.namespace.as_deref().is_some_and(|ns| ns.starts_with("shop"));
    let about_the_workload: Vec<_> =
        found.values().filter(|i| i.root_cause.as_ref().is_some_and(in_shop) || i.scope.iter().any(in_shop)).collect();
    assert!(about_the_workload.is_empty(), "{about_the_workload:#?}");
}

/// A container restarted twice within 20 s: the kubelet's one BackOff is below the
/// crash-loop rule's five occurrences, so no incident yet, and the healthy Deployment beside it
/// (probes passing) opens none either.
#[test]
fn two_restarts_on_the_real_node_are_not_yet_a_crash_loop() {
    let input = observations("probes-and-a-crashing-container");
    let backoffs = input.iter().filter(|(_, o)| o.normalized.reason.as_deref() == Some("BackOff")).count();
    assert!(backoffs >= 1, "the kubelet's BackOff is in the capture");
    let found = incidents(&input);
    assert!(found.is_empty(), "{:#?}", found.values().collect::<Vec<_>>());
}

const CAPTURES: [&str; 2] = ["rollout-and-leader-kills", "probes-and-a-crashing-container"];
