//! An incident as a person reads it: the matches of several rules that one root cause explains.
//!
//! Each correlation rule finds its own chains: a missing Secret and the pods that cannot mount
//! it, one pod's mount failure and its restarts, one pod's failing probes and its kills. On a
//! real cluster one fault matches several rules at once, and a rule matches once per pod, so a
//! person paged for one missing Secret was handed one incident per rule and pod. Here a rule's
//! match that has enough events (a part) joins the open incident it shares a pod, a node or a
//! workload with; when it touches two, they become one, and the younger's last record says where
//! it went (`merged_into`).
//!
//! The root is the part of the rule listed first in the rules file, which lists causes before
//! symptoms (a missing object before a mount failure before a failing probe); between parts of
//! one rule, the earliest. The incident keeps the id of the part that opened it, whatever its
//! root becomes, so a consumer's table keeps one row per incident.

use std::collections::BTreeSet;

use kev_schemas::{Incident, IncidentStatus};
use serde::{Deserialize, Serialize};

use crate::correlate::{human_span, owner_of_pod, CorrelationRule, LifecycleConfig, Member, Ref, Relation};
use crate::history::Recurrence;
use crate::impact::{is_disruptive, Impact};
use crate::intern::{Interner, Text};

/// How much later than an incident's earliest part its root may begin. A node is marked
/// NotReady some 40 s after its pods stop answering, and a missing object is named by the first
/// mount failure's retry: a cause is seen a little after its first effects, never minutes.
const ROOT_LEAD_US: i64 = 120_000_000;

/// One rule's match within an incident: what its root was.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Part {
    pub rule: usize,
    /// The rule's relation key ("object:ns/secret/name", "pod:ns/name", ...).
    pub key: Box<str>,
    pub root: Ref,
    pub root_reason: Text,
    pub detail: Text,
    pub node: Option<Text>,
    pub namespace: Option<Text>,
    pub opened_at: i64,
}

impl Part {
    fn texts(&mut self) -> impl Iterator<Item = &mut Text> {
        self.root
            .texts()
            .chain([&mut self.root_reason, &mut self.detail])
            .chain(self.node.as_mut())
            .chain(self.namespace.as_mut())
    }

    /// What the fault is about, for its signature: the missing object, the node, or the
    /// workload of the root pod (which survives pod-name hashes and restarts).
    pub fn subject(&self, relation: Relation) -> String {
        match relation {
            Relation::SharedObject => self.key.to_string(),
            Relation::PodOnNode => format!("node:{}", self.node.as_deref().unwrap_or("")),
            Relation::SamePod | Relation::SameOwner => {
                let pod = format!(
                    "{}/{}",
                    self.root.namespace.as_deref().unwrap_or(""),
                    self.root.name.as_deref().unwrap_or("")
                );
                format!("owner:{}", owner_of_pod(&pod))
            }
        }
    }
}

/// An event of an incident, with the parts it belongs to (bit i for part i; the 64th bit stands
/// for every part from it on).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GroupMember {
    uid: Box<str>,
    time: i64,
    reason: Text,
    pod: Option<Text>,
    parts: u64,
    /// The occurrences the observation added.
    #[serde(default)]
    occurrences: i64,
}

fn bit(part: usize) -> u64 {
    1 << part.min(63)
}

/// What a part brings to an incident when it joins.
pub(crate) struct Joining<'a> {
    pub part: Part,
    pub members: &'a [Member],
    pub scope: &'a [Ref],
    pub updated_at: i64,
    pub began: i64,
    pub gap_us: i64,
}

/// An incident: its parts, their events and the objects they are about.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Group {
    #[serde(with = "crate::hex_id")]
    pub id: u64,
    pub parts: Vec<Part>,
    /// Index of the root part.
    pub root: usize,
    /// Sorted by (time, uid), without duplicates.
    members: Vec<GroupMember>,
    /// Sorted, without duplicates.
    scope: Vec<Ref>,
    /// What another part must share to join: "pod:ns/name", "owner:ns/workload", "node:name";
    /// sorted.
    subjects: Vec<Box<str>>,
    pub opened_at: i64,
    pub updated_at: i64,
    /// The earliest first occurrence of a member (a repeated Event began before its newest
    /// occurrence), for how long the fault lasted.
    began: i64,
    /// The longest `max_gap` of its parts' rules: it resolves after that much quiet at least.
    gap_us: i64,
    /// Event time of its last record.
    pub emitted: i64,
    /// Changed since its last record.
    pub dirty: bool,
    pub recurrence: Recurrence,
    /// What it recalled of each signature its root has had: a root that changes to a part of
    /// the same fault, or back, keeps what was recalled the first time.
    #[serde(default)]
    pub recalled: Vec<Recurrence>,
}

