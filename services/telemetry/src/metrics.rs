//! Prometheus metrics and health endpoints, shared by every service (see `docs/metrics.md`).
//!
//! Each service builds its own [`Registry`] at start-up and registers its families in it; there
//! is no global recorder, so several relays in one test process never share a counter. The
//! pipeline families (deliveries, publishes, broker sessions) live here because the bus and the
//! runtime increment them for every service; a service's own families live in the service.
//!
//! [`router`] serves `GET /metrics` (the text exposition), `GET /health` (200 while the process
//! runs) and `GET /ready` (200 only while a broker session is up and PostgreSQL answers, 503 with
//! the reason otherwise).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use prometheus_client::registry::Registry;

/// The content type of the exposition: OpenMetrics text, which Prometheus scrapes natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long `/ready` waits for PostgreSQL before it says the database does not answer.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `queue` (the full queue name, namespace included).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

/// `queue`, `outcome` of a settled delivery.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub queue: String,
    pub outcome: &'static str,
}

/// `exchange` (without the namespace prefix).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExchangeLabels {
    pub exchange: String,
}

/// `exchange` (without the namespace prefix), `outcome` of a settled publish.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishLabels {
    pub exchange: String,
    pub outcome: &'static str,
}

/// How the consume loop settled a delivery (`telerelay_deliveries_total{outcome}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Done,
    Failed,
    Refused,
    Abandoned,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Done => "done",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::Refused => "refused",
            DeliveryOutcome::Abandoned => "abandoned",
        }
    }
}

/// How the broker settled a publish (`telerelay_published_total{outcome}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    Confirmed,
    Unroutable,
    Nacked,
    Timeout,
}

impl PublishOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishOutcome::Confirmed => "confirmed",
            PublishOutcome::Unroutable => "unroutable",
            PublishOutcome::Nacked => "nacked",
            PublishOutcome::Timeout => "timeout",
        }
    }
}

/// A constructor for histogram families; a plain `fn` so that the family type can be named.
pub type HistogramConstructor = fn() -> Histogram;

/// A labelled histogram family.
pub type HistogramFamily<L> = Family<L, Histogram, HistogramConstructor>;

/// The pipeline families: what the consume loop, the publisher and the broker supervisor did.
/// Cheap to clone (the families are shared). [`PipelineMetrics::default`] is a handle registered
/// nowhere, for callers that do not export metrics (the simulator, tools): it counts into the
/// void at the cost of an atomic add.
#[derive(Clone, Debug)]
pub struct PipelineMetrics {
    deliveries: Family<DeliveryLabels, Counter>,
    redeliveries: Family<QueueLabels, Counter>,
    in_flight: Family<QueueLabels, Gauge>,
    published: Family<PublishLabels, Counter>,
    confirm_seconds: HistogramFamily<ExchangeLabels>,
    reconnects: Counter,
    session_up: Gauge,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        Self {
            deliveries: Family::default(),
            redeliveries: Family::default(),
            in_flight: Family::default(),
            published: Family::default(),
            confirm_seconds: Family::new_with_constructor(confirm_histogram),
            reconnects: Counter::default(),
            session_up: Gauge::default(),
        }
    }
}

