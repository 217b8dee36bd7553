//! Properties of the engine: reordering within the allowed lateness does not change the final
//! aggregates, and cutting the input anywhere, saving the state and restoring it gives exactly
//! the output of an uncut run.

use std::collections::BTreeMap;

use kev_engine::engine::EngineState;
use kev_engine::rules::RuleSet;
use kev_engine::{Engine, EngineConfig, Output};
use kev_schemas::{EventObject, EventObservation, WatchVerb};
use proptest::prelude::*;

const REASONS: [(&str, &str, &str); 4] = [
    ("BackOff", "Warning", "Back-off restarting failed container app in pod web-7d4b9c8f6d-x2v9q_prod(3f1e2d4c-1111-2222-3333-444455556666)"),
    ("Unhealthy", "Warning", "Readiness probe failed: HTTP probe failed with statuscode: 503"),
    ("Pulled", "Normal", r#"Container image \"nginx:1.25\" already present on machine"#),
    ("FailedScheduling", "Warning", "0/3 nodes are available: 3 Insufficient cpu."),
];

/// An observation built field by field from the core/v1 Event reference (not from a dump).
fn observation(i: usize, pod: u8, reason: usize, t_s: i64, count: i64) -> EventObservation {
    let (reason, ty, message) = REASONS[reason];
    let json = format!(
        r#"{{"apiVersion":"v1","kind":"Event","metadata":{{"name":"e{i}","namespace":"prod","uid":"u{i}","resourceVersion":"{i}"}},
            "involvedObject":{{"kind":"Pod","namespace":"prod","name":"web-{pod}"}},"reason":"{reason}","type":"{ty}",
            "message":"{message}","count":{count},"lastTimestamp":"{}"}}"#,
        kev_schemas::time::format_micros(1_700_000_000_000_000 + t_s * 1_000_000)
    );
    let obj = EventObject::from_json(serde_json::from_str(&json).unwrap()).unwrap();
    EventObservation::new(obj, WatchVerb::Added, count, 0)
}

fn config() -> EngineConfig {
    EngineConfig { top_objects: 3, ..EngineConfig::default() }
}

/// Final value of each aggregate key, as a compacted topic would hold it.
fn finals(out: &[Output]) -> BTreeMap<(String, i64), (i64, i64, i64, i64)> {
    let mut m = BTreeMap::new();
    for o in out {
        if let Output::Aggregate(a) = o {
            m.insert((a.fingerprint.clone(), a.window_start), (a.count, a.distinct_objects, a.first_seen, a.last_seen));
        }
    }
    m
}

fn run(input: &[EventObservation]) -> Vec<Output> {
    let mut e = Engine::new(config(), RuleSet::defaults());
    let mut out = Vec::new();
    for (i, o) in input.iter().enumerate() {
        e.on_event("c", o.clone(), 0, i as i64, &mut out);
    }
    e.flush(&mut out);
    out
}

fn events() -> impl Strategy<Value = Vec<(u8, usize, i64, i64)>> {
    // (pod, reason, seconds, count): up to 80 events over 10 minutes.
    proptest::collection::vec((0u8..4, 0usize..4, 0i64..600, 1i64..4), 1..80)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn reordering_within_the_lateness_keeps_the_final_aggregates(raw in events(), seed in any::<u64>()) {
        let mut sorted: Vec<_> = raw.iter().enumerate().map(|(i, (p, r, t, c))| observation(i, *p, *r, *t, *c)).collect();
        sorted.sort_by_key(|o| o.normalized.event_time);
        // Swap neighbours whose times differ by less than the allowed lateness (30 s).
        let mut shuffled = sorted.clone();
        let mut x = seed;
        for i in 1..shuffled.len() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let close = shuffled[i].normalized.event_time - shuffled[i - 1].normalized.event_time < 20_000_000;
            if x >> 63 == 1 && close {
                shuffled.swap(i, i - 1);
            }
        }
        prop_assert_eq!(finals(&run(&sorted)), finals(&run(&shuffled)));
    }

    #[test]
    fn cut_save_restore_continue_equals_an_uncut_run(raw in events(), cut in any::<prop::sample::Index>()) {
        let mut input: Vec<_> = raw.iter().enumerate().map(|(i, (p, r, t, c))| observation(i, *p, *r, *t, *c)).collect();
        input.sort_by_key(|o| o.normalized.event_time);
        let whole = run(&input);
        let at = cut.index(input.len() + 1);
        let mut first = Engine::new(config(), RuleSet::defaults());
        let mut out = Vec::new();
        for (i, o) in input[..at].iter().enumerate() {
            first.on_event("c", o.clone(), 0, i as i64, &mut out);
        }
        let saved = serde_json::to_string(first.state()).unwrap();
        drop(first);
        let state: EngineState = serde_json::from_str(&saved).unwrap();
        let mut second = Engine::restore(config(), RuleSet::defaults(), state);
        for (i, o) in input[at..].iter().enumerate() {
            second.on_event("c", o.clone(), 0, (at + i) as i64, &mut out);
        }
        second.flush(&mut out);
        prop_assert_eq!(out, whole);
    }
}
