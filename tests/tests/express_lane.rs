//! The STAT express lane: a STAT request published with the routing key
//! `<origin>.<kind>.stat` waits in the dispatcher's express queue, not behind a backlog of
//! routine work in its ordinary queue (first in, first out), and a request that claims the
//! express lane without being STAT is refused with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use prost::Message as _;
use sqlx::PgPool;
use tests::fixtures::{ecg_request, imaging_request};
use tests::sla::OwnDispatcher;
use tests::{HOSPITAL_A, InProcess, TestRelay, amqp_url, test_registry, tokens, wait_until};

/// Routine requests waiting for the dispatcher: many times its prefetch, so that without the
/// express lane a STAT request published after them would be routed last.
const BACKLOG: usize = 400;

/// Injects: a backlog of routine requests published while no dispatcher runs (the hub was
/// down), then one STAT ECG on the express key; then the dispatcher starts. The STAT request is
/// routed before most of the backlog — compared by the order of their commits on the
/// database's clock, not by any time limit.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_stat_request_on_the_express_key_is_routed_before_a_waiting_routine_backlog(db: PgPool) {
    let relay = desk_only_relay(db, InProcess::DESK_ONLY).await;
    let names = &relay.topology.names;
    for i in 0..BACKLOG {
        let request = imaging_request(
            HOSPITAL_A,
            &format!("BACKLOG-{i:04}"),
            v1::Priority::Routine,
        );
        relay.broker.publish_request(&request).await;
    }
    publish_stat_ecg(&relay, "STAT-CHEST-PAIN", "E07500").await;
    assert_eq!(
        relay.broker.depth(&names.dispatcher_queue()).await,
        BACKLOG as u32,
        "the routine backlog waits in the dispatcher's queue"
    );
    assert_eq!(
        relay.broker.depth(&names.dispatcher_stat_queue()).await,
        1,
        "the STAT request waits in the express lane, and only there"
    );

    let dispatcher = OwnDispatcher::start(&relay);
    wait_until(
        "the whole backlog and the STAT request to be routed",
        || async { routed(&relay.db).await == BACKLOG as i64 + 1 },
    )
    .await;
    dispatcher.stop().await;

    let routed_before_stat: i64 = sqlx::query_scalar(
        "select count(*) from review_requests
          where request_id like 'BACKLOG-%'
            and routed_at < (select routed_at from review_requests where request_id = 'STAT-CHEST-PAIN')",
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert!(
        routed_before_stat < (BACKLOG / 2) as i64,
        "{routed_before_stat} of {BACKLOG} routine requests were routed before the STAT request"
    );
    let stat_lane: i64 = sqlx::query_scalar(
        "select count(*) from review_requests where request_id = 'STAT-CHEST-PAIN' and priority = 'stat'",
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(stat_lane, 1, "the STAT request is recorded as STAT");
    assert_eq!(
        relay.take_next(tokens::ECG).await.unwrap()["request_id"],
        "STAT-CHEST-PAIN",
        "the ECG reviewer is offered the STAT request"
    );
    relay.stop().await;
}

/// Injects: a routine ECG published with the express key. It is refused as an invalid field
/// with the reason, dead-lettered, and never recorded as a request; a STAT ECG on the same key
/// flows.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_routine_request_that_claims_the_express_lane_is_refused_with_the_reason(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let routine = ecg_request(
        HOSPITAL_A,
        "ROUTINE-JUMPING",
        v1::Priority::Routine,
        "E07501",
    );
    let express_key = bus::Names::request_routing_key(HOSPITAL_A, "ecg", true);
    relay
        .broker
        .publish_bytes(&express_key, routine.encode_to_vec(), Some("guest"))
        .await;
    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.reason.as_deref(), Some("invalid_field"));
    let detail = dead.detail.unwrap_or_default();
    assert!(
        detail.contains("express lane") && detail.contains("routine"),
        "the reason says what was wrong: {detail}"
    );
    match relay.broker.next_notice(HOSPITAL_A).await.notice {
        Some(v1::origin_notice::Notice::Rejected(rejected)) => {
            assert_eq!(rejected.request_id, "ROUTINE-JUMPING");
        }
        other => panic!("expected a rejection notice, got {other:?}"),
    }

    let stat = ecg_request(HOSPITAL_A, "STAT-EXPRESS", v1::Priority::Stat, "E07502");
    relay
        .broker
        .publish_bytes(&express_key, stat.encode_to_vec(), Some("guest"))
        .await;
    let claimed = relay.claim_next(tokens::ECG).await;
    assert_eq!(claimed["request_id"], "STAT-EXPRESS");
    let rows: i64 = sqlx::query_scalar(
        "select count(*) from review_requests where request_id = 'ROUTINE-JUMPING'",
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(rows, 0, "the refused request was never recorded");
    relay.stop().await;
}

/// Injects: one STAT ECG on the express key, with every outbox relay polling only once an
/// hour. Its lane message reaches the ECG pool's STAT lane and the outbox is left empty
/// all the same: the handler that committed it publishes it at once
/// (`decide::publish_at_once`; `OutboxRelay::publish_rows` is tested in `outbox.rs`). This fails
/// if a STAT request's messages were left for the relay's poll.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_stat_request_reaches_its_lane_without_waiting_for_the_relays_poll(db: PgPool) {
    // Every outbox relay (the desk's and the dispatcher's) looks for rows on its own only once
    // an hour: the STAT request's rows can only go out through its handler, or through a relay
    // its handler wakes.
    let relay = desk_only_relay(db, InProcess::DESK_ONLY.with_outbox_poll_ms(3_600_000)).await;
    let dispatcher = OwnDispatcher::start(&relay);
    let ready = format!("{}/ready", dispatcher.metrics_url);
    // Ready: consuming, its relay's first pass (at session start) done.
    tests::wait_until("the dispatcher to be ready", || async {
        matches!(relay.http.get(&ready).send().await, Ok(response) if response.status().is_success())
    })
    .await;
    publish_stat_ecg(&relay, "STAT-AT-ONCE", "E07503").await;
    let stat_lane = relay.topology.names.review_lane(
        &domain::PoolCode::parse("xy-ecg").unwrap(),
        domain::Priority::Stat,
    );
    wait_until(
        "the STAT request's lane message and an empty outbox",
        || async { relay.broker.depth(&stat_lane).await == 1 && outbox_rows(&relay.db).await == 0 },
    )
    .await;
    assert_eq!(
        relay.take_next(tokens::ECG).await.unwrap()["request_id"],
        "STAT-AT-ONCE"
    );
    dispatcher.stop().await;
    relay.stop().await;
}

/// Publishes a STAT ECG on the express key, as the county's HIS does.
async fn publish_stat_ecg(relay: &TestRelay, request_id: &str, record: &str) {
    let stat = ecg_request(HOSPITAL_A, request_id, v1::Priority::Stat, record);
    relay
        .broker
        .publish_bytes(
            &bus::Names::request_routing_key(HOSPITAL_A, "ecg", true),
            stat.encode_to_vec(),
            Some("guest"),
        )
        .await;
}

/// A relay whose dispatcher the test starts itself.
async fn desk_only_relay(db: PgPool, in_process: InProcess) -> TestRelay {
    TestRelay::start_running(db, &amqp_url(), &test_registry(HOSPITAL_A), in_process).await
}

async fn outbox_rows(db: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from outbox")
        .fetch_one(db)
        .await
        .unwrap()
}

async fn routed(db: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from review_requests where routed_at is not null")
        .fetch_one(db)
        .await
        .unwrap()
}
