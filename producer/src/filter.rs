//! Client-side keep/drop rules: which events the producer publishes.
//!
//! Server-side selectors (`source.namespaces`, `source.field_selector`, `source.label_selector`)
//! cut what the API server sends; these rules cut what it cannot express (regular expressions,
//! the reporting controller, the message). Every dropped event is counted by the rule that
//! dropped it, so a filter never hides data silently.
//!
//! Namespaces and cluster-scoped objects: a Node, PersistentVolume or Namespace has no
//! namespace, and the API server files its Events under `default`. A namespace condition
//! therefore applies to namespaced objects only: a cluster-scoped event passes it in a keep rule
//! and escapes it in a drop rule, so that "keep namespace team-a" does not lose the NodeNotReady
//! that explains team-a's evictions. To filter cluster-scoped events, match on `kind`.

use kev_schemas::NormalizedEvent;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// The `filter` section of the producer's configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSettings {
    /// When not empty, only events matching at least one of these rules are published.
    #[serde(default)]
    pub keep: Vec<FilterRule>,
    /// Events matching any of these rules are not published (checked after `keep`).
    #[serde(default)]
    pub drop: Vec<FilterRule>,
}

/// One rule: every condition given must hold. Conditions are regular expressions matched
/// against the whole value (`Warning` matches only `Warning`), except `message`, which matches
/// anywhere in the note. A missing value (an event without a reporting controller) matches as
/// the empty string.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRule {
    /// Names the rule in the `kev_producer_events_filtered_total{rule}` metric and in logs.
    pub name: String,
    /// Namespace of the regarding object (namespaced objects only; see the module comment).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Kind of the regarding object, such as `Pod` or `Node`.
    #[serde(default)]
    pub kind: Option<String>,
    /// `Normal` or `Warning`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// `reportingController` (events.k8s.io/v1) or `source.component` (core/v1).
    #[serde(default)]
    pub reporting_controller: Option<String>,
    /// Searched in the note (message).
    #[serde(default)]
    pub message: Option<String>,
}

/// A rule or setting that cannot be used, with where it is.
#[derive(Debug, thiserror::Error)]
#[error("filter.{list}[{index}] ({name}): {reason}")]
pub struct FilterError {
    list: &'static str,
    index: usize,
    name: String,
    reason: String,
}

/// What the filter says of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    Publish,
    /// Not published; the name of the rule that said so (`keep` when no keep rule matched,
    /// `source.namespaces` when the regarding object is in a namespace not watched,
    /// `source.cluster_scoped_events` when it is cluster-scoped and those are not wanted).
    Drop(&'a str),
}

/// The compiled rules.
#[derive(Debug, Default)]
pub struct Filter {
    keep: Vec<Rule>,
    drop: Vec<Rule>,
    /// `source.namespaces` when not empty: watching them also reads `default`, where
    /// cluster-scoped objects' events live, so the namespaced events of `default` that were
    /// not asked for are dropped here.
    namespaces: Vec<String>,
    /// `source.cluster_scoped_events`: whether events of cluster-scoped objects pass a
    /// namespace list.
    cluster_scoped: bool,
}

#[derive(Debug)]
struct Rule {
    name: String,
    namespace: Option<Regex>,
    kind: Option<Regex>,
    type_: Option<Regex>,
    reason: Option<Regex>,
    reporting_controller: Option<Regex>,
    message: Option<Regex>,
}

