//! The postmortem report: one self-contained HTML file (inline CSS and SVG, no script, no
//! network) made from the enricher's records for a time range.
//!
//! Rendering is a pure function of the records, like the engine: the same replayed range gives
//! the same bytes, so a report attached to a postmortem can be re-made and compared. There is no
//! "generated at" line for that reason; the range and the record counts say what it covers.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use kev_engine::{review, Output};
use kev_schemas::raw::ResourceRef;
use kev_schemas::{Aggregate, EnrichedEvent, Incident, IncidentStatus, Severity};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::records::Record;
use crate::replay::TimeRange;

/// Lanes drawn in the timeline at most; the rest are named in a line under it.
const MAX_LANES: usize = 60;
/// Aggregated fingerprints listed at most.
const TOP_AGGREGATES: usize = 25;

/// What a report is made from: every record of a range, in log order.
#[derive(Debug, Default, Clone)]
pub struct ReportInput {
    pub title: String,
    pub range: Option<TimeRange>,
    pub events: Vec<EnrichedEvent>,
    pub aggregates: Vec<Aggregate>,
    /// Every update of every incident; the report shows the last one of each.
    pub incidents: Vec<Incident>,
    pub dead_letters: u64,
}

impl ReportInput {
    pub fn new(title: impl Into<String>, range: Option<TimeRange>) -> Self {
        ReportInput { title: title.into(), range, ..Default::default() }
    }

    pub fn add(&mut self, record: Record) {
        match record {
            Record::Engine(Output::Enriched(e)) => self.events.push(e),
            Record::Engine(Output::Aggregate(a)) => self.aggregates.push(a),
            Record::Engine(Output::Incident(i)) => self.incidents.push(i),
            Record::Dead(_) => self.dead_letters += 1,
        }
    }

    /// The newest state of each incident, ordered by when it opened (then id); an incident
    /// merged into another is left out (its events and objects continue there).
    pub fn latest_incidents(&self) -> Vec<&Incident> {
        let mut v = review::standing(&self.incidents);
        v.sort_by(|a, b| (a.opened_at, &a.incident_id).cmp(&(b.opened_at, &b.incident_id)));
        v
    }

    /// Incidents merged into another one that explains them.
    pub fn merged_incidents(&self) -> usize {
        review::latest(&self.incidents).values().filter(|i| i.merged_into.is_some()).count()
    }

    /// What a person has to read of the range: its incidents and the recurring warning
    /// aggregates no incident explains, per raw event.
    pub fn reading(&self) -> review::Reading {
        review::reading(&self.incidents, &self.aggregates, &self.events, self.events.len() as u64)
    }

    /// Incidents inside another of the same cluster and time: the same cause reported twice.
    pub fn nested_incidents(&self) -> usize {
        review::nested(&self.latest_incidents()).len()
    }

    /// Occurrences per fingerprint over the range, most severe first, then most frequent.
    pub fn top_aggregates(&self) -> Vec<FingerprintTotal<'_>> {
        let mut by: HashMap<&str, FingerprintTotal> = HashMap::new();
        // A late event re-emits a window's aggregate under the same key: keep the last per window.
        let mut windows: BTreeMap<(&str, i64), &Aggregate> = BTreeMap::new();
        for a in &self.aggregates {
            windows.insert((&a.fingerprint, a.window_start), a);
        }
        for a in windows.into_values() {
            let t = by.entry(&a.fingerprint).or_insert_with(|| FingerprintTotal {
                sample: a,
                severity: a.severity,
                count: 0,
                windows: 0,
                recurring: false,
            });
            t.severity = t.severity.max(a.severity);
            t.count += a.count;
            t.windows += 1;
            t.recurring |= a.recurring;
        }
        let mut v: Vec<_> = by.into_values().collect();
        v.sort_by(|a, b| {
            (rank(b.severity), b.count, &a.sample.fingerprint).cmp(&(rank(a.severity), a.count, &b.sample.fingerprint))
        });
        v.truncate(TOP_AGGREGATES);
        v
    }
}

