//! The recorder: turns the relay's lifecycle events into the audit trail, records each result
//! delivered to an origin, and keeps every dead letter for `relayctl dead-letters`. Each is
//! written exactly once: events by their event id, deliveries by (request, report version), dead
//! letters by their fingerprint. It acks a delivery only after its transaction committed.

mod acknowledgements;
mod critical;
mod critical_clock;
mod gauges;
mod metrics;

use bus::lapin::Connection;
use bus::lapin::message::Delivery;
use bus::{DeadLetterReason, Handled, OutgoingMessage, Publisher, Topology};
use contract::v1;
use domain::LifecycleFact;
use prost::Message;
use runtime::{ConfigError, ServiceConfig, Session};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::sync::Arc;
use store::audit::Delivery as Recorded;
use telemetry::metrics::{MetricsServer, PipelineMetrics, Registry};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Config {
    /// Broker, database and log format, as every service has them.
    #[serde(flatten)]
    pub service: ServiceConfig,
    /// Deliveries in flight per queue; also the consumer prefetch.
    pub prefetch: u16,
    /// An unacknowledged critical notification is sent again this often once its acknowledge-by
    /// time has passed (env `TELERELAY_CRITICAL_REPEAT_SECONDS`; default 5 minutes).
    pub critical_repeat_seconds: u32,
    /// How often the critical clock looks for due reminders (`TELERELAY_CRITICAL_CHECK_MILLIS`).
    pub critical_check_millis: u64,
    /// Where `/metrics`, `/health` and `/ready` are served, an IP address and port (env
    /// `TELERELAY_METRICS_ADDR`). `main` binds it; `run` takes the bound listener.
    pub metrics_addr: String,
    /// How often the gauges (queue depths, lanes, SLA, critical values, dead letters) are read
    /// again (env `TELERELAY_GAUGE_INTERVAL_MS`).
    pub gauge_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            service: ServiceConfig::default(),
            prefetch: 64,
            critical_repeat_seconds: 5 * 60,
            critical_check_millis: 1_000,
            metrics_addr: "127.0.0.1:9602".into(),
            gauge_interval_ms: 5_000,
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
        if !(1..=24 * 3600).contains(&self.critical_repeat_seconds) {
            return Err(ConfigError::Invalid {
                setting: "critical_repeat_seconds",
                reason: "must be 1 s to 24 h".into(),
            });
        }
        if !(10..=60_000).contains(&self.critical_check_millis) {
            return Err(ConfigError::Invalid {
                setting: "critical_check_millis",
                reason: "must be 10 ms to 60 s".into(),
            });
        }
        runtime::validate_socket_addr("metrics_addr", &self.metrics_addr)?;
        if !(10..=600_000).contains(&self.gauge_interval_ms) {
            return Err(ConfigError::Invalid {
                setting: "gauge_interval_ms",
                reason: "must be 10 ms to 10 min".into(),
            });
        }
        Ok(())
    }

    pub fn critical_repeat(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::from(self.critical_repeat_seconds))
    }

    pub fn critical_check(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.critical_check_millis)
    }

    pub fn gauge_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.gauge_interval_ms)
    }
}

struct Context {
    config: Config,
    topology: Topology,
    db: PgPool,
    shutdown: CancellationToken,
    pipeline: PipelineMetrics,
    metrics: metrics::RecorderMetrics,
}

/// Runs the recorder until `shutdown` is cancelled and in-flight work has drained, serving its
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
    let metrics = metrics::RecorderMetrics::register(&mut registry);
    let endpoints =
        MetricsServer::spawn_endpoints(metrics_listener, registry, &pipeline, db.clone());
    let context = Arc::new(Context {
        topology: config.service.broker.topology()?,
        config,
        db,
        shutdown: shutdown.clone(),
        pipeline,
        metrics,
    });
    let supervised = runtime::supervise(
        "recorder",
        &addresses,
        &context.pipeline,
        shutdown,
        |connection| session(context.clone(), connection),
    )
    .await;
    endpoints.stop().await?;
    supervised
}

