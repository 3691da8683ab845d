//! The relay's services as real processes — this crate's `relay-service` binary — for the tests
//! that must do to a service what an operator or the kernel would: kill it with SIGKILL, restart
//! it, stop it with SIGTERM, read its memory from `/proc`.
//!
//! A [`Launcher`] holds what every service of one [`TestRelay`] is started with: the binary
//! (integration tests pass `env!("CARGO_BIN_EXE_relay-service")`, which only they can see) and
//! the relay's namespace, broker and database as `TELERELAY_*` variables. Each
//! [`ServiceProcess`] writes its stdout and stderr to a file of its own, printed when a test
//! fails, and is killed when dropped, so a panicking test leaves no process behind.

use crate::{DEADLINE, TestRelay};
use secrecy::ExposeSecret;
use sqlx::ConnectOptions as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A service the `relay-service` binary runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Dispatcher,
    Recorder,
    ReviewDesk,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Dispatcher => "dispatcher",
            Service::Recorder => "recorder",
            Service::ReviewDesk => "review-desk",
        }
    }

    /// What the service logs (at `info`) once it has drained after SIGTERM.
    fn drained_line(self) -> &'static str {
        match self {
            Service::Dispatcher => "dispatcher drained",
            Service::Recorder => "recorder drained",
            Service::ReviewDesk => "review desk drained",
        }
    }
}

/// Starts services of one relay as processes.
pub struct Launcher {
    program: PathBuf,
    env: Vec<(String, String)>,
}

