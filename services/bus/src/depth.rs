//! Queue depths by passive declare: how `relayctl status` and the recorder's gauges read the
//! broker's counters without creating or changing anything.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

/// What a passive declare found for one queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueDepth {
    pub queue: String,
    /// `None` when the queue is not declared.
    pub counts: Option<QueueCounts>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages ready for delivery (not those delivered and unacked).
    pub messages: u32,
    pub consumers: u32,
}

/// Reads each queue's counters with a passive declare. A missing queue closes the channel it was
/// asked on, so the next check opens a new one; only a connection failure is an error.
pub async fn queue_depths(
    connection: &Connection,
    queues: &[String],
) -> lapin::Result<Vec<QueueDepth>> {
    let mut depths = Vec::with_capacity(queues.len());
    let mut channel: Option<Channel> = None;
    for queue in queues {
        let open = match channel.take() {
            Some(open) if open.status().connected() => open,
            _ => connection.create_channel().await?,
        };
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let found = open
            .queue_declare(queue.as_str().into(), options, FieldTable::default())
            .await;
        let counts = match found {
            Ok(found) => {
                channel = Some(open);
                Some(QueueCounts {
                    messages: found.message_count(),
                    consumers: found.consumer_count(),
                })
            }
            Err(_) if connection.status().connected() => None,
            Err(error) => return Err(error),
        };
        depths.push(QueueDepth {
            queue: queue.clone(),
            counts,
        });
    }
    if let Some(open) = channel {
        open.close(200, "counted".into()).await.ok();
    }
    Ok(depths)
}
