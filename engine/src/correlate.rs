//! Correlation: events of different resources of one cluster linked into incidents with a
//! root-cause candidate, from the events alone (no API calls).
//!
//! Relations come from what events say: pod to node from Scheduled messages ("Successfully
//! assigned ns/pod to node") and kubelet events' source.host; pod to workload from pod names
//! (ReplicaSet and pod hashes, StatefulSet ordinals); pod to Secret or ConfigMap from FailedMount
//! messages. Rules are declarative (`rules/correlation.yaml`).
//!
//! A rule's match (a candidate) with `min_members` events (or, where the rule says so,
//! `min_occurrences` occurrences of them) becomes part of an incident: a new
//! one, or the open incident it shares a pod, a node or a workload with ([`crate::group`]), so
//! that one root cause is one incident whatever rules and pods it touched.
//!
//! Lifecycle, in event time: an incident is emitted OPEN when its first part qualifies, then
//! UPDATED at most once per `debounce` while it changes, and RESOLVED after a quiet period with
//! no new member. Ids are a hash of cluster, rule and root event uid of the part that opened
//! it, so a replay gives the same ids.

use std::sync::LazyLock;

use kev_schemas::raw::{NormalizedEvent, ResourceRef};
use kev_schemas::{EventObservation, Incident, IncidentStatus, Severity};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::group::{subjects_of, Group, Joining, Part};
use crate::history::{signature, History, HistoryLimits, Recurrence};
use crate::intern::{Interner, Text};
use crate::rules::{parse_duration, RulesError};
use crate::sorted::SortedVec;

/// The correlation rules kev ships with.
pub const DEFAULT_CORRELATIONS: &str = include_str!("../rules/correlation.yaml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    correlations: Vec<Spec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchSpec {
    reason: Option<String>,
    message: Option<String>,
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    name: String,
    cause: MatchSpec,
    effect: MatchSpec,
    relation: Relation,
    max_gap: String,
    #[serde(default = "two")]
    min_members: usize,
    #[serde(default)]
    min_occurrences: Option<i64>,
    #[serde(default)]
    min_duration: Option<String>,
    severity: String,
    confidence: f64,
    summary: String,
}

fn two() -> usize {
    2
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Relation {
    SamePod,
    PodOnNode,
    SameOwner,
    SharedObject,
}

#[derive(Debug, Clone)]
struct Matcher {
    reason: Option<Regex>,
    message: Option<Regex>,
    kind: Option<Regex>,
}

impl Matcher {
    fn reason_matches(&self, reason: Option<&str>) -> bool {
        self.reason.as_ref().is_none_or(|re| re.is_match(reason.unwrap_or("")))
    }

    fn matches(&self, e: &NormalizedEvent) -> bool {
        let m = |re: &Option<Regex>, v: Option<&str>| re.as_ref().is_none_or(|re| re.is_match(v.unwrap_or("")));
        m(&self.reason, e.reason.as_deref())
            && m(&self.message, e.note.as_deref())
            && m(&self.kind, e.regarding.as_ref().and_then(|r| r.kind.as_deref()))
    }
}

/// A compiled correlation rule.
#[derive(Debug, Clone)]
pub struct CorrelationRule {
    pub name: String,
    cause: Matcher,
    effect: Matcher,
    pub relation: Relation,
    pub(crate) max_gap_us: i64,
    min_members: usize,
    /// Or this many occurrences in all: one Event whose count climbs (a crash loop, a mount
    /// retried for an hour) is one observation in a dump, however long it went on.
    min_occurrences: Option<i64>,
    /// And it must have lasted this long, from its first occurrence: what makes a failure
    /// persistent rather than a race that clears itself (a Secret created a few seconds after
    /// the pod that mounts it).
    min_duration_us: i64,
    pub(crate) severity: Severity,
    pub(crate) confidence: f64,
    pub(crate) summary: String,
}

impl CorrelationRule {
    /// Whether a match with these events becomes a part of an incident.
    fn qualifies(&self, o: &Open) -> bool {
        let enough = o.members.len() >= self.min_members
            || self.min_occurrences.is_some_and(|n| o.members.iter().map(|m| m.occurrences).sum::<i64>() >= n);
        enough && o.updated_at - o.began.unwrap_or(o.opened_at).min(o.opened_at) >= self.min_duration_us
    }
}

/// Parses correlation rules, refusing a broken file with the rule's line and the reason.
pub fn parse_rules(text: &str, source_name: &str) -> Result<Vec<CorrelationRule>, RulesError> {
    let file: File = serde_norway::from_str(text)
        .map_err(|e| RulesError::Syntax { source_name: source_name.into(), reason: e.to_string() })?;
    let mut out = Vec::new();
    for s in file.correlations {
        let line = text.lines().position(|l| l.contains(&format!("name: {}", s.name))).map_or(0, |i| i + 1);
        let fail =
            |reason: String| RulesError::Rule { source_name: source_name.into(), line, rule: s.name.clone(), reason };
        let re = |field: &str, r: &Option<String>| {
            r.as_deref().map(|r| Regex::new(r).map_err(|e| fail(format!("{field}: {e}")))).transpose()
        };
        let matcher = |which: &str, m: &MatchSpec| -> Result<Matcher, RulesError> {
            Ok(Matcher {
                reason: re(&format!("{which}.reason"), &m.reason)?,
                message: re(&format!("{which}.message"), &m.message)?,
                kind: re(&format!("{which}.kind"), &m.kind)?,
            })
        };
        let severity = match s.severity.as_str() {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "error" => Severity::Error,
            "critical" => Severity::Critical,
            other => return Err(fail(format!("severity {other:?}: expected info, warning, error or critical"))),
        };
        let gap =
            parse_duration(&s.max_gap).ok_or_else(|| fail(format!("max_gap {:?} is not a duration", s.max_gap)))?;
        let min_duration = match &s.min_duration {
            None => 0,
            Some(d) => parse_duration(d)
                .ok_or_else(|| fail(format!("min_duration {d:?} is not a duration")))?
                .as_micros() as i64,
        };
        if !(0.0..=1.0).contains(&s.confidence) {
            return Err(fail(format!("confidence {} is not between 0 and 1", s.confidence)));
        }
        out.push(CorrelationRule {
            cause: matcher("cause", &s.cause)?,
            effect: matcher("effect", &s.effect)?,
            relation: s.relation,
            max_gap_us: gap.as_micros() as i64,
            min_members: s.min_members.max(1),
            min_occurrences: s.min_occurrences.filter(|&n| n > 0),
            min_duration_us: min_duration,
            severity,
            confidence: s.confidence,
            summary: s.summary.clone(),
            name: s.name,
        })
    }
    Ok(out)
}

/// The shipped correlation rules.
pub fn default_rules() -> Vec<CorrelationRule> {
    parse_rules(DEFAULT_CORRELATIONS, "rules/correlation.yaml").expect("the shipped correlation rules are valid")
}

/// Lifecycle settings, in microseconds of event time.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LifecycleConfig {
    pub debounce_us: i64,
    pub quiet_us: i64,
    /// Bounds of each cluster's incident history.
    pub history: HistoryLimits,
}

