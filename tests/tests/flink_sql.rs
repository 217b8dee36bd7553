//! `deploy/flink/kev.sql` executed on Flink (PyPI `apache-flink`'s local mini-cluster, the Kafka
//! and avro-confluent SQL jars from Maven Central) over kev's outputs of the real dumps on Kafka
//! and a real registry, and its two results checked against what kev itself emitted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use kev_common::telemetry::Health;
use kev_enricher::records::Stream;
use kev_producer::run;
use kev_schemas::schema as s;
use kev_schemas::{Aggregate, EnrichedEvent, Incident, Severity};
use kev_tests::bench::enrich_all;
use kev_tests::broker::Broker;
use kev_tests::outputs::{enricher_config, read_topic};
use kev_tests::registry::Apicurio;
use kev_tests::{data, init_logs};
use regex::Regex;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// (cluster, workload namespace, workload, window start in ms): a row of the workload counts.
type WorkloadWindow = (String, String, String, i64);

/// Observations, occurrences, the distinct event uids and the ERROR/CRITICAL observations of a
/// workload window, summed over kev's enriched events.
#[derive(Default)]
struct WindowCounts(i64, i64, BTreeSet<String>, i64);

/// The prerequisites' cache (`KEV_CACHE_DIR`, default `~/.cache/kev`).
fn cache() -> PathBuf {
    kev_tests::cached("KEV_CACHE_DIR", "")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a Python script of `tests/python` with `python`, returning its JSON output.
fn python_json(python: &PathBuf, script: &str, args: &[String]) -> Value {
    assert!(python.is_file(), "no {} (run scripts/prerequisites.sh --for-tests)", python.display());
    let out = Command::new(python).arg(repo().join("tests/python").join(script)).args(args).output().unwrap();
    assert!(out.status.success(), "{script} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{script}: not JSON ({e})"))
}

/// The workload of a regarding object as the SQL's `kev_enriched_workload` view derives it,
/// with the engine's own rule for pods.
fn workload(e: &EnrichedEvent) -> (String, String) {
    let r = e.regarding.clone().unwrap_or_default();
    let ns = r.namespace.clone().or(e.namespace.clone()).unwrap_or_default();
    let name = r.name.clone();
    let replica_set = Regex::new("^(.+)-[bcdfghjklmnpqrstvwxz2456789]{6,10}$").unwrap();
    let w = match (r.kind.as_deref(), name.as_deref()) {
        (Some("Pod"), Some(n)) => {
            let owner = kev_engine::correlate::owner_of_pod(&format!("{ns}/{n}"));
            owner.split_once('/').map_or(owner.clone(), |(_, o)| o.to_string())
        }
        (Some("ReplicaSet"), Some(n)) => replica_set.captures(n).map_or(n.to_string(), |c| c[1].to_string()),
        (Some("Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob"), Some(n)) => n.to_string(),
        (Some(_), None) | (None, _) => {
            format!("{}/{}", r.kind.as_deref().unwrap_or("?"), name.as_deref().unwrap_or("?"))
        }
        (Some(k), Some(n)) => format!("{k}/{n}"),
    };
    (ns, w)
}

