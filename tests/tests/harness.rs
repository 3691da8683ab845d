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
