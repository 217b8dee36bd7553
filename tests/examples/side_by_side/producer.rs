//! The producer beside a produce-only writer: `kev-producer replay` of a scaled dump (one
//! cluster, as one producer serves one cluster), then a plain rdkafka writer of the very records
//! it published, with the same Kafka settings.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use kev_common::kafka::{ensure_topic, KafkaSettings};
use kev_tests::bench::{children_cpu_seconds, cpu_seconds, read_all};
use serde_json::{json, Value};

use crate::{load, Rec, KEEP};

/// Moves an RFC 3339 time field of `v` at `path` by `hours`, keeping its precision.
fn shift(v: &mut Value, path: &[&str], hours: i64) {
    let Some(field) = path.iter().try_fold(&mut *v, |v, k| v.get_mut(*k)) else { return };
    let Some(t) = field.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()) else { return };
    let moved = t.with_timezone(&Utc) + chrono::Duration::hours(hours);
    *field = Value::String(moved.to_rfc3339_opts(SecondsFormat::AutoSi, true));
}

/// Appends `suffix` to the string at `path` of `v`, if there is one.
fn rename(v: &mut Value, path: &[&str], suffix: &str) {
    if let Some(Value::String(s)) = path.iter().try_fold(&mut *v, |v, k| v.get_mut(*k)) {
        s.push_str(suffix);
    }
}

/// The shared dumps' Event objects copied until there are `events`, as JSON Lines: copy `k`
/// has its uid and names suffixed and its times moved `k` hours on, as `kev_tests::scale` does
/// to observations, so that every copy is a new Event a live cluster could have had.
pub fn scaled_dump(dir: &Path, events: usize) -> (PathBuf, usize) {
    let base = kev_tests::data::all_objects();
    let path = dir.join("scaled-dump.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut written = 0;
    'copies: for k in 0.. {
        for o in &base {
            if written == events {
                break 'copies;
            }
            let mut o = o.clone();
            let suffix = format!("-c{k}");
            for p in
                [&["metadata", "uid"][..], &["metadata", "name"], &["involvedObject", "name"], &["regarding", "name"]]
            {
                rename(&mut o, p, &suffix);
            }
            for p in [
                &["metadata", "creationTimestamp"][..],
                &["firstTimestamp"],
                &["lastTimestamp"],
                &["eventTime"],
                &["deprecatedFirstTimestamp"],
                &["deprecatedLastTimestamp"],
                &["series", "lastObservedTime"],
            ] {
                shift(&mut o, p, k as i64);
            }
            serde_json::to_writer(&mut out, &o).unwrap();
            out.write_all(b"\n").unwrap();
            written += 1;
        }
    }
    out.flush().unwrap();
    (path, written)
}

/// `kev-producer replay` of `dump` into `topic` (created first, kept forever: the records carry
/// the dumps' event times), then the writer: the records read back from `topic`, written to a
/// topic of their own with the producer's Kafka settings.
pub async fn run(
    binary: &Path,
    settings: &KafkaSettings,
    registry: &str,
    dump: &Path,
    events: usize,
    log: &Path,
) -> Value {
    let topic = "kev.bench.producer.raw";
    ensure_topic(settings, topic, 3, 1, KEEP).await.unwrap();
    let cpu = children_cpu_seconds();
    let started = Instant::now();
    let status = crate::processes::without_kev_env(&mut Command::new(binary))
        .args(["--set", &format!("kafka.bootstrap_servers={}", settings.bootstrap_servers)])
        .args(["--set", &format!("registry.url={registry}")])
        .args(["--set", "http.listen=127.0.0.1:0"])
        .args(["--set", "cluster_id=cluster-p"])
        .args(["--set", &format!("topic.name={topic}")])
        .arg("replay")
        .arg(dump)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .status();
    let secs = started.elapsed().as_secs_f64();
    let cpu = children_cpu_seconds() - cpu;
    let said = std::fs::read_to_string(log).unwrap_or_default();
    let done = said.lines().find(|l| l.starts_with("replay done:")).unwrap_or("").to_string();
    let ok = status.as_ref().is_ok_and(|s| s.success());
    // The records as the producer wrote them, then written again by the plain writer.
    let mut records = Vec::new();
    let now = Utc::now().timestamp_millis();
    let (read, _) = read_all(settings, topic, "kev-bench-producer-read", |_, v| {
        records.push(Rec { cluster: 0, time_ms: now, value: v.to_vec() })
    });
    let copy = "kev.bench.producer.writer";
    ensure_topic(settings, copy, 3, 1, KEEP).await.unwrap();
    let names = vec!["cluster-p".to_string()];
    let wcpu = cpu_seconds();
    let (acked, failed, wsecs) = load(settings, copy, 3, 10_000, &names, &records);
    let wcpu = cpu_seconds() - wcpu;
    json!({
        "events": events, "exit_ok": ok, "summary": done, "seconds": secs, "cpu_seconds": cpu,
        "records_published": read, "rate": read as f64 / secs, "events_rate": events as f64 / secs,
        "writer": {"records": acked, "failed": failed, "seconds": wsecs, "cpu_seconds": wcpu, "rate": acked as f64 / wsecs},
    })
}
