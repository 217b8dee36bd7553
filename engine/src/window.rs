//! Event-time tumbling windows per fingerprint, closed by a per-cluster watermark.
//!
//! The watermark of a cluster is the newest event time or heartbeat time seen, minus the
//! allowed lateness. A window is emitted once, when the watermark passes its end. An event for
//! a window already closed (late) is not dropped: while the closed window is still retained
//! (`late_retention` after its end), the event is added and the whole aggregate is emitted again
//! with `late_events` counting it, under the same key, so a compacted topic or a ksqlDB TABLE
//! ends with the corrected value. Later than that it is counted in `too_late` (the enriched
//! event itself is still emitted).

use std::sync::Arc;

use kev_schemas::{Aggregate, Severity};
use serde::{Deserialize, Serialize};

use crate::intern::{Interner, Meta, MetaRef, Text};
use crate::sorted::SortedVec;

/// Window settings, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WindowConfig {
    pub size_us: i64,
    pub lateness_us: i64,
    pub late_retention_us: i64,
    pub top_objects: usize,
}

/// What one occurrence batch contributes to a group.
#[derive(Debug, Clone)]
pub struct Contribution<'a> {
    pub fingerprint: u64,
    pub event_time: i64,
    pub occurrences: i64,
    pub object: &'a str,
    pub namespace: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub template: &'a str,
    pub category: &'a str,
    pub severity: Severity,
    pub message: Option<&'a str>,
}

/// One (fingerprint, window) group. Its strings are shared engine-wide ([`Interner`]); it
/// saves as the strings themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "GroupRepr", into = "GroupRepr")]
struct Group {
    /// Kind, reason, template and category: alike in every window of a fingerprint, and in
    /// many namespaces.
    meta: Arc<Meta>,
    namespace: Option<Text>,
    sample: Option<Text>,
    /// (object, occurrences), sorted by object. Exactly as long as it needs to be, where a
    /// vector would take a word more and spare room: most groups name a few objects, and a
    /// new object (one reallocation) is rarer than a new occurrence. Their occurrences add up
    /// to the group's count, which is not kept apart (see [`Group::count`]).
    objects: Box<[(Text, i64)]>,
    first: i64,
    last: i64,
    late_severity: LateSeverity,
}

/// The late events a group took and its highest severity, in one word, where apart they would
/// take two (a byte and seven of padding). The count keeps 56 bits, signed: exact below 2^55 late events, far more
/// than a window can take.
#[derive(Debug, Clone, Copy)]
struct LateSeverity(i64);

impl LateSeverity {
    fn new(late: i64, severity: Severity) -> Self {
        let s = match severity {
            Severity::Info => 0,
            Severity::Warning => 1,
            Severity::Error => 2,
            Severity::Critical => 3,
            Severity::Unknown => 4,
        };
        LateSeverity(late << 8 | s)
    }

    fn late(self) -> i64 {
        self.0 >> 8
    }

    fn severity(self) -> Severity {
        match self.0 & 0xff {
            0 => Severity::Info,
            1 => Severity::Warning,
            2 => Severity::Error,
            3 => Severity::Critical,
            _ => Severity::Unknown,
        }
    }
}

/// A group as it is saved: the format of the checkpoints before the strings were shared.
#[derive(Serialize, Deserialize)]
struct GroupRepr {
    namespace: Option<Box<str>>,
    kind: Option<Box<str>>,
    reason: Option<Box<str>>,
    template: Box<str>,
    category: Box<str>,
    severity: Severity,
    count: i64,
    objects: Vec<(Box<str>, i64)>,
    first: i64,
    last: i64,
    sample: Option<Box<str>>,
    late: i64,
}

impl From<GroupRepr> for Group {
    fn from(r: GroupRepr) -> Self {
        Group {
            meta: Arc::new(Meta { kind: r.kind, reason: r.reason, template: r.template, category: r.category }),
            namespace: r.namespace.as_deref().map(Text::new),
            sample: r.sample.as_deref().map(Text::new),
            objects: r.objects.iter().map(|(o, n)| (Text::new(o), *n)).collect(),
            first: r.first,
            last: r.last,
            late_severity: LateSeverity::new(r.late, r.severity),
        }
    }
}

