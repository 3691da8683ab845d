//! The relay's spine, end to end against the real broker and database: a request from a county
//! reaches the paired pool's lane, is claimed and reported, the result reaches the origin's
//! results queue, and PostgreSQL holds the request, the result and every lifecycle event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use domain::RequestState::{Claimed, Delivered, Received, Reported, Routed};
use sqlx::PgPool;
use tests::fixtures::{ecg_request, imaging_request, pathology_request};
use tests::{HOSPITAL_A, TestRelay, report_body, tokens, wait_until};

/// Drives one request through the whole relay and checks every durable trace it leaves.
async fn round_trip(
    relay: &TestRelay,
    request: v1::ReviewRequest,
    reviewer_token: &str,
    expected_pool: &str,
) {
    let published = relay.broker.publish_request(&request).await;
    let id = relay.request_uuid(HOSPITAL_A, &request.request_id).await;

    let claimed = relay.claim_next(reviewer_token).await;
    assert_eq!(claimed["request_uuid"], id.to_string());
    assert_eq!(claimed["request_id"], request.request_id);
    assert_eq!(
        claimed["correlation_id"], published.correlation_id,
        "the correlation id follows the request"
    );

    let (status, body) = relay
        .report(reviewer_token, &id.to_string(), report_body(false))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], 1);

    let notice = relay.broker.next_notice(HOSPITAL_A).await;
    let Some(v1::origin_notice::Notice::Result(result)) = notice.notice else {
        panic!("expected a result, got {notice:?}")
    };
    assert_eq!(result.request_id, request.request_id);
    assert_eq!(result.report_version, 1);
    assert_eq!(result.conclusion, "normal ECG");

    relay
        .wait_for_history(id, &[Received, Routed, Claimed, Reported, Delivered])
        .await;
    let row = sqlx::query!(
        "select state, pool_code, correlation_id, body from review_requests where id = $1",
        id
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(row.state, "delivered");
    assert_eq!(row.pool_code.as_deref(), Some(expected_pool));
    assert_eq!(row.correlation_id, published.correlation_id);
    assert_eq!(
        row.body,
        prost::Message::encode_to_vec(&request),
        "the request is kept exactly as sent"
    );
    let result_row = sqlx::query!(
        r#"select version, reviewer_id, delivered_at is not null as "delivered!" from review_results where request_uuid = $1"#,
        id
    )
    .fetch_all(&relay.db)
    .await
    .unwrap();
    assert_eq!(result_row.len(), 1);
    assert_eq!(result_row[0].version, 1);
    assert!(result_row[0].delivered);
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_ecg_from_a_real_wfdb_record_travels_to_the_reviewer_and_back_and_is_recorded_in_order(
    db: PgPool,
) {
    let relay = TestRelay::start(db).await;
    let request = ecg_request(HOSPITAL_A, "ECG-E07500-1", v1::Priority::Urgent, "E07500");
    let Some(v1::review_request::Study::Ecg(ecg)) = &request.study else {
        unreachable!()
    };
    assert_eq!(
        (
            ecg.leads.len(),
            ecg.leads[0].samples.len(),
            ecg.sample_rate_hz
        ),
        (12, 5000, 500)
    );
    round_trip(&relay, request.clone(), tokens::ECG, "xy-ecg").await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_reviewer_receives_the_full_waveform_as_the_county_sent_it(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let request = ecg_request(
        HOSPITAL_A,
        "ECG-HR06000-1",
        v1::Priority::Routine,
        "HR06000",
    );
    relay.broker.publish_request(&request).await;
    relay.request_uuid(HOSPITAL_A, &request.request_id).await;
    let claimed = relay.claim_next(tokens::ECG).await;
    let Some(v1::review_request::Study::Ecg(ecg)) = &request.study else {
        unreachable!()
    };
    let leads = claimed["study"]["ecg"]["leads"]
        .as_array()
        .expect("ECG leads");
    assert_eq!(leads.len(), 12);
    assert_eq!(leads[1]["name"], "II");
    let lead_ii: Vec<i64> = leads[1]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(
        lead_ii,
        ecg.leads[1]
            .samples
            .iter()
            .map(|s| i64::from(*s))
            .collect::<Vec<_>>()
    );
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_imaging_study_travels_as_a_claim_check_and_is_recorded(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let request = imaging_request(HOSPITAL_A, "CT-0001", v1::Priority::Stat);
    round_trip(&relay, request, tokens::IMAGING, "xy-imaging").await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_frozen_section_travels_to_the_pathologist_and_is_recorded(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let request = pathology_request(HOSPITAL_A, "FS-0001", v1::Priority::Stat);
    round_trip(&relay, request, tokens::PATHOLOGY, "xy-pathology").await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_stat_request_published_after_fifty_routine_ones_is_handed_out_first(db: PgPool) {
    let relay = TestRelay::start(db).await;
    for n in 0..50 {
        let request = ecg_request(
            HOSPITAL_A,
            &format!("ROUTINE-{n}"),
            v1::Priority::Routine,
            "E07501",
        );
        relay.broker.publish_request(&request).await;
    }
    let stat = ecg_request(HOSPITAL_A, "STAT-CHEST-PAIN", v1::Priority::Stat, "E07502");
    relay.broker.publish_request(&stat).await;
    relay.request_uuid(HOSPITAL_A, "STAT-CHEST-PAIN").await;
    let stat_lane = relay.topology.names.review_lane(
        &domain::PoolCode::parse("xy-ecg").unwrap(),
        domain::Priority::Stat,
    );
    wait_until("the STAT request to wait in its lane", || async {
        relay.broker.depth(&stat_lane).await == 1
    })
    .await;
    let routine_lane = relay.topology.names.review_lane(
        &domain::PoolCode::parse("xy-ecg").unwrap(),
        domain::Priority::Routine,
    );
    wait_until("all 50 routine requests to wait in their lane", || async {
        relay.broker.depth(&routine_lane).await == 50
    })
    .await;

    let first = relay.claim_next(tokens::ECG).await;
    assert_eq!(first["request_id"], "STAT-CHEST-PAIN");
    assert_eq!(first["priority"], "stat");
    let second = relay.claim_next(tokens::ECG_SECOND).await;
    assert_eq!(second["priority"], "routine");
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_same_request_published_twice_yields_one_request_and_one_routing(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let request = ecg_request(HOSPITAL_A, "ECG-TWICE", v1::Priority::Routine, "E07503");
    relay.broker.publish_request(&request).await;
    relay.broker.publish_request(&request).await;
    assert_one_routing(&relay, "ECG-TWICE", 2).await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_same_request_published_concurrently_yields_one_request_and_one_routing(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let request = ecg_request(HOSPITAL_A, "ECG-RACE", v1::Priority::Routine, "E07504");
    let publishes = (0..8).map(|_| relay.broker.publish_request(&request));
    futures::future::join_all(publishes).await;
    assert_one_routing(&relay, "ECG-RACE", 8).await;
    relay.stop().await;
}

/// After `published` copies were consumed (all but one counted as duplicates): one row, one lane message, one `routed` event.
async fn assert_one_routing(relay: &TestRelay, request_id: &str, published: usize) {
    let names = &relay.topology.names;
    let id = relay.request_uuid(HOSPITAL_A, request_id).await;
    wait_until(
        "the dispatcher to count every copy after the first as a duplicate",
        || async {
            let duplicates = sqlx::query_scalar!(
                "select duplicates_received from review_requests where id = $1",
                id
            )
            .fetch_one(&relay.db)
            .await
            .unwrap();
            duplicates as usize == published - 1
        },
    )
    .await;
    relay.wait_for_history(id, &[Received, Routed]).await;
    let rows = sqlx::query_scalar!(
        r#"select count(*) as "n!" from review_requests where request_id = $1"#,
        request_id
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(rows, 1, "{published} publishes must yield one request row");
    let lane = names.review_lane(
        &domain::PoolCode::parse("xy-ecg").unwrap(),
        domain::Priority::Routine,
    );
    assert_eq!(
        relay.broker.depth(&lane).await,
        1,
        "and one message in the lane"
    );
    relay
        .assert_no_dead_letters("an identical duplicate is not an error")
        .await;
    let routed = sqlx::query_scalar!(
        r#"select count(*) as "n!" from lifecycle_events where request_uuid = $1 and state = 'routed'"#,
        id
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(routed, 1);
}
