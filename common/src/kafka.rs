//! Kafka client settings and the helpers both binaries use around librdkafka.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;

/// What a reader of a binary's output topics can count on (`processing_guarantee`).
/// `at_least_once` needs nothing of the broker beyond idempotent produce; `exactly_once` uses
/// Kafka transactions, so that a `read_committed` reader sees each record once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingGuarantee {
    #[default]
    AtLeastOnce,
    ExactlyOnce,
}

/// How to reach Kafka. `properties` passes any librdkafka property through unchanged (TLS,
/// SASL, tuning); kev's own settings are applied first, so a property given here wins.
#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// `bootstrap.servers`. Default: `localhost:9092`.
    #[serde(default = "default_bootstrap")]
    pub bootstrap_servers: String,
    /// Extra librdkafka properties, such as `security.protocol` or `sasl.mechanism`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// A directory of files, each named after a librdkafka property and holding its value (a
    /// Kubernetes Secret mounted as a volume, with keys such as `sasl.password`), read once at
    /// start by [`KafkaSettings::load_secret_properties`]. Secrets so stay out of the
    /// environment, the ConfigMap and the logs. Default none.
    #[serde(default)]
    pub secret_properties_dir: Option<PathBuf>,
}

fn default_bootstrap() -> String {
    "localhost:9092".into()
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self { bootstrap_servers: default_bootstrap(), properties: BTreeMap::new(), secret_properties_dir: None }
    }
}

/// A property whose value must never reach a log line: passwords, keys, tokens, JAAS configs.
pub fn is_secret_property(key: &str) -> bool {
    const MARKERS: [&str; 7] = ["password", "secret", "pem", "jaas", "token", "credential", "key"];
    let key = key.to_ascii_lowercase();
    MARKERS.iter().any(|m| key.contains(m))
}

/// Settings are logged at start and in errors; secret property values print as `<redacted>`.
impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret_property(k) { "<redacted>" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("properties", &properties)
            .field("secret_properties_dir", &self.secret_properties_dir)
            .finish()
    }
}

/// The secret properties directory cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("kafka.secret_properties_dir {path}: {source}")]
pub struct SecretPropertiesError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl KafkaSettings {
    /// Reads `secret_properties_dir` into `properties` (a file's value wins over the same key
    /// in `properties`). Names starting with `.` are skipped: a mounted Secret keeps its data
    /// behind `..data` links. Trailing newlines are trimmed, as `kubectl create secret
    /// --from-file` keeps them. Returns the property names read, for the start-up log.
    pub fn load_secret_properties(&mut self) -> Result<Vec<String>, SecretPropertiesError> {
        let Some(dir) = self.secret_properties_dir.clone() else { return Ok(Vec::new()) };
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SecretPropertiesError { path, source }
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(err(&dir))? {
            let entry = entry.map_err(err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') || !path.is_file() {
                continue;
            }
            let value = std::fs::read_to_string(&path).map_err(err(&path))?;
            self.properties.insert(name.clone(), value.trim_end_matches(['\n', '\r']).to_string());
            names.push(name);
        }
        names.sort();
        Ok(names)
    }

    /// The files these settings name that are not there yet, each said with its setting: a
    /// `secret_properties_dir` with no property file in it, or a `*.location` property (a CA,
    /// certificate or key file) naming nothing. In a pod these come from Secret volumes marked
    /// optional, so a Secret not created yet shows as an empty directory or a missing file:
    /// the binary waits for them (see [`crate::retry::until_present`]) rather than exit.
    pub fn missing_files(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if let Some(dir) = &self.secret_properties_dir {
            let has_property = std::fs::read_dir(dir).is_ok_and(|entries| {
                entries.flatten().any(|e| !e.file_name().to_string_lossy().starts_with('.') && e.path().is_file())
            });
            if !has_property {
                missing.push(format!(
                    "kafka.secret_properties_dir {} holds no property file (its Secret not created yet?)",
                    dir.display()
                ));
            }
        }
        for (key, value) in &self.properties {
            // librdkafka's `probe` finds the system's CAs; other values are paths.
            if key.ends_with(".location") && value != "probe" && !Path::new(value).exists() {
                missing.push(format!("kafka.properties.{key} {value}: no such file (its Secret not created yet?)"));
            }
        }
        missing
    }