impl Launcher {
    /// Services of `relay`: on its broker and namespace, with its delivery limit and confirm
    /// timeout, and on its database (the test's own, with the pool's credentials).
    pub fn for_relay(program: impl Into<PathBuf>, relay: &TestRelay) -> Self {
        let broker = &relay.broker_config;
        let database_url = relay.db.connect_options().to_url_lossy().to_string();
        let env = [
            (
                "TELERELAY_AMQP_URL",
                broker.amqp_url.expose_secret().to_owned(),
            ),
            ("TELERELAY_NAMESPACE", broker.namespace.clone()),
            (
                "TELERELAY_DELIVERY_LIMIT",
                broker.delivery_limit.to_string(),
            ),
            (
                "TELERELAY_CONFIRM_TIMEOUT_MS",
                broker.confirm_timeout_ms.to_string(),
            ),
            ("TELERELAY_DATABASE_URL", database_url),
            ("TELERELAY_LOG_FORMAT", "json".to_owned()),
            // Services listen on a port of the system's choosing: the tests use their own desk.
            ("TELERELAY_HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("TELERELAY_METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ("RUST_LOG", "info".to_owned()),
            // As in the in-process harness: no sampled second reads unless a test asks for them,
            // so a request's history does not depend on its uuid.
            ("TELERELAY_SECOND_READ_SHARE", "0".to_owned()),
        ];
        Self {
            program: program.into(),
            env: env.map(|(name, value)| (name.to_owned(), value)).into(),
        }
    }

    /// Starts `service` with the relay's settings and `extra_env` on top, e.g.
    /// `(crash_point::ENV, "dispatcher.before_commit@5")` to arm a crash point, or
    /// `("RUST_LOG", "warn")`.
    pub fn start(&self, service: Service, extra_env: &[(&str, &str)]) -> ServiceProcess {
        let log = std::env::temp_dir().join(format!(
            "telerelay-{}-{}.log",
            service.name(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        let output = fs::File::create(&log).expect("creating the service's log file");
        let mut command = Command::new(&self.program);
        command.arg(service.name());
        // Only what the test gives: nothing inherited from the test's own environment (such as
        // TELERELAY_TEST_* or a TELERELAY_CONFIG file) may change the service's settings.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TELERELAY_") {
                command.env_remove(name);
            }
        }
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        command.envs(extra_env.iter().copied());
        let child = command
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("the log file's handle"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", self.program.display()));
        ServiceProcess {
            service,
            pid: child.id(),
            child: Some(child),
            exit: None,
            log,
        }
    }
}

/// One service process. Dropping it kills the process (SIGKILL) if it still runs.
pub struct ServiceProcess {
    service: Service,
    pid: u32,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    log: PathBuf,
}

impl ServiceProcess {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn service(&self) -> Service {
        self.service
    }

    /// How it ended, once it has (reaping it if it just did).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
        {
            self.exit = child.try_wait().expect("polling the service process");
        }
        self.exit
    }

    /// Waits until the process has ended by itself, up to `deadline`.
    pub async fn wait_for_exit(&mut self, deadline: Duration) -> ExitStatus {
        let what = format!("{} (pid {}) to exit", self.service.name(), self.pid);
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            assert!(
                started.elapsed() < deadline,
                "timed out after {deadline:?} waiting for {what}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for the process to kill itself at its armed crash point, and checks that it died of
    /// SIGKILL: proof that the point was reached (a panic or an error would exit otherwise).
    pub async fn wait_for_crash(&mut self) {
        let status = self.wait_for_exit(DEADLINE).await;
        assert_eq!(
            status.signal(),
            Some(9),
            "{} should have died of SIGKILL at its crash point, but ended with {status}:\n{}",
            self.service.name(),
            self.log_tail()
        );
        assert!(
            self.log_text().contains("crash point"),
            "the crash point announced itself:\n{}",
            self.log_tail()
        );
    }

    /// Kills the process with SIGKILL, as the OOM killer or `kill -9` would, and reaps it.
    pub fn kill_hard(&mut self) -> ExitStatus {
        if let Some(status) = self.try_exit() {
            return status;
        }
        let child = self.child.as_mut().expect("a started process");
        child.kill().expect("SIGKILL to the service");
        let status = child.wait().expect("reaping the service");
        self.exit = Some(status);
        status
    }

    /// Stops the service as its supervisor would (SIGTERM), waits until it exits, and checks
    /// that it drained and ended cleanly.
    pub async fn stop(mut self) {
        assert!(
            self.try_exit().is_none(),
            "{} had already ended:\n{}",
            self.service.name(),
            self.log_tail()
        );
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.pid).expect("a pid"))
            .expect("a live process's pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .expect("SIGTERM to the service");
        let status = self.wait_for_exit(DEADLINE).await;
        assert!(
            status.success(),
            "{} ended with {status} after SIGTERM:\n{}",
            self.service.name(),
            self.log_tail()
        );
        let drained = self.service.drained_line();
        assert!(
            self.log_text().contains(drained),
            "{} exited without logging {drained:?}:\n{}",
            self.service.name(),
            self.log_tail()
        );
    }

    /// Resident memory now, in KiB (`VmRSS`); `None` once the process has ended.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS")
    }

    /// The most resident memory the process has had so far, in KiB (`VmHWM`, the high-water
    /// mark); `None` once the process has ended.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM")
    }

    /// A `<field>: <n> kB` line of `/proc/<pid>/status`.
    fn status_kib(&self, field: &str) -> Option<u64> {
        if self.exit.is_some() {
            return None;
        }
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    }

    /// Everything the process has written so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 8 KiB of what the process wrote, for a failure message.
    pub fn log_tail(&self) -> String {
        format!("--- {}\n{}", self.log.display(), tail(&self.log))
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.kill_hard();
        }
        if std::thread::panicking() {
            // Kept for inspection; its path is in the message.
            eprintln!(
                "{} (pid {}), {}",
                self.service.name(),
                self.pid,
                self.log_tail()
            );
        } else {
            fs::remove_file(&self.log).ok();
        }
    }
}

/// The last 8 KiB of a file, or why it could not be read.
fn tail(path: &Path) -> String {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(error) => return format!("({error})"),
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or_default();
    file.seek(SeekFrom::Start(length.saturating_sub(8192))).ok();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok();
    String::from_utf8_lossy(&bytes).into_owned()
}
