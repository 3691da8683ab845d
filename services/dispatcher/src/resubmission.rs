//! A resubmission: a new request whose `resubmission_of` names a request a reviewer returned.
//!
//! Rules: the named request must be the same origin's (the origin is broker-verified, so a
//! hospital can never link to another hospital's request), it must be `returned`, and it may be
//! resubmitted once. Anything else is refused like any invalid field, with a detail the HIS
//! vendor can act on. The original is locked while judged, so two resubmissions of one returned
//! request are judged one after the other and the second sees the first.

use bus::{Names, OutgoingMessage, messages};
use chrono::{DateTime, Utc};
use domain::{LifecycleFact, Rejection, RejectionReason, RequestState, ReviewRequest};
use sqlx::PgConnection;
use store::revisions::ResubmissionTarget;
use uuid::Uuid;

/// Judges the request's `resubmission_of` inside the accepting transaction. `Ok(None)`: nothing
/// to link (not a resubmission, or a copy of a resubmission already linked).
pub(crate) async fn judge(
    tx: &mut PgConnection,
    request: &ReviewRequest,
) -> sqlx::Result<Result<Option<ResubmissionTarget>, Rejection>> {
    let Some(original_id) = &request.resubmission_of else {
        return Ok(Ok(None));
    };
    let target = store::revisions::lock_resubmission_target(
        tx,
        request.origin.as_str(),
        original_id.as_str(),
    )
    .await?;
    let refused = |why: String| -> sqlx::Result<Result<Option<ResubmissionTarget>, Rejection>> {
        Ok(Err(Rejection::new(
            RejectionReason::InvalidField,
            format!("resubmission_of: {why}"),
        )))
    };
    let Some(target) = target else {
        return refused(format!(
            "{original_id} names no request of {} known to the relay",
            request.origin
        ));
    };
    match target.resubmitted_as.as_deref() {
        // The origin sent this resubmission again: accepting it finds the duplicate.
        Some(linked) if linked == request.request_id.as_str() => return Ok(Ok(None)),
        Some(linked) => {
            return refused(format!(
                "{original_id} was already resubmitted as {linked}; a returned request is resubmitted once"
            ));
        }
        None => {}
    }
    if target.state != RequestState::Returned.as_str() {
        return refused(format!(
            "{original_id} is {}, not returned; only a request a reviewer returned can be resubmitted",
            target.state
        ));
    }
    Ok(Ok(Some(target)))
}

/// Words for the new request's `received` and `routed` events naming the original.
pub(crate) fn note(original: Option<&ResubmissionTarget>) -> String {
    original
        .map(|original| {
            format!(
                "; resubmission of {} ({})",
                original.request_id, original.id
            )
        })
        .unwrap_or_default()
}

/// Links the accepted request `new_id` to the original and returns the original's `resubmitted`
/// event, to go out in the same transaction.
pub(crate) async fn link(
    tx: &mut PgConnection,
    names: &Names,
    original: &ResubmissionTarget,
    new_id: Uuid,
    request: &ReviewRequest,
    at: DateTime<Utc>,
) -> sqlx::Result<OutgoingMessage> {
    store::revisions::link_resubmission(tx, new_id, original.id).await?;
    let fact = LifecycleFact {
        event_id: Uuid::new_v4(),
        request_uuid: Some(original.id),
        request_id: original.request_id.clone(),
        origin: request.origin.to_string(),
        state: RequestState::Resubmitted,
        actor: format!("hospital:{}", request.origin),
        reason: format!("resubmitted as {} ({new_id})", request.request_id),
        pool: original.pool.clone(),
        correlation_id: original.correlation_id.clone(),
        occurred_at: at,
    };
    Ok(messages::lifecycle_event(names, &fact))
}
