//! The engine: raw records in, enriched events and window aggregates out.

use std::collections::BTreeMap;

use kev_schemas::{Aggregate, EnrichedEvent, EventObservation, Heartbeat, Incident, RawKind, RawRecord, WatchVerb};
use serde::{Deserialize, Serialize};

use crate::classify::{grade, Repetitions};
use crate::correlate::{default_rules, CorrelationRule, Correlator, LifecycleConfig};
use crate::rules::MatchCache;
use crate::rules::RuleSet;
use crate::template::TemplateCache;
use crate::window::{ClusterWindows, Contribution, WindowConfig};

/// Engine settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Tumbling window size in milliseconds. Default 60000.
    pub window_ms: i64,
    /// How far behind the newest event or heartbeat an event may arrive and still fall in an
    /// open window, in milliseconds. Default 30000.
    pub allowed_lateness_ms: i64,
    /// How long after it closes a window still takes late events (re-emitted), in
    /// milliseconds. Default 600000.
    pub late_retention_ms: i64,
    /// Objects named in an aggregate's `top_objects`. Default 5.
    pub top_objects: usize,
    /// Shortest event time between two UPDATED records of one incident, in milliseconds.
    /// Default 60000.
    pub incident_debounce_ms: i64,
    /// Event time without a new member after which an incident is RESOLVED, in milliseconds.
    /// Default 600000.
    pub incident_quiet_ms: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            window_ms: 60_000,
            allowed_lateness_ms: 30_000,
            late_retention_ms: 600_000,
            top_objects: 5,
            incident_debounce_ms: 60_000,
            incident_quiet_ms: 600_000,
        }
    }
}

impl EngineConfig {
    fn windows(&self) -> WindowConfig {
        WindowConfig {
            size_us: self.window_ms.max(1) * 1000,
            lateness_us: self.allowed_lateness_ms.max(0) * 1000,
            late_retention_us: self.late_retention_ms.max(0) * 1000,
            top_objects: self.top_objects,
        }
    }

    fn lifecycle(&self) -> LifecycleConfig {
        LifecycleConfig {
            debounce_us: self.incident_debounce_ms.max(0) * 1000,
            quiet_us: self.incident_quiet_ms.max(0) * 1000,
        }
    }
}

/// One output record.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Enriched(EnrichedEvent),
    Aggregate(Aggregate),
    Incident(Incident),
}

/// What the engine holds, for the state-size metric and the memory benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateSize {
    pub open_groups: usize,
    pub retained_groups: usize,
    pub repetition_keys: usize,
    pub correlation_entries: usize,
    pub approx_bytes: usize,
}

/// Everything the engine remembers, serialisable so a restart can continue where it stopped.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct EngineState {
    clusters: BTreeMap<String, ClusterState>,
}

/// What the engine remembers of one cluster: each cluster has its own event time.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct ClusterState {
    windows: ClusterWindows,
    repetitions: Repetitions,
    correlator: Correlator,
    /// Watermark of the last sweep of the repetition counters (once per 10 s of event time).
    repetitions_swept_at: Option<i64>,
}

pub struct Engine {
    cfg: EngineConfig,
    windows: WindowConfig,
    life: LifecycleConfig,
    rules: RuleSet,
    correlations: Vec<CorrelationRule>,
    state: EngineState,
    templates: TemplateCache,
    matches: MatchCache,
}

/// The fingerprint of similar events: cluster, namespace, kind of the regarding object, reason
/// and message template, hashed to 16 hex digits.
pub fn fingerprint(cluster: &str, namespace: &str, kind: &str, reason: &str, template: &str) -> String {
    format!("{:016x}", fingerprint_hash(cluster, namespace, kind, reason, template))
}

/// The fingerprint as a number, as the engine keys its state.
pub fn fingerprint_hash(cluster: &str, namespace: &str, kind: &str, reason: &str, template: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (i, part) in [cluster, namespace, kind, reason, template].into_iter().enumerate() {
        if i > 0 {
            h.update(b"\0");
        }
        h.update(part.as_bytes());
    }
    h.digest()
}

