//! Reading Kubernetes Event objects (JSON, either shape) into the typed records, and back.
//!
//! Real dumps hold quirks (an `eventTime` of `"null"`, missing `type`, fields added by newer API
//! servers). Nothing is dropped: whatever does not fit a typed field goes to the record's `extra`,
//! a JSON object shaped like the original, and [`EventObject::to_json`] merges it back, so
//! `from_json` then `to_json` gives the original object again.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::raw::{
    CoreV1Event, EventSeries, EventSource, EventsV1Event, ManagedFieldsEntry, ObjectMeta, ObjectReference,
    OwnerReference,
};
use crate::time::{format_micros, parse_micros};

/// The API version label of the core/v1 shape.
pub const CORE_V1: &str = "v1";
/// The API version label of the events.k8s.io/v1 shape.
pub const EVENTS_V1: &str = "events.k8s.io/v1";

/// Why an object is not a usable Event. The message names the object when it can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("kind is {0:?}, not Event")]
    NotAnEvent(String),
    #[error("metadata is missing or not an object")]
    MissingMetadata,
    #[error("metadata.{field} is missing or not a string (object {name:?})")]
    MissingField { field: &'static str, name: Option<String> },
}

impl ParseError {
    /// A short stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ParseError::NotAnObject => "not_an_object",
            ParseError::NotAnEvent(_) => "not_an_event",
            ParseError::MissingMetadata => "missing_metadata",
            ParseError::MissingField { .. } => "missing_field",
        }
    }
}

/// An Event object of either shape.
#[derive(Debug, Clone, PartialEq)]
pub enum EventObject {
    Core(CoreV1Event),
    V1(EventsV1Event),
}

impl EventObject {
    /// Reads an Event object of either shape. The shape comes from `apiVersion`, or, when that is
    /// missing, from the fields only events.k8s.io/v1 has.
    pub fn from_json(value: Value) -> Result<Self, ParseError> {
        let Value::Object(map) = value else {
            return Err(ParseError::NotAnObject);
        };
        if let Some(kind) = map.get("kind").and_then(Value::as_str) {
            if kind != "Event" {
                return Err(ParseError::NotAnEvent(kind.to_string()));
            }
        }
        let is_v1 = match map.get("apiVersion").and_then(Value::as_str) {
            Some(v) => v.starts_with("events.k8s.io/"),
            None => {
                ["regarding", "note", "reportingController", "deprecatedCount"].iter().any(|k| map.contains_key(*k))
            }
        };
        let mut obj = Obj::new(map);
        let meta = obj.object("metadata", read_meta).ok_or(ParseError::MissingMetadata)?;
        let parsed = if is_v1 { read_v1(&mut obj, meta) } else { read_core(&mut obj, meta) };
        let extra = obj.finish();
        let parsed = match parsed {
            EventObject::Core(mut e) => {
                e.extra = extra;
                EventObject::Core(e)
            }
            EventObject::V1(mut e) => {
                e.extra = extra;
                EventObject::V1(e)
            }
        };
        let meta = parsed.metadata();
        for (field, value) in [("uid", &meta.uid), ("resourceVersion", &meta.resource_version), ("name", &meta.name)] {
            if value.as_deref().is_none_or(str::is_empty) {
                return Err(ParseError::MissingField { field, name: meta.name.clone() });
            }
        }
        Ok(parsed)
    }

    /// Writes the object back as the API server would, with everything `extra` kept.
    pub fn to_json(&self) -> Value {
        let (mut map, extra) = match self {
            EventObject::Core(e) => (write_core(e), &e.extra),
            EventObject::V1(e) => (write_v1(e), &e.extra),
        };
        if let Some(extra) = extra.as_deref().and_then(|s| serde_json::from_str::<Value>(s).ok()) {
            merge(&mut map, extra);
        }
        Value::Object(map)
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            EventObject::Core(e) => &e.metadata,
            EventObject::V1(e) => &e.metadata,
        }
    }

    /// `metadata.uid`; `from_json` guarantees it is set.
    pub fn uid(&self) -> &str {
        self.metadata().uid.as_deref().unwrap_or_default()
    }

    /// `metadata.resourceVersion`; `from_json` guarantees it is set.
    pub fn resource_version(&self) -> &str {
        self.metadata().resource_version.as_deref().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    /// `v1` or `events.k8s.io/v1`.
    pub fn shape(&self) -> &'static str {
        match self {
            EventObject::Core(_) => CORE_V1,
            EventObject::V1(_) => EVENTS_V1,
        }
    }
}

