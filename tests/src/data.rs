//! The real events of `tests/data/k8s-events`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use serde_json::Value;

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/k8s-events")
}

/// Events kev's own tests saw real components emit on the real node (`tests/data/kev-node`),
/// kept apart from the public dumps so that the figures measured on those stay comparable.
pub fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/kev-node")
}

/// Every object of the files of `dir` (gzipped JSONL), files in name order.
pub fn objects_in(dir: &std::path::Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| read_gz_lines(f)).collect()
}

fn read_gz_lines(path: &std::path::Path) -> Vec<Value> {
    let f = std::fs::File::open(path).unwrap();
    BufReader::new(flate2::read::GzDecoder::new(f))
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

/// With `NODE_EVENTS_CAPTURE_DIR` set, writes `events` (as the apiserver returned them) to
/// `<dir>/<name>.jsonl.gz`, each with `_source` saying where it came from: how the real node's
/// events join `tests/data/kev-node` (its README says which command made each file). Without
/// the variable it writes nothing. (Not a `KEV_` name: the kev binaries the tests start inherit
/// the environment, and every `KEV_` variable is a setting to them.)
pub fn capture(name: &str, test: &str, events: &[Value]) {
    use std::io::Write;
    let Ok(dir) = std::env::var("NODE_EVENTS_CAPTURE_DIR") else { return };
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let path = PathBuf::from(dir).join(format!("{name}.jsonl.gz"));
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::best());
    for (i, e) in events.iter().enumerate() {
        let mut e = e.clone();
        e["_source"] = serde_json::json!({
            "repo": "kev",
            "path": test,
            "commit": commit,
            "license": "Apache-2.0",
            "locator": format!("{name}/{i}"),
            "shape": "events.k8s.io/v1",
            "cluster": "kubelet, kube-scheduler, kube-controller-manager, kube-proxy v1.35.8; containerd 1.6.20",
        });
        writeln!(gz, "{e}").unwrap();
    }
    gz.finish().unwrap();
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
    read_gz_lines(&dir().join(file))
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
