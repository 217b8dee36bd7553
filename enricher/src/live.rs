//! The live enricher: a consumer group on the raw topic.
//!
//! The delivery guarantee, without transactions:
//! - Every output is a function of the raw log: one engine per raw partition, fed that
//!   partition's records in offset order, and records whose key, value and timestamp come from
//!   event time only ([`crate::records`]).
//! - Commit barrier: every `commit_interval_ms`, kev waits until Kafka has acknowledged every
//!   output sent so far, then commits each partition's next offset. So a committed offset means
//!   everything derived from the records before it is in the output topics.
//! - Checkpoints ([`crate::checkpoint`]) of each engine's state at a committed offset.
//! - Taking a partition (start, restart, rebalance): restore the newest checkpoint at or before
//!   the committed offset, re-read the raw log from there to the committed offset emitting
//!   nothing (those outputs were acknowledged), then go on. Outputs after the committed offset
//!   that a crashed instance had already sent are sent again, byte-identical.
//! - Giving a partition up (revocation, shutdown): wait for acknowledgements, commit, write a
//!   checkpoint, so that the next owner starts exactly where this one stopped, with no
//!   duplicates.
//!
//! With `processing_guarantee = exactly_once` the barrier is a Kafka transaction instead: the
//! outputs sent since the last barrier, the checkpoints due and the input offsets (sent with the
//! consumer's group metadata, so that a member fenced by a rebalance cannot commit) are
//! committed together, and a crash aborts what was not. A `read_committed` reader then sees each
//! output once; the take-over is the same, reading only committed checkpoints. Whatever breaks
//! the open transaction (an output not sent, a commit or hand-over that fails) aborts it and
//! starts the run over from the committed offsets, since every owned partition's outputs were
//! in it. No transaction stays open across a take-over's rebuild or a wait for the registry, so
//! that neither outlives `transaction.timeout.ms`; one that does anyway is aborted by the
//! coordinator, which librdkafka reports as fencing, and a new run gets past it. Fenced
//! [`Fencings::MAX`] times in [`Fencings::WINDOW`], an instance stops for good: another live
//! instance has its transactional id.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kev_common::kafka::TRANSACTION_CALL_TIMEOUT;
use kev_common::kafka::{partition_count, Fencings, LogEnds, RangeReader, Refused};
use kev_common::shutdown::sleep_or_stop;
use kev_common::telemetry::Health;
use kev_schemas::Codec;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::alerts::{self, AlertSender};
use crate::checkpoint::{self, Checkpoint};
use crate::config::EnricherConfig;
use crate::decode::{decode, Decoded, Source};
use crate::emit::{self, EmitError, Emitter, OutputProducer};
use crate::partition::{EngineSpec, PartitionEngine};
use crate::records::Record;
use crate::routes::Router;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("outputs not delivered: {0}")]
    Delivery(String),
    #[error(transparent)]
    Emit(#[from] EmitError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    Routes(#[from] crate::routes::RouteError),
    /// An ACL is missing: retrying cannot help.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// A transaction could not be committed; the run starts over from the last committed one.
    #[error("Kafka transaction: {0}")]
    Transaction(KafkaError),
    /// The open transaction was aborted (an output not sent, a hand-over that could not
    /// commit): every engine is ahead of what is committed, so the run starts over.
    #[error("the open transaction was aborted: {0}")]
    Aborted(String),
    /// The transactional producer failed for good: another producer took this instance's
    /// `transactional.id`, or the coordinator aborted a transaction that outlived
    /// `transaction.timeout.ms` (librdkafka reports both as fenced). A new run, with a new
    /// producer, gets past the second; [`run_until_stopped`] stops on the first.
    #[error(
        "the transactional producer was fenced ({reason}); if another instance uses transactional.id {id}, \
         give each instance its own (transactional_id, or a distinct HOSTNAME)"
    )]
    Fenced { id: String, reason: String },
}

/// Why the enricher stops for good: no retry can get past these.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("{0}")]
    Fenced(String),
}

