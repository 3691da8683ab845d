//! The one consume loop every telerelay consumer uses: explicit prefetch, manual acks, handlers
//! run concurrently up to the prefetch, and a clean drain when asked to stop.

use futures::{StreamExt, TryStreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use std::future::Future;
use telemetry::metrics::{DeliveryOutcome, PipelineMetrics};
use tokio_util::sync::CancellationToken;

/// What a handler decided about a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Its effect is durable: ack it.
    Done,
    /// This very message made processing fail: return it to the queue. This counts towards the
    /// delivery limit, after which the broker dead-letters it. Never used for transient faults.
    Failed,
    /// Shutdown came while waiting out an outage: leave it unacked for the next consumer.
    Abandoned,
    /// The message can never be processed (e.g. undecodable): reject it without requeue, so the
    /// queue's dead-letter exchange keeps it with the broker's `x-death` record.
    Refused,
}

impl Handled {
    fn outcome(self) -> DeliveryOutcome {
        match self {
            Handled::Done => DeliveryOutcome::Done,
            Handled::Failed => DeliveryOutcome::Failed,
            Handled::Abandoned => DeliveryOutcome::Abandoned,
            Handled::Refused => DeliveryOutcome::Refused,
        }
    }
}

/// Consumes `queue` until `stop` is cancelled, then returns once every handler in flight has
/// finished and been acked. Returns an error when the channel or connection fails; the caller's
/// supervisor reconnects, and unacked deliveries return to the queue. Each delivery is counted in
/// `metrics` (in flight, redelivered, settled by outcome); pass `&PipelineMetrics::default()` to
/// count nowhere.
pub async fn consume_until<F, Fut>(
    channel: &Channel,
    queue: &str,
    consumer_name: &str,
    prefetch: u16,
    stop: CancellationToken,
    metrics: &PipelineMetrics,
    handler: F,
) -> anyhow::Result<()>
where
    F: Fn(Delivery) -> Fut,
    Fut: Future<Output = anyhow::Result<Handled>>,
{
    // Prefetch bounds the memory and the work in flight per consumer.
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            format!("{consumer_name}-{}", uuid::Uuid::new_v4())
                .as_str()
                .into(),
            // Manual acks: a delivery is acked only once its effect is durable. Not exclusive:
            // several instances of a service compete for the queue.
            BasicConsumeOptions {
                no_ack: false,
                exclusive: false,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    metrics.consuming(queue);
    tracing::info!(queue, "consuming");
    consumer
        .take_until(stop.clone().cancelled_owned())
        .map_err(anyhow::Error::from)
        .try_for_each_concurrent(usize::from(prefetch), |delivery| {
            let acker = delivery.acker.clone();
            let in_flight = metrics.delivery_started(queue, delivery.redelivered);
            let handled = handler(delivery);
            async move {
                let handled = handled.await?;
                match handled {
                    Handled::Done => {
                        crash_point::reached_in(consumer_name, "after_commit_before_ack");
                        acker.ack(BasicAckOptions::default()).await?;
                    }
                    Handled::Failed => {
                        acker
                            .nack(BasicNackOptions {
                                requeue: true,
                                multiple: false,
                            })
                            .await?;
                    }
                    Handled::Abandoned => {}
                    Handled::Refused => {
                        acker.reject(BasicRejectOptions { requeue: false }).await?;
                    }
                }
                drop(in_flight);
                metrics.delivery_settled(queue, handled.outcome());
                Ok(())
            }
        })
        .await?;
    // The broker cancels a consumer (its queue was deleted, a node went away) by ending the
    // stream cleanly. Unless we were asked to stop, that is a fault: the session must reconnect
    // and re-declare, not drain and stop consuming for good.
    if !stop.is_cancelled() {
        anyhow::bail!("the broker cancelled the consumer of {queue}");
    }
    Ok(())
}