async fn session(context: Arc<Context>, connection: Connection) -> anyhow::Result<Session> {
    let names = &context.topology.names;
    context
        .topology
        .declare_core(&connection.create_channel().await?)
        .await?;
    // Only for dead-lettering what cannot be recorded, with the reason.
    let publisher = Publisher::open(
        &connection,
        "recorder",
        context.config.service.broker.confirm_timeout(),
    )
    .await?
    .with_metrics(context.pipeline.clone());
    let (events_channel, results_channel) = (
        connection.create_channel().await?,
        connection.create_channel().await?,
    );
    let dead_letters_channel = connection.create_channel().await?;
    let (events_queue, results_queue, dead_letters_queue) = (
        names.recorder_events_queue(),
        names.recorder_results_queue(),
        names.dead_letter_queue(),
    );
    let events = bus::consume_until(
        &events_channel,
        &events_queue,
        "recorder-events",
        context.config.prefetch,
        context.shutdown.clone(),
        &context.pipeline,
        bus::trace::follow(|delivery| {
            let (context, publisher) = (context.clone(), publisher.clone());
            async move { record_event(&context, &publisher, delivery).await }
        }),
    );
    let results = bus::consume_until(
        &results_channel,
        &results_queue,
        "recorder-results",
        context.config.prefetch,
        context.shutdown.clone(),
        &context.pipeline,
        bus::trace::follow(|delivery| {
            let (context, publisher) = (context.clone(), publisher.clone());
            async move { record_result(&context, &publisher, delivery).await }
        }),
    );
    let dead_letters = bus::consume_until(
        &dead_letters_channel,
        &dead_letters_queue,
        "recorder-dead-letters",
        context.config.prefetch,
        context.shutdown.clone(),
        &context.pipeline,
        bus::trace::follow(|delivery| {
            let context = context.clone();
            async move { keep_dead_letter(&context, delivery).await }
        }),
    );
    // 危急值: acknowledgements, the critical clock and their outbox relay.
    let critical = critical::serve(context.clone(), &connection);
    let gauges = gauges::run(&context, &connection);
    // The consumers drain on shutdown; if any fails, the session reconnects.
    tokio::try_join!(events, results, dead_letters, critical, gauges)?;
    connection.close(200, "draining".into()).await.ok();
    tracing::info!("recorder drained");
    Ok(Session::Drained)
}

async fn record_event(
    context: &Context,
    publisher: &Publisher,
    delivery: Delivery,
) -> anyhow::Result<Handled> {
    let fact = match v1::LifecycleEvent::decode(delivery.data.as_slice()) {
        Ok(event) => LifecycleFact::from_wire(event).map_err(|error| error.to_string()),
        Err(error) => Err(format!("not a LifecycleEvent: {error}")),
    };
    let fact = match fact {
        Ok(fact) => fact,
        Err(detail) => {
            dead_letter(
                context,
                publisher,
                &delivery,
                &context.topology.names.recorder_events_queue(),
                "malformed_event",
                detail,
            )
            .await?;
            return Ok(Handled::Done);
        }
    };
    let recorded = store::wait_out_outages(&context.shutdown, "recording an event", || {
        store::audit::record_event(&context.db, &fact)
    })
    .await;
    Ok(match recorded {
        Ok(first_time) => {
            if first_time {
                measure_event(context, &fact).await;
            }
            tracing::debug!(request_uuid = ?fact.request_uuid, correlation_id = fact.correlation_id, state = %fact.state,
                first_time, "event recorded");
            Handled::Done
        }
        Err(error) => database_failure(context, error, "recording an event"),
    })
}

async fn record_result(
    context: &Context,
    publisher: &Publisher,
    delivery: Delivery,
) -> anyhow::Result<Handled> {
    let queue = context.topology.names.recorder_results_queue();
    let notice = match v1::OriginNotice::decode(delivery.data.as_slice()) {
        Ok(notice) => notice,
        Err(error) => {
            dead_letter(
                context,
                publisher,
                &delivery,
                &queue,
                "malformed_notice",
                format!("not an OriginNotice: {error}"),
            )
            .await?;
            return Ok(Handled::Done);
        }
    };
    // Refusals and returns are recorded through their lifecycle events; only results are
    // delivered reports to stamp.
    let Some(v1::origin_notice::Notice::Result(result)) = notice.notice else {
        return Ok(Handled::Done);
    };
    let version = i32::try_from(result.report_version).unwrap_or(0);
    let recorded = store::wait_out_outages(&context.shutdown, "recording a delivery", || {
        store::audit::record_delivery(
            &context.db,
            &result.origin_hospital,
            &result.request_id,
            version,
            "service:recorder",
        )
    })
    .await;
    match recorded {
        Ok(recorded @ (Recorded::Recorded(_) | Recorded::AlreadyRecorded)) => {
            if let Recorded::Recorded(Some(turnaround)) = &recorded {
                context
                    .metrics
                    .observe_turnaround(metrics::REPORTED_TO_DELIVERED, turnaround);
            }
            tracing::info!(
                origin = result.origin_hospital,
                version,
                critical = result.critical,
                "result delivery recorded"
            );
            Ok(Handled::Done)
        }
        Ok(Recorded::Unknown) => {
            let detail =
                format!("no report version {version} of this request is known to the relay");
            dead_letter(
                context,
                publisher,
                &delivery,
                &queue,
                "unknown_result",
                detail,
            )
            .await?;
            Ok(Handled::Done)
        }
        Err(error) => Ok(database_failure(context, error, "recording a delivery")),
    }
}

