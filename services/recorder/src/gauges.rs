//! The gauge refresher: every `gauge_interval_ms` it reads the province's state from PostgreSQL
//! (lanes, SLA, critical values, dead letters) and the broker (queue depths by passive declare)
//! into the recorder's gauges. Every recorder reports the same truth, so dashboards take `max`
//! across instances, never `sum`.

use crate::Context;
use crate::metrics::{PoolPriority, ReasonLabel};
use anyhow::Context as _;
use bus::lapin::Connection;
use domain::Priority;
use telemetry::metrics::QueueLabels;

/// Refreshes the gauges until shutdown. A failed refresh is logged and tried again at the next
/// interval: the gauges keep their last values meanwhile, and the session is not disturbed.
pub(crate) async fn run(context: &Context, connection: &Connection) -> anyhow::Result<()> {
    loop {
        if let Err(error) = refresh(context, connection).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "refreshing the gauges failed; trying again at the next interval"
            );
        }
        tokio::select! {
            _ = context.shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(context.config.gauge_interval()) => {}
        }
    }
}

async fn refresh(context: &Context, connection: &Connection) -> anyhow::Result<()> {
    let gauges = &context.metrics.gauges;
    let db = &context.db;
    let names = &context.topology.names;

    // Every lane of every pool is listed, the empty ones with 0, so a gauge comes back down.
    for lane in store::status::lanes_waiting(db)
        .await
        .context("reading the lanes")?
    {
        let labels = PoolPriority {
            pool: lane.pool,
            priority: lane.priority,
        };
        gauges.lane_waiting.get_or_create(&labels).set(lane.waiting);
        gauges
            .lane_oldest_waiting
            .get_or_create(&labels)
            .set(lane.oldest_seconds.max(0.0));
    }

    let open = store::status::open_counts(db)
        .await
        .context("reading the open counts")?;
    gauges.sla_open_at_risk.set(open.sla_at_risk);
    gauges.sla_open_overdue.set(open.sla_overdue);
    gauges.critical_open.set(open.critical_open);
    gauges.critical_overdue.set(open.critical_overdue);

    for group in store::status::unreplayed_dead_letters(db)
        .await
        .context("reading the dead letters")?
    {
        gauges
            .dead_letters_unreplayed
            .get_or_create(&ReasonLabel {
                reason: group.reason,
            })
            .set(group.count);
    }

    let mut queues = names.core_queues();
    for pool in store::registry::pool_codes(db)
        .await
        .context("reading the pools")?
    {
        queues.extend(
            Priority::LANES_MOST_URGENT_FIRST
                .iter()
                .map(|priority| names.review_lane(&pool, *priority)),
        );
    }
    for depth in bus::queue_depths(connection, &queues)
        .await
        .context("reading the queue depths")?
    {
        let labels = QueueLabels { queue: depth.queue };
        match depth.counts {
            Some(counts) => {
                gauges
                    .queue_messages
                    .get_or_create(&labels)
                    .set(i64::from(counts.messages));
            }
            // Not declared (yet): no series rather than a made-up 0.
            None => {
                gauges.queue_messages.remove(&labels);
            }
        }
    }
    Ok(())
}
