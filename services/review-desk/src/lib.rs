//! The review desk: reviewers' HTTP JSON API.
//!
//! - `POST /v1/worklist/next`: claim the most urgent waiting request of the reviewer's pool
//!   (200 with the request, 204 when nothing waits). The claim is a lease in PostgreSQL.
//! - `POST /v1/requests/{id}/report`: sign a report (201 with its version).
//! - `POST /v1/requests/{id}/return`: hand the request back with a coded reason.
//! - `POST /v1/requests/{id}/revisions`: amend a signed report or add an addendum (201 with the
//!   new version); see `revisions`.
//! - `POST /v1/second-reads/next`, `POST /v1/second-reads/{id}/verdict`: second reads; see
//!   `second_reads`.
//! - `POST /v1/requests/{id}/heartbeat`, `PUT /v1/requests/{id}/draft`: keep the lease alive,
//!   save a draft (see `leases`).
//! - `GET /health`: liveness; `GET /ready`: a broker session up and PostgreSQL answering;
//!   `GET /metrics`: the desk's metrics (`docs/metrics.md`). These three need no token.
//!
//! Every call carries `Authorization: Bearer <reviewer token>`; a reviewer sees only the lanes of
//! their own pool and acts only on requests they hold.

mod aging;
mod api;
mod broker;
mod correlation;
mod error;
mod leases;
mod metrics;
mod reports;
mod revisions;
mod second_reads;
mod view;
mod worklist;

use runtime::{ConfigError, ServiceConfig};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::sync::Arc;
use telemetry::metrics::{PipelineMetrics, Readiness, Registry};
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Config {
    /// Broker, database and log format, as every service has them.
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// Where to listen (env `TELERELAY_HTTP_ADDR`).
    pub http_addr: String,
    /// How long a claim lasts without a report (env `TELERELAY_LEASE_SECONDS`).
    pub lease_seconds: u32,
    /// Share of final reports read again by a second reviewer, 0.0 to 1.0 (env
    /// `TELERELAY_SECOND_READ_SHARE`). Chosen from the request's uuid, so the share holds.
    pub second_read_share: f64,
    /// Every critical final report gets a second read, whatever the share (env
    /// `TELERELAY_SECOND_READ_ALL_CRITICAL`).
    pub second_read_all_critical: bool,
    /// How long the origin has to acknowledge a critical value before reminders and escalation
    /// start (env `TELERELAY_CRITICAL_ACK_SECONDS`; local practice: 15 minutes).
    pub critical_ack_seconds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            service: ServiceConfig::default(),
            http_addr: "127.0.0.1:8080".into(),
            lease_seconds: 15 * 60,
            second_read_share: 0.1,
            second_read_all_critical: true,
            critical_ack_seconds: 15 * 60,
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
        if !(10..=24 * 3600).contains(&self.lease_seconds) {
            return Err(ConfigError::Invalid {
                setting: "lease_seconds",
                reason: "must be 10 s to 24 h".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.second_read_share) {
            return Err(ConfigError::Invalid {
                setting: "second_read_share",
                reason: "must be 0.0 to 1.0".into(),
            });
        }
        if !(1..=24 * 3600).contains(&self.critical_ack_seconds) {
            return Err(ConfigError::Invalid {
                setting: "critical_ack_seconds",
                reason: "must be 1 s to 24 h".into(),
            });
        }
        Ok(())
    }

    /// The acknowledgement window of a critical notification.
    pub fn critical_ack(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::from(self.critical_ack_seconds))
    }
}

/// What every handler shares.
pub(crate) struct Desk {
    pub config: Config,
    pub topology: bus::Topology,
    pub db: PgPool,
    pub broker: broker::BrokerLink,
    pub registry: Arc<Registry>,
    pub readiness: Readiness,
    pub metrics: metrics::DeskMetrics,
}

/// Serves the API on `listener` until `shutdown`; in-flight calls finish, the outbox is flushed.
pub async fn run(
    config: Config,
    db: PgPool,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    let topology = config.service.broker.topology()?;
    let addresses = config.service.broker.addresses()?;
    let mut registry = Registry::default();
    let pipeline = PipelineMetrics::register(&mut registry);
    let metrics = metrics::DeskMetrics::register(&mut registry);
    let broker_stop = CancellationToken::new();
    let (link, broker_task) = broker::start(
        addresses,
        topology.clone(),
        db.clone(),
        config.service.broker.confirm_timeout(),
        config.service.outbox_poll(),
        pipeline.clone(),
        broker_stop.clone(),
    );
    let desk = Arc::new(Desk {
        config,
        topology,
        readiness: Readiness::new(pipeline, db.clone()),
        db,
        broker: link,
        registry: Arc::new(registry),
        metrics,
    });
    let app = api::router(desk);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    // No call is in flight any more: let the broker link flush the outbox and close.
    broker_stop.cancel();
    broker_task.await??;
    tracing::info!("review desk drained");
    Ok(())
}
