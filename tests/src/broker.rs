//! A real Apache Kafka broker process (KRaft, one combined broker and controller node), started,
//! stopped, killed and restarted by the tests on ports it picks.
//!
//! The jars come from Maven Central (`scripts/kafka/pom.xml`, copied into
//! `~/.cache/kev/kafka-<version>/libs` by `scripts/prerequisites.sh --for-tests`). The broker
//! always has a plaintext listener for the harness itself (readiness, ACL grants, reading back
//! what a secured test wrote); a secured broker adds a SASL_SSL listener with SCRAM-SHA-512
//! users made at format time and, when asked, an SSL listener that requires client certificates,
//! and can run Kafka's `StandardAuthorizer`, where the harness's listener is the only super user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kev_common::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::sandbox::Sandbox;
use crate::tls::TestCa;

/// The Kafka release the harness runs; `scripts/kafka/pom.xml` pins the same.
pub const KAFKA_VERSION: &str = "4.1.1";

/// Where the broker's jars are: `$KEV_KAFKA_LIBS`, else the cache the prerequisites fill.
pub fn kafka_libs() -> PathBuf {
    crate::cached("KEV_KAFKA_LIBS", &format!("kafka-{KAFKA_VERSION}/libs"))
}

/// `java` from `$JAVA_HOME`, else `PATH`.
fn java() -> PathBuf {
    std::env::var("JAVA_HOME").map(|h| PathBuf::from(h).join("bin/java")).unwrap_or_else(|_| PathBuf::from("java"))
}