impl From<Group> for GroupRepr {
    fn from(g: Group) -> Self {
        let m = &*g.meta;
        GroupRepr {
            namespace: g.namespace.as_deref().map(Box::from),
            kind: m.kind.clone(),
            reason: m.reason.clone(),
            template: m.template.clone(),
            category: m.category.clone(),
            severity: g.late_severity.severity(),
            count: g.count(),
            objects: g.objects.iter().map(|(o, n)| (Box::from(&**o), *n)).collect(),
            first: g.first,
            last: g.last,
            sample: g.sample.as_deref().map(Box::from),
            late: g.late_severity.late(),
        }
    }
}

/// Groups by (start, fingerprint), in key order so closing and output order are
/// deterministic: by start, then each window's groups by fingerprint. A window's groups share
/// its start, so each keeps only its fingerprint (8 bytes a group), and a window closes as a
/// whole. Saved as a sequence of ((start, fingerprint), group) pairs, as a map by (start,
/// fingerprint) was.
#[derive(Debug, Default, Clone)]
struct Windows(SortedVec<i64, SortedVec<u64, Group>>);

impl Windows {
    fn len(&self) -> usize {
        self.0.values().map(SortedVec::len).sum()
    }

    fn values(&self) -> impl Iterator<Item = &Group> {
        self.0.values().flat_map(SortedVec::values)
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Group> {
        self.0.values_mut().flat_map(SortedVec::values_mut)
    }

    fn get_or_insert_with(&mut self, (start, fp): (i64, u64), make: impl FnOnce() -> Group) -> &mut Group {
        self.reserve_window(start);
        self.0.get_or_insert_with(start, SortedVec::default).get_or_insert_with(fp, make)
    }

    /// Room for one more window, if `start` is new: a cluster has a few windows at a time, so
    /// they grow by one, not by a vector's usual step.
    fn reserve_window(&mut self, start: i64) {
        if self.0.get(&start).is_none() {
            self.0.reserve_exact(1);
        }
    }

    /// Adds a window's groups: moved when it has none here yet, without the spare room it had
    /// while open (a closed window takes only late events).
    fn insert_window(&mut self, start: i64, mut groups: SortedVec<u64, Group>) {
        self.reserve_window(start);
        match self.0.get_mut(&start) {
            None => {
                groups.shrink_to_fit();
                self.0.insert(start, groups);
            }
            Some(mine) => groups.into_iter().for_each(|(fp, g)| {
                mine.insert(fp, g);
            }),
        }
    }

    /// Removes the windows whose starts satisfy `front` (true for the first starts, false
    /// after), in order, handing each to `f`.
    fn remove_front_while(&mut self, front: impl Fn(i64) -> bool, f: impl FnMut((i64, SortedVec<u64, Group>))) {
        self.0.remove_front_while(|start| front(*start), f);
    }

    /// Bytes held, but the shared strings.
    fn approx_bytes(&self) -> usize {
        self.0.approx_bytes()
            + self.0.values().map(SortedVec::approx_bytes).sum::<usize>()
            + self.values().map(Group::heap_bytes).sum::<usize>()
    }
}

impl Serialize for Windows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().flat_map(|(start, w)| w.iter().map(move |(fp, g)| ((*start, *fp), g))))
    }
}

impl<'de> Deserialize<'de> for Windows {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Read as the map it was saved from (sorted, the last of equal keys kept), then split.
        let flat = SortedVec::<(i64, u64), Group>::deserialize(d)?;
        let mut windows: Vec<(i64, Vec<(u64, Group)>)> = Vec::new();
        for ((start, fp), g) in flat {
            match windows.last_mut() {
                Some((s, w)) if *s == start => w.push((fp, g)),
                _ => windows.push((start, vec![(fp, g)])),
            }
        }
        let windows = windows.into_iter().map(|(start, w)| (start, SortedVec::from_sorted(w))).collect();
        Ok(Windows(SortedVec::from_sorted(windows)))
    }
}

