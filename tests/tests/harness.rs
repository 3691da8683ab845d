//! The harness keeps the shared broker clean even when a test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bus::lapin::options::QueueDeclareOptions;
use bus::lapin::types::FieldTable;
use sqlx::PgPool;
use tests::TestRelay;

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_relay_dropped_without_stop_leaves_no_queue_behind(db: PgPool) {
    let relay = TestRelay::start(db).await;
    let names = relay.topology.names.clone();
    let queues = [
        names.dispatcher_queue(),
        names.recorder_events_queue(),
        names.dead_letter_queue(),
    ];
    // What a failed assertion does: the relay is dropped while unwinding, without `stop`.
    drop(relay);

    let connection = bus::lapin::Connection::connect(&tests::amqp_url(), Default::default())
        .await
        .unwrap();
    for queue in queues {
        let channel = connection.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let found = channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await;
        assert!(found.is_err(), "{queue} is still on the broker");
    }
    connection.close(200, "done".into()).await.ok();
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_dispatcher_whose_queue_is_deleted_reconnects_and_consumes_again(db: PgPool) {
    use contract::v1;
    let relay = TestRelay::start(db).await;
    let names = relay.topology.names.clone();
    // Injected: an operator deletes the dispatcher's queue; the broker cancels its consumer.
    let connection = bus::lapin::Connection::connect(&tests::amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(names.dispatcher_queue().as_str().into(), Default::default())
        .await
        .unwrap();
    connection.close(200, "done".into()).await.ok();

    // The dispatcher reconnects, re-declares its queue and its binding, and consumes again.
    let request = tests::fixtures::ecg_request(
        tests::HOSPITAL_A,
        "AFTER-CANCEL",
        v1::Priority::Stat,
        "E07500",
    );
    tests::wait_for("the dispatcher's queue to be declared again", || async {
        let probe = bus::lapin::Connection::connect(&tests::amqp_url(), Default::default())
            .await
            .ok()?;
        let channel = probe.create_channel().await.ok()?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let found = channel
            .queue_declare(
                names.dispatcher_queue().as_str().into(),
                passive,
                FieldTable::default(),
            )
            .await;
        probe.close(200, "done".into()).await.ok();
        found.ok().filter(|queue| queue.consumer_count() == 1)
    })
    .await;
    relay.broker.publish_request(&request).await;
    relay.request_uuid(tests::HOSPITAL_A, "AFTER-CANCEL").await;
    relay.stop().await;
}
