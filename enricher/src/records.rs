//! What the enricher writes: each output record's topic, key, timestamp and Avro value.
//!
//! Every part of a record is a function of the raw log and the configuration, never of the
//! clock or of the instance that wrote it: the key names what the record is about, the
//! timestamp is event time. That is what makes a record re-emitted after a crash, or by a
//! postmortem replay, byte-identical to the first.

use kev_engine::Output;
use kev_schemas::schema::{AGGREGATE, DEAD_LETTER, ENRICHED_EVENT, INCIDENT};
use kev_schemas::{Codec, CodecError, DeadLetter};

use crate::config::TopicsSettings;

/// One record the enricher emits, before encoding. Not boxed: each is made, encoded and
/// dropped once, and dead letters are rare.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Record {
    Engine(Output),
    Dead(DeadLetter),
}

/// Which downstream topic a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stream {
    Enriched,
    Aggregates,
    Incidents,
    DeadLetters,
}

impl Stream {
    pub const ALL: [Stream; 4] = [Stream::Enriched, Stream::Aggregates, Stream::Incidents, Stream::DeadLetters];

    pub fn topic(self, t: &TopicsSettings) -> &str {
        match self {
            Stream::Enriched => &t.enriched,
            Stream::Aggregates => &t.aggregates,
            Stream::Incidents => &t.incidents,
            Stream::DeadLetters => &t.dead_letters,
        }
    }

    /// Where [`Self::topic`] is set.
    pub fn topic_mut(self, t: &mut TopicsSettings) -> &mut String {
        match self {
            Stream::Enriched => &mut t.enriched,
            Stream::Aggregates => &mut t.aggregates,
            Stream::Incidents => &mut t.incidents,
            Stream::DeadLetters => &mut t.dead_letters,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Stream::Enriched => "enriched",
            Stream::Aggregates => "aggregates",
            Stream::Incidents => "incidents",
            Stream::DeadLetters => "dead_letters",
        }
    }

    /// Whether the topic keeps the newest record per key (a ksqlDB TABLE) rather than all.
    pub fn compacted(self) -> bool {
        matches!(self, Stream::Aggregates | Stream::Incidents)
    }

    fn schema(self) -> (&'static str, &'static str) {
        match self {
            Stream::Enriched => ("io.kev.enriched.EnrichedEvent", ENRICHED_EVENT),
            Stream::Aggregates => ("io.kev.enriched.Aggregate", AGGREGATE),
            Stream::Incidents => ("io.kev.enriched.Incident", INCIDENT),
            Stream::DeadLetters => ("io.kev.enriched.DeadLetter", DEAD_LETTER),
        }
    }
}

impl Record {
    pub fn stream(&self) -> Stream {
        match self {
            Record::Engine(Output::Enriched(_)) => Stream::Enriched,
            Record::Engine(Output::Aggregate(_)) => Stream::Aggregates,
            Record::Engine(Output::Incident(_)) => Stream::Incidents,
            Record::Dead(_) => Stream::DeadLetters,
        }
    }

    /// The record key: the regarding object of an enriched event
    /// (`cluster/namespace/kind/name`), fingerprint and window start (microseconds) of an
    /// aggregate, the id of an incident, and the source record's key for a dead letter.
    ///
    /// Built by appending, not `format!`: on every output, formatting the key cost about 3% of
    /// the enricher's CPU (BENCHMARKS.md, session 16).
    pub fn key(&self) -> Vec<u8> {
        match self {
            Record::Engine(Output::Enriched(e)) => {
                let r = e.regarding.as_ref();
                let namespace = r.and_then(|r| r.namespace.as_deref()).or(e.namespace.as_deref());
                fn part(s: Option<&str>) -> &[u8] {
                    s.unwrap_or("").as_bytes()
                }
                slash_joined(&[
                    e.cluster.as_bytes(),
                    part(namespace),
                    part(r.and_then(|r| r.kind.as_deref())),
                    part(r.and_then(|r| r.name.as_deref())),
                ])
            }
            Record::Engine(Output::Aggregate(a)) => {
                slash_joined(&[a.fingerprint.as_bytes(), itoa::Buffer::new().format(a.window_start).as_bytes()])
            }
            Record::Engine(Output::Incident(i)) => i.incident_id.clone().into_bytes(),
            Record::Dead(d) => d.key.clone().unwrap_or_default(),
        }
    }

