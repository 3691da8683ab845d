//! Taking the next request: the pool's lanes, most urgent first, with aging (see `aging`): a lane
//! whose oldest waiting request has waited past its promotion age counts as more urgent, so
//! routine work is never starved. The order is decided from PostgreSQL for every call, then the
//! broker lanes are taken in that order. Within a lane, a request whose lease expired (its
//! reviewer walked away) comes before the queue, because it has waited longer; the same query
//! says which lanes have such requests, so the others cost no look-up.
//!
//! The lane message is only the hand-over: the claim is committed in PostgreSQL first, then the
//! message is acked. A crash in between leaves the message in the lane; the next taker finds the
//! request already claimed and acks the stale message away.

use crate::Desk;
use crate::error::ApiError;
use bus::OutgoingMessage;
use bus::lapin::message::Delivery;
use bus::lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use bus::messages::{self, RELAY_REQUEST_UUID_HEADER};
use domain::{LifecycleFact, Priority, RequestState};
use store::registry::Reviewer;
use store::review::ClaimedRequest;
use uuid::Uuid;

/// Claims the most urgent waiting request of the reviewer's pool, if any, and counts the claim.
pub(crate) async fn claim_next(
    desk: &Desk,
    reviewer: &Reviewer,
) -> Result<Option<ClaimedRequest>, ApiError> {
    let claimed = take_next(desk, reviewer).await?;
    if let Some(claimed) = &claimed {
        desk.metrics
            .claims
            .get_or_create(&crate::metrics::PoolPriority {
                pool: reviewer.pool.to_string(),
                priority: claimed.priority.clone(),
            })
            .inc();
    }
    Ok(claimed)
}

async fn take_next(desk: &Desk, reviewer: &Reviewer) -> Result<Option<ClaimedRequest>, ApiError> {
    let lease = chrono::Duration::seconds(i64::from(desk.config.lease_seconds));
    let waits = store::lanes::lane_waits(&desk.db, &reviewer.pool).await?;
    for priority in crate::aging::claim_order(&waits) {
        let expired_leases = waits
            .iter()
            .any(|lane| lane.priority == priority && lane.expired_leases);
        if expired_leases
            && let Some(claimed) = claim_expired(desk, reviewer, priority, lease).await?
        {
            return Ok(Some(claimed));
        }
        if let Some(claimed) = claim_from_lane(desk, reviewer, priority, lease).await? {
            return Ok(Some(claimed));
        }
    }
    Ok(None)
}

/// Claims the longest-waiting request of the lane whose reviewer's lease expired, if any is left
/// (another reviewer may have taken it since the lanes were read).
async fn claim_expired(
    desk: &Desk,
    reviewer: &Reviewer,
    priority: Priority,
    lease: chrono::Duration,
) -> Result<Option<ClaimedRequest>, ApiError> {
    let mut tx = desk.db.begin().await?;
    let Some(claimed) =
        store::review::claim_expired(&mut tx, &reviewer.pool, priority, &reviewer.id, lease)
            .await?
    else {
        return Ok(None);
    };
    announce_claim(
        desk,
        &mut tx,
        &claimed,
        reviewer,
        "lease of the previous reviewer expired; claimed again",
    )
    .await?;
    tx.commit().await?;
    desk.broker.outbox_wake.notify_one();
    Ok(Some(claimed))
}

