//! A private RabbitMQ node that a fault test may kill and restart: Debian's `rabbitmq-server`,
//! started by the test as a child process with its own node name, ports, data directory,
//! configuration and Erlang cookie, so that killing it never touches the shared broker on 5672.
//!
//! What it shares with the shared node is epmd on 4369, the Erlang name registry: a node
//! registers its name there and is forgotten when its connection closes, so a unique node name
//! is all the isolation it needs. The private node never starts or stops epmd.

use crate::DEADLINE;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server start script itself, not the `/usr/sbin` wrapper: the wrapper re-runs it through
/// `su rabbitmq`, which would put two processes between the test and the node.
const SERVER_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// The CLI, likewise without the wrapper that would run it as the `rabbitmq` user.
const CTL_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

/// One private RabbitMQ node. Dropping it kills the node and deletes its data, also when the
/// test panics.
pub struct PrivateBroker {
    node_name: String,
    amqp_port: u16,
    dist_port: u16,
    /// Holds the data, logs, configuration and cookie; removed on drop.
    dir: PathBuf,
    /// The `beam.smp` process while the node runs (the start script execs into it).
    node: Option<Child>,
    last_start: Duration,
}

impl PrivateBroker {
    /// Starts a new node on free ports and waits until it accepts AMQP connections.
    pub async fn start() -> Self {
        let mut broker = Self::prepare();
        broker.boot().await;
        broker
    }

    /// Starts a new node, like [`PrivateBroker::start`], whose Erlang cookie is `cookie`: nodes
    /// that share a cookie may form a cluster (see `private_cluster`).
    pub async fn start_with_cookie(cookie: &str) -> Self {
        let mut broker = Self::prepare();
        // Erlang refuses a cookie file that others may read.
        let path = broker.dir.join(".erlang.cookie");
        fs::write(&path, cookie).expect("writing the Erlang cookie");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400))
            .expect("making the Erlang cookie private");
        broker.boot().await;
        broker
    }

    /// The node's name, ports, directory and configuration files; the node is not started.
    fn prepare() -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let node_name = format!("tr-{}@localhost", &suffix[..12]);
        let (amqp_port, dist_port) = two_free_ports();
        let dir = std::env::temp_dir().join(format!("telerelay-broker-{}", &suffix[..12]));
        fs::create_dir_all(&dir).expect("creating the private broker's directory");
        // Only what differs from the defaults. Listeners come from RABBITMQ_NODE_PORT and
        // RABBITMQ_NODE_IP_ADDRESS; `guest` may log in over loopback by default.
        fs::write(
            dir.join("rabbitmq.conf"),
            "log.console = false\nlog.file.level = info\n",
        )
        .expect("writing rabbitmq.conf");
        // No plugins: management (15672) and prometheus (15692) would collide with other nodes.
        fs::write(dir.join("enabled_plugins"), "[].\n").expect("writing enabled_plugins");
        // An empty environment file, so that /etc/rabbitmq/rabbitmq-env.conf (which names the
        // shared node) is never read.
        fs::write(dir.join("rabbitmq-env.conf"), "").expect("writing rabbitmq-env.conf");
        Self {
            node_name,
            amqp_port,
            dist_port,
            dir,
            node: None,
            last_start: Duration::ZERO,
        }
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// The port of the node's AMQP listener on 127.0.0.1.
    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    /// The Erlang node name, `tr-…@localhost`.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Whether the node runs: it was started and not killed since.
    pub fn is_running(&self) -> bool {
        self.node.is_some()
    }

    /// Runs `rabbitmqctl` against this node and returns what it printed; panics if it fails.
    /// The CLI is an Erlang node itself: it finds the node's cookie in `$HOME`, so it runs with
    /// the node's directory as its home and the node's empty environment file, never the
    /// shared node's.
    pub async fn rabbitmqctl(&self, args: &[&str]) -> String {
        let run = tokio::process::Command::new(CTL_SCRIPT)
            .arg("-n")
            .arg(&self.node_name)
            .args(args)
            .env("HOME", &self.dir)
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(DEADLINE, run)
            .await
            .unwrap_or_else(|_| panic!("rabbitmqctl {args:?} took over {DEADLINE:?}"))
            .unwrap_or_else(|error| panic!("running {CTL_SCRIPT}: {error}"));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "rabbitmqctl -n {} {args:?} failed ({}):\n{stdout}\n{}",
            self.node_name,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// How long the last start or restart took until the node accepted a connection.
    pub fn last_start(&self) -> Duration {
        self.last_start
    }

    /// Kills the node with SIGKILL, as a power cut or the OOM killer would: no connection is
    /// closed cleanly and nothing is flushed. Returns once the node and the helper processes it
    /// spawned (`erl_child_setup`, `inet_gethost`) are gone.
    pub async fn kill_hard(&mut self) {
        let Some(mut node) = self.node.take() else {
            panic!("kill_hard: the private broker is not running");
        };
        let helpers = descendants(node.id());
        node.kill().expect("SIGKILL to the private broker");
        node.wait().expect("reaping the private broker");
        // The helpers exit by themselves when the node's end of their pipe closes.
        crate::wait_until("the killed node's helper processes to exit", || {
            let helpers = helpers.clone();
            async move { helpers.iter().all(|pid| !is_alive(*pid)) }
        })
        .await;
    }

    /// Starts the node again with the same name, ports and data directory, so that durable
    /// exchanges, bindings and quorum queues with their messages come back. Kills it first if it
    /// is still running.
    pub async fn restart(&mut self) {
        if self.node.is_some() {
            self.kill_hard().await;
        }
        self.boot().await;
    }

    async fn boot(&mut self) {
        let started = Instant::now();
        let console = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("console.log"))
            .expect("opening the private broker's console log");
        let node = Command::new(SERVER_SCRIPT)
            .current_dir(&self.dir)
            // The script execs the VM directly in this mode instead of running it as a
            // background job of a signal-forwarding shell, so the child is `beam.smp` itself.
            .env("RUNNING_UNDER_SYSTEMD", "true")
            .env_remove("NOTIFY_SOCKET")
            .env("RABBITMQ_NODENAME", &self.node_name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                self.dir.join("advanced.config"),
            )
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            // The Erlang cookie is created in $HOME: keep it in the node's own directory.
            .env("HOME", &self.dir)
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("console log handle"))
            .stderr(console)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {SERVER_SCRIPT}: {error}"));
        // Killed if dropped before it is up, e.g. when the test unwinds while it boots.
        let mut node = Booting(Some(node));
        let url = self.url();
        loop {
            if let Some(status) = node.child().try_wait().expect("polling the private broker") {
                panic!(
                    "the private broker exited during start-up ({status}):\n{}",
                    self.log_tail()
                );
            }
            if let Ok(connection) = bus::lapin::Connection::connect(&url, Default::default()).await
            {
                connection.close(200, "ready".into()).await.ok();
                break;
            }
            if started.elapsed() > DEADLINE {
                panic!(
                    "the private broker did not accept connections within {DEADLINE:?}:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let program =
            fs::read_to_string(format!("/proc/{}/comm", node.child().id())).unwrap_or_default();
        assert_eq!(
            program.trim(),
            "beam.smp",
            "the child must be the Erlang VM itself, so that killing it kills the node"
        );
        self.last_start = started.elapsed();
        self.node = node.0.take();
    }

    /// The end of the node's log and console output, for a failure message.
    fn log_tail(&self) -> String {
        let log = self.dir.join("log").join(format!("{}.log", self.node_name));
        format!(
            "--- {}\n{}\n--- console\n{}",
            log.display(),
            tail(&log),
            tail(&self.dir.join("console.log"))
        )
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("private broker {}:\n{}", self.node_name, self.log_tail());
        }
        if let Some(mut node) = self.node.take() {
            node.kill().ok();
            node.wait().ok();
        }
        fs::remove_dir_all(&self.dir).ok();
    }
}

