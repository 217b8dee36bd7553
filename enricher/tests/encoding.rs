//! Every output the engine makes of the real dumps is written by the records' own Avro writers
//! (`kev_schemas::binary`) byte for byte as the generic writer writes it: the bytes the live
//! enricher sends after a schema's first record are the ones the converter would have sent.

use kev_engine::rules::RuleSet;
use kev_engine::{Engine, EngineConfig, Output};
use kev_schemas::codec::encode_body;
use kev_schemas::schema::{AGGREGATE_SCHEMA, ENRICHED_EVENT_SCHEMA, INCIDENT_SCHEMA};
use kev_schemas::AvroWrite;

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