/// One member event of an incident. Its strings but the event uid are shared ([`Interner`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Member {
    pub uid: Box<str>,
    pub time: i64,
    pub reason: Text,
    pub pod: Option<Text>,
    /// The occurrences this observation adds (an Event's count goes up by it).
    #[serde(default)]
    pub occurrences: i64,
}

/// A resource as an incident keeps it: the fields of a [`ResourceRef`] in its order, so that it
/// sorts as one, each a shared string. Saved as a `ResourceRef` is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Ref {
    pub kind: Option<Text>,
    pub namespace: Option<Text>,
    pub name: Option<Text>,
    uid: Option<Text>,
    api_version: Option<Text>,
    field_path: Option<Text>,
}

impl Ref {
    fn new(strings: &mut Interner, r: &ResourceRef) -> Self {
        let mut t = |s: &Option<String>| s.as_deref().map(|s| strings.str(s));
        Ref {
            kind: t(&r.kind),
            namespace: t(&r.namespace),
            name: t(&r.name),
            uid: t(&r.uid),
            api_version: t(&r.api_version),
            field_path: t(&r.field_path),
        }
    }

    /// Orders as `self.resource().cmp(r)` does, without making the resource.
    fn cmp_resource(&self, r: &ResourceRef) -> std::cmp::Ordering {
        let pairs = [
            (&self.kind, &r.kind),
            (&self.namespace, &r.namespace),
            (&self.name, &r.name),
            (&self.uid, &r.uid),
            (&self.api_version, &r.api_version),
            (&self.field_path, &r.field_path),
        ];
        pairs
            .into_iter()
            .map(|(a, b)| a.as_deref().cmp(&b.as_deref()))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    }

    pub fn resource(&self) -> ResourceRef {
        let s = |t: &Option<Text>| t.as_deref().map(str::to_string);
        ResourceRef {
            kind: s(&self.kind),
            namespace: s(&self.namespace),
            name: s(&self.name),
            uid: s(&self.uid),
            api_version: s(&self.api_version),
            field_path: s(&self.field_path),
        }
    }

    pub fn texts(&mut self) -> impl Iterator<Item = &mut Text> {
        [
            &mut self.kind,
            &mut self.namespace,
            &mut self.name,
            &mut self.uid,
            &mut self.api_version,
            &mut self.field_path,
        ]
        .into_iter()
        .flatten()
    }
}

