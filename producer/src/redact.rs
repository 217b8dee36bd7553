//! Redaction: secrets that leak into Event notes (tokens in probe URLs, credentials in command
//! lines) are replaced before anything reaches Kafka.
//!
//! The rules run over every string of the Event object as the API server sent it, before it is
//! parsed: the normalised view and the preserved original (including fields kev does not model,
//! kept as JSON in `extra`) are both made from the redacted object, so no copy of the secret
//! survives anywhere in the record.

use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `redaction` section of the producer's configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionSettings {
    /// Apply the shipped rules (bearer tokens, credentials in URLs, AWS keys, JWTs, secret
    /// assignments and flags). Default true.
    #[serde(default = "yes")]
    pub defaults: bool,
    /// Your own rules, applied after the shipped ones.
    #[serde(default)]
    pub rules: Vec<RedactionRule>,
}

impl Default for RedactionSettings {
    fn default() -> Self {
        RedactionSettings { defaults: true, rules: Vec::new() }
    }
}

fn yes() -> bool {
    true
}

/// A regular expression and what replaces each match (`$1` and `${name}` refer to groups, so a
/// rule can keep the key and hide the value).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionRule {
    /// Names the rule in the `kev_producer_redactions_total{rule}` metric.
    pub name: String,
    pub pattern: String,
    #[serde(default = "default_replacement")]
    pub replacement: String,
}

fn default_replacement() -> String {
    MASK.into()
}

/// What a secret becomes.
pub const MASK: &str = "[REDACTED]";

