//! Sending output records to Kafka: the idempotent producer, delivery tracking, encoding with
//! retries while the registry is away.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kev_common::kafka::KafkaSettings;
use kev_common::shutdown::sleep_or_stop;
use kev_common::telemetry::Health;
use kev_schemas::Codec;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio_util::sync::CancellationToken;

use crate::alerts::AlertSender;
use crate::config::TopicsSettings;
use crate::records::{Record, Stream};
use crate::routes::Router;

/// Counts failed deliveries. With `message.timeout.ms=0` and idempotence librdkafka retries
/// until it succeeds, so a failure here is fatal (record too large, no authorisation): the
/// run stops before committing, and the next one re-emits from the last commit.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// The first failure that was a missing ACL.
    refused: Mutex<Option<kev_common::kafka::Refused>>,
}

impl Deliveries {
    pub fn failure(&self) -> Option<String> {
        if self.failed.load(Ordering::SeqCst) == 0 {
            return None;
        }
        self.first_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, msg)) = result {
            use rdkafka::Message;
            let before = self.failed.fetch_add(1, Ordering::SeqCst);
            metrics::counter!("kev_enricher_delivery_failures_total").increment(1);
            let text = format!("delivery to {} failed: {e}", msg.topic());
            if let Some(r) = kev_common::kafka::Refused::of(e, "write to", &format!("topic {}", msg.topic())) {
                self.refused.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(r);
            }
            // The first failure says what is wrong; the rest (usually the same) only count.
            if before == 0 {
                tracing::error!(error = %text, "an output record was not delivered");
            }
            self.first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(text);
        }
    }
}

pub type OutputProducer = ThreadedProducer<Deliveries>;

/// The idempotent producer of the output topics, transactional under `transactional_id`
/// (`exactly_once`). kev's settings come first; `kafka.properties` can override any of them.
pub fn producer(settings: &KafkaSettings, transactional_id: Option<&str>) -> Result<OutputProducer, KafkaError> {
    let mut config = settings.client_config(&[
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("compression.type", "lz4"),
        // Java's default partitioner, so that ksqlDB and Flink co-partition with kev by key.
        ("partitioner", "murmur2_random"),
        ("linger.ms", "20"),
        ("message.timeout.ms", "0"),
        ("queue.buffering.max.messages", "200000"),
    ]);
    // `kafka.properties` cannot hold a `transactional.id` (KafkaSettings::validate): it would
    // make every producer of the process transactional.
    if let Some(id) = transactional_id {
        kev_common::kafka::set_transactional(&mut config, id);
    }
    config.create_with_context(Deliveries::default())
}

/// Encodes and sends records, waiting (not dropping) while the registry or the producer queue
/// is unavailable.
pub struct Emitter {
    pub producer: Arc<OutputProducer>,
    pub codec: Arc<Codec>,
    pub topics: TopicsSettings,
    pub health: Arc<Health>,
    /// `topics.routes`, compiled.
    pub router: Router,
    /// Incidents also go to Alertmanager when `alerting.alertmanager_url` is set.
    pub alerts: Option<AlertSender>,
    pub meters: Meters,
}

/// The metrics of every output, looked up once: naming a metric per record costs a registry
/// lookup (hashing its name and labels) each time.
pub struct Meters {
    out: [metrics::Counter; 4],
    end_to_end: metrics::Histogram,
}

impl Default for Meters {
    fn default() -> Self {
        let out = |s: Stream| metrics::counter!("kev_enricher_records_out_total", "stream" => s.label());
        Self {
            out: [out(Stream::Enriched), out(Stream::Aggregates), out(Stream::Incidents), out(Stream::DeadLetters)],
            end_to_end: metrics::histogram!("kev_enricher_end_to_end_seconds"),
        }
    }
}

impl Meters {
    fn out(&self, s: Stream) -> &metrics::Counter {
        &self.out[match s {
            Stream::Enriched => 0,
            Stream::Aggregates => 1,
            Stream::Incidents => 2,
            Stream::DeadLetters => 3,
        }]
    }
}

/// Why an emit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("stopped")]
    Stopped,
    #[error("output record cannot be encoded: {0}")]
    Encode(String),
    #[error("Kafka producer: {0}")]
    Kafka(KafkaError),
}

