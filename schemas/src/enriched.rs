//! Typed records of the downstream topics, mirroring `avro/enriched_event.avsc`,
//! `avro/aggregate.avsc`, `avro/incident.avsc` and `avro/dead_letter.avsc`.

use serde::{Deserialize, Serialize};

use crate::raw::ResourceRef;

/// How bad an event is. Ordered: `Info < Warning < Error < Critical`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    #[default]
    Info,
    Warning,
    Error,
    Critical,
    /// A symbol this reader does not know (written by a newer kev).
    Unknown,
}

/// An event observation, graded and fingerprinted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnrichedEvent {
    pub cluster: String,
    pub uid: String,
    pub resource_version: String,
    pub event_time: i64,
    pub namespace: Option<String>,
    pub regarding: Option<ResourceRef>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub reason: Option<String>,
    pub note: Option<String>,
    pub reporting_controller: Option<String>,
    pub host: Option<String>,
    pub count: i64,
    pub new_occurrences: i64,
    pub severity: Severity,
    pub category: String,
    pub fingerprint: String,
    pub template: String,
    pub raw_offset: i64,
    pub raw_partition: i32,
}

/// Occurrences of one fingerprint in one event-time window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub cluster: String,
    pub fingerprint: String,
    pub window_start: i64,
    pub window_end: i64,
    pub namespace: Option<String>,
    pub kind: Option<String>,
    pub reason: Option<String>,
    pub template: String,
    pub category: String,
    pub severity: Severity,
    pub count: i64,
    pub distinct_objects: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub top_objects: Vec<String>,
    pub sample_message: Option<String>,
    pub recurring: bool,
    pub late_events: i64,
}

/// Lifecycle state of an incident.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IncidentStatus {
    #[default]
    Open,
    Updated,
    Resolved,
    Unknown,
}

/// Events of several resources of one cluster linked to a root-cause candidate. Every update
/// carries the whole incident.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub incident_id: String,
    pub cluster: String,
    pub rule: String,
    pub status: IncidentStatus,
    pub severity: Severity,
    pub confidence: f64,
    pub summary: String,
    pub root_cause: Option<ResourceRef>,
    pub root_reason: Option<String>,
    pub scope: Vec<ResourceRef>,
    pub member_uids: Vec<String>,
    pub opened_at: i64,
    pub updated_at: i64,
    pub resolved_at: Option<i64>,
    /// The incident this one was merged into, on its last record.
    #[serde(default)]
    pub merged_into: Option<String>,
    /// The rules whose matches make it up, the root's first.
    #[serde(default)]
    pub contributing_rules: Option<Vec<String>>,
    /// "missing Secret etcd-client -> FailedMount x3 -> Unhealthy x2".
    #[serde(default)]
    pub causal_chain: Option<String>,
    /// The fault's signature, 16 hex digits: the same fault on another day has the same one.
    #[serde(default)]
    pub signature: Option<String>,
    /// Incidents of the same signature before this one.
    #[serde(default)]
    pub previous_count: Option<i64>,
    /// When the first of them opened, microseconds.
    #[serde(default)]
    pub first_seen: Option<i64>,
    /// When the latest of them opened, microseconds.
    #[serde(default)]
    pub last_seen: Option<i64>,
    /// The latest of them.
    #[serde(default)]
    pub last_incident_id: Option<String>,
}

/// A raw record the enricher could not read, with what was wrong. Every field comes from the
/// source record, so a re-run dead-letters the same bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub error_kind: String,
    pub error: String,
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub key: Option<Vec<u8>>,
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub value: Option<Vec<u8>>,
    pub seen_at: i64,
}
