//! A steady feed of raw records, noting when each was handed to the producer: the writing end
//! of the latency and rebalance measurements (the reading end is `kev_tests::bench::SourceWatch`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kev_common::kafka::KafkaSettings;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::Rec;

/// When each acknowledged record, by (partition, offset), was handed to the producer.
#[derive(Default)]
pub struct Sent(Mutex<HashMap<(i32, i64), Instant>>);

impl Sent {
    pub fn get(&self) -> std::sync::MutexGuard<'_, HashMap<(i32, i64), Instant>> {
        self.0.lock().unwrap()
    }
}

impl ClientContext for Sent {}

impl ProducerContext for Sent {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, r: &DeliveryResult<'_>, at: Box<Instant>) {
        if let Ok(m) = r {
            self.0.lock().unwrap().insert((m.partition(), m.offset()), *at);
        }
    }
}

/// Where kev-producer puts each cluster's records: murmur2 of the cluster id.
pub fn by_key(names: &[String], partitions: i32) -> Vec<i32> {
    names.iter().map(|n| kev_common::kafka::partition_for_key(n.as_bytes(), partitions)).collect()
}

/// kev-producer's Kafka settings, which every writer of raw records in this run uses (the
/// batch size aside).
pub const PRODUCER_SETTINGS: &[(&str, &str)] =
    &[("enable.idempotence", "true"), ("acks", "all"), ("compression.type", "lz4"), ("linger.ms", "10")];

/// A producer with the producer's settings (idempotent, acks=all, lz4, linger 10 ms).
pub fn producer(settings: &KafkaSettings, batch: usize) -> BaseProducer<Sent> {
    let batch = batch.to_string();
    let mut props = PRODUCER_SETTINGS.to_vec();
    props.push(("batch.num.messages", &batch));
    settings.client_config(&props).create_with_context(Sent::default()).unwrap()
}

/// Waits until every record `p` fed has its enriched record in `watch`, for at most 60 s.
pub async fn wait_read_back(p: &BaseProducer<Sent>, watch: &kev_tests::bench::SourceWatch, fed: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let matched = {
            let sent = p.context().get();
            watch.seen().iter().filter(|(k, _)| sent.contains_key(k)).count()
        };
        if matched >= fed || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes `records` to `topic` at `rate` records/s (in 10 ms ticks), each keyed by its cluster
/// and placed on partition `placed[cluster]`; `each_tick` runs at every tick with the time since the
/// feed began (to start a process mid-feed). Returns the feed's seconds, every record
/// acknowledged.
pub async fn feed(
    p: &BaseProducer<Sent>,
    topic: &str,
    placed: &[i32],
    names: &[String],
    records: &[&Rec],
    rate: u64,
    mut each_tick: impl FnMut(Duration),
) -> f64 {
    let started = Instant::now();
    let per_tick = (rate / 100).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for chunk in records.chunks(per_tick) {
        tick.tick().await;
        each_tick(started.elapsed());
        for r in chunk {
            let part = placed[r.cluster];
            let rec = BaseRecord::with_opaque_to(topic, Box::new(Instant::now()))
                .partition(part)
                .key(names[r.cluster].as_bytes())
                .payload(&r.value)
                .timestamp(r.time_ms);
            if let Err((e, _)) = p.send(rec) {
                eprintln!("feed: {e}");
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60)).unwrap();
    started.elapsed().as_secs_f64()
}
