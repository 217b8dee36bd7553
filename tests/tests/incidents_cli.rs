//! `kev-enricher incidents` as an SRE runs it: the binary against an Apache Kafka broker
//! process holding kev's outputs of the real dumps, its listing and `describe` checked against
//! the incidents and enriched topics read independently.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use kev_common::telemetry::Health;
use kev_enricher::EnricherConfig;
use kev_schemas::schema as s;
use kev_schemas::{EnrichedEvent, Incident, IncidentStatus};
use kev_tests::bench::enrich_all;
use kev_tests::broker::Broker;
use kev_tests::outputs::{enricher_config, read_topic};
use kev_tests::{data, expect, init_logs, procs};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio_util::sync::CancellationToken;

/// Runs `kev-enricher --config CONFIG incidents ARGS` to its end.
fn incidents(config: &Path, args: &[&str]) -> Output {
    let mut c = procs::command("kev-enricher");
    c.arg("--config").arg(config).arg("incidents").args(args).env("RUST_LOG", "warn");
    let (out, took, killed) = procs::run_to_end(c, Duration::from_secs(120));
    assert!(!killed, "incidents {args:?} ran past 120 s:\n{}", String::from_utf8_lossy(&out.stderr));
    println!("incidents {args:?}: {:.1} s", took.as_secs_f64());
    out
}

