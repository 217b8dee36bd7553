//! The real events of `tests/data/k8s-events` scaled to any number of events, for benchmarks:
//! time-shifted copies with renamed objects and uids, spread over several cluster ids. Shared by
//! the engine's `engine_bench` and the pipeline's `side_by_side`, so both feed the same workload.

use kev_schemas::EventObservation;

/// The real events, in event-time order. Without their original objects (`keep_objects` false)
/// they are the normalised view only, what the engine reads: a million original objects would
/// only fill memory. A raw topic needs them (`keep_objects` true): the raw record carries them.
pub fn base(keep_objects: bool) -> Vec<EventObservation> {
    let mut out: Vec<EventObservation> = crate::data::observations()
        .into_iter()
        .map(|(_, mut o)| {
            if !keep_objects {
                o.core = None;
                o.events_v1 = None;
            }
            o
        })
        .collect();
    out.sort_by_key(|o| o.normalized.event_time);
    out
}

/// Copy `k` of an observation: renamed objects and uids, shifted by `k` hours. The original
/// object, when kept, gets the same uid and object name; its own timestamps are left as they
/// were (the engine and the peer read the normalised event and first-occurrence times).
pub fn copy(o: &EventObservation, k: usize) -> EventObservation {
    let mut c = o.clone();
    c.uid = format!("{}-{k}", o.uid);
    let shift = k as i64 * 3_600_000_000;
    c.normalized.event_time += shift;
    // The first occurrence moves with it: left behind, every copy's repeated Event would seem
    // to have gone on for k hours more than it did.
    c.normalized.first_time = c.normalized.first_time.map(|t| t + shift);
    if let Some(r) = c.normalized.regarding.as_mut() {
        r.name = r.name.as_ref().map(|n| format!("{n}-c{k}"));
    }
    let renamed = |n: &mut Option<String>| *n = n.as_ref().map(|n| format!("{n}-c{k}"));
    if let Some(e) = c.core.as_mut() {
        e.metadata.uid = Some(c.uid.clone());
        if let Some(r) = e.involved_object.as_mut() {
            renamed(&mut r.name);
        }
    }
    if let Some(e) = c.events_v1.as_mut() {
        e.metadata.uid = Some(c.uid.clone());
        if let Some(r) = e.regarding.as_mut() {
            renamed(&mut r.name);
        }
    }
    c
}

/// `target` events as batches of one copy of `base` each, copy `k` under cluster
/// `cluster-{k % clusters}` shifted by `k / clusters` hours (the last batch cut short). Built
/// lazily, one batch at a time, so a caller can keep only what it needs.
pub fn batches(
    base: &[EventObservation],
    target: usize,
    clusters: usize,
) -> impl Iterator<Item = (String, Vec<EventObservation>)> + '_ {
    let copies = target.div_ceil(base.len().max(1));
    (0..copies).map(move |k| {
        let take = (target - k * base.len()).min(base.len());
        let batch = base.iter().take(take).map(|o| copy(o, k / clusters)).collect();
        (format!("cluster-{}", k % clusters), batch)
    })
}
