//! The producer's configuration: one struct, every default a named function with its reason.

use std::path::PathBuf;
use std::time::Duration;

use kev_common::kafka::{KafkaSettings, ProcessingGuarantee};
use kev_common::telemetry::HttpSettings;
use kev_schemas::codec::RegistrySettings;
use serde::Deserialize;

use crate::filter::{Filter, FilterSettings};
use crate::redact::{RedactionSettings, Redactor};

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerConfig {
    /// Id of the cluster whose events this producer publishes; the record key. Default `default`.
    #[serde(default = "default_cluster")]
    pub cluster_id: String,
    /// Identity of this instance: the Lease holder and the heartbeat's producer_id. Default: the
    /// `POD_NAME` or `HOSTNAME` environment variable, else `kev-producer`.
    #[serde(default = "default_producer_id")]
    pub producer_id: String,
    #[serde(default)]
    pub kafka: KafkaSettings,
    #[serde(default)]
    pub registry: RegistrySettings,
    #[serde(default)]
    pub topic: TopicSettings,
    /// Milliseconds between heartbeats (in replay mode, of replayed event time). Default 10000.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    /// `at_least_once` (the default): idempotent produce and de-duplication state rebuilt from
    /// the raw topic, on any Kafka-protocol broker (README, "Delivery"). `exactly_once`: the
    /// records and the heartbeats that name their recovery offset are written in Kafka
    /// transactions (Apache Kafka 2.5 or later), and a new session fences the previous
    /// producer of its cluster before it reads the topic back, which closes the one duplicate
    /// window left without them. Readers must use `isolation.level=read_committed`.
    #[serde(default)]
    pub processing_guarantee: ProcessingGuarantee,
    /// `transactional.id` in `exactly_once` mode. One per cluster source, shared by the
    /// replicas that take turns holding its Lease: the new leader's producer fences the old
    /// one's. Default `kev-producer-<cluster_id>`.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// `exactly_once`: milliseconds between transaction commits, which is also how late
    /// `read_committed` readers see a record. Default 1000.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    #[serde(default)]
    pub source: SourceSettings,
    #[serde(default)]
    pub leader_election: LeaderSettings,
    #[serde(default)]
    pub buffer: BufferSettings,
    /// Client-side keep/drop rules (see `filter`).
    #[serde(default)]
    pub filter: FilterSettings,
    /// Secrets masked before publishing (see `redact`).
    #[serde(default)]
    pub redaction: RedactionSettings,
    #[serde(default)]
    pub http: HttpSettings,
    /// Logs as JSON lines instead of text. Default false.
    #[serde(default)]
    pub log_json: bool,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// The raw topic. Default `kev.events.raw`.
    #[serde(default = "default_topic")]
    pub name: String,
    /// Partitions when kev creates the topic. Default 3.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor when kev creates the topic. Default 1 (set 3 in production).
    #[serde(default = "default_replication")]
    pub replication: i32,
    /// Create the topic at start when it is missing. Default true.
    #[serde(default = "yes")]
    pub create: bool,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    /// Namespaces to watch; empty means all. Default empty. Events about objects of other
    /// namespaces are not published, in replay mode too.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// With `namespaces` set, also publish the events of cluster-scoped objects (Nodes,
    /// PersistentVolumes), which the API server files under `default`. Default true: a node
    /// going NotReady explains the evictions in the namespaces watched.
    #[serde(default = "yes")]
    pub cluster_scoped_events: bool,
    /// Server-side field selector, such as `type=Warning`. Default none.
    #[serde(default)]
    pub field_selector: Option<String>,
    /// Server-side label selector. Default none.
    #[serde(default)]
    pub label_selector: Option<String>,
    /// Which Events API to read: `auto` (events.k8s.io/v1, falling back to core/v1 when the
    /// group is not served), `events.k8s.io/v1` or `v1`. Default `auto`.
    #[serde(default = "default_api")]
    pub api: String,
    /// Objects per LIST page. Default 500.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Watch sessions that end with no event at all before kev relists instead of re-watching
    /// from the same resourceVersion (the API server answers a too-old resourceVersion with
    /// 200 and an immediate close, kubernetes#104171). Default 3.
    #[serde(default = "default_empty_watch_limit")]
    pub empty_watch_limit: u32,
    /// Dump files to replay (replay mode).
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Replay speed: 0 as fast as possible, otherwise real time times this factor. Default 0.
    #[serde(default)]
    pub speed: f64,
    /// Longest pause between two replayed events in milliseconds, so that a dump spanning years
    /// does not stall. Default 10000.
    #[serde(default = "default_max_gap_ms")]
    pub max_gap_ms: u64,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderSettings {
    /// Elect a leader through a coordination.k8s.io Lease so that of several replicas only one
    /// publishes. Default false (one replica).
    #[serde(default)]
    pub enabled: bool,
    /// Namespace of the Lease. Default `kev`.
    #[serde(default = "default_lease_namespace")]
    pub namespace: String,
    /// Name of the Lease. Default `kev-producer-<cluster_id>`.
    #[serde(default)]
    pub lease_name: Option<String>,
    /// Seconds a Lease is valid without renewal. Default 15.
    #[serde(default = "default_lease_duration")]
    pub lease_duration_s: u64,
    /// Seconds a leader keeps publishing without a successful renewal; it must be shorter than
    /// the lease duration so that the old leader stops before a new one can start. Default 10.
    #[serde(default = "default_renew_deadline")]
    pub renew_deadline_s: u64,
    /// Seconds between renewal or acquisition attempts. Default 2.
    #[serde(default = "default_retry_period")]
    pub retry_period_s: u64,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BufferSettings {
    /// Records sent but not yet acknowledged by Kafka; when reached, the watch waits (it is not
    /// read further), so memory stays bounded while Kafka is slow or down. Default 10000.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

fn default_cluster() -> String {
    "default".into()
}
fn default_producer_id() -> String {
    std::env::var("POD_NAME").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "kev-producer".into())
}
fn default_heartbeat_ms() -> u64 {
    10_000
}
fn default_commit_interval_ms() -> u64 {
    1_000
}
fn default_topic() -> String {
    "kev.events.raw".into()
}
fn default_partitions() -> i32 {
    3
}
fn default_replication() -> i32 {
    1
}
fn yes() -> bool {
    true
}
fn default_api() -> String {
    "auto".into()
}
fn default_page_size() -> u32 {
    500
}
fn default_empty_watch_limit() -> u32 {
    3
}
fn default_max_gap_ms() -> u64 {
    10_000
}
fn default_lease_namespace() -> String {
    "kev".into()
}
fn default_lease_duration() -> u64 {
    15
}
fn default_renew_deadline() -> u64 {
    10
}
fn default_retry_period() -> u64 {
    2
}
fn default_max_in_flight() -> usize {
    10_000
}

macro_rules! defaults_from_serde {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                serde_json::from_value(serde_json::json!({})).expect("every field has a default")
            }
        }
    )*};
}
defaults_from_serde!(ProducerConfig, TopicSettings, SourceSettings, LeaderSettings, BufferSettings);

