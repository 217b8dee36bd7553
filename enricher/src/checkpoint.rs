//! Engine checkpoints: a raw partition's engine state and the offset it stands at, kept in a
//! Kafka topic, so that no local disk is needed and any instance can take a partition over.
//!
//! A restart or a new owner restores the newest checkpoint at or before the committed offset
//! and re-reads the raw log from there, emitting nothing until the committed offset: the
//! engine is deterministic, so it ends up in exactly the state the previous owner had. A
//! postmortem replay restores the newest checkpoint taken before its time range starts.
//!
//! Format: the JSON of [`Checkpoint`], cut into chunks of at most [`CHUNK_BYTES`] (a large state
//! would exceed the broker's record size), each chunk a record keyed
//! `<group>/<raw topic>/<partition>` with headers naming the checkpoint's offset, newest event
//! time and the chunk's place. JSON rather than Avro: nobody else reads it, and the engine's
//! state changes shape more often than a public contract may.

use std::time::Duration;

use kev_common::kafka::{LogEnds, RangeReader};
use kev_engine::engine::EngineState;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// Largest chunk value in bytes, below the 1 MB default `message.max.bytes` of Kafka.
pub const CHUNK_BYTES: usize = 512 * 1024;
const H_OFFSET: &str = "kev.checkpoint.offset";
const H_NEWEST: &str = "kev.checkpoint.newest";
const H_CHUNK: &str = "kev.checkpoint.chunk";

/// A raw partition's engine state after reading every record before `next_offset`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub group_id: String,
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    /// Newest event or heartbeat time in the state, microseconds.
    pub newest_time: Option<i64>,
    /// [`crate::partition::EngineSpec::fingerprint`] of the configuration that made it.
    pub engine_fingerprint: String,
    pub state: EngineState,
}

/// What the headers of a checkpoint say, readable without decoding its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub next_offset: i64,
    pub newest_time: Option<i64>,
}

/// One record of a checkpoint, ready to send.
pub struct Chunk {
    pub key: String,
    pub headers: OwnedHeaders,
    pub value: Vec<u8>,
    /// Record timestamp: the checkpoint's newest event time, in milliseconds.
    pub timestamp_ms: Option<i64>,
}

/// The key of a raw partition's checkpoints.
pub fn key(group_id: &str, topic: &str, partition: i32) -> String {
    format!("{group_id}/{topic}/{partition}")
}

/// The checkpoint topic's partition for a raw partition.
pub fn partition_of(raw_partition: i32, checkpoint_partitions: i32) -> i32 {
    raw_partition.rem_euclid(checkpoint_partitions.max(1))
}

impl Checkpoint {
    pub fn meta(&self) -> Meta {
        Meta { next_offset: self.next_offset, newest_time: self.newest_time }
    }

    /// The records that store this checkpoint.
    pub fn chunks(&self) -> Result<Vec<Chunk>, serde_json::Error> {
        let json = serde_json::to_vec(self)?;
        let parts: Vec<&[u8]> = json.chunks(CHUNK_BYTES).collect();
        let n = parts.len();
        let key = key(&self.group_id, &self.topic, self.partition);
        Ok(parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let newest = self.newest_time.map(|t| t.to_string()).unwrap_or_default();
                let headers = OwnedHeaders::new()
                    .insert(Header { key: H_OFFSET, value: Some(self.next_offset.to_string().as_bytes()) })
                    .insert(Header { key: H_NEWEST, value: Some(newest.as_bytes()) })
                    .insert(Header { key: H_CHUNK, value: Some(format!("{i}/{n}").as_bytes()) });
                Chunk {
                    key: key.clone(),
                    headers,
                    value: part.to_vec(),
                    timestamp_ms: self.newest_time.map(|t| t.div_euclid(1000)),
                }
            })
            .collect())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Finds the newest checkpoint under `key` that `accept` takes, reading ever larger tails of
/// the checkpoint partition. Checkpoints that are incomplete or do not decode are skipped with
/// a warning: an older one, or the start of the raw log, is always a correct place to start.
pub fn find(
    consumer: &BaseConsumer,
    ends: &LogEnds,
    topic: &str,
    partition: i32,
    key: &str,
    accept: impl Fn(&Meta) -> bool,
) -> Result<Option<Checkpoint>, CheckpointError> {
    let Some((low, high)) = extent(ends, topic, partition)? else { return Ok(None) };
    newest_accepted(consumer, topic, partition, key, low, high, accept)
}

