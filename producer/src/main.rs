//! The `kev-producer` binary: reads configuration, starts telemetry, wires the pieces, waits.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kev_common::credentials::{self, OnMissing};
use kev_common::telemetry::{self, Health};
use kev_producer::{readback, run, ProducerConfig};

/// A replay builds and drops a JSON tree, a parsed Event and an Avro record per object: on the
/// system allocator a third of its CPU went to malloc (BENCHMARKS-side-by-side.md, the producer).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "kev-producer", version, about = "Publishes Kubernetes Events to Kafka, exactly once")]
struct Cli {
    /// Configuration file (TOML, YAML or JSON). `KEV_*` variables and --set override it.
    #[arg(long, short, env = "KEV_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides one setting, such as `--set kafka.bootstrap_servers=broker:9092`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Runs against an in-process Kafka (librdkafka's mock cluster) and an in-process
    /// development Schema Registry, then prints what was published. For trying kev out.
    #[arg(long)]
    embedded: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watches the Events API of the cluster that the kubeconfig (or the in-cluster service
    /// account) names, and publishes every new event and update.
    Watch,
    /// Replays dump files (kubectl List JSON/YAML, JSON Lines, must-gather events.yaml, gzipped
    /// or not) in event-time order.
    Replay {
        /// Dump files; none given: `source.files`, else with --embedded the bundled samples in
        /// tests/data/k8s-events.
        files: Vec<PathBuf>,
        /// 0 as fast as possible, otherwise real time times this factor.
        #[arg(long)]
        speed: Option<f64>,
        /// Cluster id to publish under (the record key).
        #[arg(long)]
        cluster: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut cfg: ProducerConfig = kev_common::config::load(cli.config.as_deref(), &cli.set)?;
    telemetry::init_logging(cfg.log_json);
    let stop = kev_common::shutdown::on_signal();
    let health = Health::new();

    // Embedded services live until main returns.
    let mut _mock = None;
    if cli.embedded {
        let mock = rdkafka::mocking::MockCluster::new(1).context("starting the embedded Kafka")?;
        mock.create_topic(&cfg.topic.name, cfg.topic.partitions, 1).context("creating the raw topic")?;
        cfg.kafka.bootstrap_servers = mock.bootstrap_servers();
        // The mock cluster has no CreateTopics; the topic is made above.
        cfg.topic.create = false;
        let registry =
            kev_common::devregistry::DevRegistry::start(SocketAddr::from(([127, 0, 0, 1], 0)), stop.clone()).await?;
        cfg.registry.url = registry.url.clone();
        cfg.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        eprintln!(
            "embedded Kafka at {} and development Schema Registry at {}",
            cfg.kafka.bootstrap_servers, cfg.registry.url
        );
        _mock = Some(mock);
    }
    let addr =
        telemetry::serve(cfg.http.listen, health.clone(), stop.clone()).await.context("starting the HTTP server")?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    // Credentials from Secrets: the watch, a service, waits for them not ready, saying which
    // file is missing; a replay, a one-off, stops on them.
    let on_missing = match cli.command {
        Command::Watch => OnMissing::Wait(&health, &stop),
        Command::Replay { .. } => OnMissing::Stop,
    };
    if !credentials::read_mounted(&mut cfg.kafka, || cfg.registry.missing_files(), on_missing).await? {
        return Ok(());
    }
    // Secret values print as <redacted> (KafkaSettings' and RegistrySettings' Debug).
    tracing::debug!(config = ?cfg, "effective configuration");
    // A wrong password or an untrusted CA ends the process here, saying so.
    if !kev_common::kafka::check_connection(&cfg.kafka, std::time::Duration::from_secs(10)).await? {
        tracing::warn!(servers = %cfg.kafka.bootstrap_servers, "Kafka has not answered yet; retrying in the background");
        health.set_ready(false, format!("Kafka at {} has not answered yet", cfg.kafka.bootstrap_servers));
    }
    if !cfg.registry.check_access().await? {
        tracing::warn!(url = %cfg.registry.url, "the Schema Registry has not answered yet; retrying when needed");
    }

    match cli.command {
        Command::Watch => {
            cfg.validate().map_err(anyhow::Error::msg)?;
            let client =
                kube::Client::try_default().await.context("no Kubernetes configuration (kubeconfig or in-cluster)")?;
            let stats = run::watch(&cfg, client, health, stop.clone()).await?;
            eprintln!("stopped: {} published, {} duplicates suppressed", stats.published, stats.duplicates);
        }
        Command::Replay { files, speed, cluster } => {
            if let Some(s) = speed {
                cfg.source.speed = s;
            }
            if let Some(c) = cluster {
                cfg.cluster_id = c;
            }
            cfg.validate().map_err(anyhow::Error::msg)?;
            let files = match (files.is_empty(), cfg.source.files.is_empty()) {
                (false, _) => files,
                (true, false) => cfg.source.files.clone(),
                (true, true) => default_files(cli.embedded)?,
            };
            let stats = run::replay(&cfg, files, health, stop.clone()).await?;
            eprintln!(
                "replay done: {} objects observed, {} published, {} duplicates and {} stale suppressed, {} filtered, {} invalid, {} heartbeats",
                stats.observed, stats.published, stats.duplicates, stats.stale, stats.filtered, stats.invalid, stats.heartbeats
            );
            if cli.embedded {
                let codec = run::codec(&cfg)?;
                let records = readback::read_all(&cfg.kafka, &cfg.topic.name, &codec).await?;
                print!("{}", readback::Summary::of(&records));
            }
        }
    }
    stop.cancel();
    Ok(())
}

/// The bundled samples, when run from a clone of the repository.
fn default_files(embedded: bool) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(embedded, "give the dump files to replay");
    kev_producer::dump::bundled_files().with_context(|| {
        format!(
            "no files given and no bundled samples at {} (run from the repository root)",
            kev_producer::dump::BUNDLED_DIR
        )
    })
}
