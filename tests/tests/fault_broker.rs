//! Fault tests: the broker dies. The relay runs on a private RabbitMQ node that the test kills
//! with SIGKILL and restarts on the same data (`tests::private_broker`), and on a database of
//! its own on the shared PostgreSQL server. The county publishes through its own connection, as
//! a real HIS would, and publishes again whatever the broker did not confirm.
//!
//! The guarantee under test (ARCHITECTURE.md, "Ack after durable" and "Exactly-once effects"):
//! whatever the county saw confirmed is recorded exactly once, however the broker dies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bus::lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use bus::lapin::types::FieldTable;
use bus::lapin::{BasicProperties, Channel, Confirmation, Connection};
use contract::v1;
use domain::RequestState::{Claimed, Delivered, Received, Reported, Routed};
use prost::Message;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool};
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;
use tests::fixtures::ecg_request;
use tests::private_broker::PrivateBroker;
use tests::{DEADLINE, HOSPITAL_A, TestRelay, report_body, test_registry, tokens, wait_until};
use tokio::sync::watch;

/// Requests the county publishes in the kill test.
const REQUESTS: usize = 200;

/// Publishes the county keeps in flight before waiting for their confirms, so that the kill
/// finds some of them unconfirmed.
const WINDOW: usize = 16;

/// How long the county waits for a window's confirms before it counts them as lost.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Injects: SIGKILL of the only broker node once a third of the requests are confirmed, while
/// the county has publishes in flight, the dispatcher has deliveries in hand and the outbox is
/// publishing; then a restart of the node on the same data. Every service's connection, the
/// county's and the harness's own die with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_confirmed_before_and_after_a_broker_kill_is_recorded_exactly_once() {
    let database = TestDatabase::create().await;
    let mut broker = PrivateBroker::start().await;
    let first_start = broker.last_start();
    let relay = TestRelay::start_on(
        database.pool.clone(),
        &broker.url(),
        &test_registry(HOSPITAL_A),
    )
    .await;
    let db = &relay.db;
    let names = relay.topology.names.clone();

    let (progress, mut confirmed_so_far) = watch::channel(0);
    let county = County {
        url: broker.url(),
        exchange: names.requests_exchange(),
        progress,
    };
    let publishing = tokio::spawn(county.publish(county_requests(REQUESTS)));
    tokio::time::timeout(
        DEADLINE,
        confirmed_so_far.wait_for(|confirmed| *confirmed >= REQUESTS / 3),
    )
    .await
    .expect("a third of the requests confirmed in time")
    .expect("the county is publishing");
    broker.kill_hard().await;
    let confirmed_at_kill = *confirmed_so_far.borrow();
    broker.restart().await;
    let county_log = tokio::time::timeout(DEADLINE, publishing)
        .await
        .expect("the county got every request confirmed after the restart")
        .expect("the county's publisher panicked");

    let confirmed: BTreeSet<String> = county_log.confirmed.iter().cloned().collect();
    assert_eq!(
        (county_log.confirmed.len(), confirmed.len()),
        (REQUESTS, REQUESTS),
        "the county saw each of its requests confirmed once"
    );
    assert!(
        confirmed_at_kill < REQUESTS && county_log.connections >= 2,
        "the kill came mid-stream ({confirmed_at_kill} confirmed, {} connections)",
        county_log.connections
    );

    // Once the dispatcher has taken every copy (ready ones show in the queue's depth), stopping
    // the relay lets it finish what it holds and lets the outboxes publish what was committed:
    // after that nothing changes and every count below is final.
    let inspector = Inspector::connect(&broker.url()).await;
    wait_until("the dispatcher to have taken every copy", || async {
        inspector.depth(&names.dispatcher_queue()).await == 0
    })
    .await;
    wait_until(
        "every confirmed request to be received and routed in the audit trail",
        || async {
            count(
                db,
                "select count(*) from lifecycle_events where state = 'routed'",
            )
            .await
                >= REQUESTS as i64
        },
    )
    .await;
    relay.stop().await;
    let db = &database.pool;
    assert_eq!(
        inspector.depth(&names.dispatcher_queue()).await,
        0,
        "the dispatcher finished every copy it held before it stopped"
    );

    let recorded: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
        "select id, request_id, state from review_requests where origin_hospital = $1",
    )
    .bind(HOSPITAL_A)
    .fetch_all(db)
    .await
    .unwrap();
    let recorded_ids: BTreeSet<String> = recorded.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(recorded.len(), REQUESTS, "one row per confirmed request");
    assert_eq!(recorded_ids, confirmed, "exactly the confirmed requests");
    for (id, request_id, state) in &recorded {
        assert_eq!(state, "routed", "{request_id}");
        assert_eq!(
            store::audit::states(db, *id).await.unwrap(),
            [Received, Routed],
            "history of {request_id}"
        );
    }
    assert_eq!(
        count(db, "select count(*) from lifecycle_events").await,
        2 * REQUESTS as i64
    );
    assert_eq!(
        count(db, "select count(*) from rejected_messages").await,
        0,
        "nothing refused"
    );
    assert_eq!(
        count(db, "select count(*) from outbox").await,
        0,
        "the outbox is flushed"
    );
    let duplicates = count(
        db,
        "select coalesce(sum(duplicates_received), 0)::bigint from review_requests",
    )
    .await;

    let routine_lane = names.review_lane(
        &domain::PoolCode::parse("xy-ecg").unwrap(),
        domain::Priority::Routine,
    );
    let lane = inspector.drain(&routine_lane).await;
    let lane_ids: BTreeSet<uuid::Uuid> = lane.iter().copied().collect();
    let row_ids: BTreeSet<uuid::Uuid> = recorded.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(
        lane_ids, row_ids,
        "the lane holds every routed request (a copy re-published by the outbox after the crash \
         is allowed: the review desk acks stale copies away)"
    );
    assert_eq!(
        (
            inspector.depth(&names.dead_letter_queue()).await,
            count(db, "select count(*) from dead_letters").await
        ),
        (0, 0),
        "no dead letters, waiting or stored"
    );
    println!(
        "node start {first_start:?}, restart {:?}; confirmed {} ({confirmed_at_kill} before the kill); \
         county re-published {} times ({} requests) over {} connections; rows {}; \
         duplicates_received {duplicates}; lane messages {} ({} distinct)",
        broker.last_start(),
        confirmed.len(),
        county_log.republished,
        county_log.republished_ids.len(),
        county_log.connections,
        recorded.len(),
        lane.len(),
        lane_ids.len(),
    );
    inspector.close().await;
    database.drop_database().await;
}

