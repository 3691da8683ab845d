//! The outbox's direct publish (`OutboxRelay::publish_rows`), which a STAT request's handler
//! uses right after its commit: it publishes exactly the rows it is given, deletes them once
//! confirmed, and leaves alone a row another pass holds, so no row goes out twice from two
//! publishers at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bus::lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use bus::lapin::types::FieldTable;
use bus::lapin::{Connection, ConnectionProperties};
use bus::{OutgoingMessage, Publisher};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use store::outbox::OutboxRelay;
use tests::amqp_url;

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn publish_rows_sends_the_named_rows_once_and_skips_a_row_another_pass_holds(db: PgPool) {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("t-{}.outbox-probe", uuid::Uuid::new_v4().simple());
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        bus::lapin::types::AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .unwrap();
    let message = |n: usize| OutgoingMessage {
        // The default exchange routes by queue name.
        exchange: String::new(),
        routing_key: queue.clone(),
        message_type: "telerelay.test.Probe".into(),
        message_id: format!("probe-{n}"),
        correlation_id: format!("probe-{n}"),
        body: vec![n as u8; 1024],
        headers: Vec::new(),
    };
    let mut tx = db.begin().await.unwrap();
    let ids = store::outbox::enqueue(&mut tx, &[message(0), message(1), message(2)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids.len(), 3, "one row id per message");

    // Another pass holds the third row (as the relay's batch would while awaiting confirms).
    let mut holder = db.begin().await.unwrap();
    sqlx::query("select id from outbox where id = $1 for update")
        .bind(ids[2])
        .fetch_one(&mut *holder)
        .await
        .unwrap();

    let publisher = Publisher::open(&connection, "outbox-test", Duration::from_secs(10))
        .await
        .unwrap();
    let relay = OutboxRelay::new(
        db.clone(),
        publisher,
        Arc::new(tokio::sync::Notify::new()),
        "unused-dead-letter-exchange".into(),
    );
    assert_eq!(
        relay.publish_rows(&ids).await.unwrap(),
        2,
        "the rows nobody holds"
    );
    assert_eq!(
        remaining(&db).await,
        vec![ids[2]],
        "published rows are deleted"
    );
    assert_eq!(
        take_all(&queue).await,
        vec!["probe-0", "probe-1"],
        "exactly the free rows reached the queue, in order"
    );

    holder.rollback().await.unwrap();
    assert_eq!(relay.publish_rows(&ids).await.unwrap(), 1);
    assert!(remaining(&db).await.is_empty());
    assert_eq!(take_all(&queue).await, vec!["probe-2"]);
    assert_eq!(
        relay.publish_rows(&ids).await.unwrap(),
        0,
        "a published row is never published again"
    );
    assert!(take_all(&queue).await.is_empty());

    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    connection.close(200, "done".into()).await.ok();
}

async fn remaining(db: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("select id from outbox order by id")
        .fetch_all(db)
        .await
        .unwrap()
}

/// Every message waiting in `queue`, taken, by message id.
async fn take_all(queue: &str) -> Vec<String> {
    tests::take_all(queue)
        .await
        .iter()
        .map(|delivery| {
            let id = delivery.properties.message_id().clone();
            id.map(|id| id.to_string()).unwrap_or_default()
        })
        .collect()
}
