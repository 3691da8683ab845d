//! The dispatcher: consumes review requests from the origins, and for each one either routes it
//! (recorded once in PostgreSQL, announced through the outbox) or refuses it (recorded once, the
//! sender told why, the message dead-lettered with the reason). It acks a delivery only after
//! that outcome is committed.

pub mod clock;
mod decide;
mod metrics;
mod overflow;
mod resubmission;

use anyhow::Context as _;
use bus::lapin::Connection;
use bus::{Handled, Publisher, Topology};
use runtime::{ConfigError, ServiceConfig, Session};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::Arc;
use store::outbox::OutboxRelay;
use telemetry::metrics::{MetricsServer, PipelineMetrics, Registry};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

/// The dispatcher's settings (env `TELERELAY_*`, see `runtime::load`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Config {
    /// Broker, database and log format, as every service has them.
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// Deliveries in flight at once; also the consumer prefetch.
    pub prefetch: u16,
    /// Largest request body accepted. A 12-lead 10 s ECG at 1000 Hz is about 250 KB.
    pub max_body_bytes: usize,
    /// How often the SLA clock looks for leases, warnings and escalations that are due
    /// (env `TELERELAY_CLOCK_INTERVAL_MS`).
    pub clock_interval_ms: u64,
    /// Where `/metrics`, `/health` and `/ready` are served, an IP address and port (env
    /// `TELERELAY_METRICS_ADDR`). `main` binds it; `run` takes the bound listener.
    pub metrics_addr: String,
    /// Database connections kept for the STAT express lane alone, on top of the service's pool
    /// (env `TELERELAY_STAT_DATABASE_CONNECTIONS`): a STAT request never waits for a connection
    /// behind a routine backlog's deliveries in flight.
    pub stat_database_connections: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            service: ServiceConfig::default(),
            // A 12-lead ECG in flight costs the dispatcher about 1 MiB (the delivery, its decoded
            // waveforms, the lane copy, the database's bind buffers): 16 keep it near 42 MiB
            // under load, 32 took it past 50 MiB. The price is some dispatch rate when dispatch
            // alone sets the pace (BENCHMARKS.md); in the whole pipeline the reviewers do.
            prefetch: 16,
            max_body_bytes: 2 * 1024 * 1024,
            clock_interval_ms: 1_000,
            metrics_addr: "127.0.0.1:9601".into(),
            stat_database_connections: 2,
        }
    }
}

impl Config {
    pub fn load() -> Result<Self, ConfigError> {
        let config = runtime::load(&Config::default())?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.service.validate()?;
        if self.prefetch == 0 {
            return Err(ConfigError::Invalid {
                setting: "prefetch",
                reason: "must be at least 1".into(),
            });
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(ConfigError::Invalid {
                setting: "max_body_bytes",
                reason: "must be 1 KiB to 64 MiB".into(),
            });
        }
        if !(10..=60_000).contains(&self.clock_interval_ms) {
            return Err(ConfigError::Invalid {
                setting: "clock_interval_ms",
                reason: "must be 10 ms to 60 s".into(),
            });
        }
        runtime::validate_socket_addr("metrics_addr", &self.metrics_addr)?;
        if !(1..=16).contains(&self.stat_database_connections) {
            return Err(ConfigError::Invalid {
                setting: "stat_database_connections",
                reason: "must be 1 to 16".into(),
            });
        }
        Ok(())
    }
}

/// What every delivery handler shares. The STAT express lane has a copy of its own whose `db` is
/// the pool kept for it.
#[derive(Clone)]
pub(crate) struct Context {
    pub config: Config,
    pub topology: Topology,
    pub db: PgPool,
    pub shutdown: CancellationToken,
    pub outbox_wake: Arc<Notify>,
    pub pipeline: PipelineMetrics,
    pub metrics: metrics::DispatcherMetrics,
}

/// Runs the dispatcher until `shutdown` is cancelled and in-flight work has drained, serving its
/// metrics and health endpoints on `metrics_listener` until then.
pub async fn run(
    config: Config,
    db: PgPool,
    metrics_listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    let addresses = config.service.broker.addresses()?;
    let mut registry = Registry::default();
    let pipeline = PipelineMetrics::register(&mut registry);
    let metrics = metrics::DispatcherMetrics::register(&mut registry);
    let endpoints =
        MetricsServer::spawn_endpoints(metrics_listener, registry, &pipeline, db.clone());
    let context = Arc::new(Context {
        topology: config.service.broker.topology()?,
        config,
        db,
        shutdown: shutdown.clone(),
        outbox_wake: Arc::new(Notify::new()),
        pipeline,
        metrics,
    });
    let express = Arc::new(Context {
        db: express_pool(&context.db, context.config.stat_database_connections),
        ..(*context).clone()
    });
    let supervised = runtime::supervise(
        "dispatcher",
        &addresses,
        &context.pipeline,
        shutdown,
        |connection| session(context.clone(), express.clone(), connection),
    )
    .await;
    endpoints.stop().await?;
    supervised
}

/// A pool of `connections` to the same database as `db`, opened as they are first needed.
fn express_pool(db: &PgPool, connections: u32) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(db.options().get_acquire_timeout())
        .connect_lazy_with((*db.connect_options()).clone())
}

