//! kev against a real schema registry process (Apicurio Registry, through its Confluent API) and
//! a real Kafka broker: subjects registered by TopicNameStrategy and ids resolved by readers, a
//! registry outage waited out by the producer and the enricher with nothing lost, and schema
//! evolution enforced by the registry itself.

use std::collections::BTreeMap;
use std::time::Duration;

use apache_avro::Schema;
use kev_common::telemetry::Health;
use kev_enricher::records::Stream;
use kev_producer::{readback, run};
use kev_tests::bench::enrich_all;
use kev_tests::broker::Broker;
use kev_tests::expect::assert_exactly_once;
use kev_tests::outputs::{assert_matches, enricher_config, read_outputs, read_topic, reference, wait_caught_up};
use kev_tests::registry::Apicurio;
use kev_tests::{data, init_logs};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A producer configuration for `broker` and the registry at `url`, 3 partitions.
fn producer_config(broker: &Broker, url: &str, cluster: &str) -> kev_producer::config::ProducerConfig {
    let mut cfg = kev_producer::config::ProducerConfig {
        kafka: broker.settings(),
        cluster_id: cluster.into(),
        ..Default::default()
    };
    cfg.registry.url = url.to_string();
    cfg.topic.partitions = 3;
    cfg.http.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    cfg
}

async fn get(url: &str) -> Value {
    let r = reqwest::get(url).await.unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// POSTs or PUTs `body` to the registry: (status, answer).
async fn send(method: reqwest::Method, url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, url)
        .header("Content-Type", CONTENT_TYPE)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null))
}

/// The schema id of a Confluent-framed record.
fn wire_id(value: &[u8]) -> u32 {
    kev_schemas::codec::split_wire_format(value).unwrap().0
}

/// The real dumps through the producer and the enricher, both on the real registry: every
/// subject is `<topic>-value`, holds kev's schema as registered (the same Avro schema, however
/// the registry reformats the text), and every record carries its subject's id; the raw topic
/// reads back exactly once and the outputs are exactly what the same engine run over the raw
/// log, encoded through the same registry, gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kev_registers_its_subjects_and_readers_resolve_them_on_a_real_registry() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let registry = Apicurio::start(&tmp.path().join("registry"));
    let cancel = CancellationToken::new();
    let cfg = producer_config(&broker, &registry.url(), "apicurio");
    let sources = data::all_objects();
    let stats = run::replay(&cfg, data::files(), Health::new(), cancel.clone()).await.unwrap();
    assert_eq!(stats.published as usize, sources.len());
    let codec = run::codec(&cfg).unwrap();
    let raw = readback::read_all(&cfg.kafka, &cfg.topic.name, &codec).await.unwrap();
    assert_exactly_once(&raw, &sources, &cfg.cluster_id, cfg.topic.partitions);

    let mut ecfg = enricher_config(broker.settings(), &registry.url());
    ecfg.topics.raw = cfg.topic.name.clone();
    kev_enricher::topics::create(&ecfg.kafka, &ecfg.topics).await.unwrap();
    let (run, _) = enrich_all(&ecfg, 1, &cancel).await;
    assert_eq!(run.records_in as usize, raw.len(), "the enricher took in every raw record");

    // Subjects by TopicNameStrategy, each holding kev's schema.
    let subjects: Vec<String> = serde_json::from_value(get(&format!("{}/subjects", registry.url())).await).unwrap();
    let mut expected = BTreeMap::from([(format!("{}-value", cfg.topic.name), kev_schemas::schema::RAW_RECORD)]);
    let texts = [
        (Stream::Enriched, kev_schemas::schema::ENRICHED_EVENT),
        (Stream::Aggregates, kev_schemas::schema::AGGREGATE),
        (Stream::Incidents, kev_schemas::schema::INCIDENT),
        (Stream::DeadLetters, kev_schemas::schema::DEAD_LETTER),
    ];
    let live = read_outputs(&ecfg);
    for (stream, text) in texts {
        if live.get(&stream).is_some_and(|m| !m.is_empty()) {
            expected.insert(format!("{}-value", stream.topic(&ecfg.topics)), text);
        }
    }
    assert!(expected.len() >= 4, "the dumps yield enriched events, aggregates and incidents: {expected:?}");
    let mut ids = BTreeMap::new();
    for (subject, text) in &expected {
        assert!(subjects.contains(subject), "{subject} not among the registry's subjects {subjects:?}");
        let latest = get(&format!("{}/subjects/{subject}/versions/latest", registry.url())).await;
        let held = Schema::parse_str(latest["schema"].as_str().unwrap()).unwrap();
        let ours = Schema::parse_str(text).unwrap();
        assert_eq!(
            held.canonical_form(),
            ours.canonical_form(),
            "{subject}: the registry holds another schema than kev's"
        );
        ids.insert(subject.clone(), latest["id"].as_u64().unwrap() as u32);
    }
    let raw_subject = format!("{}-value", cfg.topic.name);
    for (_, _, rec) in read_topic(&cfg.kafka, &cfg.topic.name) {
        assert_eq!(wire_id(&rec.value), ids[&raw_subject], "a raw record's schema id");
    }
    for (stream, by_key) in &live {
        let subject = format!("{}-value", stream.topic(&ecfg.topics));
        for rec in by_key.values().flatten() {
            assert_eq!(wire_id(&rec.value), ids[&subject], "{stream:?}: a record's schema id");
        }
    }

    // Readers resolve those ids: the reference decodes every raw record by its id and
    // encodes what the engine emits through the same registry, to the same bytes.
    let ecodec = ecfg.registry.codec().unwrap();
    let cmp = assert_matches(&live, &reference(&ecfg, &ecodec).await, true);
    println!(
        "Apicurio Registry: {} subjects {:?}; {} raw records and {} output records, each with its subject's id, \
         decoded and re-encoded to the same bytes",
        expected.len(),
        ids,
        raw.len(),
        cmp.records
    );

    // Confluent's own client reads every topic through the same registry.
    let mut topics = vec![(cfg.topic.name.clone(), None)];
    for (stream, _) in texts {
        if live.get(&stream).is_some_and(|m| !m.is_empty()) {
            topics.push((stream.topic(&ecfg.topics).to_string(), Some(stream)));
        }
    }
    confluent_reads(&broker, &registry, &cfg, &ecodec, &topics).await;
    cancel.cancel();
}

