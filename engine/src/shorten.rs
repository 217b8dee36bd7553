//! Event messages shortened for an incident's summary, the way a person would shorten them.
//!
//! A summary quotes the root cause's message, and messages run long (a scheduler's reasons for
//! each node, a probe's whole HTTP error). Cutting at a character count left
//! `{node.kubernetes.io/not-ready: }, t)` and `net/http: reques)`: half a word, a bracket opened
//! and never closed, which reads as a different message. Here a message is cut only where a word
//! ends outside every bracket and quote, so names, quoted objects and `{key: value}` groups stay
//! whole, and the cut is marked with an ellipsis.

/// `text` in at most about `max` characters: the longest prefix that ends at a word boundary
/// outside brackets and double quotes, followed by `…`. When no such boundary comes before `max`
/// (one long bracketed group or quoted name opens the message), the first one after it is taken,
/// so nothing is ever cut inside a group; a message with no safe boundary at all is kept whole.
pub fn shorten(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut depth = 0usize;
    let mut quoted = false;
    let mut before: Option<usize> = None; // the last safe cut within max characters
    for (count, (at, c)) in text.char_indices().enumerate() {
        match c {
            '"' => quoted = !quoted,
            '(' | '[' | '{' if !quoted => depth += 1,
            ')' | ']' | '}' if !quoted => depth = depth.saturating_sub(1),
            c if c.is_whitespace() && depth == 0 && !quoted => {
                if count <= max {
                    before = Some(at);
                } else {
                    return cut(text, before.unwrap_or(at));
                }
            }
            _ => {}
        }
    }
    match before {
        Some(at) => cut(text, at),
        None => text.to_string(),
    }
}

/// `text[..at]` without the trailing separators a cut leaves (`,`, `:`, `;`), and `…`.
fn cut(text: &str, at: usize) -> String {
    let kept = text[..at].trim_end().trim_end_matches([',', ':', ';', '-']).trim_end();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn short_messages_are_kept_whole() {
        assert_eq!(shorten("  Back-off restarting failed container ", 80), "Back-off restarting failed container");
    }

    #[test]
    fn a_scheduler_message_is_cut_after_its_taint_group_not_inside_it() {
        let m = "0/3 nodes are available: 1 node(s) had taint {node.kubernetes.io/not-ready: }, that the pod \
                 didn't tolerate, 2 node(s) didn't match pod affinity/anti-affinity rules.";
        let s = shorten(m, 80);
        assert_eq!(s, "0/3 nodes are available: 1 node(s) had taint {node.kubernetes.io/not-ready: }…");
    }

    #[test]
    fn a_probe_error_is_cut_between_words_and_a_quoted_url_stays_whole() {
        let m = "Readiness probe failed: Get \"https://10.0.195.177:6443/readyz\": net/http: request canceled \
                 while waiting for connection (Client.Timeout exceeded while awaiting headers)";
        let s = shorten(m, 80);
        assert_eq!(s, "Readiness probe failed: Get \"https://10.0.195.177:6443/readyz\": net/http…");
        let s = shorten(m, 40);
        assert_eq!(s, "Readiness probe failed: Get…");
        // A quoted name that starts before the limit and ends after it is kept, not cut.
        let s = shorten(m, 35);
        assert_eq!(s, "Readiness probe failed: Get…");
    }

    #[test]
    fn a_group_that_spans_the_limit_is_kept_and_the_cut_comes_after_it() {
        let m = "MountVolume.SetUp failed for volume (a b c d e f g h) x";
        assert_eq!(shorten(m, 40), "MountVolume.SetUp failed for volume…");
        let m = "(a very long bracketed opening that runs past the limit) and then more words";
        assert_eq!(shorten(m, 20), "(a very long bracketed opening that runs past the limit)…");
        assert_eq!(
            shorten("\"one-long-quoted-name-without-spaces-at-all\"", 10),
            "\"one-long-quoted-name-without-spaces-at-all\""
        );
    }

    #[test]
    fn unbalanced_brackets_and_multibyte_text_do_not_panic() {
        let m = "1) first step failed; 2) second step ✓ done; then ünïcödé words follow here and more";
        let s = shorten(m, 30);
        assert!(s.ends_with('…') && s.chars().count() <= 31, "{s}");
        let s = shorten(&"é ".repeat(100), 11);
        assert_eq!(s, "é é é é é é…");
    }
}