    /// Refuses pass-through properties that kev sets per client: one value for every client
    /// would break them all (a `group.id` merges the recovery readers into the main group, a
    /// `transactional.id` makes every producer transactional, an `isolation.level` or
    /// `enable.auto.commit` undoes the delivery guarantee). Each has a setting of its own.
    pub fn validate(&self) -> Result<(), String> {
        const OWNED: [(&str, &str); 4] = [
            ("group.id", "group_id (enricher); the producer's groups are named per cluster"),
            ("transactional.id", "transactional_id, with processing_guarantee = \"exactly_once\""),
            ("enable.auto.commit", "nothing: kev commits offsets itself, after the outputs are acknowledged"),
            ("isolation.level", "nothing: kev reads read_committed wherever the guarantee needs it"),
        ];
        for (key, instead) in OWNED {
            if self.properties.contains_key(key) {
                return Err(format!(
                    "kafka.properties sets {key:?}, which kev sets per client; remove it (use {instead})"
                ));
            }
        }
        Ok(())
    }

    /// A consumer's config: [`Self::client_config`] over the settings every kev consumer
    /// shares, which `properties` still override.
    ///
    /// `fetch.queue.backoff.ms`: once its prefetch queue is over `queued.min.messages` or
    /// `queued.max.messages.kbytes`, librdkafka puts off a partition's next fetch by this long,
    /// 1 s by default. A reader slower than the broker (the enricher at 50-100k records/s)
    /// empties 64 MiB of large batches in less than that and then waits with nothing to do:
    /// on side_by_side's raw topic the enricher ran at 49k records/s, busy half the time, and
    /// at 92-95k/s with 20-100 ms (BENCHMARKS.md, session 16). 50 ms re-checks the queue often
    /// enough and costs nothing measurable.
    pub fn consumer_config(&self, base: &[(&str, &str)]) -> ClientConfig {
        let mut shared = vec![("fetch.queue.backoff.ms", "50")];
        shared.extend_from_slice(base);
        self.client_config(&shared)
    }

    /// A client config with the bootstrap servers and the pass-through properties.
    pub fn client_config(&self, base: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in base {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// An instance's transactions may stay open this long (`transaction.timeout.ms`, unless
/// `kafka.properties` says otherwise): a crashed instance without a successor holds every
/// `read_committed` reader of its partitions that long. 10 s, as Kafka Streams sets it for
/// exactly-once, not librdkafka's 60 s.
pub const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// How long one transaction call (`init_transactions`, `commit_transaction`) may block before
/// the caller gives it up and starts over: longer than [`TRANSACTION_TIMEOUT_MS`], so a
/// coordinator that is slow, not gone, is waited for. Both binaries' one value.
pub const TRANSACTION_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes `config` a transactional producer's: `transactional.id` `id`, and
/// [`TRANSACTION_TIMEOUT_MS`] unless `kafka.properties` set a timeout of its own.
pub fn set_transactional(config: &mut ClientConfig, id: &str) {
    config.set("transactional.id", id);
    if config.get("transaction.timeout.ms").is_none() {
        config.set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS);
    }
}

/// When a binary's transactional producer was fenced lately. A new producer gets past one
/// fencing: librdkafka reports a transaction the coordinator timed out as fencing too. Two
/// live producers with one transactional id would fence each other for ever, so
/// [`Fencings::MAX`] of them within [`Fencings::WINDOW`] mean: stop for good.
#[derive(Debug, Default)]
pub struct Fencings(std::collections::VecDeque<std::time::Instant>);

impl Fencings {
    pub const MAX: usize = 3;
    pub const WINDOW: Duration = Duration::from_secs(600);

    /// Records a fencing now. Returns how many fell within the window, this one included.
    pub fn record(&mut self) -> usize {
        self.0.retain(|t| t.elapsed() < Self::WINDOW);
        self.0.push_back(std::time::Instant::now());
        self.0.len()
    }

    /// Whether the fencings recorded mean a live rival.
    pub fn exhausted(&self) -> bool {
        self.0.len() >= Self::MAX
    }

    /// "3 times in 10 minutes", for the error that stops a binary.
    pub fn limit() -> String {
        format!("{} times in {} minutes", Self::MAX, Self::WINDOW.as_secs() / 60)
    }
}

/// Commits `producer`'s open transaction, retrying what librdkafka calls retriable (a
/// coordinator that is moving) a few times, then opens the next one. Blocks up to a few times
/// `timeout` (librdkafka flushes first).
pub fn commit_transaction<C, P>(producer: &P, timeout: Duration) -> Result<(), KafkaError>
where
    C: rdkafka::producer::ProducerContext,
    P: rdkafka::producer::Producer<C>,
{
    let mut tries = 0;
    loop {
        match producer.commit_transaction(timeout) {
            Ok(()) => break,
            Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < 3 => {
                tries += 1;
                tracing::warn!(error = %e, "transaction commit not done yet; retrying");
            }
            Err(e) => return Err(e),
        }
    }
    producer.begin_transaction()
}

/// Java's and librdkafka's `murmur2` partitioner: the partition a key lands in. kev computes it
/// to find its own cluster's partition when it rebuilds state from the raw topic.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as i32) % partitions.max(1)
}

/// Kafka's murmur2 (seed 0x9747b28c), as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Kafka refused an operation for want of an ACL. Retrying cannot help until someone grants
/// it, so both binaries end with this error, naming what was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "Kafka refused to let this principal {operation} {resource} ({code}); grant it with an ACL (the README's \
     \"ACLs\" lists what each binary needs)"
)]
pub struct Refused {
    /// What was asked, as a verb: "read", "write to", "create", "join".
    pub operation: String,
    /// What it was asked of, with its kind: "topic kev.events.raw", "group kev-enricher".
    pub resource: String,
    pub code: RDKafkaErrorCode,
}

