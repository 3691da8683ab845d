//! The review desk's rules: who may take, report and return what.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use domain::RequestState::{Claimed, Received, Returned, Routed};
use sqlx::PgPool;
use tests::fixtures::ecg_request;
use tests::{HOSPITAL_A, TestRelay, report_body, tokens};

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_call_without_a_known_token_is_unauthorised(db: PgPool) {
    let relay = TestRelay::start(db).await;
    for token in [None, Some("not-a-reviewer")] {
        let mut call = relay
            .http
            .post(format!("{}/v1/worklist/next", relay.desk_url));
        if let Some(token) = token {
            call = call.bearer_auth(token);
        }
        assert_eq!(call.send().await.unwrap().status().as_u16(), 401);
    }
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn nothing_waiting_answers_no_content(db: PgPool) {
    let relay = TestRelay::start(db).await;
    assert!(relay.take_next(tokens::ECG).await.is_none());
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn only_the_reviewer_holding_a_request_can_report_it_and_only_once(db: PgPool) {
    let relay = TestRelay::start(db).await;
    relay
        .broker
        .publish_request(&ecg_request(
            HOSPITAL_A,
            "ECG-HELD",
            v1::Priority::Asap,
            "HR06001",
        ))
        .await;
    relay.request_uuid(HOSPITAL_A, "ECG-HELD").await;
    let claimed = relay.claim_next(tokens::ECG).await;
    let id = claimed["request_uuid"].as_str().unwrap().to_owned();
    assert!(
        relay.take_next(tokens::ECG_SECOND).await.is_none(),
        "two reviewers never hold one request"
    );

    let (status, body) = relay
        .report(tokens::ECG_SECOND, &id, report_body(false))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    let (status, _) = relay.report(tokens::IMAGING, &id, report_body(false)).await;
    assert_eq!(status, 404, "another pool's reviewer cannot even see it");

    let (status, _) = relay.report(tokens::ECG, &id, report_body(true)).await;
    assert_eq!(status, 201);
    let (status, body) = relay.report(tokens::ECG, &id, report_body(false)).await;
    assert_eq!(status, 409, "a reported request is no longer held: {body}");

    let notice = relay.broker.next_notice(HOSPITAL_A).await;
    let Some(v1::origin_notice::Notice::Result(result)) = notice.notice else {
        panic!("{notice:?}")
    };
    assert!(result.critical);
    assert_eq!(result.critical_finding, "acute inferior STEMI");
    assert_eq!(result.reviewer_id, "xy-ecg-liu");
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_critical_report_must_name_its_finding(db: PgPool) {
    let relay = TestRelay::start(db).await;
    relay
        .broker
        .publish_request(&ecg_request(
            HOSPITAL_A,
            "ECG-CRIT",
            v1::Priority::Stat,
            "HR06002",
        ))
        .await;
    relay.request_uuid(HOSPITAL_A, "ECG-CRIT").await;
    let id = relay.claim_next(tokens::ECG).await["request_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let vague =
        serde_json::json!({ "findings": "see tracing", "conclusion": "bad", "critical": true });
    let (status, body) = relay.report(tokens::ECG, &id, vague).await;
    assert_eq!(status, 422, "{body}");
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_returned_request_reaches_the_origin_with_its_coded_reason(db: PgPool) {
    let relay = TestRelay::start(db).await;
    relay
        .broker
        .publish_request(&ecg_request(
            HOSPITAL_A,
            "ECG-NOISY",
            v1::Priority::Routine,
            "JS20000",
        ))
        .await;
    let id = relay.request_uuid(HOSPITAL_A, "ECG-NOISY").await;
    relay.claim_next(tokens::ECG).await;
    let (status, body) = relay
        .return_request(tokens::ECG, &id.to_string(), "unreadable_signal")
        .await;
    assert_eq!(status, 200, "{body}");

    let notice = relay.broker.next_notice(HOSPITAL_A).await;
    let Some(v1::origin_notice::Notice::Returned(returned)) = notice.notice else {
        panic!("{notice:?}")
    };
    assert_eq!(returned.request_id, "ECG-NOISY");
    assert_eq!(returned.reason, v1::ReturnReason::UnreadableSignal as i32);
    relay
        .wait_for_history(id, &[Received, Routed, Claimed, Returned])
        .await;
    let (status, body) = relay
        .return_request(tokens::ECG, &id.to_string(), "not_a_reason")
        .await;
    assert_eq!(status, 422, "unknown reasons are refused: {body}");
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_database_fault_in_the_middle_of_a_claim_hands_the_request_back_without_costing_a_delivery(
    db: PgPool,
) {
    let relay = TestRelay::start(db).await;
    relay
        .broker
        .publish_request(&ecg_request(
            HOSPITAL_A,
            "ECG-MIDCLAIM",
            v1::Priority::Stat,
            "E07500",
        ))
        .await;
    let id = relay.request_uuid(HOSPITAL_A, "ECG-MIDCLAIM").await;
    relay.wait_for_history(id, &[Received, Routed]).await;
    let lane = relay.topology.names.review_lane(
        &domain::PoolCode::parse("xy-ecg").unwrap(),
        domain::Priority::Stat,
    );
    tests::wait_until("the request in its lane", || async {
        relay.broker.depth(&lane).await == 1
    })
    .await;

    // Injected: the database fails with "terminating connection due to administrator command"
    // (57P01, a transient fault) exactly when the claim is written, after the desk has taken
    // the lane message.
    sqlx::raw_sql(
        "create function fail_claims() returns trigger language plpgsql as $$
         begin raise exception 'injected outage' using errcode = '57P01'; end $$;
         create trigger fail_claims before update on review_requests
         for each row when (new.state = 'claimed') execute function fail_claims();",
    )
    .execute(&relay.db)
    .await
    .unwrap();
    let answer = relay.worklist_next(tokens::ECG).await;
    assert_eq!(answer.status().as_u16(), 503, "a transient fault is a 503");

    // The message is back in the lane, never returned through a nack: the broker has counted no
    // failed delivery. The second reading is the control: the first reading's own nack counts.
    assert_eq!(relay.broker.delivery_count_of_head(&lane).await, 0);
    assert_eq!(relay.broker.delivery_count_of_head(&lane).await, 1);

    sqlx::raw_sql("drop trigger fail_claims on review_requests")
        .execute(&relay.db)
        .await
        .unwrap();
    let claimed = relay
        .take_next(tokens::ECG)
        .await
        .expect("the request waits");
    assert_eq!(claimed["request_id"], "ECG-MIDCLAIM");
    relay
        .wait_for_history(id, &[Received, Routed, Claimed])
        .await;
    relay.stop().await;
}
