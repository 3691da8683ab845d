//! The desk's broker connection: channels for taking work from the lanes and the outbox relay
//! that publishes results and events. Supervised: after a broker restart the desk reconnects
//! and calls see 503 only while it is down.

use bus::lapin::{Channel, Event};
use bus::{BrokerAddresses, Publisher, Topology};
use futures::StreamExt;
use runtime::Session;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use store::outbox::OutboxRelay;
use telemetry::metrics::PipelineMetrics;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Channels for taking work from the lanes. `basic.get` is a synchronous AMQP method, one at a
/// time per channel, and on a quorum queue each is a consensus round in the broker: with one
/// channel every reviewer's claim would queue behind every other's. Claims spread over these.
const LANE_CHANNELS: usize = 8;

/// What the desk uses of a live connection: channels for taking work from the lanes and a
/// confirming publisher for handing taken work back.
#[derive(Clone)]
struct Live {
    channels: Arc<[Channel]>,
    publisher: Publisher,
}

/// A handle on the current broker connection, and the outbox's wake-up call.
#[derive(Clone)]
pub(crate) struct BrokerLink {
    live: watch::Receiver<Option<Live>>,
    pub outbox_wake: Arc<Notify>,
    /// Which lane channel the next claim uses.
    next_channel: Arc<AtomicUsize>,
}

impl BrokerLink {
    /// A live channel for taking from the lanes (the next of several, in turn), or `None` while
    /// the broker is unreachable.
    pub fn channel(&self) -> Option<Channel> {
        let live = self.connected()?;
        let turn = self.next_channel.fetch_add(1, Ordering::Relaxed);
        Some(live.channels[turn % live.channels.len()].clone())
    }

    /// The live publisher, or `None` while the broker is unreachable.
    pub fn publisher(&self) -> Option<Publisher> {
        self.connected().map(|live| live.publisher)
    }

    fn connected(&self) -> Option<Live> {
        self.live.borrow().clone().filter(|live| {
            live.channels
                .iter()
                .all(|channel| channel.status().connected())
        })
    }
}

pub(crate) fn start(
    addresses: BrokerAddresses,
    topology: Topology,
    db: PgPool,
    confirm_timeout: Duration,
    outbox_poll: Duration,
    metrics: PipelineMetrics,
    stop: CancellationToken,
) -> (BrokerLink, JoinHandle<anyhow::Result<()>>) {
    let (sender, receiver) = watch::channel(None);
    let outbox_wake = Arc::new(Notify::new());
    let link = BrokerLink {
        live: receiver,
        outbox_wake: outbox_wake.clone(),
        next_channel: Arc::default(),
    };
    let task = tokio::spawn(async move {
        let sender = Arc::new(sender);
        runtime::supervise("review-desk", &addresses, &metrics, stop.clone(), |connection| {
            let (sender, topology, db, wake, stop, metrics) =
                (sender.clone(), topology.clone(), db.clone(), outbox_wake.clone(), stop.clone(), metrics.clone());
            async move {
                let declaring = connection.create_channel().await?;
                topology.declare_core(&declaring).await?;
                let publisher = Publisher::open(&connection, "review-desk", confirm_timeout)
                    .await?
                    .with_metrics(metrics.clone());
                let relay = OutboxRelay::new(db, publisher.clone(), wake, topology.names.dead_letter_exchange())
                    .with_poll_interval(outbox_poll);
                let mut channels = Vec::with_capacity(LANE_CHANNELS);
                for _ in 0..LANE_CHANNELS {
                    channels.push(connection.create_channel().await?);
                }
                sender.send_replace(Some(Live { channels: channels.into(), publisher }));
                // The desk consumes nothing: its session is up once it can take from the lanes.
                metrics.set_session_up(true);
                let mut events = connection.events_listener();
                // The desk's handlers commit to the outbox; the relay publishes it for as long as
                // the connection lives, and what is left once asked to stop.
                let outcome = relay
                    .publish_while(async {
                        tokio::select! {
                            failed = async {
                                loop {
                                    match events.next().await {
                                        Some(Event::Error(error)) => break anyhow::Error::new(error).context("broker connection failed"),
                                        Some(_) => continue,
                                        None => break anyhow::anyhow!("broker connection closed"),
                                    }
                                }
                            } => Err(failed),
                            _ = stop.cancelled() => Ok(Session::Drained),
                        }
                    })
                    .await;
                sender.send_replace(None);
                connection.close(200, "review desk stopping".into()).await.ok();
                outcome
            }
        })
        .await
    });
    (link, task)
}