/// Injects: SIGKILL of the broker after a reviewer claimed a request and before they report it,
/// so the report is signed while no broker exists; then a restart on the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_reported_while_the_broker_is_down_reaches_the_origin_after_restart() {
    let database = TestDatabase::create().await;
    let mut broker = PrivateBroker::start().await;
    let relay = TestRelay::start_on(
        database.pool.clone(),
        &broker.url(),
        &test_registry(HOSPITAL_A),
    )
    .await;
    let db = &relay.db;
    let names = relay.topology.names.clone();
    let request = ecg_request(HOSPITAL_A, "ECG-DOWN-1", v1::Priority::Urgent, "E07500");
    relay.broker.publish_request(&request).await;
    let id = relay.request_uuid(HOSPITAL_A, "ECG-DOWN-1").await;
    relay.wait_for_history(id, &[Received, Routed]).await;
    let claimed = relay
        .take_next(tokens::ECG)
        .await
        .expect("the request waits");
    assert_eq!(claimed["request_uuid"], id.to_string());
    relay
        .wait_for_history(id, &[Received, Routed, Claimed])
        .await;
    wait_until("the claim's outbox rows to be published", || async {
        count(db, "select count(*) from outbox").await == 0
    })
    .await;

    broker.kill_hard().await;
    let (status, body) = relay
        .report(tokens::ECG, &id.to_string(), report_body(false))
        .await;
    assert_eq!(status, 201, "a report commits to PostgreSQL alone: {body}");
    assert_eq!(
        count(db, "select count(*) from outbox").await,
        2,
        "the result and the reported event wait in the outbox"
    );

    broker.restart().await;
    relay
        .wait_for_history(id, &[Received, Routed, Claimed, Reported, Delivered])
        .await;
    relay.stop().await;
    let db = &database.pool;
    assert_eq!(count(db, "select count(*) from outbox").await, 0);
    let delivered: Vec<(i32, bool)> = sqlx::query_as(
        "select version, delivered_at is not null from review_results where request_uuid = $1",
    )
    .bind(id)
    .fetch_all(db)
    .await
    .unwrap();
    assert_eq!(delivered, [(1, true)], "one result, delivered");

    let inspector = Inspector::connect(&broker.url()).await;
    let results_queue =
        names.origin_results_queue(&domain::HospitalCode::parse(HOSPITAL_A).unwrap());
    let notices = inspector.drain_bodies(&results_queue).await;
    assert_eq!(
        notices.len(),
        1,
        "the origin receives the result exactly once"
    );
    let notice = v1::OriginNotice::decode(notices[0].as_slice()).unwrap();
    let Some(v1::origin_notice::Notice::Result(result)) = notice.notice else {
        panic!("expected a result, got {notice:?}")
    };
    assert_eq!(
        (
            result.request_id.as_str(),
            result.report_version,
            result.conclusion.as_str()
        ),
        ("ECG-DOWN-1", 1, "normal ECG")
    );
    inspector.close().await;
    database.drop_database().await;
}