/// One fingerprint's windows in the range, added up.
#[derive(Debug)]
pub struct FingerprintTotal<'a> {
    pub sample: &'a Aggregate,
    pub severity: Severity,
    pub count: i64,
    pub windows: usize,
    pub recurring: bool,
}

/// `Unknown` (a newer writer's symbol) sorts as info.
fn rank(s: Severity) -> u8 {
    match s {
        Severity::Critical => 3,
        Severity::Error => 2,
        Severity::Warning => 1,
        Severity::Info | Severity::Unknown => 0,
    }
}

/// How the report and the first run name a severity.
pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
        Severity::Unknown => "unknown",
    }
}

fn status_name(s: IncidentStatus) -> &'static str {
    match s {
        IncidentStatus::Open => "open",
        IncidentStatus::Updated => "open (updated)",
        IncidentStatus::Resolved => "resolved",
        IncidentStatus::Unknown => "unknown",
    }
}

/// An event time (microseconds) as the report and the first run print it, UTC.
pub fn time(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| micros.to_string())
}

fn resource(r: &ResourceRef) -> String {
    let mut s = r.kind.clone().unwrap_or_else(|| "?".into());
    s.push(' ');
    if let Some(ns) = &r.namespace {
        let _ = write!(s, "{ns}/");
    }
    s.push_str(r.name.as_deref().unwrap_or("?"));
    s
}

/// The timeline's lanes: one per resource in some incident's scope, with the incidents and
/// member events drawn on it.
struct Lane<'a> {
    label: String,
    incidents: Vec<&'a Incident>,
    events: Vec<&'a EnrichedEvent>,
}

fn lanes<'a>(incidents: &[&'a Incident], events: &HashMap<&str, Vec<&'a EnrichedEvent>>) -> Vec<Lane<'a>> {
    let mut order: Vec<String> = Vec::new();
    let mut by: HashMap<String, Lane<'a>> = HashMap::new();
    for i in incidents {
        let mut labels: Vec<String> = i.scope.iter().map(resource).collect();
        if labels.is_empty() {
            labels.push(i.root_cause.as_ref().map(resource).unwrap_or_else(|| i.rule.clone()));
        }
        for l in &labels {
            let lane = by.entry(l.clone()).or_insert_with(|| {
                order.push(l.clone());
                Lane { label: l.clone(), incidents: Vec::new(), events: Vec::new() }
            });
            lane.incidents.push(i);
        }
        // Each member event on the lane of the object it is about, else the incident's first.
        for uid in &i.member_uids {
            for e in events.get(uid.as_str()).into_iter().flatten() {
                let own = e.regarding.as_ref().map(resource);
                let l = own.filter(|o| by.contains_key(o)).unwrap_or_else(|| labels[0].clone());
                by.get_mut(&l).expect("lane exists").events.push(e);
            }
        }
    }
    order.into_iter().filter_map(|l| by.remove(&l)).collect()
}

/// The incidents of one cluster, drawn over their own time span: clusters' events can lie
/// years apart (the bundled dumps do), and one shared axis would squeeze each into a sliver.
struct ClusterTimeline<'a> {
    cluster: &'a str,
    lanes: Vec<Lane<'a>>,
    from: i64,
    to: i64,
}

fn cluster_timelines<'a>(
    incidents: &[&'a Incident],
    events: &HashMap<&str, Vec<&'a EnrichedEvent>>,
    range: Option<(i64, i64)>,
) -> Vec<ClusterTimeline<'a>> {
    let mut by_cluster: std::collections::BTreeMap<&str, Vec<&Incident>> = Default::default();
    for i in incidents {
        by_cluster.entry(i.cluster.as_str()).or_default().push(i);
    }
    by_cluster
        .into_iter()
        .map(|(cluster, incidents)| {
            let lanes = lanes(&incidents, events);
            let times = lanes.iter().flat_map(|l| {
                let bars = l.incidents.iter().flat_map(|i| [i.opened_at, i.resolved_at.unwrap_or(i.updated_at)]);
                bars.chain(l.events.iter().map(|e| e.event_time))
            });
            let (lo, hi) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
            // A margin of 2% (at least a second) keeps the first and last marks off the edges.
            let pad = ((hi - lo) / 50).max(1_000_000);
            let (mut from, mut to) = (lo - pad, hi + pad);
            if let Some((rf, rt)) = range {
                (from, to) = (from.max(rf), to.min(rt));
            }
            ClusterTimeline { cluster, lanes, from, to: to.max(from + 1) }
        })
        .collect()
}