fn read_core(o: &mut Obj, metadata: ObjectMeta) -> EventObject {
    EventObject::Core(CoreV1Event {
        api_version: o.string("apiVersion"),
        kind: o.string("kind"),
        metadata,
        involved_object: o.object("involvedObject", read_ref),
        reason: o.string("reason"),
        message: o.string("message"),
        type_: o.string("type"),
        count: o.long("count"),
        first_timestamp: o.time("firstTimestamp"),
        last_timestamp: o.time("lastTimestamp"),
        event_time: o.time("eventTime"),
        source: o.object("source", read_source),
        series: o.object("series", read_series),
        action: o.string("action"),
        related: o.object("related", read_ref),
        reporting_component: o.string("reportingComponent"),
        reporting_instance: o.string("reportingInstance"),
        extra: None,
    })
}

fn read_v1(o: &mut Obj, metadata: ObjectMeta) -> EventObject {
    EventObject::V1(EventsV1Event {
        api_version: o.string("apiVersion"),
        kind: o.string("kind"),
        metadata,
        event_time: o.time("eventTime"),
        action: o.string("action"),
        note: o.string("note"),
        reason: o.string("reason"),
        regarding: o.object("regarding", read_ref),
        related: o.object("related", read_ref),
        reporting_controller: o.string("reportingController"),
        reporting_instance: o.string("reportingInstance"),
        series: o.object("series", read_series),
        type_: o.string("type"),
        deprecated_count: o.long("deprecatedCount"),
        deprecated_first_timestamp: o.time("deprecatedFirstTimestamp"),
        deprecated_last_timestamp: o.time("deprecatedLastTimestamp"),
        deprecated_source: o.object("deprecatedSource", read_source),
        extra: None,
    })
}

fn read_meta(o: &mut Obj) -> ObjectMeta {
    ObjectMeta {
        name: o.string("name"),
        namespace: o.string("namespace"),
        uid: o.string("uid"),
        resource_version: o.string("resourceVersion"),
        generate_name: o.string("generateName"),
        self_link: o.string("selfLink"),
        generation: o.long("generation"),
        deletion_grace_period_seconds: o.long("deletionGracePeriodSeconds"),
        creation_timestamp: o.time("creationTimestamp"),
        deletion_timestamp: o.time("deletionTimestamp"),
        labels: o.string_map("labels"),
        annotations: o.string_map("annotations"),
        owner_references: o.array("ownerReferences", |o| OwnerReference {
            api_version: o.string("apiVersion"),
            kind: o.string("kind"),
            name: o.string("name"),
            uid: o.string("uid"),
            controller: o.boolean("controller"),
            block_owner_deletion: o.boolean("blockOwnerDeletion"),
        }),
        finalizers: o.string_array("finalizers"),
        managed_fields: o.array("managedFields", |o| ManagedFieldsEntry {
            api_version: o.string("apiVersion"),
            fields_type: o.string("fieldsType"),
            fields_v1: o.take("fieldsV1").map(|v| v.to_string()),
            manager: o.string("manager"),
            operation: o.string("operation"),
            subresource: o.string("subresource"),
            time: o.time("time"),
        }),
    }
}

fn read_ref(o: &mut Obj) -> ObjectReference {
    ObjectReference {
        api_version: o.string("apiVersion"),
        field_path: o.string("fieldPath"),
        kind: o.string("kind"),
        name: o.string("name"),
        namespace: o.string("namespace"),
        resource_version: o.string("resourceVersion"),
        uid: o.string("uid"),
    }
}

fn read_source(o: &mut Obj) -> EventSource {
    EventSource { component: o.string("component"), host: o.string("host") }
}

fn read_series(o: &mut Obj) -> EventSeries {
    EventSeries { count: o.long("count"), last_observed_time: o.time("lastObservedTime") }
}

