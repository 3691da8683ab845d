//! Bad input is a first-class case: every refused message reaches the dead letters with its
//! reason, the sender is told where it can be identified, and valid requests behind it flow on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use domain::RequestState::{Received, Routed};
use sqlx::PgPool;
use tests::fixtures::{ecg_request, imaging_request};
use tests::{HOSPITAL_A, HOSPITAL_B, HOSPITAL_C, TestRelay, test_registry, tokens};

/// The rejection notice the origin received, or a panic naming what came instead.
async fn rejection_for(relay: &TestRelay, origin: &str) -> v1::RequestRejected {
    match relay.broker.next_notice(origin).await.notice {
        Some(v1::origin_notice::Notice::Rejected(rejected)) => rejected,
        other => panic!("expected a rejection notice, got {other:?}"),
    }
}

/// A valid request published after the bad one is routed as usual.
async fn a_valid_request_still_flows(relay: &TestRelay) {
    let request = ecg_request(HOSPITAL_A, "VALID-AFTER-BAD", v1::Priority::Stat, "E07506");
    relay.broker.publish_request(&request).await;
    let id = relay.request_uuid(HOSPITAL_A, "VALID-AFTER-BAD").await;
    relay.wait_for_history(id, &[Received, Routed]).await;
    let claimed = relay.claim_next(tokens::ECG).await;
    assert_eq!(claimed["request_id"], "VALID-AFTER-BAD");
}