/// A rule's match, under its (rule, relation key): a candidate until it has `min_members`
/// events, then a part of an incident.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Open {
    rule: usize,
    /// Saved as the 16 hex digits it is emitted as.
    #[serde(with = "crate::hex_id")]
    id: u64,
    root: Ref,
    root_reason: Text,
    detail: Text,
    node: Option<Text>,
    namespace: Option<Text>,
    members: Vec<Member>,
    /// Sorted, without duplicates: a set in a vector.
    scope: Vec<Ref>,
    opened_at: i64,
    updated_at: i64,
    /// The earliest first occurrence of a member (an Event repeated with a count began before
    /// its newest occurrence): how long the fault has lasted, for its grade.
    #[serde(default)]
    began: Option<i64>,
    /// The incident it is a part of, and its index there, once it has `min_members` events.
    #[serde(default)]
    joined: Option<(u64, usize)>,
}

impl Open {
    /// Every shared string it holds, to give back or to adopt.
    fn texts(&mut self) -> impl Iterator<Item = &mut Text> {
        let members = self.members.iter_mut().flat_map(|m| std::iter::once(&mut m.reason).chain(m.pod.as_mut()));
        self.root
            .texts()
            .chain([&mut self.root_reason, &mut self.detail])
            .chain(self.node.as_mut())
            .chain(self.namespace.as_mut())
            .chain(members)
            .chain(self.scope.iter_mut().flat_map(Ref::texts))
    }

    /// Gives its strings back as it is dropped.
    fn release(mut self, strings: &mut Interner) {
        let texts: Vec<Text> = self.texts().map(|t| t.clone()).collect();
        drop(self);
        strings.release_all(texts);
    }
}

/// What the correlator remembers, per cluster.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Correlator {
    /// pod (xxh3 of "ns/name", see [`pod_key`]) -> (node, last seen). A hash, as the
    /// repetition keys are, so the state stays small; the node names are shared.
    pod_node: SortedVec<u64, (Text, i64)>,
    /// Rules' matches by (rule, relation key), in that order.
    open: SortedVec<(usize, Box<str>), Open>,
    /// Open incidents by id.
    #[serde(default)]
    groups: SortedVec<u64, Group>,
    /// Per fault signature, the incidents it opened before.
    #[serde(default)]
    history: History,
    /// Watermark of the last sweep of the history for age.
    #[serde(default)]
    history_swept_at: Option<i64>,
    /// No incident changes before the watermark reaches this (a lower bound: every change to an
    /// incident lowers it to that incident's next deadline); `None` when not known, as after a
    /// restore. Lets `advance` skip the sweep of every incident on nearly every event.
    #[serde(default)]
    due: Option<i64>,
    /// No relation is older than this (a lower bound, `None` when not known), so no sweep of the
    /// relations is needed until the horizon passes it.
    #[serde(default)]
    oldest_relation: Option<i64>,
    /// Reused to spell a pod's "ns/name" without allocating.
    #[serde(skip)]
    pod_buf: String,
}

/// Which rules' cause and effect reason expressions match a reason, per reason seen: most
/// events match no rule's reason, and this answers that without running the expressions.
/// A memo for one rule list: it never changes a result.
#[derive(Debug, Default)]
pub struct ReasonMemo {
    /// Per rule: bit 0 the effect's reason matches, bit 1 the cause's.
    memo: crate::StrMemo<Box<[u8]>>,
}

impl ReasonMemo {
    /// Bytes held, for the report beside the state size.
    pub fn approx_bytes(&self) -> usize {
        self.memo.approx_bytes(|v| v.len())
    }

    fn flags(&mut self, rules: &[CorrelationRule], reason: Option<&str>) -> &[u8] {
        self.memo.get_or_insert_with(reason.unwrap_or(""), || {
            rules
                .iter()
                .map(|r| r.effect.reason_matches(reason) as u8 | (r.cause.reason_matches(reason) as u8) << 1)
                .collect()
        })
    }
}

/// The namespace, pod and node of a scheduler's "Successfully assigned ns/pod to node".
///
/// Read by hand rather than by a regular expression's captures: one event in ten is a
/// Scheduled event, and captures cost some 10,000 instructions each there (a tenth of the
/// engine's work in `engine_bench`'s profile). Agrees with the expression
/// `Successfully assigned (\S+)/(\S+) to (\S+)` (a test holds them to it on the real dumps).
fn scheduled(note: &str) -> Option<(&str, &str, &str)> {
    const LEAD: &str = "Successfully assigned ";
    static FINDER: LazyLock<memchr::memmem::Finder<'static>> = LazyLock::new(|| memchr::memmem::Finder::new(LEAD));
    let mut from = 0;
    while let Some(at) = FINDER.find(&note.as_bytes()[from..]) {
        let rest = &note[from + at + LEAD.len()..];
        let token = &rest[..rest.find(char::is_whitespace).unwrap_or(rest.len())];
        let after = &rest[token.len()..];
        if let (Some((ns, pod)), Some(tail)) = (token.rsplit_once('/'), after.strip_prefix(" to ")) {
            let node = &tail[..tail.find(char::is_whitespace).unwrap_or(tail.len())];
            if !ns.is_empty() && !pod.is_empty() && !node.is_empty() {
                return Some((ns, pod, node));
            }
        }
        from += at + 1;
    }
    None
}

