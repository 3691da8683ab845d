//! A message that always fails is returned to its queue until the explicit delivery limit, then
//! the broker dead-letters it, and everything else keeps flowing. Pinned to RabbitMQ 3.10, which
//! has no default delivery limit (telerelay sets one on every queue) and counts a
//! nack-with-requeue towards it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::v1;
use domain::RequestState::{Received, Routed};
use prost::Message;
use sqlx::PgPool;
use tests::fixtures::{ecg_request, poison_event};
use tests::{HOSPITAL_A, TestRelay};

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_event_that_always_fails_is_dead_lettered_after_the_delivery_limit_while_others_flow(
    db: PgPool,
) {
    let relay = TestRelay::start(db).await;
    let names = &relay.topology.names;
    // Injected: a well-formed lifecycle event about a request the relay never saw. Recording it
    // violates the audit trail's foreign key every time: a poison message for the recorder.
    let poison = poison_event(HOSPITAL_A);
    let published = relay
        .broker
        .publish_to(
            &names.events_exchange(),
            "HN-HH-001.routed",
            poison.encode_to_vec(),
            None,
        )
        .await;

    // Meanwhile a real request flows through dispatch and recording as usual.
    relay
        .broker
        .publish_request(&ecg_request(
            HOSPITAL_A,
            "ECG-BESIDE-POISON",
            v1::Priority::Routine,
            "E07500",
        ))
        .await;
    let id = relay.request_uuid(HOSPITAL_A, "ECG-BESIDE-POISON").await;
    relay.wait_for_history(id, &[Received, Routed]).await;

    let dead = relay.next_dead_letter().await;
    assert_eq!(dead.message_id, Some(published.message_id));
    assert_eq!(
        dead.broker_reason.as_deref(),
        Some("delivery_limit"),
        "{dead:?}"
    );
    assert_eq!(dead.broker_queue, Some(names.recorder_events_queue()));
    assert_eq!(
        dead.body,
        poison.encode_to_vec(),
        "the poison message is kept whole for inspection and replay"
    );
    let recorded = sqlx::query_scalar!(
        r#"select count(*) as "n!" from lifecycle_events where request_id = 'NEVER-SEEN'"#
    )
    .fetch_one(&relay.db)
    .await
    .unwrap();
    assert_eq!(recorded, 0);
    relay.stop().await;
}
