//! Classification rules: a YAML file of ordered rules, shipped defaults plus the user's own.
//!
//! A broken file is refused when it is loaded, with the line and the reason, so that a typo
//! never reaches a running enricher.

use std::time::Duration;

use kev_schemas::raw::NormalizedEvent;
use kev_schemas::Severity;
use regex::Regex;
use serde::Deserialize;

/// The rules kev ships with.
pub const DEFAULT_RULES: &str = include_str!("../rules/default.yaml");

/// The categories a rule may name.
pub const CATEGORIES: [&str; 14] = [
    "scheduling",
    "image",
    "storage",
    "network",
    "node",
    "container-lifecycle",
    "probes",
    "resources",
    "autoscaling",
    "workload",
    "configuration",
    "policy-security",
    "control-plane",
    "other",
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RulesError {
    #[error("{source_name}: {reason}")]
    Syntax { source_name: String, reason: String },
    #[error("{source_name}, line {line}, rule {rule:?}: {reason}")]
    Rule { source_name: String, line: usize, rule: String, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    #[serde(rename = "type")]
    type_: Option<String>,
    reason: Option<String>,
    kind: Option<String>,
    controller: Option<String>,
    message: Option<String>,
    severity: SeverityName,
    category: String,
    escalate: Option<EscalateSpec>,
}

/// A severity as configuration files spell it (`info`, `warning`, `error`, `critical`): the
/// rules here, the enricher's routes and alerting there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeverityName {
    Info,
    Warning,
    Error,
    Critical,
}

impl From<SeverityName> for Severity {
    fn from(s: SeverityName) -> Self {
        match s {
            SeverityName::Info => Severity::Info,
            SeverityName::Warning => Severity::Warning,
            SeverityName::Error => Severity::Error,
            SeverityName::Critical => Severity::Critical,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalateSpec {
    count: u32,
    within: String,
    to: SeverityName,
}

/// Raise the severity when the same object repeats the same rule `count` times within `within`.
#[derive(Debug, Clone)]
pub struct Escalation {
    pub count: i64,
    pub within_us: i64,
    pub to: Severity,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    type_: Option<Regex>,
    reason: Option<Regex>,
    kind: Option<Regex>,
    controller: Option<Regex>,
    message: Option<Regex>,
    pub severity: Severity,
    pub category: String,
    pub escalate: Option<Escalation>,
}

fn matches(re: &Option<Regex>, value: Option<&str>) -> bool {
    re.as_ref().is_none_or(|re| re.is_match(value.unwrap_or("")))
}

impl Rule {
    pub fn matches(&self, e: &NormalizedEvent) -> bool {
        matches(&self.reason, e.reason.as_deref())
            && matches(&self.type_, e.type_.as_deref())
            && matches(&self.kind, e.regarding.as_ref().and_then(|r| r.kind.as_deref()))
            && matches(&self.controller, e.reporting_controller.as_deref())
            && matches(&self.message, e.note.as_deref())
    }
}

/// Rules that may match, per (type, reason, kind, controller). A memo: it never changes a result.
#[derive(Debug, Default)]
pub struct MatchCache {
    /// Keyed by "type\0reason\0kind\0controller\0".
    candidates: crate::StrMemo<Vec<usize>>,
    /// Reused to build the key without allocating.
    key: String,
}

impl MatchCache {
    /// Bytes held, for the report beside the state size.
    pub fn approx_bytes(&self) -> usize {
        self.candidates.approx_bytes(|v| v.capacity() * std::mem::size_of::<usize>())
    }
}

/// Ordered rules; the first that matches decides.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

/// Parses a duration such as `90s`, `10m` or `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = s[..split].parse().ok()?;
    let unit = match &s[split..] {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some(Duration::from_millis(n * unit))
}

impl RuleSet {
    /// The shipped defaults.
    pub fn defaults() -> Self {
        Self::parse(DEFAULT_RULES, "rules/default.yaml").expect("the shipped rules are valid")
    }

    /// The user's rules first, then the defaults.
    pub fn with_overrides(user: &str, source_name: &str) -> Result<Self, RulesError> {
        let mut set = Self::parse(user, source_name)?;
        set.rules.extend(Self::defaults().rules);
        Ok(set)
    }

    /// Parses and checks a rules file.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, RulesError> {
        let file: RulesFile = serde_norway::from_str(text)
            .map_err(|e| RulesError::Syntax { source_name: source_name.to_string(), reason: e.to_string() })?;
        let mut rules = Vec::with_capacity(file.rules.len());
        for spec in file.rules {
            let line = text.lines().position(|l| l.contains(&format!("name: {}", spec.name))).map_or(0, |i| i + 1);
            let fail = |reason: String| RulesError::Rule {
                source_name: source_name.to_string(),
                line,
                rule: spec.name.clone(),
                reason,
            };
            let compile = |field: &str, re: &Option<String>| -> Result<Option<Regex>, RulesError> {
                re.as_deref().map(|r| Regex::new(r).map_err(|e| fail(format!("{field}: {e}")))).transpose()
            };
            if !CATEGORIES.contains(&spec.category.as_str()) {
                return Err(fail(format!("unknown category {:?}; expected one of {CATEGORIES:?}", spec.category)));
            }
            let escalate = match &spec.escalate {
                None => None,
                Some(e) => {
                    let within = parse_duration(&e.within)
                        .ok_or_else(|| fail(format!("escalate.within {:?} is not a duration like 10m", e.within)))?;
                    if e.count < 2 {
                        return Err(fail("escalate.count must be at least 2".into()));
                    }
                    Some(Escalation { count: e.count as i64, within_us: within.as_micros() as i64, to: e.to.into() })
                }
            };
            rules.push(Rule {
                type_: compile("type", &spec.type_)?,
                reason: compile("reason", &spec.reason)?,
                kind: compile("kind", &spec.kind)?,
                controller: compile("controller", &spec.controller)?,
                message: compile("message", &spec.message)?,
                severity: spec.severity.into(),
                category: spec.category.clone(),
                escalate,
                name: spec.name,
            });
        }
        Ok(RuleSet { rules })
    }

    /// The index of the first rule that matches.
    pub fn first_match(&self, e: &NormalizedEvent) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(e))
    }

    /// Like [`RuleSet::first_match`], with the rules whose type, reason, kind and controller
    /// match remembered per combination, so that only message expressions run per event.
    pub fn first_match_cached(&self, cache: &mut MatchCache, e: &NormalizedEvent) -> Option<usize> {
        let key = &mut cache.key;
        key.clear();
        for part in [
            e.type_.as_deref(),
            e.reason.as_deref(),
            e.regarding.as_ref().and_then(|r| r.kind.as_deref()),
            e.reporting_controller.as_deref(),
        ] {
            key.push_str(part.unwrap_or(""));
            key.push('\0');
        }
        let candidates = cache.candidates.get_or_insert_with(key, || {
            self.rules
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    matches(&r.reason, e.reason.as_deref())
                        && matches(&r.type_, e.type_.as_deref())
                        && matches(&r.kind, e.regarding.as_ref().and_then(|x| x.kind.as_deref()))
                        && matches(&r.controller, e.reporting_controller.as_deref())
                })
                .map(|(i, _)| i)
                .collect()
        });
        candidates.iter().copied().find(|i| matches(&self.rules[*i].message, e.note.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load() {
        assert!(RuleSet::defaults().rules.len() > 30);
    }

    #[test]
    fn a_broken_rule_is_refused_with_its_line_and_reason() {
        let text = "rules:\n  - name: ok\n    reason: '^A$'\n    severity: info\n    category: other\n  - name: broken\n    reason: '^(B$'\n    severity: info\n    category: other\n";
        let err = RuleSet::parse(text, "mine.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("mine.yaml, line 6, rule \"broken\": reason:"), "{msg}");
        let bad_category = "rules:\n  - name: c\n    severity: info\n    category: colour\n";
        assert!(RuleSet::parse(bad_category, "x").unwrap_err().to_string().contains("unknown category \"colour\""));
        let bad_severity = "rules:\n  - name: c\n    severity: dire\n    category: other\n";
        let msg = RuleSet::parse(bad_severity, "x").unwrap_err().to_string();
        assert!(msg.contains("line 3") && msg.contains("dire"), "{msg}");
        let bad_within = "rules:\n  - name: e\n    severity: info\n    category: other\n    escalate: {count: 3, within: soon, to: error}\n";
        assert!(RuleSet::parse(bad_within, "x").unwrap_err().to_string().contains("\"soon\""));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("10 minutes"), None);
    }
}
