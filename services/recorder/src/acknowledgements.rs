//! Critical acknowledgements from the origins (`<ns>.recorder.acknowledgements`).
//!
//! The first valid acknowledgement of a notification closes it, exactly once; a repeat is acked
//! and changes nothing. Anything else is refused: recorded once by its message key, answered
//! with `OriginNotice.acknowledgement_refused` on the sender's results queue (when the sender
//! is a registered hospital), and dead-lettered with `x-telerelay-reason` — all in one
//! transaction through the outbox. A refusal is acked like any handled message, so nothing
//! ever blocks the queue behind it.

use crate::{Context, database_failure};
use bus::lapin::message::Delivery;
use bus::trace::TraceContext;
use bus::{DeadLetterReason, Handled, OutgoingMessage, messages};
use chrono::{DateTime, Utc};
use contract::v1;
use domain::HospitalCode;
use prost::Message;
use store::critical::acknowledgements::{self as store_acks, Acknowledgement, Notification};
use tokio::sync::Notify;
use uuid::Uuid;

/// Stable reason codes sent in `AcknowledgementRefused.reason` and `x-telerelay-reason`.
pub mod reason {
    /// The body is not a `CriticalAcknowledgement`, or a field is far too long.
    pub const MALFORMED: &str = "malformed";
    /// The publisher set no `user_id`, or it is not a registered hospital's broker user.
    pub const UNKNOWN_SENDER: &str = "unknown_sender";
    /// `notification_id`, `clinician_id`, `clinician_name` or `read_back` is empty.
    pub const MISSING_FIELD: &str = "missing_field";
    /// No critical notification has this id.
    pub const UNKNOWN_NOTIFICATION: &str = "unknown_notification";
    /// The notification was sent to another hospital: only its origin may acknowledge it.
    pub const NOT_YOUR_NOTIFICATION: &str = "not_your_notification";
    /// `origin_hospital` names another hospital than the broker-verified sender.
    pub const SENDER_MISMATCH: &str = "sender_mismatch";
    /// `request_id` is not the notification's request.
    pub const REQUEST_MISMATCH: &str = "request_mismatch";
}

/// Longest clinician id, name or read-back accepted (bytes).
const MAX_FIELD: usize = 4_000;

/// Why an acknowledgement is refused.
struct Refused {
    reason: &'static str,
    detail: String,
}

fn refused(reason: &'static str, detail: impl Into<String>) -> Refused {
    Refused {
        reason,
        detail: detail.into(),
    }
}

/// What recording one delivery came to.
enum Outcome {
    Closed {
        notification: Uuid,
        minutes: f64,
        read_back_matches: bool,
        /// Metric labels: the request's kind and origin.
        kind: String,
        origin: String,
        trace: Option<TraceContext>,
    },
    Repeat {
        notification: Uuid,
        trace: Option<TraceContext>,
    },
    Refused {
        reason: &'static str,
        first_time: bool,
    },
}

pub(crate) async fn record(
    context: &Context,
    wake: &Notify,
    delivery: Delivery,
) -> anyhow::Result<Handled> {
    let properties = &delivery.properties;
    let text = |value: Option<&bus::lapin::types::ShortString>| {
        value.map(|v| v.as_str().to_owned()).unwrap_or_default()
    };
    let message_id = text(properties.message_id().as_ref());
    // A publisher that set no message id is deduplicated by its body.
    let message_key = if message_id.is_empty() {
        format!("sha256:{}", hex_digest(&delivery.data))
    } else {
        message_id.clone()
    };
    let user = properties.user_id().as_ref().map(|u| u.as_str().to_owned());
    let sender = match &user {
        Some(user) => {
            let found = store::wait_out_outages(&context.shutdown, "sender lookup", || {
                store::registry::hospital_of_broker_user(&context.db, user)
            })
            .await;
            match found {
                Ok(sender) => sender,
                Err(error) => return Ok(database_failure(context, error, "sender lookup")),
            }
        }
        None => None,
    };
    let envelope = Envelope {
        message_id,
        message_key,
        correlation_id: text(properties.correlation_id().as_ref()),
        user,
        sender,
    };
    let outcome =
        store::wait_out_outages(&context.shutdown, "recording an acknowledgement", || {
            judge(context, &delivery, &envelope)
        })
        .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            return Ok(database_failure(
                context,
                error,
                "recording an acknowledgement",
            ));
        }
    };
    let sender = envelope
        .sender
        .as_ref()
        .map_or("unidentified", |s| s.as_str());
    match outcome {
        Outcome::Closed {
            notification,
            minutes,
            read_back_matches,
            kind,
            origin,
            trace,
        } => {
            wake.notify_one();
            context
                .metrics
                .critical_ack
                .get_or_create(&crate::metrics::KindOrigin { kind, origin })
                .observe((minutes * 60.0).max(0.0));
            bus::trace::span_of(trace).in_scope(|| {
                tracing::info!(%notification, sender, minutes, read_back_matches, "critical value acknowledged");
            });
        }
        Outcome::Repeat {
            notification,
            trace,
        } => {
            bus::trace::span_of(trace).in_scope(|| {
                tracing::info!(%notification, sender, "repeat acknowledgement of a closed notification; nothing to do");
            });
        }
        Outcome::Refused { reason, first_time } => {
            if first_time {
                wake.notify_one();
            }
            tracing::warn!(
                message_key = envelope.message_key,
                sender,
                reason,
                first_time,
                "critical acknowledgement refused and dead-lettered"
            );
        }
    }
    Ok(Handled::Done)
}

