//! The messages telerelay itself sends, addressed by [`Names`]. Each builder fixes exchange,
//! routing key, type and ids in one place, so every service sends them the same way.

use crate::{Names, OutgoingMessage};
use contract::{message_type, v1};
use domain::{HospitalCode, LifecycleFact, PoolCode, Priority};
use prost::Message;

/// A lifecycle event for the events exchange, routing key `<origin>.<state>`. The message id is
/// the event id, so a republished event is recognisably the same event.
pub fn lifecycle_event(names: &Names, fact: &LifecycleFact) -> OutgoingMessage {
    let origin = if fact.origin.is_empty() {
        "unknown"
    } else {
        fact.origin.as_str()
    };
    OutgoingMessage {
        exchange: names.events_exchange(),
        routing_key: format!("{origin}.{}", fact.state),
        message_type: message_type::LIFECYCLE_EVENT.into(),
        message_id: fact.event_id.to_string(),
        correlation_id: fact.correlation_id.clone(),
        body: fact.to_wire().encode_to_vec(),
        headers: Vec::new(),
    }
}

/// A notice for an origin's results queue, routing key `<origin>.<kind of notice>`.
pub fn origin_notice(
    names: &Names,
    origin: &HospitalCode,
    notice: &v1::OriginNotice,
    message_id: String,
    correlation_id: String,
) -> OutgoingMessage {
    let kind = match notice.notice {
        Some(v1::origin_notice::Notice::Result(_)) => "result",
        Some(v1::origin_notice::Notice::Rejected(_)) => "rejected",
        Some(v1::origin_notice::Notice::Returned(_)) => "returned",
        Some(v1::origin_notice::Notice::Escalated(_)) => "escalated",
        Some(v1::origin_notice::Notice::AcknowledgementRefused(_)) => "acknowledgement-refused",
        None => "empty",
    };
    OutgoingMessage {
        exchange: names.results_exchange(),
        routing_key: format!("{origin}.{kind}"),
        message_type: message_type::ORIGIN_NOTICE.into(),
        message_id,
        correlation_id,
        body: notice.encode_to_vec(),
        headers: Vec::new(),
    }
}

/// Header on a routed request naming the relay's id for it.
pub const RELAY_REQUEST_UUID_HEADER: &str = "x-telerelay-request-uuid";

/// A routed request for a pool's priority lane: the request exactly as the origin sent it, plus
/// the relay's id in a header.
pub fn routed_request(
    names: &Names,
    pool: &PoolCode,
    priority: Priority,
    request_uuid: uuid::Uuid,
    correlation_id: String,
    body: Vec<u8>,
) -> OutgoingMessage {
    OutgoingMessage {
        exchange: names.review_exchange(),
        routing_key: Names::review_routing_key(pool, priority),
        message_type: message_type::REVIEW_REQUEST.into(),
        // One routing per request: the relay's id is the message id.
        message_id: request_uuid.to_string(),
        correlation_id,
        body,
        headers: vec![(RELAY_REQUEST_UUID_HEADER.into(), request_uuid.to_string())],
    }
}

/// A critical notification, or its n-th reminder, for the origin's critical lane (routing key
/// `<origin>`). The message id names the notification and the reminder, so a republished send
/// is recognisably the same send.
pub fn critical_notification(
    names: &Names,
    origin: &HospitalCode,
    notification: &v1::CriticalNotification,
    correlation_id: String,
) -> OutgoingMessage {
    OutgoingMessage {
        exchange: names.critical_exchange(),
        routing_key: origin.to_string(),
        message_type: message_type::CRITICAL_NOTIFICATION.into(),
        message_id: format!(
            "critical:{}:{}",
            notification.notification_id, notification.reminder
        ),
        correlation_id,
        body: notification.encode_to_vec(),
        headers: Vec::new(),
    }
}
