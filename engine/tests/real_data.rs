//! The engine over the real events of `tests/data/k8s-events`: every reason gets a deliberate
//! category, aggregation compresses, and the output is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use kev_engine::engine::fingerprint;
use kev_engine::rules::RuleSet;
use kev_engine::{Engine, EngineConfig, Output};
use kev_schemas::EventObservation;

fn observations() -> Vec<(String, EventObservation)> {
    kev_tests::data::observations()
}

/// Reasons in the data that are deliberately left in "other": events without a reason.
const DELIBERATELY_OTHER: [&str; 2] = ["", "Status upgrade"];

#[test]
fn every_reason_in_the_data_has_a_deliberate_category() {
    let rules = RuleSet::defaults();
    let mut other = BTreeSet::new();
    let mut by_category: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, o) in observations() {
        let reason = o.normalized.reason.clone().unwrap_or_default();
        match rules.first_match(&o.normalized) {
            Some(i) => {
                by_category.entry(rules.rules[i].category.clone()).or_default().insert(reason);
            }
            None => {
                other.insert(reason);
            }
        }
    }
    let unexpected: Vec<_> = other.iter().filter(|r| !DELIBERATELY_OTHER.contains(&r.as_str())).collect();
    assert!(unexpected.is_empty(), "reasons without a rule: {unexpected:?}");
    for (c, reasons) in &by_category {
        println!("{c}: {} reasons", reasons.len());
    }
}

fn run(config: EngineConfig, input: &[(String, EventObservation)]) -> Vec<Output> {
    let mut engine = Engine::new(config, RuleSet::defaults());
    let mut out = Vec::new();
    for (i, (cluster, o)) in input.iter().enumerate() {
        engine.on_event(cluster, o.clone(), 0, i as i64, &mut out);
    }
    engine.flush(&mut out);
    out
}

