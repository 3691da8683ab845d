//! Publishing as a county HIS. `bus::Publisher` sets no `user_id` (the relay's own services
//! publish as themselves), so an origin publishes through [`publish_request`], which sets the
//! properties a HIS must set.

use bus::PublishError;
use bus::lapin::options::BasicPublishOptions;
use bus::lapin::types::{AMQPValue, FieldTable};
use bus::lapin::{BasicProperties, Channel, Confirmation};
use std::time::Duration;

/// Publishes one encoded `ReviewRequest` the way a HIS must: persistent, mandatory, with the
/// broker-verified `user_id`, a fresh `message_id`, the request's `correlation_id`, and waits
/// for the broker's confirm. A returned (unroutable) message is an error.
pub async fn publish_request(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    broker_user: &str,
    body: &[u8],
    correlation_id: &str,
    confirm_timeout: Duration,
) -> Result<(), PublishError> {
    let message = OriginMessage {
        exchange,
        routing_key,
        broker_user,
        message_type: contract::message_type::REVIEW_REQUEST,
        body,
        correlation_id,
        traceparent: None,
    };
    publish_as_origin(channel, &message, confirm_timeout).await
}

/// A message a county HIS publishes as its own broker user.
pub(crate) struct OriginMessage<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub broker_user: &'a str,
    pub message_type: &'a str,
    pub body: &'a [u8],
    pub correlation_id: &'a str,
    /// W3C `traceparent`: the HIS's trace of this request, which the relay then follows.
    pub traceparent: Option<&'a str>,
}

/// Publishes persistent and mandatory with the broker-verified `user_id` and a fresh
/// `message_id`, and waits for the broker's confirm.
pub(crate) async fn publish_as_origin(
    channel: &Channel,
    message: &OriginMessage<'_>,
    confirm_timeout: Duration,
) -> Result<(), PublishError> {
    let OriginMessage {
        exchange,
        routing_key,
        broker_user,
        message_type,
        body,
        correlation_id,
        traceparent,
    } = *message;
    let place = || (exchange.to_owned(), routing_key.to_owned());
    let properties = BasicProperties::default()
        // Persistent: written to disk by classic queues; quorum queues always are.
        .with_delivery_mode(2)
        .with_content_type(contract::CONTENT_TYPE.into())
        .with_type(message_type.into())
        // The broker refuses a user_id that is not the connection's user, so the dispatcher can
        // trust it as the sender's identity.
        .with_user_id(broker_user.into())
        .with_message_id(uuid::Uuid::new_v4().to_string().into())
        .with_correlation_id(correlation_id.into())
        .with_headers(headers(traceparent))
        .with_timestamp(
            chrono::Utc::now()
                .timestamp()
                .try_into()
                .unwrap_or_default(),
        );
    let confirmation = tokio::time::timeout(confirm_timeout, async {
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                // mandatory: an unroutable request comes back instead of vanishing.
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties,
            )
            .await?
            .await
    })
    .await
    .map_err(|_| PublishError::ConfirmTimeout(confirm_timeout))??;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_returned)) => {
            let (exchange, routing_key) = place();
            Err(PublishError::Unroutable {
                exchange,
                routing_key,
            })
        }
        Confirmation::Nack(_) | Confirmation::NotRequested => {
            let (exchange, routing_key) = place();
            Err(PublishError::Nacked {
                exchange,
                routing_key,
            })
        }
    }
}

/// The application headers of an origin's message: only `traceparent`, when it has one.
fn headers(traceparent: Option<&str>) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(value) = traceparent {
        headers.insert(
            bus::trace::TRACEPARENT.into(),
            AMQPValue::LongString(value.into()),
        );
    }
    headers
}
