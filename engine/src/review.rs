//! What a person has to read of a run: figures over its output records, for the first run's
//! summary and the tests that hold kev to them. Pure functions of records, like the engine.

use std::collections::{BTreeMap, BTreeSet};

use kev_schemas::{Aggregate, EnrichedEvent, Incident, Severity};

/// The newest record of each incident, as a compacted topic or a ksqlDB table keeps it.
pub fn latest<'a>(records: impl IntoIterator<Item = &'a Incident>) -> BTreeMap<&'a str, &'a Incident> {
    let mut out = BTreeMap::new();
    for i in records {
        out.insert(i.incident_id.as_str(), i);
    }
    out
}

/// The incidents a person reads: the newest record of each, without those merged into another.
pub fn standing<'a>(records: impl IntoIterator<Item = &'a Incident>) -> Vec<&'a Incident> {
    latest(records).into_values().filter(|i| i.merged_into.is_none()).collect()
}

/// The objects an incident is about, by kind, namespace and name (one pod's events about its
/// containers differ only in their field path).
fn objects(i: &Incident) -> BTreeSet<(&str, &str, &str)> {
    i.scope
        .iter()
        .map(|r| {
            (r.kind.as_deref().unwrap_or(""), r.namespace.as_deref().unwrap_or(""), r.name.as_deref().unwrap_or(""))
        })
        .collect()
}

/// Pairs (inner, outer) of incidents of one cluster whose times overlap and where every object
/// of the inner one is in the outer one: the same cause reported twice. Ids, in order.
pub fn nested<'a>(incidents: &[&'a Incident]) -> Vec<(&'a str, &'a str)> {
    let end = |i: &Incident| i.resolved_at.unwrap_or(i.updated_at);
    let scopes: Vec<_> = incidents.iter().map(|i| objects(i)).collect();
    let mut out = Vec::new();
    for (a, inner) in incidents.iter().enumerate() {
        for (b, outer) in incidents.iter().enumerate() {
            let overlap = inner.opened_at <= end(outer) && outer.opened_at <= end(inner);
            if a != b && inner.cluster == outer.cluster && overlap && scopes[a].is_subset(&scopes[b]) {
                out.push((inner.incident_id.as_str(), outer.incident_id.as_str()));
            }
        }
    }
    out
}

/// What a person has to read of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Incidents standing (the newest record of each, merged ones left out).
    pub incidents: usize,
    /// Fingerprints with a recurring aggregate of at least warning severity none of whose events
    /// is in an incident: noise a person still has to look at once each.
    pub loose_fingerprints: usize,
    /// Raw events the run read.
    pub raw_events: u64,
}

impl Reading {
    /// Records to read per 1,000 raw events.
    pub fn per_thousand(&self) -> f64 {
        (self.incidents + self.loose_fingerprints) as f64 * 1000.0 / self.raw_events.max(1) as f64
    }
}

/// The records a person reads of a run: its incidents, and the recurring warning aggregates
/// whose fingerprint no incident explains.
pub fn reading<'a>(
    incidents: impl IntoIterator<Item = &'a Incident>,
    aggregates: impl IntoIterator<Item = &'a Aggregate>,
    enriched: impl IntoIterator<Item = &'a EnrichedEvent>,
    raw_events: u64,
) -> Reading {
    let incidents: Vec<&Incident> = incidents.into_iter().collect();
    let loose = loose(incidents.iter().copied(), aggregates, enriched);
    Reading { incidents: standing(incidents).len(), loose_fingerprints: loose.len(), raw_events }
}

/// The recurring warning fingerprints no standing incident explains, keyed by cluster and
/// fingerprint, each with its first recurring aggregate: what a person reads besides incidents.
pub fn loose<'a>(
    incidents: impl IntoIterator<Item = &'a Incident>,
    aggregates: impl IntoIterator<Item = &'a Aggregate>,
    enriched: impl IntoIterator<Item = &'a EnrichedEvent>,
) -> BTreeMap<(&'a str, &'a str), &'a Aggregate> {
    let standing = standing(incidents);
    let members: BTreeSet<(&str, &str)> =
        standing.iter().flat_map(|i| i.member_uids.iter().map(move |u| (i.cluster.as_str(), u.as_str()))).collect();
    let explained: BTreeSet<(&str, &str)> = enriched
        .into_iter()
        .filter(|e| members.contains(&(e.cluster.as_str(), e.uid.as_str())))
        .map(|e| (e.cluster.as_str(), e.fingerprint.as_str()))
        .collect();
    let mut out = BTreeMap::new();
    for a in aggregates {
        let key = (a.cluster.as_str(), a.fingerprint.as_str());
        if a.recurring
            && a.severity >= Severity::Warning
            && a.severity != Severity::Unknown
            && !explained.contains(&key)
        {
            out.entry(key).or_insert(a);
        }
    }
    out
}
