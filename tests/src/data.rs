//! The real events of `tests/data/k8s-events`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use serde_json::Value;

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/k8s-events")
}

/// The dump files, sorted by name.
pub fn files() -> Vec<PathBuf> {
    let mut f: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
        .collect();
    f.sort();
    f
}

/// Every object of one dump file.
pub fn objects(file: &str) -> Vec<Value> {
    let f = std::fs::File::open(dir().join(file)).unwrap();
    BufReader::new(flate2::read::GzDecoder::new(f))
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

/// Every object of every dump file.
pub fn all_objects() -> Vec<Value> {
    files().iter().flat_map(|f| objects(&f.file_name().unwrap().to_string_lossy())).collect()
}

/// Every real event as an observation (ADDED, all its occurrences new), with the dump's name as
/// its cluster id, sorted by event time within each dump, dumps in name order.
pub fn observations() -> Vec<(String, kev_schemas::EventObservation)> {
    let mut out = Vec::new();
    for f in files() {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let cluster = name.trim_end_matches(".jsonl.gz").to_string();
        let mut obs: Vec<kev_schemas::EventObservation> = objects(&name)
            .into_iter()
            .map(|v| {
                let obj = kev_schemas::EventObject::from_json(v).unwrap();
                let count = kev_schemas::normalize::normalize(&obj).count;
                kev_schemas::EventObservation::new(obj, kev_schemas::WatchVerb::Added, count, 0)
            })
            .collect();
        obs.sort_by_key(|o| (o.normalized.event_time, o.uid.clone()));
        out.extend(obs.into_iter().map(|o| (cluster.clone(), o)));
    }
    out
}