impl RunError {
    /// The missing ACL behind this error, if that is what it is, with the resource named
    /// from `cfg` (librdkafka's consumer errors do not say which topic or group).
    fn refusal(&self, cfg: &EnricherConfig) -> Option<Refused> {
        let kafka = match self {
            RunError::Refused(r) => return Some(r.clone()),
            RunError::Kafka(k) => (k, cfg.topics.raw.as_str()),
            RunError::Checkpoint(checkpoint::CheckpointError::Kafka(k)) => (k, cfg.topics.checkpoints.as_str()),
            _ => return None,
        };
        match kafka.0.rdkafka_error_code() {
            Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {
                Refused::of(kafka.0, "join and commit in", &format!("group {}", cfg.group_id))
            }
            _ => Refused::of(kafka.0, "read", &format!("topic {}", kafka.1)),
        }
    }
}

/// What a run did, for logs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunStats {
    pub records_in: u64,
    pub records_out: u64,
    pub dead_letters: u64,
    pub recovered_records: u64,
    pub commits: u64,
}

/// What the consumer's rebalance callbacks and the main loop share. Callbacks run inside
/// `recv()` on the main loop's task, so the lock is never contended.
struct Shared {
    parts: Mutex<BTreeMap<i32, PartitionEngine>>,
    producer: Arc<OutputProducer>,
    group_id: String,
    raw_topic: String,
    checkpoint_topic: String,
    checkpoint_partitions: i32,
    spec_fingerprint: String,
    /// `exactly_once`: barriers and hand-overs commit a transaction.
    exactly_once: bool,
    /// `exactly_once`: the open transaction was aborted and the engines dropped, inside a
    /// rebalance callback that cannot return an error; the main loop ends the run on it.
    aborted: Mutex<Option<String>>,
}

struct Ctx {
    shared: Arc<Shared>,
}

