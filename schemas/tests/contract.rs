//! The raw contract against every real event in `tests/data/k8s-events`: each object survives
//! JSON -> typed record -> Avro -> typed record -> JSON field by field, and the schema evolves
//! compatibly in both directions.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use kev_schemas::codec::{decode_body, encode_body, split_wire_format, CodecError};
use kev_schemas::k8s::same_object;
use kev_schemas::schema::{RAW_RECORD, RAW_SCHEMA};
use kev_schemas::{EventObject, EventObservation, Heartbeat, RawRecord, WatchVerb};
use serde_json::Value;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/k8s-events")
}

fn real_events() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "gz") {
            let file = std::fs::File::open(&path).unwrap();
            for line in BufReader::new(flate2::read::GzDecoder::new(file)).lines() {
                let line = line.unwrap();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                out.push((name, serde_json::from_str(&line).unwrap()));
            }
        }
    }
    out
}

#[test]
fn every_real_event_round_trips_field_by_field() {
    let events = real_events();
    assert!(events.len() > 13_000, "expected the whole data set, got {}", events.len());
    let (mut core, mut v1) = (0, 0);
    for (file, source) in events {
        let obj = EventObject::from_json(source.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
        match obj.shape() {
            "v1" => core += 1,
            _ => v1 += 1,
        }
        let record = RawRecord::event("test", EventObservation::new(obj, WatchVerb::Added, 1, 1_700_000_000_000));
        let bytes = encode_body(&RAW_SCHEMA, &record).unwrap();
        let decoded: RawRecord = decode_body(&RAW_SCHEMA, &RAW_SCHEMA, &bytes).unwrap();
        assert_eq!(decoded, record, "{file}");
        let back = decoded.event.unwrap().object().unwrap().to_json();
        assert!(same_object(&back, &source), "{file}: {back}\n!=\n{source}");
    }
    println!("round-tripped {core} core/v1 and {v1} events.k8s.io/v1 events");
    assert!(core > 13_000 && v1 == 9, "core {core}, v1 {v1}");
}

/// The next version of the raw schema adds a documented field with a default and an enum symbol.
fn next_version() -> Schema {
    let mut json: Value = serde_json::from_str(RAW_RECORD).unwrap();
    let event = json["fields"].as_array_mut().unwrap().iter_mut().find(|f| f["name"] == "event").unwrap();
    let observation = &mut event["type"][1];
    observation["fields"].as_array_mut().unwrap().push(serde_json::json!({
        "name": "labels_digest", "type": ["null", "string"], "default": null, "doc": "added in v2"
    }));
    let verb = observation["fields"].as_array_mut().unwrap().iter_mut().find(|f| f["name"] == "verb").unwrap();
    verb["type"]["symbols"].as_array_mut().unwrap().push("BOOKMARKED".into());
    Schema::parse(&json).unwrap()
}

#[test]
fn raw_schema_evolves_both_ways() {
    let v2 = next_version();
    assert!(SchemaCompatibility::can_read(&RAW_SCHEMA, &v2).is_ok(), "v2 reads v1");
    assert!(SchemaCompatibility::can_read(&v2, &RAW_SCHEMA).is_ok(), "v1 reads v2");

    let (_, source) = real_events().into_iter().find(|(f, _)| f.starts_with("sbctl")).unwrap();
    let record = RawRecord::event(
        "c",
        EventObservation::new(EventObject::from_json(source).unwrap(), WatchVerb::Modified, 3, 5),
    );

    // Written by today's producer, read by tomorrow's reader: the new field takes its default.
    let old_bytes = encode_body(&RAW_SCHEMA, &record).unwrap();
    let value = apache_avro::reader::datum::GenericDatumReader::builder(&RAW_SCHEMA)
        .reader_schema(&v2)
        .build()
        .unwrap()
        .read_value(&mut &old_bytes[..])
        .unwrap();
    let json = serde_json::to_string(&apache_avro::from_value::<Value>(&value).unwrap()).unwrap();
    assert!(json.contains("\"labels_digest\":null"), "{json}");

    // Written by tomorrow's producer (new field set, new verb symbol), read by today's reader.
    let mut v2_value = apache_avro::to_value(&record).unwrap();
    if let apache_avro::types::Value::Record(fields) = &mut v2_value {
        let (_, event) = fields.iter_mut().find(|(n, _)| n == "event").unwrap();
        let event = match event {
            apache_avro::types::Value::Union(_, inner) => inner.as_mut(),
            other => other,
        };
        let apache_avro::types::Value::Record(ev) = event else { panic!("event is {event:?}") };
        {
            ev.push(("labels_digest".into(), apache_avro::types::Value::String("abc".into())));
            let (_, verb) = ev.iter_mut().find(|(n, _)| n == "verb").unwrap();
            *verb = apache_avro::types::Value::String("BOOKMARKED".into());
        }
    }
    let v2_value = v2_value.resolve(&v2).unwrap();
    let new_bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&v2)
        .build()
        .unwrap()
        .write_value_to_vec(v2_value)
        .unwrap();
    let read: RawRecord = decode_body(&v2, &RAW_SCHEMA, &new_bytes).unwrap();
    let mut expected = record.clone();
    expected.event.as_mut().unwrap().verb = WatchVerb::Unknown;
    assert_eq!(read, expected, "unknown symbols read as UNKNOWN, the rest unchanged");
}