impl Engine {
    pub fn new(cfg: EngineConfig, rules: RuleSet) -> Self {
        Self::restore(cfg, rules, EngineState::default())
    }

    /// Replaces the shipped correlation rules.
    pub fn with_correlations(mut self, correlations: Vec<CorrelationRule>) -> Self {
        self.correlations = correlations;
        self
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Continues from a saved state.
    pub fn restore(cfg: EngineConfig, rules: RuleSet, state: EngineState) -> Self {
        Self {
            windows: cfg.windows(),
            life: cfg.lifecycle(),
            cfg,
            rules,
            correlations: default_rules(),
            state,
            templates: TemplateCache::default(),
            matches: MatchCache::default(),
        }
    }

    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// Processes one raw record read at (partition, offset).
    pub fn on_record(&mut self, record: &RawRecord, partition: i32, offset: i64, out: &mut Vec<Output>) {
        match (record.kind, &record.event, &record.heartbeat) {
            (RawKind::Event, Some(e), _) => self.on_event(&record.cluster, e, partition, offset, out),
            (RawKind::Heartbeat, _, Some(h)) => self.on_heartbeat(&record.cluster, h, out),
            _ => {}
        }
    }

    pub fn on_event(
        &mut self,
        cluster: &str,
        e: &EventObservation,
        partition: i32,
        offset: i64,
        out: &mut Vec<Output>,
    ) {
        let n = &e.normalized;
        let message = n.note.as_deref().unwrap_or("");
        let tmpl = self.templates.template(message);
        let regarding = n.regarding.as_ref();
        let kind = regarding.and_then(|r| r.kind.as_deref());
        let reason = n.reason.as_deref();
        let fp_hash = fingerprint_hash(
            cluster,
            e.namespace.as_deref().unwrap_or(""),
            kind.unwrap_or(""),
            reason.unwrap_or(""),
            &tmpl,
        );
        let fp = format!("{fp_hash:016x}");
        let occurrences = if e.verb == WatchVerb::Deleted { 0 } else { e.new_occurrences.max(0) };
        let state = cluster_state(&mut self.state.clusters, cluster);
        let g = grade(&self.rules, &mut self.matches, &mut state.repetitions, cluster, n, occurrences);
        let object = format!(
            "{}/{}/{}",
            kind.unwrap_or(""),
            regarding.and_then(|r| r.namespace.as_deref()).unwrap_or(""),
            regarding.and_then(|r| r.name.as_deref()).unwrap_or("")
        );
        let mut incidents = Vec::new();
        state.correlator.on_event(&self.correlations, &self.life, cluster, e, &mut incidents);
        let mut late = None;
        if occurrences > 0 {
            let c = Contribution {
                fingerprint: fp_hash,
                event_time: n.event_time,
                occurrences,
                object: &object,
                namespace: e.namespace.as_deref(),
                kind,
                reason,
                template: &tmpl,
                category: &g.category,
                severity: g.severity,
                message: n.note.as_deref(),
            };
            late = state.windows.add(cluster, &self.windows, &c);
        }
        out.push(Output::Enriched(enriched(cluster, e, &g, &fp, &tmpl, partition, offset)));
        // A late event re-emits its window's aggregate and moves no time forward.
        let was_late = late.is_some();
        out.extend(late.map(Output::Aggregate));
        out.extend(incidents.into_iter().map(Output::Incident));
        if !was_late {
            self.advance(cluster, n.event_time, out);
        }
    }

    pub fn on_heartbeat(&mut self, cluster: &str, h: &Heartbeat, out: &mut Vec<Output>) {
        let t = h.producer_time.saturating_mul(1000).max(h.event_time_high.unwrap_or(i64::MIN));
        self.advance(cluster, t, out);
    }

    fn advance(&mut self, cluster: &str, t: i64, out: &mut Vec<Output>) {
        let wcfg = self.windows;
        let c = cluster_state(&mut self.state.clusters, cluster);
        let mut closed = Vec::new();
        c.windows.advance(cluster, &wcfg, t, &mut closed);
        out.extend(closed.into_iter().map(Output::Aggregate));
        let Some(w) = c.windows.watermark(&wcfg) else { return };
        let mut incidents = Vec::new();
        let c = self.state.clusters.get_mut(cluster).expect("made above");
        c.correlator.advance(&self.correlations, &self.life, cluster, w, &mut incidents);
        out.extend(incidents.into_iter().map(Output::Incident));
        if c.repetitions_swept_at.is_none_or(|s| w >= s + 10_000_000) {
            c.repetitions_swept_at = Some(w);
            let longest = self.rules.rules.iter().filter_map(|r| r.escalate.as_ref()).map(|e| e.within_us).max();
            c.repetitions.expire(w - longest.unwrap_or(0));
        }
    }

    /// Closes every open window: the end of a bounded replay.
    pub fn flush(&mut self, out: &mut Vec<Output>) {
        for (cluster, state) in self.state.clusters.iter_mut() {
            let mut closed = Vec::new();
            state.windows.close_all(cluster, &self.windows, &mut closed);
            out.extend(closed.into_iter().map(Output::Aggregate));
        }
    }

    pub fn state_size(&self) -> StateSize {
        let mut s = StateSize::default();
        for c in self.state.clusters.values() {
            s.open_groups += c.windows.open_groups();
            s.retained_groups += c.windows.retained_groups();
            s.approx_bytes += c.windows.approx_bytes();
            s.repetition_keys += c.repetitions.len();
            s.correlation_entries += c.correlator.len();
        }
        s.approx_bytes += s.repetition_keys * 64 + s.correlation_entries * 128;
        s
    }

    /// Each cluster's watermark (newest event or heartbeat time minus the allowed lateness), in
    /// microseconds, for the watermark-lag metric.
    pub fn watermarks(&self) -> impl Iterator<Item = (&str, i64)> + '_ {
        self.state.clusters.iter().filter_map(|(c, s)| Some((c.as_str(), s.windows.watermark(&self.windows)?)))
    }