impl Filter {
    /// Compiles the rules; `namespaces` are the watched namespaces (empty: all) and
    /// `cluster_scoped` whether cluster-scoped objects' events pass such a list.
    pub fn new(settings: &FilterSettings, namespaces: &[String], cluster_scoped: bool) -> Result<Self, FilterError> {
        let compile = |list: &'static str, rules: &[FilterRule]| {
            rules
                .iter()
                .enumerate()
                .map(|(index, r)| {
                    Rule::new(r).map_err(|reason| FilterError { list, index, name: r.name.clone(), reason })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Filter {
            keep: compile("keep", &settings.keep)?,
            drop: compile("drop", &settings.drop)?,
            namespaces: namespaces.to_vec(),
            cluster_scoped,
        })
    }

    /// Whether nothing is ever dropped (so the session can skip the check).
    pub fn is_empty(&self) -> bool {
        self.keep.is_empty() && self.drop.is_empty() && self.namespaces.is_empty()
    }

    pub fn verdict(&self, event: &NormalizedEvent) -> Verdict<'_> {
        let namespace = event.regarding.as_ref().and_then(|r| r.namespace.as_deref()).filter(|n| !n.is_empty());
        if !self.namespaces.is_empty() {
            match namespace {
                Some(ns) if !self.namespaces.iter().any(|n| n == ns) => return Verdict::Drop("source.namespaces"),
                None if !self.cluster_scoped => return Verdict::Drop("source.cluster_scoped_events"),
                _ => {}
            }
        }
        if !self.keep.is_empty() && !self.keep.iter().any(|r| r.matches(event, namespace, true)) {
            return Verdict::Drop("keep");
        }
        match self.drop.iter().find(|r| r.matches(event, namespace, false)) {
            Some(r) => Verdict::Drop(&r.name),
            None => Verdict::Publish,
        }
    }
}

impl Rule {
    fn new(r: &FilterRule) -> Result<Self, String> {
        if r.name.is_empty() {
            return Err("a rule needs a name (it labels the metric of what it drops)".into());
        }
        let anchored = |field: &str, p: &Option<String>| -> Result<Option<Regex>, String> {
            p.as_deref().map(|p| Regex::new(&format!("^(?:{p})$")).map_err(|e| format!("{field}: {e}"))).transpose()
        };
        let rule = Rule {
            name: r.name.clone(),
            namespace: anchored("namespace", &r.namespace)?,
            kind: anchored("kind", &r.kind)?,
            type_: anchored("type", &r.type_)?,
            reason: anchored("reason", &r.reason)?,
            reporting_controller: anchored("reporting_controller", &r.reporting_controller)?,
            message: r.message.as_deref().map(Regex::new).transpose().map_err(|e| format!("message: {e}"))?,
        };
        let any = [&rule.namespace, &rule.kind, &rule.type_, &rule.reason, &rule.reporting_controller, &rule.message]
            .iter()
            .any(|c| c.is_some());
        if !any {
            return Err("a rule without any condition would match every event".into());
        }
        Ok(rule)
    }