/// Publish → confirm: 1 ms to about 16 s, doubling.
fn confirm_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl PipelineMetrics {
    /// The pipeline families, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        // prometheus-client appends `_total` to counters: `telerelay_deliveries` is exposed as
        // `telerelay_deliveries_total`.
        registry.register(
            "telerelay_deliveries",
            "Deliveries the consume loop settled, by queue and outcome",
            metrics.deliveries.clone(),
        );
        registry.register(
            "telerelay_redeliveries",
            "Deliveries that arrived flagged redelivered, by queue",
            metrics.redeliveries.clone(),
        );
        registry.register(
            "telerelay_deliveries_in_flight",
            "Deliveries being handled now, by queue",
            metrics.in_flight.clone(),
        );
        registry.register(
            "telerelay_published",
            "Publishes settled by the broker, by exchange (without the namespace) and outcome",
            metrics.published.clone(),
        );
        registry.register(
            "telerelay_publish_confirm_seconds",
            "Time from publish to the broker's confirm, by exchange",
            metrics.confirm_seconds.clone(),
        );
        registry.register(
            "telerelay_broker_reconnects",
            "Broker sessions that ended and were reconnected",
            metrics.reconnects.clone(),
        );
        registry.register(
            "telerelay_broker_session_up",
            "1 while a broker session is consuming",
            metrics.session_up.clone(),
        );
        metrics
    }

    /// A consumer of `queue` is registered with the broker: the session is consuming. Its series
    /// start at 0, so that a dashboard sees a queue before its first delivery.
    pub fn consuming(&self, queue: &str) {
        let labels = QueueLabels {
            queue: queue.to_owned(),
        };
        drop(self.redeliveries.get_or_create(&labels));
        drop(self.in_flight.get_or_create(&labels));
        for outcome in [
            DeliveryOutcome::Done,
            DeliveryOutcome::Failed,
            DeliveryOutcome::Refused,
            DeliveryOutcome::Abandoned,
        ] {
            drop(self.deliveries.get_or_create(&DeliveryLabels {
                queue: queue.to_owned(),
                outcome: outcome.as_str(),
            }));
        }
        self.set_session_up(true);
    }

    /// A delivery arrived; returns the guard that counts it in flight until dropped.
    pub fn delivery_started(&self, queue: &str, redelivered: bool) -> InFlight {
        let labels = QueueLabels {
            queue: queue.to_owned(),
        };
        if redelivered {
            self.redeliveries.get_or_create(&labels).inc();
        }
        let gauge = self.in_flight.get_or_create_owned(&labels);
        gauge.inc();
        InFlight { gauge }
    }

    pub fn delivery_settled(&self, queue: &str, outcome: DeliveryOutcome) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                queue: queue.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// A publish to `exchange` (its full name) was settled.
    pub fn publish_settled(&self, exchange: &str, outcome: PublishOutcome) {
        self.published
            .get_or_create(&PublishLabels {
                exchange: without_namespace(exchange).to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// The broker confirmed (or returned, or nacked) a publish to `exchange` after `elapsed`.
    pub fn confirm_latency(&self, exchange: &str, elapsed: Duration) {
        self.confirm_seconds
            .get_or_create(&ExchangeLabels {
                exchange: without_namespace(exchange).to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    pub fn set_session_up(&self, up: bool) {
        self.session_up.set(i64::from(up));
    }

    pub fn session_is_up(&self) -> bool {
        self.session_up.get() > 0
    }
}

/// Counts a delivery in flight; the count drops with the guard, however the handler ends.
#[derive(Debug)]
pub struct InFlight {
    gauge: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// An exchange or queue name without its namespace prefix (`<ns>.review` → `review`). A
/// namespace never contains a dot, so the first dot ends it.
pub fn without_namespace(name: &str) -> &str {
    name.split_once('.').map_or(name, |(_, rest)| rest)
}

/// Why `/ready` answers 503.
#[derive(Debug)]
pub enum NotReady {
    /// No broker session is up (connecting, or reconnecting after a loss).
    Broker,
    /// PostgreSQL did not answer.
    Database(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Broker => write!(f, "no broker session is up"),
            NotReady::Database(why) => write!(f, "PostgreSQL does not answer: {why}"),
        }
    }
}

/// What `/ready` checks: the broker session (the pipeline's `session_up`) and PostgreSQL.
#[derive(Clone, Debug)]
pub struct Readiness {
    pipeline: PipelineMetrics,
    db: sqlx::PgPool,
}

impl Readiness {
    pub fn new(pipeline: PipelineMetrics, db: sqlx::PgPool) -> Self {
        Self { pipeline, db }
    }

    pub async fn check(&self) -> Result<(), NotReady> {
        if !self.pipeline.session_is_up() {
            return Err(NotReady::Broker);
        }
        let ping = async {
            use sqlx::Connection as _;
            let mut connection = self.db.acquire().await?;
            connection.ping().await
        };
        match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, ping).await {
            Ok(Ok(())) => Ok(()),
            // The error names the server, never a password: sqlx does not print the URL.
            Ok(Err(error)) => Err(NotReady::Database(error.to_string())),
            Err(_) => Err(NotReady::Database(format!(
                "no answer within {DATABASE_CHECK_TIMEOUT:?}"
            ))),
        }
    }

    /// `/ready`'s answer.
    pub async fn response(&self) -> Response {
        match self.check().await {
            Ok(()) => "ready".into_response(),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.to_string()).into_response(),
        }
    }
}

/// The registry in the text exposition format.
pub fn text(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// The registry as the text exposition, for `GET /metrics`.
pub fn exposition(registry: &Registry) -> Response {
    match text(registry) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(error = %error, "encoding the metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[derive(Clone)]
struct Endpoints {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// `GET /metrics`, `GET /health` and `GET /ready` for a service without an HTTP API of its own.
pub fn router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                |State(endpoints): State<Endpoints>| async move { exposition(&endpoints.registry) },
            ),
        )
        .route("/health", get(|| async { "ok" }))
        .route(
            "/ready",
            get(|State(endpoints): State<Endpoints>| async move {
                endpoints.readiness.response().await
            }),
        )
        .with_state(Endpoints {
            registry,
            readiness,
        })
}

/// The metrics endpoint of a service, serving until [`MetricsServer::stop`]: it outlives the
/// service's drain, so a scrape during shutdown still answers.
pub struct MetricsServer {
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl MetricsServer {
    /// Serves `router` on `listener` (bound by the caller: port 0 in tests).
    pub fn spawn(listener: tokio::net::TcpListener, router: Router) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        );
        Self { stop, task }
    }

    /// The endpoints of a service with no HTTP API of its own (the dispatcher, the recorder):
    /// `registry` on `/metrics`, ready while `pipeline` shows a session consuming and `db`
    /// answers.
    pub fn spawn_endpoints(
        listener: tokio::net::TcpListener,
        registry: Registry,
        pipeline: &PipelineMetrics,
        db: sqlx::PgPool,
    ) -> Self {
        Self::spawn(
            listener,
            router(Arc::new(registry), Readiness::new(pipeline.clone(), db)),
        )
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn scrape(registry: &Registry) -> String {
        text(registry).unwrap()
    }

    #[test]
    fn a_consuming_queue_shows_its_series_at_zero_and_the_session_up() {
        let mut registry = Registry::default();
        let pipeline = PipelineMetrics::register(&mut registry);
        assert!(!pipeline.session_is_up());
        pipeline.consuming("t.recorder.events");
        let text = scrape(&registry);
        for line in [
            r#"telerelay_deliveries_total{queue="t.recorder.events",outcome="failed"} 0"#,
            r#"telerelay_redeliveries_total{queue="t.recorder.events"} 0"#,
            r#"telerelay_deliveries_in_flight{queue="t.recorder.events"} 0"#,
            "telerelay_broker_session_up 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn pipeline_families_are_exposed_under_their_catalogue_names() {
        let mut registry = Registry::default();
        let pipeline = PipelineMetrics::register(&mut registry);
        pipeline.delivery_settled("t.dispatcher", DeliveryOutcome::Done);
        pipeline.publish_settled("t.events", PublishOutcome::Confirmed);
        pipeline.confirm_latency("t.events", Duration::from_millis(3));
        drop(pipeline.delivery_started("t.dispatcher", true));
        pipeline.reconnected();
        pipeline.set_session_up(true);
        let text = scrape(&registry);
        for line in [
            r#"telerelay_deliveries_total{queue="t.dispatcher",outcome="done"} 1"#,
            r#"telerelay_redeliveries_total{queue="t.dispatcher"} 1"#,
            r#"telerelay_deliveries_in_flight{queue="t.dispatcher"} 0"#,
            r#"telerelay_published_total{exchange="events",outcome="confirmed"} 1"#,
            r#"telerelay_publish_confirm_seconds_count{exchange="events"} 1"#,
            "telerelay_broker_reconnects_total 1",
            "telerelay_broker_session_up 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let mut registry = Registry::default();
        let pipeline = PipelineMetrics::register(&mut registry);
        let first = pipeline.delivery_started("q", false);
        let second = pipeline.delivery_started("q", false);
        assert!(scrape(&registry).contains(r#"telerelay_deliveries_in_flight{queue="q"} 2"#));
        drop(first);
        drop(second);
        assert!(scrape(&registry).contains(r#"telerelay_deliveries_in_flight{queue="q"} 0"#));
        assert!(!scrape(&registry).contains("telerelay_redeliveries_total{"));
    }

    /// A pool that would connect to a port where nothing listens (it connects only when asked).
    fn unreachable_database() -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://nobody:secret@127.0.0.1:1/none")
            .expect("a lazy pool")
    }

    #[tokio::test]
    async fn not_ready_without_a_consuming_session_whatever_the_database() {
        let pipeline = PipelineMetrics::default();
        let readiness = Readiness::new(pipeline.clone(), unreachable_database());
        assert!(matches!(readiness.check().await, Err(NotReady::Broker)));
        let response = readiness.response().await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn not_ready_while_the_database_does_not_answer_and_the_reason_hides_the_password() {
        let pipeline = PipelineMetrics::default();
        pipeline.consuming("t.dispatcher");
        let readiness = Readiness::new(pipeline.clone(), unreachable_database());
        match readiness.check().await {
            Err(why @ NotReady::Database(_)) => {
                assert!(!why.to_string().contains("secret"), "{why}");
            }
            other => panic!("expected the database to be the reason, got {other:?}"),
        }
        pipeline.set_session_up(false);
        assert!(matches!(readiness.check().await, Err(NotReady::Broker)));
    }

    #[test]
    fn namespace_is_cut_at_the_first_dot() {
        assert_eq!(without_namespace("t-1a2b.review"), "review");
        assert_eq!(without_namespace("telerelay.dead-letter"), "dead-letter");
        assert_eq!(without_namespace(""), "");
    }
}
