//! The recorder's part of the critical-value loop, run in every broker session: the
//! acknowledgements consumer, the critical clock, and the outbox relay that publishes what they
//! commit (acknowledged / escalated events, reminders, refusal notices and dead-letter copies).

use crate::{Context, acknowledgements, critical_clock};
use bus::Publisher;
use bus::lapin::Connection;
use std::sync::Arc;
use store::outbox::OutboxRelay;
use tokio::sync::Notify;

/// Runs until shutdown, then lets the relay publish everything committed before returning.
pub(crate) async fn serve(context: Arc<Context>, connection: &Connection) -> anyhow::Result<()> {
    let names = &context.topology.names;
    let publisher = Publisher::open(
        connection,
        "recorder",
        context.config.service.broker.confirm_timeout(),
    )
    .await?
    .with_metrics(context.pipeline.clone());
    let wake = Arc::new(Notify::new());
    let relay = OutboxRelay::new(
        context.db.clone(),
        publisher,
        wake.clone(),
        names.dead_letter_exchange(),
    )
    .with_poll_interval(context.config.service.outbox_poll());
    let channel = connection.create_channel().await?;
    let queue = names.recorder_acknowledgements_queue();
    let acknowledgements = bus::consume_until(
        &channel,
        &queue,
        "recorder-acknowledgements",
        context.config.prefetch,
        context.shutdown.clone(),
        &context.pipeline,
        bus::trace::follow(|delivery| {
            let (context, wake) = (context.clone(), wake.clone());
            async move { acknowledgements::record(&context, &wake, delivery).await }
        }),
    );
    let clock = critical_clock::run(&context, &wake);
    // The relay outlives the consumer and the clock: it stops only after they have drained.
    relay
        .publish_while(async {
            tokio::try_join!(acknowledgements, clock)?;
            Ok(())
        })
        .await?;
    channel.close(200, "draining".into()).await.ok();
    Ok(())
}