/// The kind ("secret" or "configmap") and name of the object a message says is not found, as
/// in `secret "etcd-client" not found`: read by hand for the reason [`scheduled`] is. Agrees
/// with `(?i)\b(secret|configmap) "([^"]+)" not found` on ASCII case (the expression also folds
/// the Kelvin sign and the long s; no message is written with those).
fn missing_object(note: &str) -> Option<(&'static str, &str)> {
    const TAIL: &str = " not found";
    // Every quote closing a name: one followed by " not found", in any case.
    let closing = note
        .match_indices('"')
        .map(|(i, _)| i)
        .filter(|&i| note.get(i + 1..i + 1 + TAIL.len()).is_some_and(|t| t.eq_ignore_ascii_case(TAIL)));
    for end in closing {
        let Some(open) = note[..end].rfind('"') else { continue };
        let name = &note[open + 1..end];
        let Some(head) = note[..open].strip_suffix(' ') else { continue };
        if name.is_empty() {
            continue;
        }
        for kind in ["secret", "configmap"] {
            let Some(start) = head.len().checked_sub(kind.len()) else { continue };
            let word = head.get(start..).filter(|w| w.eq_ignore_ascii_case(kind));
            let bounded = head[..start].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            if word.is_some() && bounded {
                return Some((kind, name));
            }
        }
    }
    None
}

static VOLUME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#"volume "([^"]+)""#).unwrap());
static POD_HASH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(.+?)(?:-[bcdfghjklmnpqrstvwxz2456789]{6,10})?-[bcdfghjklmnpqrstvwxz2456789]{5}$").unwrap()
});
static ORDINAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(.+)-\d+$").unwrap());

/// The pod an event is about, as "ns/name", spelt into `buf`.
fn pod_of<'b>(e: &NormalizedEvent, buf: &'b mut String) -> Option<&'b str> {
    let r = e.regarding.as_ref()?;
    if r.kind.as_deref() != Some("Pod") {
        return None;
    }
    let name = r.name.as_deref()?;
    buf.clear();
    buf.push_str(r.namespace.as_deref().unwrap_or(""));
    buf.push('/');
    buf.push_str(name);
    Some(buf)
}

/// The key of a pod ("ns/name") in the pod-to-node relations.
fn pod_key(pod: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(pod.as_bytes())
}

/// The watermark at which `advance` forgets a rule's match `o`: after the quiet period.
fn due_of(rule: &CorrelationRule, life: &LifecycleConfig, o: &Open) -> i64 {
    o.updated_at.saturating_add(life.quiet_us.max(rule.max_gap_us))
}

fn node_of(e: &NormalizedEvent) -> Option<&str> {
    let r = e.regarding.as_ref()?;
    if r.kind.as_deref() == Some("Node") {
        return r.name.as_deref();
    }
    None
}

/// An event as a member of an incident.
fn member(strings: &mut Interner, e: &EventObservation, pod: Option<&str>) -> Member {
    Member {
        uid: e.uid.as_str().into(),
        time: e.normalized.event_time,
        reason: strings.str(e.normalized.reason.as_deref().unwrap_or("")),
        pod: pod.map(|p| strings.str(p)),
        occurrences: e.new_occurrences.max(0),
    }
}

/// The workload a pod belongs to, from its name.
pub fn owner_of_pod(pod: &str) -> String {
    let (ns, name) = pod.split_once('/').unwrap_or(("", pod));
    let owner =
        POD_HASH.captures(name).or_else(|| ORDINAL.captures(name)).and_then(|c| c.get(1)).map_or(name, |m| m.as_str());
    format!("{ns}/{owner}")
}

