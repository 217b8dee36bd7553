//! The engine over the real events of `tests/data/k8s-events`: every reason gets a deliberate
//! category, aggregation compresses, and the output is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use kev_engine::engine::fingerprint;
use kev_engine::review;
use kev_engine::rules::RuleSet;
use kev_engine::{Engine, EngineConfig, Output};
use kev_schemas::{EventObservation, Incident};

mod common;
use common::incidents_of;

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

/// Incidents over the real data: the final record of each incident id, without those merged
/// into another.
fn incidents(input: &[(String, EventObservation)]) -> BTreeMap<String, Incident> {
    incidents_of(&mut Engine::new(EngineConfig::default(), RuleSet::defaults()), input)
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
    // A chain is found when an incident has the rule among its contributing rules and names the
    // text in its summary, causal chain or objects.
    let find = |cluster: &str, rule: &str, text: &str| {
        found.values().any(|i| {
            let rules = i.contributing_rules.as_deref().unwrap_or_default();
            let names = i.scope.iter().filter_map(|r| r.name.as_deref());
            i.cluster == cluster
                && rules.iter().any(|r| r == rule)
                && (i.summary.contains(text)
                    || i.causal_chain.as_deref().unwrap_or("").contains(text)
                    || names.into_iter().any(|n| n.contains(text)))
        })
    };
    // Chains present in the data, looked up by hand in the dumps:
    // several controller-manager pods failing to mount the missing ConfigMap client-ca,
    assert!(find("openshift-azure", "missing-secret-or-configmap", "ConfigMap client-ca is missing"));
    assert!(find("openshift-aws", "missing-secret-or-configmap", "missing Secret serving-cert"));
    // failing readiness probes on the openshift-apiserver pods, then Killing,
    assert!(find("openshift-aws", "probe-failure-restarts", "apiserver-"));
    // FailedMount timeouts followed by restarts,
    assert!(find("openshift-azure", "volume-failure-restarts", "FailedMount of volume"));
    // an image that does not exist, then BackOff, and pods waiting for a GPU.
    assert!(find("troubleshoot", "image-pull-failure", "no-image-deployment"));
    assert!(find("troubleshoot", "unschedulable-workload", "pending-pod-resources"));
    // Failures that went on: velero crash-looping for 20 minutes, a hostPath volume that
    // never mounted.
    assert!(find("sbctl", "crash-loop", "velero-"));
    assert!(find("troubleshoot", "persistent-mount-failure", "troubleshootvgknq-fxscx"));
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

/// The chains kev found before it merged one root cause's matches (71 incidents, listed in
/// `data/chains-before-merging.tsv`), read as (cluster, rule, root, member uids).
fn chains_before_merging() -> Vec<(String, String, String, Vec<String>)> {
    include_str!("data/chains-before-merging.tsv")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].into(), f[1].into(), f[2].into(), f[3].split(',').map(String::from).collect())
        })
        .collect()
}

