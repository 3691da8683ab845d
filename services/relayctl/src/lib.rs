//! The relay operator's commands. Each connects with the same configuration as the services
//! (`TELERELAY_AMQP_URL`, `TELERELAY_DATABASE_URL`, `TELERELAY_NAMESPACE`, ...).

pub mod critical;
pub mod dead_letters;
pub mod duration;
pub mod pairing;
pub mod report;
pub mod requests;
pub mod second_reads;
pub mod sla;
pub mod status;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use runtime::{BrokerConfig, DatabaseConfig};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "relayctl", about = "Operate a telerelay installation")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses a command line (the program name first), as `main` does, but returns a usage
    /// error instead of exiting: for tests that run an operator's command in-process.
    pub fn parse_args<I, T>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Ok(<Self as Parser>::try_parse_from(args)?)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the database migrations (run once per upgrade, not by every replica).
    Migrate,
    /// Declare every exchange and queue: the core, each pool's lanes, each hospital's results and
    /// critical queues.
    Declare,
    /// Registry commands.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Per origin hospital: accepted vs audited, where each request is, refused, duplicates.
    Reconcile,
    /// List, set and remove pairings (audited, effective at once); the registry's change history.
    #[command(subcommand)]
    Pairing(pairing::PairingCommand),
    /// Per priority lane: overflow age and promotion (aging) age.
    #[command(subcommand)]
    Lanes(pairing::LanesCommand),
    /// List and replay dead letters.
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLettersCommand),
    /// Second reads of signed reports and their verdicts (agree / discordant).
    SecondReads(second_reads::SecondReadsArgs),
    /// The critical-value (危急值) register: who was told what, when, who acknowledged, how long.
    Critical(critical::CriticalArgs),
    /// Queue depths, oldest waiting request per lane, requests by state, refusals.
    Status {
        /// Refresh every N seconds until interrupted.
        #[arg(long)]
        watch: Option<u64>,
    },
    /// Per pairing and kind: requests, remote diagnoses, returns, turnaround median and p90, SLA
    /// compliance, critical values and their acknowledgement, for requests received in a window.
    Report(report::ReportArgs),
    /// Turnaround targets (SLA) per kind × priority.
    #[command(subcommand)]
    Sla(sla::SlaCommand),
    /// The escalation ladder after an SLA breach, and pool heads.
    #[command(subcommand)]
    Escalation(sla::EscalationCommand),
    /// Operator interventions on one request (break-lock).
    #[command(subcommand)]
    Requests(requests::RequestsCommand),
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Load hospitals, pools, reviewers and pairings from a TOML file (pairings are replaced).
    /// The load is audited in `registry_changes` with every pairing before and after.
    Load {
        file: PathBuf,
        /// Who loads it, for the audit.
        #[arg(long, default_value = store::registry_edits::REGISTRY_LOAD_OPERATOR)]
        operator: String,
        /// Why, for the audit.
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct Config {
    #[serde(flatten)]
    broker: BrokerConfig,
    #[serde(flatten)]
    database: DatabaseConfig,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config: Config = runtime::load(&Config::default())?;
    let db = store::connect_lazy(config.database.database_url.expose_secret(), 2)?;
    match cli.command {
        Command::Migrate => {
            store::MIGRATOR
                .run(&db)
                .await
                .context("applying migrations")?;
            println!("migrations applied");
        }
        Command::Declare => {
            let summary = declare(&config.broker, &db).await?;
            println!("{summary}");
        }
        Command::Registry(RegistryCommand::Load {
            file,
            operator,
            note,
        }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let registry: store::registry::RegistryFile =
                toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
            let summary = store::registry::load_by(&db, &registry, &operator, &note).await?;
            println!(
                "registry loaded: {} hospitals, {} pools, {} reviewers, {} pairings",
                summary.hospitals, summary.pools, summary.reviewers, summary.pairings
            );
            // New pools and hospitals need their queues before traffic reaches them.
            println!("{}", declare(&config.broker, &db).await?);
        }
        Command::Reconcile => print!("{}", status::reconciliation(&db).await?),
        Command::Pairing(command) => print!("{}", pairing::run_pairing(command, &db).await?),
        Command::Lanes(command) => print!("{}", pairing::run_lanes(command, &db).await?),
        Command::DeadLetters(command) => dead_letters::run(command, &db).await?,
        Command::SecondReads(args) => second_reads::run(&args, &db).await?,
        Command::Critical(args) => critical::run(args, &db).await?,
        Command::Status { watch } => status::show(&config.broker, &db, watch).await?,
        Command::Report(args) => report::run(args, &db).await?,
        Command::Sla(command) => sla::run_sla(command, &db).await?,
        Command::Escalation(command) => sla::run_escalation(command, &db).await?,
        Command::Requests(command) => {
            requests::run(command, &db, &config.broker.topology()?.names).await?
        }
    }
    Ok(())
}

/// Reads and parses a registry file.
pub fn read_registry(file: &std::path::Path) -> anyhow::Result<store::registry::RegistryFile> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))
}

/// Declares the whole topology from the registry; returns a one-line summary.
pub async fn declare(broker: &BrokerConfig, db: &sqlx::PgPool) -> anyhow::Result<String> {
    let topology = broker.topology()?;
    let connection = bus::connect(&broker.addresses()?, "relayctl", 0).await?;
    let channel = connection.create_channel().await?;
    topology.declare_core(&channel).await?;
    let pools = store::registry::pool_codes(db).await?;
    for pool in &pools {
        topology.declare_pool_lanes(&channel, pool).await?;
    }
    let hospitals = store::registry::hospital_codes(db).await?;
    for hospital in &hospitals {
        topology.declare_origin_results(&channel, hospital).await?;
    }
    connection.close(200, "done".into()).await.ok();
    Ok(format!(
        "topology declared in namespace {}: core queues, {} pools x 4 lanes, {} results and critical queues",
        topology.names.namespace(),
        pools.len(),
        hospitals.len()
    ))
}
