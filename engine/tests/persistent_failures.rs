//! Failures that go on: one Event repeated with a rising count (a crash loop, a volume that
//! never mounts) is an incident once it has occurred often enough, and for a mount, for long
//! enough; whether the watch saw each repetition as an update of the Event or a dump holds the
//! Event once with its count. Events built field by field as the kubelet writes them (core/v1
//! Event: count, firstTimestamp, lastTimestamp); not recorded data.

use kev_engine::rules::RuleSet;
use kev_engine::{Engine, EngineConfig, Output};
use kev_schemas::{EventObject, EventObservation, Incident, WatchVerb};

const T0: i64 = 1_700_000_000;

/// How often an Event has occurred: `count` times, the first at `first` and the newest at
/// `last` (seconds after T0), `new` of them not seen before.
struct Seen {
    count: i64,
    first: i64,
    last: i64,
    new: i64,
}

/// The Event `name` about pod `pod` as it stands after `seen`.
fn observation(name: &str, pod: &str, reason: &str, message: &str, seen: Seen) -> EventObservation {
    let Seen { count, first, last, new } = seen;
    let ts = |s: i64| kev_schemas::time::format_micros((T0 + s) * 1_000_000);
    let json = serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                     "resourceVersion": (1000 + last).to_string()},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": "shop"},
        "reason": reason, "type": "Warning", "message": message,
        "source": {"component": "kubelet", "host": "node-1"},
        "count": count, "firstTimestamp": ts(first), "lastTimestamp": ts(last)
    });
    let verb = if count == new { WatchVerb::Added } else { WatchVerb::Modified };
    EventObservation::new(EventObject::from_json(json).unwrap(), verb, new, 0)
}

/// The incidents' records after each observation, in order.
fn run(observations: Vec<EventObservation>) -> Vec<Vec<Incident>> {
    let mut engine = Engine::new(EngineConfig::default(), RuleSet::defaults());
    let mut after = Vec::new();
    for (i, o) in observations.into_iter().enumerate() {
        let mut out = Vec::new();
        engine.on_event("lab", o, 0, i as i64, &mut out);
        after.push(out.into_iter().filter_map(|o| if let Output::Incident(i) = o { Some(i) } else { None }).collect());
    }
    after
}

const BACKOFF: &str = "Back-off restarting failed container cart in pod cart-7d4b9c8f6d-x2v9q_shop(0f1c)";
const MOUNT: &str =
    "MountVolume.SetUp failed for volume \"data\" : hostPath type check failed: /srv/data is not a directory";

#[test]
fn a_crash_loop_seen_update_by_update_opens_at_its_fifth_back_off() {
    // The kubelet's back-off doubles from 10 s: the Event is updated at each restart.
    let times = [0, 10, 30, 70, 150, 310];
    let obs = times
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            observation(
                "cart.1",
                "cart-7d4b9c8f6d-x2v9q",
                "BackOff",
                BACKOFF,
                Seen { count: i as i64 + 1, first: 0, last: t, new: 1 },
            )
        })
        .collect();
    let after = run(obs);
    let opened: Vec<usize> = (0..after.len()).filter(|&i| after[i].iter().any(|x| x.rule == "crash-loop")).collect();
    assert_eq!(opened.first(), Some(&4), "opens with the fifth back-off, not before: {after:#?}");
    let open = after[4].iter().find(|x| x.rule == "crash-loop").unwrap();
    assert!(
        open.summary.starts_with(
            "pod cart-7d4b9c8f6d-x2v9q is crash-looping: 5 back-offs restarting a failed container within 3m"
        ),
        "{}",
        open.summary
    );
}

#[test]
fn a_crash_loop_held_once_in_a_dump_is_an_incident() {
    let after = run(vec![observation(
        "cart.1",
        "cart-7d4b9c8f6d-x2v9q",
        "BackOff",
        BACKOFF,
        Seen { count: 94, first: 0, last: 1200, new: 94 },
    )]);
    let found: Vec<&Incident> = after.iter().flatten().filter(|x| x.rule == "crash-loop").collect();
    assert_eq!(found.len(), 1, "{after:#?}");
    assert!(found[0].summary.contains("94 back-offs restarting a failed container within 20m"), "{}", found[0].summary);
}

#[test]
fn a_mount_that_fails_for_minutes_is_an_incident_and_a_race_of_seconds_is_not() {
    // A Secret created half a minute after its pod: seven failures in 32 s, then it mounts.
    let race = (0..7)
        .map(|i| {
            observation(
                "web.1",
                "web-1",
                "FailedMount",
                MOUNT,
                Seen { count: i + 1, first: 0, last: i * 5 + 2, new: 1 },
            )
        })
        .collect();
    let after = run(race);
    assert!(after.iter().flatten().all(|x| x.rule != "persistent-mount-failure"), "{after:#?}");
    // The same failure retried every two minutes (the kubelet's longest back-off) for 12 minutes.
    let stuck = (0..7)
        .map(|i| {
            observation("web.1", "web-1", "FailedMount", MOUNT, Seen { count: i + 1, first: 0, last: i * 120, new: 1 })
        })
        .collect();
    let after = run(stuck);
    let opened: Vec<usize> =
        (0..after.len()).filter(|&i| after[i].iter().any(|x| x.rule == "persistent-mount-failure")).collect();
    // At 6 minutes it has failed 4 times; at 8, the fifth time.
    assert_eq!(opened.first(), Some(&4), "opens once it has failed 5 times over 5 minutes ({after:#?})");
    let open = after[4].iter().find(|x| x.rule == "persistent-mount-failure").unwrap();
    assert!(open.summary.starts_with("pod web-1 cannot mount volume data: 5 failures within 8m"), "{}", open.summary);
}
