//! The harness for telerelay's end-to-end tests. A [`TestRelay`] is one whole relay — dispatcher,
//! recorder and review desk, started in-process from their libraries — on the shared RabbitMQ
//! under a random namespace and on the test's own PostgreSQL database (`#[sqlx::test]`), so
//! tests run in parallel without seeing each other. Waiting is always on a condition with a
//! deadline, never a fixed sleep.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broker;
pub mod county;
pub mod critical;
pub mod fixtures;
pub mod inspector;
pub mod metrics;
pub mod private_broker;
pub mod private_cluster;
pub mod private_postgres;
mod registry;
pub mod relay_processes;
pub mod reports;
pub mod revisions;
pub mod routing;
pub mod service_process;
pub mod sla;

pub use broker::{DeadLetter, Published, take_all};
pub use registry::{HOSPITAL_A, HOSPITAL_B, HOSPITAL_C, test_registry, tokens};

use secrecy::SecretString;
use sqlx::PgPool;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The broker the tests use: `TELERELAY_TEST_AMQP_URL`, else the local default.
pub fn amqp_url() -> String {
    std::env::var("TELERELAY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The deadline every wait in the tests uses unless it says otherwise: generous, because CI
/// machines are slow, and irrelevant when things work, because waits end as soon as they can.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Waits until `probe` yields a value, checking every 25 ms, or panics with `what` at the deadline.
pub async fn wait_for<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_for_within(DEADLINE, what, probe).await
}

/// As [`wait_for`], with another deadline: for waits that are long by nature (a large backlog).
pub async fn wait_for_within<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until `condition` holds, checking every 25 ms, or panics with `what` at the deadline.
pub async fn wait_until<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until_within(DEADLINE, what, condition).await
}

/// As [`wait_until`], with another deadline.
pub async fn wait_until_within<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for_within(deadline, what, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// Which of the broker-driven services a [`TestRelay`] runs in-process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InProcess {
    pub dispatcher: bool,
    pub recorder: bool,
    /// Every service's `outbox_poll_ms` (see [`TestRelay::service_config`]).
    pub outbox_poll_ms: u64,
}

impl InProcess {
    /// The whole relay.
    pub const ALL: Self = Self {
        dispatcher: true,
        recorder: true,
        outbox_poll_ms: 500,
    };
    /// Only the review desk: the test runs the dispatcher and the recorder itself.
    pub const DESK_ONLY: Self = Self {
        dispatcher: false,
        recorder: false,
        outbox_poll_ms: 500,
    };

    /// The same services, whose outbox relays look for rows on their own only every `millis`:
    /// for a test that must see what publishes without the relays' polling.
    pub const fn with_outbox_poll_ms(self, millis: u64) -> Self {
        Self {
            outbox_poll_ms: millis,
            ..self
        }
    }
}

/// One relay under test.
pub struct TestRelay {
    pub db: PgPool,
    pub topology: bus::Topology,
    /// The broker settings the services run with (namespace included).
    pub broker_config: runtime::BrokerConfig,
    pub desk_url: String,
    /// Where the in-process dispatcher and recorder serve `/metrics`, `/health` and `/ready`
    /// (`http://127.0.0.1:<port>`); `None` for a service the test runs itself.
    pub dispatcher_url: Option<String>,
    pub recorder_url: Option<String>,
    pub http: reqwest::Client,
    pub broker: broker::TestBroker,
    shutdown: CancellationToken,
    services: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
    /// Deletes the namespace from the broker if the test panics before `stop`.
    cleanup: broker::NamespaceCleanup,
    outbox_poll_ms: u64,
}

impl TestRelay {
    /// The next dead letter the relay stored, waiting up to the deadline.
    pub async fn next_dead_letter(&self) -> DeadLetter {
        self.broker.next_dead_letter(&self.db).await
    }