/// One root cause, one incident: on the shared dumps no incident lies wholly inside another of
/// the same cluster and time, the cases a person saw twice are one incident each, and there
/// are fewer incidents than chains.
#[test]
fn one_incident_per_root_cause() {
    let found = incidents(&observations());
    let standing: Vec<&Incident> = found.values().collect();
    let nested = review::nested(&standing);
    let before = chains_before_merging();
    println!("{} chains before merging, {} incidents now; nested: {}", before.len(), found.len(), nested.len());
    for (inner, outer) in &nested {
        println!("  {} inside {}: {} / {}", inner, outer, found[*inner].summary, found[*outer].summary);
    }
    assert_eq!(nested.len(), 0, "incidents inside another of the same cluster and time");
    // The chains were listed before the rules for failures that go on (crash loops, stuck
    // mounts) were added: those rules' incidents are new, not chains merged.
    let added_since = ["persistent-mount-failure", "crash-loop"];
    let of_listed_rules = found.values().filter(|i| !added_since.contains(&i.rule.as_str())).count();
    assert!(of_listed_rules < before.len() * 3 / 4, "{of_listed_rules} incidents of {} chains", before.len());
    let with = |pod: &str| -> Vec<&Incident> {
        found.values().filter(|i| i.scope.iter().any(|r| r.name.as_deref() == Some(pod))).collect()
    };
    // The missing Secret etcd-client and each pod's mount failure and probe failures: one.
    let etcd = with("etcd-quorum-guard-586dd88c9-pv69x");
    assert_eq!(etcd.len(), 1, "{etcd:#?}");
    let chain = etcd[0].causal_chain.as_deref().unwrap();
    assert!(chain.contains("missing Secret etcd-client") && chain.contains("Unhealthy x"), "{chain}");
    assert_eq!(etcd[0].rule, "missing-secret-or-configmap");
    assert_eq!(
        etcd[0].contributing_rules.as_deref().unwrap(),
        ["missing-secret-or-configmap", "volume-failure-restarts"]
    );
    // ConfigMap client-ca and Secret serving-cert, missing for the same pods at the same time.
    for cluster in ["openshift-aws", "openshift-azure"] {
        let cm: Vec<_> = found
            .values()
            .filter(|i| {
                i.cluster == cluster && i.causal_chain.as_deref().unwrap().contains("missing ConfigMap client-ca")
            })
            .collect();
        assert_eq!(cm.len(), 1, "{cluster}: {cm:#?}");
        assert!(cm[0].causal_chain.as_deref().unwrap().contains("missing Secret serving-cert"), "{cm:#?}");
    }
    // One pod's volume failure and failing probes, one episode.
    let episode = with("apiserver-65fdcd8694-ztz4k");
    assert_eq!(episode.len(), 1, "{episode:#?}");
    let rules = episode[0].contributing_rules.as_deref().unwrap();
    assert!(
        rules.iter().any(|r| r == "volume-failure-restarts") && rules.iter().any(|r| r == "probe-failure-restarts")
    );
}

/// Every chain found before merging is still in one incident: none of what was found is lost.
#[test]
fn every_chain_found_before_merging_is_still_covered() {
    let found = incidents(&observations());
    let before = chains_before_merging();
    assert_eq!(before.len(), 71);
    for (cluster, rule, root, uids) in &before {
        let covering = found.values().find(|i| {
            let members: BTreeSet<&str> = i.member_uids.iter().map(String::as_str).collect();
            i.cluster == *cluster && uids.iter().all(|u| members.contains(u.as_str()))
        });
        let Some(i) = covering else { panic!("{cluster} {rule} on {root}: no incident has its {} events", uids.len()) };
        assert!(i.contributing_rules.as_deref().unwrap().contains(rule), "{rule} on {root} is in {i:#?}");
    }
}

/// The dumps again a day later in event time, with new event uids and new pod names (the
/// hashes of ReplicaSet pods changed, as after a restart): every incident of the second pass
/// names its first-pass twin, the incident with the same signature, and says so in its summary.
#[test]
fn a_fault_seen_again_a_day_later_names_its_first_time() {
    let first = observations();
    // Each dump moved by whole days past its own span (a day for the openshift dumps, which
    // span an hour; the support bundles span years), and the history kept as long.
    const DAY: i64 = 86_400_000_000;
    let mut span: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (c, o) in &first {
        let t = o.normalized.event_time;
        let e = span.entry(c).or_insert((t, t));
        *e = (e.0.min(t), e.1.max(t));
    }
    let shift: BTreeMap<String, i64> =
        span.iter().map(|(c, (lo, hi))| (c.to_string(), ((hi - lo) / DAY + 1) * DAY)).collect();
    let second: Vec<(String, EventObservation)> =
        first.iter().map(|(c, o)| (c.clone(), a_day_later(o, shift[c]))).collect();
    let renamed = first
        .iter()
        .zip(&second)
        .filter(|((_, a), (_, b))| {
            a.normalized.regarding.as_ref().map(|r| &r.name) != b.normalized.regarding.as_ref().map(|r| &r.name)
        })
        .count();
    assert!(renamed > 1000, "{renamed} events about renamed pods");

    let cfg = EngineConfig { incident_history_days: 36_500, ..EngineConfig::default() };
    let mut engine = Engine::new(cfg, RuleSet::defaults());
    let was = incidents_of(&mut engine, &first);
    let again = incidents_of(&mut engine, &second);
    let again: BTreeMap<_, _> = again.into_iter().filter(|(id, _)| !was.contains_key(id)).collect();
    assert_eq!(again.len(), was.len(), "the same faults, found again");
    for i in was.values() {
        assert_eq!(i.previous_count, Some(0), "a first time: {i:#?}");
    }
    for i in again.values() {
        let twin = i.last_incident_id.as_deref().and_then(|id| was.get(id));
        let Some(twin) = twin else { panic!("no first-pass twin named by {i:#?}") };
        assert_eq!(twin.signature, i.signature);
        assert!(i.previous_count >= Some(1) && i.first_seen.is_some() && i.first_seen <= i.last_seen, "{i:#?}");
        assert!(i.last_seen < Some(i.opened_at), "{i:#?}");
        assert!(i.summary.contains(" time since "), "{}", i.summary);
    }
    println!("{} incidents again a day later, each naming its first-pass twin", again.len());
}

