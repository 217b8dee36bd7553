//! What the enricher's output topics hold, against a reference: the same engine code run in
//! process over the raw log read back from the broker, encoded with the same registry. The
//! comparison checks the Kafka side (ordering, loss, duplicates, recovery, hand-over); the
//! engine's own behaviour is tested in `engine/tests`.

use std::collections::BTreeMap;
use std::time::Duration;

use kev_common::kafka::{partition_count, KafkaSettings, LogEnds, RangeReader};
use kev_enricher::decode::{decode, Source};
use kev_enricher::partition::{EngineSpec, PartitionEngine};
use kev_enricher::records::Stream;
use kev_enricher::EnricherConfig;
use kev_schemas::Codec;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

/// One record as it sits in (or would sit in) a topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rec {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub timestamp: i64,
}

/// Records per stream, per key, in log order.
pub type ByKey = BTreeMap<Stream, BTreeMap<Vec<u8>, Vec<Rec>>>;

fn consumer(settings: &KafkaSettings) -> BaseConsumer {
    settings.client_config(&[("group.id", "kev-test-readout"), ("enable.auto.commit", "false")]).create().unwrap()
}

/// Every record of `topic` now, per partition in offset order.
pub fn read_topic(settings: &KafkaSettings, topic: &str) -> Vec<(i32, i64, Rec)> {
    let c = consumer(settings);
    let n = partition_count(settings, topic, Duration::from_secs(10)).unwrap();
    let ends = LogEnds::new(settings, "kev-test-log-end").unwrap();
    let mut out = Vec::new();
    for p in 0..n {
        let (low, high) = ends.watermarks(topic, p, Duration::from_secs(10)).unwrap();
        let mut r = RangeReader::new(&c, topic, p, low, high).unwrap();
        while let Some(m) = r.next_message().unwrap() {
            let rec = Rec {
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().unwrap_or_default().to_vec(),
                timestamp: m.timestamp().to_millis().unwrap_or(0),
            };
            out.push((p, m.offset(), rec));
        }
    }
    out
}

/// The output topics of `cfg`, grouped by stream and key.
pub fn read_outputs(cfg: &EnricherConfig) -> ByKey {
    let mut all = ByKey::new();
    for s in Stream::ALL {
        let by_key = all.entry(s).or_default();
        for (_, _, rec) in read_topic(&cfg.kafka, s.topic(&cfg.topics)) {
            by_key.entry(rec.key.clone()).or_default().push(rec);
        }
    }
    all
}

/// What an uninterrupted enricher would emit for the raw log as it is now.
pub async fn reference(cfg: &EnricherConfig, codec: &Codec) -> ByKey {
    let spec = EngineSpec::load(cfg).unwrap();
    let c = consumer(&cfg.kafka);
    let n = partition_count(&cfg.kafka, &cfg.topics.raw, Duration::from_secs(10)).unwrap();
    let mut all = ByKey::new();
    let mut out = Vec::new();
    let ends = LogEnds::new(&cfg.kafka, "kev-test-log-end").unwrap();
    for p in 0..n {
        let (low, high) = ends.watermarks(&cfg.topics.raw, p, Duration::from_secs(10)).unwrap();
        let mut pe = PartitionEngine::new(p, spec.engine(Default::default()), low);
        let mut r = RangeReader::new(&c, &cfg.topics.raw, p, low, high).unwrap();
        while let Some(m) = r.next_message().unwrap() {
            let d = decode(codec, Source::of(&m), cfg.max_record_bytes).await.unwrap();
            pe.apply(d, m.offset(), &mut out);
            for rec in out.drain(..) {
                let stream = rec.stream();
                let mut value = Vec::new();
                rec.encode(codec, stream.topic(&cfg.topics), &mut value).await.unwrap();
                let r = Rec { key: rec.key(), value, timestamp: rec.timestamp_ms() };
                all.entry(stream).or_default().entry(r.key.clone()).or_default().push(r);
            }
        }
    }
    all
}