#[test]
fn heartbeat_round_trips() {
    let hb = RawRecord::heartbeat(
        "c1",
        Heartbeat {
            producer_time: 1_700_000_000_123,
            event_time_high: Some(1_700_000_000_000_001),
            resource_version: Some("42".into()),
            source: "watch:events.k8s.io/v1".into(),
            producer_id: "kev-producer-0".into(),
            recovery_offset: Some(17),
        },
    );
    let bytes = encode_body(&RAW_SCHEMA, &hb).unwrap();
    assert_eq!(decode_body::<RawRecord>(&RAW_SCHEMA, &RAW_SCHEMA, &bytes).unwrap(), hb);
}

#[test]
fn wire_format_errors_say_what_is_wrong() {
    assert!(matches!(split_wire_format(b""), Err(CodecError::WireFormat(m)) if m.contains("empty")));
    assert!(
        matches!(split_wire_format(b"{\"a\":1}"), Err(CodecError::WireFormat(m)) if m.contains("magic byte is 0x7b"))
    );
    assert!(matches!(split_wire_format(&[0, 0, 1]), Err(CodecError::WireFormat(m)) if m.contains("too short")));
    assert_eq!(split_wire_format(&[0, 0, 0, 1, 2, 9]).unwrap(), (258, &[9u8][..]));
    let garbage = decode_body::<RawRecord>(&RAW_SCHEMA, &RAW_SCHEMA, &[0xff, 0xff, 0xff]);
    assert!(matches!(garbage, Err(CodecError::Schema(_))));
}

/// The incidents topic's schema grew optional fields (merging, causal chain, history): a reader
/// of today reads what kev wrote before them (BACKWARD, what the registry enforces), and takes
/// each new field's default. `data/incident-v1.avsc` is the schema as it was before.
#[test]
fn incident_schema_reads_records_of_its_first_version() {
    use kev_schemas::schema::INCIDENT_SCHEMA;
    use kev_schemas::Incident;
    let v1 = Schema::parse_str(include_str!("data/incident-v1.avsc")).unwrap();
    assert!(SchemaCompatibility::can_read(&v1, &INCIDENT_SCHEMA).is_ok(), "today's reader reads v1");
    let old = Incident {
        incident_id: "0123456789abcdef".into(),
        cluster: "c".into(),
        rule: "missing-secret-or-configmap".into(),
        summary: "Secret s is missing".into(),
        member_uids: vec!["u1".into(), "u2".into()],
        opened_at: 1,
        updated_at: 2,
        ..Incident::default()
    };
    let v1_value = apache_avro::to_value(&old).unwrap();
    let apache_avro::types::Value::Record(mut fields) = v1_value else { panic!("a record") };
    let known: Vec<String> = match &v1 {
        Schema::Record(r) => r.fields.iter().map(|f| f.name.clone()).collect(),
        other => panic!("{other:?}"),
    };
    fields.retain(|(name, _)| known.contains(name));
    let v1_value = apache_avro::types::Value::Record(fields).resolve(&v1).unwrap();
    let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&v1)
        .build()
        .unwrap()
        .write_value_to_vec(v1_value)
        .unwrap();
    let read: Incident = decode_body(&v1, &INCIDENT_SCHEMA, &bytes).unwrap();
    assert_eq!(read, old, "the new fields read as null");
}