impl Refused {
    /// The refusal in `error`, if it is one, as `operation` on `resource`.
    pub fn of(error: &KafkaError, operation: &str, resource: &str) -> Option<Refused> {
        // rdkafka gives no code for an admin operation's error; the code is inside.
        let code = match error {
            KafkaError::AdminOp(code) => Some(*code),
            e => e.rdkafka_error_code(),
        };
        code.and_then(|code| Refused::code(code, operation, resource))
    }

    /// The refusal `code` is, if it is one.
    pub fn code(code: RDKafkaErrorCode, operation: &str, resource: &str) -> Option<Refused> {
        use RDKafkaErrorCode::*;
        matches!(
            code,
            TopicAuthorizationFailed
                | GroupAuthorizationFailed
                | ClusterAuthorizationFailed
                | TransactionalIdAuthorizationFailed
                | DelegationTokenAuthorizationFailed
        )
        .then(|| Refused { operation: operation.to_string(), resource: resource.to_string(), code })
    }
}

/// Creates `topic` if it is missing. An existing topic is left as it is, whatever its layout,
/// and is not asked for again: a principal allowed to use a topic need not be allowed to create
/// it once it exists.
pub async fn ensure_topic(
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
    replication: i32,
    configs: &[(&str, &str)],
) -> Result<(), KafkaError> {
    let listed = {
        let (settings, topic) = (settings.clone(), topic.to_string());
        tokio::task::spawn_blocking(move || partition_count(&settings, &topic, Duration::from_secs(10)))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    };
    if listed.is_ok() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = settings.client_config(&[]).create()?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&new], &opts).await? {
        match result {
            Ok(_) => tracing::info!(topic, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(KafkaError::AdminOp(code))
                    .inspect_err(|_| tracing::error!(topic = t, ?code, "cannot create topic"))
            }
        }
    }
    Ok(())
}

/// The number of partitions of `topic`, from the broker's metadata.
pub fn partition_count(settings: &KafkaSettings, topic: &str, timeout: Duration) -> Result<i32, KafkaError> {
    let consumer: BaseConsumer = settings.client_config(&[]).create()?;
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition))?;
    if let Some(err) = t.error() {
        return Err(KafkaError::MetadataFetch(err.into()));
    }
    match t.partitions().len() as i32 {
        0 => Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition)),
        n => Ok(n),
    }
}

/// Finds where partitions' logs end by reading, not only by asking.
///
/// The usual answer, ListOffsets(latest), is only a lower bound on some brokers: tansu 0.6.0's
/// memory storage answers with the base offset of the newest batch plus one, so every record of
/// that batch after its first lies beyond it. Trusting it made a restarted producer miss the
/// tail it had published (and publish it again), and a replay stop short of the end. The probe
/// fetches from the last listed record and follows records until librdkafka reports the
/// partition's end, which it takes from the Fetch response's high watermark: on a broker that
/// answers correctly this reads one record. (From the last listed record, not after it: that
/// storage serves a fetch only from a batch's first offset, so a fetch from inside the newest
/// batch would return nothing and never reach the end.)
pub struct LogEnds {
    consumer: BaseConsumer<EndOfLog>,
}

/// The probe's client context: librdkafka also reports every partition end it is asked for
/// as a client error, which the default context would log as one.
pub struct EndOfLog;

