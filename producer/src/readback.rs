//! Reading the raw topic back: the first-run summary, and the tests' ground truth.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kev_common::kafka::KafkaSettings;
use kev_schemas::{Codec, RawKind, RawRecord, WatchVerb};
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

use crate::recover::RecoverError;

/// One record of the raw topic.
#[derive(Debug, Clone)]
pub struct Published {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub record: RawRecord,
}

/// Reads every record of `topic` that exists now, in partition and offset order.
pub async fn read_all(settings: &KafkaSettings, topic: &str, codec: &Codec) -> Result<Vec<Published>, RecoverError> {
    let timeout = Duration::from_secs(10);
    let consumer: BaseConsumer = settings
        .consumer_config(&[
            ("group.id", "kev-producer-readback"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
        ])
        .create()?;
    let partitions = kev_common::kafka::partition_count(settings, topic, timeout)?;
    let ends = kev_common::kafka::LogEnds::new(settings, "kev-producer-readback")?;
    let mut out = Vec::new();
    for p in 0..partitions {
        let (low, high) = ends.watermarks(topic, p, timeout)?;
        let mut reader = kev_common::kafka::RangeReader::new(&consumer, topic, p, low, high)?;
        while let Some(msg) = reader.next_message()? {
            let Some(payload) = msg.payload() else { continue };
            let record = codec.decode_raw(payload).await.map_err(|e| RecoverError::Registry(e.to_string()))?;
            out.push(Published {
                partition: p,
                offset: msg.offset(),
                key: msg.key().unwrap_or_default().to_vec(),
                record,
            });
        }
    }
    Ok(out)
}

/// What a person wants to see after a replay: how much, how clean, and the loudest reasons.
#[derive(Debug, Default)]
pub struct Summary {
    pub records: usize,
    pub events: usize,
    pub heartbeats: usize,
    pub by_verb: BTreeMap<String, usize>,
    pub occurrences: i64,
    pub distinct_versions: usize,
    pub duplicate_versions: usize,
    pub warnings: usize,
    pub top_reasons: Vec<(String, usize)>,
}

impl Summary {
    pub fn of(records: &[Published]) -> Self {
        let mut s = Summary { records: records.len(), ..Default::default() };
        let mut versions: HashMap<(&str, &str), usize> = HashMap::new();
        let mut reasons: HashMap<String, usize> = HashMap::new();
        for p in records {
            match (p.record.kind, &p.record.event) {
                (RawKind::Event, Some(e)) => {
                    s.events += 1;
                    s.occurrences += e.new_occurrences;
                    *s.by_verb.entry(format!("{:?}", e.verb).to_uppercase()).or_default() += 1;
                    *versions.entry((&e.uid, &e.resource_version)).or_default() += 1;
                    if e.normalized.type_.as_deref() == Some("Warning") {
                        s.warnings += 1;
                    }
                    if e.verb != WatchVerb::Deleted {
                        *reasons.entry(e.normalized.reason.clone().unwrap_or_else(|| "(none)".into())).or_default() +=
                            1;
                    }
                }
                (RawKind::Heartbeat, _) => s.heartbeats += 1,
                _ => {}
            }
        }
        s.distinct_versions = versions.len();
        s.duplicate_versions = versions.values().filter(|n| **n > 1).count();
        let mut top: Vec<_> = reasons.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(10);
        s.top_reasons = top;
        s
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "raw topic: {} records ({} events, {} heartbeats)", self.records, self.events, self.heartbeats)?;
        writeln!(
            f,
            "  verbs: {}",
            self.by_verb.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        )?;
        writeln!(f, "  occurrences carried: {}; Warning events: {}", self.occurrences, self.warnings)?;
        writeln!(
            f,
            "  distinct (uid, resourceVersion): {}; published more than once: {}",
            self.distinct_versions, self.duplicate_versions
        )?;
        writeln!(f, "  top reasons:")?;
        for (reason, n) in &self.top_reasons {
            writeln!(f, "    {n:>6}  {reason}")?;
        }
        Ok(())
    }
}