/// How [`find_before`] placed its search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeLookup {
    /// The broker's ListOffsets by timestamp, checked against the records on both sides of
    /// its answer: the search started there.
    Verified,
    /// The broker gave no usable answer, or one the records around it contradict (some
    /// Kafka-protocol brokers answer wrongly): the search read tails from the end instead.
    Unverified,
    /// There is no checkpoint to look for.
    Empty,
}

impl TimeLookup {
    pub fn label(self) -> &'static str {
        match self {
            TimeLookup::Verified => "verified",
            TimeLookup::Unverified => "unverified",
            TimeLookup::Empty => "empty",
        }
    }
}

/// Finds the newest checkpoint under `key` whose newest event time is before `from_us` and that
/// `accept` takes, for a replay that starts at `from_us`.
///
/// A long checkpoint topic would make [`find`]'s newest-first search read most of it for a
/// range far in the past, so the broker is asked first where `from_us` lies (ListOffsets by
/// timestamp; a chunk's record timestamp is its checkpoint's newest event time). Its answer is
/// used only once the records on both sides of it agree with it; since the partition holds the
/// checkpoints of several raw partitions, whose event times interleave, the search then reads
/// forward from the answer to this key's first checkpoint at or after `from_us` (each key's
/// checkpoints are in event-time order) and searches newest-first before that.
pub fn find_before(
    consumer: &BaseConsumer,
    ends: &LogEnds,
    topic: &str,
    partition: i32,
    key: &str,
    from_us: i64,
    accept: impl Fn(&Meta) -> bool,
) -> Result<(Option<Checkpoint>, TimeLookup), CheckpointError> {
    let Some((low, high)) = extent(ends, topic, partition)? else { return Ok((None, TimeLookup::Empty)) };
    if low >= high {
        return Ok((None, TimeLookup::Empty));
    }
    let before = |m: &Meta| m.newest_time.is_none_or(|t| t < from_us);
    let (search_end, how) = match verified_time_offset(consumer, topic, partition, from_us.div_euclid(1000), low, high)?
    {
        Some(at) => (first_not_before(consumer, topic, partition, key, at, high, from_us)?, TimeLookup::Verified),
        None => (high, TimeLookup::Unverified),
    };
    metrics::counter!("kev_enricher_checkpoint_time_lookups_total", "result" => how.label()).increment(1);
    let found = newest_accepted(consumer, topic, partition, key, low, search_end, |m| before(m) && accept(m))?;
    Ok((found, how))
}

/// `(low, end)` of the checkpoint partition, or `None` when the topic does not exist.
fn extent(ends: &LogEnds, topic: &str, partition: i32) -> Result<Option<(i64, i64)>, CheckpointError> {
    // The end read, not listed: checkpoints are written in multi-record batches, and a broker
    // that lists the end short would hide the newest one (a take-over would then re-read far
    // more of the raw log than it needs).
    match ends.watermarks(topic, partition, Duration::from_secs(10)) {
        Ok(w) => Ok(Some(w)),
        // No checkpoint topic yet: no checkpoint. Any other error (a broker too busy to
        // answer) is not "no checkpoint": starting from the raw log's start instead would be
        // slow, and wrong once retention has deleted its beginning. The caller retries.
        Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition,
        )) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The broker's answer to "the first offset whose timestamp is at or after `at_ms`", if the
/// records around it bear it out: the first record at or after it is at or after `at_ms`, and
/// the last record before it is before `at_ms`. An answer past every record is the end.
fn verified_time_offset(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    at_ms: i64,
    low: i64,
    high: i64,
) -> Result<Option<i64>, CheckpointError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(at_ms))?;
    let answer = match consumer.offsets_for_times(tpl, Duration::from_secs(10)) {
        Ok(t) => t.find_partition(topic, partition).map(|e| e.offset()),
        Err(e) => {
            tracing::debug!(topic, partition, error = %e, "no answer to ListOffsets by timestamp");
            None
        }
    };
    let at = match answer {
        Some(Offset::Offset(o)) if (low..=high).contains(&o) => o,
        Some(Offset::End) => high,
        other => {
            tracing::debug!(topic, partition, ?other, "ListOffsets by timestamp gave no offset in the log");
            return Ok(None);
        }
    };
    let timestamp = |m: &BorrowedMessage<'_>| m.timestamp().to_millis();
    if at < high {
        let mut r = RangeReader::new(consumer, topic, partition, at, high)?;
        let first = r.next_message()?;
        // None visible from there (an aborted transaction's records) bears the answer out.
        if first.as_ref().and_then(timestamp).is_some_and(|t| t < at_ms) {
            tracing::warn!(topic, partition, at, at_ms, "the broker's time lookup names a record before the time");
            return Ok(None);
        }
    }
    // The last record before the answer. Offsets that hold none a reader sees (transaction
    // markers, and under exactly_once the chunks of aborted checkpoints) are stepped over by
    // reading ever longer stretches back: a check that found no record would prove nothing.
    let mut span = 8;
    let mut start = at;
    while start > low {
        start = (at - span).max(low);
        let mut r = RangeReader::new(consumer, topic, partition, start, at)?;
        let mut last = None;
        while let Some(m) = r.next_message()? {
            last = timestamp(&m);
        }
        match last {
            Some(t) if t >= at_ms => {
                tracing::warn!(
                    topic,
                    partition,
                    at,
                    at_ms,
                    "the broker's time lookup skips a record at or after the time"
                );
                return Ok(None);
            }
            Some(_) => break,
            None => span *= 8,
        }
    }
    Ok(Some(at))
}

