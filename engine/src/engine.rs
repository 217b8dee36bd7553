//! The engine: raw records in, enriched events and window aggregates out.

use std::collections::BTreeMap;

use kev_schemas::{Aggregate, EnrichedEvent, EventObservation, Heartbeat, Incident, RawKind, RawRecord, WatchVerb};
use serde::{Deserialize, Serialize};

use crate::classify::{grade, Repetitions};
use crate::correlate::{default_rules, CorrelationRule, Correlator, LifecycleConfig, ReasonMemo};
use crate::history::HistoryLimits;
use crate::intern::Interner;
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
    /// Fault signatures each cluster remembers, for the recurrence incidents carry; past it the
    /// one seen longest ago is forgotten. Default 10000.
    pub incident_history_max: usize,
    /// Days of event time a fault signature is remembered after it was last seen. Default 30.
    pub incident_history_days: i64,
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
            incident_history_max: 10_000,
            incident_history_days: 30,
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
            history: HistoryLimits {
                max_entries: self.incident_history_max.max(1),
                max_age_us: self.incident_history_days.clamp(0, 36_500) * 86_400_000_000,
            },
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
    /// Bytes of all the above, counted as `crate::size` says: what is really held; the strings
    /// they share (names, templates, messages) once, in the engine's interner.
    pub approx_bytes: usize,
    /// Bytes of the memos (templates by message, rule candidates, correlation reasons): not
    /// state, as they never change a result and are bounded, but memory the engine holds.
    pub memo_bytes: usize,
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
    /// The longest escalation window of the rules, for the repetition sweep.
    longest_escalation_us: i64,
    correlations: Vec<CorrelationRule>,
    state: EngineState,
    templates: TemplateCache,
    matches: MatchCache,
    reasons: ReasonMemo,
    /// The strings the state holds, shared by every cluster.
    strings: Interner,
    /// Reused buffers: the bytes a fingerprint hashes, an object's key.
    scratch: Vec<u8>,
    object: String,
}

/// The fingerprint of similar events: cluster, namespace, kind of the regarding object, reason
/// and message template, hashed to 16 hex digits.
pub fn fingerprint(cluster: &str, namespace: &str, kind: &str, reason: &str, template: &str) -> String {
    crate::hex16(fingerprint_hash(cluster, namespace, kind, reason, template))
}

/// The fingerprint as a number, as the engine keys its state.
pub fn fingerprint_hash(cluster: &str, namespace: &str, kind: &str, reason: &str, template: &str) -> u64 {
    fingerprint_hash_in(&mut Vec::new(), cluster, namespace, kind, reason, template)
}