/// The windows of one cluster.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ClusterWindows {
    /// Newest event or heartbeat time seen.
    high: Option<i64>,
    /// Open windows.
    open: Windows,
    /// Closed windows kept for late events.
    closed: Windows,
    pub too_late: i64,
    pub late: i64,
}

impl ClusterWindows {
    pub fn watermark(&self, cfg: &WindowConfig) -> Option<i64> {
        self.high.map(|h| h - cfg.lateness_us)
    }

    /// Newest event or heartbeat time seen, in microseconds.
    pub fn newest(&self) -> Option<i64> {
        self.high
    }

    pub fn open_groups(&self) -> usize {
        self.open.len()
    }

    pub fn retained_groups(&self) -> usize {
        self.closed.len()
    }

    /// Bytes held, for the state-size report (see `crate::size`); the shared strings are
    /// counted once, in the [`Interner`].
    pub fn approx_bytes(&self) -> usize {
        self.open.approx_bytes() + self.closed.approx_bytes()
    }

    /// Takes the interner's copies of the strings of a restored state.
    pub(crate) fn adopt_strings(&mut self, strings: &mut Interner) {
        for g in self.open.values_mut().chain(self.closed.values_mut()) {
            strings.adopt_meta(&mut g.meta);
            for s in g.namespace.iter_mut().chain(g.sample.as_mut()) {
                strings.adopt(s);
            }
            for (o, _) in g.objects.iter_mut() {
                strings.adopt(o);
            }
        }
    }

    /// Adds a contribution; returns an aggregate to emit at once when it was late.
    pub(crate) fn add(
        &mut self,
        cluster: &str,
        cfg: &WindowConfig,
        strings: &mut Interner,
        c: &Contribution,
    ) -> Option<Aggregate> {
        let start = c.event_time.div_euclid(cfg.size_us) * cfg.size_us;
        let key = (start, c.fingerprint);
        let closed_already = self.watermark(cfg).is_some_and(|w| start + cfg.size_us <= w);
        if !closed_already {
            self.open.get_or_insert_with(key, || Group::new(strings, c)).add(strings, c);
            return None;
        }
        let horizon = self.watermark(cfg).unwrap_or(i64::MIN) - cfg.late_retention_us;
        if start + cfg.size_us <= horizon {
            self.too_late += 1;
            return None;
        }
        self.late += 1;
        let g = self.closed.get_or_insert_with(key, || Group::new(strings, c));
        g.add(strings, c);
        g.late_severity = LateSeverity::new(g.late_severity.late() + 1, g.late_severity.severity());
        Some(g.aggregate(cluster, key.1, key.0, cfg))
    }

    /// Moves time forward to `t` and emits the windows that close, in (start, fingerprint)
    /// order.
    pub(crate) fn advance(
        &mut self,
        cluster: &str,
        cfg: &WindowConfig,
        strings: &mut Interner,
        t: i64,
        out: &mut Vec<Aggregate>,
    ) {
        if self.high.is_some_and(|h| h >= t) {
            return;
        }
        self.high = Some(t);
        let w = t - cfg.lateness_us;
        let closed = &mut self.closed;
        self.open.remove_front_while(
            |start| start + cfg.size_us <= w,
            |(start, groups)| {
                out.extend(groups.iter().map(|(fp, g)| g.aggregate(cluster, *fp, start, cfg)));
                closed.insert_window(start, groups);
            },
        );
        let horizon = w - cfg.late_retention_us;
        self.closed.remove_front_while(
            |start| start + cfg.size_us <= horizon,
            |(_, groups)| groups.into_iter().for_each(|(_, g)| g.release(strings)),
        );
    }