fn classpath() -> String {
    let libs = kafka_libs();
    assert!(
        libs.is_dir(),
        "no Kafka jars in {} (run scripts/prerequisites.sh --for-tests, or set KEV_KAFKA_LIBS)",
        libs.display()
    );
    format!("{}/*", libs.display())
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// How a secured broker is set up.
#[derive(Clone)]
pub struct Security {
    /// Signs the broker's certificate (and the clients' for mutual TLS).
    pub ca: TestCa,
    /// SCRAM-SHA-512 users (name, password), made when the storage is formatted.
    pub scram_users: Vec<(String, String)>,
    /// Adds an SSL listener with `ssl.client.auth=required`: a client is its certificate's CN.
    pub mutual_tls: bool,
    /// Runs `StandardAuthorizer`: only what ACLs grant is allowed, but on the harness's listener.
    pub acls: bool,
}

/// How a broker is started.
#[derive(Clone, Default)]
pub struct BrokerOptions {
    pub security: Option<Security>,
    /// Extra `server.properties` lines, such as a retention or a smaller segment.
    pub properties: Vec<(String, String)>,
    /// JVM heap, MiB. Default 512.
    pub heap_mb: Option<u32>,
    /// Runs inside this sandbox, for a real node's pods: a plaintext listener for them on the
    /// node's address ([`NODE_KAFKA`]), and the harness's listeners on the sandbox's 127.0.0.1,
    /// forwarded to the machine's under the same ports (so their advertised addresses hold).
    pub sandbox: Option<Arc<Sandbox>>,
}

/// Where a real node's pods reach a broker started in its sandbox.
pub const NODE_KAFKA: &str = "10.250.0.1:9092";

/// A Kafka broker process bound to 127.0.0.1. Killed on drop.
pub struct Broker {
    child: Option<Child>,
    /// The port clients use: the plaintext listener, or the SASL_SSL one on a secured broker.
    pub port: u16,
    /// The harness's plaintext listener (the same as `port` on an unsecured broker).
    pub internal_port: u16,
    /// The mutual-TLS listener, on a broker secured with `mutual_tls`.
    pub mtls_port: Option<u16>,
    controller_port: u16,
    dir: PathBuf,
    log: PathBuf,
    options: BrokerOptions,
}

impl Broker {
    /// A plaintext broker keeping its log under `dir`.
    pub fn start(dir: &Path) -> Broker {
        Self::start_with(dir, BrokerOptions::default())
    }

    pub fn start_with(dir: &Path, options: BrokerOptions) -> Broker {
        let dir = dir.join("kafka");
        std::fs::create_dir_all(&dir).unwrap();
        let internal_port = free_port();
        let secured = options.security.is_some();
        let port = if secured { free_port() } else { internal_port };
        let mtls_port = options.security.as_ref().filter(|s| s.mutual_tls).map(|_| free_port());
        let mut b = Broker {
            child: None,
            port,
            internal_port,
            mtls_port,
            controller_port: free_port(),
            log: dir.join("kafka.log"),
            dir,
            options,
        };
        if let Some(sandbox) = &b.options.sandbox {
            let ports: std::collections::BTreeSet<u16> =
                [Some(b.internal_port), Some(b.port), b.mtls_port].into_iter().flatten().collect();
            for port in ports {
                sandbox.forward(port);
            }
        }
        b.write_config();
        b.format();
        b.spawn();
        b
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("server.properties")
    }

    fn write_config(&self) {
        let mut lines: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: String| lines.push((k.to_string(), v));
        set("process.roles", "broker,controller".into());
        set("node.id", "1".into());
        set("controller.quorum.voters", format!("1@127.0.0.1:{}", self.controller_port));
        set("controller.listener.names", "CONTROLLER".into());
        set("inter.broker.listener.name", "INTERNAL".into());
        let mut listeners = vec![
            format!("INTERNAL://127.0.0.1:{}", self.internal_port),
            format!("CONTROLLER://127.0.0.1:{}", self.controller_port),
        ];
        let mut protocols = vec!["INTERNAL:PLAINTEXT".to_string(), "CONTROLLER:PLAINTEXT".to_string()];
        if self.options.sandbox.is_some() {
            listeners.push(format!("PODS://{NODE_KAFKA}"));
            protocols.push("PODS:PLAINTEXT".into());
        }
        if let Some(sec) = &self.options.security {
            listeners.push(format!("SECURE://127.0.0.1:{}", self.port));
            protocols.push("SECURE:SASL_SSL".into());
            if let Some(mtls) = self.mtls_port {
                listeners.push(format!("MTLS://127.0.0.1:{mtls}"));
                protocols.push("MTLS:SSL".into());
                set("listener.name.mtls.ssl.client.auth", "required".into());
            }
            // PEM stores (KIP-651): the key and chain in one file, the CA in another.
            let keystore = self.dir.join("broker-keystore.pem");
            std::fs::write(&keystore, format!("{}{}", sec.ca.server_key_pem, sec.ca.server_cert_pem)).unwrap();
            let truststore = self.dir.join("broker-truststore.pem");
            std::fs::write(&truststore, &sec.ca.ca_pem).unwrap();
            set("ssl.keystore.type", "PEM".into());
            set("ssl.keystore.location", keystore.display().to_string());
            set("ssl.truststore.type", "PEM".into());
            set("ssl.truststore.location", truststore.display().to_string());
            // A certificate's principal is its CN, as SCRAM's is the user name.
            set("ssl.principal.mapping.rules", "RULE:^CN=([^,]+)$/$1/,DEFAULT".into());
            set("listener.name.secure.sasl.enabled.mechanisms", "SCRAM-SHA-512".into());
            set(
                "listener.name.secure.scram-sha-512.sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
            );
            if sec.acls {
                set("authorizer.class.name", "org.apache.kafka.metadata.authorizer.StandardAuthorizer".into());
                // The plaintext listeners (the harness's and the controller's) are ANONYMOUS.
                set("super.users", "User:ANONYMOUS".into());
            }
        }
        set("listeners", listeners.join(","));
        set(
            "advertised.listeners",
            listeners.iter().filter(|l| !l.starts_with("CONTROLLER")).cloned().collect::<Vec<_>>().join(","),
        );
        set("listener.security.protocol.map", protocols.join(","));
        set("log.dirs", self.data_dir().display().to_string());
        // One node: every internal topic with one replica, and few partitions so that the
        // first group or transaction does not wait for fifty of them to be created.
        for (k, v) in [
            ("offsets.topic.replication.factor", "1"),
            ("offsets.topic.num.partitions", "1"),
            ("transaction.state.log.replication.factor", "1"),
            ("transaction.state.log.min.isr", "1"),
            ("transaction.state.log.num.partitions", "1"),
            ("share.coordinator.state.topic.replication.factor", "1"),
            ("share.coordinator.state.topic.min.isr", "1"),
            ("group.initial.rebalance.delay.ms", "0"),
            // The tests' killed consumers leave the group within seconds, not Kafka's 6 s
            // minimum session; kev's own defaults do not depend on it.
            ("group.min.session.timeout.ms", "1000"),
            // Segments roll by record time: the dumps' event times (years old) would otherwise
            // roll a segment for every batch of the enricher's outputs.
            ("log.roll.ms", "315360000000"),
            ("num.partitions", "3"),
        ] {
            set(k, v.into());
        }
        for (k, v) in &self.options.properties {
            set(k, v.clone());
        }
        let text: String = lines.iter().map(|(k, v)| format!("{k}={}\n", v.replace('\\', "\\\\"))).collect();
        std::fs::write(self.config_path(), text).unwrap();
        std::fs::write(
            self.dir.join("log4j2.yaml"),
            "Configuration:\n  Appenders:\n    Console:\n      name: STDOUT\n      target: SYSTEM_OUT\n      \
             PatternLayout:\n        pattern: \"[%d] %p %m (%c)%n\"\n  Loggers:\n    Root:\n      level: INFO\n      \
             AppenderRef:\n        - ref: STDOUT\n",
        )
        .unwrap();
    }

    /// `kafka-storage format`, once per log directory, with the SCRAM users.
    fn format(&self) {
        if self.data_dir().join("meta.properties").exists() {
            return;
        }
        let mut cmd = Command::new(java());
        cmd.args(["-cp", &classpath(), "kafka.tools.StorageTool", "format", "-t", "a2V2LWtldi1rZXYta2V2LQ", "-c"])
            .arg(self.config_path());
        for (name, password) in self.options.security.iter().flat_map(|s| s.scram_users.iter()) {
            cmd.arg("--add-scram").arg(format!("SCRAM-SHA-512=[name={name},password={password}]"));
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {} ({e}): Java 17 is needed", java().display()));
        assert!(
            out.status.success(),
            "kafka storage format failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let heap = self.options.heap_mb.unwrap_or(512);
        let child = Sandbox::command_in(self.options.sandbox.as_deref(), java())
            .arg(format!("-Xmx{heap}m"))
            .arg(format!("-Xms{heap}m"))
            .args([
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
            ])
            .arg(format!("-Dlog4j2.configurationFile={}", self.dir.join("log4j2.yaml").display()))
            .args(["-cp", &classpath(), "kafka.Kafka"])
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Kafka with {} ({e}): Java 17 is needed", java().display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Until the broker answers metadata on the harness's listener and names itself.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let settings = self.internal_settings();
        let consumer: BaseConsumer = settings.client_config(&[("log_level", "0")]).create().unwrap();
        loop {
            if let Ok(md) = consumer.fetch_metadata(None, Duration::from_secs(2)) {
                if !md.brokers().is_empty() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("Kafka exited ({status}) while starting; see {}", self.log.display());
            }
            assert!(Instant::now() < deadline, "Kafka did not answer within 90s; see {}", self.log.display());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `host:port` of the client listener.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Settings for the client listener (plaintext on an unsecured broker; a secured one's
    /// clients add their own credentials).
    pub fn settings(&self) -> KafkaSettings {
        KafkaSettings { bootstrap_servers: self.bootstrap(), ..Default::default() }
    }

    /// Settings for the harness's own plaintext listener, a super user under ACLs.
    pub fn internal_settings(&self) -> KafkaSettings {
        KafkaSettings { bootstrap_servers: format!("127.0.0.1:{}", self.internal_port), ..Default::default() }
    }

    /// Where the broker's own log is, for a failing test's message.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Runs Kafka's `AclCommand` against the harness's listener with `args` after
    /// `--bootstrap-server`, such as `["--add", "--allow-principal", "User:kev", ...]`.
    pub fn acl_command(&self, args: &[&str]) {
        let out = Command::new(java())
            .args(["-cp", &classpath(), "org.apache.kafka.tools.AclCommand", "--bootstrap-server"])
            .arg(format!("127.0.0.1:{}", self.internal_port))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "AclCommand {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// CPU time (user + system) the broker process has used so far, in seconds: benchmarks
    /// read it around a phase to say what the broker's share of the work was.
    pub fn cpu_seconds(&self) -> f64 {
        self.child.as_ref().map_or(0.0, |c| crate::bench::process_cpu_seconds(&format!("/proc/{}/stat", c.id())))
    }

    /// Peak resident memory of the broker process so far, bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.child.as_ref().map_or(0, |c| crate::bench::peak_rss_bytes(c.id()))
    }

    /// SIGKILL, as a crashed node: nothing is flushed but what the OS already has.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, a controlled shutdown, waited for (SIGKILL after 60 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.wait();
        }
    }

    /// SIGKILL, then start again on the same ports and log directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the process is running (it may not answer yet).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Starts again after [`Broker::kill`] or [`Broker::stop`], on the same ports and log.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the broker is still running");
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    /// The harness and `scripts/prerequisites.sh` (which reads the POM) name the same release.
    #[test]
    fn the_pinned_version_is_the_poms() {
        let pom = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka/pom.xml")).unwrap();
        assert!(pom.contains(&format!("<kafka.version>{}</kafka.version>", super::KAFKA_VERSION)), "{pom}");
    }
}