/// Confluent's Python client (`tests/python/requirements.txt`, installed by the prerequisites).
fn confluent_python() -> std::path::PathBuf {
    kev_tests::cached("KEV_CONFLUENT_PYTHON", "confluent-venv/bin/python")
}

/// Reads every record of `topics` with confluent-kafka's AvroDeserializer
/// (`tests/python/confluent_read.py`): all decode, keys are text and the records kev wrote,
/// the sampled values equal field by field what kev's own reader returns, and Confluent's
/// murmur2 partitioner puts each cluster's key in the partition kev's producer chose.
async fn confluent_reads(
    broker: &Broker,
    registry: &Apicurio,
    cfg: &kev_producer::config::ProducerConfig,
    codec: &kev_schemas::Codec,
    topics: &[(String, Option<Stream>)],
) {
    let python = confluent_python();
    assert!(python.is_file(), "no {} (run scripts/prerequisites.sh --for-tests)", python.display());
    let probe = "kev.test.partitioner-probe";
    kev_common::kafka::ensure_topic(&cfg.kafka, probe, cfg.topic.partitions, 1, &[]).await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/confluent_read.py");
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(script).args(["--bootstrap", &broker.bootstrap(), "--registry", &registry.url(), "--probe-topic", probe]);
    for (t, _) in topics {
        cmd.args(["--topic", t]);
    }
    // The murmur2 claim for more than one key: this run's cluster and sixteen more.
    let keys: Vec<String> =
        std::iter::once(cfg.cluster_id.clone()).chain((0..16).map(|c| format!("cluster-{c}"))).collect();
    for k in &keys {
        cmd.args(["--key", k]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "confluent_read.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();

    let mut compared = 0;
    for (topic, stream) in topics {
        let got = &doc["topics"][topic];
        let ours = read_topic(&cfg.kafka, topic);
        assert_eq!(got["failed"], 0, "{topic}: Confluent's deserializer failed: {}", got["errors"]);
        assert_eq!(got["keys_not_text"], 0, "{topic}: keys that are not UTF-8 text");
        assert_eq!(got["records"].as_u64().unwrap() as usize, ours.len(), "{topic}: records read");
        let at: BTreeMap<(i64, i64), &kev_tests::outputs::Rec> =
            ours.iter().map(|(p, o, r)| ((*p as i64, *o), r)).collect();
        for sample in got["samples"].as_array().unwrap() {
            let rec = at[&(sample["partition"].as_i64().unwrap(), sample["offset"].as_i64().unwrap())];
            assert_eq!(sample["key"].as_str().map(str::as_bytes), Some(&rec.key[..]), "{topic}: a key");
            let kev = kev_reads(codec, *stream, &rec.value).await;
            assert_eq!(sample["value"], kev, "{topic}: Confluent's client and kev's reader disagree");
            compared += 1;
        }
    }
    let mut spread = std::collections::BTreeSet::new();
    for k in &keys {
        let chosen = doc["partitions"][k].as_i64().unwrap() as i32;
        let kev_chose = kev_common::kafka::partition_for_key(k.as_bytes(), cfg.topic.partitions);
        assert_eq!(chosen, kev_chose, "murmur2, key {k}: Confluent's partitioner and kev's producer disagree");
        spread.insert(chosen);
    }
    assert!(spread.len() > 1, "the keys fall in more than one partition: {spread:?}");
    for (p, _, rec) in read_topic(&cfg.kafka, &cfg.topic.name) {
        assert_eq!(rec.key, cfg.cluster_id.as_bytes(), "the raw topic is keyed by cluster");
        assert_eq!(p, doc["partitions"][&cfg.cluster_id].as_i64().unwrap() as i32, "the cluster's partition");
    }
    println!(
        "confluent-kafka read {} topics, {} records, none failed; {compared} sampled values equal kev's field by \
         field; {} keys in the same partitions by both partitioners ({} partitions used)",
        topics.len(),
        topics.iter().map(|(t, _)| doc["topics"][t]["records"].as_u64().unwrap()).sum::<u64>(),
        keys.len(),
        spread.len()
    );
}

/// What kev's own reader makes of a record, as JSON.
async fn kev_reads(codec: &kev_schemas::Codec, stream: Option<Stream>, value: &[u8]) -> Value {
    use kev_schemas::schema as s;
    match stream {
        None => serde_json::to_value(codec.decode_raw(value).await.unwrap()),
        Some(Stream::Enriched) => serde_json::to_value(
            codec.decode::<kev_schemas::EnrichedEvent>(value, &s::ENRICHED_EVENT_SCHEMA).await.unwrap(),
        ),
        Some(Stream::Aggregates) => {
            serde_json::to_value(codec.decode::<kev_schemas::Aggregate>(value, &s::AGGREGATE_SCHEMA).await.unwrap())
        }
        Some(Stream::Incidents) => {
            serde_json::to_value(codec.decode::<kev_schemas::Incident>(value, &s::INCIDENT_SCHEMA).await.unwrap())
        }
        Some(Stream::DeadLetters) => {
            serde_json::to_value(codec.decode::<kev_schemas::DeadLetter>(value, &s::DEAD_LETTER_SCHEMA).await.unwrap())
        }
    }
    .unwrap()
}

/// The registry goes away (SIGKILL) before the producer and again before the enricher start:
/// each waits, not ready and saying why, publishes and commits nothing meanwhile, and carries
/// on when the registry is back (with its database: ids written before still resolve), with
/// nothing lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_and_the_enricher_wait_out_a_registry_outage_and_lose_nothing() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let mut registry = Apicurio::start(&tmp.path().join("registry"));
    let cancel = CancellationToken::new();
    let cfg = producer_config(&broker, &registry.url(), "outage");
    let file = "troubleshoot.jsonl.gz";
    let sources = data::objects(file);

    registry.kill();
    let health = Health::new();
    let replay = {
        let (cfg, cancel, health) = (cfg.clone(), cancel.clone(), health.clone());
        tokio::spawn(async move { run::replay(&cfg, vec![data::dir().join(file)], health, cancel).await })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!replay.is_finished(), "nothing can be published while the registry is down");
    assert!(!health.is_ready() && health.reason().contains("registry"), "producer: {}", health.reason());
    registry.start_again();
    let stats =
        tokio::time::timeout(Duration::from_secs(120), replay).await.expect("the replay finishes").unwrap().unwrap();
    assert_eq!(stats.published as usize, sources.len());
    let codec = run::codec(&cfg).unwrap();
    let raw = readback::read_all(&cfg.kafka, &cfg.topic.name, &codec).await.unwrap();
    assert_exactly_once(&raw, &sources, &cfg.cluster_id, cfg.topic.partitions);

    // The enricher starts while the registry is down: it cannot decode the raw records.
    let mut ecfg = enricher_config(broker.settings(), &registry.url());
    ecfg.topics.raw = cfg.topic.name.clone();
    kev_enricher::topics::create(&ecfg.kafka, &ecfg.topics).await.unwrap();
    registry.kill();
    let spec = kev_enricher::partition::EngineSpec::load(&ecfg).unwrap();
    let ehealth = Health::new();
    let enricher = {
        let (ecfg, stop, ehealth) = (ecfg.clone(), cancel.child_token(), ehealth.clone());
        let codec = std::sync::Arc::new(ecfg.registry.codec().unwrap());
        tokio::spawn(async move { kev_enricher::live::run_until_stopped(&ecfg, &spec, codec, ehealth, stop).await })
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (committed, _) = kev_tests::outputs::progress(&ecfg);
    assert_eq!(committed.iter().sum::<i64>(), 0, "nothing is committed while the registry is down");
    assert!(!ehealth.is_ready() && ehealth.reason().contains("registry"), "enricher: {}", ehealth.reason());
    assert!(!enricher.is_finished(), "the enricher waits; it does not stop");
    registry.start_again();
    wait_caught_up(&ecfg, Duration::from_secs(120)).await;
    let ecodec = ecfg.registry.codec().unwrap();
    let cmp = assert_matches(&read_outputs(&ecfg), &reference(&ecfg, &ecodec).await, true);
    assert_eq!(cmp.duplicates, 0);
    println!(
        "registry killed twice: {} raw records published once, {} output records as the reference, 0 duplicates",
        raw.len(),
        cmp.records
    );
    cancel.cancel();
    let _ = enricher.await;
}

/// With a subject's compatibility set to BACKWARD, the registry accepts the next version of each
/// kev schema (a new optional field with a default, how kev's schemas evolve) and refuses one
/// that breaks it (a new field without a default); and a producer whose schema the registry
/// refuses says which subject and what the registry said, is not ready, and publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_enforces_backward_compatibility_and_kev_reports_a_refusal() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(tmp.path());
    let registry = Apicurio::start(&tmp.path().join("registry"));
    let url = registry.url();
    let mut accepted = Vec::new();
    for (file, text) in kev_schemas::schema::ALL {
        let subject = format!("evolution.{}-value", file.trim_end_matches(".avsc"));
        let (status, _) =
            send(reqwest::Method::POST, &format!("{url}/subjects/{subject}/versions"), json!({ "schema": text })).await;
        assert_eq!(status, 200, "{subject}: kev's schema registered");
        let (status, answer) =
            send(reqwest::Method::PUT, &format!("{url}/config/{subject}"), json!({ "compatibility": "BACKWARD" }))
                .await;
        assert_eq!(status, 200, "{subject}: compatibility set: {answer}");
        let with_field = |field: Value| {
            let mut schema: Value = serde_json::from_str(text).unwrap();
            schema["fields"].as_array_mut().unwrap().push(field);
            json!({ "schema": schema.to_string() })
        };
        let next = with_field(json!({"name": "kev_next", "type": ["null", "string"], "default": null}));
        let (status, answer) = send(reqwest::Method::POST, &format!("{url}/subjects/{subject}/versions"), next).await;
        assert_eq!(status, 200, "{subject}: the next version is refused: {answer}");
        let broken = with_field(json!({"name": "kev_required", "type": "string"}));
        let (status, answer) = send(reqwest::Method::POST, &format!("{url}/subjects/{subject}/versions"), broken).await;
        assert_eq!(status, 409, "{subject}: a field without a default is accepted: {answer}");
        accepted.push(subject);
    }

    // The raw topic's subject already holds a schema kev's cannot read (a string field made an
    // int: Avro promotes no int to a string).
    let cfg = producer_config(&broker, &url, "refused");
    let subject = format!("{}-value", cfg.topic.name);
    let mut other: Value = serde_json::from_str(kev_schemas::schema::RAW_RECORD).unwrap();
    let field = other["fields"].as_array_mut().unwrap().iter_mut().find(|f| f["type"] == "string").unwrap();
    let changed = field["name"].as_str().unwrap().to_string();
    field["type"] = json!("int");
    let (status, _) = send(
        reqwest::Method::POST,
        &format!("{url}/subjects/{subject}/versions"),
        json!({ "schema": other.to_string() }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) =
        send(reqwest::Method::PUT, &format!("{url}/config/{subject}"), json!({ "compatibility": "BACKWARD" })).await;
    assert_eq!(status, 200);

    let cancel = CancellationToken::new();
    let health = Health::new();
    let replay = {
        let (cfg, cancel, health) = (cfg.clone(), cancel.clone(), health.clone());
        let file = data::dir().join("troubleshoot.jsonl.gz");
        tokio::spawn(async move { run::replay(&cfg, vec![file], health, cancel).await })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let reason = health.reason();
    assert!(!health.is_ready(), "a producer whose schema is refused is not ready");
    assert!(reason.contains(&subject), "the refusal names the subject {subject}: {reason}");
    assert!(reason.to_lowercase().contains("incompatible"), "the refusal says what the registry said: {reason}");
    assert!(!replay.is_finished(), "the producer keeps trying (someone fixes the registry); it does not drop events");
    let raw = read_topic(&cfg.kafka, &cfg.topic.name);
    assert!(raw.is_empty(), "nothing is published under a refused schema: {} records", raw.len());
    println!(
        "BACKWARD on {} subjects: next versions accepted, breaking ones refused (409); kev's raw schema against one \
         with `{changed}` as int: not ready, \"{reason}\"",
        accepted.len()
    );
    cancel.cancel();
    let _ = replay.await;
}
