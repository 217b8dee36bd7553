//! What the producer has published, per Event uid: the memory that makes publishing exactly once.
//!
//! Pure state, no I/O. It is never persisted locally: after a restart, a leader handover or a
//! session failure it is rebuilt from the raw topic itself (see `recover`), so Kafka is the only
//! source of truth and a new replica on another node knows what the old one published.

use std::collections::{BTreeMap, HashMap, HashSet};

use kev_schemas::WatchVerb;

/// What was last published for one Event uid.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Namespace of the Event object, so that a relist of one namespace forgets only its own.
    namespace: Option<String>,
    resource_version: String,
    count: i64,
    /// Offset of the record in the raw partition, once Kafka acknowledged it.
    offset: Option<i64>,
}

/// What to do with an observed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Publish it: new, changed or deleted, with the occurrences it adds.
    Publish { verb: WatchVerb, new_occurrences: i64 },
    /// This (uid, resourceVersion) was published already (a relist, a re-watch, a restart).
    Duplicate,
    /// Older than what was published (a stale cache answered a LIST); publishing it would go
    /// back in time.
    Stale,
}

impl Decision {
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Publish { .. } => "publish",
            Decision::Duplicate => "duplicate",
            Decision::Stale => "stale",
        }
    }
}

/// Kept up to date with every change rather than computed from the entries: a heartbeat asks
/// for both, and a pass over every entry per heartbeat was 7% of a 200,000-Event replay's CPU
/// and grows with the state (BENCHMARKS.md, session 16).
#[derive(Debug, Default)]
pub struct DedupState {
    entries: HashMap<String, Entry>,
    /// Offset after the newest acknowledged record of this producer: where records not yet
    /// acknowledged will land at the earliest.
    next_offset: i64,
    /// The acknowledged offsets of the entries, each with how many entries hold it (one, but a
    /// count keeps a double acknowledgement from corrupting the set).
    offsets: BTreeMap<i64, u32>,
    /// [`DedupState::approx_bytes`] so far.
    bytes: usize,
}

/// Compares resource versions: numerically when both are numbers (etcd revisions, in practice
/// always), otherwise they are opaque and only equality is known.
fn is_older(candidate: &str, published: &str) -> bool {
    match (candidate.parse::<u64>(), published.parse::<u64>()) {
        (Ok(c), Ok(p)) => c < p,
        _ => false,
    }
}

impl Entry {
    fn approx_bytes(&self, uid: &str) -> usize {
        uid.len() + self.resource_version.len() + std::mem::size_of::<Entry>() + 48
    }
}

impl DedupState {
    /// An empty state whose records will land at `next_offset` or later.
    pub fn new(next_offset: i64) -> Self {
        Self { next_offset, ..Default::default() }
    }

    fn hold_offset(&mut self, offset: i64) {
        *self.offsets.entry(offset).or_default() += 1;
    }

    fn release_offset(&mut self, offset: Option<i64>) {
        if let Some(o) = offset {
            if let std::collections::btree_map::Entry::Occupied(mut held) = self.offsets.entry(o) {
                *held.get_mut() -= 1;
                if *held.get() == 0 {
                    held.remove();
                }
            }
        }
    }

