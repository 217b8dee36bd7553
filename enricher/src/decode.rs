//! Raw topic bytes to a raw record, or to a dead letter that says what was wrong.

use kev_schemas::{Codec, CodecError, DeadLetter, RawKind, RawRecord};

/// Dead letters keep at most this much of the source value, so that one never exceeds the
/// broker's record size.
pub const DEAD_LETTER_VALUE_BYTES: usize = 64 * 1024;

/// A record of the raw topic as read, before decoding.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
}

impl<'a> Source<'a> {
    /// The parts of an rdkafka message.
    pub fn of(m: &'a impl rdkafka::Message) -> Self {
        Self {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
            key: m.key(),
            payload: m.payload(),
        }
    }
}

/// What a raw record turned out to be. Not boxed: each is made and moved once per record, and
/// dead letters are rare.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    Raw(RawRecord),
    Dead(DeadLetter),
}

/// Decodes one raw record. Only a registry that cannot be reached is an error (retry later);
/// everything wrong with the record itself becomes a dead letter.
pub async fn decode(codec: &Codec, src: Source<'_>, max_bytes: usize) -> Result<Decoded, CodecError> {
    let dead = |kind: &str, error: String| Ok(Decoded::Dead(dead_letter(src, kind, error)));
    let Some(payload) = src.payload else {
        return dead("empty", "the record has no value".into());
    };
    if payload.len() > max_bytes {
        return dead("oversized", format!("{} bytes is more than max_record_bytes ({max_bytes})", payload.len()));
    }
    match codec.decode_raw_lean(payload).await {
        Ok(r) if r.kind == RawKind::Unknown || (r.event.is_none() && r.heartbeat.is_none()) => {
            dead("unsupported_kind", format!("record kind {:?} with no event or heartbeat this enricher knows", r.kind))
        }
        Ok(r) => Ok(Decoded::Raw(r)),
        Err(e) if e.is_retriable() => Err(e),
        Err(e @ CodecError::WireFormat(_)) => dead("wire_format", e.to_string()),
        Err(e @ CodecError::RegistryRefused(_)) => dead("unknown_schema", e.to_string()),
        Err(e) => dead("undecodable", e.to_string()),
    }
}

fn dead_letter(src: Source<'_>, kind: &str, error: String) -> DeadLetter {
    DeadLetter {
        source_topic: src.topic.to_string(),
        source_partition: src.partition,
        source_offset: src.offset,
        error_kind: kind.to_string(),
        error,
        key: src.key.map(<[u8]>::to_vec),
        value: src.payload.map(|p| p[..p.len().min(DEAD_LETTER_VALUE_BYTES)].to_vec()),
        seen_at: src.timestamp_ms,
    }
}
