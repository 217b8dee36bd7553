//! What the engine's tests over real events share.

use std::collections::BTreeMap;

use kev_engine::review;
use kev_engine::{Engine, Output};
use kev_schemas::{EventObservation, Incident};

/// The incidents `engine` opens over `input`: the last record of each incident id, without those
/// merged into another.
pub fn incidents_of(engine: &mut Engine, input: &[(String, EventObservation)]) -> BTreeMap<String, Incident> {
    let mut out = Vec::new();
    for (i, (cluster, o)) in input.iter().enumerate() {
        engine.on_event(cluster, o.clone(), 0, i as i64, &mut out);
    }
    let records: Vec<Incident> = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Incident(i) => Some(i),
            _ => None,
        })
        .collect();
    review::standing(&records).into_iter().map(|i| (i.incident_id.clone(), i.clone())).collect()
}
