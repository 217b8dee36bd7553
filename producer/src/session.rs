//! A publishing session: from a source, through the de-duplication state, to Kafka.
//!
//! A session starts from state rebuilt from Kafka and ends when its source ends, when asked to
//! stop, or at the first delivery failure. The caller then starts a new session, which rebuilds
//! the state again: whatever the failed session did or did not deliver, the new one knows it from
//! the topic, so nothing is lost and nothing is published twice.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesOrdered;
use futures::{Future, StreamExt};
use kev_common::kafka::TRANSACTION_CALL_TIMEOUT;
use kev_common::telemetry::Health;
use kev_schemas::{Codec, CodecError, EventObject, EventObservation, Heartbeat, RawRecord, WatchVerb};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dedup::{Decision, DedupState};
use crate::filter::{Filter, Verdict};
use crate::redact::Redactor;
use crate::source::{ClockKind, SourceEvent};

/// How a session ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The source has nothing more (a replay is complete) and every record is acknowledged.
    SourceFinished,
    /// Asked to stop (shutdown, or leadership lost); in-flight records were drained.
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("Kafka refused a record: {0}")]
    Delivery(KafkaError),
    #[error("the source failed: {0}")]
    Source(String),
    /// `exactly_once`: a transaction could not be committed. The next session's producer, of
    /// the same transactional id, has Kafka abort it and publishes its records again.
    #[error("Kafka transaction: {0}")]
    Transaction(KafkaError),
    /// The leadership term ran out before a record was handed over (the process did not run
    /// for a while): the session stops as if asked to, sending nothing more.
    #[error("the leadership term is over")]
    TermOver,
}

/// What a session needs besides its source and state.
pub struct SessionContext {
    pub topic: String,
    pub cluster: String,
    pub producer_id: String,
    pub source_label: String,
    pub clock: ClockKind,
    pub heartbeat_interval: Duration,
    pub max_in_flight: usize,
    /// `exactly_once`: the open transaction is committed this often (and when the session
    /// ends, and before a wait for the registry, which could outlast the transaction timeout).
    pub commit_interval: Option<Duration>,
    pub codec: Arc<Codec>,
    pub health: Arc<Health>,
    /// Masks secrets in each object before it is parsed.
    pub redactor: Arc<Redactor>,
    /// The user's keep/drop rules.
    pub filter: Arc<Filter>,
    /// How many list/watch loops feed the session (one per watched namespace, or one): a
    /// heartbeat names a resourceVersion to resume from only once every loop has reached one.
    pub scopes: usize,
    /// With leader election, the leadership term this session publishes in: checked before
    /// every record is handed to Kafka.
    pub term: Option<crate::leader::Term>,
}

/// Counts of one session, for logs, the first-run summary and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    pub observed: u64,
    pub published: u64,
    pub duplicates: u64,
    pub stale: u64,
    pub invalid: u64,
    /// Not published because a filter rule dropped them.
    pub filtered: u64,
    pub heartbeats: u64,
    /// Transactions committed (`exactly_once`).
    pub transactions: u64,
}

type Ack = (
    Option<(String, String)>,
    Instant,
    Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
);
type InFlight = FuturesOrdered<Pin<Box<dyn Future<Output = Ack> + Send + Sync>>>;

struct Session<'a> {
    ctx: &'a SessionContext,
    producer: &'a FutureProducer,
    state: DedupState,
    in_flight: InFlight,
    /// uids seen per scope during a LIST in progress.
    listing: HashMap<Option<String>, HashSet<String>>,
    /// How far each list/watch loop has read, in resourceVersions.
    positions: HashMap<Option<String>, String>,
    /// The API server refused a list or watch, and none has gone through since.
    refused: bool,
    /// The schema registry failed the last call.
    registry_failed: bool,
    event_time_high: Option<i64>,
    last_heartbeat_ms: Option<i64>,
    stats: SessionStats,
}

