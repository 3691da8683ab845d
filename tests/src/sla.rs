//! Helpers for the SLA clock and lease tests: moving a request's clock in the test database
//! (never sleeping for minutes), reading pages from the alerts queue, a dispatcher the test can
//! stop and start, and the desk's lease calls.

use crate::fixtures::ecg_request;
use crate::{DEADLINE, HOSPITAL_A, TestRelay, wait_until};
use bus::lapin::Connection;
use bus::lapin::options::{BasicAckOptions, BasicGetOptions};
use contract::v1;
use domain::{PoolCode, Priority};
use prost::Message;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The SLA clock interval the tests' own dispatchers run with.
pub const TEST_CLOCK_INTERVAL_MS: u64 = 100;

/// Makes the request's at-risk mark pass now.
pub async fn pass_at_risk_mark(db: &PgPool, id: Uuid) {
    sqlx::query!(
        "update review_requests set at_risk_at = now() - interval '1 second' where id = $1",
        id
    )
    .execute(db)
    .await
    .unwrap();
}

/// Makes the request due now (its at-risk mark too, as it cannot lie after the due time).
pub async fn pass_due_time(db: &PgPool, id: Uuid) {
    sqlx::query!(
        r#"update review_requests set due_at = now() - interval '1 second',
                  at_risk_at = least(at_risk_at, now() - interval '1 second')
           where id = $1"#,
        id
    )
    .execute(db)
    .await
    .unwrap();
}

/// Moves the due time `seconds` further into the past, so that later ladder steps fall due.
pub async fn move_due_back(db: &PgPool, id: Uuid, seconds: f64) {
    sqlx::query!(
        "update review_requests set due_at = due_at - make_interval(secs => $2) where id = $1",
        id,
        seconds
    )
    .execute(db)
    .await
    .unwrap();
}

/// Makes the request's lease run out now.
pub async fn expire_lease(db: &PgPool, id: Uuid) {
    sqlx::query!(
        "update review_requests set claim_expires_at = now() - interval '1 second' where id = $1 and state = 'claimed'",
        id
    )
    .execute(db)
    .await
    .unwrap();
}

/// The clock's view of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct ClockRow {
    pub state: String,
    pub pool: Option<String>,
    pub claimed_by: Option<String>,
    pub escalation_level: i32,
    pub flagged: bool,
    pub warned: bool,
    pub breached: bool,
}

pub async fn clock_row(db: &PgPool, id: Uuid) -> ClockRow {
    sqlx::query_as!(
        ClockRow,
        r#"select state, pool_code as pool, claimed_by, escalation_level, flagged,
                  warned_at is not null as "warned!", breached_at is not null as "breached!"
           from review_requests where id = $1"#,
        id
    )
    .fetch_one(db)
    .await
    .unwrap()
}

/// Waits until the request's row satisfies `condition`.
pub async fn wait_for_row(
    db: &PgPool,
    id: Uuid,
    what: &str,
    condition: impl Fn(&ClockRow) -> bool,
) {
    wait_until(what, || async { condition(&clock_row(db, id).await) }).await;
}

/// The recorded events of one state for a request: (actor, reason, pool), in order.
pub async fn events(
    db: &PgPool,
    id: Uuid,
    state: domain::RequestState,
) -> Vec<(String, String, Option<String>)> {
    sqlx::query!(
        "select actor, reason, pool_code from lifecycle_events where request_uuid = $1 and state = $2 order by occurred_at, recorded_at",
        id,
        state.as_str()
    )
    .fetch_all(db)
    .await
    .unwrap()
    .into_iter()
    .map(|row| (row.actor, row.reason, row.pool_code))
    .collect()
}

/// Waits until the recorder holds `count` events of `state` for the request; returns them.
pub async fn wait_for_events(
    db: &PgPool,
    id: Uuid,
    state: domain::RequestState,
    count: usize,
) -> Vec<(String, String, Option<String>)> {
    crate::wait_for(&format!("{count} {state} events of {id}"), || async {
        let found = events(db, id, state).await;
        (found.len() >= count).then_some(found)
    })
    .await
}

/// Proves that the clock completed at least one whole pass after this call: the marker request
/// is made at risk again twice, each time waiting for the clock to warn about it. Whatever the
/// clock would do twice, it would have done by then.
pub async fn two_clock_ticks(db: &PgPool, marker: Uuid) {
    for _ in 0..2 {
        sqlx::query!(
            "update review_requests set warned_at = null, at_risk_at = now() - interval '1 second' where id = $1",
            marker
        )
        .execute(db)
        .await
        .unwrap();
        wait_for_row(db, marker, "the clock to warn about the marker", |row| {
            row.warned
        })
        .await;
    }
}

/// A page taken from the alerts queue.
#[derive(Clone, Debug)]
pub struct Page {
    pub routing_key: String,
    pub escalated: v1::RequestEscalated,
}

