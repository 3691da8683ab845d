//! Every exchange, queue and binding, spelled out with the reason for each option. Declaring is
//! idempotent: services declare what they use at start-up and after every reconnect, and
//! `relayctl declare` declares the whole topology from the registry.

use crate::Names;
use domain::{HospitalCode, PoolCode, Priority};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// Settings every queue shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSettings {
    /// Deliveries of one message before the broker dead-letters it. Transient faults are retried
    /// inside the services and never redeliver, so only a message that crashes its consumer
    /// again and again reaches this limit. Set explicitly: 3.10 has no default, 4.x uses 20.
    pub delivery_limit: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self { delivery_limit: 10 }
    }
}

/// The relay's topology under one namespace.
#[derive(Clone, Debug)]
pub struct Topology {
    pub names: Names,
    pub settings: QueueSettings,
}

impl Topology {
    pub fn new(names: Names, settings: QueueSettings) -> Self {
        Self { names, settings }
    }

    /// Exchanges, the dispatcher's and recorder's queues, and the dead-letter queue.
    pub async fn declare_core(&self, channel: &Channel) -> lapin::Result<()> {
        let names = &self.names;
        // Topic exchanges where the first routing-key word is a hospital code, so broker topic
        // permissions can restrict each hospital's user to its own code.
        for exchange in [
            names.requests_exchange(),
            names.results_exchange(),
            names.events_exchange(),
            names.dead_letter_exchange(),
            names.alerts_exchange(),
        ] {
            declare_exchange(channel, &exchange, ExchangeKind::Topic).await?;
        }
        // Direct: a routed request goes to exactly one lane.
        declare_exchange(channel, &names.review_exchange(), ExchangeKind::Direct).await?;

        // The dead-letter queue is the end of the line: it has no dead-letter exchange of its own
        // and no delivery limit, so nothing in it is ever dropped. The recorder moves each message
        // into PostgreSQL, where `relayctl dead-letters` lists and replays it.
        self.declare_queue(channel, &names.dead_letter_queue(), false)
            .await?;
        bind(
            channel,
            &names.dead_letter_queue(),
            &names.dead_letter_exchange(),
            "#",
        )
        .await?;

        // Requests: `<origin>.<kind>` to the dispatcher's queue, `<origin>.<kind>.stat` to its
        // express lane, so a STAT request never waits behind a backlog of routine work. The two
        // patterns never match the same key, so no request is delivered twice.
        self.declare_queue(channel, &names.dispatcher_queue(), true)
            .await?;
        bind(
            channel,
            &names.dispatcher_queue(),
            &names.requests_exchange(),
            Names::REQUEST_KEY,
        )
        .await?;
        // Before the express lane the dispatcher's queue took every key (`#`), which would now
        // also deliver each express request to it. Unbinding a binding that does not exist is
        // not an error, so this upgrades a broker declared by an earlier version and is a no-op
        // on every other.
        channel
            .queue_unbind(
                names.dispatcher_queue().as_str().into(),
                names.requests_exchange().as_str().into(),
                "#".into(),
                FieldTable::default(),
            )
            .await?;
        self.declare_queue(channel, &names.dispatcher_stat_queue(), true)
            .await?;
        bind(
            channel,
            &names.dispatcher_stat_queue(),
            &names.requests_exchange(),
            Names::STAT_REQUEST_KEY,
        )
        .await?;

        self.declare_queue(channel, &names.recorder_results_queue(), true)
            .await?;
        bind(
            channel,
            &names.recorder_results_queue(),
            &names.results_exchange(),
            "#",
        )
        .await?;

        self.declare_queue(channel, &names.recorder_events_queue(), true)
            .await?;
        bind(
            channel,
            &names.recorder_events_queue(),
            &names.events_exchange(),
            "#",
        )
        .await?;

        // Pages wait here until the paging bridge takes them; every page, whoever it is for.
        self.declare_queue(channel, &names.alerts_queue(), true)
            .await?;
        bind(
            channel,
            &names.alerts_queue(),
            &names.alerts_exchange(),
            "page.#",
        )
        .await?;
        self.declare_critical_core(channel).await?;
        Ok(())
    }