    /// Takes `uid`'s entry out, with its share of the bookkeeping.
    fn remove(&mut self, uid: &str) {
        if let Some(old) = self.entries.remove(uid) {
            self.bytes -= old.approx_bytes(uid);
            self.release_offset(old.offset);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Decides about an observation without changing the state; call [`DedupState::published`]
    /// once the record is handed to Kafka.
    pub fn decide(&self, uid: &str, resource_version: &str, count: i64, deleted: bool) -> Decision {
        match self.entries.get(uid) {
            Some(e) if e.resource_version == resource_version => Decision::Duplicate,
            Some(e) if is_older(resource_version, &e.resource_version) => Decision::Stale,
            Some(e) => Decision::Publish {
                verb: if deleted { WatchVerb::Deleted } else { WatchVerb::Modified },
                new_occurrences: (count - e.count).max(0),
            },
            None => Decision::Publish {
                verb: if deleted { WatchVerb::Deleted } else { WatchVerb::Added },
                new_occurrences: count,
            },
        }
    }

    /// Records that an observation was handed to Kafka (not yet acknowledged).
    pub fn published(
        &mut self,
        uid: &str,
        namespace: Option<&str>,
        resource_version: &str,
        count: i64,
        verb: WatchVerb,
    ) {
        self.remove(uid);
        if verb != WatchVerb::Deleted {
            let entry = Entry {
                namespace: namespace.map(str::to_string),
                resource_version: resource_version.to_string(),
                count,
                offset: None,
            };
            self.bytes += entry.approx_bytes(uid);
            self.entries.insert(uid.to_string(), entry);
        }
    }

    /// Records Kafka's acknowledgement of the record for (uid, resourceVersion) at `offset`.
    pub fn acknowledged(&mut self, uid: &str, resource_version: &str, offset: i64) {
        self.next_offset = self.next_offset.max(offset + 1);
        let Some(e) = self.entries.get_mut(uid) else { return };
        if e.resource_version == resource_version {
            let before = e.offset.replace(offset);
            self.release_offset(before);
            self.hold_offset(offset);
        }
    }

    /// Applies a record read back from the raw topic (recovery).
    pub fn replay(
        &mut self,
        uid: &str,
        namespace: Option<&str>,
        resource_version: &str,
        count: i64,
        verb: WatchVerb,
        offset: i64,
    ) {
        self.published(uid, namespace, resource_version, count, verb);
        self.acknowledged(uid, resource_version, offset);
    }

    /// After a complete LIST of `scope` (one namespace, or all when `None`): forgets the uids
    /// of that scope the API server no longer has (deleted while kev was not watching), so the
    /// state does not grow without bound. Records not yet acknowledged are kept. Returns how
    /// many were forgotten.
    pub fn retain_listed(&mut self, scope: Option<&str>, listed: &HashSet<String>) -> usize {
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(uid, e)| {
                let in_scope = scope.is_none() || e.namespace.as_deref() == scope;
                in_scope && !listed.contains(*uid) && e.offset.is_some()
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &gone {
            self.remove(uid);
        }
        gone.len()
    }

    /// The oldest offset a restarting producer must re-read to rebuild this state: the oldest
    /// acknowledged record still alive. Records not yet acknowledged land after every
    /// acknowledged one (one producer, one partition, in order), so they never lower it.
    pub fn recovery_offset(&self) -> i64 {
        self.offsets.keys().next().copied().unwrap_or(self.next_offset)
    }

    /// Rough bytes held, for the state-size metric.
    pub fn approx_bytes(&self) -> usize {
        self.bytes
    }

    /// The bookkeeping recomputed from the entries, for tests: (recovery offset, bytes).
    #[cfg(test)]
    fn recomputed(&self) -> (i64, usize) {
        let offset = self.entries.values().filter_map(|e| e.offset).min().unwrap_or(self.next_offset);
        (offset, self.entries.iter().map(|(uid, e)| e.approx_bytes(uid)).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counts_only_the_new_occurrences() {
        let mut s = DedupState::new(0);
        let d = s.decide("u", "10", 5, false);
        assert_eq!(d, Decision::Publish { verb: WatchVerb::Added, new_occurrences: 5 });
        s.published("u", None, "10", 5, WatchVerb::Added);
        assert_eq!(s.decide("u", "10", 5, false), Decision::Duplicate);
        assert_eq!(s.decide("u", "14", 9, false), Decision::Publish { verb: WatchVerb::Modified, new_occurrences: 4 });
        assert_eq!(s.decide("u", "9", 4, false), Decision::Stale);
        s.published("u", None, "14", 9, WatchVerb::Modified);
        assert_eq!(s.decide("u", "15", 9, true), Decision::Publish { verb: WatchVerb::Deleted, new_occurrences: 0 });
        s.published("u", None, "15", 9, WatchVerb::Deleted);
        assert!(s.is_empty());
    }

    #[test]
    fn recovery_offset_is_the_oldest_live_acknowledged_record() {
        let mut s = DedupState::new(100);
        assert_eq!(s.recovery_offset(), 100);
        s.replay("a", Some("ns1"), "1", 1, WatchVerb::Added, 100);
        s.replay("b", Some("ns1"), "2", 1, WatchVerb::Added, 101);
        s.replay("d", Some("ns2"), "5", 1, WatchVerb::Added, 99);
        s.published("c", Some("ns1"), "3", 1, WatchVerb::Added);
        assert_eq!(s.recovery_offset(), 99);
        let listed: HashSet<String> = ["d".to_string()].into();
        assert_eq!(s.retain_listed(Some("ns2"), &listed), 0, "a list of ns2 leaves ns1 alone");
        s.replay("d", Some("ns2"), "6", 1, WatchVerb::Deleted, 102);
        assert_eq!(s.recovery_offset(), 100);
        s.replay("a", Some("ns1"), "4", 1, WatchVerb::Deleted, 103);
        assert_eq!(s.recovery_offset(), 101);
        let listed: HashSet<String> = ["c".to_string()].into();
        assert_eq!(s.retain_listed(None, &listed), 1, "b is gone from the API; c is pending and kept");
        assert_eq!(s.recovery_offset(), 104);
        s.acknowledged("c", "3", 104);
        assert_eq!(s.recovery_offset(), 104);
        assert_eq!((s.recovery_offset(), s.approx_bytes()), s.recomputed());
    }

    proptest! {
        /// The offsets and bytes kept along the way match the entries after any mix of
        /// publications, acknowledgements (late, repeated, of a superseded version), deletions
        /// and relists.
        #[test]
        fn bookkeeping_matches_the_entries(ops in proptest::collection::vec((0u8..4, 0u8..8, 1u64..20, 0i64..30), 1..300)) {
            let mut s = DedupState::new(0);
            for (op, uid, rv, offset) in ops {
                let (uid, rv) = (format!("u{uid}"), rv.to_string());
                match op {
                    0 => s.published(&uid, Some(if uid.as_str() < "u4" { "a" } else { "b" }), &rv, 1, WatchVerb::Modified),
                    1 => s.acknowledged(&uid, &rv, offset),
                    2 => s.published(&uid, None, &rv, 1, WatchVerb::Deleted),
                    _ => {
                        let listed: HashSet<String> = [uid].into();
                        s.retain_listed(if rv.len() == 1 { Some("a") } else { None }, &listed);
                    }
                }
                prop_assert_eq!((s.recovery_offset(), s.approx_bytes()), s.recomputed());
            }
        }
    }

    proptest! {
        /// Rebuilding from the records a run published gives the same decisions as the run's
        /// own state: the heart of "no duplicates across restarts".
        #[test]
        fn rebuilt_state_decides_like_the_original(ops in proptest::collection::vec((0u8..6, 1u64..40, 1i64..50, any::<bool>()), 1..200)) {
            let mut live = DedupState::new(0);
            let mut log = Vec::new();
            for (uid, rv, count, deleted) in &ops {
                let (uid, rv) = (format!("u{uid}"), rv.to_string());
                if let Decision::Publish { verb, .. } = live.decide(&uid, &rv, *count, *deleted) {
                    live.published(&uid, None, &rv, *count, verb);
                    let offset = log.len() as i64;
                    live.acknowledged(&uid, &rv, offset);
                    log.push((uid, rv, *count, verb));
                }
                prop_assert_eq!((live.recovery_offset(), live.approx_bytes()), live.recomputed());
            }
            let start = live.recovery_offset() as usize;
            let mut rebuilt = DedupState::new(start as i64);
            for (offset, (uid, rv, count, verb)) in log.iter().enumerate().skip(start) {
                rebuilt.replay(uid, None, rv, *count, *verb, offset as i64);
            }
            for uid in 0..6 {
                for rv in 1..40u64 {
                    let (uid, rv) = (format!("u{uid}"), rv.to_string());
                    prop_assert_eq!(live.decide(&uid, &rv, 7, false), rebuilt.decide(&uid, &rv, 7, false));
                }
            }
        }
    }
}
