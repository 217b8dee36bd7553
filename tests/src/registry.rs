//! A real schema registry process: Apicurio Registry, through its Confluent-compatible API
//! (`/apis/ccompat/v7`), started, killed and restarted by the tests on a port it picks.
//!
//! The registry double (`kev_common::devregistry`) stays for the fast tests and the embedded
//! first run; what a test proves against a registry kev's users run (subjects registered by
//! TopicNameStrategy, ids resolved by readers, a restart waited out, compatibility enforced by
//! the registry itself) runs here. The release comes from Maven Central
//! (`io.apicurio:apicurio-registry-app:<version>:tar.gz:all`, a Quarkus application), unpacked
//! into `~/.cache/kev/apicurio-registry-<version>` by `scripts/prerequisites.sh --for-tests`.
//! Its storage is H2 in a file under the test's directory (the release's default is H2 in
//! memory): a restart keeps every schema and id, as a production registry's database does,
//! so records written before it still resolve. The release is built for Java 21 (class file
//! 65); the harness runs it with the first Java 21 or newer it finds (see [`java21`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::free_port;
use crate::sandbox::Sandbox;

/// The Apicurio Registry release the harness runs; `scripts/prerequisites.sh` pins the same.
pub const APICURIO_VERSION: &str = "3.3.3";

/// The Confluent-compatible API's path under the registry's root.
pub const CCOMPAT: &str = "/apis/ccompat/v7";

/// Where the unpacked release is: `$KEV_APICURIO_HOME`, else the cache the prerequisites fill.
pub fn apicurio_home() -> PathBuf {
    crate::cached("KEV_APICURIO_HOME", &format!("apicurio-registry-{APICURIO_VERSION}"))
}

/// A Java of major version 21 or newer: `$KEV_APICURIO_JAVA`, else `$JAVA_HOME`'s or `PATH`'s
/// if new enough, else the newest under `/usr/lib/jvm` (this machine kind has Temurin 25 beside
/// Debian's OpenJDK 17, which Kafka runs on).
pub fn java21() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("KEV_APICURIO_JAVA") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var("JAVA_HOME").map(|h| PathBuf::from(h).join("bin/java"));
    let mut candidates: Vec<PathBuf> = home.into_iter().chain([PathBuf::from("java")]).collect();
    let mut jvms: Vec<PathBuf> = std::fs::read_dir("/usr/lib/jvm")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/java"))
        .filter(|p| p.is_file())
        .collect();
    jvms.sort();
    candidates.extend(jvms.into_iter().rev());
    candidates.into_iter().find(|j| java_major(j).is_some_and(|m| m >= 21))
}

/// The major version `java -version` reports.
fn java_major(java: &Path) -> Option<u32> {
    let out = Command::new(java).arg("-version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let quoted = text.split('"').nth(1)?;
    quoted.split('.').next()?.parse().ok()
}

/// An Apicurio Registry process bound to 127.0.0.1. Killed on drop.
pub struct Apicurio {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    log: PathBuf,
    sandbox: Option<Arc<Sandbox>>,
}

/// Where a real node's pods reach a registry started in its sandbox (its Confluent API).
pub const NODE_REGISTRY: &str = "http://10.250.0.1:8081/apis/ccompat/v7";
/// The registry's port inside a sandbox.
const NODE_REGISTRY_PORT: u16 = 8081;

impl Apicurio {
    /// Starts the registry, its log under `dir`, and waits until its Confluent API answers.
    pub fn start(dir: &Path) -> Apicurio {
        Apicurio::start_in(dir, None)
    }

    /// A registry inside `sandbox` when there is one, for a real node's pods: on every address
    /// of the sandbox at port 8081 ([`NODE_REGISTRY`]), and forwarded to `port` of the
    /// machine's 127.0.0.1 for the harness.
    pub fn start_in(dir: &Path, sandbox: Option<Arc<Sandbox>>) -> Apicurio {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        if let Some(s) = &sandbox {
            s.forward_to(port, NODE_REGISTRY_PORT);
        }
        let mut r = Apicurio { child: None, port, dir: dir.to_path_buf(), log: dir.join("apicurio.log"), sandbox };
        r.spawn();
        r
    }

    /// The base URL kev and Confluent's clients are given (the ccompat path included: the
    /// registry serves the Confluent API only under it).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{CCOMPAT}", self.port)
    }

    fn spawn(&mut self) {
        let home = apicurio_home();
        let jar = home.join("quarkus-run.jar");
        assert!(
            jar.is_file(),
            "no Apicurio Registry in {} (run scripts/prerequisites.sh --for-tests, or set KEV_APICURIO_HOME)",
            home.display()
        );
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let java = java21().expect(
            "Apicurio Registry needs Java 21 or newer: none found (JAVA_HOME, PATH, /usr/lib/jvm); set KEV_APICURIO_JAVA",
        );
        let (host, port) = match self.sandbox {
            Some(_) => ("0.0.0.0", NODE_REGISTRY_PORT),
            None => ("127.0.0.1", self.port),
        };
        let child = Sandbox::command_in(self.sandbox.as_deref(), &java)
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"])
            .arg(format!("-Dquarkus.http.host={host}"))
            .arg(format!("-Dquarkus.http.port={port}"))
            // A database that outlives the process; a small pool (the release opens 20).
            .arg(format!("-Dapicurio.datasource.url=jdbc:h2:file:{}", self.dir.join("registry").display()))
            .args([
                "-Dapicurio.datasource.jdbc.initial-size=2",
                "-Dapicurio.datasource.jdbc.min-size=2",
                "-Dapicurio.datasource.jdbc.max-size=10",
            ])
            // Its management port (9000 by default) would be shared by every test.
            .arg("-Dquarkus.management.enabled=false")
            .arg("-jar")
            .arg(&jar)
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Apicurio Registry with {} ({e})", java.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Until `GET <ccompat>/subjects` answers 200.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let url = format!("{}/subjects", self.url());
        loop {
            if crate::plain_http::get_ok(&url).is_some() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("Apicurio Registry exited ({status}) while starting; see {}", self.log.display());
            }
            assert!(
                Instant::now() < deadline,
                "Apicurio Registry did not answer within 120 s; see {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Where the registry's own log is, for a failing test's message.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// SIGKILL: the registry is gone until [`Apicurio::start_again`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again after [`Apicurio::kill`], on the same port and database.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the registry is still running");
        self.spawn();
    }
}

impl Drop for Apicurio {
    fn drop(&mut self) {
        self.kill();
    }
}
