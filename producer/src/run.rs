//! Runs sessions one after another until done: the retry loop around `session::run`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kev_common::kafka::{Fencings, Refused, TRANSACTION_CALL_TIMEOUT};
use kev_common::shutdown::sleep_or_stop;
use kev_common::telemetry::Health;
use kev_schemas::Codec;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::ProducerConfig;
use crate::recover;
use crate::session::{self, SessionContext, SessionEnd, SessionStats};
use crate::source::{self, ClockKind, SourceEvent};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("Kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error("schema registry client: {0}")]
    Codec(#[from] kev_schemas::CodecError),
    #[error(transparent)]
    Dump(#[from] crate::dump::DumpError),
    #[error("configuration: {0}")]
    Config(String),
    /// An ACL is missing: retrying cannot help.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// `exactly_once`: this producer was fenced again and again; another live producer has
    /// its transactional id (two leaders for one cluster, or one id for two clusters).
    /// Fewer fencings ([`Fencings`]) are a transaction the coordinator timed out, or a leader
    /// that lost its Lease to a new one and goes on standing by.
    #[error(
        "fenced {limit} ({reason}): another producer uses transactional.id {id}; give each cluster \
         source its own (transactional_id), and one Lease per cluster"
    )]
    Fenced { id: String, reason: String, limit: String },
}

/// The idempotent producer kev publishes with, transactional in `exactly_once` mode. kev's
/// settings come first; `kafka.properties` can override any of them.
pub fn kafka_producer(cfg: &ProducerConfig) -> Result<FutureProducer, KafkaError> {
    let mut config = cfg.kafka.client_config(&[
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("compression.type", "lz4"),
        // Java's default partitioner, so Java and Flink consumers co-partition with kev.
        ("partitioner", "murmur2_random"),
        ("linger.ms", "10"),
        // Never give up on a record: while Kafka is down, records wait (bounded by
        // buffer.max_in_flight) instead of being dropped.
        ("message.timeout.ms", "0"),
        ("queue.buffering.max.messages", "200000"),
    ]);
    if let Some(id) = cfg.transactional_id() {
        kev_common::kafka::set_transactional(&mut config, &id);
    }
    config.create()
}

/// `exactly_once`: makes `producer` the one producer of its transactional id, fencing the
/// previous one (a crashed or deposed leader) and waiting until its transactions are
/// committed or aborted, so that the topic read back afterwards holds all it will ever hold
/// of them.
async fn init_transactions(producer: &FutureProducer) -> Result<(), KafkaError> {
    let p = producer.clone();
    tokio::task::spawn_blocking(move || p.init_transactions(TRANSACTION_CALL_TIMEOUT))
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}

/// The missing ACL behind a transaction call's failure, named by what the broker refused.
fn transaction_refusal(e: &KafkaError, id: &str, topic: &str) -> Option<Refused> {
    use rdkafka::error::RDKafkaErrorCode::*;
    let code = e.rdkafka_error_code()?;
    let (operation, resource) = match code {
        TopicAuthorizationFailed => ("write (in a transaction) to", format!("topic {topic}")),
        ClusterAuthorizationFailed => ("use transactions on", "the cluster".to_string()),
        _ => ("use", format!("transactional id {id}")),
    };
    Refused::code(code, operation, &resource)
}

/// Builds the registry codec from the configuration.
pub fn codec(cfg: &ProducerConfig) -> Result<Arc<Codec>, RunError> {
    Ok(Arc::new(cfg.registry.codec()?))
}

/// Creates the raw topic when configured to and it is missing.
pub async fn prepare_topic(cfg: &ProducerConfig) -> Result<(), RunError> {
    if cfg.topic.create {
        let t = &cfg.topic;
        kev_common::kafka::ensure_topic(&cfg.kafka, &t.name, t.partitions, t.replication, &[]).await.map_err(|e| {
            match Refused::of(&e, "describe or create", &format!("topic {}", t.name)) {
                Some(r) => RunError::Refused(r),
                None => RunError::Kafka(e),
            }
        })?;
    }
    Ok(())
}

/// [`prepare_topic`] until it succeeds while Kafka does not answer, saying so on readiness; a
/// refusal (ACLs) is returned. `false` when stopped meanwhile.
async fn wait_for_topic(cfg: &ProducerConfig, health: &Health, stop: &CancellationToken) -> Result<bool, RunError> {
    let stage = format!("Kafka at {}: topic {}", cfg.kafka.bootstrap_servers, cfg.topic.name);
    let done = kev_common::retry::until_done(
        &stage,
        health,
        stop,
        || prepare_topic(cfg),
        |e| matches!(e, RunError::Refused(_)),
    )
    .await?;
    Ok(done.is_some())
}

