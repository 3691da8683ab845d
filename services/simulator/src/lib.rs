//! A province in one process, driving the real relay: county HIS publishers that send review
//! requests built from real ECG, imaging and pathology files, each as its own broker user; the
//! origins' inboxes that count what comes back and resubmit returned requests; and reviewer
//! bots that work the review desk's worklist like doctors.
//!
//! The pieces are public so that integration tests can build real requests ([`Catalog`]),
//! publish them as a HIS would ([`publish_request`]) and read the registry's province
//! ([`Province`]).

mod catalog;
mod clinical;
mod config;
mod county;
mod critical_inbox;
mod desk_client;
mod his_register;
pub mod ids;
mod ledger;
mod origin_inbox;
mod progress;
mod publish;
mod requests;
mod reviewer_bot;
mod second_reader;

pub use catalog::{Catalog, CatalogError, EcgRecord, ImagingSource};
pub use config::Config;
pub use county::OriginHospital;
pub use progress::{Snapshot, Stats};
pub use publish::publish_request;
pub use reviewer_bot::ReviewerBot;

use anyhow::Context as _;
use bus::Names;
use domain::HospitalCode;
use ledger::{Budget, Outstanding};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use store::registry::RegistryFile;
use tokio_util::sync::CancellationToken;

/// The hospitals and reviewers the simulation plays, read from a registry file.
#[derive(Clone, Debug)]
pub struct Province {
    /// Hospitals that send requests: every pairing's origin, and every hospital without a
    /// reviewer pool of its own.
    pub origins: Vec<OriginHospital>,
    pub reviewers: Vec<ReviewerBot>,
}

impl Province {
    /// Reads and parses a registry TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Province> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: RegistryFile =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Province::from_registry(&file).with_context(|| format!("registry {}", path.display()))
    }

    pub fn from_registry(file: &RegistryFile) -> anyhow::Result<Province> {
        let pairing_origins: BTreeSet<&str> =
            file.pairings.iter().map(|p| p.origin.as_str()).collect();
        let pool_owners: BTreeSet<&str> = file.pools.iter().map(|p| p.hospital.as_str()).collect();
        let mut origins = Vec::new();
        for hospital in &file.hospitals {
            if pairing_origins.contains(hospital.code.as_str())
                || !pool_owners.contains(hospital.code.as_str())
            {
                anyhow::ensure!(
                    hospital.code.len() <= ids::MAX_ORIGIN_CODE_LEN,
                    "origin {} is longer than {} characters, too long for the simulator's request ids",
                    hospital.code,
                    ids::MAX_ORIGIN_CODE_LEN
                );
                origins.push(OriginHospital {
                    code: HospitalCode::parse(&hospital.code).map_err(anyhow::Error::msg)?,
                    broker_user: hospital
                        .broker_user
                        .clone()
                        .unwrap_or_else(|| hospital.code.to_lowercase()),
                });
            }
        }
        if let Some(unknown) = pairing_origins
            .iter()
            .find(|code| !file.hospitals.iter().any(|h| h.code == **code))
        {
            anyhow::bail!("pairing origin {unknown} is not a listed hospital");
        }
        let reviewers = file
            .reviewers
            .iter()
            .map(|r| ReviewerBot {
                id: r.id.clone(),
                pool: r.pool.clone(),
                token: r.token.clone(),
            })
            .collect();
        Ok(Province { origins, reviewers })
    }
}

/// What every task of one simulation run shares.
pub(crate) struct Simulation {
    pub config: Config,
    pub catalog: Catalog,
    pub stats: Stats,
    pub names: Names,
    /// Part of every request id, so runs against one database never collide.
    pub run_id: String,
    pub origin_count: usize,
    pub budget: Budget,
    /// The counties' register of their patients' names and national ids (which never travel).
    pub his_register: his_register::HisRegister,
    /// Cancelled on SIGTERM / Ctrl-C, or once a set total has been published and settled.
    pub shutdown: CancellationToken,
    seq: AtomicU64,
}

impl Simulation {
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A simulation with no origins, for tests of the parts.
    #[cfg(test)]
    pub(crate) fn for_tests(config: Config, catalog: Catalog) -> Self {
        Simulation {
            names: Names::new(config.broker.namespace.clone()),
            budget: Budget::new(config.sim_total),
            his_register: his_register::HisRegister::none(),
            origin_count: 1,
            config,
            catalog,
            stats: Stats::default(),
            run_id: ids::new_run_id(),
            shutdown: CancellationToken::new(),
            seq: AtomicU64::new(0),
        }
    }
}