/// `REQUESTS` routine ECGs with distinct ids, each encoded once: a retry must send the very same
/// bytes, or the relay would rightly refuse it as a conflicting duplicate.
fn county_requests(requests: usize) -> Vec<Outgoing> {
    const RECORDS: [&str; 5] = ["E07500", "E07501", "E07502", "E07503", "E07504"];
    (0..requests)
        .map(|n| {
            let request_id = format!("ECG-FAULT-{n:04}");
            let request = ecg_request(
                HOSPITAL_A,
                &request_id,
                v1::Priority::Routine,
                RECORDS[n % RECORDS.len()],
            );
            Outgoing {
                request_id,
                message_id: uuid::Uuid::new_v4().to_string(),
                body: request.encode_to_vec(),
            }
        })
        .collect()
}

/// One request as the county sends it, every time.
struct Outgoing {
    request_id: String,
    message_id: String,
    body: Vec<u8>,
}

/// What the county saw.
#[derive(Debug, Default)]
struct CountyLog {
    /// Request ids in the order the broker confirmed them (ack, routed).
    confirmed: Vec<String>,
    /// Publishes that were not confirmed and were sent again.
    republished: usize,
    /// Requests sent more than once.
    republished_ids: BTreeSet<String>,
    /// Connections the county opened.
    connections: usize,
}

/// A county HIS: publishes persistent, mandatory, confirmed, as the broker user `guest`
/// (hospital A's in the test registry), and publishes again whatever was not confirmed,
/// reconnecting with backoff while the broker is down.
struct County {
    url: String,
    exchange: String,
    /// How many requests are confirmed so far.
    progress: watch::Sender<usize>,
}

impl County {
    async fn publish(self, requests: Vec<Outgoing>) -> CountyLog {
        let mut waiting: VecDeque<Outgoing> = requests.into();
        let mut log = CountyLog::default();
        let mut failures = 0u32;
        while !waiting.is_empty() {
            let (connection, channel) = match open_confirmed(&self.url).await {
                Ok(opened) => opened,
                Err(_) => {
                    failures += 1;
                    tokio::time::sleep(bus::reconnect_delay(failures)).await;
                    continue;
                }
            };
            failures = 0;
            log.connections += 1;
            while channel.status().connected() && !waiting.is_empty() {
                let window: Vec<Outgoing> = waiting.drain(..WINDOW.min(waiting.len())).collect();
                let confirmed = self.publish_window(&channel, &window).await;
                for (request, confirmed) in window.into_iter().zip(confirmed) {
                    if confirmed {
                        log.confirmed.push(request.request_id);
                        self.progress.send_replace(log.confirmed.len());
                    } else {
                        log.republished += 1;
                        log.republished_ids.insert(request.request_id.clone());
                        waiting.push_back(request);
                    }
                }
            }
            connection.close(200, "county done".into()).await.ok();
        }
        log
    }

