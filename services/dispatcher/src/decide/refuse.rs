//! Refusing a request: recorded once, the sender told why, the message dead-lettered with the
//! reason — all queued in the transaction that records the refusal.

use super::{Claimed, Envelope, Failure, database};
use crate::Context;
use bus::lapin::message::Delivery;
use bus::messages;
use chrono::{DateTime, Utc};
use contract::v1;
use domain::{HospitalCode, LifecycleFact, Rejection, RequestState};
use store::requests::Refusal;
use uuid::Uuid;

/// Records the refusal once, and in the same transaction queues the notice to the sender (when
/// the sender is a registered hospital), the `rejected` event and the dead-letter copy with its
/// reason. A redelivered refusal finds its record and does nothing more.
pub(super) async fn refuse(
    context: &Context,
    delivery: &Delivery,
    envelope: &Envelope,
    sender: Option<&HospitalCode>,
    claimed: Option<&Claimed>,
    rejection: Rejection,
) -> Result<(), Failure> {
    let names = &context.topology.names;
    let request_id = claimed.map(|c| c.request_id.as_str()).unwrap_or_default();
    let refusal = Refusal {
        message_key: &envelope.message_key,
        sender,
        claimed_origin: claimed
            .map(|c| c.origin.as_str())
            .filter(|origin| !origin.is_empty()),
        request_id: Some(request_id).filter(|id| !id.is_empty()),
        reason: rejection.reason.as_str(),
        detail: &rejection.detail,
    };
    let correlation_id = if envelope.correlation_id.is_empty() {
        envelope.message_key.clone()
    } else {
        envelope.correlation_id.clone()
    };
    let first_time = database(context, "recording a refusal", || async {
        let mut tx = context.db.begin().await?;
        if !store::requests::record_refusal(&mut tx, &refusal).await? {
            return Ok(false);
        }
        let at: DateTime<Utc> = store::db_now(&mut tx).await?;
        let mut messages = vec![envelope.dead_letter(context, delivery, &rejection)];
        let event_origin = sender
            .map(ToString::to_string)
            .unwrap_or_else(|| "unknown".into());
        messages.push(messages::lifecycle_event(
            names,
            &LifecycleFact {
                event_id: Uuid::new_v4(),
                request_uuid: None,
                request_id: request_id.to_owned(),
                origin: event_origin,
                state: RequestState::Rejected,
                actor: "service:dispatcher".into(),
                reason: rejection.to_string(),
                pool: None,
                correlation_id: correlation_id.clone(),
                occurred_at: at,
            },
        ));
        if let Some(sender) = sender {
            let notice: v1::OriginNotice =
                rejection.to_notice(request_id, &envelope.message_id, at);
            messages.push(messages::origin_notice(
                names,
                sender,
                &notice,
                format!("rejected:{}", envelope.message_key),
                correlation_id.clone(),
            ));
        }
        store::outbox::enqueue(&mut tx, &messages).await?;
        crash_point::reached("dispatcher.before_commit");
        tx.commit().await?;
        Ok(true)
    })
    .await?;
    if first_time {
        context.outbox_wake.notify_one();
        context.metrics.rejected(rejection.reason);
    }
    // Only codes and reasons are logged: never the body, never patient fields.
    tracing::warn!(
        message_key = envelope.message_key,
        sender = sender.map(|s| s.as_str()).unwrap_or("unidentified"),
        reason = rejection.reason.as_str(),
        detail = rejection.detail,
        "request refused and dead-lettered"
    );
    Ok(())
}
