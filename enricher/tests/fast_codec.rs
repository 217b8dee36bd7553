//! The enricher's own Avro paths against the generic ones, over the real dumps: every output is
//! written by the records' own writers (`kev_schemas::binary`) byte for byte as the generic
//! writer writes it, and every raw record is read by the lean reader (`kev_schemas::lean`) as
//! the generic reader reads it, less the Kubernetes objects.

use apache_avro::reader::datum::GenericDatumReader;
use kev_engine::rules::RuleSet;
use kev_engine::{Engine, EngineConfig, Output};
use kev_schemas::codec::{decode_body, encode_body};
use kev_schemas::lean::decode_raw_lean;
use kev_schemas::schema::{AGGREGATE_SCHEMA, ENRICHED_EVENT_SCHEMA, INCIDENT_SCHEMA, RAW_SCHEMA};
use kev_schemas::{AvroWrite, Heartbeat, RawRecord};
use proptest::prelude::*;

fn same<T: serde::Serialize + AvroWrite>(schema: &apache_avro::Schema, item: &T) -> bool {
    let mut ours = Vec::new();
    item.write_avro(&mut ours);
    ours == encode_body(schema, item).unwrap()
}

#[test]
fn every_output_of_the_real_dumps_is_written_as_the_generic_writer_writes_it() {
    let mut engine = Engine::new(EngineConfig::default(), RuleSet::defaults());
    let mut out = Vec::new();
    for (i, (cluster, o)) in kev_tests::data::observations().into_iter().enumerate() {
        engine.on_event(&cluster, o, 1, i as i64, &mut out);
    }
    engine.flush(&mut out);
    let mut counts = [0usize; 3];
    for o in &out {
        let ok = match o {
            Output::Enriched(e) => (counts[0] += 1, same(&ENRICHED_EVENT_SCHEMA, e)).1,
            Output::Aggregate(a) => (counts[1] += 1, same(&AGGREGATE_SCHEMA, a)).1,
            Output::Incident(i) => (counts[2] += 1, same(&INCIDENT_SCHEMA, i)).1,
        };
        assert!(ok, "written differently: {o:?}");
    }
    assert!(counts.iter().all(|&n| n > 0), "every kind of output is covered: {counts:?}");
    println!("{} enriched events, {} aggregates, {} incidents written the same", counts[0], counts[1], counts[2]);
}

/// The raw records of the real dumps (each with its whole Kubernetes object) and heartbeats,
/// encoded with the raw schema.
fn raw_bodies() -> Vec<(RawRecord, Vec<u8>)> {
    let mut records: Vec<RawRecord> =
        kev_tests::data::observations().into_iter().map(|(c, o)| RawRecord::event(c, o)).collect();
    records.push(RawRecord::heartbeat(
        "c",
        Heartbeat {
            producer_time: 1,
            event_time_high: Some(-5),
            resource_version: Some("42".into()),
            source: "watch".into(),
            producer_id: "p-0".into(),
            recovery_offset: None,
        },
    ));
    records.into_iter().map(|r| (r.clone(), encode_body(&RAW_SCHEMA, &r).unwrap())).collect()
}

#[test]
fn every_raw_record_of_the_real_dumps_is_read_as_the_generic_reader_reads_it_less_the_objects() {
    let (mut with_core, mut with_v1) = (0, 0);
    for (record, body) in raw_bodies() {
        let mut expected: RawRecord = decode_body(&RAW_SCHEMA, &RAW_SCHEMA, &body).unwrap();
        assert_eq!(expected, record);
        if let Some(e) = expected.event.as_mut() {
            with_core += usize::from(e.core.take().is_some());
            with_v1 += usize::from(e.events_v1.take().is_some());
        }
        assert_eq!(decode_raw_lean(&body).unwrap(), expected);
    }
    // Both object shapes were stepped over, not only absent.
    assert!(with_core > 13_000 && with_v1 > 0, "core {with_core}, events.k8s.io/v1 {with_v1}");
}

#[test]
fn a_truncated_raw_record_is_an_error_as_with_the_generic_reader() {
    let bodies = raw_bodies();
    let reader = GenericDatumReader::builder(&RAW_SCHEMA).build().unwrap();
    for (_, body) in bodies.iter().step_by(997) {
        for cut in 0..body.len() {
            let short = &body[..cut];
            assert!(decode_raw_lean(short).is_err(), "a body cut at {cut} of {} was read", body.len());
            let mut cursor = short;
            assert!(reader.read_deser::<RawRecord>(&mut cursor).is_err());
        }
        let mut long = body.clone();
        long.push(0);
        assert!(decode_raw_lean(&long).is_err(), "a byte after the record is an error");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Corrupt bytes never panic: they read as some record or are an error, and whatever reads
    /// reads as the generic reader reads it.
    #[test]
    fn corrupt_raw_records_never_panic_and_agree_with_the_generic_reader(
        which in 0usize..13_801,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        static BODIES: std::sync::LazyLock<Vec<(RawRecord, Vec<u8>)>> = std::sync::LazyLock::new(raw_bodies);
        let mut body = BODIES[which % BODIES.len()].1.clone();
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] = byte;
        }
        if let Ok(lean) = decode_raw_lean(&body) {
            if let Ok(mut generic) = decode_body::<RawRecord>(&RAW_SCHEMA, &RAW_SCHEMA, &body) {
                if let Some(e) = generic.event.as_mut() {
                    (e.core, e.events_v1) = (None, None);
                }
                prop_assert_eq!(lean, generic);
            }
        }
    }
}