/// Runs one session until its source ends, `stop` is cancelled, or a delivery fails.
pub async fn run(
    ctx: &SessionContext,
    producer: &FutureProducer,
    state: DedupState,
    mut source: mpsc::Receiver<SourceEvent>,
    stop: CancellationToken,
) -> (Result<SessionEnd, SessionError>, SessionStats) {
    let mut s = Session {
        ctx,
        producer,
        state,
        in_flight: FuturesOrdered::new(),
        listing: HashMap::new(),
        positions: HashMap::new(),
        refused: false,
        registry_failed: false,
        event_time_high: None,
        last_heartbeat_ms: None,
        stats: SessionStats::default(),
    };
    ctx.health.set_ready(true, "publishing");
    let result = match s.run_loop(&mut source, &stop).await {
        Ok(end) => match s.drain(end).await {
            Ok(end) => s.commit().await.map(|()| end),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let result = match result {
        Err(SessionError::TermOver) => s.term_over(&stop).await,
        other => other,
    };
    (result, s.stats)
}

impl Session<'_> {
    async fn run_loop(
        &mut self,
        source: &mut mpsc::Receiver<SourceEvent>,
        stop: &CancellationToken,
    ) -> Result<SessionEnd, SessionError> {
        let mut tick = tokio::time::interval(self.ctx.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let transactional = self.ctx.commit_interval.is_some();
        let mut commit_tick = tokio::time::interval(self.ctx.commit_interval.unwrap_or(Duration::from_secs(3600)));
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        commit_tick.reset();
        loop {
            metrics::gauge!("kev_producer_buffer_depth").set(self.in_flight.len() as f64);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(SessionEnd::Stopped),
                Some(ack) = self.in_flight.next(), if !self.in_flight.is_empty() => self.acknowledge(ack)?,
                event = source.recv(), if self.in_flight.len() < self.ctx.max_in_flight => match event {
                    None => return Ok(SessionEnd::SourceFinished),
                    Some(event) => self.handle(event, stop).await?,
                },
                _ = tick.tick(), if self.ctx.clock == ClockKind::Wall => self.heartbeat(stop).await?,
                _ = commit_tick.tick(), if transactional => self.commit().await?,
            }
        }
    }

    /// Waits for every record in flight, then sends a last heartbeat so that downstream knows
    /// how far this producer got.
    async fn drain(&mut self, end: SessionEnd) -> Result<SessionEnd, SessionError> {
        let grace = CancellationToken::new();
        if end == SessionEnd::SourceFinished {
            self.heartbeat(&grace).await?;
        }
        let deadline = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(deadline);
        while !self.in_flight.is_empty() {
            tokio::select! {
                Some(ack) = self.in_flight.next() => self.acknowledge(ack)?,
                _ = &mut deadline => {
                    tracing::warn!(in_flight = self.in_flight.len(), "records still unacknowledged after 30s; the next session re-publishes what did not land");
                    break;
                }
            }
        }
        metrics::gauge!("kev_producer_buffer_depth").set(0.0);
        Ok(end)
    }

    /// The leadership term ran out (the process did not run for a while, and another replica
    /// may lead by now): records still in librdkafka's queue are purged rather than sent, the
    /// open transaction is aborted rather than committed, nothing in flight is waited for, and
    /// the leadership ends (`stop`), so the caller stands by.
    async fn term_over(&mut self, stop: &CancellationToken) -> Result<SessionEnd, SessionError> {
        metrics::counter!("kev_producer_terms_over_total").increment(1);
        tracing::warn!("the leadership term ran out before the Lease was renewed; publishing nothing more");
        stop.cancel();
        self.producer.purge(rdkafka::producer::PurgeConfig::default().queue());
        if self.ctx.commit_interval.is_some() {
            let producer = self.producer.clone();
            let aborted =
                tokio::task::spawn_blocking(move || producer.abort_transaction(TRANSACTION_CALL_TIMEOUT)).await;
            if let Ok(Err(e)) = aborted {
                tracing::warn!(error = %e, "aborting the transaction failed; the next leader fences it");
            }
        }
        self.in_flight = FuturesOrdered::new();
        Ok(SessionEnd::Stopped)
    }

    /// `exactly_once`: commits the open transaction (librdkafka first waits for every record
    /// in it to be acknowledged) and opens the next. The call blocks, so it runs off the async
    /// threads. Nothing to do in `at_least_once` mode.
    async fn commit(&mut self) -> Result<(), SessionError> {
        if self.ctx.commit_interval.is_none() {
            return Ok(());
        }
        let (producer, started) = (self.producer.clone(), Instant::now());
        tokio::task::spawn_blocking(move || kev_common::kafka::commit_transaction(&producer, TRANSACTION_CALL_TIMEOUT))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
            .map_err(SessionError::Transaction)?;
        self.stats.transactions += 1;
        metrics::counter!("kev_producer_transactions_total").increment(1);
        metrics::histogram!("kev_producer_transaction_commit_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn clock_ms(&self) -> i64 {
        match self.ctx.clock {
            ClockKind::Wall => chrono::Utc::now().timestamp_millis(),
            ClockKind::EventTime => self.event_time_high.map(|t| t / 1000).unwrap_or(0),
        }
    }

    async fn handle(&mut self, event: SourceEvent, stop: &CancellationToken) -> Result<(), SessionError> {
        match event {
            SourceEvent::Watching { scope } => {
                if self.refused {
                    tracing::info!(?scope, "the API server allows the watch again");
                    self.refused = false;
                    if !self.registry_failed {
                        self.ctx.health.set_ready(true, "publishing");
                    }
                }
            }
            SourceEvent::ListStart { scope } => {
                self.listing.insert(scope, HashSet::new());
            }
            SourceEvent::Refused(message) => {
                metrics::counter!("kev_producer_kubernetes_refusals_total").increment(1);
                if !self.refused {
                    tracing::error!(message, "not ready until the API server allows the list and watch");
                }
                self.refused = true;
                self.ctx.health.set_ready(false, message);
                return Ok(());
            }
            SourceEvent::ListEnd { scope, resource_version } => {
                if let Some(listed) = self.listing.remove(&scope) {
                    let forgotten = self.state.retain_listed(scope.as_deref(), &listed);
                    tracing::info!(?scope, listed = listed.len(), forgotten, resource_version, "list complete");
                }
                self.positions.insert(scope, resource_version);
            }
            SourceEvent::Position { scope, resource_version } => {
                self.positions.insert(scope, resource_version);
            }
            SourceEvent::Object { object, deleted } => self.object(object, deleted, stop).await?,
        }
        Ok(())
    }

    async fn object(
        &mut self,
        mut object: serde_json::Value,
        deleted: bool,
        stop: &CancellationToken,
    ) -> Result<(), SessionError> {
        self.ctx.redactor.redact(&mut object, &mut |rule| {
            metrics::counter!("kev_producer_redactions_total", "rule" => rule.to_string()).increment(1);
        });
        let name = object.pointer("/metadata/name").and_then(|v| v.as_str()).map(str::to_string);
        let obj = match EventObject::from_json(object) {
            Ok(o) => o,
            Err(e) => {
                self.stats.invalid += 1;
                metrics::counter!("kev_producer_events_invalid_total", "reason" => e.label()).increment(1);
                tracing::warn!(error = %e, name, "skipping an object that is not a usable Event");
                return Ok(());
            }
        };
        self.stats.observed += 1;
        metrics::counter!("kev_producer_events_observed_total", "api" => obj.shape()).increment(1);
        let scope = obj.namespace().map(str::to_string);
        for key in [None, scope] {
            if let Some(listed) = self.listing.get_mut(&key) {
                listed.insert(obj.uid().to_string());
            }
        }
        let normalized = kev_schemas::normalize::normalize(&obj);
        if let Verdict::Drop(rule) = self.ctx.filter.verdict(&normalized) {
            self.stats.filtered += 1;
            metrics::counter!("kev_producer_events_filtered_total", "rule" => rule.to_string()).increment(1);
            tracing::trace!(rule, uid = obj.uid(), "dropped by a filter rule");
            return Ok(());
        }
        let (uid, rv) = (obj.uid().to_string(), obj.resource_version().to_string());
        let namespace = obj.namespace().map(str::to_string);
        let (verb, new_occurrences) = match self.state.decide(&uid, &rv, normalized.count, deleted) {
            Decision::Publish { verb, new_occurrences } => (verb, new_occurrences),
            d => {
                if d == Decision::Duplicate {
                    self.stats.duplicates += 1;
                } else {
                    self.stats.stale += 1;
                }
                let ty = normalized.type_.unwrap_or_default();
                metrics::counter!("kev_producer_events_suppressed_total", "reason" => d.label(), "type" => ty)
                    .increment(1);
                return Ok(());
            }
        };
        self.event_time_high = self.event_time_high.max(Some(normalized.event_time));
        let clock = self.clock_ms();
        let ty = normalized.type_.clone().unwrap_or_default();
        let reason = normalized.reason.clone().unwrap_or_default();
        let event_time = normalized.event_time;
        let count = normalized.count;
        let record = RawRecord::event(&self.ctx.cluster, EventObservation::new(obj, verb, new_occurrences, clock));
        let Some(bytes) = self.encode(&record, stop).await? else {
            return Ok(());
        };
        self.send(bytes, Some((uid.clone(), rv.clone())), stop).await?;
        self.state.published(&uid, namespace.as_deref(), &rv, count, verb);
        self.stats.published += 1;
        metrics::counter!("kev_producer_events_published_total", "verb" => verb_label(verb), "type" => ty).increment(1);
        metrics::gauge!("kev_producer_newest_event_timestamp_seconds").set(event_time as f64 / 1e6);
        tracing::debug!(uid, rv, reason, ?verb, new_occurrences, "published");
        if self.ctx.clock == ClockKind::EventTime
            && self.last_heartbeat_ms.is_none_or(|last| clock - last >= self.ctx.heartbeat_interval.as_millis() as i64)
        {
            self.heartbeat(stop).await?;
        }
        Ok(())
    }

    /// Where a next session may resume watching: a resourceVersion every loop has read past,
    /// each object before it already handled (and published, if new, in a record before the
    /// heartbeat that names it). resourceVersions are etcd revisions, compared as numbers; with
    /// several loops and a server whose versions are not numbers, there is none.
    fn resumable_position(&self) -> Option<String> {
        if self.positions.is_empty() || self.positions.len() < self.ctx.scopes {
            return None;
        }
        let numbers: Option<Vec<u64>> = self.positions.values().map(|v| v.parse().ok()).collect();
        match numbers {
            Some(n) => n.into_iter().min().map(|v| v.to_string()),
            None if self.positions.len() == 1 => self.positions.values().next().cloned(),
            None => None,
        }
    }

    async fn heartbeat(&mut self, stop: &CancellationToken) -> Result<(), SessionError> {
        let now = self.clock_ms();
        let hb = Heartbeat {
            producer_time: now,
            event_time_high: self.event_time_high,
            resource_version: self.resumable_position(),
            source: self.ctx.source_label.clone(),
            producer_id: self.ctx.producer_id.clone(),
            recovery_offset: Some(self.state.recovery_offset()),
        };
        let record = RawRecord::heartbeat(&self.ctx.cluster, hb);
        if let Some(bytes) = self.encode(&record, stop).await? {
            self.send(bytes, None, stop).await?;
            self.last_heartbeat_ms = Some(now);
            self.stats.heartbeats += 1;
            metrics::counter!("kev_producer_heartbeats_total").increment(1);
        }
        if let Some(t) = self.event_time_high {
            if self.ctx.clock == ClockKind::Wall {
                let age = (chrono::Utc::now().timestamp_micros() - t) as f64 / 1e6;
                metrics::gauge!("kev_producer_newest_event_age_seconds").set(age.max(0.0));
            }
        }
        metrics::gauge!("kev_producer_dedup_entries").set(self.state.len() as f64);
        metrics::gauge!("kev_producer_dedup_bytes").set(self.state.approx_bytes() as f64);
        Ok(())
    }

    /// Encodes a record, retrying while the registry is unavailable or refuses (a registry
    /// that refuses kev's own schema is a deployment problem that someone will fix; dropping
    /// events meanwhile would lose them). Returns `None` only for a record that cannot match
    /// the schema at all, which is logged and counted, or when asked to stop.
    async fn encode(&mut self, record: &RawRecord, stop: &CancellationToken) -> Result<Option<Vec<u8>>, SessionError> {
        let mut backoff = Duration::from_millis(100);
        let mut committed = false;
        loop {
            match self.ctx.codec.encode_raw(&self.ctx.topic, record).await {
                Ok(bytes) => {
                    // Ready again once the registry answers, unless the API server still
                    // refuses the watch: each cause of unreadiness is cleared by its own cure.
                    if self.registry_failed {
                        self.registry_failed = false;
                        if !self.refused {
                            self.ctx.health.set_ready(true, "publishing");
                        }
                    }
                    return Ok(Some(bytes));
                }
                Err(e @ CodecError::Schema(_)) | Err(e @ CodecError::WireFormat(_)) => {
                    metrics::counter!("kev_producer_publish_errors_total", "kind" => e.label()).increment(1);
                    tracing::error!(error = %e, "cannot encode a record; it is skipped");
                    return Ok(None);
                }
                Err(e) => {
                    metrics::counter!("kev_producer_publish_errors_total", "kind" => e.label()).increment(1);
                    tracing::warn!(error = %e, retry_in = ?backoff, "schema registry call failed; retrying");
                    self.registry_failed = true;
                    self.ctx.health.set_ready(false, format!("schema registry: {e}"));
                    if !committed {
                        // The registry may stay away longer than the transaction timeout.
                        self.commit().await?;
                        committed = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return Ok(None),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Hands a record to librdkafka, waiting while its queue is full.
    async fn send(
        &mut self,
        bytes: Vec<u8>,
        id: Option<(String, String)>,
        stop: &CancellationToken,
    ) -> Result<(), SessionError> {
        if self.ctx.term.as_ref().is_some_and(|t| !t.current()) {
            return Err(SessionError::TermOver);
        }
        loop {
            let record = FutureRecord::to(&self.ctx.topic).key(self.ctx.cluster.as_bytes()).payload(&bytes);
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    let sent = Instant::now();
                    self.in_flight.push_back(Box::pin(async move { (id, sent, delivery.await) }));
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Acknowledgements free the queue; take them while waiting.
                    tokio::select! {
                        Some(ack) = self.in_flight.next(), if !self.in_flight.is_empty() => self.acknowledge(ack)?,
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                        _ = stop.cancelled() => return Err(SessionError::Source("stopped while Kafka's queue was full".into())),
                    }
                }
                Err((e, _)) => return Err(SessionError::Delivery(e)),
            }
        }
    }

    fn acknowledge(&mut self, (id, sent, result): Ack) -> Result<(), SessionError> {
        match result {
            Ok(Ok(delivery)) => {
                metrics::histogram!("kev_producer_publish_latency_seconds").record(sent.elapsed().as_secs_f64());
                if let Some((uid, rv)) = id {
                    self.state.acknowledged(&uid, &rv, delivery.offset);
                }
                Ok(())
            }
            Ok(Err((e, _))) => {
                metrics::counter!("kev_producer_publish_errors_total", "kind" => "delivery").increment(1);
                Err(SessionError::Delivery(e))
            }
            Err(_) => Err(SessionError::Delivery(KafkaError::Canceled)),
        }
    }
}

fn verb_label(v: WatchVerb) -> &'static str {
    match v {
        WatchVerb::Added => "added",
        WatchVerb::Modified => "modified",
        WatchVerb::Deleted => "deleted",
        WatchVerb::Unknown => "unknown",
    }
}
