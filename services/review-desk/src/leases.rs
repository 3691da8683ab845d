//! Leases: a claim is a lease in PostgreSQL (the row is the lease, so two reviewers can never
//! both hold a request). The holder keeps it alive with heartbeats and by saving drafts; when it
//! runs out, the dispatcher's SLA clock gives the request back to its lane with the draft kept,
//! and whoever claims it next continues from that draft. A call from a reviewer who lost the
//! lease is answered 409 with the reason.
//!
//! - `POST /v1/requests/{id}/heartbeat` → 200 `{"lease_expires_at": "<RFC 3339>"}`
//! - `PUT /v1/requests/{id}/draft` with `{"findings": "...", "conclusion": "..."}` → 200
//!   `{"lease_expires_at": "..."}` (saving renews the lease)

use crate::Desk;
use crate::api::Authenticated;
use crate::error::ApiError;
use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::sync::Arc;
use store::registry::Reviewer;
use uuid::Uuid;

/// Longest draft text accepted, as for a report.
const MAX_DRAFT_TEXT: usize = 20_000;

pub(crate) async fn heartbeat(
    State(desk): State<Arc<Desk>>,
    Authenticated(reviewer): Authenticated,
    Path(id): Path<Uuid>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut conn = desk.db.acquire().await?;
    let renewed = store::sla::heartbeat(&mut conn, id, &reviewer.id, lease_seconds(&desk)).await?;
    drop(conn);
    answer(&desk, id, &reviewer, renewed).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DraftBody {
    #[serde(default)]
    findings: String,
    #[serde(default)]
    conclusion: String,
}

pub(crate) async fn save_draft(
    State(desk): State<Arc<Desk>>,
    Authenticated(reviewer): Authenticated,
    Path(id): Path<Uuid>,
    Json(body): Json<DraftBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if body.findings.len() > MAX_DRAFT_TEXT || body.conclusion.len() > MAX_DRAFT_TEXT {
        return Err(ApiError::Invalid(format!(
            "findings and conclusion are limited to {MAX_DRAFT_TEXT} bytes"
        )));
    }
    let draft = serde_json::json!({ "findings": body.findings, "conclusion": body.conclusion });
    let mut conn = desk.db.acquire().await?;
    let renewed =
        store::sla::save_draft(&mut conn, id, &reviewer.id, &draft, lease_seconds(&desk)).await?;
    drop(conn);
    if renewed.is_some() {
        tracing::info!(request_uuid = %id, reviewer = reviewer.id, "draft saved");
    }
    answer(&desk, id, &reviewer, renewed).await
}

/// The new expiry, or why the caller has no lease to renew.
async fn answer(
    desk: &Desk,
    id: Uuid,
    reviewer: &Reviewer,
    renewed: Option<DateTime<Utc>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(expires) = renewed {
        return Ok(Json(serde_json::json!({ "lease_expires_at": expires })));
    }
    let mut conn = desk.db.acquire().await?;
    let held = store::review::lock_request(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if held.pool.as_deref() != Some(reviewer.pool.as_str()) {
        // Requests of other pools do not exist as far as this reviewer is concerned.
        return Err(ApiError::NotFound);
    }
    Err(not_held(&held.state, held.claimed_by.as_deref()))
}

/// Why the caller does not hold a request in `state`, held by `holder`: the 409 for heartbeats,
/// drafts, reports and returns from a reviewer whose lease was released or taken over.
pub(crate) fn not_held(state: &str, holder: Option<&str>) -> ApiError {
    ApiError::Conflict(match (state, holder) {
        ("claimed", Some(_)) => "another reviewer holds this request (if it was yours, your lease \
                                 ran out and it was taken over)"
            .into(),
        ("routed", _) => "you no longer hold this request: its lease was released (it expired or \
                          an operator broke the lock); claim it again to continue from the draft"
            .into(),
        (state, _) => format!("the request is {state}, not claimed"),
    })
}

fn lease_seconds(desk: &Desk) -> f64 {
    f64::from(desk.config.lease_seconds)
}
