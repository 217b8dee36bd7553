//! Secure connections, end to end with both binaries as processes: Kafka's own SASL_SSL
//! listener with SCRAM-SHA-512 users made at format time, and an SSL listener that requires
//! client certificates (mutual TLS), each with a certificate from a CA the test makes; the
//! Schema Registry test double over HTTPS (the proxy of `kev_tests::tls`) with basic auth.
//! Credentials come from files (a mounted Secret) and an environment variable, and must never
//! show in logs or metrics. A wrong password for either, an untrusted CA, or a missing or
//! untrusted client certificate ends each binary within seconds with the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kev_common::devregistry::DevRegistry;
use kev_common::kafka::KafkaSettings;
use kev_tests::broker::{Broker, BrokerOptions, Security};
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
    mtls_port: u16,
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
    let security = Security {
        ca: ca.clone(),
        scram_users: vec![(KAFKA_USER.into(), KAFKA_PASSWORD.into())],
        mutual_tls: true,
        acls: false,
    };
    let broker = Broker::start_with(dir.path(), BrokerOptions { security: Some(security), ..Default::default() });
    let kafka_port = broker.port;
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
    // Client certificates for mutual TLS: one from the broker's CA, one from another.
    let client = ca.client("kev");
    std::fs::write(dir.path().join("client.pem"), &client.cert_pem).unwrap();
    std::fs::write(dir.path().join("client.key"), &client.key_pem).unwrap();
    let stranger = TestCa::new("stranger").client("kev");
    std::fs::write(dir.path().join("stranger.pem"), &stranger.cert_pem).unwrap();
    std::fs::write(dir.path().join("stranger.key"), &stranger.key_pem).unwrap();
    let mtls_port = broker.mtls_port.unwrap();
    Secure { dir, _broker: broker, kafka_port, mtls_port, registry_url, cancel }
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
        let kafka = format!(
            r#"
[kafka]
bootstrap_servers = "127.0.0.1:{port}"
secret_properties_dir = "{secret}"

[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "{KAFKA_USER}"
"ssl.ca.location" = "{ca}"
"#,
            port = self.kafka_port,
            secret = self.path("kafka-secret").display(),
            ca = self.path(ca).display(),
        );
        self.write_config(name, &kafka, registry_extra)
    }

    /// A configuration for the mutual-TLS listener with the client certificate `cert` (and
    /// its key `cert` with `.key` for `.pem`), or none.
    fn mtls_config(&self, name: &str, cert: Option<&str>) -> PathBuf {
        let mut kafka = format!(
            r#"
[kafka]
bootstrap_servers = "127.0.0.1:{port}"

[kafka.properties]
"security.protocol" = "SSL"
"ssl.ca.location" = "{ca}"
"#,
            port = self.mtls_port,
            ca = self.path("ca.pem").display(),
        );
        if let Some(cert) = cert {
            kafka.push_str(&format!(
                "\"ssl.certificate.location\" = \"{}\"\n\"ssl.key.location\" = \"{}\"\n",
                self.path(cert).display(),
                self.path(&cert.replace(".pem", ".key")).display()
            ));
        }
        self.write_config(name, &kafka, "")
    }

    fn write_config(&self, name: &str, kafka: &str, registry_extra: &str) -> PathBuf {
        let text = format!(
            r#"{kafka}
[registry]
url = "{registry}"
username = "{REGISTRY_USER}"
ca_file = "{registry_ca}"
{registry_extra}

[http]
listen = "127.0.0.1:0"
"#,
            registry = self.registry_url,
            registry_ca = self.path("ca.pem").display(),
        );
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The enricher configuration the test reads the outputs with, over the secured
    /// connections.
    fn reader_config(&self) -> kev_enricher::EnricherConfig {
        let mut cfg = outputs::enricher_config(self.kafka(), &self.registry_url);
        cfg.registry.username = Some(REGISTRY_USER.into());
        cfg.registry.password = Some(REGISTRY_PASSWORD.into());
        cfg.registry.ca_file = Some(self.path("ca.pem"));
        cfg
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
    let mut command = procs::command(binary);
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env("KEV_REGISTRY__PASSWORD", REGISTRY_PASSWORD)
        .env("RUST_LOG", "debug");
    let (out, took, killed) = procs::run_to_end(command, limit);
    assert!(
        !killed,
        "{binary} {args:?} still running after {limit:?}:\n{}",
        String::from_utf8_lossy(&out.stderr).lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    (out, took)
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
        procs::command("kev-enricher")
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
    let cfg = s.reader_config();
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

/// Mutual TLS: both binaries work with a client certificate from the broker's CA, given as
/// librdkafka's file properties (a mounted Secret), and end within seconds, saying why, with
/// none or with one from another CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_takes_a_trusted_client_certificate_and_refuses_others() {
    let s = secure().await;
    let dump = data::dir().join("sbctl.jsonl.gz");
    let events = data::objects("sbctl.jsonl.gz").len();
    let trusted = s.mtls_config("mtls.toml", Some("client.pem"));
    let (out, _) = run("kev-producer", &trusted, &["replay", dump.to_str().unwrap()], Duration::from_secs(120));
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains(&format!("{events} published")), "{log}");
    assert_no_secret("kev-producer", &log);
    let mut enricher = KillOnDrop(
        procs::command("kev-enricher")
            .arg("--config")
            .arg(&trusted)
            .arg("run")
            .env("KEV_REGISTRY__PASSWORD", REGISTRY_PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let cfg = s.reader_config();
    outputs::wait_caught_up(&cfg, Duration::from_secs(120)).await;
    assert_eq!(outputs::read_topic(&s.kafka(), &cfg.topics.enriched).len(), events, "one enriched event per raw event");
    Command::new("kill").args(["-TERM", &enricher.0.id().to_string()]).status().unwrap();
    assert!(enricher.0.wait().unwrap().success());

    let cases = [
        (s.mtls_config("no-client-cert.toml", None), "no client certificate"),
        (s.mtls_config("stranger.toml", Some("stranger.pem")), "a certificate from another CA"),
    ];
    for (config, what) in &cases {
        for (binary, args) in [("kev-producer", vec!["replay", dump.to_str().unwrap()]), ("kev-enricher", vec!["run"])]
        {
            let (out, took) = run(binary, config, &args, Duration::from_secs(60));
            let log = text(&out);
            assert!(!out.status.success(), "{binary} with {what}: {log}");
            assert!(
                log.contains("TLS with Kafka at 127.0.0.1"),
                "{binary} with {what}: expected the TLS failure in:\n{log}"
            );
            assert!(
                log.contains("ssl.certificate.location"),
                "{binary} with {what}: the message names the setting:\n{log}"
            );
            assert!(took < Duration::from_secs(30), "{binary} took {took:?} to give up");
            println!(
                "{binary} with {what}: exit after {took:?}: {}",
                log.lines().find(|l| l.starts_with("Error:")).unwrap_or("")
            );
        }
    }
}
