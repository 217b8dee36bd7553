//! Secure connections, end to end with both binaries as processes: Kafka over TLS with
//! SASL/SCRAM-SHA-512 (a tansu broker with `--authentication`, behind the TLS proxy of
//! `kev_tests::tls`, since tansu 0.6.0 speaks plaintext only), the Schema Registry test double
//! over HTTPS with basic auth, a CA made by the test. Credentials come from files (a mounted
//! Secret) and an environment variable, and must never show in logs or metrics. A wrong
//! password for either, or an untrusted CA, ends each binary at once with the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kev_common::devregistry::DevRegistry;
use kev_common::kafka::KafkaSettings;
use kev_tests::broker::{Broker, BrokerOptions, Storage};
use kev_tests::tls::{self, TestCa};
use kev_tests::{data, init_logs, outputs, procs};
use tokio_util::sync::CancellationToken;

const KAFKA_USER: &str = "kev";
const KAFKA_PASSWORD: &str = "Kafka-pw-7f3a91";
const REGISTRY_USER: &str = "kev-registry";
const REGISTRY_PASSWORD: &str = "Registry-pw-c2e8d4";

struct Secure {
    dir: tempfile::TempDir,
    _broker: Broker,
    kafka_port: u16,
    registry_url: String,
    cancel: CancellationToken,
}

impl Drop for Secure {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn secure() -> Secure {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("trusted");
    let cancel = CancellationToken::new();
    // TLS in front of tansu; tansu advertises the proxy, so every connection goes through TLS.
    let kafka_tls = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let kafka_port = kafka_tls.local_addr().unwrap().port();
    let options = BrokerOptions { authentication: false, advertised_port: Some(kafka_port) };
    let mut broker = Broker::start_with(Storage::Sqlite(dir.path().join("tansu.db")), dir.path(), options);
    broker.create_user(KAFKA_USER, KAFKA_PASSWORD);
    broker.restart_with(BrokerOptions { authentication: true, ..options });
    tls::proxy(kafka_tls, SocketAddr::from(([127, 0, 0, 1], broker.port)), &ca, cancel.clone());
    // The registry double wants basic auth, behind HTTPS.
    let registry = DevRegistry::start_with_basic_auth(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some((REGISTRY_USER, REGISTRY_PASSWORD)),
        cancel.clone(),
    )
    .await
    .unwrap();
    let registry_addr: SocketAddr = registry.url.trim_start_matches("http://").parse().unwrap();
    let registry_tls = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let registry_url = format!("https://127.0.0.1:{}", registry_tls.local_addr().unwrap().port());
    tls::proxy(registry_tls, registry_addr, &ca, cancel.clone());

    std::fs::write(dir.path().join("ca.pem"), &ca.ca_pem).unwrap();
    std::fs::write(dir.path().join("other-ca.pem"), TestCa::new("untrusted").ca_pem).unwrap();
    // The Kafka password as a mounted Secret: a file named after the librdkafka property.
    let secret = dir.path().join("kafka-secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("sasl.password"), format!("{KAFKA_PASSWORD}\n")).unwrap();
    Secure { dir, _broker: broker, kafka_port, registry_url, cancel }
}

impl Secure {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A configuration file for either binary; `ca` names the CA file Kafka clients trust.
    fn config(&self, name: &str, ca: &str) -> PathBuf {
        self.config_with(name, ca, "")
    }

