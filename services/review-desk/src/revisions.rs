//! `POST /v1/requests/{id}/revisions`: an amendment or an addendum of a signed report.
//!
//! Rules: only reviewers of the pool that signed the final report may revise it (others get
//! 404, as for any request of another pool); only a reported request has a report to revise
//! (`reported`, `delivered`, or `acknowledged` once a critical result was acknowledged); a
//! returned request never had one (409); a revision must say why (422). Each version goes to the
//! origin as its own `ReviewResult` and is kept.

use crate::error::ApiError;
use crate::reports::{self, ReportText, Revision, RevisionKind};
use crate::{Desk, api::Authenticated};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::RequestState;
use serde::Deserialize;
use std::sync::Arc;
use uuid::Uuid;

const MAX_REASON: usize = 2_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevisionBody {
    kind: RevisionKind,
    findings: String,
    conclusion: String,
    /// Optional in the JSON so that a missing reason is answered with our own 422 and words.
    #[serde(default)]
    reason: String,
    #[serde(default)]
    critical: bool,
    critical_finding: Option<String>,
}

/// States in which the request has a signed report that stands.
const REVISABLE: [RequestState; 3] = [
    RequestState::Reported,
    RequestState::Delivered,
    RequestState::Acknowledged,
];

pub(crate) async fn revise(
    State(desk): State<Arc<Desk>>,
    Authenticated(reviewer): Authenticated,
    Path(id): Path<Uuid>,
    Json(body): Json<RevisionBody>,
) -> Result<Response, ApiError> {
    let reason = body.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::Invalid(
            "an amendment or addendum must give its reason".into(),
        ));
    }
    if reason.len() > MAX_REASON {
        return Err(ApiError::Invalid(format!(
            "reason is limited to {MAX_REASON} bytes"
        )));
    }
    let text = ReportText {
        findings: body.findings,
        conclusion: body.conclusion,
        critical: body.critical,
        critical_finding: body.critical_finding,
    };
    let critical_finding = text.validate()?;

    let mut tx = desk.db.begin().await?;
    let request = store::revisions::lock_revisable(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    // Whose report it is decides who may revise it; before any report, the routed pool.
    let owning_pool = request
        .reporting_pool
        .as_deref()
        .or(request.pool.as_deref());
    if owning_pool != Some(reviewer.pool.as_str()) {
        return Err(ApiError::NotFound);
    }
    if request.state == RequestState::Returned.as_str() {
        return Err(ApiError::Conflict(
            "the request was returned; there is no report to amend".into(),
        ));
    }
    let latest_version = match request.latest_version {
        Some(version)
            if REVISABLE
                .iter()
                .any(|state| state.as_str() == request.state) =>
        {
            version
        }
        _ => {
            return Err(ApiError::Conflict(format!(
                "the request is {} and has no signed report to amend",
                request.state
            )));
        }
    };
    let kind = request.kind;
    let subject = reports::Subject {
        id: request.id,
        origin: request.origin,
        request_id: request.request_id,
        correlation_id: request.correlation_id,
        pool: request.pool,
    };
    let revision = Revision {
        kind: body.kind,
        supersedes: latest_version,
        reason,
    };
    let signed = reports::sign(
        &desk,
        &mut tx,
        &subject,
        &reviewer,
        &text,
        critical_finding,
        Some(revision),
    )
    .await?;
    tx.commit().await?;
    desk.broker.outbox_wake.notify_one();
    desk.metrics
        .report_signed(&kind, text.critical, revision.kind.as_str());
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "version": signed.version,
            "supersedes_version": latest_version,
        })),
    )
        .into_response())
}