/// What another part must share with an incident to join it.
pub(crate) fn subjects_of(scope: &[Ref]) -> Vec<Box<str>> {
    let mut out: Vec<Box<str>> = Vec::new();
    for r in scope {
        let (ns, name) = (r.namespace.as_deref().unwrap_or(""), r.name.as_deref().unwrap_or(""));
        match r.kind.as_deref() {
            Some("Pod") => {
                let pod = format!("{ns}/{name}");
                out.push(format!("owner:{}", owner_of_pod(&pod)).into());
                out.push(format!("pod:{pod}").into());
            }
            Some("Node") => out.push(format!("node:{name}").into()),
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether two sorted lists share an element.
fn intersect(a: &[Box<str>], b: &[Box<str>]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

impl Group {
    /// An incident opened by its first part.
    pub fn new(id: u64, first: Joining<'_>, subjects: Vec<Box<str>>, t: i64) -> Self {
        let mut g = Group {
            id,
            root: 0,
            opened_at: first.part.opened_at,
            updated_at: first.updated_at,
            began: first.began,
            gap_us: first.gap_us,
            parts: Vec::new(),
            members: Vec::new(),
            scope: Vec::new(),
            subjects,
            emitted: t,
            dirty: false,
            recurrence: Recurrence::default(),
            recalled: Vec::new(),
        };
        g.join_part(first, Vec::new());
        g
    }

    /// The part that is the root: of those that began with the incident (within
    /// [`ROOT_LEAD_US`] of its earliest part: a cause cannot come well after what it caused),
    /// the one of the rule listed first, then the earliest.
    pub fn root_part(&self) -> usize {
        let earliest = self.parts.iter().map(|p| p.opened_at).min().unwrap_or(0);
        (0..self.parts.len())
            .filter(|&i| self.parts[i].opened_at <= earliest.saturating_add(ROOT_LEAD_US))
            .min_by_key(|&i| (self.parts[i].rule, self.parts[i].opened_at, i))
            .unwrap_or(self.root)
    }

    pub fn shares(&self, subjects: &[Box<str>]) -> bool {
        intersect(&self.subjects, subjects)
    }

    /// Adds a part; returns its index. The caller decides whether it becomes the root.
    pub fn join(&mut self, joining: Joining<'_>, subjects: Vec<Box<str>>) -> usize {
        self.opened_at = self.opened_at.min(joining.part.opened_at);
        self.updated_at = self.updated_at.max(joining.updated_at);
        self.began = self.began.min(joining.began);
        self.gap_us = self.gap_us.max(joining.gap_us);
        self.dirty = true;
        let at = self.join_part(joining, subjects);
        self.subjects.sort();
        self.subjects.dedup();
        at
    }

    fn join_part(&mut self, joining: Joining<'_>, subjects: Vec<Box<str>>) -> usize {
        let at = self.parts.len();
        self.parts.push(joining.part);
        for m in joining.members {
            self.add_member(m, at);
        }
        for r in joining.scope {
            self.add_scope(r);
        }
        self.subjects.extend(subjects);
        at
    }

    /// A new event of part `part`.
    pub fn add_member(&mut self, m: &Member, part: usize) {
        match self.members.binary_search_by(|x| (x.time, &*x.uid).cmp(&(m.time, &*m.uid))) {
            Ok(i) => self.members[i].parts |= bit(part),
            Err(i) => self.members.insert(
                i,
                GroupMember {
                    uid: m.uid.clone(),
                    time: m.time,
                    reason: m.reason.clone(),
                    pod: m.pod.clone(),
                    parts: bit(part),
                    occurrences: m.occurrences,
                },
            ),
        }
        self.updated_at = self.updated_at.max(m.time);
    }

    /// An object a new event is about.
    pub fn add_scope(&mut self, r: &Ref) {
        if let Err(at) = self.scope.binary_search(r) {
            self.scope.insert(at, r.clone());
            for s in subjects_of(std::slice::from_ref(r)) {
                if let Err(at) = self.subjects.binary_search(&s) {
                    self.subjects.insert(at, s);
                }
            }
        }
    }

    /// An event's first occurrence, for how long the fault has lasted.
    pub fn began_at(&mut self, t: i64) {
        self.began = self.began.min(t);
    }

    /// Takes in another incident that a new part showed to be the same fault: its parts,
    /// events and objects. Returns the offset its part indices moved by.
    pub fn absorb(&mut self, mut other: Group, strings: &mut Interner) -> usize {
        let offset = self.parts.len();
        self.opened_at = self.opened_at.min(other.opened_at);
        self.updated_at = self.updated_at.max(other.updated_at);
        self.began = self.began.min(other.began);
        self.gap_us = self.gap_us.max(other.gap_us);
        self.dirty = true;
        self.parts.append(&mut other.parts);
        let mut gone: Vec<Text> = Vec::new();
        for m in other.members.drain(..) {
            let mut parts = 0;
            for i in 0..64 {
                if m.parts & (1 << i) != 0 {
                    parts |= bit(i + offset);
                }
            }
            match self.members.binary_search_by(|x| (x.time, &*x.uid).cmp(&(m.time, &*m.uid))) {
                Ok(i) => {
                    self.members[i].parts |= parts;
                    gone.push(m.reason);
                    gone.extend(m.pod);
                }
                Err(i) => self.members.insert(i, GroupMember { parts, ..m }),
            }
        }
        for mut r in other.scope.drain(..) {
            match self.scope.binary_search(&r) {
                Ok(_) => gone.extend(r.texts().map(|t| t.clone())),
                Err(at) => self.scope.insert(at, r),
            }
        }
        self.subjects.append(&mut other.subjects);
        self.subjects.sort();
        self.subjects.dedup();
        strings.release_all(gone);
        offset
    }

    /// The event time at which it next changes: resolved after the quiet period, or a
    /// debounced update when changed.
    pub fn due(&self, life: &LifecycleConfig) -> i64 {
        let resolve = self.updated_at.saturating_add(life.quiet_us.max(self.gap_us));
        if self.dirty {
            resolve.min(self.emitted.saturating_add(life.debounce_us))
        } else {
            resolve
        }
    }

    pub fn is_quiet(&self, life: &LifecycleConfig, watermark: i64) -> bool {
        watermark - self.updated_at >= life.quiet_us.max(self.gap_us)
    }

    pub fn texts(&mut self) -> impl Iterator<Item = &mut Text> {
        let members = self.members.iter_mut().flat_map(|m| std::iter::once(&mut m.reason).chain(m.pod.as_mut()));
        self.parts.iter_mut().flat_map(Part::texts).chain(members).chain(self.scope.iter_mut().flat_map(Ref::texts))
    }

    /// Gives its strings back as it is dropped.
    pub fn release(mut self, strings: &mut Interner) {
        let texts: Vec<Text> = self.texts().map(|t| t.clone()).collect();
        drop(self);
        strings.release_all(texts);
    }

    pub fn approx_bytes(&self) -> usize {
        use crate::size;
        size::vec(&self.parts)
            + self.parts.iter().map(|p| p.key.len()).sum::<usize>()
            + size::vec(&self.members)
            + self.members.iter().map(|m| m.uid.len()).sum::<usize>()
            + size::vec(&self.scope)
            + size::vec(&self.subjects)
            + size::vec(&self.recalled)
            + self.subjects.iter().map(|s| s.len()).sum::<usize>()
    }

    /// The causal chain: the root's cause where it is not an event of the chain (a missing
    /// object, a node condition), then each reason of the events in the order it first
    /// appeared, with its count.
    fn chain(&self, rules: &[CorrelationRule]) -> String {
        let mut parts: Vec<&Part> = self.parts.iter().collect();
        parts.sort_by_key(|p| (p.rule, p.opened_at));
        let mut labels: Vec<String> = Vec::new();
        for p in parts {
            let label = match rules[p.rule].relation {
                Relation::SharedObject => object_of(&p.key).map(|o| format!("missing {o}")),
                Relation::PodOnNode => {
                    Some(format!("{} on node {}", &*p.root_reason, p.node.as_deref().unwrap_or("?")))
                }
                _ => None,
            };
            if let Some(l) = label.filter(|l| !labels.contains(l)) {
                labels.push(l);
            }
        }
        let mut reasons: Vec<(&str, usize)> = Vec::new();
        for m in &self.members {
            match reasons.iter_mut().find(|(r, _)| *r == &*m.reason) {
                Some((_, n)) => *n += 1,
                None => reasons.push((&m.reason, 1)),
            }
        }
        let mut steps: Vec<String> = Vec::new();
        if !labels.is_empty() {
            steps.push(labels.join(" + "));
        }
        steps.extend(reasons.iter().map(|(r, n)| format!("{r} x{n}")));
        steps.join(" -> ")
    }

    /// Its last records: the update not emitted yet, if any, then RESOLVED at its last member.
    pub fn resolve(&self, rules: &[CorrelationRule], cluster: &str, out: &mut Vec<Incident>) {
        if self.dirty {
            out.push(self.record(rules, cluster, IncidentStatus::Updated, None, None));
        }
        out.push(self.record(rules, cluster, IncidentStatus::Resolved, Some(self.updated_at), None));
    }

    /// The record of the incident as it stands.
    pub fn record(
        &self,
        rules: &[CorrelationRule],
        cluster: &str,
        status: IncidentStatus,
        resolved_at: Option<i64>,
        merged_into: Option<u64>,
    ) -> Incident {
        let root = &self.parts[self.root];
        let rule = &rules[root.rule];
        let mine = bit(self.root);
        let own: Vec<&GroupMember> = self.members.iter().filter(|m| m.parts & mine != 0).collect();
        let effects = own.iter().skip(1);
        let effect_reasons: BTreeSet<&str> = effects.clone().map(|m| &*m.reason).collect();
        let own_pods: BTreeSet<&str> = own.iter().filter_map(|m| m.pod.as_deref()).collect();
        let pods: BTreeSet<&str> = self.members.iter().filter_map(|m| m.pod.as_deref()).collect();
        let pod_name = |p: &str| p.split_once('/').map_or(p.to_string(), |(_, n)| n.to_string());
        let own_span = match (own.first(), own.last()) {
            // From the first occurrence (a repeated Event began before its newest one).
            (Some(a), Some(b)) => b.time - a.time.min(root.opened_at).min(self.began),
            _ => 0,
        };
        let mut summary = rule
            .summary
            .replace("{cause_reason}", &root.root_reason)
            .replace("{detail}", &root.detail)
            .replace("{pod}", root.root.name.as_deref().unwrap_or_default())
            .replace("{node}", root.node.as_deref().unwrap_or("?"))
            .replace("{owner}", &root.key.strip_prefix("owner:").map(pod_name).unwrap_or_default())
            .replace("{object}", object_of(&root.key).as_deref().unwrap_or(""))
            .replace("{namespace}", root.namespace.as_deref().unwrap_or(""))
            .replace("{effects}", &effects.count().to_string())
            .replace("{effect_reasons}", &format!("({})", effect_reasons.into_iter().collect::<Vec<_>>().join(", ")))
            .replace("{pods}", &own_pods.len().to_string())
            .replace("{members}", &own.len().to_string())
            .replace("{occurrences}", &own.iter().map(|m| m.occurrences).sum::<i64>().to_string())
            .replace("{span}", &human_span(own_span));
        if pods.len() > own_pods.len().max(1) {
            summary.push_str(&format!("; {} pods in all", pods.len()));
        }
        if let Some(phrase) = self.recurrence.phrase() {
            summary.push_str("; ");
            summary.push_str(&phrase);
        }
        let members = self.members.len();
        let confidence = (rule.confidence + 0.02 * members.saturating_sub(2) as f64).min(0.99);
        let impact = Impact {
            pods: pods.len(),
            span_us: self.updated_at - self.began.min(self.opened_at),
            disruptions: self.members.iter().filter(|m| is_disruptive(&m.reason)).count(),
            previous: u64::from(self.recurrence.previous),
        };
        // The root's rule first, then the others in the order of the rules file.
        let mut contributing: Vec<(bool, usize, &str)> =
            self.parts.iter().map(|p| (p.rule != root.rule, p.rule, rules[p.rule].name.as_str())).collect();
        contributing.sort();
        contributing.dedup();
        let r = &self.recurrence;
        Incident {
            incident_id: crate::hex16(self.id),
            cluster: cluster.to_string(),
            rule: rule.name.clone(),
            status,
            severity: impact.severity(rule.severity),
            confidence: (confidence * 100.0).round() / 100.0,
            summary,
            root_cause: Some(root.root.resource()),
            root_reason: Some(root.root_reason.to_string()),
            scope: self.scope.iter().map(Ref::resource).collect(),
            member_uids: self.members.iter().map(|m| m.uid.to_string()).collect(),
            opened_at: self.opened_at,
            updated_at: self.updated_at,
            resolved_at,
            merged_into: merged_into.map(crate::hex16),
            contributing_rules: Some(contributing.into_iter().map(|(_, _, n)| n.to_string()).collect()),
            causal_chain: Some(self.chain(rules)),
            signature: Some(crate::hex16(r.signature)),
            previous_count: Some(i64::from(r.previous)),
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            last_incident_id: r.last_incident.map(crate::hex16),
        }
    }
}

/// "Secret name" from a shared-object key ("object:ns/secret/name").
fn object_of(key: &str) -> Option<String> {
    let k = key.strip_prefix("object:")?;
    let mut parts = k.splitn(3, '/');
    let (_ns, kind, name) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let kind = if kind == "configmap" { "ConfigMap" } else { "Secret" };
    Some(format!("{kind} {name}"))
}
