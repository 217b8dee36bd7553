//! Severity and category of each event, with escalation by repetition.

use kev_schemas::raw::NormalizedEvent;
use kev_schemas::Severity;
use serde::{Deserialize, Serialize};

use crate::rules::{MatchCache, RuleSet};

/// The grade of one event, borrowing the names from the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grade<'r> {
    pub severity: Severity,
    pub category: &'r str,
    /// Name of the rule that decided, `None` for the fallback.
    pub rule: Option<&'r str>,
}

/// Occurrences per (cluster, object, rule) in event time, for escalation. Keys are hashes so
/// the state stays small; entries older than the longest escalation window are dropped.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Repetitions {
    /// (time, occurrences) in arrival order, oldest first. A vector rather than a deque: it
    /// holds a few entries, grown by about a quarter at a time (a deque starts at four), and
    /// the table's buckets are smaller by a word.
    #[serde(with = "crate::pairs")]
    recent: crate::FastMap<u64, Vec<(i64, i64)>>,
}

impl Repetitions {
    /// Adds `n` occurrences at `time` and returns the occurrences within `within` up to `time`.
    fn add(&mut self, key: u64, time: i64, n: i64, within: i64) -> i64 {
        let q = self.recent.entry(key).or_default();
        if q.len() == q.capacity() {
            q.reserve_exact(1 + q.len() / 4);
        }
        q.push((time, n));
        let expired = q.iter().take_while(|(t, _)| *t <= time - within).count();
        q.drain(..expired);
        q.iter().filter(|(t, _)| *t <= time).map(|(_, n)| n).sum()
    }

    /// Forgets what cannot matter any more: entries older than `horizon`.
    pub fn expire(&mut self, horizon: i64) {
        self.recent.retain(|_, q| {
            let expired = q.iter().take_while(|(t, _)| *t < horizon).count();
            q.drain(..expired);
            if q.capacity() > q.len() + q.len() / 4 + 4 {
                q.shrink_to(q.len() + q.len() / 8);
            }
            !q.is_empty()
        });
        // A hash table keeps the buckets of its busiest time: give them back once mostly empty.
        if self.recent.capacity() > 4 * self.recent.len().max(8) {
            self.recent.shrink_to(2 * self.recent.len());
        }
    }

    pub fn len(&self) -> usize {
        self.recent.len()
    }

    /// Bytes held, for the state-size report.
    pub fn approx_bytes(&self) -> usize {
        crate::size::hash_map(&self.recent) + self.recent.values().map(crate::size::vec).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

/// Grades an event: the first matching rule, escalated when its object repeats it; otherwise
/// warning/other for Warning events and info/other for the rest.
pub fn grade<'r>(
    rules: &'r RuleSet,
    cache: &mut MatchCache,
    reps: &mut Repetitions,
    cluster: &str,
    e: &NormalizedEvent,
    occurrences: i64,
) -> Grade<'r> {
    let Some(i) = rules.first_match_cached(cache, e) else {
        let severity = if e.type_.as_deref() == Some("Warning") { Severity::Warning } else { Severity::Info };
        return Grade { severity, category: "other", rule: None };
    };
    let rule = &rules.rules[i];
    let mut severity = rule.severity;
    if let Some(esc) = &rule.escalate {
        let object = e.regarding.as_ref();
        if reps.add(escalation_key(cluster, object, i), e.event_time, occurrences.max(1), esc.within_us) >= esc.count {
            severity = severity.max(esc.to);
        }
    }
    Grade { severity, category: &rule.category, rule: Some(&rule.name) }
}

/// The key of (cluster, object, rule) in [`Repetitions`]: the xxh3 of
/// `cluster\0namespace\0kind\0name\0rule index`, hashed in one pass over a stack buffer when
/// it fits (it nearly always does).
fn escalation_key(cluster: &str, object: Option<&kev_schemas::raw::ResourceRef>, rule: usize) -> u64 {
    let parts = [
        cluster,
        object.and_then(|o| o.namespace.as_deref()).unwrap_or(""),
        object.and_then(|o| o.kind.as_deref()).unwrap_or(""),
        object.and_then(|o| o.name.as_deref()).unwrap_or(""),
    ];
    let mut buf = [0u8; 512];
    let mut at = 0;
    let mut put = |b: &[u8]| -> bool {
        let Some(dst) = buf.get_mut(at..at + b.len()) else { return false };
        dst.copy_from_slice(b);
        at += b.len();
        true
    };
    let mut digits = [0u8; 20];
    let mut d = digits.len();
    let mut v = rule;
    loop {
        d -= 1;
        digits[d] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if parts.iter().all(|p| put(p.as_bytes()) && put(b"\0")) && put(&digits[d..]) {
        return xxhash_rust::xxh3::xxh3_64(&buf[..at]);
    }
    let key = format!("{}\0{}\0{}\0{}\0{rule}", parts[0], parts[1], parts[2], parts[3]);
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use kev_schemas::raw::ResourceRef;

    #[test]
    fn escalation_keys_hash_the_formatted_key() {
        let o = ResourceRef {
            namespace: Some("prod".into()),
            kind: Some("Pod".into()),
            name: Some("web-1".into()),
            ..Default::default()
        };
        for rule in [0, 7, 10, 123] {
            let want = xxhash_rust::xxh3::xxh3_64(format!("c\0prod\0Pod\0web-1\0{rule}").as_bytes());
            assert_eq!(super::escalation_key("c", Some(&o), rule), want);
        }
        let long = "x".repeat(600);
        let want = xxhash_rust::xxh3::xxh3_64(format!("{long}\0\0\0\03").as_bytes());
        assert_eq!(super::escalation_key(&long, None, 3), want);
    }
}
