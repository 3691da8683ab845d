//! The audit trail is evidence: it can be appended to, never rewritten.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use domain::RequestState::{Received, Routed};
use sqlx::PgPool;
use tests::fixtures::ecg_request;
use tests::{HOSPITAL_A, TestRelay};

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_audit_trail_refuses_updates_and_deletes(db: PgPool) {
    let relay = TestRelay::start(db).await;
    relay
        .broker
        .publish_request(&ecg_request(
            HOSPITAL_A,
            "ECG-AUDIT",
            v1::Priority::Routine,
            "E07500",
        ))
        .await;
    let id = relay.request_uuid(HOSPITAL_A, "ECG-AUDIT").await;
    relay.wait_for_history(id, &[Received, Routed]).await;

    let rewrite = sqlx::query!(
        "update lifecycle_events set reason = 'edited' where request_uuid = $1",
        id
    )
    .execute(&relay.db)
    .await;
    let error = rewrite.expect_err("an update must be refused");
    assert!(error.to_string().contains("append-only"), "{error}");
    let erase = sqlx::query!("delete from lifecycle_events where request_uuid = $1", id)
        .execute(&relay.db)
        .await;
    assert!(
        erase
            .expect_err("a delete must be refused")
            .to_string()
            .contains("append-only")
    );
    relay.wait_for_history(id, &[Received, Routed]).await;
    relay.stop().await;
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn every_event_names_who_acted_and_why(db: PgPool) {
    let relay = TestRelay::start(db).await;
    relay
        .broker
        .publish_request(&ecg_request(
            HOSPITAL_A,
            "ECG-WHO",
            v1::Priority::Stat,
            "E07501",
        ))
        .await;
    let id = relay.request_uuid(HOSPITAL_A, "ECG-WHO").await;
    relay.wait_for_history(id, &[Received, Routed]).await;
    let history = store::audit::history(&relay.db, id).await.unwrap();
    assert_eq!(history[0].actor, "hospital:HN-HH-001");
    assert_eq!(history[0].reason, "stat ecg request received");
    assert_eq!(history[1].actor, "service:dispatcher");
    assert_eq!(
        history[1].reason,
        "routed by hospital pairing to pool xy-ecg lane stat"
    );
    relay.stop().await;
}
