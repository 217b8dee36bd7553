//! Offline dumps: `kubectl get events -o json|yaml` (a `List` or `EventList`), JSON Lines (one
//! object a line, as a recorded watch or the bundled samples), a must-gather `events.yaml`
//! (YAML, possibly several documents), each optionally gzipped.

use std::io::Read;
use std::path::Path;

use kev_schemas::EventObject;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: neither JSON, JSON Lines nor YAML: {reason}")]
    Format { path: String, reason: String },
}

/// The objects of a dump, and the lines that could not be read (with their line numbers), which
/// the caller reports instead of dropping silently.
#[derive(Debug, Default)]
pub struct Dump {
    pub objects: Vec<Value>,
    pub unreadable: Vec<(usize, String)>,
}

pub fn read(path: &Path) -> Result<Dump, DumpError> {
    let io = |source| DumpError::Io { path: path.display().to_string(), source };
    let mut bytes = std::fs::read(path).map_err(io)?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut out).map_err(io)?;
        bytes = out;
    }
    let text = String::from_utf8_lossy(&bytes);
    parse(&text).map_err(|reason| DumpError::Format { path: path.display().to_string(), reason })
}

/// Parses dump text of any supported format.
pub fn parse(text: &str) -> Result<Dump, String> {
    let trimmed = text.trim_start();
    let mut dump = Dump::default();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Value>(trimmed) {
            flatten(v, &mut dump.objects);
            return Ok(dump);
        }
        // JSON Lines: one object a line; a bad line is reported, the rest still replays.
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(line) {
                Ok(v) => flatten(v, &mut dump.objects),
                Err(e) => dump.unreadable.push((i + 1, e.to_string())),
            }
        }
        return Ok(dump);
    }
    for doc in serde_norway::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| e.to_string())?;
        flatten(v, &mut dump.objects);
    }
    Ok(dump)
}

/// Lists (`kind: List` / `EventList`, or a bare array) become their items.
fn flatten(v: Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.into_iter().for_each(|i| flatten(i, out)),
        Value::Object(mut m) if m.get("items").is_some_and(Value::is_array) => {
            if let Some(Value::Array(items)) = m.remove("items") {
                items.into_iter().for_each(|i| flatten(i, out));
            }
        }
        Value::Null => {}
        other => out.push(other),
    }
}

/// Sorts objects into replay order: event time, then resourceVersion, then uid. Objects that do
/// not read as Events sort first; the pipeline reports them.
pub fn sort_by_event_time(objects: &mut Vec<Value>) {
    let key = |v: &Value| -> (i64, u64, String) {
        match EventObject::from_json(v.clone()) {
            Ok(o) => (
                kev_schemas::normalize::normalize(&o).event_time,
                o.resource_version().parse().unwrap_or(0),
                o.uid().to_string(),
            ),
            Err(_) => (i64::MIN, 0, String::new()),
        }
    };
    // The objects move into the keyed list and back: a copy of each was a third of the sort.
    let mut keyed: Vec<_> = std::mem::take(objects).into_iter().map(|v| (key(&v), v)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    objects.extend(keyed.into_iter().map(|(_, v)| v));
}

/// Event time of an object in microseconds, if it reads as an Event.
pub fn event_time(v: &Value) -> Option<i64> {
    EventObject::from_json(v.clone()).ok().map(|o| kev_schemas::normalize::normalize(&o).event_time)
}

/// Where the bundled real events live in a clone of the repository.
pub const BUNDLED_DIR: &str = "tests/data/k8s-events";

/// The bundled dumps (`*.jsonl.gz` in [`BUNDLED_DIR`], relative to the working directory),
/// sorted by name: what the embedded first runs replay when given no files.
pub fn bundled_files() -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(BUNDLED_DIR)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"a.1","namespace":"ns","uid":"u1","resourceVersion":"5"},"reason":"Pulled","lastTimestamp":"2022-01-01T00:00:02Z"}"#;
    const EARLIER: &str = r#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"a.2","namespace":"ns","uid":"u2","resourceVersion":"4"},"reason":"Scheduled","lastTimestamp":"2022-01-01T00:00:01Z"}"#;

    #[test]
    fn reads_kubectl_list_json() {
        let list = format!(r#"{{"apiVersion":"v1","kind":"List","items":[{EVENT},{EARLIER}]}}"#);
        assert_eq!(parse(&list).unwrap().objects.len(), 2);
    }

    #[test]
    fn reads_json_lines_and_reports_bad_lines() {
        let text = format!("{EVENT}\nnot json\n{EARLIER}\n");
        let d = parse(&text).unwrap();
        assert_eq!(d.objects.len(), 2);
        assert_eq!(d.unreadable.len(), 1);
        assert_eq!(d.unreadable[0].0, 2);
    }

    #[test]
    fn reads_must_gather_yaml() {
        let yaml = "apiVersion: v1\nkind: EventList\nitems:\n- apiVersion: v1\n  kind: Event\n  metadata:\n    name: a.1\n    namespace: ns\n    uid: u1\n    resourceVersion: \"5\"\n  reason: Pulled\n---\napiVersion: v1\nkind: Event\nmetadata:\n  name: b\n  uid: u3\n  resourceVersion: \"6\"\n";
        let d = parse(yaml).unwrap();
        assert_eq!(d.objects.len(), 2);
        assert_eq!(d.objects[0]["metadata"]["resourceVersion"], "5");
    }

    #[test]
    fn sorts_in_event_time_order() {
        let mut objs: Vec<Value> = [EVENT, EARLIER].iter().map(|s| serde_json::from_str(s).unwrap()).collect();
        sort_by_event_time(&mut objs);
        assert_eq!(objs[0]["metadata"]["uid"], "u2");
    }
}
