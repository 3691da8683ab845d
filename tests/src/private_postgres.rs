//! A private PostgreSQL cluster that a fault test may stop, crash and restart without touching
//! the shared one: a fresh `initdb` in a temporary directory, listening on 127.0.0.1 on a free
//! port, with its socket and log in that directory. Dropping it stops the cluster and removes the
//! directory, also when the test panics.
//!
//! PostgreSQL refuses to run as root. When the tests run as root, the cluster's directory is
//! handed to the `postgres` OS user and every PostgreSQL program runs as that user through
//! `runuser`; otherwise the programs run as the current user.

use crate::DEADLINE;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The OS user PostgreSQL runs as when the tests run as root.
const POSTGRES_OS_USER: &str = "postgres";

/// Where PostgreSQL's programs are: `TELERELAY_TEST_PG_BINDIR`, else Debian's PostgreSQL 15
/// directory if it exists, else the `PATH`.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("TELERELAY_TEST_PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
    debian.join("pg_ctl").exists().then_some(debian)
}

/// One private cluster. Its methods take `&self`, so a test can crash the database from one
/// future while another keeps publishing.
pub struct PrivatePostgres {
    /// The temporary directory holding the data directory, the socket and the log.
    dir: PathBuf,
    port: u16,
    /// Whether PostgreSQL's programs run as [`POSTGRES_OS_USER`] (the tests run as root).
    as_postgres_user: bool,
    /// Whether a postmaster was started and not yet stopped or killed; `Drop` stops it if so.
    running: AtomicBool,
}

