//! Severity and category of each event, with escalation by repetition.

use std::collections::VecDeque;

use kev_schemas::raw::NormalizedEvent;
use kev_schemas::Severity;
use serde::{Deserialize, Serialize};

use crate::rules::{MatchCache, RuleSet};

/// The grade of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grade {
    pub severity: Severity,
    pub category: String,
    /// Name of the rule that decided, `None` for the fallback.
    pub rule: Option<String>,
}

/// Occurrences per (cluster, object, rule) in event time, for escalation. Keys are hashes so
/// the state stays small; entries older than the longest escalation window are dropped.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Repetitions {
    #[serde(with = "crate::pairs")]
    recent: crate::FastMap<u64, VecDeque<(i64, i64)>>,
}

impl Repetitions {
    /// Adds `n` occurrences at `time` and returns the occurrences within `within` up to `time`.
    fn add(&mut self, key: u64, time: i64, n: i64, within: i64) -> i64 {
        let q = self.recent.entry(key).or_default();
        q.push_back((time, n));
        while q.front().is_some_and(|(t, _)| *t <= time - within) {
            q.pop_front();
        }
        q.iter().filter(|(t, _)| *t <= time).map(|(_, n)| n).sum()
    }

    /// Forgets what cannot matter any more: entries older than `horizon`.
    pub fn expire(&mut self, horizon: i64) {
        self.recent.retain(|_, q| {
            while q.front().is_some_and(|(t, _)| *t < horizon) {
                q.pop_front();
            }
            !q.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

/// Grades an event: the first matching rule, escalated when its object repeats it; otherwise
/// warning/other for Warning events and info/other for the rest.
pub fn grade(
    rules: &RuleSet,
    cache: &mut MatchCache,
    reps: &mut Repetitions,
    cluster: &str,
    e: &NormalizedEvent,
    occurrences: i64,
) -> Grade {
    let Some(i) = rules.first_match_cached(cache, e) else {
        let severity = if e.type_.as_deref() == Some("Warning") { Severity::Warning } else { Severity::Info };
        return Grade { severity, category: "other".into(), rule: None };
    };
    let rule = &rules.rules[i];
    let mut severity = rule.severity;
    if let Some(esc) = &rule.escalate {
        let object = e.regarding.as_ref();
        let key = xxhash_rust::xxh3::xxh3_64(
            format!(
                "{cluster}\0{}\0{}\0{}\0{i}",
                object.and_then(|o| o.namespace.as_deref()).unwrap_or(""),
                object.and_then(|o| o.kind.as_deref()).unwrap_or(""),
                object.and_then(|o| o.name.as_deref()).unwrap_or(""),
            )
            .as_bytes(),
        );
        if reps.add(key, e.event_time, occurrences.max(1), esc.within_us) >= esc.count {
            severity = severity.max(esc.to);
        }
    }
    Grade { severity, category: rule.category.clone(), rule: Some(rule.name.clone()) }
}
