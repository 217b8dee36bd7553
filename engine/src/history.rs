//! What an incident's fault did before: per signature, how often it opened an incident and when.
//!
//! A signature names a fault the way a person would recognise it again tomorrow: the rule, the
//! cluster, the namespace, what it is about (the owner workload of a pod, the missing object, the
//! node) and the template of its root reason's detail. Pod-name hashes, restarts and new uids
//! leave it unchanged, so "the same missing Secret again" or "the same deployment failing its
//! probes again" finds the earlier incidents.
//!
//! The history is state like the rest: saved in checkpoints and rebuilt by a replay from the
//! same records, so live and replayed incidents carry the same recurrence. It is bounded in
//! entries and in age (event time), forgetting the faults seen longest ago first.

use serde::{Deserialize, Serialize};

use crate::sorted::SortedVec;

/// A fault's past, as one incident record carries it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recurrence {
    /// The signature, hashed (16 hex digits in the record).
    pub signature: u64,
    /// Incidents with this signature opened before this one (within the history's bounds).
    pub previous: u32,
    /// When the first of them opened, in microseconds of event time.
    pub first_seen: Option<i64>,
    /// When the latest of them opened.
    pub last_seen: Option<i64>,
    /// The latest of them.
    pub last_incident: Option<u64>,
}

impl Recurrence {
    /// The phrase a summary ends with: "2nd time since 2021-09-12, last 2021-09-13 14:57", or
    /// nothing for a first time.
    pub fn phrase(&self) -> Option<String> {
        let (first, last) = (self.first_seen?, self.last_seen?);
        let n = u64::from(self.previous) + 1;
        let suffix = match (n % 10, n % 100) {
            (_, 11..=13) => "th",
            (1, _) => "st",
            (2, _) => "nd",
            (3, _) => "rd",
            _ => "th",
        };
        Some(format!("{n}{suffix} time since {}, last {}", day(first), minute(last)))
    }
}

fn at(us: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn day(us: i64) -> String {
    at(us).format("%Y-%m-%d").to_string()
}

fn minute(us: i64) -> String {
    at(us).format("%Y-%m-%d %H:%M").to_string()
}

/// The signature of a fault from its parts (see the module's documentation).
pub fn signature(rule: &str, cluster: &str, namespace: &str, subject: &str, reason: &str, detail: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [rule, cluster, namespace, subject, reason, &crate::template::template(detail)] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    h.digest()
}

/// One signature's past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    count: u32,
    first: i64,
    last: i64,
    #[serde(with = "crate::hex_id")]
    last_incident: u64,
}

/// Bounds of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLimits {
    /// Signatures kept; past it the one seen longest ago is forgotten.
    pub max_entries: usize,
    /// A signature not seen for this long (event time, microseconds) is forgotten.
    pub max_age_us: i64,
}

/// Per signature, the incidents it opened, bounded by [`HistoryLimits`].
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct History {
    seen: SortedVec<u64, Seen>,
}

impl History {
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.len() == 0
    }

    pub fn approx_bytes(&self) -> usize {
        self.seen.approx_bytes()
    }

    /// What came before incident `id`, opened at `opened_at` with `signature`; then records it.
    /// An incident recorded already under this signature is not its own predecessor: it is
    /// neither counted nor recorded again (the incident keeps what it recalled the first time).
    pub fn recall_and_record(&mut self, signature: u64, id: u64, opened_at: i64, limits: &HistoryLimits) -> Recurrence {
        let mut r = Recurrence { signature, ..Recurrence::default() };
        if let Some(s) = self.seen.get(&signature) {
            if s.last_incident == id {
                return r;
            }
            r.previous = s.count;
            r.first_seen = Some(s.first);
            r.last_seen = Some(s.last);
            r.last_incident = Some(s.last_incident);
        }
        let s = self.seen.get_or_insert_with(signature, || Seen {
            count: 0,
            first: opened_at,
            last: opened_at,
            last_incident: id,
        });
        s.count = s.count.saturating_add(1);
        s.first = s.first.min(opened_at);
        s.last = s.last.max(opened_at);
        s.last_incident = id;
        while self.seen.len() > limits.max_entries.max(1) {
            // The entry seen longest ago (then the smallest signature): the same on every run.
            let oldest = self.seen.iter().min_by_key(|(k, s)| (s.last, **k)).map(|(k, _)| *k);
            match oldest {
                Some(k) => {
                    self.seen.remove(&k);
                }
                None => break,
            }
        }
        r
    }

    /// Forgets signatures last seen before `horizon`.
    pub fn forget_before(&mut self, horizon: i64) {
        self.seen.retain(|_, s| s.last >= horizon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HistoryLimits = HistoryLimits { max_entries: 2, max_age_us: i64::MAX };
    const DAY: i64 = 86_400_000_000;

    #[test]
    fn a_fault_seen_again_recalls_its_past() {
        let mut h = History::default();
        let t0 = 1_631_404_800_000_000; // 2021-09-12 00:00 UTC
        assert_eq!(h.recall_and_record(7, 100, t0, &LIMITS).previous, 0);
        let second = h.recall_and_record(7, 101, t0 + DAY + 3_600_000_000, &LIMITS);
        assert_eq!((second.previous, second.last_incident), (1, Some(100)));
        let third = h.recall_and_record(7, 102, t0 + 2 * DAY, &LIMITS);
        assert_eq!((third.previous, third.first_seen, third.last_incident), (2, Some(t0), Some(101)));
        assert_eq!(third.phrase().unwrap(), "3rd time since 2021-09-12, last 2021-09-13 01:00");
        // The same incident again (its root changed back) is not its own predecessor.
        assert_eq!(h.recall_and_record(7, 102, t0 + 2 * DAY, &LIMITS).previous, 0);
    }

    #[test]
    fn the_history_is_bounded_in_entries_and_age() {
        let mut h = History::default();
        for (sig, t) in [(1, 10), (2, 20), (3, 30)] {
            h.recall_and_record(sig, sig, t, &LIMITS);
        }
        assert_eq!(h.len(), 2, "the oldest signature is forgotten past the bound");
        assert_eq!(h.recall_and_record(1, 9, 40, &LIMITS).previous, 0);
        h.forget_before(35);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn ordinals_read_as_english() {
        let r = |previous| Recurrence { previous, first_seen: Some(0), last_seen: Some(0), ..Default::default() };
        let words: Vec<String> =
            [0, 1, 2, 10, 11, 12, 20, 21].map(|p| r(p).phrase().unwrap().split(' ').next().unwrap().to_string()).into();
        assert_eq!(words, ["1st", "2nd", "3rd", "11th", "12th", "13th", "21st", "22nd"]);
    }
}
