//! Kafka ACLs for real: Kafka's `StandardAuthorizer`, one SCRAM principal per binary, each
//! granted exactly what the README's "ACLs" section lists for it, and nothing on the harness's
//! side but its own super-user listener. Both binaries work so, in both delivery modes; with
//! one ACL taken away, each ends within seconds with a message naming what Kafka refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kev_enricher::EnricherConfig;
use kev_tests::broker::{Broker, BrokerOptions, Security};
use kev_tests::tls::TestCa;
use kev_tests::{data, expect, init_logs, outputs, procs};
use tokio_util::sync::CancellationToken;

const PRODUCER: (&str, &str) = ("kev-producer", "producer-pw-51c9");
const ENRICHER: (&str, &str) = ("kev-enricher", "enricher-pw-0b7e");

/// Adds or removes (`op`: `--add`, `--remove`) an allow ACL for `user`: `operations` on the
/// resource `resource` (kafka-acls' words, such as `["--topic", "t"]`).
fn acl(broker: &Broker, op: &str, user: &str, operations: &[&str], resource: &[&str]) {
    let principal = format!("User:{user}");
    let mut args = vec![op, "--force", "--allow-principal", &principal];
    for operation in operations {
        args.extend(["--operation", operation]);
    }
    args.extend_from_slice(resource);
    broker.acl_command(&args);
}

/// The README's grants for the producer: its raw topic, and Describe on its readers' groups.
fn grant_producer(broker: &Broker, op: &str, raw: &str) {
    acl(broker, op, PRODUCER.0, &["Describe", "Read", "Write", "Create"], &["--topic", raw]);
    let groups = ["--resource-pattern-type", "prefixed", "--group", "kev-producer"];
    acl(broker, op, PRODUCER.0, &["Describe"], &groups);
}

/// The README's grants for the enricher, less `without` (a grant to leave out, by name).
fn grant_enricher(broker: &Broker, op: &str, t: &kev_enricher::config::TopicsSettings, group: &str, without: &str) {
    let mut outputs = Vec::new();
    for topic in t.written() {
        outputs.extend(["--topic", topic]);
    }
    let grants: [(&str, &[&str], &[&str]); 4] = [
        ("raw", &["Describe", "Read"], &["--topic", &t.raw]),
        ("outputs", &["Describe", "Write", "Create"], &outputs),
        ("checkpoints", &["Read"], &["--topic", &t.checkpoints]),
        ("group", &["Describe", "Read"], &["--resource-pattern-type", "prefixed", "--group", group]),
    ];
    for (name, operations, resource) in grants {
        if name != without {
            acl(broker, op, ENRICHER.0, operations, resource);
        }
    }
}

