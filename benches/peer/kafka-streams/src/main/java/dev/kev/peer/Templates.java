package dev.kev.peer;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * kev's message templates (engine/src/template.rs) in java.util.regex: the same patterns, in the
 * same order, with the same replacements, memoised per message as kev and the Quix peer do.
 *
 * <p>Where the two regex dialects differ, the Java patterns say what Rust's `regex` crate means:
 * UNICODE_CHARACTER_CLASS makes {@code \d} Unicode decimal digits and {@code \b} a boundary of
 * Unicode word characters, as they are in Rust (Java's default is ASCII digits); Rust's {@code $}
 * without multi-line mode is the very end of the text, which is Java's {@code \z} (Java's
 * {@code $} also matches before a final line terminator); Rust's {@code ${1}} is Java's
 * {@code $1}; {@code µ} is U+00B5 in both.
 */
final class Templates {
    private static final String[][] MASKS = {
        // Quoted strings: names of secrets, images, containers, nodes.
        {"\"[^\"]*\"", "\"<q>\""},
        {"'[^']*'", "'<q>'"},
        // UIDs.
        {"\\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\\b", "<uid>"},
        // Digests and long hex.
        {"\\bsha256:[0-9a-f]{16,}\\b", "<digest>"},
        {"\\b[0-9a-f]{12,}\\b", "<hex>"},
        // IPv4 (with port), IPv6.
        {"\\b\\d{1,3}(?:\\.\\d{1,3}){3}(?::\\d+)?\\b", "<ip>"},
        {"\\b[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{0,4}){2,7}\\b", "<ip>"},
        // Pod names: pod-template-hash and pod suffix, or a bare 5-character suffix.
        {"-[bcdfghjklmnpqrstvwxz2456789]{6,10}-[bcdfghjklmnpqrstvwxz2456789]{5}([^a-z0-9-]|\\z)", "-<hash>$1"},
        {"-[bcdfghjklmnpqrstvwxz2456789]{5}([^a-z0-9-]|\\z)", "-<hash>$1"},
        // Durations such as 5m0s, 1h2m, 300ms, 2.5s.
        {"\\b\\d+(?:\\.\\d+)?(?:h|ms|m|s|us|\u00b5s|ns)(?:\\d+(?:\\.\\d+)?(?:h|ms|m|s|us|\u00b5s|ns))*\\b", "<duration>"},
        // Timestamps.
        {"\\b\\d{4}-\\d{2}-\\d{2}[T ]\\d{2}:\\d{2}:\\d{2}(?:\\.\\d+)?(?:Z|[+-]\\d{2}:?\\d{2})?", "<time>"},
        // Remaining numbers.
        {"\\d+(?:\\.\\d+)?", "<n>"},
    };

    private static final Pattern[] PATTERNS = new Pattern[MASKS.length];

    static {
        for (int i = 0; i < MASKS.length; i++) {
            PATTERNS[i] = Pattern.compile(MASKS[i][0], Pattern.UNICODE_CHARACTER_CLASS);
        }
    }

    /** As many messages as the Quix peer's {@code lru_cache(maxsize=100_000)} keeps. */
    private static final int MEMO_SIZE = 100_000;

    /** Least recently used first; one memo per stream task (kev keeps one per partition). */
    private final Map<String, String> memo = new LinkedHashMap<>(1024, 0.75f, true) {
        private static final long serialVersionUID = 1L;

        @Override
        protected boolean removeEldestEntry(Map.Entry<String, String> eldest) {
            return size() > MEMO_SIZE;
        }
    };

    String template(String message) {
        String t = memo.get(message);
        if (t == null) {
            t = mask(message);
            memo.put(message, t);
        }
        return t;
    }

    /** The template of a message, as engine/src/template.rs computes it. */
    static String mask(String message) {
        String out = message;
        for (int i = 0; i < PATTERNS.length; i++) {
            Matcher m = PATTERNS[i].matcher(out);
            if (m.find()) {
                out = m.replaceAll(MASKS[i][1]);
            }
        }
        return out;
    }
}