    /// The same, with `registry_extra` lines added to the `[registry]` table.
    fn config_with(&self, name: &str, ca: &str, registry_extra: &str) -> PathBuf {
        let text = format!(
            r#"
[kafka]
bootstrap_servers = "127.0.0.1:{port}"
secret_properties_dir = "{secret}"

[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "{KAFKA_USER}"
"ssl.ca.location" = "{ca}"

[registry]
url = "{registry}"
username = "{REGISTRY_USER}"
ca_file = "{registry_ca}"
{registry_extra}

[http]
listen = "127.0.0.1:0"
"#,
            port = self.kafka_port,
            secret = self.path("kafka-secret").display(),
            ca = self.path(ca).display(),
            registry = self.registry_url,
            registry_ca = self.path("ca.pem").display(),
        );
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The settings the test itself reads the topics with.
    fn kafka(&self) -> KafkaSettings {
        let mut k = KafkaSettings { bootstrap_servers: format!("127.0.0.1:{}", self.kafka_port), ..Default::default() };
        for (key, value) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", KAFKA_USER),
            ("sasl.password", KAFKA_PASSWORD),
        ] {
            k.properties.insert(key.into(), value.into());
        }
        k.properties.insert("ssl.ca.location".into(), self.path("ca.pem").display().to_string());
        k
    }
}

/// Runs a binary to its end (at most `limit`), with the registry password in the environment
/// as a Secret exposed through `env` would be, and debug logs so that the effective
/// configuration is printed.
fn run(binary: &str, config: &Path, args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(procs::binary(binary))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("KEV_REGISTRY__PASSWORD", REGISTRY_PASSWORD)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{binary} {args:?} still running after {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr).lines().rev().take(30).collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

/// A process killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn assert_no_secret(what: &str, log: &str) {
    for secret in [KAFKA_PASSWORD, REGISTRY_PASSWORD] {
        assert!(!log.contains(secret), "{what} printed a password");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_work_over_tls_and_scram_and_never_print_a_secret() {
    let s = secure().await;
    let config = s.config("secure.toml", "ca.pem");
    let dump = data::dir().join("sbctl.jsonl.gz");
    let events = data::objects("sbctl.jsonl.gz").len();

    let (out, _) = run("kev-producer", &config, &["replay", dump.to_str().unwrap()], Duration::from_secs(120));
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains(&format!("{events} published")), "{log}");
    assert!(log.contains("sasl.password"), "the secret file was read and named: {log}");
    assert!(log.contains("<redacted>"), "the effective configuration was logged, redacted");
    assert_no_secret("kev-producer", &log);
    let raw = outputs::read_topic(&s.kafka(), "kev.events.raw");
    assert!(raw.len() > events, "{} raw records (events and heartbeats)", raw.len());

    // The enricher reads them all over the same secured connections and writes its topics.
    let enricher_log = s.path("enricher.log");
    let log_file = std::fs::File::create(&enricher_log).unwrap();
    let mut enricher = KillOnDrop(
        Command::new(procs::binary("kev-enricher"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("KEV_REGISTRY__PASSWORD", REGISTRY_PASSWORD)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    );
    let mut cfg = outputs::enricher_config(s.kafka(), &s.registry_url);
    cfg.registry.username = Some(REGISTRY_USER.into());
    cfg.registry.password = Some(REGISTRY_PASSWORD.into());
    cfg.registry.ca_file = Some(s.path("ca.pem"));
    outputs::wait_caught_up(&cfg, Duration::from_secs(120)).await;
    let enriched = outputs::read_topic(&s.kafka(), &cfg.topics.enriched);
    assert_eq!(enriched.len(), events, "one enriched event per raw event");
    // Its metrics, scraped while it runs, carry no secret either.
    let log = std::fs::read_to_string(&enricher_log).unwrap();
    let serving = log.lines().find(|l| l.contains("serving /metrics")).expect("the enricher logs its address");
    let addr = regex::Regex::new(r"127\.0\.0\.1:\d+").unwrap().find(serving).unwrap().as_str().to_string();
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("kev_enricher_records_in_total"), "{metrics}");
    assert_no_secret("the enricher's /metrics", &metrics);
    Command::new("kill").args(["-TERM", &enricher.0.id().to_string()]).status().unwrap();
    assert!(enricher.0.wait().unwrap().success());
    let log = std::fs::read_to_string(&enricher_log).unwrap();
    assert!(log.contains("<redacted>"), "the effective configuration was logged, redacted");
    assert_no_secret("kev-enricher", &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_an_untrusted_ca_ends_the_process_with_the_reason() {
    let s = secure().await;
    let dump = data::dir().join("sbctl.jsonl.gz");
    // The registry password from a file wins over the (right) one in the environment.
    std::fs::write(s.path("wrong-registry-password"), "not-the-registry-password").unwrap();
    let registry_extra = format!("password_file = \"{}\"", s.path("wrong-registry-password").display());
    let wrong_registry = s.config_with("wrong-registry.toml", "ca.pem", &registry_extra);
    let untrusted = s.config("untrusted.toml", "other-ca.pem");
    let wrong_password = s.config("wrong-password.toml", "ca.pem");
    let cases = [
        (&wrong_registry, "Schema Registry at https://127.0.0.1", "refused the credentials"),
        (&untrusted, "TLS with Kafka", "certificate verify failed"),
        (&wrong_password, "Kafka at 127.0.0.1", "refused the credentials"),
    ];
    for (config, expected, reason) in cases {
        if config == &wrong_password {
            std::fs::write(s.path("kafka-secret").join("sasl.password"), "not-the-password").unwrap();
        }
        for (binary, args) in [("kev-producer", vec!["replay", dump.to_str().unwrap()]), ("kev-enricher", vec!["run"])]
        {
            let (out, took) = run(binary, config, &args, Duration::from_secs(60));
            let log = text(&out);
            assert!(!out.status.success(), "{binary} with {}: {log}", config.display());
            assert!(log.contains(expected) && log.contains(reason), "{binary}: expected {expected:?} in:\n{log}");
            assert!(took < Duration::from_secs(30), "{binary} took {took:?} to give up");
            assert_no_secret(binary, &log);
            println!(
                "{binary} with {}: exit after {took:?}: {}",
                config.display(),
                log.lines().find(|l| l.starts_with("Error:")).unwrap_or("")
            );
        }
    }
}