/// An event `shift` later, with a new uid and, for a pod of a ReplicaSet, DaemonSet or Job, a
/// new name: each letter of its five-character suffix moved along the alphabet Kubernetes
/// draws them from (in its messages too).
fn a_day_later(o: &EventObservation, shift: i64) -> EventObservation {
    let mut o = o.clone();
    o.uid.push_str("-2");
    let n = &mut o.normalized;
    n.event_time += shift;
    n.first_time = n.first_time.map(|t| t + shift);
    let rename = |name: &str| -> Option<String> {
        let (stem, suffix) = name.rsplit_once('-')?;
        let alphabet = "bcdfghjklmnpqrstvwxz2456789";
        let turned: Option<String> =
            suffix.chars().map(|c| alphabet.find(c).map(|i| alphabet.as_bytes()[(i + 7) % 27] as char)).collect();
        turned.filter(|t| t.len() == 5).map(|t| format!("{stem}-{t}"))
    };
    if let Some(r) = n.regarding.as_mut().filter(|r| r.kind.as_deref() == Some("Pod")) {
        if let Some(new) = r.name.as_deref().and_then(rename) {
            let old = r.name.replace(new.clone()).unwrap();
            n.note = n.note.as_ref().map(|m| m.replace(&old, &new));
            r.uid = r.uid.as_ref().map(|u| format!("{u}-2"));
        }
    }
    o
}

/// What a person reads of the shared dumps: the incidents, plus the recurring warning
/// aggregates whose fingerprint no incident explains. The target is 5 per 1,000 raw events;
/// the dumps (two OpenShift installs and a collection of support bundles) hold about 180
/// fingerprints of warning traffic no incident explains (installer and operator warnings,
/// install-time races that cleared within a minute), which alone are 12.8 per 1,000: the
/// target is missed, and this holds the figure where merging and the rules for failures that
/// go on brought it (from 19.0 with the 71 incidents before, to 17.3).
#[test]
fn records_to_read_per_thousand_events() {
    let input = observations();
    let out = run(EngineConfig::default(), &input);
    let (mut incidents, mut aggregates, mut enriched) = (Vec::new(), Vec::new(), Vec::new());
    for o in &out {
        match o {
            Output::Incident(i) => incidents.push(i),
            Output::Aggregate(a) => aggregates.push(a),
            Output::Enriched(e) => enriched.push(e),
        }
    }
    let r = review::reading(
        incidents.iter().copied(),
        aggregates.iter().copied(),
        enriched.iter().copied(),
        input.len() as u64,
    );
    println!(
        "{:.2} records to read per 1,000 raw events: {} incidents + {} recurring warnings outside them, of {} events",
        r.per_thousand(),
        r.incidents,
        r.loose_fingerprints,
        r.raw_events
    );
    // What the loose fingerprints are, by kind and reason of the object they are about.
    let loose = review::loose(incidents.iter().copied(), aggregates.iter().copied(), enriched.iter().copied());
    let mut by_reason: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for a in loose.values() {
        *by_reason.entry((a.kind.as_deref().unwrap_or(""), a.reason.as_deref().unwrap_or(""))).or_default() += 1;
    }
    let mut by_reason: Vec<_> = by_reason.into_iter().collect();
    by_reason.sort_by_key(|(k, n)| (std::cmp::Reverse(*n), *k));
    for ((kind, reason), n) in by_reason.iter().take(12) {
        println!("  {n:>4} loose fingerprints of {kind}/{reason}");
    }
    assert_eq!(loose.len(), r.loose_fingerprints);
    let before = (chains_before_merging().len() + r.loose_fingerprints) as f64 * 1000.0 / r.raw_events as f64;
    println!("before merging: {before:.2} per 1,000");
    assert!(r.incidents < chains_before_merging().len() && r.per_thousand() < 18.0, "{r:?}");
}