/// [`fingerprint_hash`] with a buffer to reuse: the parts joined by NUL, hashed in one pass.
fn fingerprint_hash_in(
    buf: &mut Vec<u8>,
    cluster: &str,
    namespace: &str,
    kind: &str,
    reason: &str,
    template: &str,
) -> u64 {
    buf.clear();
    for (i, part) in [cluster, namespace, kind, reason, template].into_iter().enumerate() {
        if i > 0 {
            buf.push(0);
        }
        buf.extend_from_slice(part.as_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(buf)
}

impl Engine {
    pub fn new(cfg: EngineConfig, rules: RuleSet) -> Self {
        Self::restore(cfg, rules, EngineState::default())
    }

    /// Replaces the shipped correlation rules.
    pub fn with_correlations(mut self, correlations: Vec<CorrelationRule>) -> Self {
        self.correlations = correlations;
        self.reasons = ReasonMemo::default();
        self
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Continues from a saved state.
    pub fn restore(cfg: EngineConfig, rules: RuleSet, mut state: EngineState) -> Self {
        // A restored state's strings are its own: share them as a running engine does.
        let mut strings = Interner::default();
        for c in state.clusters.values_mut() {
            c.windows.adopt_strings(&mut strings);
            c.correlator.adopt_strings(&mut strings);
        }
        let longest = rules.rules.iter().filter_map(|r| r.escalate.as_ref()).map(|e| e.within_us).max();
        Self {
            windows: cfg.windows(),
            life: cfg.lifecycle(),
            cfg,
            longest_escalation_us: longest.unwrap_or(0),
            rules,
            correlations: default_rules(),
            state,
            templates: TemplateCache::default(),
            matches: MatchCache::default(),
            reasons: ReasonMemo::default(),
            strings,
            scratch: Vec::new(),
            object: String::new(),
        }
    }

    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// Processes one raw record read at (partition, offset). Takes the record: the enriched
    /// event is made of its strings, moved rather than copied.
    pub fn on_record(&mut self, record: RawRecord, partition: i32, offset: i64, out: &mut Vec<Output>) {
        match (record.kind, record.event, &record.heartbeat) {
            (RawKind::Event, Some(e), _) => self.on_event(&record.cluster, e, partition, offset, out),
            (RawKind::Heartbeat, _, Some(h)) => self.on_heartbeat(&record.cluster, h, out),
            _ => {}
        }
    }

    /// Processes one event observation. Takes it: the enriched event is made of its strings,
    /// moved rather than copied.
    pub fn on_event(&mut self, cluster: &str, e: EventObservation, partition: i32, offset: i64, out: &mut Vec<Output>) {
        let n = &e.normalized;
        let message = n.note.as_deref().unwrap_or("");
        let tmpl = self.templates.template(message);
        let regarding = n.regarding.as_ref();
        let kind = regarding.and_then(|r| r.kind.as_deref());
        let reason = n.reason.as_deref();
        let fp_hash = fingerprint_hash_in(
            &mut self.scratch,
            cluster,
            e.namespace.as_deref().unwrap_or(""),
            kind.unwrap_or(""),
            reason.unwrap_or(""),
            &tmpl,
        );
        let occurrences = if e.verb == WatchVerb::Deleted { 0 } else { e.new_occurrences.max(0) };
        let state = cluster_state(&mut self.state.clusters, cluster);
        let g = grade(&self.rules, &mut self.matches, &mut state.repetitions, cluster, n, occurrences);
        let mut incidents = Vec::new();
        let (rules, life, strings) = (&self.correlations, &self.life, &mut self.strings);
        state.correlator.on_event(rules, life, cluster, &mut self.reasons, strings, &e, &mut incidents);
        let mut late = None;
        if occurrences > 0 {
            let object = &mut self.object;
            object.clear();
            for (i, part) in
                [kind, regarding.and_then(|r| r.namespace.as_deref()), regarding.and_then(|r| r.name.as_deref())]
                    .into_iter()
                    .enumerate()
            {
                if i > 0 {
                    object.push('/');
                }
                object.push_str(part.unwrap_or(""));
            }
            let c = Contribution {
                fingerprint: fp_hash,
                event_time: n.event_time,
                occurrences,
                object,
                namespace: e.namespace.as_deref(),
                kind,
                reason,
                template: &tmpl,
                category: g.category,
                severity: g.severity,
                message: n.note.as_deref(),
            };
            late = state.windows.add(cluster, &self.windows, &mut self.strings, &c);
        }
        let event_time = n.event_time;
        out.push(Output::Enriched(enriched(cluster, e, &g, fp_hash, &tmpl, partition, offset)));
        // A late event re-emits its window's aggregate and moves no time forward.
        let was_late = late.is_some();
        out.extend(late.map(Output::Aggregate));
        out.extend(incidents.into_iter().map(Output::Incident));
        if !was_late {
            let (w, l, s) = (&self.windows, &self.life, &mut self.strings);
            advance(state, cluster, w, s, &self.correlations, l, self.longest_escalation_us, event_time, out);
        }
    }

    pub fn on_heartbeat(&mut self, cluster: &str, h: &Heartbeat, out: &mut Vec<Output>) {
        let t = h.producer_time.saturating_mul(1000).max(h.event_time_high.unwrap_or(i64::MIN));
        self.advance_cluster(cluster, t, out);
    }

    fn advance_cluster(&mut self, cluster: &str, t: i64, out: &mut Vec<Output>) {
        let c = cluster_state(&mut self.state.clusters, cluster);
        let (w, s) = (&self.windows, &mut self.strings);
        advance(c, cluster, w, s, &self.correlations, &self.life, self.longest_escalation_us, t, out);
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
        // The shared strings once, however many hold them.
        s.approx_bytes += crate::size::btree_map(&self.state.clusters) + self.strings.approx_bytes();
        for (name, c) in &self.state.clusters {
            s.open_groups += c.windows.open_groups();
            s.retained_groups += c.windows.retained_groups();
            s.repetition_keys += c.repetitions.len();
            s.correlation_entries += c.correlator.len();
            s.approx_bytes += crate::size::string(name)
                + c.windows.approx_bytes()
                + c.repetitions.approx_bytes()
                + c.correlator.approx_bytes();
        }
        s.memo_bytes = self.templates.approx_bytes() + self.matches.approx_bytes() + self.reasons.approx_bytes();
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

    /// Every incident emitted as open and not resolved yet, by cluster then key. Not an
    /// output: the live enricher hands them to the alerter after taking over a partition, so
    /// that alerts of incidents opened before a restart keep firing.
    pub fn open_incidents(&self) -> Vec<kev_schemas::Incident> {
        self.state.clusters.iter().flat_map(|(name, c)| c.correlator.open_incidents(&self.correlations, name)).collect()
    }

    /// Late events handled (re-emitted) and too late to handle, over all clusters.
    pub fn late_counts(&self) -> (i64, i64) {
        self.state.clusters.values().fold((0, 0), |(l, t), c| (l + c.windows.late, t + c.windows.too_late))
    }
}

/// Moves a cluster's event time to `t`: closes windows, updates and resolves incidents, forgets
/// old repetitions.
#[allow(clippy::too_many_arguments)]
fn advance(
    c: &mut ClusterState,
    cluster: &str,
    wcfg: &WindowConfig,
    strings: &mut Interner,
    correlations: &[CorrelationRule],
    life: &LifecycleConfig,
    longest_escalation_us: i64,
    t: i64,
    out: &mut Vec<Output>,
) {
    let mut closed = Vec::new();
    c.windows.advance(cluster, wcfg, strings, t, &mut closed);
    out.extend(closed.into_iter().map(Output::Aggregate));
    let Some(w) = c.windows.watermark(wcfg) else { return };
    let mut incidents = Vec::new();
    c.correlator.advance(correlations, life, cluster, strings, w, &mut incidents);
    out.extend(incidents.into_iter().map(Output::Incident));
    if c.repetitions_swept_at.is_none_or(|s| w >= s + 10_000_000) {
        c.repetitions_swept_at = Some(w);
        c.repetitions.expire(w - longest_escalation_us);
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
    e: EventObservation,
    g: &crate::classify::Grade,
    fp: u64,
    tmpl: &str,
    partition: i32,
    offset: i64,
) -> EnrichedEvent {
    let n = e.normalized;
    EnrichedEvent {
        cluster: cluster.to_string(),
        uid: e.uid,
        resource_version: e.resource_version,
        event_time: n.event_time,
        namespace: e.namespace,
        regarding: n.regarding,
        type_: n.type_,
        reason: n.reason,
        note: n.note,
        reporting_controller: n.reporting_controller,
        host: n.host,
        count: n.count,
        new_occurrences: e.new_occurrences,
        severity: g.severity,
        category: g.category.to_string(),
        fingerprint: crate::hex16(fp),
        template: tmpl.to_string(),
        raw_offset: offset,
        raw_partition: partition,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared strings stay bounded: every string the state drops is given back, across a
    /// save and restore too, and once time has moved past everything nothing is left.
    #[test]
    fn shared_strings_are_given_back_when_the_state_forgets_them() {
        let obs = kev_tests::data::observations();
        let mut e = Engine::new(EngineConfig::default(), RuleSet::defaults());
        let mut out = Vec::new();
        let half = obs.len() / 2;
        for (i, (c, o)) in obs[..half].iter().enumerate() {
            e.on_event(c, o.clone(), 0, i as i64, &mut out);
        }
        assert_eq!(e.strings.orphans(), 0);
        let saved = serde_json::to_string(e.state()).unwrap();
        let mut e =
            Engine::restore(EngineConfig::default(), RuleSet::defaults(), serde_json::from_str(&saved).unwrap());
        assert_eq!(e.strings.orphans(), 0);
        for (i, (c, o)) in obs[half..].iter().enumerate() {
            e.on_event(c, o.clone(), 0, (half + i) as i64, &mut out);
        }
        assert_eq!(e.strings.orphans(), 0);
        assert!(e.strings.len() > 0);
        let far = e.newest_time().unwrap() / 1000 + 86_400_000;
        let clusters: Vec<String> = e.state.clusters.keys().cloned().collect();
        for c in clusters {
            let h = Heartbeat {
                producer_time: far,
                event_time_high: None,
                resource_version: None,
                source: String::new(),
                producer_id: String::new(),
                recovery_offset: None,
            };
            e.on_heartbeat(&c, &h, &mut out);
        }
        assert_eq!(e.strings.len(), 0);
    }
}