/// Stores a dead letter where `relayctl dead-letters` lists and replays it. Anything can be
/// stored, so nothing here is refused; a database outage is waited out.
async fn keep_dead_letter(context: &Context, delivery: Delivery) -> anyhow::Result<Handled> {
    let facts = bus::DeadLetterFacts::of(&delivery);
    let kept = store::wait_out_outages(&context.shutdown, "keeping a dead letter", || {
        store::dead_letters::keep(&context.db, &facts)
    })
    .await;
    Ok(match kept {
        Ok((id, first_time)) => {
            if first_time {
                context
                    .metrics
                    .dead_letters
                    .get_or_create(&metrics::DeadLetterLabels {
                        reason: facts.reason.clone(),
                        queue: facts.source_queue.clone(),
                    })
                    .inc();
                tracing::warn!(
                    dead_letter = id,
                    source_queue = facts.source_queue,
                    reason = facts.reason,
                    message_id = facts.message_id,
                    "dead letter stored"
                );
            }
            Handled::Done
        }
        // The dead-letter queue has no delivery limit, so a nack would hand the message straight
        // back, again and again. Leave it unacked instead: it stays in the queue, and returns to
        // the next session after a reconnect.
        Err(error) => match database_failure(context, error, "keeping a dead letter") {
            Handled::Failed => Handled::Abandoned,
            other => other,
        },
    })
}

/// Counts an event stored for the first time; a first report adds its turnaround, a return its
/// reason. The figures come from PostgreSQL's timestamps; a failure to read them costs the
/// observation, never the event.
async fn measure_event(context: &Context, fact: &LifecycleFact) {
    context
        .metrics
        .events_recorded
        .get_or_create(&metrics::StateLabel {
            state: fact.state.as_str(),
        })
        .inc();
    let Some(request) = fact.request_uuid else {
        return;
    };
    let measured = match fact.state {
        domain::RequestState::Reported => store::audit::received_to_reported(&context.db, request)
            .await
            .map(|turnaround| {
                if let Some(turnaround) = turnaround {
                    context
                        .metrics
                        .observe_turnaround(metrics::RECEIVED_TO_REPORTED, &turnaround);
                }
            }),
        domain::RequestState::Returned => store::audit::return_facts(&context.db, request)
            .await
            .map(|facts| {
                if let Some(facts) = facts {
                    context
                        .metrics
                        .returns
                        .get_or_create(&metrics::ReturnLabels {
                            reason: facts.reason,
                            kind: facts.kind,
                        })
                        .inc();
                }
            }),
        _ => Ok(()),
    };
    if let Err(error) = measured {
        tracing::warn!(error = %error, state = %fact.state, "event recorded; its metric could not be read");
    }
}

fn database_failure(context: &Context, error: sqlx::Error, what: &str) -> Handled {
    if store::is_transient(&error) && context.shutdown.is_cancelled() {
        Handled::Abandoned
    } else {
        tracing::error!(error = %error, what, "database refused the write; returning the delivery");
        Handled::Failed
    }
}

async fn dead_letter(
    context: &Context,
    publisher: &Publisher,
    delivery: &Delivery,
    source_queue: &str,
    reason: &str,
    detail: String,
) -> anyhow::Result<()> {
    tracing::warn!(
        source_queue,
        reason,
        detail,
        "dead-lettering a message the recorder cannot record"
    );
    let copy = OutgoingMessage::dead_letter(
        &context.topology.names.dead_letter_exchange(),
        source_queue,
        delivery,
        &DeadLetterReason {
            reason: reason.into(),
            detail,
        },
    );
    publisher
        .publish_all_marked(
            std::slice::from_ref(&copy),
            "recorder.dead_letter_after_publish_before_confirm",
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn the_metrics_address_and_gauge_interval_are_checked_at_start_up() {
        assert!(Config::default().validate().is_ok());
        let named = |config: Config| match config.validate() {
            Err(runtime::ConfigError::Invalid { setting, .. }) => setting,
            other => panic!("expected an invalid setting, got {other:?}"),
        };
        let bad_address = Config {
            metrics_addr: "localhost".into(),
            ..Config::default()
        };
        assert_eq!(named(bad_address), "metrics_addr");
        let too_often = Config {
            gauge_interval_ms: 0,
            ..Config::default()
        };
        assert_eq!(named(too_often), "gauge_interval_ms");
    }
}