impl rdkafka::ClientContext for EndOfLog {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            tracing::warn!(%error, reason, "Kafka client error while probing a log's end");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EndOfLog {}

impl LogEnds {
    /// A probe whose consumer is in group `group`: it never joins or commits, but librdkafka
    /// assigns partitions only to a consumer with a group, and looks up the group's
    /// coordinator, for which Kafka's authorizer wants Describe on the group. Each binary names
    /// its own, under the group prefix its ACLs grant (README, "ACLs").
    pub fn new(settings: &KafkaSettings, group: &str) -> Result<Self, KafkaError> {
        Self::with_isolation(settings, group, "read_committed")
    }

    /// A probe that finds the end of everything written, committed or not (the high
    /// watermark), where [`LogEnds::new`]'s stops at the first open transaction (the last
    /// stable offset). A transactional producer reads its own partition back to this end,
    /// waiting for other producers' open transactions there to end: its own committed records
    /// may lie after them.
    pub fn uncommitted(settings: &KafkaSettings, group: &str) -> Result<Self, KafkaError> {
        Self::with_isolation(settings, group, "read_uncommitted")
    }

    fn with_isolation(settings: &KafkaSettings, group: &str, isolation: &str) -> Result<Self, KafkaError> {
        let consumer = settings
            .client_config(&[
                ("group.id", group),
                ("isolation.level", isolation),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
                ("auto.offset.reset", "error"),
                ("fetch.wait.max.ms", "10"),
            ])
            .create_with_context(EndOfLog)?;
        Ok(Self { consumer })
    }

    /// `(low, end)`: the oldest offset kept and the offset the next record written will get.
    pub fn watermarks(&self, topic: &str, partition: i32, timeout: Duration) -> Result<(i64, i64), KafkaError> {
        let (low, listed) = self.consumer.fetch_watermarks(topic, partition, timeout)?;
        let mut end = listed.max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset((listed - 1).max(low)))?;
        self.consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + timeout;
        let result = loop {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) if m.topic() == topic && m.partition() == partition => end = end.max(m.offset() + 1),
                Some(Ok(_)) => {}
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break Ok((low, end)),
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => break Err(e),
                None if std::time::Instant::now() > deadline => {
                    break Err(KafkaError::MessageConsumption(RDKafkaErrorCode::RequestTimedOut))
                }
                None => {}
            }
        };
        let _ = self.consumer.unassign();
        if let Ok((_, end)) = result {
            if end > listed {
                tracing::debug!(topic, partition, listed, end, "the broker listed an end short of the log's");
            }
        }
        result
    }
}

/// Reads the records at offsets `[from, to)` of one partition in order, one at a time, with a
/// consumer that is assigned (not subscribed): for rebuilding state, where the consumer group
/// must not move. Offsets that hold no record (transaction markers, compacted records) are
/// skipped by following the consumer's position.
pub struct RangeReader<'c> {
    consumer: &'c BaseConsumer,
    topic: String,
    partition: i32,
    next: i64,
    to: i64,
}

/// Polls without a record before a range read gives up: 30 s.
const RANGE_IDLE_POLLS: u32 = 150;

impl<'c> RangeReader<'c> {
    pub fn new(
        consumer: &'c BaseConsumer,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
    ) -> Result<Self, KafkaError> {
        if from < to {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
            consumer.assign(&tpl)?;
        }
        Ok(Self { consumer, topic: topic.to_string(), partition, next: from, to })
    }

    /// The next record of the range, or `None` at its end.
    pub fn next_message(&mut self) -> Result<Option<BorrowedMessage<'c>>, KafkaError> {
        let mut idle = 0;
        while self.next < self.to {
            let Some(msg) = self.consumer.poll(Duration::from_millis(200)) else {
                if let Ok(pos) = self.consumer.position() {
                    if let Some(Offset::Offset(p)) = pos.find_partition(&self.topic, self.partition).map(|e| e.offset())
                    {
                        self.next = self.next.max(p);
                    }
                }
                idle += 1;
                if idle > RANGE_IDLE_POLLS {
                    return Err(KafkaError::MessageConsumption(RDKafkaErrorCode::RequestTimedOut));
                }
                continue;
            };
            let msg = msg?;
            if msg.offset() < self.next {
                continue;
            }
            if msg.offset() >= self.to {
                // The range ended in offsets without a record a reader sees (transaction
                // markers, aborted records): this one is past it, and not the range's.
                self.next = self.to;
                return Ok(None);
            }
            self.next = msg.offset() + 1;
            return Ok(Some(msg));
        }
        Ok(None)
    }

    /// The offset after the last record returned.
    pub fn position(&self) -> i64 {
        self.next
    }
}

