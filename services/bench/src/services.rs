//! The relay's services as child processes: the release binaries, started with the bench's
//! database and namespace, stopped with SIGTERM as a supervisor would, and sampled through
//! `/proc`.

use crate::procfs::{self, ProcessSample};
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long a service may take to drain and exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Dispatcher,
    Recorder,
    ReviewDesk,
}

impl Service {
    pub fn binary(self) -> &'static str {
        match self {
            Service::Dispatcher => "dispatcher",
            Service::Recorder => "recorder",
            Service::ReviewDesk => "review-desk",
        }
    }
}

/// What every service process of one bench run is started with.
#[derive(Clone, Debug)]
pub struct Launcher {
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
    pub amqp_url: String,
    pub database_url: String,
    pub namespace: String,
    /// Extra `KEY=VALUE` settings for every service (`--service-env`), e.g. a prefetch.
    pub extra_env: Vec<(String, String)>,
}

impl Launcher {
    /// Starts `service`; `label` names its log file (`<label>.log`) and the summary lines.
    pub fn start(
        &self,
        service: Service,
        label: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<ServiceProcess> {
        let program = self.bin_dir.join(service.binary());
        let log_path = self.log_dir.join(format!("{label}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(&program);
        command
            .env("TELERELAY_AMQP_URL", &self.amqp_url)
            .env("TELERELAY_DATABASE_URL", &self.database_url)
            .env("TELERELAY_NAMESPACE", &self.namespace)
            .env("TELERELAY_LOG_FORMAT", "json")
            // Each instance on a port of its own, so two dispatchers can run side by side once
            // the services serve metrics (docs/metrics.md).
            .env("TELERELAY_METRICS_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        for (key, value) in &self.extra_env {
            command.env(key, value);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(ServiceProcess {
            label: label.to_owned(),
            child,
            log_path,
        })
    }
}

/// A running service.
pub struct ServiceProcess {
    pub label: String,
    child: Child,
    log_path: PathBuf,
}

impl ServiceProcess {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Memory and CPU time now; an error if the process has ended (it should not have).
    pub fn sample(&mut self) -> anyhow::Result<ProcessSample> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "{} exited ({status}); see {}",
                self.label,
                self.log_path.display()
            );
        }
        let pid = self.pid().context("no pid")?;
        procfs::sample(pid).with_context(|| format!("reading /proc/{pid} of {}", self.label))
    }

    /// SIGTERM, then waits for the drain; kills it if it takes longer than [`STOP_DEADLINE`].
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self
            .pid()
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            rustix::process::kill_process(pid, rustix::process::Signal::TERM)
                .with_context(|| format!("SIGTERM to {}", self.label))?;
        }
        match tokio::time::timeout(STOP_DEADLINE, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(
                    status.success(),
                    "{} ended with {status} after SIGTERM; see {}",
                    self.label,
                    self.log_path.display()
                );
                Ok(())
            }
            Err(_) => {
                self.child.kill().await.ok();
                anyhow::bail!(
                    "{} did not stop within {STOP_DEADLINE:?}; killed",
                    self.label
                )
            }
        }
    }
}

/// Resident memory and CPU of one process over a phase.
#[derive(Clone, Debug)]
pub struct Footprint {
    pub label: String,
    pub first: ProcessSample,
    pub last: ProcessSample,
    /// The highest `VmHWM` seen: the peak resident memory, between samples too.
    pub peak_rss_kib: u64,
}

impl Footprint {
    pub fn start(process: &mut ServiceProcess) -> anyhow::Result<Self> {
        let sample = process.sample()?;
        Ok(Self {
            label: process.label.clone(),
            first: sample,
            last: sample,
            peak_rss_kib: sample.peak_rss_kib,
        })
    }

    pub fn update(&mut self, process: &mut ServiceProcess) -> anyhow::Result<()> {
        let sample = process.sample()?;
        self.last = sample;
        self.peak_rss_kib = self.peak_rss_kib.max(sample.peak_rss_kib);
        Ok(())
    }

    pub fn cpu(&self) -> Duration {
        procfs::ticks_to_duration(self.last.cpu_ticks.saturating_sub(self.first.cpu_ticks))
    }
}

/// Whether `path` holds each service binary; the error says how to build them.
pub fn check_binaries(bin_dir: &Path) -> anyhow::Result<()> {
    for service in [Service::Dispatcher, Service::Recorder, Service::ReviewDesk] {
        let path = bin_dir.join(service.binary());
        anyhow::ensure!(
            path.is_file(),
            "{} is missing: build the services first (cargo build --release -p dispatcher -p recorder -p review-desk -p bench) or pass --bin-dir",
            path.display()
        );
    }
    Ok(())
}
