//! The normalised view: one model for both Event shapes.
//!
//! Pure functions of the object, so that the producer and a replay of the same object agree.

use crate::k8s::EventObject;
use crate::raw::{NormalizedEvent, ObjectReference, ResourceRef};

/// Builds the normalised view of an Event object of either shape.
pub fn normalize(obj: &EventObject) -> NormalizedEvent {
    match obj {
        EventObject::Core(e) => {
            let series_time = e.series.as_ref().and_then(|s| s.last_observed_time);
            NormalizedEvent {
                event_time: newest(&[
                    series_time,
                    e.last_timestamp,
                    e.event_time,
                    e.first_timestamp,
                    e.metadata.creation_timestamp,
                ]),
                first_time: e.first_timestamp.or(e.event_time).or(e.metadata.creation_timestamp),
                type_: non_empty(&e.type_),
                reason: non_empty(&e.reason),
                note: non_empty(&e.message),
                action: non_empty(&e.action),
                regarding: e.involved_object.as_ref().map(resource_ref),
                related: e.related.as_ref().map(resource_ref),
                reporting_controller: non_empty(&e.reporting_component)
                    .or_else(|| e.source.as_ref().and_then(|s| non_empty(&s.component))),
                reporting_instance: non_empty(&e.reporting_instance)
                    .or_else(|| e.source.as_ref().and_then(|s| non_empty(&s.host))),
                host: e.source.as_ref().and_then(|s| non_empty(&s.host)),
                count: occurrences(e.series.as_ref().and_then(|s| s.count).or(e.count)),
            }
        }
        EventObject::V1(e) => {
            let series_time = e.series.as_ref().and_then(|s| s.last_observed_time);
            let source = e.deprecated_source.as_ref();
            NormalizedEvent {
                event_time: newest(&[
                    series_time,
                    e.deprecated_last_timestamp,
                    e.event_time,
                    e.deprecated_first_timestamp,
                    e.metadata.creation_timestamp,
                ]),
                first_time: e.deprecated_first_timestamp.or(e.event_time).or(e.metadata.creation_timestamp),
                type_: non_empty(&e.type_),
                reason: non_empty(&e.reason),
                note: non_empty(&e.note),
                action: non_empty(&e.action),
                regarding: e.regarding.as_ref().map(resource_ref),
                related: e.related.as_ref().map(resource_ref),
                reporting_controller: non_empty(&e.reporting_controller)
                    .or_else(|| source.and_then(|s| non_empty(&s.component))),
                reporting_instance: non_empty(&e.reporting_instance)
                    .or_else(|| source.and_then(|s| non_empty(&s.host))),
                host: source.and_then(|s| non_empty(&s.host)),
                count: occurrences(e.series.as_ref().and_then(|s| s.count).or(e.deprecated_count)),
            }
        }
    }
}

/// The newest of the timestamps that are set; 0 (the epoch) when none is, which the API server
/// never allows (creationTimestamp is always set) but a hand-made dump might.
fn newest(times: &[Option<i64>]) -> i64 {
    times.iter().flatten().copied().max().unwrap_or(0)
}

/// An event that exists has happened at least once, whatever its count field says.
fn occurrences(count: Option<i64>) -> i64 {
    count.unwrap_or(1).max(1)
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_ref().filter(|s| !s.is_empty()).cloned()
}

fn resource_ref(r: &ObjectReference) -> ResourceRef {
    ResourceRef {
        kind: non_empty(&r.kind),
        namespace: non_empty(&r.namespace),
        name: non_empty(&r.name),
        uid: non_empty(&r.uid),
        api_version: non_empty(&r.api_version),
        field_path: non_empty(&r.field_path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_micros;
    use serde_json::json;

    fn ts(s: &str) -> i64 {
        parse_micros(s).unwrap()
    }

    #[test]
    fn core_event_uses_last_timestamp_and_source() {
        let obj = EventObject::from_json(json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "p.1", "namespace": "ns", "uid": "u", "resourceVersion": "1",
                         "creationTimestamp": "2022-04-12T00:36:00Z"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "ns"},
            "reason": "BackOff", "message": "Back-off restarting failed container",
            "count": 7, "firstTimestamp": "2022-04-12T00:36:06Z", "lastTimestamp": "2022-04-12T00:40:00Z",
            "source": {"component": "kubelet", "host": "node-1"}, "reportingComponent": "", "type": "Warning"
        }))
        .unwrap();
        let n = normalize(&obj);
        assert_eq!(n.event_time, ts("2022-04-12T00:40:00Z"));
        assert_eq!(n.first_time, Some(ts("2022-04-12T00:36:06Z")));
        assert_eq!(n.count, 7);
        assert_eq!(n.reporting_controller.as_deref(), Some("kubelet"));
        assert_eq!(n.host.as_deref(), Some("node-1"));
        assert_eq!(n.regarding.unwrap().name.as_deref(), Some("p"));
    }

    #[test]
    fn v1_event_uses_series_and_deprecated_fields() {
        let obj = EventObject::from_json(json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "n.1", "namespace": "default", "uid": "u", "resourceVersion": "2",
                         "creationTimestamp": "2022-03-08T00:12:20Z"},
            "eventTime": "2022-03-08T00:12:20.000100Z",
            "series": {"count": 12, "lastObservedTime": "2022-03-22T23:46:53.000001Z"},
            "deprecatedSource": {"component": "kubelet", "host": "node2"},
            "regarding": {"kind": "Node", "name": "node2"}, "note": "x", "reportingController": "kubelet"
        }))
        .unwrap();
        let n = normalize(&obj);
        assert_eq!(n.event_time, ts("2022-03-22T23:46:53.000001Z"));
        assert_eq!(n.count, 12);
        assert_eq!(n.reporting_instance.as_deref(), Some("node2"));
        assert_eq!(n.note.as_deref(), Some("x"));
    }
}
