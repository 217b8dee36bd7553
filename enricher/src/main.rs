//! The `kev-enricher` binary: reads configuration, starts telemetry, runs a subcommand.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kev_common::credentials::{self, OnMissing};
use kev_common::telemetry::{self, Health};
use kev_enricher::incidents::{self, Filter, Format};
use kev_enricher::partition::EngineSpec;
use kev_enricher::replay::{self, Sink, TimeRange};
use kev_enricher::report::{self, ReportInput};
use kev_enricher::routes::Router;
use kev_enricher::{emit, live, topics, EnricherConfig};

/// The engine allocates many small strings per event; mimalloc measured about 10% faster than
/// the system allocator in the engine benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "kev-enricher", version, about = "Grades, groups and correlates Kubernetes Events from Kafka")]
struct Cli {
    /// Configuration file (TOML, YAML or JSON). `KEV_*` variables and --set override it.
    #[arg(long, short, env = "KEV_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides one setting, such as `--set kafka.bootstrap_servers=broker:9092`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consumes the raw topic as a member of the consumer group and emits enriched events,
    /// window aggregates, incidents and dead letters, until SIGTERM.
    Run,
    /// Re-derives the records of an event-time range from the raw log, for a postmortem.
    Replay {
        /// Start of the range (RFC 3339, inclusive), such as 2024-01-31T10:00:00Z.
        #[arg(long)]
        from: String,
        /// End of the range (RFC 3339, exclusive).
        #[arg(long)]
        to: String,
        /// Writes JSON Lines to this file (`-` for standard output).
        #[arg(long, conflicts_with = "topic_suffix")]
        output: Option<PathBuf>,
        /// Writes to the output topics with this suffix appended to each name, such as `.replay`.
        #[arg(long)]
        topic_suffix: Option<String>,
    },
    /// Writes the postmortem report of an event-time range: one self-contained HTML file with
    /// a timeline of incidents, their member events and the top aggregates, re-derived from the
    /// raw log like `replay`.
    Report {
        /// Start of the range (RFC 3339, inclusive).
        #[arg(long)]
        from: String,
        /// End of the range (RFC 3339, exclusive).
        #[arg(long)]
        to: String,
        /// The HTML file to write.
        #[arg(long, default_value = "kev-report.html")]
        output: PathBuf,
    },
    /// Creates the missing output and checkpoint topics with their cleanup policies.
    CreateTopics,
    /// Lists the incidents as they stand, read from the incidents topic, like `kubectl get`;
    /// `incidents describe ID` shows one with its member events in time order.
    Incidents {
        #[command(subcommand)]
        describe: Option<IncidentsCommand>,
        /// Only this cluster's incidents.
        #[arg(long)]
        cluster: Option<String>,
        /// Only incidents whose root cause or scope is in this namespace.
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// Only incidents not resolved.
        #[arg(long)]
        open: bool,
        /// Only incidents updated since this time: a duration back from now (`2h`, `30m`) or an
        /// RFC 3339 time (`2024-01-31T10:00:00Z`; incidents carry event time).
        #[arg(long)]
        since: Option<String>,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Format,
    },
}