/// Takes messages from one lane until one of them is a request still waiting to be claimed.
async fn claim_from_lane(
    desk: &Desk,
    reviewer: &Reviewer,
    priority: Priority,
    lease: chrono::Duration,
) -> Result<Option<ClaimedRequest>, ApiError> {
    let lane = desk.topology.names.review_lane(&reviewer.pool, priority);
    loop {
        let channel = desk
            .broker
            .channel()
            .ok_or_else(|| ApiError::Unavailable(anyhow::anyhow!("broker not connected")))?;
        // The transaction is opened before taking the message, so a database outage is found
        // before a message is held and never costs it a delivery attempt.
        let mut tx = desk.db.begin().await?;
        let Some(message) = channel
            .basic_get(lane.as_str().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            return Ok(None);
        };
        let delivery = message.delivery;
        let request_uuid = bus::header_str(
            delivery.properties.headers().as_ref(),
            RELAY_REQUEST_UUID_HEADER,
        )
        .and_then(|value| Uuid::parse_str(value).ok());
        let Some(request_uuid) = request_uuid else {
            // Not a routed request: nothing the relay put there. The broker dead-letters it.
            tracing::error!(
                lane,
                "message without a relay request id in a review lane; dead-lettering it"
            );
            delivery
                .nack(BasicNackOptions {
                    requeue: false,
                    multiple: false,
                })
                .await?;
            continue;
        };
        let committed = async {
            let claimed = store::review::claim_routed(
                &mut tx,
                request_uuid,
                &reviewer.pool,
                &reviewer.id,
                lease,
            )
            .await?;
            if let Some(claimed) = &claimed {
                let reason = format!("claimed from lane {priority}");
                announce_claim(desk, &mut tx, claimed, reviewer, &reason).await?;
                tx.commit().await?;
            }
            Ok::<_, ApiError>(claimed)
        }
        .await;
        match committed {
            Ok(Some(claimed)) => {
                delivery.ack(BasicAckOptions::default()).await?;
                desk.broker.outbox_wake.notify_one();
                return Ok(Some(claimed));
            }
            Ok(None) => {
                // Already claimed, reported or moved: the lane message is stale.
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Err(error) => {
                give_back(desk, &delivery, request_uuid).await;
                return Err(error);
            }
        }
    }
}

/// Returns a taken lane message when the claim could not be committed (the database failed
/// between taking the message and the commit). A nack would count towards the lane's delivery
/// limit, and a database fault is not the message's fault; so a confirmed copy goes to the back
/// of the lane and the original is acked. Only if the copy cannot be published (the broker is
/// failing too) is the message nacked back, which counts.
async fn give_back(desk: &Desk, delivery: &Delivery, request_uuid: Uuid) {
    let copy = OutgoingMessage::copy_of(delivery);
    let republished = match desk.broker.publisher() {
        Some(publisher) => publisher.publish(&copy).await.map_err(anyhow::Error::from),
        None => Err(anyhow::anyhow!("broker not connected")),
    };
    let returned = match republished {
        Ok(()) => delivery.ack(BasicAckOptions::default()).await,
        Err(error) => {
            tracing::warn!(error = format!("{error:#}"), %request_uuid,
                "could not hand the lane message back as a copy; returning it (counts towards the delivery limit)");
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await
        }
    };
    if let Err(error) = returned {
        // The channel is gone: the broker returns the message to the lane by itself.
        tracing::warn!(error = %error, %request_uuid, "lane message left to the broker");
    }
}

async fn announce_claim(
    desk: &Desk,
    tx: &mut sqlx::PgConnection,
    claimed: &ClaimedRequest,
    reviewer: &Reviewer,
    reason: &str,
) -> Result<(), ApiError> {
    let trace = store::trace::of_request(&mut *tx, claimed.id).await?;
    bus::trace::within(
        trace,
        announce_claim_in_trace(desk, tx, claimed, reviewer, reason),
    )
    .await
}

async fn announce_claim_in_trace(
    desk: &Desk,
    tx: &mut sqlx::PgConnection,
    claimed: &ClaimedRequest,
    reviewer: &Reviewer,
    reason: &str,
) -> Result<(), ApiError> {
    let at = store::db_now(tx).await?;
    let fact = LifecycleFact {
        event_id: Uuid::new_v4(),
        request_uuid: Some(claimed.id),
        request_id: claimed.request_id.clone(),
        origin: claimed.origin.clone(),
        state: RequestState::Claimed,
        actor: format!("reviewer:{}", reviewer.id),
        reason: reason.to_owned(),
        pool: Some(reviewer.pool.to_string()),
        correlation_id: claimed.correlation_id.clone(),
        occurred_at: at,
    };
    store::outbox::enqueue(
        tx,
        &[messages::lifecycle_event(&desk.topology.names, &fact)],
    )
    .await?;
    tracing::info!(request_uuid = %claimed.id, correlation_id = claimed.correlation_id, reviewer = reviewer.id,
        priority = claimed.priority, "request claimed");
    Ok(())
}