    /// The critical-value loop's exchanges and the recorder's acknowledgements queue. Topic
    /// exchanges whose first routing-key word is the origin's code, as for requests and results.
    async fn declare_critical_core(&self, channel: &Channel) -> lapin::Result<()> {
        let names = &self.names;
        declare_exchange(channel, &names.critical_exchange(), ExchangeKind::Topic).await?;
        declare_exchange(
            channel,
            &names.acknowledgements_exchange(),
            ExchangeKind::Topic,
        )
        .await?;
        self.declare_queue(channel, &names.recorder_acknowledgements_queue(), true)
            .await?;
        bind(
            channel,
            &names.recorder_acknowledgements_queue(),
            &names.acknowledgements_exchange(),
            "#",
        )
        .await
    }

    /// The four priority lanes of a reviewer pool.
    pub async fn declare_pool_lanes(
        &self,
        channel: &Channel,
        pool: &PoolCode,
    ) -> lapin::Result<()> {
        for priority in Priority::LANES_MOST_URGENT_FIRST {
            let lane = self.names.review_lane(pool, priority);
            self.declare_queue(channel, &lane, true).await?;
            bind(
                channel,
                &lane,
                &self.names.review_exchange(),
                &Names::review_routing_key(pool, priority),
            )
            .await?;
        }
        Ok(())
    }

    /// An origin hospital's results queue, bound to everything addressed to that hospital.
    pub async fn declare_origin_results(
        &self,
        channel: &Channel,
        origin: &HospitalCode,
    ) -> lapin::Result<()> {
        let queue = self.names.origin_results_queue(origin);
        self.declare_queue(channel, &queue, true).await?;
        bind(
            channel,
            &queue,
            &self.names.results_exchange(),
            &format!("{origin}.#"),
        )
        .await?;
        // Wherever an origin's inbox is declared, its critical lane is declared with it.
        self.declare_origin_critical(channel, origin).await
    }

    /// An origin hospital's critical queue (危急值 lane), bound to its code on the critical
    /// exchange: critical notifications never queue behind ordinary results.
    pub async fn declare_origin_critical(
        &self,
        channel: &Channel,
        origin: &HospitalCode,
    ) -> lapin::Result<()> {
        let queue = self.names.origin_critical_queue(origin);
        self.declare_queue(channel, &queue, true).await?;
        bind(
            channel,
            &queue,
            &self.names.critical_exchange(),
            origin.as_str(),
        )
        .await
    }

    async fn declare_queue(
        &self,
        channel: &Channel,
        queue: &str,
        with_dead_letters: bool,
    ) -> lapin::Result<()> {
        let mut arguments = FieldTable::default();
        // Quorum queues replicate across cluster nodes and survive a node loss.
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        if with_dead_letters {
            arguments.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(i32::try_from(self.settings.delivery_limit).unwrap_or(i32::MAX)),
            );
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.names.dead_letter_exchange().into()),
            );
            // Dead-letter under the queue's own name, so the dead-letter queue tells where a
            // message died.
            arguments.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(queue.into()),
            );
            // at-least-once dead-lettering (3.10+) keeps a message until the dead-letter queue
            // confirmed it; it requires reject-publish overflow.
            arguments.insert(
                "x-dead-letter-strategy".into(),
                AMQPValue::LongString("at-least-once".into()),
            );
            arguments.insert(
                "x-overflow".into(),
                AMQPValue::LongString("reject-publish".into()),
            );
        }
        channel
            .queue_declare(
                queue.into(),
                // Durable: survives a broker restart. Not exclusive and not auto-delete: several
                // service instances share it and it must outlive them.
                QueueDeclareOptions {
                    durable: true,
                    exclusive: false,
                    auto_delete: false,
                    ..Default::default()
                },
                arguments,
            )
            .await?;
        Ok(())
    }
}

async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> lapin::Result<()> {
    channel
        .exchange_declare(
            name.into(),
            kind,
            // Durable so bindings survive a restart; never auto-deleted when the last queue unbinds.
            ExchangeDeclareOptions {
                durable: true,
                auto_delete: false,
                internal: false,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    routing_key: &str,
) -> lapin::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}
