//! Second reads: a share of final reports (and, if configured, every critical one) is read again
//! by a colleague of the same pool, who records agreement or discordance.
//!
//! - Selection is a pure function of the request's uuid ([`selected`]): deterministic, so a
//!   redelivered or retried report makes the same choice, and uniform, so the share holds.
//! - `POST /v1/second-reads/next`: the oldest open second read of the reviewer's pool that the
//!   reviewer did not report, claimed as a lease (an expired lease can be taken over); 204 when
//!   none waits.
//! - `POST /v1/second-reads/{id}/verdict`: `agree` or `discordant` with a comment, only by the
//!   reviewer holding it; recorded once, with a `second_read_recorded` event.

use crate::error::ApiError;
use crate::{Config, Desk, api::Authenticated, view};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bus::messages;
use chrono::{DateTime, Utc};
use domain::{LifecycleFact, RequestState};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

/// Why a final report gets a second read, if it does: `critical` (every critical report, when
/// configured) or `sampled` (the configured share).
pub(crate) fn selection(config: &Config, request: Uuid, critical: bool) -> Option<&'static str> {
    if critical && config.second_read_all_critical {
        Some("critical")
    } else if selected(request, config.second_read_share) {
        Some("sampled")
    } else {
        None
    }
}

/// Whether a request falls in the sampled `share` (0.0 to 1.0). The uuid is mixed (splitmix64's
/// finaliser) into a uniform fraction in [0, 1): share 0 selects nothing, share 1 everything.
pub(crate) fn selected(request: Uuid, share: f64) -> bool {
    let bits = request.as_u128();
    let mut x = (bits as u64) ^ ((bits >> 64) as u64);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let fraction = (x >> 11) as f64 / (1u64 << 53) as f64;
    fraction < share
}

#[derive(Serialize)]
struct FirstReport {
    version: i32,
    findings: String,
    conclusion: String,
    critical: bool,
    reviewer_id: String,
}

#[derive(Serialize)]
struct SecondReadView {
    second_read_id: i64,
    request_uuid: Uuid,
    request: view::ClaimedView,
    first_report: FirstReport,
    lease_expires_at: DateTime<Utc>,
}

pub(crate) async fn next(
    State(desk): State<Arc<Desk>>,
    Authenticated(reviewer): Authenticated,
) -> Result<Response, ApiError> {
    let lease = chrono::Duration::seconds(i64::from(desk.config.lease_seconds));
    let mut tx = desk.db.begin().await?;
    let Some(claimed) =
        store::second_reads::claim_next(&mut tx, reviewer.pool.as_str(), &reviewer.id, lease)
            .await?
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let request = view::claimed_request(
        &store::review::ClaimedRequest {
            id: claimed.request_uuid,
            origin: claimed.origin,
            request_id: claimed.request_id,
            priority: claimed.priority,
            kind: claimed.kind,
            correlation_id: claimed.correlation_id,
            claim_expires_at: claimed.lease_expires_at,
            body: claimed.body,
        },
        store::sla::ClaimContext::default(),
    )?;
    let trace = store::trace::of_request(&mut *tx, claimed.request_uuid).await?;
    tx.commit().await?;
    bus::trace::span_of(trace).in_scope(|| {
        tracing::info!(second_read = claimed.id, request_uuid = %claimed.request_uuid, reviewer = reviewer.id,
            version = claimed.report_version, "second read claimed");
    });
    let mut response = Json(SecondReadView {
        second_read_id: claimed.id,
        request_uuid: claimed.request_uuid,
        request,
        first_report: FirstReport {
            version: claimed.report_version,
            findings: claimed.findings,
            conclusion: claimed.conclusion,
            critical: claimed.critical,
            reviewer_id: claimed.first_reader,
        },
        lease_expires_at: claimed.lease_expires_at,
    })
    .into_response();
    if let Some(value) = trace.as_ref().and_then(crate::correlation::header_value) {
        response
            .headers_mut()
            .insert(bus::trace::TRACEPARENT, value);
    }
    Ok(response)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    Agree,
    Discordant,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Agree => "agree",
            Verdict::Discordant => "discordant",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerdictBody {
    verdict: Verdict,
    #[serde(default)]
    comment: String,
}

const MAX_COMMENT: usize = 20_000;

pub(crate) async fn verdict(
    State(desk): State<Arc<Desk>>,
    Authenticated(reviewer): Authenticated,
    Path(id): Path<i64>,
    Json(body): Json<VerdictBody>,
) -> Result<Response, ApiError> {
    if body.comment.len() > MAX_COMMENT {
        return Err(ApiError::Invalid(format!(
            "comment is limited to {MAX_COMMENT} bytes"
        )));
    }
    if body.verdict == Verdict::Discordant && body.comment.trim().is_empty() {
        return Err(ApiError::Invalid(
            "a discordant second read must say what differs".into(),
        ));
    }
    let mut tx = desk.db.begin().await?;
    let held = store::second_reads::lock(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if held.pool_code != reviewer.pool.as_str() {
        return Err(ApiError::NotFound);
    }
    if held.state == "recorded" {
        return Err(ApiError::Conflict(
            "the verdict of this second read is already recorded".into(),
        ));
    }
    if held.state != "claimed" || held.second_reader.as_deref() != Some(reviewer.id.as_str()) {
        return Err(ApiError::Conflict(
            "you do not hold this second read; take it with /v1/second-reads/next".into(),
        ));
    }
    let recorded_at =
        store::second_reads::record_verdict(&mut tx, id, body.verdict.as_str(), &body.comment)
            .await?;
    let fact = LifecycleFact {
        event_id: Uuid::new_v4(),
        request_uuid: Some(held.request_uuid),
        request_id: held.request_id.clone(),
        origin: held.origin.clone(),
        state: RequestState::SecondReadRecorded,
        actor: format!("reviewer:{}", reviewer.id),
        // The verdict only: the comment may describe the patient and stays in second_reads.
        reason: format!(
            "{}: second read of report version {}",
            body.verdict.as_str(),
            held.report_version
        ),
        pool: Some(held.pool_code.clone()),
        correlation_id: held.correlation_id.clone(),
        occurred_at: recorded_at,
    };
    let trace = store::trace::of_request(&mut *tx, held.request_uuid).await?;
    bus::trace::within(
        trace,
        store::outbox::enqueue(
            &mut tx,
            &[messages::lifecycle_event(&desk.topology.names, &fact)],
        ),
    )
    .await?;
    tx.commit().await?;
    desk.broker.outbox_wake.notify_one();
    bus::trace::span_of(trace).in_scope(|| {
        tracing::info!(second_read = id, request_uuid = %held.request_uuid, reviewer = reviewer.id,
            verdict = body.verdict.as_str(), "second read recorded");
    });
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "second_read_id": id, "verdict": body.verdict.as_str() })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_holds_and_its_ends_are_exact() {
        let ids: Vec<Uuid> = (0..20_000u128)
            .map(|n| Uuid::from_u128(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
            .chain((0..20_000).map(|_| Uuid::new_v4()))
            .collect();
        let chosen = ids.iter().filter(|id| selected(**id, 0.1)).count();
        let share = chosen as f64 / ids.len() as f64;
        assert!((0.09..0.11).contains(&share), "share {share}");
        assert!(ids.iter().all(|id| !selected(*id, 0.0)));
        assert!(ids.iter().all(|id| selected(*id, 1.0)));
        assert!(
            ids.iter()
                .all(|id| selected(*id, 0.1) == selected(*id, 0.1))
        );
    }
}
