//! `kev-demo`: the README's first command. See the library for what it runs.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kev_demo::{print_summary, run, DemoOptions};
use kev_enricher::report;
use kev_producer::dump::bundled_files;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "kev-demo",
    version,
    about = "Runs producer, enricher and a downstream reader on an embedded Kafka and development Schema Registry"
)]
struct Cli {
    /// Dumps to replay, each under the cluster id of its file name (default: the bundled real
    /// events in tests/data/k8s-events).
    files: Vec<PathBuf>,
    /// Prints window aggregates with at least this many occurrences as they close.
    #[arg(long, default_value_t = 50)]
    noisy: i64,
    /// Replay speed: 0 as fast as possible, else real time times this factor.
    #[arg(long, default_value_t = 0.0)]
    speed: f64,
    /// Where the postmortem report of the run goes.
    #[arg(long, default_value = "kev-report.html")]
    report: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    kev_common::telemetry::init_logging_at(false, "warn");
    let stop = kev_common::shutdown::on_signal();
    let files = if cli.files.is_empty() {
        bundled_files()
            .context("no files given and no bundled samples in tests/data/k8s-events (run from the repository root)")?
    } else {
        cli.files
    };
    let opts = DemoOptions { files, noisy: cli.noisy, speed: cli.speed };
    let mut out = std::io::stdout();
    let outcome = run(&opts, &mut out, &stop).await?;
    print_summary(&mut out, &outcome)?;
    let mut input = outcome.report;
    input.title = "kev first run: the bundled real events".into();
    std::fs::write(&cli.report, report::render(&input)).with_context(|| format!("writing {}", cli.report.display()))?;
    println!("\npostmortem report: {} (open it in a browser; no network needed)", cli.report.display());
    stop.cancel();
    Ok(())
}
