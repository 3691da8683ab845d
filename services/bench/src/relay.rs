//! What the scenarios share: the environment, the service launcher, the catalogue, and the
//! relay's own answers read from PostgreSQL and the broker.

use crate::load::{self, ReviewStats};
use crate::services::{Footprint, Launcher, Service, ServiceProcess};
use crate::setup::Environment;
use anyhow::Context as _;
use bus::lapin::Connection;
use bus::lapin::options::QueueDeclareOptions;
use bus::lapin::types::FieldTable;
use chrono::{DateTime, Utc};
use simulator::Catalog;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long services may take to start consuming.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// How often a drain is sampled (progress, memory, CPU).
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

pub struct Bench {
    pub env: Environment,
    pub launcher: Launcher,
    pub catalog: Catalog,
    pub desk_url: String,
    pub desk_addr: String,
}

/// The relay's processes for one scenario.
#[derive(Default)]
pub struct Running {
    pub processes: Vec<ServiceProcess>,
}

impl Running {
    pub fn footprints(&mut self) -> anyhow::Result<Vec<Footprint>> {
        self.processes.iter_mut().map(Footprint::start).collect()
    }

    pub fn update(&mut self, footprints: &mut [Footprint]) -> anyhow::Result<()> {
        for (process, footprint) in self.processes.iter_mut().zip(footprints) {
            footprint.update(process)?;
        }
        Ok(())
    }

    /// Stops every process (SIGTERM, drain), the last started first.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some(process) = self.processes.pop() {
            if let Err(error) = process.stop().await {
                eprintln!("bench: {error:#}");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops and removes the process labelled `label`.
    pub async fn stop_one(&mut self, label: &str) -> anyhow::Result<()> {
        let index = self
            .processes
            .iter()
            .position(|p| p.label == label)
            .with_context(|| format!("no process {label}"))?;
        self.processes.remove(index).stop().await
    }
}

impl Bench {
    pub fn start(&self, service: Service, label: &str) -> anyhow::Result<ServiceProcess> {
        let env: Vec<(&str, String)> = match service {
            Service::ReviewDesk => vec![
                ("TELERELAY_HTTP_ADDR", self.desk_addr.clone()),
                // Every report is a first read: a second-read request would add work and
                // events the raw pipe does not have, and make the counts depend on chance.
                ("TELERELAY_SECOND_READ_SHARE", "0".into()),
            ],
            Service::Dispatcher | Service::Recorder => Vec::new(),
        };
        self.launcher.start(service, label, &env)
    }