impl ClientContext for Ctx {
    /// librdkafka's statistics carry each assigned partition's consumer lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    metrics::gauge!("kev_enricher_consumer_lag", "topic" => topic.clone(), "partition" => p.to_string())
                        .set(part.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(?revoked, "partitions revoked: handing over");
            // Inside poll: every record returned so far is applied.
            self.shared.skip_markers(consumer);
            self.shared.hand_over(consumer, &revoked);
            // The new owner reports these partitions' lag from now on; a last value left here
            // would keep a lag alert firing on this member.
            for e in tpl.elements() {
                let (topic, partition) = (e.topic().to_string(), e.partition().to_string());
                metrics::gauge!("kev_enricher_consumer_lag", "topic" => topic, "partition" => partition).set(0.0);
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            metrics::counter!("kev_enricher_rebalances_total").increment(1);
            tracing::info!(?assigned, "partitions assigned");
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, PartitionEngine>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finishes `partitions`: waits for every output to be acknowledged, commits, checkpoints
    /// and drops their engines. If Kafka does not acknowledge in time nothing is committed, and
    /// the next owner re-emits from the last commit.
    fn hand_over<C: ConsumerContext, K: Consumer<C>>(&self, consumer: &K, partitions: &[i32]) {
        if self.exactly_once {
            // The open transaction holds outputs of every owned partition: commit it with all
            // their offsets, and checkpoints of the partitions leaving.
            let mut parts = self.lock();
            if !partitions.iter().any(|p| parts.contains_key(p)) {
                return;
            }
            match self.commit_transaction(consumer, &parts, |p| partitions.contains(&p)) {
                Ok(()) => partitions.iter().for_each(|p| drop(parts.remove(p))),
                // Outputs of partitions kept are in the failed transaction too: none can go on.
                Err(e) => {
                    self.abort(&mut parts, &format!("the transaction at hand-over of {partitions:?} failed: {e}"))
                }
            }
            return;
        }
        let mut parts = self.lock();
        let owned: Vec<PartitionEngine> = partitions.iter().filter_map(|p| parts.remove(p)).collect();
        drop(parts);
        if owned.is_empty() {
            return;
        }
        let flushed = self.producer.flush(Duration::from_secs(30)).is_ok();
        if !flushed || self.producer.context().failure().is_some() {
            tracing::warn!(?partitions, "outputs not acknowledged; handing over without a commit");
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for pe in &owned {
            let _ = tpl.add_partition_offset(&self.raw_topic, pe.partition, Offset::Offset(pe.next_offset));
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            tracing::warn!(error = %e, "commit at hand-over failed; the next owner re-emits from the last commit");
            return;
        }
        for pe in &owned {
            if let Err(e) = self.write_checkpoint(pe) {
                tracing::warn!(partition = pe.partition, error = %e, "checkpoint at hand-over failed");
            }
        }
        let _ = self.producer.flush(Duration::from_secs(30));
    }

    /// `exactly_once`: commits the open transaction with checkpoints of the partitions
    /// `checkpoint` takes and the next offset of every partition in `parts`, then opens the next.
    fn commit_transaction<C: ConsumerContext, K: Consumer<C>>(
        &self,
        consumer: &K,
        parts: &BTreeMap<i32, PartitionEngine>,
        checkpoint: impl Fn(i32) -> bool,
    ) -> Result<(), KafkaError> {
        for pe in parts.values().filter(|pe| checkpoint(pe.partition)) {
            self.write_checkpoint(pe)?;
        }
        let mut tpl = TopicPartitionList::new();
        for pe in parts.values() {
            tpl.add_partition_offset(&self.raw_topic, pe.partition, Offset::Offset(pe.next_offset))?;
        }
        if tpl.count() > 0 {
            let metadata =
                consumer.group_metadata().ok_or(KafkaError::ConsumerCommit(RDKafkaErrorCode::UnknownMemberId))?;
            self.producer.send_offsets_to_transaction(&tpl, &metadata, TRANSACTION_CALL_TIMEOUT)?;
        }
        kev_common::kafka::commit_transaction(&*self.producer, TRANSACTION_CALL_TIMEOUT)
    }

    /// Moves each engine's next offset past what the consumer stepped over after its last
    /// record: the transaction markers (and aborted records) of a raw topic written by a
    /// transactional producer, which a read_committed consumer never returns. Without this the
    /// committed offsets would stop one short of the log's end, a lag that never drains. Call
    /// only when every record the consumer has returned is applied: its position counts them.
    fn skip_markers<C: ConsumerContext, K: Consumer<C>>(&self, consumer: &K) {
        let Ok(positions) = consumer.position() else { return };
        let mut parts = self.lock();
        for e in positions.elements_for_topic(&self.raw_topic) {
            if let (Offset::Offset(o), Some(pe)) = (e.offset(), parts.get_mut(&e.partition())) {
                pe.next_offset = pe.next_offset.max(o);
            }
        }
    }

    /// `exactly_once`: aborts the open transaction and drops every engine, all of which have
    /// taken in records whose outputs are now aborted. The run must then start over from the
    /// committed offsets (see [`Shared::aborted`]).
    fn abort(&self, parts: &mut BTreeMap<i32, PartitionEngine>, why: &str) {
        tracing::warn!(why, "aborting the open transaction; the run starts over from the last committed one");
        metrics::counter!("kev_enricher_transactions_aborted_total").increment(1);
        if let Err(e) = self.producer.abort_transaction(TRANSACTION_CALL_TIMEOUT) {
            // A fenced or failed producer cannot abort; the coordinator does, when it times out.
            tracing::warn!(error = %e, "the abort failed; the transaction coordinator aborts it on its timeout");
        }
        parts.clear();
        self.aborted.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| why.to_string());
    }

    /// The abort that ended this run, if one did.
    fn aborted(&self) -> Option<RunError> {
        self.aborted.lock().unwrap_or_else(|e| e.into_inner()).clone().map(RunError::Aborted)
    }

    /// Sends a checkpoint of `pe`. Call only once `pe.next_offset` is committed or about to be:
    /// a restore takes only checkpoints at or before the committed offset.
    fn write_checkpoint(&self, pe: &PartitionEngine) -> Result<(), KafkaError> {
        let ckpt = Checkpoint {
            version: 1,
            group_id: self.group_id.clone(),
            topic: self.raw_topic.clone(),
            partition: pe.partition,
            next_offset: pe.next_offset,
            newest_time: pe.engine().newest_time(),
            engine_fingerprint: self.spec_fingerprint.clone(),
            state: pe.engine().state().clone(),
        };
        let chunks = ckpt.chunks().map_err(|e| {
            tracing::error!(error = %e, "engine state does not serialise");
            KafkaError::MessageProduction(RDKafkaErrorCode::InvalidMessage)
        })?;
        let target = checkpoint::partition_of(pe.partition, self.checkpoint_partitions);
        let mut bytes = 0;
        for c in chunks {
            bytes += c.value.len();
            let mut rec = BaseRecord::to(&self.checkpoint_topic)
                .partition(target)
                .key(&c.key)
                .payload(&c.value)
                .headers(c.headers);
            if let Some(ts) = c.timestamp_ms {
                rec = rec.timestamp(ts);
            }
            loop {
                match self.producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        metrics::counter!("kev_enricher_checkpoints_total").increment(1);
        metrics::gauge!("kev_enricher_checkpoint_bytes", "partition" => pe.partition.to_string()).set(bytes as f64);
        Ok(())
    }
}

/// Runs the enricher until `stop`. Returns when stopped, or on a fatal error (a delivery that
/// Kafka refused for good, an output the registry refuses).
pub async fn run(
    cfg: &EnricherConfig,
    spec: &EngineSpec,
    codec: Arc<Codec>,
    health: Arc<Health>,
    alerts: Option<AlertSender>,
    stop: CancellationToken,
) -> Result<RunStats, RunError> {
    let transactional_id = cfg.exactly_once().then(|| cfg.transactional_id());
    let producer = Arc::new(emit::producer(&cfg.kafka, transactional_id.as_deref())?);
    // What a failure of the transactional producer means (fenced, refused, or start over).
    let classify = |e: RunError| match &transactional_id {
        Some(id) => transaction_failure(&producer, id, cfg, e),
        None => e,
    };
    if let Some(id) = &transactional_id {
        // Fences a predecessor with the same id and aborts what it left open.
        producer.init_transactions(TRANSACTION_CALL_TIMEOUT).map_err(|e| classify(RunError::Transaction(e)))?;
        producer.begin_transaction().map_err(|e| classify(RunError::Transaction(e)))?;
        tracing::info!(transactional_id = %id, "exactly_once: transactions initialised");
    }
    let checkpoint_partitions = loop {
        match partition_count(&cfg.kafka, &cfg.topics.checkpoints, Duration::from_secs(10)) {
            Ok(n) => break n,
            Err(e) => {
                if let Some(r) = Refused::of(&e, "describe", &format!("topic {}", cfg.topics.checkpoints)) {
                    return Err(r.into());
                }
                health.set_ready(false, format!("checkpoint topic {}: {e}", cfg.topics.checkpoints));
                tracing::warn!(error = %e, topic = %cfg.topics.checkpoints, "checkpoint topic not available yet");
                if sleep_or_stop(Duration::from_secs(2), &stop).await {
                    return Ok(RunStats::default());
                }
            }
        }
    };
    let shared = Arc::new(Shared {
        parts: Mutex::new(BTreeMap::new()),
        producer: producer.clone(),
        group_id: cfg.group_id.clone(),
        raw_topic: cfg.topics.raw.clone(),
        checkpoint_topic: cfg.topics.checkpoints.clone(),
        checkpoint_partitions,
        spec_fingerprint: spec.fingerprint.clone(),
        exactly_once: cfg.exactly_once(),
        aborted: Mutex::new(None),
    });
    let consumer: StreamConsumer<Ctx> = cfg
        .kafka
        .consumer_config(&[
            ("group.id", &cfg.group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            // A member learns of a rebalance at its next heartbeat, and a cooperative one takes
            // two rounds: with librdkafka's 3 s, the partitions a joining member takes stood
            // still about 4 s (side_by_side's join rows). A heartbeat a second per member is
            // nothing to the group coordinator.
            ("heartbeat.interval.ms", "1000"),
            ("enable.partition.eof", "false"),
            ("statistics.interval.ms", "5000"),
            // librdkafka's default too: outputs of aborted transactions are never read.
            ("isolation.level", "read_committed"),
        ])
        .create_with_context(Ctx { shared: shared.clone() })?;
    consumer.subscribe(&[&cfg.topics.raw])?;
    // It reads ranges that exist (checkpoint tails, the raw log up to the committed offset),
    // never waits for new records: with librdkafka's 500 ms `fetch.wait.max.ms`, the fetch
    // left in flight at the end of one range held up the next take-over's first fetch, and a
    // rebalance's take-overs took 0.4-0.5 s each with nothing to re-read (side_by_side's joins).
    let recovery: BaseConsumer = cfg
        .kafka
        .consumer_config(&[
            ("group.id", &format!("{}-recovery", cfg.group_id)),
            ("enable.auto.commit", "false"),
            ("fetch.wait.max.ms", "10"),
        ])
        .create()?;
    // One probe for every take-over of this run: a new client per take-over cost about 100 ms
    // of connecting before the first fetch, while the partition's records waited.
    let log_ends = LogEnds::new(&cfg.kafka, &cfg.log_end_group())?;
    let emitter = Emitter {
        producer: producer.clone(),
        codec: codec.clone(),
        topics: cfg.topics.clone(),
        health: health.clone(),
        router: Router::for_topics(&cfg.topics)?,
        alerts,
        meters: Default::default(),
    };
    let mut stats = RunStats::default();
    let mut out = Vec::new();
    // Looked up once: a metric named with labels per record costs a registry lookup each time.
    let records_in = metrics::counter!("kev_enricher_records_in_total", "topic" => cfg.topics.raw.clone());
    let mut tick = tokio::time::interval(cfg.commit_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = Instant::now();
    health.set_ready(true, "consuming");

    let result: Result<(), RunError> = async {
        loop {
            let msg = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    // Between records: every one the consumer returned is applied.
                    shared.skip_markers(&consumer);
                    let checkpoint_due = last_checkpoint.elapsed() >= cfg.checkpoint_interval();
                    let t = Instant::now();
                    let r = barrier(&consumer, &shared, &emitter, &health, checkpoint_due, &mut stats).map_err(classify);
                    tracing::debug!(elapsed = ?t.elapsed(), records_in = stats.records_in, "barrier");
                    if r? && checkpoint_due {
                        last_checkpoint = Instant::now();
                    }
                    continue;
                }
                m = consumer.recv() => m,
            };
            // A hand-over inside recv() aborted the transaction: nothing owned can go on.
            if let Some(e) = shared.aborted() {
                return Err(classify(e));
            }
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    if let Some(r) = RunError::Kafka(e.clone()).refusal(cfg) {
                        return Err(r.into());
                    }
                    tracing::warn!(error = %e, "consumer error");
                    health.set_ready(false, format!("Kafka consumer: {e}"));
                    continue;
                }
            };
            let (p, offset) = (msg.partition(), msg.offset());
            let has_engine = shared.lock().contains_key(&p);
            if !has_engine {
                if shared.exactly_once {
                    // The rebuild can outlast transaction.timeout.ms: commit what the other
                    // partitions did first, so that no transaction is open meanwhile.
                    barrier(&consumer, &shared, &emitter, &health, false, &mut stats).map_err(classify)?;
                }
                let Some(pe) = take_over(
                    cfg,
                    spec,
                    &codec,
                    &recovery,
                    &log_ends,
                    checkpoint_partitions,
                    &health,
                    p,
                    offset,
                    &stop,
                    &mut stats,
                )
                .await?
                else {
                    break;
                };
                // Alerts of incidents opened before this member took the partition (a restart,
                // a rebalance) keep firing; Alertmanager would time them out otherwise.
                if let Some(a) = &emitter.alerts {
                    pe.engine().open_incidents().iter().for_each(|i| a.send(i));
                }
                shared.lock().insert(p, pe);
            }
            let expected = shared.lock().get(&p).map(|pe| pe.next_offset).unwrap_or(offset);
            if offset < expected {
                // Seen already (a fetch re-delivered after a seek): applying it twice would
                // change the state.
                continue;
            }
            stats.records_in += 1;
            records_in.increment(1);
            let decoded = match decode(&codec, Source::of(&msg), cfg.max_record_bytes).await {
                Ok(d) => d,
                Err(_) => {
                    if shared.exactly_once {
                        // The registry may stay away longer than transaction.timeout.ms: commit
                        // the records done so far before waiting.
                        barrier(&consumer, &shared, &emitter, &health, false, &mut stats).map_err(classify)?;
                    }
                    let src = Source::of(&msg);
                    let Some(d) = decode_retrying(&codec, src, cfg.max_record_bytes, &health, &stop).await else {
                        break;
                    };
                    d
                }
            };
            if let Some(pe) = shared.lock().get_mut(&p) {
                pe.apply(decoded, offset, &mut out);
            }
            for r in out.drain(..) {
                if matches!(r, Record::Dead(_)) {
                    stats.dead_letters += 1;
                }
                let sent = emitter.emit(&r, p, offset, &stop).await;
                if let Err(e) = &sent {
                    // The engine has taken this record in but not all its outputs are sent:
                    // committing or checkpointing the partition now would lose them. Drop it
                    // unfinished; its next owner re-emits from the last commit. In
                    // exactly_once mode the open transaction holds every partition's outputs
                    // since the last commit: abort them all.
                    let mut parts = shared.lock();
                    if shared.exactly_once {
                        shared.abort(&mut parts, &format!("an output of partition {p} offset {offset} was not sent: {e}"));
                    } else {
                        parts.remove(&p);
                    }
                }
                match sent {
                    Ok(()) => stats.records_out += 1,
                    Err(EmitError::Stopped) => return Ok(()),
                    Err(e) => return Err(classify(e.into())),
                }
            }
        }
        Ok(())
    }
    .await;

    // Shutdown: hand every partition over as a rebalance would, then leave the group.
    let all: Vec<i32> = shared.lock().keys().copied().collect();
    shared.hand_over(&consumer, &all);
    consumer.unsubscribe();
    result.map(|()| stats)
}

/// Runs the enricher until `stop`, starting over after a pause whenever a run fails (a broker
/// that stays away mid-recovery, a delivery Kafka refused): each new run takes its partitions
/// over from the last commit, so nothing is lost, and readiness says why meanwhile. Returns the
/// totals of all runs, or what no retry can get past (a missing ACL, a fenced transactional id).
pub async fn run_until_stopped(
    cfg: &EnricherConfig,
    spec: &EngineSpec,
    codec: Arc<Codec>,
    health: Arc<Health>,
    stop: CancellationToken,
) -> Result<RunStats, Fatal> {
    let mut total = RunStats::default();
    let mut backoff = Duration::from_secs(1);
    let mut fencings = Fencings::default();
    // One alerter for all runs: it keeps re-sending the alerts of open incidents while a
    // failed run starts over.
    let alerts = match alerts::start(&cfg.alerting, stop.clone()) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the Alertmanager client; no alerts will be sent");
            None
        }
    };
    loop {
        let result = run(cfg, spec, codec.clone(), health.clone(), alerts.clone(), stop.clone()).await;
        match result {
            Ok(s) => {
                total.add(s);
                return Ok(total);
            }
            Err(e) => {
                if let Some(refused) = e.refusal(cfg) {
                    health.set_ready(false, refused.to_string());
                    return Err(refused.into());
                }
                if let RunError::Fenced { .. } = &e {
                    fencings.record();
                    if fencings.exhausted() {
                        let why = format!("fenced {}: {e}", Fencings::limit());
                        health.set_ready(false, why.clone());
                        return Err(Fatal::Fenced(why));
                    }
                }
                metrics::counter!("kev_enricher_run_restarts_total").increment(1);
                tracing::error!(error = %e, retry_in = ?backoff, "enricher run failed; starting over from the last commit");
                health.set_ready(false, format!("restarting after: {e}"));
                if sleep_or_stop(backoff, &stop).await {
                    return Ok(total);
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

impl RunStats {
    fn add(&mut self, s: RunStats) {
        self.records_in += s.records_in;
        self.records_out += s.records_out;
        self.dead_letters += s.dead_letters;
        self.recovered_records += s.recovered_records;
        self.commits += s.commits;
    }
}

/// Builds the engine of a partition whose first record to process is at `committed`.
#[allow(clippy::too_many_arguments)]
async fn take_over(
    cfg: &EnricherConfig,
    spec: &EngineSpec,
    codec: &Codec,
    recovery: &BaseConsumer,
    log_ends: &LogEnds,
    checkpoint_partitions: i32,
    health: &Health,
    partition: i32,
    committed: i64,
    stop: &CancellationToken,
    stats: &mut RunStats,
) -> Result<Option<PartitionEngine>, RunError> {
    let started = Instant::now();
    let (low, _) = recovery.fetch_watermarks(&cfg.topics.raw, partition, Duration::from_secs(10))?;
    let key = checkpoint::key(&cfg.group_id, &cfg.topics.raw, partition);
    let found = checkpoint::find(
        recovery,
        log_ends,
        &cfg.topics.checkpoints,
        checkpoint::partition_of(partition, checkpoint_partitions),
        &key,
        |m| m.next_offset <= committed && m.next_offset >= low,
    )?;
    let (from, state) = match found {
        Some(c) => {
            if c.engine_fingerprint != spec.fingerprint {
                tracing::warn!(
                    partition,
                    "the checkpoint was written under another engine configuration; outputs from here follow the current one"
                );
            }
            (c.next_offset, c.state)
        }
        None => (low, Default::default()),
    };
    let mut pe = PartitionEngine::new(partition, spec.engine(state), from);
    health.set_ready(false, format!("rebuilding partition {partition} from offset {from} to {committed}"));
    let mut reader = RangeReader::new(recovery, &cfg.topics.raw, partition, from, committed)?;
    let mut discard = Vec::new();
    let mut read = 0u64;
    while let Some(msg) = reader.next_message()? {
        let Some(decoded) = decode_retrying(codec, Source::of(&msg), cfg.max_record_bytes, health, stop).await else {
            return Ok(None);
        };
        pe.apply(decoded, msg.offset(), &mut discard);
        discard.clear();
        read += 1;
    }
    drop(reader);
    pe.next_offset = pe.next_offset.max(committed);
    stats.recovered_records += read;
    metrics::counter!("kev_enricher_recovery_records_total").increment(read);
    metrics::histogram!("kev_enricher_recovery_seconds").record(started.elapsed().as_secs_f64());
    tracing::info!(partition, from, committed, read, elapsed = ?started.elapsed(), "partition taken over");
    health.set_ready(true, "consuming");
    Ok(Some(pe))
}

/// Decodes, waiting while the registry is unreachable. `None` when stopped meanwhile.
pub(crate) async fn decode_retrying(
    codec: &Codec,
    src: Source<'_>,
    max_bytes: usize,
    health: &Health,
    stop: &CancellationToken,
) -> Option<Decoded> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match decode(codec, src, max_bytes).await {
            Ok(d) => return Some(d),
            Err(e) => {
                health.set_ready(false, format!("schema registry: {e}"));
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot decode a raw record yet");
                if sleep_or_stop(backoff, stop).await {
                    return None;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// The commit barrier: waits for acknowledgements, commits, and checkpoints when due. Returns
/// whether it committed.
fn barrier(
    consumer: &StreamConsumer<Ctx>,
    shared: &Shared,
    emitter: &Emitter,
    health: &Health,
    checkpoint_due: bool,
    stats: &mut RunStats,
) -> Result<bool, RunError> {
    if shared.exactly_once {
        let mut parts = shared.lock();
        if parts.is_empty() {
            return Ok(false);
        }
        if let Err(e) = shared.commit_transaction(consumer, &parts, |_| checkpoint_due) {
            let e = emitter.refused().map_or(RunError::Transaction(e), RunError::Refused);
            shared.abort(&mut parts, &format!("the commit failed: {e}"));
            return Err(e);
        }
        stats.commits += 1;
        health.set_ready(true, "consuming");
        report_state(&parts);
        return Ok(true);
    }
    match emitter.flush(Duration::from_secs(5)) {
        Err(e) => return Err(emitter.refused().map_or(RunError::Delivery(e), RunError::Refused)),
        Ok(false) => {
            health.set_ready(false, "waiting for Kafka to acknowledge outputs");
            metrics::counter!("kev_enricher_commit_delays_total").increment(1);
            return Ok(false);
        }
        Ok(true) => {}
    }
    let parts = shared.lock();
    if parts.is_empty() {
        return Ok(false);
    }
    let mut tpl = TopicPartitionList::new();
    for pe in parts.values() {
        tpl.add_partition_offset(&shared.raw_topic, pe.partition, Offset::Offset(pe.next_offset))?;
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        tracing::warn!(error = %e, "commit failed; retrying at the next barrier");
        return Ok(false);
    }
    stats.commits += 1;
    health.set_ready(true, "consuming");
    report_state(&parts);
    if checkpoint_due {
        for pe in parts.values() {
            if let Err(e) = shared.write_checkpoint(pe) {
                tracing::warn!(partition = pe.partition, error = %e, "checkpoint failed; the previous one stays valid");
            }
        }
    }
    Ok(true)
}

fn report_state(parts: &BTreeMap<i32, PartitionEngine>) {
    let now_us = chrono::Utc::now().timestamp_micros();
    let (mut open, mut incidents, mut bytes) = (0, 0, 0);
    for pe in parts.values() {
        let s = pe.engine().state_size();
        open += s.open_groups;
        incidents += s.correlation_entries;
        bytes += s.approx_bytes;
        metrics::gauge!("kev_enricher_next_offset", "partition" => pe.partition.to_string()).set(pe.next_offset as f64);
        for (cluster, w) in pe.engine().watermarks() {
            metrics::gauge!("kev_enricher_watermark_lag_seconds", "cluster" => cluster.to_string())
                .set((now_us - w) as f64 / 1e6);
        }
    }
    metrics::gauge!("kev_enricher_open_windows").set(open as f64);
    metrics::gauge!("kev_enricher_correlation_entries").set(incidents as f64);
    metrics::gauge!("kev_enricher_state_bytes").set(bytes as f64);
}

/// What a failure in `exactly_once` mode means: a missing ACL (named by what the broker
/// refused), a producer that failed for good (fenced, or a transaction the coordinator timed
/// out), or else a reason to start the run over.
fn transaction_failure(producer: &OutputProducer, id: &str, cfg: &EnricherConfig, e: RunError) -> RunError {
    let refusal = |code| {
        use RDKafkaErrorCode::*;
        let (operation, resource) = match code {
            GroupAuthorizationFailed => ("commit offsets (in a transaction) to", format!("group {}", cfg.group_id)),
            TopicAuthorizationFailed => {
                ("write (in a transaction) to", format!("one of the topics {}", cfg.topics.written().join(", ")))
            }
            ClusterAuthorizationFailed => ("use transactions on", "the cluster".to_string()),
            _ => ("use", format!("transactional id {id}")),
        };
        Refused::code(code, operation, &resource)
    };
    if let RunError::Transaction(k) = &e {
        if let Some(r) = k.rdkafka_error_code().and_then(refusal) {
            return RunError::Refused(r);
        }
    }
    if matches!(e, RunError::Refused(_) | RunError::Fenced { .. }) {
        return e;
    }
    match producer.client().fatal_error() {
        Some((code, reason)) => match refusal(code) {
            Some(r) => RunError::Refused(r),
            None => {
                tracing::error!(transactional_id = id, error = %reason, "the transactional producer failed for good");
                RunError::Fenced { id: id.to_string(), reason }
            }
        },
        None => e,
    }
}