    /// Publishes a window, then waits for its confirms: which ones the broker confirmed.
    async fn publish_window(&self, channel: &Channel, window: &[Outgoing]) -> Vec<bool> {
        let mut pending = Vec::with_capacity(window.len());
        for request in window {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(contract::CONTENT_TYPE.into())
                .with_type(contract::message_type::REVIEW_REQUEST.into())
                .with_message_id(request.message_id.as_str().into())
                .with_correlation_id(request.message_id.as_str().into())
                .with_user_id("guest".into());
            let routing_key = format!("{HOSPITAL_A}.ecg");
            pending.push(
                channel
                    .basic_publish(
                        self.exchange.as_str().into(),
                        routing_key.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &request.body,
                        properties,
                    )
                    .await,
            );
        }
        let confirms = futures::future::join_all(pending.into_iter().map(|sent| async move {
            let Ok(confirm) = sent else { return false };
            // Only an ack without a returned message means queued in a durable queue.
            matches!(confirm.await, Ok(Confirmation::Ack(None)))
        }));
        tokio::time::timeout(CONFIRM_TIMEOUT, confirms)
            .await
            .unwrap_or_else(|_| vec![false; window.len()])
    }
}

async fn open_confirmed(url: &str) -> bus::lapin::Result<(Connection, Channel)> {
    let connection = Connection::connect(url, Default::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

/// A fresh connection to the restarted node, for looking into queues once the relay stopped (the
/// harness's own connection died with the node).
struct Inspector {
    connection: Connection,
    channel: Channel,
}

impl Inspector {
    async fn connect(url: &str) -> Self {
        let connection = Connection::connect(url, Default::default()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        Self {
            connection,
            channel,
        }
    }

    /// Messages ready in a queue.
    async fn depth(&self, queue: &str) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .unwrap()
            .message_count()
    }

    /// Takes every message of a lane; returns the relay's request id of each.
    async fn drain(&self, queue: &str) -> Vec<uuid::Uuid> {
        let mut ids = Vec::new();
        while let Some(message) = self.get(queue).await {
            let headers = message.properties.headers().as_ref();
            let id = bus::header_str(headers, bus::messages::RELAY_REQUEST_UUID_HEADER)
                .expect("a lane message names its request");
            ids.push(id.parse().unwrap());
        }
        ids
    }

    /// Takes every message of a queue; returns their bodies.
    async fn drain_bodies(&self, queue: &str) -> Vec<Vec<u8>> {
        let mut bodies = Vec::new();
        while let Some(message) = self.get(queue).await {
            bodies.push(message.data);
        }
        bodies
    }

    async fn get(&self, queue: &str) -> Option<bus::lapin::message::Delivery> {
        let message = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()?;
        message
            .delivery
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        Some(message.delivery)
    }

    async fn close(self) {
        self.connection.close(200, "inspected".into()).await.ok();
    }
}

/// A database of the test's own on the shared PostgreSQL server, migrated, like the one
/// `#[sqlx::test]` gives; that attribute runs the test on a single-threaded runtime, and these
/// tests want the services on several threads, as in production. Dropped at the end of a test
/// that passes; a failing test leaves it for inspection, as `#[sqlx::test]` does.
struct TestDatabase {
    server: PgConnectOptions,
    name: String,
    pool: PgPool,
}

impl TestDatabase {
    async fn create() -> Self {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let server: PgConnectOptions = url.parse().expect("DATABASE_URL is a PostgreSQL URL");
        let name = format!(
            "tr_fault_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut admin = PgConnection::connect_with(&server)
            .await
            .expect("connecting to the shared PostgreSQL server");
        // A database name cannot be a bind parameter; this one is ours, made of hex digits.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"create database "{name}""#)))
            .execute(&mut admin)
            .await
            .expect("creating the test database");
        admin.close().await.ok();
        // Enough connections for the dispatcher's prefetch, the recorder and the desk at once.
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(server.clone().database(&name))
            .await
            .expect("connecting to the test database");
        store::MIGRATOR
            .run(&pool)
            .await
            .expect("migrating the test database");
        Self { server, name, pool }
    }

    async fn drop_database(self) {
        self.pool.close().await;
        let mut admin = PgConnection::connect_with(&self.server).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            r#"drop database "{}" with (force)"#,
            self.name
        )))
        .execute(&mut admin)
        .await
        .expect("dropping the test database");
        admin.close().await.ok();
    }
}

/// A `count(*)` query without parameters. Plain `query_scalar` rather than `query!`, so that this
/// file needs no entries in the committed `.sqlx/` metadata.
async fn count(db: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}