impl Emitter {
    /// Sends `record`, derived from the raw record at (`partition`, `offset`).
    pub async fn emit(
        &self,
        record: &Record,
        partition: i32,
        offset: i64,
        stop: &CancellationToken,
    ) -> Result<(), EmitError> {
        let stream = record.stream();
        let topic = stream.topic(&self.topics);
        // Output records average about half a KiB (codec_bench): one allocation holds nearly all.
        let mut value = Vec::with_capacity(2048);
        self.encode(record, topic, stop, &mut value).await?;
        let key = record.key();
        let source = source_header(&self.topics.raw, partition, offset);
        let mut headers = OwnedHeaders::new().insert(Header { key: "kev.source", value: Some(&source) });
        if let Record::Dead(d) = record {
            headers = headers.insert(Header { key: "kev.error.kind", value: Some(d.error_kind.as_bytes()) });
            metrics::counter!("kev_enricher_dead_letters_total", "reason" => d.error_kind.clone()).increment(1);
            tracing::warn!(partition, offset, kind = %d.error_kind, error = %d.error, "raw record dead-lettered");
        }
        let ts = record.timestamp_ms();
        for (route, route_topic) in self.router.matching(record) {
            let mut value = Vec::with_capacity(2048);
            self.encode(record, route_topic, stop, &mut value).await?;
            self.send(
                BaseRecord::to(route_topic).key(&key).payload(&value).headers(headers.clone()).timestamp(ts),
                stop,
            )
            .await?;
            metrics::counter!("kev_enricher_records_routed_total", "route" => route.to_string()).increment(1);
        }
        self.send(BaseRecord::to(topic).key(&key).payload(&value).headers(headers).timestamp(ts), stop).await?;
        self.meters.out(stream).increment(1);
        // The incident-rate alert counts openings, not every update of an incident. Outputs a
        // restart re-emits are counted again: the rate is for alerting, not accounting.
        if let Record::Engine(kev_engine::Output::Incident(i)) = record {
            if let Some(a) = &self.alerts {
                a.send(i);
            }
            if i.status == kev_schemas::IncidentStatus::Open {
                let severity = crate::report::severity_name(i.severity);
                metrics::counter!("kev_enricher_incidents_opened_total", "severity" => severity).increment(1);
            }
        }
        if stream == Stream::Enriched {
            let age = chrono::Utc::now().timestamp_millis() - ts;
            self.meters.end_to_end.record(age.max(0) as f64 / 1e3);
        }
        Ok(())
    }

    /// Hands a record to librdkafka, waiting while its queue is full.
    async fn send(
        &self,
        mut base: BaseRecord<'_, Vec<u8>, Vec<u8>>,
        stop: &CancellationToken,
    ) -> Result<(), EmitError> {
        loop {
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    base = back;
                    if sleep_or_stop(Duration::from_millis(10), stop).await {
                        return Err(EmitError::Stopped);
                    }
                }
                Err((e, _)) => return Err(EmitError::Kafka(e)),
            }
        }
    }

    async fn encode(
        &self,
        record: &Record,
        topic: &str,
        stop: &CancellationToken,
        out: &mut Vec<u8>,
    ) -> Result<(), EmitError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match record.encode(&self.codec, topic, out).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retriable() => {
                    self.health.set_ready(false, format!("schema registry: {e}"));
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot encode an output record yet");
                    if sleep_or_stop(backoff, stop).await {
                        return Err(EmitError::Stopped);
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(EmitError::Encode(e.to_string())),
            }
        }
    }

    /// The missing ACL a delivery failed on, if one did, or that made the producer fail for
    /// good (an idempotent producer refused its producer id reports each delivery only as
    /// "fatal").
    pub fn refused(&self) -> Option<kev_common::kafka::Refused> {
        let refused = self.producer.context().refused.lock().unwrap_or_else(|e| e.into_inner()).clone();
        refused.or_else(|| {
            let (code, _) = self.producer.client().fatal_error()?;
            let names = self.topics.written().join(", ");
            kev_common::kafka::Refused::code(code, "write (idempotently) to", &format!("the output topics {names}"))
        })
    }

    /// Waits until Kafka has acknowledged everything sent. `Ok(false)` on timeout.
    pub fn flush(&self, timeout: Duration) -> Result<bool, String> {
        let flushed = self.producer.flush(timeout).is_ok();
        match self.producer.context().failure() {
            Some(e) => Err(e),
            None => Ok(flushed),
        }
    }
}

/// The `kev.source` header, `topic/partition/offset`.
fn source_header(topic: &str, partition: i32, offset: i64) -> Vec<u8> {
    let (mut p, mut o) = (itoa::Buffer::new(), itoa::Buffer::new());
    crate::records::slash_joined(&[topic.as_bytes(), p.format(partition).as_bytes(), o.format(offset).as_bytes()])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_source_header_names_topic_partition_and_offset() {
        assert_eq!(super::source_header("kev.events.raw", 2, 1_234_567), b"kev.events.raw/2/1234567");
        assert_eq!(super::source_header("t", 0, 0), b"t/0/0");
    }
}