    /// Waits until the dispatchers and recorders consume (a consumer on each of their queues
    /// per instance) and the desk answers `/ready`.
    pub async fn wait_ready(&self, dispatchers: u32, recorders: u32) -> anyhow::Result<()> {
        let names = self.env.names();
        let started = Instant::now();
        for (queue, consumers) in [
            (names.dispatcher_queue(), dispatchers),
            (names.recorder_results_queue(), recorders),
        ] {
            while self.consumers(&queue).await? < consumers {
                anyhow::ensure!(
                    started.elapsed() < READY_DEADLINE,
                    "{queue} has no {consumers} consumers after {READY_DEADLINE:?}; see the logs in {}",
                    self.launcher.log_dir.display()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        load::wait_for_desk(&self.desk_url, READY_DEADLINE).await
    }

    async fn queue_info(&self, queue: &str) -> anyhow::Result<(u32, u32)> {
        let connection = Connection::connect(&self.env.amqp_url, Default::default()).await?;
        let channel = connection.create_channel().await?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        connection.close(200, "queue info".into()).await.ok();
        Ok((declared.message_count(), declared.consumer_count()))
    }

    pub async fn consumers(&self, queue: &str) -> anyhow::Result<u32> {
        Ok(self.queue_info(queue).await?.1)
    }

    pub async fn depth(&self, queue: &str) -> anyhow::Result<u32> {
        Ok(self.queue_info(queue).await?.0)
    }

    /// Automated reviewers for the pools in `pools`, running until the returned token is
    /// cancelled.
    pub fn reviewers(&self, pools: &[&str], stats: Arc<ReviewStats>) -> Reviewers {
        let stop = CancellationToken::new();
        let reviewers = self
            .env
            .reviewers
            .iter()
            .filter(|r| pools.contains(&r.pool.as_str()))
            .cloned()
            .collect();
        let task = tokio::spawn(load::run_reviewers(
            self.desk_url.clone(),
            reviewers,
            Duration::from_millis(20),
            stats,
            stop.clone(),
        ));
        Reviewers { stop, task }
    }

    /// PostgreSQL's clock now: drains are timed on the clock that stamps `delivered_at`.
    pub async fn db_now(&self) -> anyhow::Result<DateTime<Utc>> {
        Ok(sqlx::query_scalar("select clock_timestamp()")
            .fetch_one(&self.env.db)
            .await?)
    }

    /// Requests whose id starts with `prefix` and whose result is recorded as delivered, and
    /// the last delivery's time.
    pub async fn delivered(&self, prefix: &str) -> anyhow::Result<(i64, Option<DateTime<Utc>>)> {
        Ok(sqlx::query_as(
            "select count(*), max(r.delivered_at) from review_results r
               join review_requests q on q.id = r.request_uuid
              where q.request_id like $1 and r.delivered_at is not null",
        )
        .bind(format!("{prefix}-%"))
        .fetch_one(&self.env.db)
        .await?)
    }

    pub async fn count(&self, sql: &'static str, prefix: &str) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(sql)
            .bind(format!("{prefix}-%"))
            .fetch_one(&self.env.db)
            .await?)
    }

    /// Waits until `n` requests of `prefix` are recorded as delivered, sampling the processes;
    /// returns the time from `t0` (the database's clock) to the last delivery.
    pub async fn wait_delivered(
        &self,
        prefix: &str,
        n: usize,
        t0: DateTime<Utc>,
        running: &mut Running,
        footprints: &mut [Footprint],
        deadline: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut last_report = Instant::now();
        loop {
            running.update(footprints)?;
            let (delivered, last) = self.delivered(prefix).await?;
            if delivered >= i64::try_from(n)? {
                let last = last.context("delivered rows have a time")?;
                return Ok((last - t0).to_std().unwrap_or_default());
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "bench: {prefix}: {delivered} of {n} recorded after {:.0?}",
                    started.elapsed()
                );
                last_report = Instant::now();
            }
            anyhow::ensure!(
                started.elapsed() < deadline,
                "{prefix}: only {delivered} of {n} recorded within {deadline:?}; see the logs in {}",
                self.launcher.log_dir.display()
            );
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    }
}

impl Bench {
    /// Empties every queue of the namespace between scenarios, so that what one scenario left
    /// waiting (the STAT scenario's backlog) does not load the next.
    pub async fn purge_all(&self) {
        let purge = async {
            let connection = Connection::connect(&self.env.amqp_url, Default::default()).await?;
            let channel = connection.create_channel().await?;
            for queue in self.env.queues() {
                channel
                    .queue_purge(queue.as_str().into(), Default::default())
                    .await
                    .ok();
            }
            connection.close(200, "purged".into()).await.ok();
            anyhow::Ok(())
        };
        if let Err(error) = purge.await {
            eprintln!("bench: purging the namespace failed: {error:#}");
        }
    }
}

/// The automated reviewers of a scenario, running until [`Reviewers::stop`].
pub struct Reviewers {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Reviewers {
    /// Asks the reviewers to stop and waits for them, at most a minute (their HTTP calls time
    /// out after 30 s): a bench that never ends tells nobody anything.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .is_err()
        {
            eprintln!("bench: the reviewers did not stop within a minute; abandoned");
            self.task.abort();
        }
    }
}