fn write_core(e: &CoreV1Event) -> Map<String, Value> {
    let mut m = Out::default();
    m.string("apiVersion", &e.api_version);
    m.string("kind", &e.kind);
    m.put("metadata", Some(write_meta(&e.metadata)));
    m.put("involvedObject", e.involved_object.as_ref().map(write_ref));
    m.string("reason", &e.reason);
    m.string("message", &e.message);
    m.string("type", &e.type_);
    m.long("count", e.count);
    m.time("firstTimestamp", e.first_timestamp);
    m.time("lastTimestamp", e.last_timestamp);
    m.time("eventTime", e.event_time);
    m.put("source", e.source.as_ref().map(write_source));
    m.put("series", e.series.as_ref().map(write_series));
    m.string("action", &e.action);
    m.put("related", e.related.as_ref().map(write_ref));
    m.string("reportingComponent", &e.reporting_component);
    m.string("reportingInstance", &e.reporting_instance);
    m.0
}

fn write_v1(e: &EventsV1Event) -> Map<String, Value> {
    let mut m = Out::default();
    m.string("apiVersion", &e.api_version);
    m.string("kind", &e.kind);
    m.put("metadata", Some(write_meta(&e.metadata)));
    m.time("eventTime", e.event_time);
    m.string("action", &e.action);
    m.string("note", &e.note);
    m.string("reason", &e.reason);
    m.put("regarding", e.regarding.as_ref().map(write_ref));
    m.put("related", e.related.as_ref().map(write_ref));
    m.string("reportingController", &e.reporting_controller);
    m.string("reportingInstance", &e.reporting_instance);
    m.put("series", e.series.as_ref().map(write_series));
    m.string("type", &e.type_);
    m.long("deprecatedCount", e.deprecated_count);
    m.time("deprecatedFirstTimestamp", e.deprecated_first_timestamp);
    m.time("deprecatedLastTimestamp", e.deprecated_last_timestamp);
    m.put("deprecatedSource", e.deprecated_source.as_ref().map(write_source));
    m.0
}

fn write_meta(meta: &ObjectMeta) -> Value {
    let mut m = Out::default();
    m.string("name", &meta.name);
    m.string("namespace", &meta.namespace);
    m.string("uid", &meta.uid);
    m.string("resourceVersion", &meta.resource_version);
    m.string("generateName", &meta.generate_name);
    m.string("selfLink", &meta.self_link);
    m.long("generation", meta.generation);
    m.long("deletionGracePeriodSeconds", meta.deletion_grace_period_seconds);
    m.time("creationTimestamp", meta.creation_timestamp);
    m.time("deletionTimestamp", meta.deletion_timestamp);
    m.put("labels", meta.labels.as_ref().map(|l| serde_json::to_value(l).unwrap_or_default()));
    m.put("annotations", meta.annotations.as_ref().map(|l| serde_json::to_value(l).unwrap_or_default()));
    m.put(
        "ownerReferences",
        meta.owner_references.as_ref().map(|refs| {
            Value::Array(
                refs.iter()
                    .map(|r| {
                        let mut m = Out::default();
                        m.string("apiVersion", &r.api_version);
                        m.string("kind", &r.kind);
                        m.string("name", &r.name);
                        m.string("uid", &r.uid);
                        m.put("controller", r.controller.map(Value::Bool));
                        m.put("blockOwnerDeletion", r.block_owner_deletion.map(Value::Bool));
                        Value::Object(m.0)
                    })
                    .collect(),
            )
        }),
    );
    m.put("finalizers", meta.finalizers.as_ref().map(|f| serde_json::to_value(f).unwrap_or_default()));
    m.put(
        "managedFields",
        meta.managed_fields.as_ref().map(|entries| {
            Value::Array(
                entries
                    .iter()
                    .map(|f| {
                        let mut m = Out::default();
                        m.string("apiVersion", &f.api_version);
                        m.string("fieldsType", &f.fields_type);
                        m.put(
                            "fieldsV1",
                            f.fields_v1
                                .as_deref()
                                .map(|s| serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))),
                        );
                        m.string("manager", &f.manager);
                        m.string("operation", &f.operation);
                        m.string("subresource", &f.subresource);
                        m.time("time", f.time);
                        Value::Object(m.0)
                    })
                    .collect(),
            )
        }),
    );
    Value::Object(m.0)
}

