//! A real Kafka-protocol broker process: tansu, started and killed by the tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kev_common::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Where tansu is: `$TANSU_BIN`, else the cache `.ci/run` installs into, else `PATH`.
pub fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = PathBuf::from(home).join(".cache/kev/tansu-0.6.0/bin/tansu");
    if cached.exists() {
        return cached;
    }
    PathBuf::from("tansu")
}

/// How the broker stores data.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Fast; lost when the broker process dies.
    Memory,
    /// Survives a SIGKILL of the broker; about ten times slower.
    Sqlite(PathBuf),
}

/// A tansu broker process bound to 127.0.0.1. Killed on drop.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    storage: Storage,
    log: PathBuf,
    options: BrokerOptions,
}

/// How a broker is started besides its storage.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrokerOptions {
    /// `--authentication`: clients must log in with SASL (users made by [`Broker::create_user`]).
    pub authentication: bool,
    /// The port tansu tells clients to connect to, when something (a TLS proxy) listens there
    /// in front of it. Default: its own.
    pub advertised_port: Option<u16>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Broker {
    pub fn start(storage: Storage, log_dir: &Path) -> Broker {
        Self::start_with(storage, log_dir, BrokerOptions::default())
    }

    pub fn start_with(storage: Storage, log_dir: &Path, options: BrokerOptions) -> Broker {
        let mut b = Broker { child: None, port: free_port(), storage, log: log_dir.join("tansu.log"), options };
        b.spawn();
        b
    }

    /// Makes a SCRAM-SHA-512 user (`tansu user create`). Only a broker without
    /// `authentication` takes it, since the request needs a session; the sqlite storage keeps
    /// the user for a restart with authentication on ([`Broker::restart_with`]).
    pub fn create_user(&self, name: &str, password: &str) {
        let status = Command::new(tansu_binary())
            .args(["user", "create", "--broker", &format!("tcp://127.0.0.1:{}", self.port), name, password])
            .stdout(Stdio::null())
            .status()
            .expect("running tansu user create");
        assert!(status.success(), "tansu user create {name} failed");
    }

    /// Starts again on the same port and storage with other options.
    pub fn restart_with(&mut self, options: BrokerOptions) {
        self.kill();
        self.options = options;
        self.spawn();
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.options.advertised_port.unwrap_or(self.port));
        let mut args = vec!["broker", "--listener-url", &url, "--advertised-listener-url", &advertised];
        if self.options.authentication {
            args.push("--authentication");
        }
        let engine = match &self.storage {
            Storage::Memory => "memory://tansu/".to_string(),
            // tansu resolves the path against its working directory, so give it a name there.
            Storage::Sqlite(p) => format!("sqlite://{}", p.file_name().unwrap().to_string_lossy()),
        };
        let cwd = match &self.storage {
            Storage::Sqlite(p) => p.parent().unwrap().to_path_buf(),
            Storage::Memory => self.log.parent().unwrap().to_path_buf(),
        };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(tansu_binary())
            .args(args)
            .args(["--storage-engine", &engine])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start tansu ({}): {e}; run .ci/run or set TANSU_BIN", tansu_binary().display())
            });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        if self.options.authentication {
            // Without credentials only the port can be checked.
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                assert!(Instant::now() < deadline, "tansu did not listen within 60s; see {}", self.log.display());
                std::thread::sleep(Duration::from_millis(200));
            }
            return;
        }
        let settings = self.settings();
        loop {
            let consumer: BaseConsumer = settings.client_config(&[]).create().unwrap();
            if consumer.fetch_metadata(None, Duration::from_secs(2)).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "tansu did not answer within 60s; see {}", self.log.display());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn settings(&self) -> KafkaSettings {
        KafkaSettings { bootstrap_servers: self.bootstrap(), ..Default::default() }
    }

    /// SIGKILL, as a crashed node.
    /// CPU time (user + system) the broker process has used so far, in seconds: benchmarks
    /// read it around a phase to say what the broker's share of the work was.
    pub fn cpu_seconds(&self) -> f64 {
        self.child.as_ref().map_or(0.0, |c| crate::bench::process_cpu_seconds(&format!("/proc/{}/stat", c.id())))
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