/// Runs the simulation until `shutdown` is cancelled (or, with a total set, until every
/// published request has an outcome or `sim_settle_seconds` have passed), then returns the
/// final counts. Publishing stops first; a bot in the middle of a read submits its report.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<Snapshot> {
    config.validate()?;
    let province = Province::load(&config.sim_registry)?;
    let data_dir = config.data_dir.clone();
    let catalog = tokio::task::spawn_blocking(move || Catalog::load(&data_dir)).await??;
    let run_id = ids::new_run_id();
    tracing::info!(
        run_id,
        origins = province.origins.len(),
        reviewers = province.reviewers.len(),
        ecgs = catalog.ecg_records().len(),
        rate_per_second = config.sim_rate_per_second,
        total = config.sim_total,
        "simulation starting"
    );
    let origins = if config.sim_origins {
        province.origins
    } else {
        Vec::new()
    };
    let bots = if config.sim_reviewer_bots {
        province.reviewers
    } else {
        Vec::new()
    };
    if config.sim_declare_topology && !origins.is_empty() {
        declare_topology(&config, &origins).await;
    }
    let to_stdout = config.log_format()? == telemetry::LogFormat::Pretty;
    let report_every = Duration::from_secs(config.sim_report_seconds);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let his_register = his_register::HisRegister::open(config.sim_his_register.as_deref())
        .context("opening the HIS register file")?;
    let sim = Simulation {
        names: config.broker.topology()?.names,
        budget: Budget::new(config.sim_total),
        his_register,
        origin_count: origins.len().max(1),
        config,
        catalog,
        stats: Stats::default(),
        run_id,
        shutdown: shutdown.child_token(),
        seq: AtomicU64::new(0),
    };
    let outstanding: Vec<Outstanding> = origins.iter().map(|_| Outstanding::default()).collect();

    let origin_tasks = futures::future::join_all(
        origins
            .iter()
            .zip(&outstanding)
            .map(|(origin, outstanding)| county::run_origin(&sim, origin, outstanding)),
    );
    let bot_tasks =
        futures::future::join_all(bots.iter().map(|bot| reviewer_bot::run(&sim, &client, bot)));
    let reporting =
        progress::report_periodically(&sim.stats, report_every, to_stdout, sim.shutdown.clone());
    let (origin_results, _bots, (), ()) = tokio::join!(
        origin_tasks,
        bot_tasks,
        reporting,
        stop_when_settled(&sim, &outstanding)
    );
    let final_counts = sim.stats.snapshot();
    final_counts.report("final counts", to_stdout);
    for result in origin_results {
        result?;
    }
    Ok(final_counts)
}

/// With a total set: once it is confirmed, waits until no request is outstanding (or the
/// settle time has passed) and ends the run.
async fn stop_when_settled(sim: &Simulation, outstanding: &[Outstanding]) {
    let Some(total) = sim.config.sim_total else {
        return;
    };
    if !wait_until(
        sim,
        || sim.stats.confirmed.load(Ordering::Relaxed) >= total,
        None,
    )
    .await
    {
        return;
    }
    tracing::info!(total, "total published; waiting for outcomes");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(sim.config.sim_settle_seconds);
    if wait_until(
        sim,
        || outstanding.iter().all(Outstanding::is_empty),
        Some(deadline),
    )
    .await
    {
        tracing::info!("every request has an outcome; stopping");
    } else if !sim.shutdown.is_cancelled() {
        let left: usize = outstanding.iter().map(Outstanding::len).sum();
        tracing::warn!(
            outstanding = left,
            "settle time over with requests still outstanding; stopping"
        );
    }
    sim.shutdown.cancel();
}

/// Polls `ready` until it holds (true), or until the deadline or shutdown (false).
async fn wait_until(
    sim: &Simulation,
    ready: impl Fn() -> bool,
    deadline: Option<tokio::time::Instant>,
) -> bool {
    loop {
        if ready() {
            return true;
        }
        if deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = sim.shutdown.cancelled() => return false,
        }
    }
}

/// Declares the core topology and each origin's results queue with the operator's connection,
/// as `relayctl` would, so that origins can consume before the dispatcher has written to them.
/// Failure is logged, not fatal: the relay's own services declare the same on their start.
async fn declare_topology(config: &Config, origins: &[OriginHospital]) {
    let declare = async {
        let topology = config.broker.topology()?;
        let connection = bus::connect(&config.broker.addresses()?, "simulator-setup", 0).await?;
        let channel = connection.create_channel().await?;
        topology.declare_core(&channel).await?;
        for origin in origins {
            topology
                .declare_origin_results(&channel, &origin.code)
                .await?;
        }
        connection.close(200, "declared".into()).await.ok();
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(30), declare).await {
        Ok(Ok(())) => tracing::info!(origins = origins.len(), "topology declared"),
        Ok(Err(error)) => tracing::warn!(
            error = format!("{error:#}"),
            "could not declare the topology; relying on the relay"
        ),
        Err(_) => tracing::warn!("declaring the topology timed out; relying on the relay"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_hunan_registry_has_six_county_origins_and_sixteen_reviewers() {
        let province = Province::load(Path::new("../../registry/hunan.toml")).unwrap();
        let codes: Vec<_> = province.origins.iter().map(|o| o.code.as_str()).collect();
        assert_eq!(
            codes,
            [
                "HN-HH-001",
                "HN-ZJJ-001",
                "GX-GL-001",
                "HN-XX-001",
                "HN-SY-001",
                "HN-YZ-001"
            ]
        );
        assert_eq!(province.origins[0].broker_user, "hn-hh-001");
        assert_eq!(province.reviewers.len(), 16);
        assert!(
            !format!("{:?}", province.reviewers).contains("demo-"),
            "tokens are not printed"
        );
    }

    #[test]
    fn the_run_future_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        assert_send(&run(Config::default(), CancellationToken::new()));
    }

    #[test]
    fn a_hospital_without_a_pool_is_an_origin_even_without_a_pairing() {
        let file: RegistryFile = toml::from_str(
            r#"
            [[hospital]]
            code = "HN-XY"
            name = "Xiangya"
            [[hospital]]
            code = "HN-NEW-001"
            name = "New county hospital"
            broker_user = "county-new"
            [[pool]]
            code = "xy-ecg"
            hospital = "HN-XY"
            kind = "ecg"
            name = "ECG"
            "#,
        )
        .unwrap();
        let province = Province::from_registry(&file).unwrap();
        assert_eq!(province.origins.len(), 1);
        assert_eq!(province.origins[0].broker_user, "county-new");
    }
}