/// Reads the namespace's alerts queue, as the paging bridge would.
pub struct Pager {
    connection: Connection,
    channel: bus::lapin::Channel,
    queue: String,
}

impl Pager {
    pub async fn connect(relay: &TestRelay) -> Self {
        let connection = Connection::connect(&crate::amqp_url(), Default::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        Self {
            connection,
            channel,
            queue: relay.topology.names.alerts_queue(),
        }
    }

    /// The next page, waiting up to the deadline.
    pub async fn next(&self) -> Page {
        let started = Instant::now();
        loop {
            if let Some(message) = self
                .channel
                .basic_get(
                    self.queue.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await
                .unwrap()
            {
                let delivery = message.delivery;
                delivery.ack(BasicAckOptions::default()).await.unwrap();
                return Page {
                    routing_key: delivery.routing_key.as_str().to_owned(),
                    escalated: v1::RequestEscalated::decode(delivery.data.as_slice()).unwrap(),
                };
            }
            assert!(started.elapsed() < DEADLINE, "timed out waiting for a page");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn close(self) {
        self.channel.close(200, "done".into()).await.ok();
        self.connection.close(200, "done".into()).await.ok();
    }
}

/// A dispatcher the test runs itself (the relay started without one), to stop and start it.
pub struct OwnDispatcher {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    /// Its `/metrics`, `/health` and `/ready` (`http://127.0.0.1:<port>`).
    pub metrics_url: String,
}

impl OwnDispatcher {
    pub fn start(relay: &TestRelay) -> Self {
        let stop = CancellationToken::new();
        let config = dispatcher::Config {
            service: relay.service_config(),
            clock_interval_ms: TEST_CLOCK_INTERVAL_MS,
            ..Default::default()
        };
        let (listener, metrics_url) = crate::metrics_listener();
        let task = tokio::spawn(dispatcher::run(
            config,
            relay.db.clone(),
            listener,
            stop.clone(),
        ));
        Self {
            stop,
            task,
            metrics_url,
        }
    }

    /// Stops it as SIGTERM would, and checks that it drained cleanly.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the dispatcher drains")
            .expect("the dispatcher did not panic")
            .expect("the dispatcher ended cleanly");
    }
}

/// Starts a relay whose dispatcher the test runs itself (see [`OwnDispatcher`]).
pub async fn relay_without_dispatcher(db: PgPool) -> TestRelay {
    TestRelay::start_running(
        db,
        &crate::amqp_url(),
        &crate::test_registry(crate::HOSPITAL_A),
        crate::InProcess {
            dispatcher: false,
            recorder: true,
            ..crate::InProcess::ALL
        },
    )
    .await
}

/// `POST /v1/requests/{id}/heartbeat` or `PUT /v1/requests/{id}/draft`: status and JSON body.
pub async fn lease_call(
    relay: &TestRelay,
    token: &str,
    id: &str,
    draft: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let call = match &draft {
        None => relay
            .http
            .post(format!("{}/v1/requests/{id}/heartbeat", relay.desk_url)),
        Some(body) => relay
            .http
            .put(format!("{}/v1/requests/{id}/draft", relay.desk_url))
            .json(body),
    };
    let response = call.bearer_auth(token).send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or_default(),
    )
}

/// The ECG record the SLA tests publish.
pub const RECORD: &str = "HR06001";

/// Publishes a request from hospital A and waits until the dispatcher recorded it.
pub async fn publish(relay: &TestRelay, request: v1::ReviewRequest) -> Uuid {
    let request_id = request.request_id.clone();
    relay.broker.publish_request(&request).await;
    relay.request_uuid(HOSPITAL_A, &request_id).await
}

/// Publishes an ECG from hospital A; see [`publish`].
pub async fn publish_ecg(relay: &TestRelay, request_id: &str, priority: v1::Priority) -> Uuid {
    publish(relay, ecg_request(HOSPITAL_A, request_id, priority, RECORD)).await
}

/// The name of a pool's lane.
pub fn lane(relay: &TestRelay, pool: &str, priority: Priority) -> String {
    relay
        .topology
        .names
        .review_lane(&PoolCode::parse(pool).unwrap(), priority)
}

/// Waits until a lane holds `depth` messages.
pub async fn wait_for_lane_depth(relay: &TestRelay, lane: &str, depth: u32) {
    wait_until(&format!("{lane} to hold {depth}"), || async {
        relay.broker.depth(lane).await == depth
    })
    .await;
}

/// The next notice for hospital A, which must be an escalation.
pub async fn next_escalation(relay: &TestRelay) -> v1::RequestEscalated {
    let notice = relay.broker.next_notice(HOSPITAL_A).await;
    match notice.notice {
        Some(v1::origin_notice::Notice::Escalated(escalated)) => escalated,
        other => panic!("expected an escalation notice, got {other:?}"),
    }
}