    /// The record timestamp in milliseconds: event time of an enriched event, window end of an
    /// aggregate, last update of an incident, the source record's timestamp for a dead letter.
    pub fn timestamp_ms(&self) -> i64 {
        match self {
            Record::Engine(Output::Enriched(e)) => e.event_time.div_euclid(1000),
            Record::Engine(Output::Aggregate(a)) => a.window_end.div_euclid(1000),
            Record::Engine(Output::Incident(i)) => i.resolved_at.unwrap_or(i.updated_at).div_euclid(1000),
            Record::Dead(d) => d.seen_at,
        }
    }

    /// The value as JSON, for a replay written to a file.
    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            Record::Engine(Output::Enriched(e)) => serde_json::to_value(e),
            Record::Engine(Output::Aggregate(a)) => serde_json::to_value(a),
            Record::Engine(Output::Incident(i)) => serde_json::to_value(i),
            Record::Dead(d) => serde_json::to_value(d),
        };
        v.unwrap_or(serde_json::Value::Null)
    }

    /// The value in Schema Registry wire format for `topic`, written into `out`.
    pub async fn encode(&self, codec: &Codec, topic: &str, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let (name, text) = self.stream().schema();
        match self {
            Record::Engine(Output::Enriched(e)) => codec.encode_into(topic, name, text, e, out).await,
            Record::Engine(Output::Aggregate(a)) => codec.encode_into(topic, name, text, a, out).await,
            Record::Engine(Output::Incident(i)) => codec.encode_into(topic, name, text, i, out).await,
            Record::Dead(d) => codec.encode_into(topic, name, text, d, out).await,
        }
    }
}

/// `parts` joined by `/`, as record keys and the `kev.source` header name things: appended
/// rather than formatted, since both are built for every output.
pub(crate) fn slash_joined(parts: &[&[u8]]) -> Vec<u8> {
    let mut joined = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            joined.push(b'/');
        }
        joined.extend_from_slice(p);
    }
    joined
}

#[cfg(test)]
mod tests {
    use kev_schemas::enriched::{Aggregate, EnrichedEvent};
    use kev_schemas::raw::ResourceRef;

    use super::*;

    #[test]
    fn slash_joined_puts_one_slash_between_parts() {
        assert_eq!(slash_joined(&[b"kev.events.raw", b"2", b"1234567"]), b"kev.events.raw/2/1234567");
        assert_eq!(slash_joined(&[b"a", b"", b""]), b"a//");
        assert_eq!(slash_joined(&[]), b"");
    }

    #[test]
    fn keys_name_what_the_record_is_about() {
        let regarding = ResourceRef {
            kind: Some("Pod".into()),
            namespace: Some("shop".into()),
            name: Some("web-1".into()),
            ..Default::default()
        };
        let e = EnrichedEvent { cluster: "c1".into(), regarding: Some(regarding), ..Default::default() };
        assert_eq!(Record::Engine(Output::Enriched(e.clone())).key(), b"c1/shop/Pod/web-1");
        // A cluster-scoped object: the event's namespace, then nothing, keeps the four parts.
        let node = EnrichedEvent {
            cluster: "c1".into(),
            namespace: Some("default".into()),
            regarding: Some(ResourceRef { kind: Some("Node".into()), name: Some("n1".into()), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(Record::Engine(Output::Enriched(node)).key(), b"c1/default/Node/n1");
        let bare = EnrichedEvent { cluster: "c1".into(), ..Default::default() };
        assert_eq!(Record::Engine(Output::Enriched(bare)).key(), b"c1///");
        let a = Aggregate { fingerprint: "ab12".into(), window_start: -1_700_000_000_000_000, ..Default::default() };
        assert_eq!(Record::Engine(Output::Aggregate(a)).key(), b"ab12/-1700000000000000");
    }
}