fn write_ref(r: &ObjectReference) -> Value {
    let mut m = Out::default();
    m.string("apiVersion", &r.api_version);
    m.string("fieldPath", &r.field_path);
    m.string("kind", &r.kind);
    m.string("name", &r.name);
    m.string("namespace", &r.namespace);
    m.string("resourceVersion", &r.resource_version);
    m.string("uid", &r.uid);
    Value::Object(m.0)
}

fn write_source(s: &EventSource) -> Value {
    let mut m = Out::default();
    m.string("component", &s.component);
    m.string("host", &s.host);
    Value::Object(m.0)
}

fn write_series(s: &EventSeries) -> Value {
    let mut m = Out::default();
    m.long("count", s.count);
    m.time("lastObservedTime", s.last_observed_time);
    Value::Object(m.0)
}

/// Equality of two Kubernetes objects as the API server means it: a null field equals an absent
/// one, and two timestamps are equal when they name the same instant (`...:05Z` and
/// `...:05.000000Z`).
pub fn same_object(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .keys()
            .chain(y.keys())
            .all(|k| same_object(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null))),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_object(a, b)),
        (Value::String(x), Value::String(y)) if x != y => {
            matches!((parse_micros(x), parse_micros(y)), (Some(p), Some(q)) if p == q)
        }
        _ => a == b,
    }
}

/// Merges `extra` into `target`: objects recursively, anything else replaces.
fn merge(target: &mut Map<String, Value>, extra: Value) {
    let Value::Object(extra) = extra else { return };
    for (k, v) in extra {
        match (target.get_mut(&k), v) {
            (Some(Value::Object(t)), Value::Object(v)) => merge(t, Value::Object(v)),
            (_, v) => {
                target.insert(k, v);
            }
        }
    }
}

/// A JSON object being read field by field; what is not read, or not of the expected type,
/// stays behind for `extra`.
struct Obj {
    map: Map<String, Value>,
    extra: Map<String, Value>,
}

impl Obj {
    fn new(map: Map<String, Value>) -> Self {
        Self { map, extra: Map::new() }
    }

    /// Removes a field. JSON null counts as absent, as it does for the API server.
    fn take(&mut self, key: &str) -> Option<Value> {
        match self.map.remove(key)? {
            Value::Null => None,
            v => Some(v),
        }
    }

    fn keep(&mut self, key: &str, v: Value) {
        self.extra.insert(key.to_string(), v);
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            Value::String(s) => Some(s),
            other => {
                self.keep(key, other);
                None
            }
        }
    }

    fn long(&mut self, key: &str) -> Option<i64> {
        let v = self.take(key)?;
        match v.as_i64() {
            Some(n) => Some(n),
            None => {
                self.keep(key, v);
                None
            }
        }
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        let v = self.take(key)?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.keep(key, v);
                None
            }
        }
    }

    fn time(&mut self, key: &str) -> Option<i64> {
        let v = self.take(key)?;
        match v.as_str().and_then(parse_micros) {
            Some(t) => Some(t),
            None => {
                self.keep(key, v);
                None
            }
        }
    }

    fn object<T>(&mut self, key: &str, read: impl FnOnce(&mut Obj) -> T) -> Option<T> {
        match self.take(key)? {
            Value::Object(m) => {
                let mut inner = Obj::new(m);
                let t = read(&mut inner);
                if let Some(left) = inner.leftover() {
                    self.keep(key, left);
                }
                Some(t)
            }
            other => {
                self.keep(key, other);
                None
            }
        }
    }

    fn string_map(&mut self, key: &str) -> Option<BTreeMap<String, String>> {
        let v = self.take(key)?;
        match serde_json::from_value::<BTreeMap<String, String>>(v.clone()) {
            Ok(m) => Some(m),
            Err(_) => {
                self.keep(key, v);
                None
            }
        }
    }

    fn string_array(&mut self, key: &str) -> Option<Vec<String>> {
        let v = self.take(key)?;
        match serde_json::from_value::<Vec<String>>(v.clone()) {
            Ok(a) => Some(a),
            Err(_) => {
                self.keep(key, v);
                None
            }
        }
    }

    /// An array of objects. If any element holds something the reader leaves behind, the whole
    /// original array goes to `extra` (it replaces the typed one when written back).
    fn array<T>(&mut self, key: &str, read: impl Fn(&mut Obj) -> T) -> Option<Vec<T>> {
        let v = self.take(key)?;
        let Value::Array(items) = &v else {
            self.keep(key, v);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut lossy = false;
        for item in items {
            match item {
                Value::Object(m) => {
                    let mut inner = Obj::new(m.clone());
                    out.push(read(&mut inner));
                    lossy |= inner.leftover().is_some();
                }
                _ => lossy = true,
            }
        }
        if lossy {
            self.keep(key, v);
        }
        Some(out)
    }

    fn leftover(self) -> Option<Value> {
        let mut left = self.map;
        left.extend(self.extra);
        (!left.is_empty()).then_some(Value::Object(left))
    }

    fn finish(self) -> Option<String> {
        self.leftover().map(|v| v.to_string())
    }
}

