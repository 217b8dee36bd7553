//! The first-run command: the whole pipeline in one process, on an embedded default.
//!
//! librdkafka's in-process mock cluster stands in for Kafka and [`DevRegistry`] for the Schema
//! Registry (both for trying kev out, not for production). The producer replays each dump
//! under its own cluster id, exactly as `kev-producer replay` would; the enricher runs as
//! `kev-enricher run` would; and a reader of the output topics, like any downstream consumer,
//! prints incidents as they open and resolve and the noisiest window aggregates, then a summary
//! and the postmortem report. Nothing here is a shortcut around the Kafka path: every line
//! printed was read back from an output topic.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kev_common::devregistry::DevRegistry;
use kev_common::telemetry::Health;
use kev_enricher::partition::EngineSpec;
use kev_enricher::records::Stream;
use kev_enricher::report::{severity_name, time, ReportInput};
use kev_enricher::{live, topics, EnricherConfig};
use kev_producer::ProducerConfig;
use kev_schemas::schema::{AGGREGATE_SCHEMA, ENRICHED_EVENT_SCHEMA, INCIDENT_SCHEMA};
use kev_schemas::{Aggregate, EnrichedEvent, Incident, IncidentStatus};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// What the first run does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Dumps to replay, each under the cluster id of its file name.
    pub files: Vec<PathBuf>,
    /// Aggregates with at least this many occurrences in their window are printed as they close.
    pub noisy: i64,
    /// Replay speed: 0 as fast as possible, else real time times this factor.
    pub speed: f64,
}