/// Per-connection state: what this connection has declared.
pub(crate) struct SessionState {
    pub publisher: Publisher,
    /// Publishes a STAT request's outbox rows right after its commit, on a channel of its own
    /// and through the express lane's connections (see `decide::publish_at_once`).
    pub stat_outbox: OutboxRelay,
    /// Lanes and results queues declared on this connection; a routed request's lane is declared
    /// before the request is committed, so the outbox never holds an unroutable message.
    pub declared: Mutex<HashSet<String>>,
}

async fn session(
    context: Arc<Context>,
    express: Arc<Context>,
    connection: Connection,
) -> anyhow::Result<Session> {
    let names = &context.topology.names;
    let declaring = connection.create_channel().await?;
    context
        .topology
        .declare_core(&declaring)
        .await
        .context("declaring the core topology")?;
    // Two confirming channels: the outbox relay's, and the STAT express lane's, so that a STAT
    // request's confirms never wait behind a routine batch's.
    let open_publisher = || async {
        Ok::<_, anyhow::Error>(
            Publisher::open(
                &connection,
                "dispatcher",
                context.config.service.broker.confirm_timeout(),
            )
            .await?
            .with_metrics(context.pipeline.clone()),
        )
    };
    let publisher = open_publisher().await?;
    let stat_publisher = open_publisher().await?;
    let state = Arc::new(SessionState {
        publisher: publisher.clone(),
        stat_outbox: OutboxRelay::new(
            express.db.clone(),
            stat_publisher,
            context.outbox_wake.clone(),
            names.dead_letter_exchange(),
        ),
        declared: Mutex::new(HashSet::new()),
    });

    let relay = OutboxRelay::new(
        context.db.clone(),
        publisher,
        context.outbox_wake.clone(),
        names.dead_letter_exchange(),
    )
    .with_poll_interval(context.config.service.outbox_poll());
    // The SLA clock runs with the session (it declares backup lanes on its connection) and
    // stops with it, whichever way the session ends.
    let clock_stop = context.shutdown.child_token();
    let _clock_guard = clock_stop.clone().drop_guard();
    let clock_task = tokio::spawn(clock::run(
        context.clone(),
        state.clone(),
        clock_stop.clone(),
    ));

    let channel = connection.create_channel().await?;
    let queue = names.dispatcher_queue();
    let deliveries = consume_requests(&context, &state, &channel, &queue);
    // The express lane has a consumer (and a channel, so a prefetch), database connections and
    // a publisher of its own: a STAT request is taken, recorded and handed to its lane at once
    // however deep the routine backlog in the other queue.
    let express_channel = connection.create_channel().await?;
    let express_queue = names.dispatcher_stat_queue();
    let express = consume_requests(&express, &state, &express_channel, &express_queue);
    // The outbox relay outlives the consumers and the clock: once no delivery is in flight and
    // the clock has stopped, it publishes what is left, then the session closes.
    relay
        .publish_while(async {
            tokio::try_join!(deliveries, express)?;
            clock_stop.cancel();
            clock_task.await?;
            Ok(())
        })
        .await?;
    express_channel.close(200, "draining".into()).await.ok();
    channel.close(200, "draining".into()).await.ok();
    connection.close(200, "draining".into()).await.ok();
    tracing::info!("dispatcher drained");
    Ok(Session::Drained)
}

/// Consumes one of the dispatcher's input queues (the ordinary one or the STAT express lane);
/// both are handled alike.
fn consume_requests<'a>(
    context: &'a Arc<Context>,
    state: &'a Arc<SessionState>,
    channel: &'a bus::lapin::Channel,
    queue: &'a str,
) -> impl std::future::Future<Output = anyhow::Result<()>> + 'a {
    bus::consume_until(
        channel,
        queue,
        "dispatcher",
        context.config.prefetch,
        context.shutdown.clone(),
        &context.pipeline,
        |delivery| {
            let (context, state) = (context.clone(), state.clone());
            async move { handle(&context, &state, delivery).await }
        },
    )
}

/// Handles one delivery to the end: done once the outcome is durable; failed (counted towards
/// the delivery limit) only when the message itself makes processing fail; on a broker fault,
/// the error ends the session so that it reconnects.
async fn handle(
    context: &Context,
    state: &SessionState,
    delivery: bus::lapin::message::Delivery,
) -> anyhow::Result<Handled> {
    match decide::process(context, state, &delivery).await {
        Ok(()) => Ok(Handled::Done),
        Err(decide::Failure::ShuttingDown) => Ok(Handled::Abandoned),
        Err(decide::Failure::Broker(error)) => Err(error),
        Err(decide::Failure::Poison(error)) => {
            tracing::error!(
                error = format!("{error:#}"),
                "delivery failed; returning it (counts towards the delivery limit)"
            );
            Ok(Handled::Failed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn the_metrics_address_must_be_an_ip_address_and_port() {
        assert!(Config::default().validate().is_ok());
        let config = Config {
            metrics_addr: "127.0.0.1".into(),
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(runtime::ConfigError::Invalid {
                setting: "metrics_addr",
                ..
            })
        ));
    }
}