/// The real dumps through kev on Kafka and Apicurio, then every statement of
/// `deploy/flink/kev.sql` on Flink with bounded sources: per incident, the aggregates of its
/// member events' windows are the ones kev emitted for them; per workload and 5-minute window,
/// the counts equal those over kev's enriched events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flink_sql_runs_on_flink_and_agrees_with_what_kev_emitted() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let registry = Apicurio::start(&tmp.path().join("registry"));
    let cancel = CancellationToken::new();
    let mut cfg = kev_producer::config::ProducerConfig {
        kafka: broker.settings(),
        cluster_id: "flink".into(),
        ..Default::default()
    };
    cfg.registry.url = registry.url();
    cfg.topic.partitions = 3;
    cfg.http.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    run::replay(&cfg, data::files(), Health::new(), cancel.clone()).await.unwrap();
    // The SQL names the enricher's default topics.
    let ecfg = enricher_config(broker.settings(), &registry.url());
    assert_eq!(ecfg.topics.raw, cfg.topic.name);
    kev_enricher::topics::create(&ecfg.kafka, &ecfg.topics).await.unwrap();
    enrich_all(&ecfg, 1, &cancel).await;

    // What kev emitted, by its own reader.
    let codec = ecfg.registry.codec().unwrap();
    let mut enriched = Vec::new();
    for (_, _, r) in read_topic(&ecfg.kafka, &ecfg.topics.enriched) {
        enriched.push(codec.decode::<EnrichedEvent>(&r.value, &s::ENRICHED_EVENT_SCHEMA).await.unwrap());
    }
    let mut aggregates = BTreeMap::new(); // latest per (cluster, fingerprint, window_start)
    for (_, _, r) in read_topic(&ecfg.kafka, Stream::Aggregates.topic(&ecfg.topics)) {
        let a = codec.decode::<Aggregate>(&r.value, &s::AGGREGATE_SCHEMA).await.unwrap();
        aggregates.insert((a.cluster.clone(), a.fingerprint.clone(), a.window_start), a);
    }
    let mut incidents = Vec::new(); // every record, in offset order per key
    for (_, _, r) in read_topic(&ecfg.kafka, &ecfg.topics.incidents) {
        incidents.push(codec.decode::<Incident>(&r.value, &s::INCIDENT_SCHEMA).await.unwrap());
    }
    assert!(!incidents.is_empty() && !aggregates.is_empty(), "the dumps give incidents and aggregates");

    // Flink, as the README's Flink section runs it.
    let flink_python =
        std::env::var("KEV_FLINK_PYTHON").map(PathBuf::from).unwrap_or_else(|_| cache().join("flink-venv/bin/python"));
    let jars = cache().join("flink-jars");
    let mut args = vec![
        "--sql".to_string(),
        repo().join("deploy/flink/kev.sql").display().to_string(),
        "--bootstrap".into(),
        broker.bootstrap(),
        "--registry".into(),
        registry.url(),
        "--bounded".into(),
    ];
    for jar in std::fs::read_dir(&jars).unwrap_or_else(|e| panic!("{}: {e}", jars.display())) {
        args.extend(["--jar".to_string(), jar.unwrap().path().display().to_string()]);
    }
    let ran = python_json(&flink_python, "flink_run.py", &args);
    println!("Flink ran {}", ran);

    // Its two sinks, read back with Confluent's client through the registry.
    let confluent = cache().join("confluent-venv/bin/python");
    let sinks = ["kev.flink.incident_aggregates", "kev.flink.workload_counts"];
    let mut args = vec!["--bootstrap".to_string(), broker.bootstrap(), "--registry".into(), registry.url()];
    args.extend(["--samples".into(), "100000000".into()]);
    for t in sinks {
        args.extend(["--topic".to_string(), t.to_string()]);
    }
    let read = python_json(&confluent, "confluent_read.py", &args);
    for t in sinks {
        assert_eq!(read["topics"][t]["failed"], 0, "{t}: {}", read["topics"][t]["errors"]);
    }
    let rows = |t: &str| read["topics"][t]["samples"].as_array().unwrap().clone();

    // Incidents with their aggregates: the upsert topic's final row per key.
    let mut flink_ia: BTreeMap<String, Option<Value>> = BTreeMap::new();
    for r in rows(sinks[0]) {
        flink_ia.insert(r["key"].as_str().unwrap().to_string(), r["value"].as_object().map(|_| r["value"].clone()));
    }
    let flink_ia: BTreeMap<(String, String, i64), Value> = flink_ia
        .into_iter()
        .filter_map(|(k, v)| {
            let key: Value = serde_json::from_str(&k).unwrap();
            let id = (
                key["incident_id"].as_str().unwrap().to_string(),
                key["fingerprint"].as_str().unwrap().to_string(),
                key["window_start"].as_i64().unwrap(),
            );
            v.map(|v| (id, v))
        })
        .collect();
    let by_uid: BTreeMap<(&str, &str), Vec<&EnrichedEvent>> = enriched.iter().fold(BTreeMap::new(), |mut m, e| {
        m.entry((e.cluster.as_str(), e.uid.as_str())).or_default().push(e);
        m
    });
    let latest: BTreeMap<&str, &Incident> = incidents.iter().map(|i| (i.incident_id.as_str(), i)).collect();
    let mut expected_ia: BTreeMap<(String, String, i64), (i64, String)> = BTreeMap::new();
    for i in &incidents {
        for uid in &i.member_uids {
            for e in by_uid.get(&(i.cluster.as_str(), uid.as_str())).into_iter().flatten() {
                if e.event_time < i.opened_at || e.event_time > i.updated_at {
                    continue;
                }
                let start = e.event_time - e.event_time % 60_000_000;
                if let Some(a) = aggregates.get(&(i.cluster.clone(), e.fingerprint.clone(), start)) {
                    let status = format!("{:?}", latest[i.incident_id.as_str()].status).to_uppercase();
                    expected_ia.insert((i.incident_id.clone(), e.fingerprint.clone(), start), (a.count, status));
                }
            }
        }
    }
    let fkeys: BTreeSet<_> = flink_ia.keys().collect();
    let ekeys: BTreeSet<_> = expected_ia.keys().collect();
    assert!(!ekeys.is_empty(), "the dumps give incidents with aggregates");
    assert_eq!(
        fkeys.difference(&ekeys).count() + ekeys.difference(&fkeys).count(),
        0,
        "incident/aggregate rows: Flink only {:?}; kev only {:?}",
        fkeys.difference(&ekeys).take(5).collect::<Vec<_>>(),
        ekeys.difference(&fkeys).take(5).collect::<Vec<_>>()
    );
    for (k, (count, status)) in &expected_ia {
        let v = &flink_ia[k];
        assert_eq!(v["aggregate_count"].as_i64(), Some(*count), "{k:?}: the aggregate's count");
        assert_eq!(v["status"].as_str(), Some(status.as_str()), "{k:?}: the incident's latest status");
    }

    // Workload counts per 5-minute window.
    let mut expected_wc: BTreeMap<WorkloadWindow, WindowCounts> = BTreeMap::new();
    for e in &enriched {
        let (ns, w) = workload(e);
        let start_ms = (e.event_time - e.event_time % 300_000_000) / 1000;
        let c = expected_wc.entry((e.cluster.clone(), ns, w, start_ms)).or_default();
        c.0 += 1;
        c.1 += e.new_occurrences;
        c.2.insert(e.uid.clone());
        c.3 += i64::from(matches!(e.severity, Severity::Error | Severity::Critical));
    }
    let mut flink_wc = BTreeMap::new();
    for r in rows(sinks[1]) {
        let v = &r["value"];
        let key = (
            v["cluster"].as_str().unwrap().to_string(),
            v["workload_namespace"].as_str().unwrap_or_default().to_string(),
            v["workload"].as_str().unwrap_or_default().to_string(),
            v["window_start_ms"].as_i64().unwrap(),
        );
        let counts = (
            v["observations"].as_i64().unwrap(),
            v["occurrences"].as_i64().unwrap(),
            v["distinct_events"].as_i64().unwrap(),
            v["error_observations"].as_i64().unwrap(),
        );
        assert!(flink_wc.insert(key.clone(), counts).is_none(), "{key:?}: written twice");
    }
    let mut differ = Vec::new();
    for (k, WindowCounts(obs, occ, uids, err)) in &expected_wc {
        let want = (*obs, *occ, uids.len() as i64, *err);
        if flink_wc.get(k) != Some(&want) {
            differ.push(format!("{k:?}: kev {want:?}, Flink {:?}", flink_wc.get(k)));
        }
    }
    let extra: Vec<_> = flink_wc.keys().filter(|k| !expected_wc.contains_key(*k)).take(5).collect();
    assert!(
        differ.is_empty() && extra.is_empty(),
        "{} of {} workload windows differ, e.g. {:?}; Flink only: {extra:?}",
        differ.len(),
        expected_wc.len(),
        differ.iter().take(5).collect::<Vec<_>>()
    );
    println!(
        "Flink SQL on Flink: {} incident/aggregate rows and {} workload windows, each equal to kev's ({} enriched events, \
         {} incident records, {} aggregates)",
        expected_ia.len(),
        expected_wc.len(),
        enriched.len(),
        incidents.len(),
        aggregates.len()
    );
    cancel.cancel();
}