/// A configuration for `user`, with `top` (top-level TOML settings) first.
fn config(dir: &Path, name: &str, broker: &Broker, user: (&str, &str), registry: &str, top: &str) -> PathBuf {
    let text = format!(
        r#"{top}
[kafka]
bootstrap_servers = "{bootstrap}"

[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "{name}"
"sasl.password" = "{password}"
"ssl.ca.location" = "{ca}"

[registry]
url = "{registry}"

[http]
listen = "127.0.0.1:0"
"#,
        bootstrap = broker.bootstrap(),
        name = user.0,
        password = user.1,
        ca = dir.join("ca.pem").display(),
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs a binary to its end, killed after `limit` (the caller's assertions then say so).
fn run(binary: &str, config: &Path, args: &[&str], limit: Duration) -> (Output, Duration) {
    let mut command = procs::command(binary);
    command.arg("--config").arg(config).args(args);
    let (out, took, _) = procs::run_to_end(command, limit);
    (out, took)
}

/// Runs `kev-enricher run` with `config` until the group has committed every raw record, then
/// stops it with SIGTERM. Returns whether it exited cleanly, and its log.
async fn enrich_until_caught_up(config: &Path, log_path: &Path, reader: &EnricherConfig) -> (bool, String) {
    let log = std::fs::File::create(log_path).unwrap();
    let mut enricher = procs::command("kev-enricher")
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    outputs::wait_caught_up(reader, Duration::from_secs(120)).await;
    Command::new("kill").args(["-TERM", &enricher.id().to_string()]).status().unwrap();
    let status = enricher.wait().unwrap();
    (status.success(), std::fs::read_to_string(log_path).unwrap())
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_binary_works_with_exactly_its_acls_and_names_what_is_refused_without_one() {
    init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = TestCa::new("acls");
    std::fs::write(dir.join("ca.pem"), &ca.ca_pem).unwrap();
    let security = Security {
        ca,
        scram_users: vec![(PRODUCER.0.into(), PRODUCER.1.into()), (ENRICHER.0.into(), ENRICHER.1.into())],
        mutual_tls: false,
        acls: true,
    };
    let broker = Broker::start_with(dir, BrokerOptions { security: Some(security), ..Default::default() });
    let cancel = CancellationToken::new();
    let registry = expect::registry(&cancel).await;
    let defaults = EnricherConfig::default();
    let (topics, group) = (&defaults.topics, defaults.group_id.as_str());
    grant_producer(&broker, "--add", &topics.raw);
    grant_enricher(&broker, "--add", topics, group, "");
    let producer_cfg = config(dir, "producer.toml", &broker, PRODUCER, &registry.url, "");
    let enricher_cfg = config(dir, "enricher.toml", &broker, ENRICHER, &registry.url, "");

    // With exactly those grants: the producer creates the raw topic and publishes a dump, the
    // enricher creates its topics and enriches all of it.
    let dump = |name: &str| data::dir().join(name).display().to_string();
    let (out, _) = run("kev-producer", &producer_cfg, &["replay", &dump("sbctl.jsonl.gz")], Duration::from_secs(120));
    assert!(out.status.success(), "the producer with its ACLs:\n{}", text(&out));
    let events = data::objects("sbctl.jsonl.gz").len();
    // The harness reads on its own (super-user) listener.
    let reader = outputs::enricher_config(broker.internal_settings(), &registry.url);
    let (ok, log) = enrich_until_caught_up(&enricher_cfg, &dir.join("enricher.log"), &reader).await;
    assert!(ok, "the enricher with its ACLs:\n{log}");
    let enriched = outputs::read_topic(&reader.kafka, &reader.topics.enriched).len();
    assert_eq!(enriched, events, "one enriched event per raw event");

    // One grant taken away at a time: each binary ends, naming what was refused.
    let mut refusals = Vec::new();
    acl(&broker, "--remove", PRODUCER.0, &["Write"], &["--topic", &topics.raw]);
    let (out, took) =
        run("kev-producer", &producer_cfg, &["replay", &dump("troubleshoot.jsonl.gz")], Duration::from_secs(60));
    refusals.push(("kev-producer without Write on the raw topic", out, took, format!("to topic {}", topics.raw)));
    grant_producer(&broker, "--add", &topics.raw);

    for (without, expected) in [
        ("group", format!("group {group}")),
        ("raw", format!("topic {}", topics.raw)),
        ("outputs", "topic kev.".to_string()),
    ] {
        grant_enricher(&broker, "--remove", topics, group, "");
        grant_enricher(&broker, "--add", topics, group, without);
        // New events, so that the enricher has something to write.
        let (out, _) =
            run("kev-producer", &producer_cfg, &["replay", &dump("kspan.jsonl.gz")], Duration::from_secs(120));
        assert!(out.status.success(), "{}", text(&out));
        let (out, took) = run("kev-enricher", &enricher_cfg, &["run"], Duration::from_secs(60));
        refusals.push(("kev-enricher without its grant on", out, took, expected));
        refusals.last_mut().unwrap().0 = match without {
            "group" => "kev-enricher without Read on its group",
            "raw" => "kev-enricher without Read on the raw topic",
            _ => "kev-enricher without Write on its output topics",
        };
    }

    // exactly_once: with the README's grant on its transactional ids as well the enricher works;
    // without that grant it ends, naming the id.
    grant_enricher(&broker, "--remove", topics, group, "");
    grant_enricher(&broker, "--add", topics, group, "");
    let txn_id = "kev-enricher-acl-test";
    let eos_top = format!("processing_guarantee = \"exactly_once\"\ntransactional_id = \"{txn_id}\"\n");
    let eos_cfg = config(dir, "enricher-eos.toml", &broker, ENRICHER, &registry.url, &eos_top);
    let txn_ids = ["--resource-pattern-type", "prefixed", "--transactional-id", group];
    let txn_acl = |op: &str| acl(&broker, op, ENRICHER.0, &["Describe", "Write"], &txn_ids);
    txn_acl("--add");
    let (ok, eos_text) = enrich_until_caught_up(&eos_cfg, &dir.join("enricher-eos.log"), &reader).await;
    assert!(ok && eos_text.contains("transactions initialised"), "exactly_once with its ACLs:\n{eos_text}");
    txn_acl("--remove");
    let (out, took) = run("kev-enricher", &eos_cfg, &["run"], Duration::from_secs(60));
    refusals.push((
        "kev-enricher, exactly_once, without its transactional-id grant",
        out,
        took,
        format!("transactional id {txn_id}"),
    ));

    // The producer in exactly_once mode likewise: with the README's grant on its transactional
    // ids it publishes, without it it ends, naming its id.
    let producer_txn_ids = ["--resource-pattern-type", "prefixed", "--transactional-id", "kev-producer"];
    let producer_eos = "processing_guarantee = \"exactly_once\"\n";
    let eos_producer_cfg = config(dir, "producer-eos.toml", &broker, PRODUCER, &registry.url, producer_eos);
    acl(&broker, "--add", PRODUCER.0, &["Describe", "Write"], &producer_txn_ids);
    let troubleshoot = dump("troubleshoot.jsonl.gz");
    let (out, _) = run("kev-producer", &eos_producer_cfg, &["replay", &troubleshoot], Duration::from_secs(120));
    let log = text(&out);
    assert!(out.status.success() && log.contains("transactions initialised"), "exactly_once with its ACLs:\n{log}");
    acl(&broker, "--remove", PRODUCER.0, &["Describe", "Write"], &producer_txn_ids);
    let (out, took) = run("kev-producer", &eos_producer_cfg, &["replay", &troubleshoot], Duration::from_secs(60));
    refusals.push((
        "kev-producer, exactly_once, without its transactional-id grant",
        out,
        took,
        "transactional id kev-producer-default".to_string(),
    ));

    for (what, out, took, _) in &refusals {
        let log = text(out);
        println!(
            "{what}: exit {} after {took:?}: {}",
            out.status,
            log.lines().find(|l| l.starts_with("Error:")).unwrap_or("")
        );
    }
    for (what, out, took, expected) in &refusals {
        let log = text(out);
        assert!(!out.status.success(), "{what}: {log}");
        assert!(log.contains("Kafka refused to let this principal"), "{what}: expected the refusal in:\n{log}");
        assert!(log.contains(expected.as_str()), "{what}: expected {expected:?} in:\n{log}");
        assert!(*took < Duration::from_secs(30), "{what}: took {took:?} to give up");
    }
    cancel.cancel();
}