/// The offset of `key`'s first checkpoint at or after `from` whose newest event time is at or
/// after `from_us`, or `to`: no checkpoint of `key` after it can be before `from_us`.
fn first_not_before(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    key: &str,
    from: i64,
    to: i64,
    from_us: i64,
) -> Result<i64, CheckpointError> {
    let mut reader = RangeReader::new(consumer, topic, partition, from, to)?;
    while let Some(msg) = reader.next_message()? {
        if msg.key() != Some(key.as_bytes()) {
            continue;
        }
        if let Some((meta, 0, _)) = headers(&msg) {
            if meta.newest_time.is_some_and(|t| t >= from_us) {
                return Ok(msg.offset());
            }
        }
    }
    Ok(to)
}

/// The newest checkpoint under `key` in `[low, high)` that `accept` takes.
fn newest_accepted(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    key: &str,
    low: i64,
    high: i64,
    accept: impl Fn(&Meta) -> bool,
) -> Result<Option<Checkpoint>, CheckpointError> {
    // Newest first: read ever larger tails until one holds a checkpoint that `accept` takes.
    let mut window = 64i64;
    loop {
        let from = (high - window).max(low);
        for (meta, bytes) in complete_checkpoints(consumer, topic, partition, key, from, high)?.into_iter().rev() {
            if !accept(&meta) {
                continue;
            }
            match serde_json::from_slice::<Checkpoint>(&bytes) {
                Ok(c) => return Ok(Some(c)),
                Err(e) => {
                    metrics::counter!("kev_enricher_checkpoints_unreadable_total").increment(1);
                    tracing::warn!(key, next_offset = meta.next_offset, error = %e, "a checkpoint does not decode; trying an older one");
                }
            }
        }
        if from <= low {
            return Ok(None);
        }
        window = window.saturating_mul(4);
    }
}

/// The complete checkpoints under `key` in `[from, to)`, oldest first, reassembled from their
/// chunks. A checkpoint whose chunks are not all there (cut by `from`, or by a crash while it
/// was written) is left out.
fn complete_checkpoints(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    key: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(Meta, Vec<u8>)>, CheckpointError> {
    let mut complete = Vec::new();
    // (meta, index of the last chunk read, chunk count, bytes so far)
    let mut current: Option<(Meta, usize, usize, Vec<u8>)> = None;
    let mut reader = RangeReader::new(consumer, topic, partition, from, to)?;
    while let Some(msg) = reader.next_message()? {
        if msg.key() != Some(key.as_bytes()) {
            continue;
        }
        let Some((meta, i, n)) = headers(&msg) else { continue };
        let value = msg.payload().unwrap_or_default();
        current = match current.take() {
            _ if i == 0 => Some((meta, 0, n, value.to_vec())),
            Some((m, last, cn, mut buf)) if m == meta && cn == n && last + 1 == i => {
                buf.extend_from_slice(value);
                Some((m, i, n, buf))
            }
            _ => None,
        };
        if current.as_ref().is_some_and(|(_, last, n, _)| last + 1 == *n) {
            let (m, _, _, buf) = current.take().expect("checked above");
            complete.push((m, buf));
        }
    }
    Ok(complete)
}

fn headers(msg: &impl Message) -> Option<(Meta, usize, usize)> {
    let h = msg.headers()?;
    let get =
        |name: &str| h.iter().find(|x| x.key == name).and_then(|x| x.value).and_then(|v| std::str::from_utf8(v).ok());
    let next_offset = get(H_OFFSET)?.parse().ok()?;
    let newest_time = get(H_NEWEST).and_then(|s| s.parse().ok());
    let (i, n) = get(H_CHUNK)?.split_once('/')?;
    Some((Meta { next_offset, newest_time }, i.parse().ok()?, n.parse().ok()?))
}