/// A node being started, killed if dropped before it is handed over: when its start fails, or
/// when the future starting it is dropped (another node of a cluster failed to start), so that
/// no node outlives the test.
struct Booting(Option<Child>);

impl Booting {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("the node is being started")
    }
}

impl Drop for Booting {
    fn drop(&mut self) {
        if let Some(mut node) = self.0.take() {
            node.kill().ok();
            node.wait().ok();
        }
    }
}

/// Two distinct ports that were free a moment ago (both listeners are held until both are known).
fn two_free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    let (first, second) = (bind(), bind());
    let port = |listener: &TcpListener| listener.local_addr().expect("local address").port();
    (port(&first), port(&second))
}

/// The last 4 KiB of a file, or why it could not be read.
fn tail(path: &Path) -> String {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(error) => return format!("({error})"),
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or_default();
    file.seek(SeekFrom::Start(length.saturating_sub(4096))).ok();
    let mut text = String::new();
    file.read_to_string(&mut text).ok();
    text
}

/// Every live descendant of `pid`, found through /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|child| Some((child, stat(child)?.parent)))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (child, _) in parents.iter().filter(|(_, p)| *p == parent) {
            found.push(*child);
            frontier.push(*child);
        }
    }
    found
}

/// Whether a process exists and is not a zombie waiting to be reaped by init.
fn is_alive(pid: u32) -> bool {
    stat(pid).is_some_and(|stat| stat.state != 'Z')
}

struct Stat {
    state: char,
    parent: u32,
}

/// `/proc/<pid>/stat`: "pid (comm) state ppid …"; comm may hold spaces and parentheses.
fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some(Stat { state, parent })
}