fn stdout_of(out: &Output, args: &[&str]) -> String {
    assert!(out.status.success(), "incidents {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(config: &Path, args: &[&str]) -> Vec<Incident> {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&stdout_of(&incidents(config, &all), &all)).unwrap()
}

fn write_config(path: &Path, cfg: &EnricherConfig) {
    let mut text = format!(
        "[registry]\nurl = \"{}\"\n\n[kafka]\nbootstrap_servers = \"{}\"\n\n[kafka.properties]\n",
        cfg.registry.url, cfg.kafka.bootstrap_servers
    );
    for (k, v) in &cfg.kafka.properties {
        text.push_str(&format!("\"{k}\" = \"{v}\"\n"));
    }
    std::fs::write(path, text).unwrap();
}

/// The real dumps of two clusters through the producer and the enricher; then the listing in
/// every format and filter, `describe` of the incident with the most members, an unknown id and
/// an undecodable record in the incidents topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_lists_the_topic_as_it_stands_and_describes_one_with_its_events() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let cancel = CancellationToken::new();
    let registry = expect::registry(&cancel).await;
    for (cluster, file) in [("azure", "openshift-azure.jsonl.gz"), ("troubleshoot", "troubleshoot.jsonl.gz")] {
        let p = expect::config(&broker, &registry, cluster);
        kev_producer::run::replay(&p, vec![data::dir().join(file)], Health::new(), cancel.clone()).await.unwrap();
    }
    let mut cfg = enricher_config(broker.settings(), &registry.url);
    cfg.topics.retention_ms = -1;
    kev_enricher::topics::create(&cfg.kafka, &cfg.topics).await.unwrap();
    enrich_all(&cfg, 1, &cancel).await;
    let config = tmp.path().join("enricher.toml");
    write_config(&config, &cfg);

    // The incidents as they stand, read here: the last record of each id.
    let codec = cfg.registry.codec().unwrap();
    let mut latest = BTreeMap::new();
    let mut records = 0;
    for (_, _, r) in read_topic(&cfg.kafka, &cfg.topics.incidents) {
        let i: Incident = codec.decode(&r.value, &s::INCIDENT_SCHEMA).await.unwrap();
        latest.insert(i.incident_id.clone(), i);
        records += 1;
    }
    let mut expected: Vec<Incident> = latest.into_values().collect();
    expected.sort_by(|a, b| (a.opened_at, &a.incident_id).cmp(&(b.opened_at, &b.incident_id)));
    let clusters: BTreeSet<&str> = expected.iter().map(|i| i.cluster.as_str()).collect();
    assert_eq!(clusters, BTreeSet::from(["azure", "troubleshoot"]), "both clusters have incidents");
    assert!(records > expected.len(), "some incidents were updated, so the listing must keep only the last record");

    // -o json: the whole records, last of each id, in order of opening.
    let all = json(&config, &[]);
    assert_eq!(all, expected, "-o json is the incidents as they stand");

    // The table: a header and a row per incident, in the same order, columns aligned.
    let args = [];
    let table = stdout_of(&incidents(&config, &args), &args);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), expected.len() + 1, "{table}");
    assert!(lines[0].starts_with("CLUSTER") && lines[0].contains("INCIDENT") && lines[0].contains("SEVERITY"));
    let status_at = lines[0].find("STATUS").unwrap();
    for (line, i) in lines[1..].iter().zip(&expected) {
        assert!(line.starts_with(&i.cluster) && line.contains(&i.incident_id), "{line} is not {}", i.incident_id);
        let status = format!("{:?}", i.status).to_uppercase();
        assert_eq!(&line[status_at..status_at + status.len()], status, "{line}");
    }
    let wide = stdout_of(&incidents(&config, &["-o", "wide"]), &["-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("ROOT CAUSE"), "{wide}");
    assert!(expected.iter().all(|i| wide.contains(i.summary.replace('\n', " ").as_str())), "wide shows summaries");
    let yaml: Vec<Incident> = serde_norway::from_str(&stdout_of(&incidents(&config, &["-o", "yaml"]), &[])).unwrap();
    assert_eq!(yaml, expected);

    // Filters, each against the same selection made here.
    let pick = |f: &dyn Fn(&Incident) -> bool| -> Vec<Incident> { expected.iter().filter(|i| f(i)).cloned().collect() };
    let open = json(&config, &["--open"]);
    assert_eq!(open, pick(&|i| i.status != IncidentStatus::Resolved));
    let azure = json(&config, &["--cluster", "azure"]);
    assert_eq!(azure, pick(&|i| i.cluster == "azure"));
    assert!(!azure.is_empty() && azure.len() < expected.len());
    let ns = expected.iter().find_map(|i| i.root_cause.as_ref()?.namespace.clone()).expect("a namespaced root cause");
    let in_ns = |i: &Incident| {
        i.root_cause.as_ref().and_then(|r| r.namespace.as_deref()) == Some(ns.as_str())
            || i.scope.iter().any(|r| r.namespace.as_deref() == Some(ns.as_str()))
    };
    let by_ns = json(&config, &["-n", &ns]);
    assert_eq!(by_ns, pick(&in_ns));
    assert!(!by_ns.is_empty() && by_ns.len() < expected.len(), "{ns}");
    let mut updated: Vec<i64> = expected.iter().map(|i| i.updated_at).collect();
    updated.sort();
    let median = updated[updated.len() / 2];
    let since = chrono::DateTime::from_timestamp_micros(median).unwrap().to_rfc3339();
    let recent = json(&config, &["--since", &since]);
    assert_eq!(recent, pick(&|i| i.updated_at / 1000 >= median / 1000));
    assert!(!recent.is_empty() && recent.len() < expected.len());
    // A duration back from now: the dumps are years old.
    assert!(json(&config, &["--since", "2h"]).is_empty());
    let none = incidents(&config, &["--cluster", "nowhere"]);
    assert!(none.status.success() && none.stdout.is_empty());
    assert!(String::from_utf8_lossy(&none.stderr).contains("No incidents found"));
    let bad = incidents(&config, &["--since", "yesterday-ish"]);
    assert!(
        !bad.status.success()
            && String::from_utf8_lossy(&bad.stderr).contains("neither an RFC 3339 time nor a duration")
    );

    // describe: the incident with the most members, its events in event-time order, every
    // observation of a member in its span, as the enriched topic holds them.
    let widest = expected.iter().max_by_key(|i| (i.member_uids.len(), i.incident_id.clone())).unwrap();
    let args = ["describe", widest.incident_id.as_str()];
    let described = stdout_of(&incidents(&config, &args), &args);
    println!("{described}");
    let first = described.lines().next().unwrap();
    assert!(first.starts_with("Incident:") && first.ends_with(&widest.incident_id), "{described}");
    assert!(described.contains(&widest.summary.replace('\n', " ")));
    let members: BTreeSet<&str> = widest.member_uids.iter().map(String::as_str).collect();
    let mut observations = BTreeSet::new();
    for (_, _, r) in read_topic(&cfg.kafka, &cfg.topics.enriched) {
        let e: EnrichedEvent = codec.decode(&r.value, &s::ENRICHED_EVENT_SCHEMA).await.unwrap();
        if e.cluster == widest.cluster
            && members.contains(e.uid.as_str())
            && (widest.opened_at..=widest.updated_at).contains(&e.event_time)
        {
            observations.insert((e.event_time, e.uid, e.resource_version));
        }
    }
    let found: BTreeSet<&str> = observations.iter().map(|(_, u, _)| u.as_str()).collect();
    assert_eq!(found, members, "every member has an observation in the incident's span");
    let head = format!("Events ({} observations of {} member events):", observations.len(), members.len());
    assert!(described.contains(&head), "expected {head:?} in\n{described}");
    let rows: Vec<&str> = described.lines().skip_while(|l| !l.trim_start().starts_with("TIME")).skip(1).collect();
    assert_eq!(rows.len(), observations.len(), "{described}");
    let times: Vec<String> = observations
        .iter()
        .map(|(t, _, _)| {
            chrono::DateTime::from_timestamp_micros(*t).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .collect();
    for (row, t) in rows.iter().zip(&times) {
        assert!(row.trim_start().starts_with(t.as_str()), "{row} should be at {t}");
    }

    let unknown = incidents(&config, &["describe", "azure/no-such-incident"]);
    assert!(!unknown.status.success());
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(said.contains("no incident azure/no-such-incident in the incidents topic"), "{said}");

    // A record that does not decode is left out, said, and the rest still listed.
    let producer: ThreadedProducer<DefaultProducerContext> = cfg.kafka.client_config(&[]).create().unwrap();
    producer.send(BaseRecord::to(&cfg.topics.incidents).key("garbage").payload("not avro")).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let out = incidents(&config, &["-o", "json"]);
    let listed: Vec<Incident> = serde_json::from_str(&stdout_of(&out, &[])).unwrap();
    assert_eq!(listed, expected);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("1 of {} records of {} did not decode", records + 1, cfg.topics.incidents)),
        "{said}"
    );
    println!(
        "incidents: {} records, {} incidents ({} open, {} of azure, {} in {ns}, {} since the median update); \
         describe {}: {} observations of {} members",
        records,
        expected.len(),
        open.len(),
        azure.len(),
        by_ns.len(),
        recent.len(),
        widest.incident_id,
        observations.len(),
        members.len()
    );
    cancel.cancel();
}