/// Why the first run failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("embedded Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("development Schema Registry: {0}")]
    Registry(String),
    #[error("producer: {0}")]
    Producer(String),
    #[error("enricher: {0}")]
    Enricher(String),
    #[error("an output record cannot be decoded: {0}")]
    Decode(#[from] kev_schemas::CodecError),
    #[error("writing to the terminal: {0}")]
    Io(#[from] std::io::Error),
    #[error("stopped")]
    Stopped,
}

/// What came out, for the summary, the report and the tests.
#[derive(Debug, Default)]
pub struct DemoOutcome {
    pub raw_records: i64,
    pub events_published: u64,
    pub enricher: live::RunStats,
    pub report: ReportInput,
}

impl DemoOutcome {
    /// Occurrences the enriched events stand for (a count bump of 5 is 5 occurrences).
    pub fn occurrences(&self) -> i64 {
        self.report.events.iter().map(|e| e.new_occurrences).sum()
    }

    /// Raw event records per aggregate record.
    pub fn compression(&self) -> f64 {
        self.report.events.len() as f64 / self.report.aggregates.len().max(1) as f64
    }
}

/// The cluster id a dump is replayed under: its file name without extensions.
pub fn cluster_of(file: &std::path::Path) -> String {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.split('.').next().unwrap_or("default").to_string()
}

/// Runs the pipeline over `opts.files` and prints to `out` as records arrive.
pub async fn run(opts: &DemoOptions, out: &mut dyn Write, stop: &CancellationToken) -> Result<DemoOutcome, DemoError> {
    let mut cfg = EnricherConfig::default();
    let mock = MockCluster::new(1)?;
    cfg.kafka.bootstrap_servers = mock.bootstrap_servers();
    // The mock cluster has no CreateTopics: every topic is made here.
    cfg.topics.create = false;
    let t = &cfg.topics;
    mock.create_topic(&t.raw, t.partitions, 1)?;
    for topic in t.written() {
        mock.create_topic(topic, t.partitions, 1)?;
    }
    let registry = DevRegistry::start(SocketAddr::from(([127, 0, 0, 1], 0)), stop.clone())
        .await
        .map_err(|e| DemoError::Registry(e.to_string()))?;
    cfg.registry.url = registry.url.clone();
    let codec = Arc::new(cfg.registry.codec()?);
    writeln!(
        out,
        "kev first run: embedded Kafka (librdkafka mock cluster) at {}, development Schema Registry at {}",
        cfg.kafka.bootstrap_servers, registry.url
    )?;

    let spec = EngineSpec::load(&cfg).map_err(|e| DemoError::Enricher(e.to_string()))?;
    let enricher_stop = stop.child_token();
    let enricher = {
        let (cfg, codec, stop) = (cfg.clone(), codec.clone(), enricher_stop.clone());
        tokio::spawn(async move { live::run_until_stopped(&cfg, &spec, codec, Health::new(), stop).await })
    };
    let producer = {
        let (files, kafka, url, speed, stop) =
            (opts.files.clone(), cfg.kafka.clone(), registry.url.clone(), opts.speed, stop.clone());
        let topic = cfg.topics.raw.clone();
        tokio::spawn(async move {
            let mut published = 0;
            for file in files {
                let mut p =
                    ProducerConfig { cluster_id: cluster_of(&file), kafka: kafka.clone(), ..Default::default() };
                p.registry.url = url.clone();
                p.topic.name = topic.clone();
                p.topic.create = false;
                p.source.speed = speed;
                let stats = kev_producer::run::replay(&p, vec![file], Health::new(), stop.clone())
                    .await
                    .map_err(|e| DemoError::Producer(e.to_string()))?;
                published += stats.published;
            }
            Ok::<u64, DemoError>(published)
        })
    };

    let mut outcome = DemoOutcome::default();
    let reader = Reader::new(&cfg)?;
    // Next offset to read per output (topic, partition): how far the reader has got.
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    let mut producer = Some(producer);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Err(DemoError::Stopped),
            m = reader.consumer.recv() => {
                let m = m?;
                next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
                let Some(bytes) = m.payload() else { continue };
                let topic = m.topic();
                if topic == cfg.topics.incidents {
                    let i: Incident = codec.decode(bytes, &INCIDENT_SCHEMA).await?;
                    print_incident(out, &i)?;
                    outcome.report.incidents.push(i);
                } else if topic == cfg.topics.aggregates {
                    let a: Aggregate = codec.decode(bytes, &AGGREGATE_SCHEMA).await?;
                    if a.count >= opts.noisy {
                        writeln!(out, "{}  NOISY     {:>5} x {} {} {}: {}", time(a.window_start), a.count,
                            a.namespace.as_deref().unwrap_or("-"), a.kind.as_deref().unwrap_or("-"),
                            a.reason.as_deref().unwrap_or("-"), a.template)?;
                    }
                    outcome.report.aggregates.push(a);
                } else if topic == cfg.topics.enriched {
                    let e: EnrichedEvent = codec.decode(bytes, &ENRICHED_EVENT_SCHEMA).await?;
                    outcome.report.events.push(e);
                } else {
                    outcome.report.dead_letters += 1;
                }
            }
            _ = tick.tick() => {
                if let Some(p) = producer.take_if(|p| p.is_finished()) {
                    outcome.events_published = p.await.map_err(|e| DemoError::Producer(e.to_string()))??;
                }
                if producer.is_none() && topics::group_caught_up(&cfg)? && reader.caught_up(&next)? {
                    break;
                }
            }
        }
    }
    enricher_stop.cancel();
    outcome.enricher = enricher
        .await
        .map_err(|e| DemoError::Enricher(e.to_string()))?
        .map_err(|e| DemoError::Enricher(e.to_string()))?;
    outcome.raw_records = topics::group_progress(&cfg)?.1.iter().sum();
    Ok(outcome)
}