impl Drop for RangeReader<'_> {
    fn drop(&mut self) {
        let _ = self.consumer.unassign();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_that_kev_sets_per_client_are_refused_by_name() {
        let mut s = KafkaSettings::default();
        s.properties.insert("session.timeout.ms".into(), "6000".into());
        assert_eq!(s.validate(), Ok(()));
        s.properties.insert("transactional.id".into(), "x".into());
        let e = s.validate().unwrap_err();
        assert!(e.contains("\"transactional.id\"") && e.contains("transactional_id"), "{e}");
        s.properties.remove("transactional.id");
        s.properties.insert("group.id".into(), "g".into());
        assert!(s.validate().unwrap_err().contains("group_id"));
    }

    /// Consumers get kev's shared settings under their own, and `properties` over both.
    #[test]
    fn consumer_settings_layer_under_the_callers_and_the_users() {
        let mut s = KafkaSettings::default();
        let c = s.consumer_config(&[("group.id", "g")]);
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("50"));
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(s.consumer_config(&[("fetch.queue.backoff.ms", "5")]).get("fetch.queue.backoff.ms"), Some("5"));
        s.properties.insert("fetch.queue.backoff.ms".into(), "1000".into());
        assert_eq!(s.consumer_config(&[]).get("fetch.queue.backoff.ms"), Some("1000"));
        assert_eq!(s.client_config(&[]).get("fetch.queue.backoff.ms"), Some("1000"));
        assert_eq!(KafkaSettings::default().client_config(&[]).get("fetch.queue.backoff.ms"), None);
    }

    /// Vectors from Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            ("abc", 479_470_107),
        ];
        for (s, want) in cases {
            assert_eq!(murmur2(s.as_bytes()) as i32, want, "{s}");
        }
    }

    #[test]
    fn partition_is_in_range() {
        for n in 1..8 {
            for key in ["a", "cluster-1", "prod-eu-west-1"] {
                assert!((0..n).contains(&partition_for_key(key.as_bytes(), n)));
            }
        }
    }

    /// An optional Secret volume before its Secret exists: an empty directory (or only the
    /// kubelet's `..data` bookkeeping) and CA paths naming nothing are reported, each with its
    /// setting; once the files are there, nothing is.
    #[test]
    fn missing_files_names_each_empty_secret_directory_and_absent_location() {
        let dir = std::env::temp_dir().join(format!("kev-missing-files-{}", std::process::id()));
        let props = dir.join("kafka");
        std::fs::create_dir_all(props.join("..2026_12_07")).unwrap();
        let ca = dir.join("ca.crt");
        let mut s = KafkaSettings { secret_properties_dir: Some(props.clone()), ..Default::default() };
        s.properties.insert("ssl.ca.location".into(), ca.display().to_string());
        s.properties.insert("ssl.endpoint.identification.algorithm".into(), "https".into());
        let missing = s.missing_files();
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].starts_with("kafka.secret_properties_dir") && missing[0].contains("holds no property file"));
        assert!(missing[1].starts_with("kafka.properties.ssl.ca.location") && missing[1].contains("ca.crt"));
        std::fs::write(props.join("sasl.password"), "x").unwrap();
        std::fs::write(&ca, "pem").unwrap();
        assert_eq!(s.missing_files(), Vec::<String>::new());
        s.properties.insert("ssl.ca.location".into(), "probe".into());
        assert_eq!(s.missing_files(), Vec::<String>::new(), "probe is not a path");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A Secret mounted as a volume: its keys become properties, its `..data` links do not,
    /// and neither the values nor anything derived from them shows in `Debug`.
    #[test]
    fn secret_properties_come_from_files_and_never_print() {
        let dir = std::env::temp_dir().join(format!("kev-secret-props-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("..2026_11_25")).unwrap();
        std::fs::write(dir.join("sasl.password"), "s3cr3t-value\n").unwrap();
        std::fs::write(dir.join("sasl.username"), "kev").unwrap();
        std::fs::write(dir.join("..data"), "not a property").unwrap();
        let mut s = KafkaSettings { secret_properties_dir: Some(dir.clone()), ..Default::default() };
        s.properties.insert("sasl.password".into(), "overridden".into());
        s.properties.insert("ssl.key.password".into(), "another-s3cr3t".into());
        assert_eq!(s.load_secret_properties().unwrap(), vec!["sasl.password", "sasl.username"]);
        assert_eq!(s.properties["sasl.password"], "s3cr3t-value");
        assert_eq!(s.properties["sasl.username"], "kev");
        assert!(!s.properties.contains_key("..data"));
        let printed = format!("{s:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("sasl.username\": \"kev"), "{printed}");
        std::fs::remove_dir_all(&dir).unwrap();

        let mut missing = KafkaSettings { secret_properties_dir: Some(dir.clone()), ..Default::default() };
        let e = missing.load_secret_properties().unwrap_err().to_string();
        assert!(e.contains("kafka.secret_properties_dir") && e.contains("kev-secret-props"), "{e}");
    }
}