/// The shipped rules: (name, pattern, replacement). Each keeps what tells a person what was
/// there (the scheme, the key, the flag) and hides the value.
pub const DEFAULT_RULES: &[(&str, &str, &str)] = &[
    // `Authorization: Bearer <token>` in probe or webhook errors.
    ("bearer-token", r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*", "$1 [REDACTED]"),
    // `https://user:password@host/...`: the user and password go.
    ("url-credentials", r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s:/@]+:[^\s/@]+@", "${1}[REDACTED]@"),
    // AWS access key ids (long-term AKIA, temporary ASIA).
    ("aws-access-key-id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "[REDACTED]"),
    ("aws-secret-access-key", r"(?i)(aws_secret_access_key\s*[=:]\s*)[A-Za-z0-9/+=]{40}", "${1}[REDACTED]"),
    // JSON Web Tokens, Kubernetes service account tokens among them.
    ("jwt", r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*", "[REDACTED]"),
    // `password=...`, `"token": "..."`, `?api_key=...` in command lines, JSON and URLs. The key
    // starts a word (not `cookie-secret`), the separator follows it at once, and a `:` counts
    // only without a space after it or between quotes (JSON), so that `volume "cookie-secret" :
    // failed to sync secret cache`, `failed to fetch token: Post "https://..."` and
    // `secret "db-creds" not found` (names correlation needs) are left alone.
    (
        "secret-assignment",
        r#"(?i)(^|[\s"'{,;?&(\[])((?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|client[_-]?secret|auth)(?:["']?=\s*["']?|["']?:["']?|["']:\s*["']))[^\s&"',;}]+"#,
        "${1}${2}[REDACTED]",
    ),
    // `--password s3cr3t` / `--token=...` on a command line.
    ("secret-flag", r"(?i)(--(?:password|passwd|token|secret|api-key|client-secret)[= ])\S+", "${1}[REDACTED]"),
];

/// A rule that cannot be used, with which one and why.
#[derive(Debug, thiserror::Error)]
#[error("redaction.rules[{index}] ({name}): {reason}")]
pub struct RedactionError {
    index: usize,
    name: String,
    reason: String,
}

/// The compiled rules. A `RegexSet` first finds which rules match a string at all, so the
/// common case (nothing to hide) costs one scan per string.
#[derive(Debug)]
pub struct Redactor {
    names: Vec<String>,
    rules: Vec<(Regex, String)>,
    set: RegexSet,
}

impl Redactor {
    pub fn new(settings: &RedactionSettings) -> Result<Self, RedactionError> {
        let mut names = Vec::new();
        let mut rules = Vec::new();
        if settings.defaults {
            for (name, pattern, replacement) in DEFAULT_RULES {
                names.push(name.to_string());
                rules.push((Regex::new(pattern).expect("shipped rules compile"), replacement.to_string()));
            }
        }
        for (index, r) in settings.rules.iter().enumerate() {
            let error = |reason: String| RedactionError { index, name: r.name.clone(), reason };
            if r.name.is_empty() {
                return Err(error("a rule needs a name (it labels the metric)".into()));
            }
            let re = Regex::new(&r.pattern).map_err(|e| error(e.to_string()))?;
            if re.is_match("") {
                return Err(error("the pattern matches the empty string, so it would mask nothing useful".into()));
            }
            names.push(r.name.clone());
            rules.push((re, r.replacement.clone()));
        }
        let set = RegexSet::new(rules.iter().map(|(re, _)| re.as_str())).expect("each pattern compiled alone");
        Ok(Redactor { names, rules, set })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Redacts every string in `value`, in place; calls `hit` with the name of each rule that
    /// matched, once per string it changed.
    pub fn redact(&self, value: &mut Value, hit: &mut impl FnMut(&str)) {
        match value {
            Value::String(s) => {
                if let Some(redacted) = self.redact_str(s, hit) {
                    *s = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact(v, hit)),
            Value::Object(map) => map.values_mut().for_each(|v| self.redact(v, hit)),
            _ => {}
        }
    }

    /// The redacted text, or `None` when no rule matches.
    pub fn redact_str(&self, s: &str, hit: &mut impl FnMut(&str)) -> Option<String> {
        // Nearly every string matches no rule, and a search that may stop at the first match is
        // cheaper than one for every rule's matches (perf: the overlapping search was 8% of a
        // replay's CPU, run over every uid, timestamp and managed-field name).
        if !self.set.is_match(s) {
            return None;
        }
        let matched = self.set.matches(s);
        let mut text = s.to_string();
        for i in matched.iter() {
            let (re, replacement) = &self.rules[i];
            // A later rule may match what an earlier one already masked: not a new hit.
            if let std::borrow::Cow::Owned(changed) = re.replace_all(&text, replacement.as_str()) {
                if changed != text {
                    text = changed;
                    hit(&self.names[i]);
                }
            }
        }
        (text != s).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Redactor {
        Redactor::new(&RedactionSettings::default()).unwrap()
    }

    fn redacted(s: &str) -> (String, Vec<String>) {
        let mut hits = Vec::new();
        let out = defaults().redact_str(s, &mut |n| hits.push(n.to_string())).unwrap_or_else(|| s.to_string());
        (out, hits)
    }

    #[test]
    fn shipped_rules_hide_common_secret_shapes_and_keep_the_context() {
        let jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.eyJpc3MiOiJrdWJlcm5ldGVzIn0.c2lnbmF0dXJlLXBhcnQ";
        let cases = [
            (
                "Liveness probe failed: Get \"http://10.0.0.7:8080/healthz\": Authorization: Bearer abcDEF123456789.xyz",
                "Authorization: Bearer [REDACTED]",
                "abcDEF123456789",
            ),
            ("Failed to pull image from https://robot:hunter2secret@registry.example.com/app", "https://[REDACTED]@registry", "hunter2secret"),
            ("env AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE set", "[REDACTED]", "AKIAIOSFODNN7EXAMPLE"),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws_secret_access_key = [REDACTED]",
                "wJalrXUtnFEMI",
            ),
            (&format!("token rejected: {jwt}"), "token rejected: [REDACTED]", "eyJhbGci"),
            ("exec: /bin/app --db-url=x password=Sup3rS3cret!", "password=[REDACTED]", "Sup3rS3cret"),
            ("GET /metrics?api_key=0123456789abcdef&x=1", "api_key=[REDACTED]&x=1", "0123456789abcdef"),
            ("command: mysql --password hunter22 -h db", "--password [REDACTED]", "hunter22"),
        ];
        for (input, expected, secret) in cases {
            let (out, hits) = redacted(input);
            assert!(out.contains(expected), "{input:?} -> {out:?}");
            assert!(!out.contains(secret), "{input:?} -> {out:?}");
            assert!(!hits.is_empty());
        }
    }

    #[test]
    fn names_of_secrets_and_configmaps_survive_for_correlation() {
        for message in [
            "MountVolume.SetUp failed for volume \"creds\" : secret \"db-password\" not found",
            "MountVolume.SetUp failed for volume \"client-ca\" : configmap \"client-ca\" not found",
            "MountVolume.SetUp failed for volume \"cookie-secret\" : failed to sync secret cache: timed out",
            "MountVolume.SetUp failed for volume \"secret\" : failed to sync secret cache",
            "Error: secret \"api-token\" not found",
            "Successfully assigned team-a/web-5d8f7c9b6-x2x9z to node-1",
            "Back-off restarting failed container",
            "MountVolume.SetUp failed for volume \"kube-api-access-x\" : failed to fetch token: Post \"https://api:6443/token\": EOF",
        ] {
            assert_eq!(redacted(message).0, message);
        }
    }

    #[test]
    fn redacts_every_string_of_an_object_and_counts_by_rule() {
        let mut object = serde_json::json!({
            "note": "probe failed: Bearer abcdefghijklmnop",
            "metadata": {"annotations": {"cmd": "run --token=abc123secret"}},
            "series": [{"x": "{\"password\": \"p4ssw0rd!\"}"}],
            "count": 3,
        });
        let mut hits = Vec::new();
        defaults().redact(&mut object, &mut |n| hits.push(n.to_string()));
        let text = object.to_string();
        for secret in ["abcdefghijklmnop", "abc123secret", "p4ssw0rd"] {
            assert!(!text.contains(secret), "{text}");
        }
        hits.sort();
        assert_eq!(hits, ["bearer-token", "secret-assignment", "secret-flag"]);
        assert_eq!(object["count"], 3);
    }

    #[test]
    fn user_rules_apply_after_the_defaults_and_broken_ones_are_refused() {
        let settings: RedactionSettings = serde_norway::from_str(
            "defaults: false\nrules: [{name: ticket, pattern: 'TICKET-[0-9]+', replacement: 'TICKET-?'}]",
        )
        .unwrap();
        let r = Redactor::new(&settings).unwrap();
        let mut hits = Vec::new();
        assert_eq!(r.redact_str("see TICKET-42", &mut |n| hits.push(n.to_string())).as_deref(), Some("see TICKET-?"));
        assert_eq!(hits, ["ticket"]);
        // Defaults off: a bearer token is left alone.
        assert_eq!(r.redact_str("Bearer abcdefghijk", &mut |_| {}), None);

        let bad: RedactionSettings = serde_norway::from_str("rules: [{name: bad, pattern: '(x'}]").unwrap();
        assert!(Redactor::new(&bad).unwrap_err().to_string().starts_with("redaction.rules[0] (bad):"));
        let empty: RedactionSettings = serde_norway::from_str("rules: [{name: e, pattern: 'x*'}]").unwrap();
        assert!(Redactor::new(&empty).unwrap_err().to_string().contains("empty string"));
    }
}
