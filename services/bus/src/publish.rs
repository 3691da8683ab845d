//! Publishing that the relay can build guarantees on: persistent, mandatory, confirmed.

use crate::DeadLetterReason;
use crate::headers::DEAD_LETTER_HEADERS;
use futures::future::try_join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use telemetry::metrics::{PipelineMetrics, PublishOutcome};

/// One message to publish, with the ids every telerelay message carries.
#[derive(Clone, Debug, PartialEq)]
pub struct OutgoingMessage {
    pub exchange: String,
    pub routing_key: String,
    /// AMQP `type`, e.g. `telerelay.v1.LifecycleEvent`.
    pub message_type: String,
    /// Unique per message; consumers deduplicate on it or on a key inside the body.
    pub message_id: String,
    /// Follows the request across both hospitals.
    pub correlation_id: String,
    pub body: Vec<u8>,
    /// Extra string headers (e.g. the dead-letter reason).
    pub headers: Vec<(String, String)>,
}

impl OutgoingMessage {
    /// The delivered message again, addressed where it was published: its type, ids, body and
    /// string headers (the only kind the relay sets). The broker's own numeric headers, such as
    /// a quorum queue's `x-delivery-count`, are not carried: the copy starts a fresh life.
    pub fn copy_of(delivery: &lapin::message::Delivery) -> Self {
        let properties = &delivery.properties;
        let text = |value: &Option<ShortString>| {
            value
                .as_ref()
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let headers = properties
            .headers()
            .as_ref()
            .map(|table| {
                table
                    .inner()
                    .keys()
                    .filter_map(|name| {
                        let value = crate::header_str(Some(table), name.as_str())?;
                        Some((name.as_str().to_owned(), value.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            exchange: delivery.exchange.as_str().to_owned(),
            routing_key: delivery.routing_key.as_str().to_owned(),
            message_type: text(properties.kind()),
            message_id: text(properties.message_id()),
            correlation_id: text(properties.correlation_id()),
            body: delivery.data.clone(),
            headers,
        }
    }

    /// A copy of a refused delivery for the dead-letter exchange, carrying why it was refused.
    /// The original `user_id` becomes a header: the broker would refuse it on our connection.
    pub fn dead_letter(
        dead_letter_exchange: &str,
        source_queue: &str,
        delivery: &lapin::message::Delivery,
        reason: &DeadLetterReason,
    ) -> Self {
        let mut headers = vec![
            (DEAD_LETTER_HEADERS.reason.to_owned(), reason.reason.clone()),
            (DEAD_LETTER_HEADERS.detail.to_owned(), reason.detail.clone()),
            (
                DEAD_LETTER_HEADERS.source_queue.to_owned(),
                source_queue.to_owned(),
            ),
            (
                DEAD_LETTER_HEADERS.original_exchange.to_owned(),
                delivery.exchange.as_str().to_owned(),
            ),
            (
                DEAD_LETTER_HEADERS.original_routing_key.to_owned(),
                delivery.routing_key.as_str().to_owned(),
            ),
        ];
        if let Some(user) = delivery.properties.user_id() {
            headers.push((
                DEAD_LETTER_HEADERS.original_user_id.to_owned(),
                user.as_str().to_owned(),
            ));
        }
        Self {
            exchange: dead_letter_exchange.to_owned(),
            routing_key: source_queue.to_owned(),
            headers,
            ..Self::copy_of(delivery)
        }
    }
}

/// Why a publish did not become the broker's responsibility.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no queue is bound for {exchange} / {routing_key}: the message was returned")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error("the broker refused the message (nack) for {exchange} / {routing_key}")]
    Nacked {
        exchange: String,
        routing_key: String,
    },
    #[error("no confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("broker connection or channel failed")]
    Broker(#[from] lapin::Error),
}

/// A channel in confirm mode. Cheap to clone; one per service is enough because confirms are
/// matched per message. Every settled publish is counted in its metrics (see
/// [`Publisher::with_metrics`]; by default a handle registered nowhere).
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    confirm_timeout: Duration,
    app_id: String,
    metrics: PipelineMetrics,
}

impl Publisher {
    pub async fn open(
        connection: &Connection,
        app_id: &str,
        confirm_timeout: Duration,
    ) -> lapin::Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            confirm_timeout,
            app_id: app_id.to_owned(),
            metrics: PipelineMetrics::default(),
        })
    }

    /// Counts this publisher's publishes (outcome, confirm latency) in `metrics`.
    pub fn with_metrics(mut self, metrics: PipelineMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes one message and waits for its confirm.
    pub async fn publish(&self, message: &OutgoingMessage) -> Result<(), PublishError> {
        self.publish_all(std::slice::from_ref(message)).await
    }

    /// Publishes every message, then waits for all their confirms: one round trip of latency for
    /// the whole batch instead of one per message. Succeeds only if every message was confirmed
    /// and routed; any failure means the caller must treat the whole batch as unsent (a retry
    /// may duplicate some messages, which consumers deduplicate).
    pub async fn publish_all(&self, messages: &[OutgoingMessage]) -> Result<(), PublishError> {
        self.publish_then_confirm(messages, None).await
    }

    /// As [`Publisher::publish_all`], reaching the crash point `after_publish` (see the
    /// `crash-point` crate) once every message is written to the connection and before any
    /// confirm is awaited: the moment when the broker may hold messages whose sender cannot
    /// know they were sent.
    pub async fn publish_all_marked(
        &self,
        messages: &[OutgoingMessage],
        after_publish: &str,
    ) -> Result<(), PublishError> {
        self.publish_then_confirm(messages, Some(after_publish))
            .await
    }

    async fn publish_then_confirm(
        &self,
        messages: &[OutgoingMessage],
        after_publish: Option<&str>,
    ) -> Result<(), PublishError> {
        // Messages the broker settled (confirmed, returned or nacked): whatever is left when the
        // timeout strikes is counted as timed out.
        let settled: Vec<AtomicBool> = messages.iter().map(|_| AtomicBool::new(false)).collect();
        let confirms = async {
            let mut pending = Vec::with_capacity(messages.len());
            for (message, settled) in messages.iter().zip(&settled) {
                let published_at = Instant::now();
                let confirm = self
                    .channel
                    .basic_publish(
                        message.exchange.as_str().into(),
                        message.routing_key.as_str().into(),
                        // mandatory: an unroutable message comes back as an error instead of
                        // vanishing.
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &message.body,
                        self.properties(message),
                    )
                    .await?;
                pending.push(async move {
                    let confirmation = confirm.await?;
                    settled.store(true, Ordering::Relaxed);
                    self.metrics
                        .confirm_latency(&message.exchange, published_at.elapsed());
                    self.metrics
                        .publish_settled(&message.exchange, outcome_of(&confirmation));
                    Ok::<_, lapin::Error>((message, confirmation))
                });
            }
            if let Some(point) = after_publish {
                crash_point::reached(point);
            }
            try_join_all(pending).await
        };
        let confirmations = match tokio::time::timeout(self.confirm_timeout, confirms).await {
            Ok(confirmations) => confirmations?,
            Err(_) => {
                let unsettled = messages
                    .iter()
                    .zip(&settled)
                    .filter(|(_, settled)| !settled.load(Ordering::Relaxed));
                for (message, _) in unsettled {
                    self.metrics
                        .publish_settled(&message.exchange, PublishOutcome::Timeout);
                }
                return Err(PublishError::ConfirmTimeout(self.confirm_timeout));
            }
        };
        for (message, confirmation) in confirmations {
            let place = || (message.exchange.clone(), message.routing_key.clone());
            match confirmation {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_returned)) => {
                    let (exchange, routing_key) = place();
                    return Err(PublishError::Unroutable {
                        exchange,
                        routing_key,
                    });
                }
                Confirmation::Nack(_) | Confirmation::NotRequested => {
                    let (exchange, routing_key) = place();
                    return Err(PublishError::Nacked {
                        exchange,
                        routing_key,
                    });
                }
            }
        }
        Ok(())
    }

    fn properties(&self, message: &OutgoingMessage) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (name, value) in &message.headers {
            headers.insert(
                name.as_str().into(),
                AMQPValue::LongString(value.as_str().into()),
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        BasicProperties::default()
            // Persistent: written to disk by classic queues; quorum queues always are.
            .with_delivery_mode(2)
            .with_content_type(contract::CONTENT_TYPE.into())
            .with_type(message.message_type.as_str().into())
            .with_message_id(message.message_id.as_str().into())
            .with_correlation_id(message.correlation_id.as_str().into())
            .with_app_id(self.app_id.as_str().into())
            .with_timestamp(now)
            .with_headers(headers)
    }
}

/// The metrics outcome of a broker's answer to one publish.
fn outcome_of(confirmation: &Confirmation) -> PublishOutcome {
    match confirmation {
        Confirmation::Ack(None) => PublishOutcome::Confirmed,
        Confirmation::Ack(Some(_returned)) => PublishOutcome::Unroutable,
        Confirmation::Nack(_) | Confirmation::NotRequested => PublishOutcome::Nacked,
    }
}
