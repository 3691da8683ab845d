//! `telerelay-bench`: drives the real services (the release binaries, as processes) over the
//! real broker and database with full durability on, beside a raw lapin pipe measured in the
//! same run, and prints one summary line per scenario:
//!
//! 1. drain — a backlog of mixed requests through the whole relay, requests fully recorded
//!    (result delivered, in PostgreSQL) per second, against the raw pipe's rate;
//! 2. stat — STAT ECGs behind a routine backlog: publish → on the STAT lane, p50 / p99;
//! 3. footprint — each service's resident memory at idle and under the drain, CPU per request;
//! 4. scale — two dispatchers and two recorders: throughput and exactly-once counts.
//!
//! It creates a database and a broker namespace of its own and removes both at the end.

mod drain;
mod load;
mod procfs;
mod raw_pipe;
mod relay;
mod scale;
mod services;
mod setup;
mod stat;
mod stats;

use anyhow::Context as _;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Benchmarks the relay against its broker's raw speed (issue 6). See BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "telerelay-bench")]
struct Args {
    /// Scenarios to run, comma-separated: drain (with the footprint), scale, stat (run in that
    /// order).
    #[arg(long, value_delimiter = ',', default_value = "drain,scale,stat")]
    scenarios: Vec<Scenario>,
    /// Requests in the drain and in the scale-out run.
    #[arg(long, default_value_t = 2_000)]
    requests: usize,
    /// Routine requests waiting when the STAT ECGs arrive.
    #[arg(long, default_value_t = 100_000)]
    backlog: usize,
    /// STAT ECGs published behind the backlog.
    #[arg(long, default_value_t = 200)]
    stat: usize,
    /// STAT ECGs per second.
    #[arg(long, default_value_t = 10.0)]
    stat_rate: f64,
    /// Publish the STAT ECGs on the express lane's routing key (`<origin>.ecg.stat`); with
    /// `--stat-routing plain`, on `<origin>.ecg` as before the express lane existed.
    #[arg(long, value_enum, default_value = "express")]
    stat_routing: StatRouting,
    /// Runs the drain this many times and reports each run and the median.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Where the dispatcher, recorder and review-desk binaries are (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The operator's broker URL; the bench's county publishes as this user.
    #[arg(
        long,
        env = "TELERELAY_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// A database URL on the server where the bench may create (and drop) its own database.
    #[arg(
        long,
        env = "TELERELAY_DATABASE_URL",
        default_value = "postgres://telerelay:telerelay@127.0.0.1:5432/telerelay"
    )]
    database_url: String,
    /// The real clinical data (ECG records, DICOM files); see README "Real clinical data".
    #[arg(long, env = "TELERELAY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Extra `KEY=VALUE` settings for every service, e.g. `TELERELAY_PREFETCH=64`.
    #[arg(long = "service-env", value_parser = parse_key_value)]
    service_env: Vec<(String, String)>,
    /// How long one drain may take before the bench gives up.
    #[arg(long, default_value_t = 600)]
    deadline_seconds: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum StatRouting {
    Express,
    Plain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Drain,
    Stat,
    Scale,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    Ok((key.to_owned(), value.to_owned()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench binary has a folder")?
            .to_path_buf(),
    };
    services::check_binaries(&bin_dir)?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(formats::default_data_dir);
    let catalog = tokio::task::spawn_blocking(move || simulator::Catalog::load(&data_dir))
        .await?
        .context("loading the clinical data (TELERELAY_DATA_DIR)")?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let log_dir = std::env::temp_dir().join(format!("telerelay-bench-{run}"));
    std::fs::create_dir_all(&log_dir)?;
    let env = setup::Environment::create(&args.database_url, &args.amqp_url, &run).await?;
    let desk_addr = free_local_address()?;
    let mut bench = relay::Bench {
        launcher: services::Launcher {
            bin_dir,
            log_dir: log_dir.clone(),
            amqp_url: args.amqp_url.clone(),
            database_url: env.database_url.clone(),
            namespace: env.names().namespace().to_owned(),
            extra_env: args.service_env.clone(),
        },
        env,
        catalog,
        desk_url: format!("http://{desk_addr}"),
        desk_addr,
    };
    println!(
        "telerelay-bench: run {run}, namespace {}, logs in {}; {} cores",
        bench.env.names().namespace(),
        log_dir.display(),
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    let outcome = run_scenarios(&mut bench, &args).await;
    bench.env.destroy().await;
    let summary = outcome?;
    println!("---- summary ----");
    for line in &summary {
        println!("{line}");
    }
    Ok(())
}

async fn run_scenarios(bench: &mut relay::Bench, args: &Args) -> anyhow::Result<Vec<String>> {
    let deadline = Duration::from_secs(args.deadline_seconds);
    let mut summary = Vec::new();
    let report = |line: String, summary: &mut Vec<String>| {
        println!("{line}");
        summary.push(line);
    };
    if args.scenarios.contains(&Scenario::Drain) {
        let mut rates = Vec::new();
        for round in 1..=args.repeat.max(1) {
            let prefix_round = drain::run(bench, args.requests, deadline, round).await?;
            rates.push(prefix_round.ratio);
            for line in prefix_round.summary {
                report(line, &mut summary);
            }
            bench.purge_all().await;
        }
        if rates.len() > 1 {
            report(
                format!(
                    "drain: median relay/raw over {} runs = {:.2}",
                    rates.len(),
                    stats::median(&rates).unwrap_or_default()
                ),
                &mut summary,
            );
        }
    }
    // Scale-out before STAT: the STAT scenario leaves a routed backlog in PostgreSQL (its
    // lane messages purged) that would slow the desk's claims in a later drain.
    if args.scenarios.contains(&Scenario::Scale) {
        let line = scale::run(bench, args.requests, deadline).await?;
        report(line, &mut summary);
    }
    if args.scenarios.contains(&Scenario::Stat) {
        let line = stat::run(
            bench,
            &stat::StatSettings {
                backlog: args.backlog,
                stat: args.stat,
                per_second: args.stat_rate,
                express: args.stat_routing == StatRouting::Express,
            },
        )
        .await?;
        report(line, &mut summary);
    }
    Ok(summary)
}

/// A loopback address with a port nobody listens on now, for the review desk.
fn free_local_address() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}
