//! The yardstick: plain lapin through the same number of durable quorum-queue hops as a
//! request's path through the relay (county → dispatcher queue, → review lane, → results), with
//! the same message sizes (the request as sent on the first two hops, as the relay forwards it
//! unchanged to the lane; a result-sized message on the third), publisher confirms and manual
//! acks, each message acked only after its forward is confirmed. No database, no HTTP.

use crate::load::Prepared;
use anyhow::Context as _;
use bus::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use bus::lapin::types::{AMQPValue, FieldTable};
use bus::lapin::{BasicProperties, Channel, Confirmation, Connection};
use futures::{StreamExt as _, TryStreamExt as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The size of a result on the third hop: an `OriginNotice` with a short report, its ids and
/// signature is about a kilobyte.
pub const RESULT_BYTES: usize = 1024;

/// Messages each forwarder holds at once, as the relay's consumers do (the dispatcher's
/// default prefetch).
pub const PREFETCH: u16 = 32;

pub struct RawPipe {
    pub queues: [String; 3],
}

impl RawPipe {
    pub fn new(namespace: &str) -> Self {
        Self {
            queues: [1, 2, 3].map(|hop| format!("{namespace}.raw.hop{hop}")),
        }
    }

    /// Publishes `requests` into the first queue with no consumer running (a backlog), then
    /// starts the forwarders and the sink and returns how long the backlog took to come out
    /// of the third queue.
    pub async fn drain(&self, amqp_url: &str, requests: &[Prepared]) -> anyhow::Result<Duration> {
        let connection = Connection::connect(amqp_url, Default::default())
            .await
            .context("raw pipe: connecting")?;
        let setup = connection.create_channel().await?;
        for queue in &self.queues {
            declare_quorum(&setup, queue).await?;
        }
        let publisher = confirm_channel(&connection).await?;
        for window in requests.chunks(500) {
            let mut confirms = Vec::with_capacity(window.len());
            for request in window {
                confirms.push(publish(&publisher, &self.queues[0], &request.body).await?);
            }
            for confirm in futures::future::join_all(confirms).await {
                anyhow::ensure!(
                    confirm? == Confirmation::Ack(None),
                    "raw pipe: publish not confirmed"
                );
            }
        }

        let started = Instant::now();
        let received = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(Notify::new());
        let result_body = vec![0x5a_u8; RESULT_BYTES];
        let mut tasks = Vec::new();
        for (hop, resize) in [(0, None), (1, Some(result_body))] {
            let (from, to) = (self.queues[hop].clone(), self.queues[hop + 1].clone());
            let consume = connection.create_channel().await?;
            let publish_on = confirm_channel(&connection).await?;
            tasks.push(tokio::spawn(forward(consume, publish_on, from, to, resize)));
        }
        let sink = connection.create_channel().await?;
        let target = requests.len();
        tasks.push(tokio::spawn(sink_loop(
            sink,
            self.queues[2].clone(),
            received.clone(),
            done.clone(),
            target,
        )));
        while received.load(Ordering::Relaxed) < target {
            tokio::select! {
                _ = done.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            if tasks.iter().any(|task| task.is_finished())
                && received.load(Ordering::Relaxed) < target
            {
                anyhow::bail!("raw pipe: a forwarder stopped early");
            }
        }
        let elapsed = started.elapsed();
        for task in &tasks {
            task.abort();
        }
        connection.close(200, "raw pipe done".into()).await.ok();
        Ok(elapsed)
    }
}

async fn declare_quorum(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments.insert("x-delivery-limit".into(), AMQPValue::LongInt(10));
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await?;
    Ok(())
}

async fn confirm_channel(connection: &Connection) -> anyhow::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

async fn publish(
    channel: &Channel,
    queue: &str,
    body: &[u8],
) -> anyhow::Result<bus::lapin::PublisherConfirm> {
    Ok(channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?)
}

/// Consumes `from` and publishes each message (or a result-sized one) to `to`; acks each
/// delivery once its forward is confirmed, up to [`PREFETCH`] at once.
async fn forward(
    consume: Channel,
    publish_on: Channel,
    from: String,
    to: String,
    resize: Option<Vec<u8>>,
) -> anyhow::Result<()> {
    consume
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let consumer = consume
        .basic_consume(
            from.as_str().into(),
            "raw-forwarder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    consumer
        .map_err(anyhow::Error::from)
        .try_for_each_concurrent(usize::from(PREFETCH), |delivery| {
            let (publish_on, to, resize) = (&publish_on, &to, &resize);
            async move {
                let body = resize.as_deref().unwrap_or(&delivery.data);
                let confirmation = publish(publish_on, to, body).await?.await?;
                anyhow::ensure!(
                    confirmation == Confirmation::Ack(None),
                    "raw pipe: forward not confirmed"
                );
                delivery.acker.ack(BasicAckOptions::default()).await?;
                Ok(())
            }
        })
        .await
}

async fn sink_loop(
    channel: Channel,
    queue: String,
    received: Arc<AtomicUsize>,
    done: Arc<Notify>,
    target: usize,
) -> anyhow::Result<()> {
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "raw-sink".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        delivery.acker.ack(BasicAckOptions::default()).await?;
        if received.fetch_add(1, Ordering::Relaxed) + 1 >= target {
            done.notify_one();
        }
    }
    Ok(())
}