pub(crate) fn human_span(us: i64) -> String {
    let s = (us / 1_000_000).max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", (s + 30) / 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

impl Correlator {
    /// Size of the state, for the state-size report.
    pub fn len(&self) -> usize {
        self.open.len() + self.pod_node.len() + self.groups.len() + self.history.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held, for the state-size report; the shared strings are counted once, in the
    /// [`Interner`].
    pub fn approx_bytes(&self) -> usize {
        use crate::size;
        let open = self.open.approx_bytes()
            + self
                .open
                .iter()
                .map(|((_, k), o)| {
                    k.len()
                        + size::vec(&o.members)
                        + o.members.iter().map(|m| m.uid.len()).sum::<usize>()
                        + size::vec(&o.scope)
                })
                .sum::<usize>();
        let groups = self.groups.approx_bytes() + self.groups.values().map(Group::approx_bytes).sum::<usize>();
        self.pod_node.approx_bytes() + open + groups + self.history.approx_bytes() + self.pod_buf.capacity()
    }

    /// Takes the interner's copies of the strings of a restored state.
    pub(crate) fn adopt_strings(&mut self, strings: &mut Interner) {
        for (node, _) in self.pod_node.values_mut() {
            strings.adopt(node);
        }
        for o in self.open.values_mut() {
            o.texts().for_each(|t| strings.adopt(t));
        }
        for g in self.groups.values_mut() {
            g.texts().for_each(|t| strings.adopt(t));
        }
    }

    /// Feeds one event; emits incidents that open or update.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_event(
        &mut self,
        rules: &[CorrelationRule],
        life: &LifecycleConfig,
        cluster: &str,
        memo: &mut ReasonMemo,
        strings: &mut Interner,
        e: &EventObservation,
        out: &mut Vec<Incident>,
    ) {
        let n = &e.normalized;
        let t = n.event_time;
        // Relations first: this event may be what tells us where a pod runs (a scheduler's
        // "Successfully assigned ns/pod to node", which `scheduled` finds by a literal search:
        // nearly no message has it).
        if let Some((ns, pod, node)) = n.note.as_deref().and_then(scheduled) {
            let node = strings.str(node);
            if let Some((old, _)) = self.pod_node.insert(pod_key(&format!("{ns}/{pod}")), (node, t)) {
                strings.release(old);
            }
            self.oldest_relation = self.oldest_relation.map(|o| o.min(t));
        }
        let mut pod_buf = std::mem::take(&mut self.pod_buf);
        let pod = pod_of(n, &mut pod_buf);
        let pod_h = pod.map(pod_key);
        if let (Some(p), Some(h)) = (pod_h, &n.host) {
            match self.pod_node.get_mut(&p) {
                Some(entry) if *entry.0 == **h => entry.1 = entry.1.max(t),
                _ => {
                    let node = strings.str(h);
                    if let Some((old, _)) = self.pod_node.insert(p, (node, t)) {
                        strings.release(old);
                    }
                    self.oldest_relation = self.oldest_relation.map(|o| o.min(t));
                }
            }
        }
        // Most events match no rule's reason: that is known per reason, then the rest is tested.
        let flags = memo.flags(rules, n.reason.as_deref());
        for (i, rule) in rules.iter().enumerate() {
            let (effect_reason, cause_reason) = (flags[i] & 1 != 0, flags[i] & 2 != 0);
            let is_effect = effect_reason && rule.effect.matches(n);
            let is_cause = cause_reason && rule.cause.matches(n);
            if !is_effect && !is_cause {
                continue;
            }
            let Some(key) = self.relation_key(rule.relation, n, pod, is_cause) else { continue };
            let k = (i, key.into_boxed_str());
            let mut qualifies = false;
            match self.open.get_mut(&k) {
                // An Event repeated with a count began before its newest occurrence: the gap is
                // from the match's last event to this one's first occurrence.
                Some(o) if n.first_time.unwrap_or(t).min(t) - o.updated_at <= rule.max_gap_us && is_effect => {
                    if o.members.iter().any(|m| *m.uid == *e.uid && m.time == t) {
                        continue;
                    }
                    if o.members.len() == o.members.capacity() {
                        o.members.reserve_exact(1 + o.members.len() / 4);
                    }
                    o.members.push(member(strings, e, pod));
                    let mut added = None;
                    if let Some(r) = &n.regarding {
                        // Most members are about a resource already in scope: nothing to share.
                        if let Err(at) = o.scope.binary_search_by(|x| x.cmp_resource(r)) {
                            if o.scope.len() == o.scope.capacity() {
                                o.scope.reserve_exact(1 + o.scope.len() / 4);
                            }
                            o.scope.insert(at, Ref::new(strings, r));
                            added = Some(at);
                        }
                    }
                    o.updated_at = o.updated_at.max(t);
                    let first = n.first_time.unwrap_or(t);
                    o.began = Some(o.began.unwrap_or(o.opened_at).min(first));
                    let due = due_of(rule, life, o);
                    self.due = self.due.map(|d| d.min(due));
                    match o.joined.and_then(|(id, part)| Some((self.groups.get_mut(&id)?, part))) {
                        Some((g, part)) => {
                            g.add_member(o.members.last().expect("pushed above"), part);
                            if let Some(at) = added {
                                g.add_scope(&o.scope[at]);
                            }
                            g.began_at(first);
                            g.dirty = true;
                            Self::maybe_update(rules, life, cluster, g, t, out);
                            let due = g.due(life);
                            self.due = self.due.map(|d| d.min(due));
                        }
                        None => {
                            o.joined = None;
                            qualifies = rule.qualifies(o);
                        }
                    }
                }
                Some(_) if !is_cause => {}
                _ if is_cause => {
                    // A new root: a cause after the previous one went quiet starts over. The
                    // incident the previous one was part of goes on by itself.
                    if let Some(old) = self.open.remove(&k) {
                        old.release(strings);
                    }
                    let root = match &n.regarding {
                        Some(r) => Ref::new(strings, r),
                        None => Ref::new(strings, &ResourceRef::default()),
                    };
                    let detail = strings.str(&Self::detail(n));
                    let node = match rule.relation {
                        Relation::PodOnNode => match node_of(n) {
                            Some(node) => Some(strings.str(node)),
                            None => k.1.strip_prefix("node:").map(|node| strings.str(node)),
                        },
                        _ => pod_h.and_then(|p| self.pod_node.get(&p)).map(|(node, _)| node.clone()),
                    };
                    let id_src = format!("{cluster}\0{}\0{}", rule.name, e.uid);
                    let id = xxhash_rust::xxh3::xxh3_64(id_src.as_bytes());
                    let o = Open {
                        rule: i,
                        id,
                        root: root.clone(),
                        root_reason: strings.str(n.reason.as_deref().unwrap_or("")),
                        detail,
                        node,
                        namespace: e.namespace.as_deref().map(|ns| strings.str(ns)),
                        members: vec![member(strings, e, pod)],
                        scope: vec![root],
                        opened_at: t,
                        updated_at: t,
                        began: Some(n.first_time.unwrap_or(t).min(t)),
                        joined: None,
                    };
                    qualifies = rule.qualifies(&o);
                    let due = due_of(rule, life, &o);
                    self.due = self.due.map(|d| d.min(due));
                    self.open.insert(k.clone(), o);
                }
                _ => {}
            }
            if qualifies {
                self.qualify(rules, life, cluster, strings, &k, t, out);
            }
        }
        self.pod_buf = pod_buf;
    }

    /// A rule's match that has its `min_members` events becomes a part of an incident: of the
    /// open one it shares a pod, node or workload with (the oldest, absorbing any other it
    /// also shares one with), or of a new one.
    #[allow(clippy::too_many_arguments)]
    fn qualify(
        &mut self,
        rules: &[CorrelationRule],
        life: &LifecycleConfig,
        cluster: &str,
        strings: &mut Interner,
        k: &(usize, Box<str>),
        t: i64,
        out: &mut Vec<Incident>,
    ) {
        let Some(o) = self.open.get(k) else { return };
        let rule = &rules[o.rule];
        let joining = Joining {
            part: Part {
                rule: o.rule,
                key: k.1.clone(),
                root: o.root.clone(),
                root_reason: o.root_reason.clone(),
                detail: o.detail.clone(),
                node: o.node.clone(),
                namespace: o.namespace.clone(),
                opened_at: o.opened_at,
            },
            members: &o.members,
            scope: &o.scope,
            updated_at: o.updated_at,
            began: o.began.unwrap_or(o.opened_at),
            gap_us: rule.max_gap_us,
        };
        let subjects = subjects_of(&o.scope);
        // An incident of the same id (the same root event, seen again after a quiet period)
        // that is over but not swept yet ends before its successor opens.
        if self.groups.get(&o.id).is_some_and(|g| g.is_quiet(life, t)) {
            let old = self.groups.remove(&o.id).expect("found above");
            old.resolve(rules, cluster, out);
            old.release(strings);
        }
        let mut hits: Vec<(i64, u64)> = self
            .groups
            .iter()
            // One quiet past its time but not swept yet (the watermark lags) is over.
            .filter(|(id, g)| !g.is_quiet(life, t) && (**id == o.id || g.shares(&subjects)))
            .map(|(id, g)| (g.opened_at, *id))
            .collect();
        hits.sort_unstable();
        let mut moved: Vec<(u64, usize)> = Vec::new();
        let joined = match hits.first() {
            None => {
                let mut g = Group::new(o.id, joining, subjects, t);
                g.recurrence = Self::recall(&mut self.history, rules, cluster, life, &mut g);
                out.push(g.record(rules, cluster, IncidentStatus::Open, None, None));
                let id = g.id;
                let due = g.due(life);
                self.due = self.due.map(|d| d.min(due));
                self.groups.insert(id, g);
                (id, 0)
            }
            Some(&(_, survivor)) => {
                let mut g = self.groups.remove(&survivor).expect("found above");
                let part = g.join(joining, subjects);
                for &(_, other) in &hits[1..] {
                    let absorbed = self.groups.remove(&other).expect("found above");
                    out.push(absorbed.record(
                        rules,
                        cluster,
                        IncidentStatus::Resolved,
                        Some(absorbed.updated_at),
                        Some(g.id),
                    ));
                    let id = absorbed.id;
                    moved.push((id, g.absorb(absorbed, strings)));
                }
                let root = g.root_part();
                if root != g.root {
                    g.root = root;
                    g.recurrence = Self::recall(&mut self.history, rules, cluster, life, &mut g);
                }
                Self::maybe_update(rules, life, cluster, &mut g, t, out);
                let due = g.due(life);
                self.due = self.due.map(|d| d.min(due));
                self.groups.insert(survivor, g);
                (survivor, part)
            }
        };
        for c in self.open.values_mut() {
            if let Some((id, part)) = c.joined {
                if let Some(&(_, offset)) = moved.iter().find(|(m, _)| *m == id) {
                    c.joined = Some((joined.0, part + offset));
                }
            }
        }
        if let Some(o) = self.open.get_mut(k) {
            o.joined = Some(joined);
        }
    }

    /// What the fault of `g`'s root did before, recorded as happening again now; what the
    /// incident recalled already when its root had the same signature before.
    fn recall(
        history: &mut History,
        rules: &[CorrelationRule],
        cluster: &str,
        life: &LifecycleConfig,
        g: &mut Group,
    ) -> Recurrence {
        let root = &g.parts[g.root];
        let rule = &rules[root.rule];
        let sig = signature(
            &rule.name,
            cluster,
            root.namespace.as_deref().unwrap_or(""),
            &root.subject(rule.relation),
            &root.root_reason,
            &root.detail,
        );
        if let Some(r) = g.recalled.iter().find(|r| r.signature == sig) {
            return *r;
        }
        let r = history.recall_and_record(sig, g.id, g.opened_at, &life.history);
        g.recalled.push(r);
        r
    }

    /// The relation key under which cause and effect meet.
    fn relation_key(&self, rel: Relation, n: &NormalizedEvent, pod: Option<&str>, is_cause: bool) -> Option<String> {
        match rel {
            Relation::SamePod => pod.map(|p| format!("pod:{p}")),
            Relation::PodOnNode => {
                if is_cause {
                    node_of(n).or(n.host.as_deref()).map(|node| format!("node:{node}"))
                } else {
                    pod.and_then(|p| self.pod_node.get(&pod_key(p))).map(|(node, _)| format!("node:{}", &**node))
                }
            }
            Relation::SameOwner => pod.map(|p| format!("owner:{}", owner_of_pod(p))),
            Relation::SharedObject => {
                let (kind, name) = missing_object(n.note.as_deref()?)?;
                let ns = n.regarding.as_ref().and_then(|r| r.namespace.as_deref()).unwrap_or("");
                Some(format!("object:{ns}/{kind}/{name}"))
            }
        }
    }

    fn detail(n: &NormalizedEvent) -> String {
        let note = n.note.as_deref().unwrap_or("");
        if let Some((kind, name)) = missing_object(note) {
            return format!("{kind} {name}");
        }
        let first_line = note.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('+')).unwrap_or("");
        let mut detail = match VOLUME.captures(note) {
            Some(c) => format!("volume {}", &c[1]),
            None => crate::shorten::shorten(first_line, 80),
        };
        if VOLUME.is_match(note) {
            let low = note.to_lowercase();
            if let Some(why) = ["timed out", "timeout", "not found", "permission denied", "already attached"]
                .iter()
                .find(|w| low.contains(*w))
            {
                detail.push_str(&format!(" ({why})"));
            }
        }
        detail
    }

    /// An UPDATED record of a changed incident, at most once per `debounce`.
    fn maybe_update(
        rules: &[CorrelationRule],
        life: &LifecycleConfig,
        cluster: &str,
        g: &mut Group,
        t: i64,
        out: &mut Vec<Incident>,
    ) {
        if g.dirty && t - g.emitted >= life.debounce_us {
            out.push(g.record(rules, cluster, IncidentStatus::Updated, None, None));
            g.emitted = t;
            g.dirty = false;
        }
    }

    /// Moves event time to `watermark`: emits debounced updates and resolves quiet incidents,
    /// in id order; forgets matches, relations and history that can no longer matter.
    pub(crate) fn advance(
        &mut self,
        rules: &[CorrelationRule],
        life: &LifecycleConfig,
        cluster: &str,
        strings: &mut Interner,
        watermark: i64,
        out: &mut Vec<Incident>,
    ) {
        if self.due.is_none_or(|d| watermark >= d) {
            self.sweep(rules, life, cluster, strings, watermark, out);
        }
        let horizon = watermark - 3_600_000_000;
        if self.oldest_relation.is_none_or(|o| horizon > o) {
            let mut gone = Vec::new();
            self.pod_node.retain(|_, (node, seen)| {
                let keep = *seen >= horizon;
                if !keep {
                    gone.push(node.clone());
                }
                keep
            });
            strings.release_all(gone);
            self.oldest_relation = Some(self.pod_node.values().map(|(_, seen)| *seen).min().unwrap_or(i64::MAX));
        }
        if self.history_swept_at.is_none_or(|s| watermark >= s.saturating_add(3_600_000_000)) {
            self.history_swept_at = Some(watermark);
            self.history.forget_before(watermark.saturating_sub(life.history.max_age_us));
        }
    }

    /// Emits debounced updates and resolves quiet incidents at `watermark`, forgets quiet
    /// matches, then works out when the next change is due.
    fn sweep(
        &mut self,
        rules: &[CorrelationRule],
        life: &LifecycleConfig,
        cluster: &str,
        strings: &mut Interner,
        watermark: i64,
        out: &mut Vec<Incident>,
    ) {
        let quiet: Vec<_> = self
            .open
            .iter()
            .filter(|(_, o)| watermark - o.updated_at >= life.quiet_us.max(rules[o.rule].max_gap_us))
            .map(|(k, _)| k.clone())
            .collect();
        for k in quiet {
            if let Some(o) = self.open.remove(&k) {
                o.release(strings);
            }
        }
        let mut resolved = Vec::new();
        for (id, g) in self.groups.iter_mut() {
            if g.is_quiet(life, watermark) {
                g.resolve(rules, cluster, out);
                resolved.push(*id);
            } else {
                Self::maybe_update(rules, life, cluster, g, watermark, out);
            }
        }
        for id in resolved {
            if let Some(g) = self.groups.remove(&id) {
                g.release(strings);
            }
        }
        let matches = self.open.values().map(|o| due_of(&rules[o.rule], life, o));
        let incidents = self.groups.values().map(|g| g.due(life));
        self.due = Some(matches.chain(incidents).min().unwrap_or(i64::MAX));
    }

    /// The incidents emitted as open and not yet resolved, as their newest record would say,
    /// in id order: what an alerter taking over after a restart must keep firing.
    pub fn open_incidents(&self, rules: &[CorrelationRule], cluster: &str) -> Vec<Incident> {
        self.groups
            .values()
            .filter(|g| g.parts.iter().all(|p| p.rule < rules.len()))
            .map(|g| g.record(rules, cluster, IncidentStatus::Updated, None, None))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written readers against the expressions they replace, on every message of the
    /// real dumps and on cases the dumps lack.
    #[test]
    fn scheduled_and_missing_objects_read_as_the_expressions_do() {
        let sched = Regex::new(r"Successfully assigned (\S+)/(\S+) to (\S+)").unwrap();
        let missing = Regex::new(r#"(?i)\b(secret|configmap) "([^"]+)" not found"#).unwrap();
        let by_regex = |m: &str| sched.captures(m).map(|c| (c[1].to_string(), c[2].to_string(), c[3].to_string()));
        let by_hand = |m: &str| scheduled(m).map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
        let missing_by_regex = |m: &str| missing.captures(m).map(|c| (c[1].to_lowercase(), c[2].to_string()));
        let missing_by_hand = |m: &str| missing_object(m).map(|(k, n)| (k.to_string(), n.to_string()));
        let mut notes: Vec<String> =
            kev_tests::data::observations().into_iter().filter_map(|(_, o)| o.normalized.note).collect();
        notes.extend(
            [
                "Successfully assigned default/web-1 to node-a",
                "Successfully assigned a/b/c to n1 extra",
                "Successfully assigned nopod to n1",
                "Successfully assigned x/ to n1; Successfully assigned ns/p to n2",
                "Successfully assigned ns/p  to n2",
                "Successfully assigned ns/p to ",
                r#"MountVolume.SetUp failed for volume "v" : secret "s1" not found"#,
                r#"configmap "cm" NOT FOUND, Secret "" not found"#,
                r#"mysecret "x" not found; SECRET "y" not found"#,
                r#"secret"x" not found, _configmap "y" not found, é-configmap "z" not found"#,
            ]
            .map(str::to_string),
        );
        let (mut seen_scheduled, mut seen_missing) = (0, 0);
        for n in &notes {
            assert_eq!(by_hand(n), by_regex(n), "{n:?}");
            assert_eq!(missing_by_hand(n), missing_by_regex(n), "{n:?}");
            seen_scheduled += by_regex(n).is_some() as usize;
            seen_missing += missing_by_regex(n).is_some() as usize;
        }
        assert!(seen_scheduled > 100 && seen_missing > 50, "{seen_scheduled} {seen_missing}");
    }

    #[test]
    fn shipped_rules_load() {
        assert!(default_rules().len() >= 8);
    }

    #[test]
    fn owners_from_pod_names() {
        assert_eq!(owner_of_pod("prod/web-7d4b9c8f6d-x2v9q"), "prod/web");
        assert_eq!(owner_of_pod("prod/fluentd-k8z7w"), "prod/fluentd");
        assert_eq!(owner_of_pod("prod/db-0"), "prod/db");
        assert_eq!(owner_of_pod("prod/standalone"), "prod/standalone");
    }

    #[test]
    fn a_broken_correlation_rule_is_refused_with_its_line() {
        let text = "correlations:\n  - name: x\n    cause: {reason: '('}\n    effect: {}\n    relation: same-pod\n    max_gap: 1m\n    severity: error\n    confidence: 0.5\n    summary: s\n";
        let msg = parse_rules(text, "c.yaml").unwrap_err().to_string();
        assert!(msg.contains("c.yaml, line 2, rule \"x\": cause.reason"), "{msg}");
        let text = text.replace("'('", "'^A$'").replace("same-pod", "same-planet");
        assert!(parse_rules(&text, "c.yaml").unwrap_err().to_string().contains("same-planet"));
    }
}
