//! The desk's broker connection: a channel for taking work from the lanes and the outbox relay
//! that publishes results and events. Supervised: after a broker restart the desk reconnects
//! and calls see 503 only while it is down.

use bus::lapin::{Channel, Event};
use bus::{BrokerAddresses, Publisher, Topology};
use futures::StreamExt;
use runtime::Session;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use store::outbox::OutboxRelay;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A handle on the current broker channel, and the outbox's wake-up call.
#[derive(Clone)]
pub(crate) struct BrokerLink {
    channel: watch::Receiver<Option<Channel>>,
    pub outbox_wake: Arc<Notify>,
}

impl BrokerLink {
    /// The live channel, or `None` while the broker is unreachable.
    pub fn channel(&self) -> Option<Channel> {
        self.channel
            .borrow()
            .clone()
            .filter(|channel| channel.status().connected())
    }
}

pub(crate) fn start(
    addresses: BrokerAddresses,
    topology: Topology,
    db: PgPool,
    confirm_timeout: Duration,
    stop: CancellationToken,
) -> (BrokerLink, JoinHandle<anyhow::Result<()>>) {
    let (sender, receiver) = watch::channel(None);
    let outbox_wake = Arc::new(Notify::new());
    let link = BrokerLink {
        channel: receiver,
        outbox_wake: outbox_wake.clone(),
    };
    let task = tokio::spawn(async move {
        let sender = Arc::new(sender);
        runtime::supervise("review-desk", &addresses, stop.clone(), |connection| {
            let (sender, topology, db, wake, stop) =
                (sender.clone(), topology.clone(), db.clone(), outbox_wake.clone(), stop.clone());
            async move {
                let declaring = connection.create_channel().await?;
                topology.declare_core(&declaring).await?;
                let publisher = Publisher::open(&connection, "review-desk", confirm_timeout).await?;
                let relay_stop = CancellationToken::new();
                let relay = OutboxRelay::new(db, publisher, wake, topology.names.dead_letter_exchange());
                let mut relay_task = tokio::spawn(relay.run(relay_stop.clone()));
                sender.send_replace(Some(connection.create_channel().await?));
                let mut events = connection.events_listener();
                let outcome = loop {
                    tokio::select! {
                        event = events.next() => match event {
                            Some(Event::Error(error)) => break Err(anyhow::Error::new(error).context("broker connection failed")),
                            Some(_) => continue,
                            None => break Err(anyhow::anyhow!("broker connection closed")),
                        },
                        relay_ended = &mut relay_task => {
                            relay_ended??;
                            break Err(anyhow::anyhow!("outbox relay stopped unexpectedly"));
                        }
                        _ = stop.cancelled() => break Ok(Session::Drained),
                    }
                };
                sender.send_replace(None);
                relay_stop.cancel();
                if !relay_task.is_finished() {
                    relay_task.await??;
                }
                connection.close(200, "review desk stopping".into()).await.ok();
                outcome
            }
        })
        .await
    });
    (link, task)
}