/// Runs sessions fed by `start_source` until one ends without error, or `stop` is cancelled.
/// Every session rebuilds the de-duplication state from Kafka first.
pub async fn run_sessions<F>(
    cfg: &ProducerConfig,
    codec: Arc<Codec>,
    health: Arc<Health>,
    origin: Origin,
    stop: CancellationToken,
    mut start_source: F,
) -> Result<SessionStats, RunError>
where
    F: FnMut(CancellationToken, Option<String>) -> Result<mpsc::Receiver<SourceEvent>, RunError>,
{
    let ctx = SessionContext {
        topic: cfg.topic.name.clone(),
        cluster: cfg.cluster_id.clone(),
        producer_id: cfg.producer_id.clone(),
        source_label: origin.label,
        clock: origin.clock,
        heartbeat_interval: cfg.heartbeat_interval(),
        max_in_flight: cfg.buffer.max_in_flight.max(1),
        commit_interval: cfg.transactional_id().map(|_| cfg.commit_interval()),
        codec: codec.clone(),
        health: health.clone(),
        redactor: Arc::new(cfg.redactor().map_err(|e| RunError::Config(e.to_string()))?),
        filter: Arc::new(cfg.filter().map_err(|e| RunError::Config(e.to_string()))?),
        scopes: crate::watch::watched_scopes(&cfg.source).len(),
        term: origin.term,
    };
    let transactional_id = cfg.transactional_id();
    let mut total = SessionStats::default();
    let mut backoff = Duration::from_millis(200);
    let mut fencings = Fencings::default();
    while !stop.is_cancelled() {
        // Made before the state is read back: in exactly_once mode, fencing the previous
        // producer first is what makes the read-back complete.
        let producer = kafka_producer(cfg)?;
        if let Some(id) = &transactional_id {
            health.set_ready(false, "initialising transactions");
            if let Err(e) = init_transactions(&producer).await {
                if let Some(refused) = transaction_refusal(&e, id, &cfg.topic.name) {
                    health.set_ready(false, refused.to_string());
                    return Err(refused.into());
                }
                if !retry_later("transactions", &e, &mut backoff, &health, &stop).await {
                    break;
                }
                continue;
            }
            tracing::info!(transactional_id = %id, "exactly_once: transactions initialised");
        }
        health.set_ready(false, "rebuilding state from the raw topic");
        let rebuilt =
            recover::rebuild(&cfg.kafka, &cfg.topic.name, &cfg.cluster_id, &codec, transactional_id.is_some()).await;
        let recovered = match rebuilt {
            Ok(r) => r,
            Err(e) => {
                if let Some(refused) = e.refused(&cfg.topic.name) {
                    health.set_ready(false, refused.to_string());
                    return Err(refused.into());
                }
                if !retry_later("recovery", &e, &mut backoff, &health, &stop).await {
                    break;
                }
                continue;
            }
        };
        if transactional_id.is_some() {
            producer.begin_transaction()?;
        }
        let source_stop = stop.child_token();
        // Where the previous session of the same source had read to, if it said.
        let resume = recovered.position.filter(|(source, _)| *source == ctx.source_label).map(|(_, rv)| rv);
        let rx = start_source(source_stop.clone(), resume)?;
        let (result, stats) = session::run(&ctx, &producer, recovered.state, rx, stop.clone()).await;
        source_stop.cancel();
        add(&mut total, stats);
        match result {
            Ok(end) => {
                if end == SessionEnd::Stopped {
                    // Stopping (shutdown, or leadership lost): records not yet sent are dropped
                    // here; whoever publishes next rebuilds from the topic and re-lists them.
                    producer.purge(rdkafka::producer::PurgeConfig::default().queue());
                }
                let _ = producer.flush(Duration::from_secs(30));
                tracing::info!(?end, ?stats, "session ended");
                if end == SessionEnd::SourceFinished || end == SessionEnd::Stopped {
                    return Ok(total);
                }
            }
            Err(e) => {
                if let (session::SessionError::Transaction(k), Some(id)) = (&e, &transactional_id) {
                    if let Some(refused) = transaction_refusal(k, id, &cfg.topic.name) {
                        health.set_ready(false, refused.to_string());
                        return Err(refused.into());
                    }
                }
                // A fenced transactional producer fails for good; the next session's producer
                // fences whoever did it in turn, so a repeated fencing means a live rival.
                if let (Some((_, reason)), Some(id)) = (producer.client().fatal_error(), &transactional_id) {
                    let times = fencings.record();
                    tracing::warn!(transactional_id = %id, %reason, times, "the transactional producer was fenced");
                    if fencings.exhausted() {
                        let fenced = RunError::Fenced { id: id.clone(), reason, limit: Fencings::limit() };
                        health.set_ready(false, fenced.to_string());
                        return Err(fenced);
                    }
                }
                if let session::SessionError::Delivery(k) = &e {
                    let topic = format!("topic {}", cfg.topic.name);
                    // An idempotent producer refused its producer id has a fatal error, which
                    // each delivery reports only as "fatal".
                    let fatal = producer.client().fatal_error().map(|(code, _)| code);
                    let refused = Refused::of(k, "write to", &topic)
                        .or_else(|| fatal.and_then(|code| Refused::code(code, "write (idempotently) to", &topic)));
                    if let Some(refused) = refused {
                        health.set_ready(false, refused.to_string());
                        return Err(refused.into());
                    }
                }
                metrics::counter!("kev_producer_session_restarts_total", "reason" => "delivery").increment(1);
                tracing::warn!(error = %e, ?stats, retry_in = ?backoff, "session failed; restarting from the raw topic");
                health.set_ready(false, format!("session failed: {e}"));
                drop(producer);
                if sleep_or_stop(backoff, &stop).await {
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    Ok(total)
}

/// What a run of sessions publishes as: its source's label (heartbeats carry it, to resume
/// from), the clock its heartbeats follow, and with leader election the term every record must
/// fall in.
pub struct Origin {
    pub label: String,
    pub clock: ClockKind,
    pub term: Option<crate::leader::Term>,
}

/// A session that could not start (`stage`: what failed): counts it, says why on readiness, and
/// waits `backoff`, doubled for the next time. `false` when stopped meanwhile.
async fn retry_later(
    stage: &'static str,
    error: &(dyn std::fmt::Display + Sync),
    backoff: &mut Duration,
    health: &Health,
    stop: &CancellationToken,
) -> bool {
    metrics::counter!("kev_producer_session_restarts_total", "reason" => stage).increment(1);
    tracing::warn!(%error, retry_in = ?backoff, stage, "a session cannot start yet");
    health.set_ready(false, format!("{stage}: {error}"));
    if sleep_or_stop(*backoff, stop).await {
        return false;
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(30));
    true
}

/// Replays dump files through sessions until every object is published.
pub async fn replay(
    cfg: &ProducerConfig,
    files: Vec<PathBuf>,
    health: Arc<Health>,
    stop: CancellationToken,
) -> Result<SessionStats, RunError> {
    let codec = codec(cfg)?;
    if !wait_for_topic(cfg, &health, &stop).await? {
        return Ok(SessionStats::default());
    }
    let label = format!(
        "replay:{}",
        files.iter().map(|f| f.file_name().unwrap_or_default().to_string_lossy()).collect::<Vec<_>>().join(",")
    );
    let (speed, gap) = (cfg.source.speed, Duration::from_millis(cfg.source.max_gap_ms));
    let origin = Origin { label, clock: ClockKind::EventTime, term: None };
    run_sessions(cfg, codec, health, origin, stop, |s, _| Ok(source::replay(files.clone(), speed, gap, s)?)).await
}

/// Watches a live cluster through sessions until `stop`; with leader election, only while this
/// replica holds the Lease.
pub async fn watch(
    cfg: &ProducerConfig,
    client: kube::Client,
    health: Arc<Health>,
    stop: CancellationToken,
) -> Result<SessionStats, RunError> {
    let codec = codec(cfg)?;
    if !wait_for_topic(cfg, &health, &stop).await? {
        return Ok(SessionStats::default());
    }
    let api = loop {
        match crate::watch::discover(&client, &cfg.source.api).await {
            Ok(api) => break api,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the Kubernetes API yet");
                health.set_ready(false, format!("kubernetes API: {e}"));
                if sleep_or_stop(Duration::from_secs(5), &stop).await {
                    return Ok(SessionStats::default());
                }
            }
        }
    };
    tracing::info!(api = api.label(), "watching Events");
    let label = format!("watch:{}", api.label());
    let start = |s: CancellationToken, resume: Option<String>| {
        Ok(crate::watch::start(client.clone(), api, &cfg.source, resume, s))
    };
    if !cfg.leader_election.enabled {
        let origin = Origin { label, clock: ClockKind::Wall, term: None };
        return run_sessions(cfg, codec, health, origin, stop, start).await;
    }
    let elector = Arc::new(
        crate::leader::Elector::new(client.clone(), &cfg.leader_election, cfg.lease_name(), cfg.producer_id.clone())
            .with_health(health.clone()),
    );
    let mut total = SessionStats::default();
    loop {
        // A standby is healthy and ready: it is what makes a handover quick.
        health.set_ready(true, "standby: waiting for the Lease");
        if !elector.acquire(&stop).await {
            break;
        }
        // Cancelled when this leadership ends: the Lease lost, or the session's term over.
        let leading = stop.child_token();
        let keeper = {
            let (elector, leading, stop) = (elector.clone(), leading.clone(), stop.clone());
            tokio::spawn(async move { elector.keep(leading, stop).await })
        };
        let origin = Origin { label: label.clone(), clock: ClockKind::Wall, term: Some(elector.term()) };
        let stats = run_sessions(cfg, codec.clone(), health.clone(), origin, leading.clone(), start).await;
        leading.cancel();
        let _ = keeper.await;
        add(&mut total, stats?);
        if stop.is_cancelled() {
            elector.release().await;
            break;
        }
        metrics::counter!("kev_producer_leadership_lost_total").increment(1);
        tracing::warn!("lost the Lease; standing by");
    }
    Ok(total)
}

fn add(total: &mut SessionStats, s: SessionStats) {
    total.observed += s.observed;
    total.published += s.published;
    total.duplicates += s.duplicates;
    total.stale += s.stale;
    total.invalid += s.invalid;
    total.filtered += s.filtered;
    total.heartbeats += s.heartbeats;
    total.transactions += s.transactions;
}