#[test]
fn aggregation_compresses_the_real_dumps_and_is_deterministic() {
    let input = observations();
    let out = run(EngineConfig::default(), &input);
    let enriched = out.iter().filter(|o| matches!(o, Output::Enriched(_))).count();
    let aggregates: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Aggregate(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(enriched, input.len());
    let occurrences: i64 = input.iter().map(|(_, o)| o.new_occurrences).sum();
    // Every occurrence lands in exactly one window, late or not.
    let mut finals: BTreeMap<(String, String, i64), &kev_schemas::Aggregate> = BTreeMap::new();
    for a in &aggregates {
        finals.insert((a.cluster.clone(), a.fingerprint.clone(), a.window_start), a);
    }
    let counted: i64 = finals.values().map(|a| a.count).sum();
    assert_eq!(counted, occurrences, "aggregates carry every occurrence");
    let ratio = input.len() as f64 / finals.len() as f64;
    println!(
        "{} raw events ({occurrences} occurrences) -> {} aggregate records ({} distinct windows): {ratio:.1}x fewer records",
        input.len(),
        aggregates.len(),
        finals.len()
    );
    assert!(finals.len() < input.len(), "fewer aggregates than events");
    assert_eq!(out, run(EngineConfig::default(), &input), "same input, same output");
}

#[test]
fn backoff_pods_of_one_replicaset_share_a_fingerprint_in_sbctl() {
    let input: Vec<_> = observations().into_iter().filter(|(c, _)| c == "sbctl").collect();
    let out = run(EngineConfig::default(), &input);
    let backoff: BTreeSet<String> = out
        .iter()
        .filter_map(|o| match o {
            Output::Enriched(e) if e.reason.as_deref() == Some("BackOff") => Some(e.fingerprint.clone()),
            _ => None,
        })
        .collect();
    let pods: BTreeSet<String> = input
        .iter()
        .filter(|(_, o)| o.normalized.reason.as_deref() == Some("BackOff"))
        .filter_map(|(_, o)| o.normalized.regarding.as_ref().and_then(|r| r.name.clone()))
        .collect();
    println!("sbctl BackOff: {} pods, {} fingerprints", pods.len(), backoff.len());
    assert!(!pods.is_empty());
    assert!(backoff.len() < pods.len() || pods.len() == 1, "pods {pods:?} fingerprints {backoff:?}");
}

#[test]
fn fingerprint_is_stable_across_builds() {
    // A change here changes every fingerprint users have stored: it must be deliberate.
    assert_eq!(fingerprint("c", "ns", "Pod", "BackOff", "Back-off restarting failed container"), "3b09580eb34bd979");
    assert_ne!(fingerprint("c", "ns", "Pod", "BackOff", "x"), fingerprint("c", "ns2", "Pod", "BackOff", "x"));
}

/// Incidents per cluster (dump) over the real data: the final record of each incident id.
fn incidents(input: &[(String, EventObservation)]) -> BTreeMap<String, kev_schemas::Incident> {
    let mut engine = Engine::new(EngineConfig::default(), RuleSet::defaults());
    let mut out = Vec::new();
    for (i, (cluster, o)) in input.iter().enumerate() {
        engine.on_event(cluster, o.clone(), 0, i as i64, &mut out);
    }
    let mut last = BTreeMap::new();
    for o in out {
        if let Output::Incident(inc) = o {
            last.insert(inc.incident_id.clone(), inc);
        }
    }
    last
}

#[test]
fn incidents_found_in_the_real_dumps() {
    let found = incidents(&observations());
    let mut by_rule: BTreeMap<(String, String), usize> = BTreeMap::new();
    for inc in found.values() {
        *by_rule.entry((inc.cluster.clone(), inc.rule.clone())).or_default() += 1;
    }
    for ((cluster, rule), n) in &by_rule {
        println!("{cluster}: {n} x {rule}");
    }
    for inc in found.values() {
        println!("  [{}] {:?} {:?} {}", inc.cluster, inc.status, inc.severity, inc.summary);
    }
    let find = |cluster: &str, rule: &str, text: &str| {
        found.values().any(|i| i.cluster == cluster && i.rule == rule && i.summary.contains(text))
    };
    // Chains present in the data, looked up by hand in the dumps:
    // several controller-manager pods failing to mount the missing ConfigMap client-ca,
    assert!(find("openshift-azure", "missing-secret-or-configmap", "ConfigMap client-ca is missing"));
    assert!(find("openshift-aws", "missing-secret-or-configmap", "Secret serving-cert is missing"));
    // failing readiness probes on the openshift-apiserver pods, then Killing,
    assert!(find("openshift-aws", "probe-failure-restarts", "failing probes on pod apiserver-"));
    // FailedMount timeouts followed by restarts,
    assert!(find("openshift-azure", "volume-failure-restarts", "FailedMount of volume"));
    // an image that does not exist, then BackOff, and pods waiting for a GPU.
    assert!(find("troubleshoot", "image-pull-failure", "no-image-deployment"));
    assert!(find("troubleshoot", "unschedulable-workload", "pending-pod-resources"));
    // One incident per missing object, not one per pod.
    let client_ca: Vec<_> = found
        .values()
        .filter(|i| i.cluster == "openshift-azure" && i.summary.starts_with("ConfigMap client-ca is missing"))
        .collect();
    assert_eq!(client_ca.len(), 1, "{client_ca:?}");
    assert!(client_ca[0].scope.len() >= 3, "the incident scopes every pod that failed");
    println!("{} incidents on the real dumps", found.len());
}

/// Every incident summary of the shared dumps reads whole: brackets and quotes closed, a cut
/// only at a word boundary and marked with an ellipsis, every pod it names spelled in full.
#[test]
fn every_incident_summary_reads_whole() {
    let found = incidents(&observations());
    assert!(found.len() > 40, "{} incidents", found.len());
    let mut cut = 0;
    for inc in found.values() {
        let s = &inc.summary;
        assert_eq!(s.matches('"').count() % 2, 0, "an open quote: {s}");
        for (open, close) in [('(', ')'), ('[', ']'), ('{', '}')] {
            assert_eq!(s.matches(open).count(), s.matches(close).count(), "an unclosed {open}: {s}");
        }
        for (at, _) in s.match_indices('…') {
            cut += 1;
            let word = s[..at].rsplit(char::is_whitespace).next().unwrap();
            assert!(!word.is_empty(), "a cut after a space: {s}");
            // The word before the cut is no object's name cut short.
            for r in &inc.scope {
                let name = r.name.as_deref().unwrap_or_default();
                assert!(!(name.len() > word.len() && name.starts_with(word)), "{name} is cut in: {s}");
            }
        }
    }
    println!("{} incident summaries, {cut} of them shortened at a word boundary", found.len());
    assert!(cut > 0, "the dumps hold long messages, so some summary is shortened");
}

/// Severity follows impact: the shared dumps' incidents spread over more than one grade, and
/// the higher a grade, the wider (pods) and longer (span) its incidents are in the median.
#[test]
fn incidents_are_graded_by_impact() {
    use kev_schemas::Severity;
    let found = incidents(&observations());
    let mut by: BTreeMap<Severity, Vec<(usize, i64)>> = BTreeMap::new();
    for i in found.values() {
        let pods = i.scope.iter().filter(|r| r.kind.as_deref() == Some("Pod")).count();
        by.entry(i.severity).or_default().push((pods, i.updated_at - i.opened_at));
    }
    let median = |mut v: Vec<i64>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut last: Option<(Severity, i64, i64)> = None;
    for (s, v) in &by {
        let pods = median(v.iter().map(|(p, _)| *p as i64).collect());
        let span = median(v.iter().map(|(_, t)| *t).collect());
        println!("{s:?}: {} incidents, median {pods} pod(s) over {} s", v.len(), span / 1_000_000);
        if let Some((was, p, t)) = last {
            assert!(
                pods >= p && span >= t,
                "{s:?} (median {pods} pods, {span} us) is narrower or shorter than {was:?}"
            );
        }
        last = Some((*s, pods, span));
    }
    assert!(by.len() >= 2, "one grade for every incident: {:?}", by.keys().collect::<Vec<_>>());
    assert!(!by.contains_key(&Severity::Info), "a correlated fault is at least a warning");
}

/// A healthy trace (the dumps' Normal events of a running workload: scheduled, pulled,
/// created, started) opens no incident.
#[test]
fn a_trace_of_healthy_normal_events_opens_no_incident() {
    let healthy: Vec<_> =
        observations().into_iter().filter(|(_, o)| o.normalized.type_.as_deref() == Some("Normal")).collect();
    let reasons: BTreeSet<String> = healthy.iter().filter_map(|(_, o)| o.normalized.reason.clone()).collect();
    let found = incidents(&healthy);
    for i in found.values() {
        println!("  from Normal events: [{}] {:?} {}", i.cluster, i.rule, i.summary);
    }
    println!("{} Normal events of {} reasons: {} incidents", healthy.len(), reasons.len(), found.len());
    assert!(healthy.len() > 1000);
    assert!(found.is_empty());
}