/// Prints the end-of-run summary and the top aggregates.
pub fn print_summary(out: &mut dyn Write, o: &DemoOutcome) -> std::io::Result<()> {
    let incidents = o.report.latest_incidents();
    let resolved = incidents.iter().filter(|i| i.resolved_at.is_some()).count();
    writeln!(out)?;
    writeln!(out, "summary")?;
    writeln!(
        out,
        "  raw records        {} ({} event versions published, the rest heartbeats)",
        o.raw_records, o.events_published
    )?;
    writeln!(out, "  enriched events    {} ({} occurrences)", o.report.events.len(), o.occurrences())?;
    writeln!(
        out,
        "  aggregate records  {} (1-minute windows; {:.2} events per aggregate)",
        o.report.aggregates.len(),
        o.compression()
    )?;
    writeln!(
        out,
        "  incidents          {} ({} resolved, {} still open; {} merged into another that explains them)",
        incidents.len(),
        resolved,
        incidents.len() - resolved,
        o.report.merged_incidents()
    )?;
    writeln!(
        out,
        "  nested incidents   {} (inside another incident of the same cluster and time)",
        o.report.nested_incidents()
    )?;
    let r = o.report.reading();
    writeln!(
        out,
        "  records to read    {:.1} per 1,000 raw events ({} incidents + {} recurring warnings outside them, of {} events)",
        r.per_thousand(),
        r.incidents,
        r.loose_fingerprints,
        r.raw_events
    )?;
    writeln!(out, "  dead letters       {}", o.report.dead_letters)?;
    writeln!(out)?;
    writeln!(out, "noisiest aggregates (occurrences per fingerprint, most severe first)")?;
    for t in o.report.top_aggregates().into_iter().take(10) {
        let a = t.sample;
        writeln!(
            out,
            "  {:<8} {:>6} x {} {} {} {}: {}",
            severity_name(t.severity),
            t.count,
            a.cluster,
            a.namespace.as_deref().unwrap_or("-"),
            a.kind.as_deref().unwrap_or("-"),
            a.reason.as_deref().unwrap_or("-"),
            a.template
        )?;
    }
    Ok(())
}

fn print_incident(out: &mut dyn Write, i: &Incident) -> std::io::Result<()> {
    let (at, what) = match i.status {
        IncidentStatus::Open => (i.opened_at, "OPEN    "),
        IncidentStatus::Resolved => (i.resolved_at.unwrap_or(i.updated_at), "RESOLVED"),
        // Updates are debounced by the engine but still frequent: the report shows them all.
        _ => return Ok(()),
    };
    writeln!(
        out,
        "{}  {what}  {:<8} {}: {}",
        time(at),
        format!("{:?}", i.severity).to_lowercase(),
        i.cluster,
        i.summary
    )
}

/// A downstream reader of every output topic from its start.
struct Reader {
    consumer: StreamConsumer,
    ends: kev_common::kafka::LogEnds,
    topics: Vec<String>,
    partitions: i32,
}

impl Reader {
    fn new(cfg: &EnricherConfig) -> Result<Self, DemoError> {
        let consumer: StreamConsumer = cfg
            .kafka
            .client_config(&[("group.id", "kev-first-run-reader"), ("enable.auto.commit", "false")])
            .create()?;
        let t = &cfg.topics;
        let topics: Vec<String> = Stream::ALL.map(|s| s.topic(t).to_string()).to_vec();
        let mut tpl = TopicPartitionList::new();
        for topic in &topics {
            for p in 0..t.partitions {
                tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            }
        }
        consumer.assign(&tpl)?;
        Ok(Reader {
            consumer,
            ends: kev_common::kafka::LogEnds::new(&cfg.kafka, "kev-demo-reader-log-end")?,
            topics,
            partitions: t.partitions,
        })
    }

    /// Whether every output record written so far has been read, given the next offset to
    /// read per (topic, partition).
    fn caught_up(&self, next: &HashMap<(String, i32), i64>) -> Result<bool, DemoError> {
        for topic in &self.topics {
            for p in 0..self.partitions {
                let (_, high) = self.ends.watermarks(topic, p, Duration::from_secs(5))?;
                if next.get(&(topic.clone(), p)).copied().unwrap_or(0) < high {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}