impl PrivatePostgres {
    /// Creates a new cluster and starts it; it accepts connections when this returns.
    pub async fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "telerelay-pg-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let as_postgres_user = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&dir).unwrap().uid() == 0
        };
        // From here on, `Drop` removes the directory whatever happens.
        let cluster = Self {
            dir,
            port,
            as_postgres_user,
            running: AtomicBool::new(false),
        };
        if as_postgres_user {
            let chown = std::process::Command::new("chown")
                .arg(format!("{POSTGRES_OS_USER}:{POSTGRES_OS_USER}"))
                .arg(&cluster.dir)
                .output()
                .expect("running chown");
            check("chown", &chown);
        }
        let initdb = cluster
            .command("initdb")
            .arg("--pgdata")
            .arg(cluster.data_dir())
            .args(["--username", "postgres", "--auth", "trust"])
            // The C locale exists everywhere; durability against OS crashes is not under test.
            .args(["--no-locale", "--encoding", "UTF8", "--no-sync"])
            .output()
            .await
            .expect("running initdb");
        check("initdb", &initdb);
        cluster.start_postmaster().await;
        cluster
    }

    /// The URL of the cluster's `postgres` database, as the superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops PostgreSQL the way an operator does before maintenance: `pg_ctl stop -m fast`
    /// ends every session (clients see 57P01) and shuts down cleanly.
    pub async fn stop_fast(&self) {
        let stop = self
            .command("pg_ctl")
            .arg("stop")
            .arg("--pgdata")
            .arg(self.data_dir())
            .args(["--mode", "fast", "--wait", "--timeout"])
            .arg(DEADLINE.as_secs().to_string())
            .output()
            .await
            .expect("running pg_ctl stop");
        check("pg_ctl stop", &stop);
        self.running.store(false, Ordering::SeqCst);
    }

    /// Crashes PostgreSQL: SIGKILL to the postmaster, with no chance to tell its clients. Returns
    /// once the postmaster and every process it had started are dead (orphaned backends notice
    /// their postmaster's death and exit), because until then the shared memory is in use and a
    /// new postmaster would refuse to start.
    pub async fn kill_hard(&self) {
        let postmaster = self.postmaster_pid();
        // Stopped first, so that no backend is forked between listing the children and the kill.
        signal(postmaster, "STOP").await;
        crate::wait_until("the postmaster to stop", || async {
            stat_of(postmaster).is_none_or(|stat| stat.state == 'T')
        })
        .await;
        let children = children_of(postmaster);
        signal(postmaster, "KILL").await;
        self.running.store(false, Ordering::SeqCst);
        crate::wait_until("the killed cluster's processes to end", || async {
            !std::iter::once(postmaster)
                .chain(children.iter().copied())
                .any(is_alive)
        })
        .await;
        if stat_of(postmaster).is_some() {
            // Dead but not yet reaped: its parent is init now, and some inits reap late (every
            // 2 s on the VMs these tests run on) or never. A zombie still answers kill(pid, 0),
            // so a new postmaster would take the lock files naming it for a live postmaster's.
            // Nothing of the old cluster runs any more: the lock files guard nothing.
            for lock_file in [
                self.data_dir().join("postmaster.pid"),
                self.dir.join(format!(".s.PGSQL.{}.lock", self.port)),
            ] {
                std::fs::remove_file(&lock_file)
                    .unwrap_or_else(|e| panic!("removing {}: {e}", lock_file.display()));
            }
        }
    }

    /// Starts the stopped or crashed cluster again on the same port and data directory (after a
    /// crash, PostgreSQL replays its WAL first); it accepts connections when this returns.
    pub async fn restart(&self) {
        self.start_postmaster().await;
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// `pg_ctl start --wait`, then a connection that answers a query, both within the deadline.
    async fn start_postmaster(&self) {
        // Listen on 127.0.0.1 only and keep the socket in the cluster's own directory, so that
        // nothing collides with the shared cluster on 5432. fsync=off: a killed process loses
        // nothing the kernel already has, and OS crashes are not under test. Commits stay
        // synchronous, so a crash cannot take back a commit the relay was told about.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let start = self
            .command("pg_ctl")
            .arg("start")
            .arg("--pgdata")
            .arg(self.data_dir())
            .arg("--log")
            .arg(self.log_file())
            .arg("--options")
            .arg(options)
            .args(["--wait", "--timeout"])
            .arg(DEADLINE.as_secs().to_string())
            .output()
            .await
            .expect("running pg_ctl start");
        self.running.store(true, Ordering::SeqCst);
        if !start.status.success() {
            panic!(
                "pg_ctl start failed: {}\n--- postgres.log ---\n{}",
                String::from_utf8_lossy(&start.stderr),
                self.log_tail()
            );
        }
        self.wait_until_accepting().await;
    }

    async fn wait_until_accepting(&self) {
        use sqlx::Connection as _;
        let started = Instant::now();
        loop {
            let answered = async {
                let mut connection = sqlx::PgConnection::connect(&self.url()).await?;
                sqlx::query("select 1").execute(&mut connection).await?;
                connection.close().await
            };
            match tokio::time::timeout(Duration::from_secs(2), answered).await {
                Ok(Ok(())) => return,
                outcome => assert!(
                    started.elapsed() < DEADLINE,
                    "the private cluster on port {} does not answer after {DEADLINE:?}: {outcome:?}\n--- postgres.log ---\n{}",
                    self.port,
                    self.log_tail()
                ),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The postmaster's pid: the first line of `postmaster.pid`.
    fn postmaster_pid(&self) -> u32 {
        let pid_file = self.data_dir().join("postmaster.pid");
        let contents = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", pid_file.display()));
        contents
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .unwrap_or_else(|| panic!("{} holds no pid: {contents:?}", pid_file.display()))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A PostgreSQL program, run as the `postgres` OS user when the tests run as root.
    fn command(&self, program: &str) -> tokio::process::Command {
        self.blocking_command(program).into()
    }

    fn blocking_command(&self, program: &str) -> std::process::Command {
        let program = bin_dir().map_or_else(|| PathBuf::from(program), |dir| dir.join(program));
        if self.as_postgres_user {
            let mut runuser = std::process::Command::new("runuser");
            runuser.args(["-u", POSTGRES_OS_USER, "--"]).arg(program);
            runuser
        } else {
            std::process::Command::new(program)
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running.load(Ordering::SeqCst) {
            // Immediate: the data is thrown away next, so there is nothing to shut down cleanly.
            let stopped = self
                .blocking_command("pg_ctl")
                .arg("stop")
                .arg("--pgdata")
                .arg(self.data_dir())
                .args(["--mode", "immediate", "--wait"])
                .output();
            if !matches!(&stopped, Ok(output) if output.status.success()) {
                eprintln!(
                    "could not stop the private PostgreSQL in {}: {stopped:?}",
                    self.dir.display()
                );
            }
        }
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {error}", self.dir.display());
        }
    }
}

/// Sends `signal` (a name such as `KILL`) to a process.
async fn signal(pid: u32, signal: &str) {
    let kill = tokio::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .output()
        .await
        .expect("running kill");
    check(&format!("kill -{signal} {pid}"), &kill);
}

/// A port nothing listens on right now: bound on 127.0.0.1 with port 0, then released.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().unwrap().port()
}

fn check(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The processes whose parent is `pid`, from `/proc`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|candidate| stat_of(*candidate).is_some_and(|stat| stat.parent == pid))
        .collect()
}

/// Whether a process still runs: it exists and is not a zombie waiting to be reaped.
fn is_alive(pid: u32) -> bool {
    stat_of(pid).is_some_and(|stat| stat.state != 'Z' && stat.state != 'X')
}

struct Stat {
    state: char,
    parent: u32,
}

/// The state and parent of a process, from `/proc/<pid>/stat`: `pid (comm) state ppid …`, where
/// `comm` may itself hold spaces and parentheses, hence the last `)`.
fn stat_of(pid: u32) -> Option<Stat> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some(Stat { state, parent })
}
