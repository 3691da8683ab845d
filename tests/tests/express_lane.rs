//! The STAT express lane: a STAT request published with the routing key
//! `<origin>.<kind>.stat` waits in the dispatcher's express queue, not behind a backlog of
//! routine work in its ordinary queue (first in, first out), and a request that claims the
//! express lane without being STAT is refused with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use prost::Message as _;
use sqlx::PgPool;
use tests::fixtures::{ecg_request, imaging_request};
use tests::{HOSPITAL_A, InProcess, TestRelay, amqp_url, test_registry, tokens, wait_until};
use tokio_util::sync::CancellationToken;

/// Routine requests waiting for the dispatcher: many times its prefetch, so that without the
/// express lane a STAT request published after them would be routed last.
const BACKLOG: usize = 400;

/// Injects: a backlog of routine requests published while no dispatcher runs (the hub was
/// down), then one STAT ECG on the express key; then the dispatcher starts. The STAT request is
/// routed before most of the backlog — compared by the order of their commits on the
/// database's clock, not by any time limit.
#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_stat_request_on_the_express_key_is_routed_before_a_waiting_routine_backlog(db: PgPool) {
    let relay = TestRelay::start_running(
        db,
        &amqp_url(),
        &test_registry(HOSPITAL_A),
        InProcess::DESK_ONLY,
    )
    .await;
    let names = &relay.topology.names;
    for i in 0..BACKLOG {
        let request = imaging_request(
            HOSPITAL_A,
            &format!("BACKLOG-{i:04}"),
            v1::Priority::Routine,
        );
        relay.broker.publish_request(&request).await;
    }
    let stat = ecg_request(HOSPITAL_A, "STAT-CHEST-PAIN", v1::Priority::Stat, "E07500");
    relay
        .broker
        .publish_bytes(
            &bus::Names::request_routing_key(HOSPITAL_A, "ecg", true),
            stat.encode_to_vec(),
            Some("guest"),
        )
        .await;
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

    let dispatcher_stop = CancellationToken::new();
    let dispatcher = tokio::spawn(dispatcher::run(
        dispatcher::Config {
            service: runtime::ServiceConfig {
                broker: relay.broker_config.clone(),
                database: runtime::DatabaseConfig::default(),
                log_format: "json".into(),
            },
            ..Default::default()
        },
        relay.db.clone(),
        tests::metrics_listener().0,
        dispatcher_stop.clone(),
    ));
    wait_until(
        "the whole backlog and the STAT request to be routed",
        || async { routed(&relay.db).await == BACKLOG as i64 + 1 },
    )
    .await;
    dispatcher_stop.cancel();
    dispatcher.await.unwrap().unwrap();

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

async fn routed(db: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from review_requests where routed_at is not null")
        .fetch_one(db)
        .await
        .unwrap()
}