#[derive(Subcommand)]
enum IncidentsCommand {
    /// One incident as it stands and its member events in event-time order.
    Describe {
        /// The incident id, as the list prints it.
        id: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut cfg: EnricherConfig = kev_common::config::load(cli.config.as_deref(), &cli.set)?;
    telemetry::init_logging(cfg.log_json);
    let stop = kev_common::shutdown::on_signal();
    // `run`, a service, serves its probes from the start and waits for credentials from
    // Secrets not ready, saying which file is missing; the one-off commands stop on them.
    let health = match cli.command {
        Command::Run => {
            let health = Health::new();
            let addr = telemetry::serve(cfg.http.listen, health.clone(), stop.clone())
                .await
                .context("starting the HTTP server")?;
            tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
            Some(health)
        }
        _ => None,
    };
    let on_missing = health.as_ref().map_or(OnMissing::Stop, |h| OnMissing::Wait(h, &stop));
    if !credentials::read_mounted(&mut cfg.kafka, || cfg.registry.missing_files(), on_missing).await? {
        return Ok(());
    }
    // Secret values print as <redacted> (KafkaSettings' and RegistrySettings' Debug).
    tracing::debug!(config = ?cfg, "effective configuration");
    // A broken rules file is refused here, before anything connects.
    let spec = EngineSpec::load(&cfg).context("loading the rules")?;
    Router::for_topics(&cfg.topics).context("topics.routes")?;
    let codec = Arc::new(cfg.registry.codec().context("schema registry client")?);
    // A wrong password or an untrusted CA ends the process here, saying so.
    if !kev_common::kafka::check_connection(&cfg.kafka, std::time::Duration::from_secs(10)).await? {
        tracing::warn!(servers = %cfg.kafka.bootstrap_servers, "Kafka has not answered yet; retrying in the background");
    }
    if !cfg.registry.check_access().await? {
        tracing::warn!(url = %cfg.registry.url, "the Schema Registry has not answered yet; retrying when needed");
    }

    match cli.command {
        Command::Incidents { describe: Some(IncidentsCommand::Describe { id }), .. } => {
            print!("{}", incidents::describe(&cfg, &codec, &id).await?);
        }
        Command::Incidents { describe: None, cluster, namespace, open, since, output } => {
            let since_ms = since.as_deref().map(since_ms).transpose()?;
            let filter = Filter { cluster, namespace, open_only: open, since_ms };
            let current = incidents::current(&cfg, &codec).await?;
            if current.undecodable > 0 {
                eprintln!(
                    "{} of {} records of {} did not decode and are left out (see the warnings above)",
                    current.undecodable, current.records, cfg.topics.incidents
                );
            }
            let shown: Vec<_> = current.incidents.iter().filter(|i| filter.admits(i)).collect();
            if shown.is_empty() && matches!(output, Format::Table | Format::Wide) {
                eprintln!("No incidents found in {}.", cfg.topics.incidents);
            } else {
                print!("{}", incidents::render(&shown, output)?);
            }
        }
        Command::CreateTopics => {
            topics::create(&cfg.kafka, &cfg.topics).await.context("creating topics")?;
            eprintln!("topics ready");
        }
        Command::Run => {
            let health = health.expect("served above for `run`");
            if cfg.topics.create {
                // Kafka not there yet (or a wrong address): up and not ready, saying so.
                let stage = format!("Kafka at {}: creating topics", cfg.kafka.bootstrap_servers);
                let created = kev_common::retry::until_done(
                    &stage,
                    &health,
                    &stop,
                    || topics::create(&cfg.kafka, &cfg.topics),
                    |e| matches!(e, topics::TopicsError::Refused(_)),
                )
                .await
                .context("creating topics")?;
                if created.is_none() {
                    return Ok(());
                }
            }
            let stats = live::run_until_stopped(&cfg, &spec, codec, health, stop.clone()).await?;
            eprintln!(
                "stopped: {} raw records in, {} records out ({} dead letters), {} re-read to rebuild state, {} commits",
                stats.records_in, stats.records_out, stats.dead_letters, stats.recovered_records, stats.commits
            );
        }
        Command::Report { from, to, output } => {
            let range = time_range(&from, &to)?;
            let title = format!("kev postmortem report: {from} to {to}");
            let mut sink = Sink::Report(Box::new(ReportInput::new(title, Some(range))));
            let stats = replay::replay(&cfg, &spec, &codec, range, &mut sink, &stop).await?;
            let Sink::Report(input) = sink else { unreachable!("the sink made above") };
            std::fs::write(&output, report::render(&input)).with_context(|| format!("writing {}", output.display()))?;
            eprintln!(
                "report written to {}: {} incidents, {} aggregate records, {} enriched events ({} raw records read)",
                output.display(),
                input.latest_incidents().len(),
                input.aggregates.len(),
                input.events.len(),
                stats.records_read
            );
        }
        Command::Replay { from, to, output, topic_suffix } => {
            let range = time_range(&from, &to)?;
            let mut sink = match (output, topic_suffix) {
                (Some(p), _) if p.as_os_str() == "-" => Sink::Jsonl(Box::new(std::io::stdout())),
                (Some(p), _) => Sink::Jsonl(Box::new(std::io::BufWriter::new(
                    std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?,
                ))),
                (None, Some(suffix)) => {
                    anyhow::ensure!(!suffix.is_empty(), "--topic-suffix must not be empty");
                    let t = replay::suffixed(&cfg.topics, &suffix);
                    if cfg.topics.create {
                        topics::create(&cfg.kafka, &t).await.context("creating the replay topics")?;
                    }
                    let producer = Arc::new(emit::producer(&cfg.kafka, None)?);
                    let router = Router::for_topics(&t).context("topics.routes")?;
                    // A postmortem replay re-tells the past: it raises no alerts.
                    Sink::Topics(Box::new(emit::Emitter {
                        producer,
                        codec: codec.clone(),
                        topics: t,
                        health: Health::new(),
                        router,
                        alerts: None,
                        meters: Default::default(),
                    }))
                }
                (None, None) => anyhow::bail!("give --output FILE or --topic-suffix SUFFIX"),
            };
            let stats = replay::replay(&cfg, &spec, &codec, range, &mut sink, &stop).await?;
            if let Sink::Jsonl(mut w) = sink {
                w.flush().context("writing the replay")?;
            }
            eprintln!(
                "replay done: {} raw records read, {} records in range written; started at {:?}; checkpoint time lookups {:?}",
                stats.records_read, stats.records_written, stats.started_at, stats.time_lookups
            );
        }
    }
    stop.cancel();
    Ok(())
}

/// `--since`: an RFC 3339 time, or a duration back from now. Incidents carry event time, so a
/// postmortem of an old range names its time; a live look back names a duration.
fn since_ms(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = replay::parse_time(text) {
        return Ok(ms);
    }
    let back = humantime::parse_duration(text)
        .with_context(|| format!("--since {text:?} is neither an RFC 3339 time nor a duration such as 2h"))?;
    Ok(chrono::Utc::now().timestamp_millis() - i64::try_from(back.as_millis()).unwrap_or(i64::MAX))
}

fn time_range(from: &str, to: &str) -> anyhow::Result<TimeRange> {
    let range = TimeRange {
        from_ms: replay::parse_time(from).map_err(anyhow::Error::msg)?,
        to_ms: replay::parse_time(to).map_err(anyhow::Error::msg)?,
    };
    anyhow::ensure!(range.from_ms < range.to_ms, "--from must be before --to");
    Ok(range)
}
