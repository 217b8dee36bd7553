//! Message templates: the message with what varies between instances of the same problem
//! masked, so that, for example, the BackOff messages of every pod of one ReplicaSet share one
//! template and so one fingerprint.

use std::sync::{Arc, LazyLock};

use regex::Regex;

/// Masks applied in order; each replaces what it matches with a placeholder. Order matters:
/// UIDs before hex, pod-name hashes before plain numbers.
static MASKS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // Quoted strings: names of secrets, images, containers, nodes.
        (r#""[^"]*""#, "\"<q>\""),
        (r"'[^']*'", "'<q>'"),
        // UIDs.
        (r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "<uid>"),
        // Digests and long hex.
        (r"\bsha256:[0-9a-f]{16,}\b", "<digest>"),
        (r"\b[0-9a-f]{12,}\b", "<hex>"),
        // IPv4 (with port), IPv6.
        (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", "<ip>"),
        (r"\b[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{0,4}){2,7}\b", "<ip>"),
        // Pod names: ReplicaSet pod-template-hash and pod suffix, or a bare 5-character suffix,
        // in the alphabet Kubernetes uses for them (no vowels, no 0/1/3).
        // The name may run on into `_namespace(uid)`, so the end is any non-name character,
        // kept by the replacement.
        (r"-[bcdfghjklmnpqrstvwxz2456789]{6,10}-[bcdfghjklmnpqrstvwxz2456789]{5}([^a-z0-9-]|$)", "-<hash>${1}"),
        (r"-[bcdfghjklmnpqrstvwxz2456789]{5}([^a-z0-9-]|$)", "-<hash>${1}"),
        // Durations such as 5m0s, 1h2m, 300ms, 2.5s.
        (r"\b\d+(?:\.\d+)?(?:h|ms|m|s|us|µs|ns)(?:\d+(?:\.\d+)?(?:h|ms|m|s|us|µs|ns))*\b", "<duration>"),
        // Timestamps.
        (r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?", "<time>"),
        // Remaining numbers, including ordinals in names (db-0) and sizes (512Mi).
        (r"\d+(?:\.\d+)?", "<n>"),
    ]
    .into_iter()
    .map(|(re, to)| (Regex::new(re).expect("static mask"), to))
    .collect()
});

/// Templates of messages seen, since the same message text comes back again and again (every
/// repeat of an event carries it). A memo: it never changes a result. Keyed by the xxh3 of the
/// message, hashed once in one pass; the message itself is compared on a hit, so a collision
/// costs a miss, never a wrong template.
#[derive(Debug, Default)]
pub struct TemplateCache {
    seen: crate::StrMemo<Arc<str>>,
}

impl TemplateCache {
    pub fn template(&mut self, message: &str) -> Arc<str> {
        self.seen.get_or_insert_with(message, || template(message).into()).clone()
    }

    /// Bytes held, for the report beside the state size (a template shared by several
    /// messages counts once per message).
    pub fn approx_bytes(&self) -> usize {
        self.seen.approx_bytes(|t| 16 + t.len())
    }
}

/// The template of a message.
pub fn template(message: &str) -> String {
    let mut out = message.to_string();
    for (re, to) in MASKS.iter() {
        if re.is_match(&out) {
            out = re.replace_all(&out, *to).into_owned();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_of_one_replicaset_share_a_template() {
        let a = template("Back-off restarting failed container app in pod web-7d4b9c8f6d-x2v9q_prod(3f1e2d4c-1111-2222-3333-444455556666)");
        let b = template("Back-off restarting failed container app in pod web-7d4b9c8f6d-k8z7w_prod(9a8b7c6d-1111-2222-3333-444455556666)");
        assert_eq!(a, b);
        assert_eq!(a, "Back-off restarting failed container app in pod web-<hash>_prod(<uid>)");
    }

    #[test]
    fn masks_what_varies() {
        assert_eq!(
            template("0/3 nodes are available: 3 Insufficient cpu."),
            "<n>/<n> nodes are available: <n> Insufficient cpu."
        );
        assert_eq!(
            template("Readiness probe failed: Get \"http://10.128.2.14:8080/healthz\": context deadline exceeded"),
            "Readiness probe failed: Get \"<q>\": context deadline exceeded"
        );
        assert_eq!(template("Liveness probe failed after 5m0s"), "Liveness probe failed after <duration>");
        assert_eq!(
            template("MountVolume.SetUp failed for volume \"data\" : secret \"db-creds\" not found"),
            "MountVolume.SetUp failed for volume \"<q>\" : secret \"<q>\" not found"
        );
        assert_eq!(template("Node 10.0.0.12 status is now: NodeReady"), "Node <ip> status is now: NodeReady");
    }

    #[test]
    fn keeps_words_that_only_look_like_hashes_when_they_have_vowels() {
        assert_eq!(template("Started container quorum-guard"), "Started container quorum-guard");
    }
}