/// A lane label that fits its column: the kind, then as much of the end of the name (the
/// part that tells pods apart) as there is room for. The whole label is the lane's tooltip.
fn fit_label(label: &str) -> String {
    const MAX: usize = 46;
    let n = label.chars().count();
    if n <= MAX {
        return label.to_string();
    }
    let kind = label.split(' ').next().unwrap_or("");
    let room = MAX.saturating_sub(kind.chars().count() + 2);
    let tail: String = label.chars().skip(n - room).collect();
    format!("{kind} …{tail}")
}

fn timeline(lanes: &[Lane], from: i64, to: i64) -> Markup {
    const LABEL: f64 = 300.0;
    const WIDTH: f64 = 900.0;
    const ROW: f64 = 20.0;
    let span = (to - from).max(1) as f64;
    let x = |t: i64| LABEL + ((t - from) as f64 / span * WIDTH).clamp(0.0, WIDTH);
    let shown = &lanes[..lanes.len().min(MAX_LANES)];
    let height = ROW * shown.len() as f64 + 30.0;
    html! {
        svg class="timeline" xmlns="http://www.w3.org/2000/svg" width=(LABEL + WIDTH + 10.0) height=(height)
            viewBox=(format!("0 0 {} {height}", LABEL + WIDTH + 10.0)) {
            @for (n, lane) in shown.iter().enumerate() {
                @let y = ROW * n as f64;
                rect class="lane" x="0" y=(y) width=(LABEL + WIDTH) height=(ROW) {}
                text class="label" x="4" y=(y + 14.0) { (fit_label(&lane.label)) title { (lane.label) } }
                @for i in &lane.incidents {
                    @let end = i.resolved_at.unwrap_or(i.updated_at);
                    a href=(format!("#incident-{}", i.incident_id)) {
                        rect class=(format!("bar {}", severity_name(i.severity))) x=(x(i.opened_at)) y=(y + 3.0)
                            width=((x(end) - x(i.opened_at)).max(3.0)) height=(ROW - 6.0) {
                            title { (i.summary) }
                        }
                    }
                }
                @for e in &lane.events {
                    circle class="event" cx=(x(e.event_time)) cy=(y + ROW / 2.0) r="2.5" {
                        title { (time(e.event_time)) " " (e.reason.as_deref().unwrap_or("")) }
                    }
                }
            }
            text class="axis" x=(LABEL) y=(height - 8.0) { (time(from)) }
            text class="axis" x=(LABEL + WIDTH) y=(height - 8.0) text-anchor="end" { (time(to)) }
        }
        @if lanes.len() > MAX_LANES {
            p { (lanes.len() - MAX_LANES) " more resources not drawn: see the incident list." }
        }
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}\
.lane{fill:#fafafa;stroke:#eee}.label{font:11px monospace;fill:#333}.axis{font:11px monospace;fill:#666}\
.bar.critical{fill:#8b0000}.bar.error{fill:#d9534f}.bar.warning{fill:#f0ad4e}.bar.info,.bar.unknown{fill:#5bc0de}\
.event{fill:#222}.recurring{font-size:11px;border:1px solid #b8860b;border-radius:3px;padding:0 3px;color:#b8860b}.sev{font-weight:bold}.sev.critical{color:#8b0000}.sev.error{color:#d9534f}.sev.warning{color:#b8860b}\
details{border:1px solid #ddd;margin:.4em 0;padding:.3em .6em}summary{cursor:pointer}code{font-size:12px}";

/// The report as one HTML document.
pub fn render(input: &ReportInput) -> String {
    let incidents = input.latest_incidents();
    let mut events: HashMap<&str, Vec<&EnrichedEvent>> = HashMap::new();
    for e in &input.events {
        events.entry(&e.uid).or_default().push(e);
    }
    let (from, to) = match input.range {
        Some(r) => (r.from_ms * 1000, r.to_ms * 1000),
        None => {
            let times = input.events.iter().map(|e| e.event_time).chain(incidents.iter().map(|i| i.opened_at));
            let (lo, hi) = times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
            if lo > hi {
                (0, 1)
            } else {
                (lo, hi)
            }
        }
    };
    let range = input.range.map(|r| (r.from_ms * 1000, r.to_ms * 1000));
    let timelines = cluster_timelines(&incidents, &events, range);
    let occurrences: i64 = input.events.iter().map(|e| e.new_occurrences).sum();
    let open = incidents.iter().filter(|i| i.resolved_at.is_none()).count();
    let reading = input.reading();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (input.title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (input.title) }
                p class="range" { "Event time " (time(from)) " to " (time(to)) " (UTC)." }
                table class="summary" {
                    tr { th { "enriched events" } td { (input.events.len()) } }
                    tr { th { "occurrences" } td { (occurrences) } }
                    tr { th { "aggregate records" } td { (input.aggregates.len()) } }
                    tr { th { "incidents" } td { (incidents.len()) " (" (open) " still open; " (input.merged_incidents()) " merged into another)" } }
                    tr { th { "records to read" } td {
                        (format!("{:.1}", reading.per_thousand())) " per 1,000 raw events: " (reading.incidents) " incidents and "
                        (reading.loose_fingerprints) " recurring warnings outside them"
                    } }
                    tr { th { "dead letters" } td { (input.dead_letters) } }
                }
                h2 { "Timeline" }
                @if incidents.is_empty() {
                    p { "No incident in this range." }
                } @else {
                    p { "Per cluster, over the span of its incidents: one lane per resource in an incident's scope; bars are incidents (open to resolved, by severity), dots their member events." }
                    @for t in &timelines {
                        h3 class="cluster" { "Cluster " (t.cluster) ": " (time(t.from)) " to " (time(t.to)) }
                        (timeline(&t.lanes, t.from, t.to))
                    }
                }
                h2 { "Incidents" }
                @for i in &incidents {
                    details id=(format!("incident-{}", i.incident_id)) class="incident" {
                        summary {
                            span class=(format!("sev {}", severity_name(i.severity))) { (severity_name(i.severity)) }
                            " " (i.summary) " "
                            @if i.previous_count.unwrap_or(0) > 0 {
                                span class="recurring" { "recurring" } " "
                            }
                            small { "(" (status_name(i.status)) ", " (time(i.opened_at)) ")" }
                        }
                        table {
                            tr { th { "rule" } td { (i.rule) } }
                            @if let Some(rules) = i.contributing_rules.as_ref().filter(|r| r.len() > 1) {
                                tr { th { "rules" } td { (rules.join(", ")) } }
                            }
                            @if let Some(chain) = &i.causal_chain {
                                tr { th { "causal chain" } td { (chain) } }
                            }
                            tr { th { "history" } td {
                                @match (i.previous_count.unwrap_or(0), i.first_seen, i.last_seen) {
                                    (n, Some(first), Some(last)) if n > 0 => {
                                        (n) " earlier incident(s) of the same fault, the first at " (time(first)) ", the last at " (time(last))
                                        @if let Some(id) = &i.last_incident_id {
                                            " (" a href=(format!("#incident-{id}")) { code { (id) } } ")"
                                        }
                                    }
                                    _ => { "the first of its signature" }
                                }
                            } }
                            tr { th { "root cause" } td {
                                (i.root_cause.as_ref().map(resource).unwrap_or_default()) " "
                                (i.root_reason.as_deref().unwrap_or(""))
                            } }
                            tr { th { "scope" } td { @for s in &i.scope { (resource(s)) br; } } }
                            tr { th { "confidence" } td { (format!("{:.2}", i.confidence)) } }
                            tr { th { "opened / updated / resolved" } td {
                                (time(i.opened_at)) " / " (time(i.updated_at)) " / "
                                (i.resolved_at.map(time).unwrap_or_else(|| "open".into()))
                            } }
                            tr { th { "incident id" } td { code { (i.incident_id) } } }
                        }
                        table class="members" {
                            tr { th { "event time" } th { "object" } th { "type" } th { "reason" } th { "count" } th { "message" } }
                            @for uid in &i.member_uids {
                                @for e in events.get(uid.as_str()).into_iter().flatten() {
                                    tr {
                                        td { (time(e.event_time)) }
                                        td { (e.regarding.as_ref().map(resource).unwrap_or_default()) }
                                        td { (e.type_.as_deref().unwrap_or("")) }
                                        td { (e.reason.as_deref().unwrap_or("")) }
                                        td { (e.count) }
                                        td { (e.note.as_deref().unwrap_or("")) }
                                    }
                                }
                            }
                        }
                    }
                }
                h2 { "Top aggregates" }
                p { "Occurrences per fingerprint over the range, most severe first, then most frequent." }
                table class="aggregates" {
                    tr { th { "severity" } th { "occurrences" } th { "windows" } th { "namespace" } th { "kind" } th { "reason" } th { "category" } th { "template" } }
                    @for t in input.top_aggregates() {
                        tr {
                            td class=(format!("sev {}", severity_name(t.severity))) { (severity_name(t.severity)) }
                            td { (t.count) @if t.recurring { " (recurring)" } }
                            td { (t.windows) }
                            td { (t.sample.namespace.as_deref().unwrap_or("")) }
                            td { (t.sample.kind.as_deref().unwrap_or("")) }
                            td { (t.sample.reason.as_deref().unwrap_or("")) }
                            td { (t.sample.category) }
                            td { code { (t.sample.template) } }
                        }
                    }
                }
            }
        }
    };
    page.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_labels_keep_the_kind_and_the_end_of_the_name() {
        assert_eq!(fit_label("Pod ns/db-0"), "Pod ns/db-0");
        let long = "Pod openshift-controller-manager/controller-manager-7f9c8d5b6-x2k4j";
        let fit = fit_label(long);
        assert_eq!(fit.chars().count(), 46, "{fit}");
        assert!(fit.starts_with("Pod …") && fit.ends_with("controller-manager-7f9c8d5b6-x2k4j"), "{fit}");
    }

    fn incident(cluster: &str, id: &str, opened_at: i64) -> Incident {
        Incident {
            incident_id: id.into(),
            cluster: cluster.into(),
            rule: "r".into(),
            status: IncidentStatus::Resolved,
            severity: Severity::Error,
            confidence: 0.5,
            summary: format!("{cluster} {id}"),
            root_cause: None,
            root_reason: None,
            scope: Vec::new(),
            member_uids: Vec::new(),
            opened_at,
            updated_at: opened_at + 60_000_000,
            resolved_at: Some(opened_at + 120_000_000),
            ..Incident::default()
        }
    }

    /// Two clusters four years apart: each timeline spans its own incidents (plus 2%), not the
    /// four years between them.
    #[test]
    fn each_cluster_gets_its_own_time_axis() {
        let year = 365 * 24 * 3600 * 1_000_000_i64;
        let a = incident("a", "1", 1_600_000_000_000_000);
        let b = incident("b", "2", 1_600_000_000_000_000 + 4 * year);
        let incidents = vec![&b, &a];
        let t = cluster_timelines(&incidents, &HashMap::new(), None);
        assert_eq!(t.iter().map(|t| t.cluster).collect::<Vec<_>>(), ["a", "b"]);
        for (t, i) in t.iter().zip([&a, &b]) {
            assert!(t.from < i.opened_at && t.to > i.resolved_at.unwrap());
            assert!(t.to - t.from < 10 * 60 * 1_000_000, "span {} s", (t.to - t.from) / 1_000_000);
        }
        let clipped = cluster_timelines(&incidents, &HashMap::new(), Some((a.opened_at, i64::MAX)));
        assert_eq!(clipped[0].from, a.opened_at, "a requested range bounds the axis");
    }
}