/// How the live topics compare with the reference.
#[derive(Debug, Default)]
pub struct Comparison {
    pub records: usize,
    pub reference_records: usize,
    /// Records beyond the reference's: re-emissions after a crash.
    pub duplicates: usize,
}

/// Asserts every stream holds the reference's distinct records and, per key, the reference's
/// final value (what a compacted topic or a ksqlDB TABLE shows). With `exact`, also that each
/// key's records are the reference's, in order, with no duplicate.
pub fn assert_matches(live: &ByKey, reference: &ByKey, exact: bool) -> Comparison {
    let mut cmp = Comparison::default();
    for s in Stream::ALL {
        let empty = BTreeMap::new();
        let l = live.get(&s).unwrap_or(&empty);
        let r = reference.get(&s).unwrap_or(&empty);
        let lkeys: Vec<_> = l.keys().collect();
        let rkeys: Vec<_> = r.keys().collect();
        assert_eq!(lkeys.len(), rkeys.len(), "{s:?}: distinct keys differ");
        assert!(lkeys == rkeys, "{s:?}: the keys differ");
        for (key, rrecs) in r {
            let lrecs = &l[key];
            let key_text = String::from_utf8_lossy(key);
            assert_eq!(lrecs.last(), rrecs.last(), "{s:?} {key_text}: final value differs");
            let mut ld: Vec<_> = lrecs.clone();
            ld.sort();
            ld.dedup();
            let mut rd: Vec<_> = rrecs.clone();
            rd.sort();
            rd.dedup();
            assert!(ld == rd, "{s:?} {key_text}: distinct records differ ({} live, {} reference)", ld.len(), rd.len());
            if exact {
                assert!(lrecs == rrecs, "{s:?} {key_text}: records differ in number or order");
            }
            cmp.records += lrecs.len();
            cmp.reference_records += rrecs.len();
        }
    }
    cmp.duplicates = cmp.records.saturating_sub(cmp.reference_records);
    cmp
}

/// Sum of records per stream.
pub fn counts(by: &ByKey) -> BTreeMap<Stream, usize> {
    by.iter().map(|(s, m)| (*s, m.values().map(Vec::len).sum())).collect()
}

/// An enricher configuration for tests: fast commits and checkpoints, a free HTTP port, and
/// topics kept forever: their records carry the event times of the dumps (2019-2024), and Kafka
/// deletes by record time, so a 7-day retention would delete them within a minute of writing.
pub fn enricher_config(kafka: KafkaSettings, registry_url: &str) -> EnricherConfig {
    let mut cfg =
        EnricherConfig { kafka, commit_interval_ms: 200, checkpoint_interval_ms: 1_000, ..Default::default() };
    cfg.topics.retention_ms = -1;
    cfg.registry.url = registry_url.to_string();
    cfg.http.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    cfg
}

/// The group's committed offset and the high watermark of each raw partition, asked again
/// for up to 30 s while the broker answers with an error (a topic just created has no leader
/// for a moment).
pub fn progress(cfg: &EnricherConfig) -> (Vec<i64>, Vec<i64>) {
    let started = std::time::Instant::now();
    loop {
        match kev_enricher::topics::group_progress(cfg) {
            Ok(p) => return p,
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                tracing::debug!(error = %e, "group progress not answered; asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("group progress: {e}"),
        }
    }
}

/// Waits until the group has committed some raw records, not necessarily all.
pub async fn wait_started(cfg: &EnricherConfig, timeout: Duration) {
    let started = std::time::Instant::now();
    while progress(cfg).0.iter().sum::<i64>() == 0 {
        assert!(started.elapsed() < timeout, "nothing committed after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the group has committed every raw record there is now. Panics after `timeout`.
pub async fn wait_caught_up(cfg: &EnricherConfig, timeout: Duration) {
    let started = std::time::Instant::now();
    loop {
        let (committed, highs) = progress(cfg);
        if committed == highs {
            return;
        }
        assert!(started.elapsed() < timeout, "not caught up after {timeout:?}: committed {committed:?} of {highs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
