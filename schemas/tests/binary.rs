//! The hand-written Avro writers of the output records (`kev_schemas::binary`) hold to the
//! generic writer: for arbitrary records the bytes are the same, and they decode back to the
//! record. A field added to a schema but not to its writer fails here.

use apache_avro::Schema;
use kev_schemas::codec::{decode_body, encode_body};
use kev_schemas::schema::{AGGREGATE_SCHEMA, DEAD_LETTER_SCHEMA, ENRICHED_EVENT_SCHEMA, INCIDENT_SCHEMA};
use kev_schemas::{Aggregate, AvroWrite, DeadLetter, EnrichedEvent, Incident, IncidentStatus, ResourceRef, Severity};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Same bytes as the generic writer, and the record back when decoded.
fn same_as_generic<T: Serialize + DeserializeOwned + AvroWrite + PartialEq + std::fmt::Debug>(
    schema: &Schema,
    item: &T,
) {
    let generic = encode_body(schema, item).unwrap();
    let mut ours = Vec::new();
    item.write_avro(&mut ours);
    assert_eq!(ours, generic, "{item:?}");
    let back: T = decode_body(schema, schema, &ours).unwrap();
    assert_eq!(&back, item);
}

/// Text with multi-byte characters and lengths past one varint byte (64 and up).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z0-9/-]{1,12}", "\\PC{0,200}"]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

/// Values around the varint and zig-zag boundaries as well as anywhere.
fn long() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(-1),
        Just(63),
        Just(64),
        Just(-64),
        Just(-65),
        Just(i64::MAX),
        Just(i64::MIN),
        any::<i64>()
    ]
}

fn severity() -> impl Strategy<Value = Severity> {
    prop_oneof![
        Just(Severity::Info),
        Just(Severity::Warning),
        Just(Severity::Error),
        Just(Severity::Critical),
        Just(Severity::Unknown)
    ]
}

fn resource_ref() -> impl Strategy<Value = ResourceRef> {
    (opt_text(), opt_text(), opt_text(), opt_text(), opt_text(), opt_text()).prop_map(
        |(kind, namespace, name, uid, api_version, field_path)| ResourceRef {
            kind,
            namespace,
            name,
            uid,
            api_version,
            field_path,
        },
    )
}

fn enriched() -> impl Strategy<Value = EnrichedEvent> {
    (
        (text(), text(), text(), long(), opt_text(), proptest::option::of(resource_ref()), opt_text()),
        (opt_text(), opt_text(), opt_text(), opt_text(), long(), long(), severity()),
        (text(), text(), text(), long(), any::<i32>()),
    )
        .prop_map(|(a, b, c)| EnrichedEvent {
            cluster: a.0,
            uid: a.1,
            resource_version: a.2,
            event_time: a.3,
            namespace: a.4,
            regarding: a.5,
            type_: a.6,
            reason: b.0,
            note: b.1,
            reporting_controller: b.2,
            host: b.3,
            count: b.4,
            new_occurrences: b.5,
            severity: b.6,
            category: c.0,
            fingerprint: c.1,
            template: c.2,
            raw_offset: c.3,
            raw_partition: c.4,
        })
}

fn aggregate() -> impl Strategy<Value = Aggregate> {
    (
        (text(), text(), long(), long(), opt_text(), opt_text(), opt_text(), text(), text()),
        (severity(), long(), long(), long(), long(), proptest::collection::vec(text(), 0..70), opt_text()),
        (any::<bool>(), long()),
    )
        .prop_map(|(a, b, c)| Aggregate {
            cluster: a.0,
            fingerprint: a.1,
            window_start: a.2,
            window_end: a.3,
            namespace: a.4,
            kind: a.5,
            reason: a.6,
            template: a.7,
            category: a.8,
            severity: b.0,
            count: b.1,
            distinct_objects: b.2,
            first_seen: b.3,
            last_seen: b.4,
            top_objects: b.5,
            sample_message: b.6,
            recurring: c.0,
            late_events: c.1,
        })
}

fn incident() -> impl Strategy<Value = Incident> {
    let status = prop_oneof![
        Just(IncidentStatus::Open),
        Just(IncidentStatus::Updated),
        Just(IncidentStatus::Resolved),
        Just(IncidentStatus::Unknown)
    ];
    (
        (
            text(),
            text(),
            text(),
            status,
            severity(),
            any::<f64>().prop_filter("NaN is not equal to itself", |f| !f.is_nan()),
        ),
        (text(), proptest::option::of(resource_ref()), opt_text(), proptest::collection::vec(resource_ref(), 0..5)),
        (proptest::collection::vec(text(), 0..70), long(), long(), proptest::option::of(long())),
        (opt_text(), proptest::option::of(proptest::collection::vec(text(), 0..4)), opt_text(), opt_text()),
        (proptest::option::of(long()), proptest::option::of(long()), proptest::option::of(long()), opt_text()),
    )
        .prop_map(|(a, b, c, d, e)| Incident {
            incident_id: a.0,
            cluster: a.1,
            rule: a.2,
            status: a.3,
            severity: a.4,
            confidence: a.5,
            summary: b.0,
            root_cause: b.1,
            root_reason: b.2,
            scope: b.3,
            member_uids: c.0,
            opened_at: c.1,
            updated_at: c.2,
            resolved_at: c.3,
            merged_into: d.0,
            contributing_rules: d.1,
            causal_chain: d.2,
            signature: d.3,
            previous_count: e.0,
            first_seen: e.1,
            last_seen: e.2,
            last_incident_id: e.3,
        })
}

fn dead_letter() -> impl Strategy<Value = DeadLetter> {
    let bytes = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300));
    (text(), any::<i32>(), long(), text(), text(), bytes.clone(), bytes, long()).prop_map(|t| DeadLetter {
        source_topic: t.0,
        source_partition: t.1,
        source_offset: t.2,
        error_kind: t.3,
        error: t.4,
        key: t.5,
        value: t.6,
        seen_at: t.7,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn enriched_events_are_written_as_the_generic_writer_does(e in enriched()) {
        same_as_generic(&ENRICHED_EVENT_SCHEMA, &e);
    }

    #[test]
    fn aggregates_are_written_as_the_generic_writer_does(a in aggregate()) {
        same_as_generic(&AGGREGATE_SCHEMA, &a);
    }

    #[test]
    fn incidents_are_written_as_the_generic_writer_does(i in incident()) {
        same_as_generic(&INCIDENT_SCHEMA, &i);
    }

    #[test]
    fn dead_letters_are_written_as_the_generic_writer_does(d in dead_letter()) {
        same_as_generic(&DEAD_LETTER_SCHEMA, &d);
    }
}