    /// Closes every open window (end of a bounded replay).
    pub(crate) fn close_all(&mut self, cluster: &str, cfg: &WindowConfig, out: &mut Vec<Aggregate>) {
        self.open.remove_front_while(
            |_| true,
            |(start, groups)| {
                out.extend(groups.iter().map(|(fp, g)| g.aggregate(cluster, *fp, start, cfg)));
                self.closed.insert_window(start, groups);
            },
        );
    }
}

impl Group {
    fn new(strings: &mut Interner, c: &Contribution) -> Self {
        let meta = MetaRef { kind: c.kind, reason: c.reason, template: c.template, category: c.category };
        Group {
            meta: strings.meta(meta),
            namespace: c.namespace.map(|n| strings.str(n)),
            sample: c.message.map(|m| strings.str(m)),
            objects: Box::default(),
            first: c.event_time,
            last: c.event_time,
            late_severity: LateSeverity::new(0, c.severity),
        }
    }

    fn add(&mut self, strings: &mut Interner, c: &Contribution) {
        let ls = self.late_severity;
        self.late_severity = LateSeverity::new(ls.late(), ls.severity().max(c.severity));
        self.first = self.first.min(c.event_time);
        self.last = self.last.max(c.event_time);
        match self.objects.binary_search_by(|(o, _)| (**o).cmp(c.object)) {
            Ok(i) => self.objects[i].1 += c.occurrences,
            Err(i) => {
                let mut objects = std::mem::take(&mut self.objects).into_vec();
                objects.reserve_exact(1);
                objects.insert(i, (strings.str(c.object), c.occurrences));
                self.objects = objects.into_boxed_slice();
            }
        }
    }

    /// Gives the shared strings back before the group is dropped.
    fn release(self, strings: &mut Interner) {
        strings.release_meta(self.meta);
        strings.release_all(self.namespace);
        strings.release_all(self.sample);
        strings.release_all(self.objects.into_vec().into_iter().map(|(o, _)| o));
    }

    /// Occurrences in the window: every occurrence added goes to one object, so the objects'
    /// sum is the count, and keeping it apart would take 8 bytes a group. A saved group's
    /// count is that sum too; one edited by hand to disagree is read as the sum.
    fn count(&self) -> i64 {
        self.objects.iter().map(|(_, n)| n).sum()
    }

    /// Bytes held outside the group itself and the interner.
    fn heap_bytes(&self) -> usize {
        std::mem::size_of_val::<[(Text, i64)]>(&self.objects)
    }

    fn aggregate(&self, cluster: &str, fingerprint: u64, start: i64, cfg: &WindowConfig) -> Aggregate {
        let mut top: Vec<&(Text, i64)> = self.objects.iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let m = &*self.meta;
        let minutes = cfg.size_us as f64 / 60_000_000.0;
        let count = self.count();
        Aggregate {
            cluster: cluster.to_string(),
            fingerprint: crate::hex16(fingerprint),
            window_start: start,
            window_end: start + cfg.size_us,
            namespace: self.namespace.as_deref().map(str::to_string),
            kind: m.kind.as_deref().map(str::to_string),
            reason: m.reason.as_deref().map(str::to_string),
            template: m.template.to_string(),
            category: m.category.to_string(),
            severity: self.late_severity.severity(),
            count,
            distinct_objects: self.objects.len() as i64,
            first_seen: self.first,
            last_seen: self.last,
            top_objects: top.iter().take(cfg.top_objects).map(|(o, _)| o.to_string()).collect(),
            sample_message: self.sample.as_deref().map(str::to_string),
            recurring: count >= 3 && count as f64 / minutes > 0.5,
            late_events: self.late_severity.late(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_count_and_severity_share_a_word_without_loss() {
        let severities = [Severity::Info, Severity::Warning, Severity::Error, Severity::Critical, Severity::Unknown];
        for s in severities {
            for late in [0, 1, 2, 255, 256, 1 << 40, (1 << 55) - 1, -1, -(1 << 55)] {
                let ls = LateSeverity::new(late, s);
                assert_eq!((ls.late(), ls.severity()), (late, s));
            }
        }
        assert!(std::mem::size_of::<Group>() <= 8 * std::mem::size_of::<usize>());
    }
}