    /// The newest event or heartbeat time of any cluster, in microseconds. Every record the
    /// engine has emitted carries a time at or before it (an enriched event its event time, an
    /// aggregate its window end, an incident its last update), which is what lets a replay start
    /// from a saved state whose newest time is before the range it is asked for.
    pub fn newest_time(&self) -> Option<i64> {
        self.state.clusters.values().filter_map(|s| s.windows.newest()).max()
    }

    /// Late events handled (re-emitted) and too late to handle, over all clusters.
    pub fn late_counts(&self) -> (i64, i64) {
        self.state.clusters.values().fold((0, 0), |(l, t), c| (l + c.windows.late, t + c.windows.too_late))
    }
}

/// The state of one cluster, made on first use (without allocating the name on every call).
fn cluster_state<'a>(clusters: &'a mut BTreeMap<String, ClusterState>, cluster: &str) -> &'a mut ClusterState {
    if !clusters.contains_key(cluster) {
        clusters.insert(cluster.to_string(), ClusterState::default());
    }
    clusters.get_mut(cluster).expect("inserted above")
}

fn enriched(
    cluster: &str,
    e: &EventObservation,
    g: &crate::classify::Grade,
    fp: &str,
    tmpl: &str,
    partition: i32,
    offset: i64,
) -> EnrichedEvent {
    let n = &e.normalized;
    EnrichedEvent {
        cluster: cluster.to_string(),
        uid: e.uid.clone(),
        resource_version: e.resource_version.clone(),
        event_time: n.event_time,
        namespace: e.namespace.clone(),
        regarding: n.regarding.clone(),
        type_: n.type_.clone(),
        reason: n.reason.clone(),
        note: n.note.clone(),
        reporting_controller: n.reporting_controller.clone(),
        host: n.host.clone(),
        count: n.count,
        new_occurrences: e.new_occurrences,
        severity: g.severity,
        category: g.category.clone(),
        fingerprint: fp.to_string(),
        template: tmpl.to_string(),
        raw_offset: offset,
        raw_partition: partition,
    }
}
