//! Fault tests: the broker dies. The relay runs on a private RabbitMQ node that the test kills
//! with SIGKILL and restarts on the same data (`tests::private_broker`), and on a database of
//! its own on the shared PostgreSQL server. The county publishes through its own connection, as
//! a real HIS would, and publishes again whatever the broker did not confirm.
//!
//! The guarantee under test (ARCHITECTURE.md, "Ack after durable" and "Exactly-once effects"):
//! whatever the county saw confirmed is recorded exactly once, however the broker dies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use domain::RequestState::{Claimed, Delivered, Received, Reported, Routed};
use prost::Message;
use std::collections::BTreeSet;
use tests::county::{County, RequestMix, county_requests};
use tests::fixtures::ecg_request;
use tests::inspector::{Inspector, TestDatabase, count};
use tests::private_broker::PrivateBroker;
use tests::{DEADLINE, HOSPITAL_A, TestRelay, report_body, test_registry, tokens, wait_until};
use tokio::sync::watch;

/// Requests the county publishes in the kill test.
const REQUESTS: usize = 200;

/// Injects: SIGKILL of the only broker node once a third of the requests are confirmed, while
/// the county has publishes in flight, the dispatcher has deliveries in hand and the outbox is
/// publishing; then a restart of the node on the same data. Every service's connection, the
/// county's and the harness's own die with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_confirmed_before_and_after_a_broker_kill_is_recorded_exactly_once() {
    let database = TestDatabase::create("fault").await;
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
        addresses: bus::BrokerAddresses::parse(&broker.url()).unwrap(),
        exchange: names.requests_exchange(),
        progress,
    };
    let publishing =
        tokio::spawn(county.publish(county_requests(REQUESTS, "FAULT", RequestMix::Ecg)));
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
    let database = TestDatabase::create("fault").await;
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
