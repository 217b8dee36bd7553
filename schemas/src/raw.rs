//! Typed records of the raw topic, mirroring `avro/raw_record.avsc` field by field.
//!
//! The Kubernetes objects keep the Kubernetes field names (camelCase); kev's own records use
//! snake_case. Every timestamp is microseconds since the epoch (`timestamp-micros`), except the
//! producer's clock readings, which are milliseconds (`timestamp-millis`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A record of the raw topic: an event observation or a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawRecord {
    pub cluster: String,
    pub kind: RawKind,
    pub event: Option<EventObservation>,
    pub heartbeat: Option<Heartbeat>,
}

impl RawRecord {
    pub fn event(cluster: impl Into<String>, event: EventObservation) -> Self {
        Self { cluster: cluster.into(), kind: RawKind::Event, event: Some(event), heartbeat: None }
    }

    pub fn heartbeat(cluster: impl Into<String>, heartbeat: Heartbeat) -> Self {
        Self { cluster: cluster.into(), kind: RawKind::Heartbeat, event: None, heartbeat: Some(heartbeat) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RawKind {
    Event,
    Heartbeat,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WatchVerb {
    Added,
    Modified,
    Deleted,
    Unknown,
}

/// One new Event object or one update of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventObservation {
    pub verb: WatchVerb,
    pub uid: String,
    pub resource_version: String,
    pub namespace: Option<String>,
    pub name: String,
    pub api_version: String,
    pub new_occurrences: i64,
    /// Milliseconds since the epoch.
    pub observed_at: i64,
    pub normalized: NormalizedEvent,
    /// The object as observed, boxed: the engine takes an observation by value and moves it on,
    /// and unboxed these made it 2.7 KB to copy at each move (the largest single cost in
    /// `engine_bench`'s profile) while the engine never reads them.
    pub core: Option<Box<CoreV1Event>>,
    pub events_v1: Option<Box<EventsV1Event>>,
}

/// Sent at a fixed interval so that event-time windows downstream close while a cluster is quiet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Milliseconds since the epoch.
    pub producer_time: i64,
    pub event_time_high: Option<i64>,
    pub resource_version: Option<String>,
    pub source: String,
    pub producer_id: String,
    pub recovery_offset: Option<i64>,
}

/// One model for both Event shapes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NormalizedEvent {
    pub event_time: i64,
    pub first_time: Option<i64>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub reason: Option<String>,
    pub note: Option<String>,
    pub action: Option<String>,
    pub regarding: Option<ResourceRef>,
    pub related: Option<ResourceRef>,
    pub reporting_controller: Option<String>,
    pub reporting_instance: Option<String>,
    pub host: Option<String>,
    pub count: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceRef {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub api_version: Option<String>,
    pub field_path: Option<String>,
}

/// core/v1 Event with the Kubernetes field names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CoreV1Event {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub metadata: ObjectMeta,
    pub involved_object: Option<ObjectReference>,
    pub reason: Option<String>,
    pub message: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub count: Option<i64>,
    pub first_timestamp: Option<i64>,
    pub last_timestamp: Option<i64>,
    pub event_time: Option<i64>,
    pub source: Option<EventSource>,
    pub series: Option<EventSeries>,
    pub action: Option<String>,
    pub related: Option<ObjectReference>,
    pub reporting_component: Option<String>,
    pub reporting_instance: Option<String>,
    /// What the schema does not model, as JSON shaped like the original object.
    pub extra: Option<String>,
}

/// events.k8s.io/v1 Event with the Kubernetes field names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsV1Event {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub metadata: ObjectMeta,
    pub event_time: Option<i64>,
    pub action: Option<String>,
    pub note: Option<String>,
    pub reason: Option<String>,
    pub regarding: Option<ObjectReference>,
    pub related: Option<ObjectReference>,
    pub reporting_controller: Option<String>,
    pub reporting_instance: Option<String>,
    pub series: Option<EventSeries>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub deprecated_count: Option<i64>,
    pub deprecated_first_timestamp: Option<i64>,
    pub deprecated_last_timestamp: Option<i64>,
    pub deprecated_source: Option<EventSource>,
    /// What the schema does not model, as JSON shaped like the original object.
    pub extra: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub generate_name: Option<String>,
    pub self_link: Option<String>,
    pub generation: Option<i64>,
    pub deletion_grace_period_seconds: Option<i64>,
    pub creation_timestamp: Option<i64>,
    pub deletion_timestamp: Option<i64>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub owner_references: Option<Vec<OwnerReference>>,
    pub finalizers: Option<Vec<String>>,
    pub managed_fields: Option<Vec<ManagedFieldsEntry>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub api_version: Option<String>,
    pub field_path: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub resource_version: Option<String>,
    pub uid: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub controller: Option<bool>,
    pub block_owner_deletion: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedFieldsEntry {
    pub api_version: Option<String>,
    pub fields_type: Option<String>,
    /// The field set as JSON text.
    pub fields_v1: Option<String>,
    pub manager: Option<String>,
    pub operation: Option<String>,
    pub subresource: Option<String>,
    pub time: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventSource {
    pub component: Option<String>,
    pub host: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSeries {
    pub count: Option<i64>,
    pub last_observed_time: Option<i64>,
}

impl EventObservation {
    /// An observation of `object`, with its normalised view.
    pub fn new(object: crate::k8s::EventObject, verb: WatchVerb, new_occurrences: i64, observed_at: i64) -> Self {
        let normalized = crate::normalize::normalize(&object);
        let (uid, resource_version, namespace, name, api_version) = (
            object.uid().to_string(),
            object.resource_version().to_string(),
            object.namespace().map(str::to_string),
            object.name().to_string(),
            object.shape().to_string(),
        );
        let (core, events_v1) = match object {
            crate::k8s::EventObject::Core(e) => (Some(Box::new(e)), None),
            crate::k8s::EventObject::V1(e) => (None, Some(Box::new(e))),
        };
        Self {
            verb,
            uid,
            resource_version,
            namespace,
            name,
            api_version,
            new_occurrences,
            observed_at,
            normalized,
            core,
            events_v1,
        }
    }

    /// The original object, as it was observed.
    pub fn object(&self) -> Option<crate::k8s::EventObject> {
        match (&self.core, &self.events_v1) {
            (Some(e), _) => Some(crate::k8s::EventObject::Core((**e).clone())),
            (None, Some(e)) => Some(crate::k8s::EventObject::V1((**e).clone())),
            (None, None) => None,
        }
    }
}