async fn refusals_recorded(relay: &TestRelay, reason: &str) -> i64 {
    sqlx::query_scalar!(
        r#"select count(*) as "n!" from rejected_messages where reason = $1"#,
        reason
    )
    .fetch_one(&relay.db)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_body_that_is_not_protobuf_is_dead_lettered_with_its_reason_and_the_sender_told(
    db: PgPool,
) {
    let relay = TestRelay::start(db).await;
    let published = relay
        .broker
        .publish_bytes(
            "HN-HH-001.ecg",
            b"%PDF-1.4 scanned ECG".to_vec(),
            Some("guest"),
        )
        .await;

    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.reason.as_deref(), Some("malformed"));
    assert!(
        dead.detail
            .as_deref()
            .unwrap()
            .contains("not a telerelay.v1.ReviewRequest"),
        "{dead:?}"
    );
    assert_eq!(
        dead.source_queue,
        Some(relay.topology.names.dispatcher_queue())
    );
    assert_eq!(
        dead.message_id.as_deref(),
        Some(published.message_id.as_str())
    );
    assert_eq!(
        dead.body, b"%PDF-1.4 scanned ECG",
        "the dead letter keeps the original body"
    );

    // The broker-verified sender is hospital A, so A is told, with the message id it used.
    let rejected = rejection_for(&relay, HOSPITAL_A).await;
    assert_eq!(rejected.reason, v1::RejectionReason::Malformed as i32);
    assert_eq!(rejected.message_id, published.message_id);
    assert_eq!(refusals_recorded(&relay, "malformed").await, 1);
    a_valid_request_still_flows(&relay).await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_request_without_a_request_id_is_refused_as_missing_a_field(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let mut request = ecg_request(HOSPITAL_A, "", v1::Priority::Routine, "E07505");
    request.request_id.clear();
    relay.broker.publish_request(&request).await;

    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.reason.as_deref(), Some("missing_field"));
    assert!(
        dead.detail.as_deref().unwrap().contains("request_id"),
        "{dead:?}"
    );
    let rejected = rejection_for(&relay, HOSPITAL_A).await;
    assert_eq!(rejected.reason, v1::RejectionReason::MissingField as i32);
    assert!(
        rejected.detail.contains("request_id is required"),
        "{}",
        rejected.detail
    );
    a_valid_request_still_flows(&relay).await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_request_from_an_unknown_origin_is_refused_and_its_real_sender_told(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let request = ecg_request(
        "HN-NOWHERE-9",
        "ECG-UNKNOWN-1",
        v1::Priority::Routine,
        "E07505",
    );
    relay.broker.publish_request(&request).await;

    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.reason.as_deref(), Some("unknown_origin"));
    // The publishing user belongs to hospital A: A learns that its message named another origin.
    let rejected = rejection_for(&relay, HOSPITAL_A).await;
    assert_eq!(rejected.reason, v1::RejectionReason::UnknownOrigin as i32);
    assert_eq!(rejected.request_id, "ECG-UNKNOWN-1");
    a_valid_request_still_flows(&relay).await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_request_whose_user_id_differs_from_its_origin_is_refused_and_the_claimed_origin_not_told(
    db: PgPool,
) {
    let relay = TestRelay::start(db).await;
    // Published as `guest` (hospital A's broker user) but claiming to come from hospital B.
    let forged = ecg_request(HOSPITAL_B, "ECG-FORGED-1", v1::Priority::Stat, "E07505");
    relay.broker.publish_request(&forged).await;

    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.reason.as_deref(), Some("sender_mismatch"));
    let rejected = rejection_for(&relay, HOSPITAL_A).await;
    assert_eq!(rejected.reason, v1::RejectionReason::SenderMismatch as i32);
    let b_results = relay
        .topology
        .names
        .origin_results_queue(&domain::HospitalCode::parse(HOSPITAL_B).unwrap());
    assert_eq!(
        relay.broker.depth(&b_results).await,
        0,
        "the hospital named in a forgery hears nothing"
    );
    let rows = sqlx::query_scalar!(r#"select count(*) as "n!" from review_requests"#)
        .fetch_one(&relay.db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "a forged request never becomes a request");
    a_valid_request_still_flows(&relay).await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_request_without_user_id_is_refused_as_a_sender_mismatch(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let request = ecg_request(HOSPITAL_A, "ECG-ANON-1", v1::Priority::Routine, "E07505");
    relay
        .broker
        .publish_bytes(
            "HN-HH-001.ecg",
            prost::Message::encode_to_vec(&request),
            None,
        )
        .await;
    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.reason.as_deref(), Some("sender_mismatch"));
    assert!(
        dead.detail.as_deref().unwrap().contains("no user_id"),
        "{dead:?}"
    );
    a_valid_request_still_flows(&relay).await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_oversized_body_is_refused_before_it_is_parsed(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let body = vec![0x0a_u8; 3 * 1024 * 1024];
    relay
        .broker
        .publish_bytes("HN-HH-001.ecg", body, Some("guest"))
        .await;
    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.reason.as_deref(), Some("oversized"));
    assert_eq!(dead.body.len(), 3 * 1024 * 1024);
    let rejected = rejection_for(&relay, HOSPITAL_A).await;
    assert_eq!(rejected.reason, v1::RejectionReason::Oversized as i32);
    a_valid_request_still_flows(&relay).await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_request_id_reused_with_different_content_is_refused_not_merged(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let first = ecg_request(HOSPITAL_A, "ECG-REUSED", v1::Priority::Routine, "E07507");
    relay.broker.publish_request(&first).await;
    let id = relay.request_uuid(HOSPITAL_A, "ECG-REUSED").await;
    let other_patient = ecg_request(HOSPITAL_A, "ECG-REUSED", v1::Priority::Routine, "E07508");
    relay.broker.publish_request(&other_patient).await;

    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.reason.as_deref(), Some("conflicting_duplicate"));
    let rejected = rejection_for(&relay, HOSPITAL_A).await;
    assert_eq!(
        rejected.reason,
        v1::RejectionReason::ConflictingDuplicate as i32
    );
    let stored = sqlx::query_scalar!("select body from review_requests where id = $1", id)
        .fetch_one(&relay.db)
        .await
        .unwrap();
    assert_eq!(
        stored,
        prost::Message::encode_to_vec(&first),
        "the first request is kept untouched"
    );
    tests::wait_until("the refusal to reach the audit trail", || async {
        let audited = sqlx::query_scalar!(
            r#"select count(*) as "n!" from lifecycle_events where state = 'rejected' and request_id = 'ECG-REUSED'"#
        );
        audited.fetch_one(&relay.db).await.unwrap() == 1
    })
    .await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_origin_without_a_pairing_for_the_kind_falls_to_the_province_wide_backup_pool(
    db: PgPool,
) {
    let relay = TestRelay::start_with(db, &test_registry(HOSPITAL_C)).await;
    let request = ecg_request(HOSPITAL_C, "SY-ECG-1", v1::Priority::Urgent, "E07509");
    relay.broker.publish_request(&request).await;
    let id = relay.request_uuid(HOSPITAL_C, "SY-ECG-1").await;
    relay.wait_for_history(id, &[Received, Routed]).await;
    let reason = sqlx::query_scalar!(
        "select reason from lifecycle_events where request_uuid = $1 and state = 'routed'",
        id
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert!(
        reason.contains("province-wide backup pool") && reason.contains("pph-ecg"),
        "{reason}"
    );
    assert!(
        relay.take_next(tokens::ECG).await.is_none(),
        "the paired pool's reviewers do not see it"
    );
    let claimed = relay.claim_next(tokens::BACKUP_ECG).await;
    assert_eq!(claimed["request_id"], "SY-ECG-1");
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_origin_without_a_pairing_and_no_backup_pool_is_refused_with_a_clear_reason(db: PgPool) {
    let relay = TestRelay::start_with(db, &test_registry(HOSPITAL_C)).await;
    relay
        .broker
        .publish_request(&imaging_request(HOSPITAL_C, "SY-CT-1", v1::Priority::Stat))
        .await;
    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.reason.as_deref(), Some("no_pairing"));
    let rejected = rejection_for(&relay, HOSPITAL_C).await;
    assert_eq!(rejected.reason, v1::RejectionReason::NoPairing as i32);
    assert!(
        rejected
            .detail
            .contains("no reviewer pool reads imaging from HN-SY-001"),
        "{}",
        rejected.detail
    );
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn refusal_details_and_dead_letters_never_carry_the_patient_pseudonym(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let mut request = ecg_request(HOSPITAL_A, "ECG-BAD-AGE", v1::Priority::Routine, "E07505");
    request.patient = Some(v1::Patient {
        pseudonym: "P-DO-NOT-LEAK".into(),
        age_years: 900,
        sex: v1::Sex::Female as i32,
    });
    relay.broker.publish_request(&request).await;
    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.reason.as_deref(), Some("invalid_field"));
    assert!(!dead.detail.unwrap().contains("P-DO-NOT-LEAK"));
    let rejected = rejection_for(&relay, HOSPITAL_A).await;
    assert!(!rejected.detail.contains("P-DO-NOT-LEAK"));
    let stored = sqlx::query_scalar!("select detail from rejected_messages")
        .fetch_one(&relay.db)
        .await
        .unwrap();
    assert!(!stored.contains("P-DO-NOT-LEAK"));
    relay.stop().await;
}