/// Why kev cannot talk to Kafka at all, as opposed to Kafka being briefly away.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The broker refused the credentials: retrying cannot help.
    #[error(
        "Kafka at {servers} refused the credentials ({reason}); check sasl.mechanism, sasl.username and sasl.password"
    )]
    Authentication { servers: String, reason: String },
    /// The TLS handshake failed (untrusted CA, wrong host name, plaintext broker, a client
    /// certificate missing or refused where the broker requires one).
    #[error(
        "TLS with Kafka at {servers} failed ({reason}); check ssl.ca.location and security.protocol, and where the \
         broker requires client certificates, ssl.certificate.location and ssl.key.location"
    )]
    Tls { servers: String, reason: String },
    /// The settings themselves are refused by librdkafka.
    #[error("Kafka client settings: {0}")]
    Config(KafkaError),
}

/// Collects the first authentication or TLS error librdkafka reports while connecting, from
/// its error callback or its log: a metadata request just times out meanwhile.
#[derive(Default)]
struct ConnectContext {
    fatal: std::sync::Mutex<Option<(bool, String)>>,
}

impl rdkafka::consumer::ConsumerContext for ConnectContext {}

impl ConnectContext {
    fn note(&self, code: Option<RDKafkaErrorCode>, reason: &str) {
        // A broker that requires a client certificate refuses a missing or untrusted one with
        // a TLS alert after the handshake, seen as a failed receive ("SSL routines::sslv3
        // alert bad certificate").
        let tls = code == Some(RDKafkaErrorCode::SSL)
            || reason.contains("SSL handshake failed")
            || reason.contains("certificate verify failed")
            || reason.contains("SSL routines")
            || reason.contains("SSL alert");
        let auth = code == Some(RDKafkaErrorCode::Authentication)
            || code == Some(RDKafkaErrorCode::SaslAuthenticationFailed)
            || reason.contains("SASL authentication error")
            || reason.contains("Authentication failed");
        if tls || auth {
            let mut fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
            fatal.get_or_insert((tls, reason.to_string()));
        }
    }
}

impl rdkafka::ClientContext for ConnectContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.note(error.rdkafka_error_code(), reason);
    }

    /// librdkafka reports a failed handshake to a broker as a `FAIL` log line; the error
    /// callback hears of it only once every broker is down, if at all.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "FAIL" || fac == "SASL" || fac == "SSL" {
            self.note(None, message);
        }
        tracing::debug!(target: "librdkafka", ?level, fac, message);
    }
}

/// Checks at start that Kafka accepts kev's connection settings, so that a wrong password or
/// an untrusted CA ends the process with a message saying so (instead of a process that waits
/// forever, unready, with the reason buried in librdkafka's logs). Returns `Ok(true)` once the
/// cluster answered, `Ok(false)` when it did not within `wait` for a reason that may pass (the
/// broker is down or starting): the caller goes on and its own retries take over.
pub async fn check_connection(settings: &KafkaSettings, wait: Duration) -> Result<bool, ConnectError> {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer<ConnectContext> =
            settings.client_config(&[]).create_with_context(ConnectContext::default()).map_err(ConnectError::Config)?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            let answered = consumer.fetch_metadata(None, Duration::from_millis(500)).is_ok();
            // Errors reach the context only while the client is polled.
            let _ = consumer.poll(Duration::from_millis(100));
            let fatal = consumer.context().fatal.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let servers = settings.bootstrap_servers.clone();
            match fatal {
                Some((true, reason)) => return Err(ConnectError::Tls { servers, reason }),
                Some((false, reason)) => return Err(ConnectError::Authentication { servers, reason }),
                None if answered => return Ok(true),
                None if std::time::Instant::now() >= deadline => return Ok(false),
                None => {}
            }
        }
    })
    .await
    .unwrap_or(Ok(false))
}