    /// `keep` says how a namespace condition treats a cluster-scoped event: passed in a keep
    /// rule, not matched in a drop rule.
    fn matches(&self, e: &NormalizedEvent, namespace: Option<&str>, keep: bool) -> bool {
        let holds =
            |re: &Option<Regex>, value: Option<&str>| re.as_ref().is_none_or(|re| re.is_match(value.unwrap_or("")));
        let namespace_holds = match (&self.namespace, namespace) {
            (None, _) => true,
            (Some(_), None) => keep,
            (Some(re), Some(ns)) => re.is_match(ns),
        };
        namespace_holds
            && holds(&self.kind, e.regarding.as_ref().and_then(|r| r.kind.as_deref()))
            && holds(&self.type_, e.type_.as_deref())
            && holds(&self.reason, e.reason.as_deref())
            && holds(&self.reporting_controller, e.reporting_controller.as_deref())
            && holds(&self.message, e.note.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use kev_schemas::ResourceRef;

    use super::*;

    fn event(kind: &str, namespace: Option<&str>, type_: &str, reason: &str, note: &str) -> NormalizedEvent {
        NormalizedEvent {
            type_: Some(type_.into()),
            reason: Some(reason.into()),
            note: Some(note.into()),
            reporting_controller: Some("kubelet".into()),
            regarding: Some(ResourceRef {
                kind: Some(kind.into()),
                namespace: namespace.map(str::to_string),
                name: Some("x".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rules(yaml: &str) -> FilterSettings {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn keep_by_namespace_lets_cluster_scoped_events_through() {
        let f = Filter::new(&rules("keep: [{name: team-a, namespace: 'team-a|team-b'}]"), &[], true).unwrap();
        assert_eq!(f.verdict(&event("Pod", Some("team-a"), "Warning", "BackOff", "")), Verdict::Publish);
        assert_eq!(f.verdict(&event("Pod", Some("team-c"), "Warning", "BackOff", "")), Verdict::Drop("keep"));
        // Anchored: a namespace that merely contains the pattern is not kept.
        assert_eq!(f.verdict(&event("Pod", Some("team-ab"), "Warning", "BackOff", "")), Verdict::Drop("keep"));
        assert_eq!(f.verdict(&event("Node", None, "Warning", "NodeNotReady", "")), Verdict::Publish);
        assert_eq!(f.verdict(&event("Node", Some(""), "Warning", "NodeNotReady", "")), Verdict::Publish);
    }

    #[test]
    fn drop_by_namespace_does_not_drop_cluster_scoped_events_but_kind_does() {
        let f = Filter::new(
            &rules("drop: [{name: system, namespace: 'kube-.*'}, {name: nodes-normal, kind: Node, type: Normal}]"),
            &[],
            true,
        )
        .unwrap();
        assert_eq!(f.verdict(&event("Pod", Some("kube-system"), "Warning", "BackOff", "")), Verdict::Drop("system"));
        assert_eq!(f.verdict(&event("Node", None, "Warning", "NodeNotReady", "")), Verdict::Publish);
        assert_eq!(f.verdict(&event("Node", None, "Normal", "Starting", "")), Verdict::Drop("nodes-normal"));
    }

    #[test]
    fn every_condition_of_a_rule_must_hold_and_message_matches_anywhere() {
        let f = Filter::new(
            &rules("drop: [{name: noisy-probe, type: Warning, reason: Unhealthy, message: 'connection refused'}]"),
            &[],
            true,
        )
        .unwrap();
        let hit =
            event("Pod", Some("a"), "Warning", "Unhealthy", "Readiness probe failed: dial tcp: connection refused");
        assert_eq!(f.verdict(&hit), Verdict::Drop("noisy-probe"));
        let other_message = event("Pod", Some("a"), "Warning", "Unhealthy", "Liveness probe failed: HTTP 500");
        assert_eq!(f.verdict(&other_message), Verdict::Publish);
        let other_reason = event("Pod", Some("a"), "Warning", "BackOff", "connection refused");
        assert_eq!(f.verdict(&other_reason), Verdict::Publish);
    }

    #[test]
    fn watched_namespaces_drop_the_default_namespace_events_not_asked_for() {
        let f = Filter::new(&FilterSettings::default(), &["team-a".into()], true).unwrap();
        assert_eq!(f.verdict(&event("Pod", Some("team-a"), "Normal", "Pulled", "")), Verdict::Publish);
        assert_eq!(
            f.verdict(&event("Pod", Some("default"), "Normal", "Pulled", "")),
            Verdict::Drop("source.namespaces")
        );
        assert_eq!(f.verdict(&event("Node", None, "Normal", "Starting", "")), Verdict::Publish);
        assert!(Filter::new(&FilterSettings::default(), &[], true).unwrap().is_empty());
    }

    #[test]
    fn broken_rules_are_refused_with_where_and_why() {
        let e = Filter::new(&rules("drop: [{name: ok, reason: X}, {name: bad, reason: '(unclosed'}]"), &[], true)
            .unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("filter.drop[1] (bad): reason:"), "{text}");
        let e = Filter::new(&rules("keep: [{name: everything}]"), &[], true).unwrap_err();
        assert!(e.to_string().contains("without any condition"), "{e}");
        let e = Filter::new(&rules("keep: [{name: '', kind: Pod}]"), &[], true).unwrap_err();
        assert!(e.to_string().contains("needs a name"), "{e}");
        assert!(serde_norway::from_str::<FilterSettings>("drop: [{name: x, reasn: X}]").is_err());
    }
}