    /// Asserts that nothing was dead-lettered: none waits in the dead-letter queue and the
    /// recorder stored none.
    pub async fn assert_no_dead_letters(&self, why: &str) {
        let waiting = self
            .broker
            .depth(&self.topology.names.dead_letter_queue())
            .await;
        let stored = sqlx::query_scalar!(r#"select count(*) as "n!" from dead_letters"#)
            .fetch_one(&self.db)
            .await
            .unwrap();
        assert_eq!((waiting, stored), (0, 0), "no dead letters: {why}");
    }

    /// Starts a relay whose registry is [`test_registry`] (hospital A publishes as `guest`).
    pub async fn start(db: PgPool) -> Self {
        Self::start_with(db, &test_registry(HOSPITAL_A)).await
    }

    /// Starts a relay with the given registry.
    pub async fn start_with(db: PgPool, registry: &store::registry::RegistryFile) -> Self {
        Self::start_on(db, &amqp_url(), registry).await
    }

    /// Starts a relay on a given broker (e.g. a private node a fault test kills) and database
    /// pool (e.g. on a private PostgreSQL cluster a fault test stops). `db` must be migrated.
    /// `amqp_url` may list a cluster's nodes, comma-separated, as the services' setting does;
    /// the harness's own connection goes to the first.
    pub async fn start_on(
        db: PgPool,
        amqp_url: &str,
        registry: &store::registry::RegistryFile,
    ) -> Self {
        Self::start_running(db, amqp_url, registry, InProcess::ALL).await
    }

    /// As [`TestRelay::start_on`], running in-process only the services `in_process` names (the
    /// review desk always runs): the test starts the others itself, e.g. as processes it kills
    /// (see [`service_process`]).
    pub async fn start_running(
        db: PgPool,
        amqp_url: &str,
        registry: &store::registry::RegistryFile,
        in_process: InProcess,
    ) -> Self {
        telemetry::init_for_tests();
        store::registry::load(&db, registry)
            .await
            .expect("loading the test registry");
        let namespace = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let broker_config = runtime::BrokerConfig {
            amqp_url: SecretString::from(amqp_url.to_owned()),
            namespace: namespace.clone(),
            delivery_limit: 10,
            confirm_timeout_ms: 10_000,
        };
        let topology = broker_config.topology().unwrap();
        let first_node = amqp_url.split(',').next().unwrap_or(amqp_url).trim();
        let broker = broker::TestBroker::connect(first_node, topology.clone()).await;
        let shutdown = CancellationToken::new();
        let mut cleanup = broker.cleanup_guard(shutdown.clone());
        broker.declare_for_registry(registry).await;
        let service_config = || service_config(&broker_config, in_process.outbox_poll_ms);
        let mut services = Vec::new();
        let (mut dispatcher_url, mut recorder_url) = (None, None);

        if in_process.dispatcher {
            let dispatcher_config = dispatcher::Config {
                service: service_config(),
                ..Default::default()
            };
            let (listener, url) = metrics_listener();
            dispatcher_url = Some(url);
            services.push((
                "dispatcher",
                tokio::spawn(dispatcher::run(
                    dispatcher_config,
                    db.clone(),
                    listener,
                    shutdown.clone(),
                )),
            ));
        }

        if in_process.recorder {
            let recorder_config = recorder::Config {
                service: service_config(),
                // Gauges fresh within a quarter of a second, so tests wait little for them.
                gauge_interval_ms: 250,
                ..Default::default()
            };
            let (listener, url) = metrics_listener();
            recorder_url = Some(url);
            services.push((
                "recorder",
                tokio::spawn(recorder::run(
                    recorder_config,
                    db.clone(),
                    listener,
                    shutdown.clone(),
                )),
            ));
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let desk_url = format!("http://{}", listener.local_addr().unwrap());
        let desk_config = review_desk::Config {
            service: service_config(),
            // No second reads: their events would join the exact histories the tests expect.
            // Tests of second reads start a desk with their own settings (tests::revisions).
            second_read_share: 0.0,
            second_read_all_critical: false,
            ..Default::default()
        };
        services.push((
            "review-desk",
            tokio::spawn(review_desk::run(
                desk_config,
                db.clone(),
                listener,
                shutdown.clone(),
            )),
        ));

        cleanup.abort_on_drop(services.iter().map(|(_, task)| task.abort_handle()));
        let relay = Self {
            db,
            topology,
            broker_config,
            desk_url,
            dispatcher_url,
            recorder_url,
            http: reqwest::Client::new(),
            broker,
            shutdown,
            services,
            cleanup,
            outbox_poll_ms: in_process.outbox_poll_ms,
        };
        relay.wait_until_ready().await;
        relay
    }

    /// Waits until every in-process service answers `/ready` (a broker session up, PostgreSQL
    /// answering).
    async fn wait_until_ready(&self) {
        let services = [
            Some(&self.desk_url),
            self.dispatcher_url.as_ref(),
            self.recorder_url.as_ref(),
        ];
        for base in services.into_iter().flatten() {
            let url = format!("{base}/ready");
            wait_until(&format!("{url} to answer 200"), || async {
                matches!(self.http.get(&url).send().await, Ok(response) if response.status().is_success())
            })
            .await;
        }
    }

    /// The current `/metrics` of the review desk, the dispatcher or the recorder.
    pub async fn scrape(&self, service: metrics::Service) -> metrics::Scrape {
        let base = match service {
            metrics::Service::Desk => Some(&self.desk_url),
            metrics::Service::Dispatcher => self.dispatcher_url.as_ref(),
            metrics::Service::Recorder => self.recorder_url.as_ref(),
        }
        .unwrap_or_else(|| panic!("{service:?} does not run in-process"));
        metrics::scrape(&self.http, base).await
    }

    /// Stops every service (they drain), checks that each ended cleanly, and deletes the
    /// namespace's queues and exchanges from the shared broker.
    /// What every service of this relay runs with: its broker and namespace, JSON logs, and the
    /// outbox poll it was started with. For a test that starts a service itself.
    pub fn service_config(&self) -> runtime::ServiceConfig {
        service_config(&self.broker_config, self.outbox_poll_ms)
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for (name, task) in self.services {
            let ended = tokio::time::timeout(DEADLINE, task).await;
            let result =
                ended.unwrap_or_else(|_| panic!("{name} did not drain within {DEADLINE:?}"));
            result
                .unwrap_or_else(|_| panic!("{name} panicked"))
                .unwrap_or_else(|e| panic!("{name} failed: {e:#}"));
        }
        self.broker.delete_namespace().await;
        self.cleanup.disarm();
    }

    /// `POST /v1/worklist/next` as the reviewer with `token`, whatever it answers.
    pub async fn worklist_next(&self, token: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/worklist/next", self.desk_url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/worklist/next` as the reviewer with `token`: the claimed request, or `None`.
    pub async fn take_next(&self, token: &str) -> Option<serde_json::Value> {
        let response = self.worklist_next(token).await;
        match response.status().as_u16() {
            200 => Some(response.json().await.unwrap()),
            204 => None,
            status => panic!(
                "worklist/next answered {status}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }

    /// Claims the next request as the reviewer with `token`, waiting until one is handed out:
    /// a request's row commits before the outbox puts its message in the lane.
    pub async fn claim_next(&self, token: &str) -> serde_json::Value {
        wait_for("a request to be handed out", || self.take_next(token)).await
    }

    /// `POST /v1/requests/{id}/report`; returns the HTTP status and JSON body.
    pub async fn report(
        &self,
        token: &str,
        request_uuid: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(format!(
                "{}/v1/requests/{request_uuid}/report",
                self.desk_url
            ))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or_default(),
        )
    }

    /// `POST /v1/requests/{id}/return`; returns the HTTP status and JSON body.
    pub async fn return_request(
        &self,
        token: &str,
        request_uuid: &str,
        reason: &str,
    ) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(format!(
                "{}/v1/requests/{request_uuid}/return",
                self.desk_url
            ))
            .bearer_auth(token)
            .json(&serde_json::json!({ "reason": reason, "detail": "test" }))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or_default(),
        )
    }

    /// The relay's id for (origin, request id), once the dispatcher recorded it.
    pub async fn request_uuid(&self, origin: &str, request_id: &str) -> uuid::Uuid {
        wait_for(&format!("request {request_id} to be recorded"), || async {
            sqlx::query_scalar!(
                "select id from review_requests where origin_hospital = $1 and request_id = $2",
                origin,
                request_id
            )
            .fetch_optional(&self.db)
            .await
            .unwrap()
        })
        .await
    }

    /// Waits until the audit trail of a request holds exactly `expected` states, in this order.
    pub async fn wait_for_history(&self, request: uuid::Uuid, expected: &[domain::RequestState]) {
        let mut seen = Vec::new();
        let waited = tokio::time::timeout(DEADLINE, async {
            loop {
                seen = store::audit::states(&self.db, request).await.unwrap();
                if seen.len() >= expected.len() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "history of {request} stayed {seen:?}, expected {expected:?}"
        );
        assert_eq!(seen, expected, "history of {request}");
    }
}

fn service_config(broker: &runtime::BrokerConfig, outbox_poll_ms: u64) -> runtime::ServiceConfig {
    runtime::ServiceConfig {
        broker: broker.clone(),
        database: runtime::DatabaseConfig::default(),
        log_format: "json".into(),
        outbox_poll_ms,
    }
}

/// A listener on a port of the system's choosing for a service's metrics endpoint, and its URL.
/// Bound at once (not in a task), so the URL is known before the service starts.
pub fn metrics_listener() -> (tokio::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a metrics port");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    (listener, url)
}

/// A report body as a reviewer would send it.
pub fn report_body(critical: bool) -> serde_json::Value {
    if critical {
        serde_json::json!({
            "findings": "ST elevation in II, III, aVF with reciprocal depression in I and aVL",
            "conclusion": "acute inferior STEMI",
            "critical": true,
            "critical_finding": "acute inferior STEMI"
        })
    } else {
        serde_json::json!({
            "findings": "sinus rhythm 72/min, normal axis, no ST changes",
            "conclusion": "normal ECG",
            "critical": false
        })
    }
}
