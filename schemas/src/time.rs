//! Kubernetes timestamps as Avro timestamp-micros.
//!
//! `metav1.Time` has second precision and `metav1.MicroTime` microsecond precision; both become
//! microseconds since the epoch, so one logical type serves every timestamp field.

use chrono::{DateTime, SecondsFormat, Utc};

/// Parses an RFC 3339 timestamp as the API server writes it, with or without fractional seconds.
/// Returns `None` for anything else (the caller keeps the original text, nothing is dropped).
pub fn parse_micros(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc).timestamp_micros())
}

/// Formats microseconds the way the API server does: whole seconds as `...:05Z`, otherwise with
/// six fractional digits as `MicroTime` does.
pub fn format_micros(micros: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default();
    if micros % 1_000_000 == 0 {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    } else {
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_precisions() {
        for s in ["2021-08-03T09:21:09Z", "2022-04-12T00:36:06.366978Z"] {
            assert_eq!(format_micros(parse_micros(s).unwrap()), s);
        }
        assert_eq!(parse_micros("2021-08-03T09:21:09Z"), Some(1_627_982_469_000_000));
    }

    #[test]
    fn refuses_what_is_not_a_timestamp() {
        assert_eq!(parse_micros("null"), None);
        assert_eq!(parse_micros(""), None);
        assert_eq!(parse_micros("2021-08-03"), None);
    }
}