/// The identity facts of a delivery, known before its body is read.
struct Envelope {
    message_id: String,
    message_key: String,
    correlation_id: String,
    /// The broker-verified publishing user, if the publisher set `user_id`.
    user: Option<String>,
    /// The registered hospital behind `user`.
    sender: Option<HospitalCode>,
}

/// Checks the acknowledgement and records its outcome in one transaction.
async fn judge(
    context: &Context,
    delivery: &Delivery,
    envelope: &Envelope,
) -> sqlx::Result<Outcome> {
    let names = &context.topology.names;
    let mut tx = context.db.begin().await?;
    let ack = v1::CriticalAcknowledgement::decode(delivery.data.as_slice());
    let checked = match &ack {
        Ok(ack) => check(&mut tx, envelope, ack).await?,
        Err(error) => Err(refused(
            reason::MALFORMED,
            format!("not a CriticalAcknowledgement: {error}"),
        )),
    };
    let outcome = match checked {
        Ok((notification, ack)) => {
            // The stored trace of the request, whatever the county's acknowledgement carried.
            let trace = store::trace::of_request(&mut *tx, notification.request_uuid)
                .await?
                .or_else(bus::trace::current);
            let acknowledgement = Acknowledgement {
                clinician_id: ack.clinician_id.trim(),
                clinician_name: ack.clinician_name.trim(),
                read_back: ack.read_back.trim(),
                stated_at: ack.acknowledged_at.as_ref().and_then(|at| {
                    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
                }),
                message_id: &envelope.message_key,
            };
            let closing = store_acks::close(&mut tx, names, &notification, &acknowledgement);
            match bus::trace::within(trace, closing).await? {
                Some(closed) => Outcome::Closed {
                    notification: notification.id,
                    minutes: closed.minutes,
                    read_back_matches: closed.read_back_matches,
                    kind: notification.kind.clone(),
                    origin: notification.origin.clone(),
                    trace,
                },
                None => Outcome::Repeat {
                    notification: notification.id,
                    trace,
                },
            }
        }
        Err(refusal) => {
            let named = ack
                .as_ref()
                .map(|a| a.notification_id.as_str())
                .unwrap_or_default();
            let at = store::db_now(&mut tx).await?;
            let then = refusal_messages(context, delivery, envelope, named, &refusal, at);
            let first_time = store_acks::refuse(
                &mut tx,
                &store_acks::Refusal {
                    message_key: &envelope.message_key,
                    notification_id: named,
                    sender: envelope.sender.as_ref(),
                    sender_user: envelope.user.as_deref(),
                    reason: refusal.reason,
                    detail: &refusal.detail,
                },
                &then,
            )
            .await?;
            Outcome::Refused {
                reason: refusal.reason,
                first_time,
            }
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// The rules, first failure wins: a known sender, a named notification that exists and was sent
/// to that sender, consistent origin and request, a clinician and a read-back.
async fn check<'a>(
    tx: &mut sqlx::PgConnection,
    envelope: &Envelope,
    ack: &'a v1::CriticalAcknowledgement,
) -> sqlx::Result<Result<(Notification, &'a v1::CriticalAcknowledgement), Refused>> {
    let Some(sender) = &envelope.sender else {
        return Ok(Err(refused(
            reason::UNKNOWN_SENDER,
            "the publisher's user_id is missing or is not a registered hospital's broker user",
        )));
    };
    if ack.notification_id.trim().is_empty() {
        return Ok(Err(refused(
            reason::MISSING_FIELD,
            "notification_id is required",
        )));
    }
    let Ok(id) = Uuid::parse_str(ack.notification_id.trim()) else {
        return Ok(Err(refused(
            reason::UNKNOWN_NOTIFICATION,
            "notification_id is not a notification id the relay issued (not a UUID)",
        )));
    };
    let Some(notification) = store_acks::lock(tx, id).await? else {
        return Ok(Err(refused(
            reason::UNKNOWN_NOTIFICATION,
            format!("no critical notification {id} is known to the relay"),
        )));
    };
    if notification.origin != sender.as_str() {
        return Ok(Err(refused(
            reason::NOT_YOUR_NOTIFICATION,
            format!(
                "critical notification {id} was not sent to {sender}; only its origin may acknowledge it"
            ),
        )));
    }
    if !ack.origin_hospital.is_empty() && ack.origin_hospital != sender.as_str() {
        return Ok(Err(refused(
            reason::SENDER_MISMATCH,
            format!("origin_hospital is not the publishing hospital {sender}"),
        )));
    }
    if !ack.request_id.is_empty() && ack.request_id != notification.request_id {
        return Ok(Err(refused(
            reason::REQUEST_MISMATCH,
            format!("request_id is not the request of critical notification {id}"),
        )));
    }
    let missing: Vec<&str> = [
        ("clinician_id", &ack.clinician_id),
        ("clinician_name", &ack.clinician_name),
        ("read_back", &ack.read_back),
    ]
    .into_iter()
    .filter(|(_, value)| value.trim().is_empty())
    .map(|(name, _)| name)
    .collect();
    if !missing.is_empty() {
        return Ok(Err(refused(
            reason::MISSING_FIELD,
            format!(
                "a critical acknowledgement needs a named clinician and a read-back; missing: {}",
                missing.join(", ")
            ),
        )));
    }
    if [&ack.clinician_id, &ack.clinician_name, &ack.read_back]
        .iter()
        .any(|value| value.len() > MAX_FIELD)
    {
        return Ok(Err(refused(
            reason::MALFORMED,
            format!("clinician_id, clinician_name and read_back are limited to {MAX_FIELD} bytes"),
        )));
    }
    Ok(Ok((notification, ack)))
}

/// The dead-letter copy with its reason, and the notice to the sender when it is a registered
/// hospital (an unidentified sender has no queue the relay could answer on).
fn refusal_messages(
    context: &Context,
    delivery: &Delivery,
    envelope: &Envelope,
    notification_id: &str,
    refusal: &Refused,
    at: DateTime<Utc>,
) -> Vec<OutgoingMessage> {
    let names = &context.topology.names;
    let mut then = vec![OutgoingMessage::dead_letter(
        &names.dead_letter_exchange(),
        &names.recorder_acknowledgements_queue(),
        delivery,
        &DeadLetterReason {
            reason: refusal.reason.into(),
            detail: refusal.detail.clone(),
        },
    )];
    if let Some(sender) = &envelope.sender {
        let notice = v1::OriginNotice {
            notice: Some(v1::origin_notice::Notice::AcknowledgementRefused(
                v1::AcknowledgementRefused {
                    notification_id: notification_id.to_owned(),
                    message_id: envelope.message_id.clone(),
                    reason: refusal.reason.into(),
                    detail: refusal.detail.clone(),
                    refused_at: Some(domain::wire::timestamp(at)),
                },
            )),
        };
        let correlation_id = if envelope.correlation_id.is_empty() {
            envelope.message_key.clone()
        } else {
            envelope.correlation_id.clone()
        };
        then.push(messages::origin_notice(
            names,
            sender,
            &notice,
            format!("acknowledgement-refused:{}", envelope.message_key),
            correlation_id,
        ));
    }
    then
}

fn hex_digest(body: &[u8]) -> String {
    store::requests::content_sha256(body)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