/// A JSON object being written; `None` fields are left out, as the API server omits them.
#[derive(Default)]
struct Out(Map<String, Value>);

impl Out {
    fn put(&mut self, key: &str, v: Option<Value>) {
        if let Some(v) = v {
            self.0.insert(key.to_string(), v);
        }
    }
    fn string(&mut self, key: &str, v: &Option<String>) {
        self.put(key, v.clone().map(Value::String));
    }
    fn long(&mut self, key: &str, v: Option<i64>) {
        self.put(key, v.map(Value::from));
    }
    fn time(&mut self, key: &str, v: Option<i64>) {
        self.put(key, v.map(|t| Value::String(format_micros(t))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_quirks_and_unknown_fields() {
        let original = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "n.1", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                         "creationTimestamp": "2022-03-08T00:12:20Z", "futureMeta": {"a": 1}},
            "eventTime": "null", "deprecatedCount": 34075,
            "deprecatedSource": {"component": "kubelet", "host": "node2", "zone": "z1"},
            "regarding": {"kind": "Node", "name": "node2", "uid": "node2"},
            "note": "Node node2 status is now: NodeHasSufficientMemory",
            "someNewField": [1, 2]
        });
        let parsed = EventObject::from_json(original.clone()).unwrap();
        let EventObject::V1(ref e) = parsed else { panic!("wrong shape") };
        assert_eq!(e.event_time, None);
        assert_eq!(e.deprecated_count, Some(34075));
        let extra: Value = serde_json::from_str(e.extra.as_deref().unwrap()).unwrap();
        assert_eq!(extra["eventTime"], "null");
        assert_eq!(extra["deprecatedSource"]["zone"], "z1");
        assert_eq!(extra["metadata"]["futureMeta"]["a"], 1);
        assert_eq!(parsed.to_json(), original);
    }

    #[test]
    fn refuses_objects_that_are_not_usable_events() {
        assert_eq!(EventObject::from_json(json!([1])), Err(ParseError::NotAnObject));
        assert_eq!(
            EventObject::from_json(json!({"kind": "Pod", "metadata": {}})),
            Err(ParseError::NotAnEvent("Pod".into()))
        );
        assert!(matches!(
            EventObject::from_json(json!({"kind": "Event", "metadata": {"name": "x", "uid": "u"}})),
            Err(ParseError::MissingField { field: "resourceVersion", .. })
        ));
        assert_eq!(EventObject::from_json(json!({"kind": "Event"})), Err(ParseError::MissingMetadata));
    }

    #[test]
    fn detects_the_shape_without_api_version() {
        let v1 = json!({"metadata": {"name": "a", "uid": "u", "resourceVersion": "1"}, "note": "x"});
        assert_eq!(EventObject::from_json(v1).unwrap().shape(), EVENTS_V1);
        let core = json!({"metadata": {"name": "a", "uid": "u", "resourceVersion": "1"}, "message": "x"});
        assert_eq!(EventObject::from_json(core).unwrap().shape(), CORE_V1);
    }
}