impl ProducerConfig {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.max(1))
    }

    /// The `transactional.id` of this cluster's producer in `exactly_once` mode, `None` in
    /// `at_least_once` mode.
    pub fn transactional_id(&self) -> Option<String> {
        (self.processing_guarantee == ProcessingGuarantee::ExactlyOnce)
            .then(|| self.transactional_id.clone().unwrap_or_else(|| format!("kev-producer-{}", self.cluster_id)))
    }

    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms.max(10))
    }

    pub fn lease_name(&self) -> String {
        self.leader_election.lease_name.clone().unwrap_or_else(|| format!("kev-producer-{}", self.cluster_id))
    }

    /// The compiled keep/drop rules, with the watched namespaces.
    pub fn filter(&self) -> Result<Filter, crate::filter::FilterError> {
        Filter::new(&self.filter, &self.source.namespaces, self.source.cluster_scoped_events)
    }

    pub fn redactor(&self) -> Result<Redactor, crate::redact::RedactionError> {
        Redactor::new(&self.redaction)
    }

    /// Checks what serde cannot: relations between fields.
    pub fn validate(&self) -> Result<(), String> {
        let le = &self.leader_election;
        if le.enabled && le.renew_deadline_s >= le.lease_duration_s {
            return Err(format!(
                "leader_election.renew_deadline_s ({}) must be shorter than lease_duration_s ({})",
                le.renew_deadline_s, le.lease_duration_s
            ));
        }
        if !["auto", "events.k8s.io/v1", "v1"].contains(&self.source.api.as_str()) {
            return Err(format!("source.api is {:?}: expected auto, events.k8s.io/v1 or v1", self.source.api));
        }
        if self.cluster_id.is_empty() {
            return Err("cluster_id is empty".into());
        }
        if self.source.speed < 0.0 {
            return Err("source.speed must be 0 (as fast as possible) or positive".into());
        }
        self.filter().map_err(|e| e.to_string())?;
        self.redactor().map_err(|e| e.to_string())?;
        Ok(())
    }
}
