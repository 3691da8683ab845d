//! Routes, authentication and the report / return calls.

use crate::error::ApiError;
use crate::{Desk, correlation, leases, reports, revisions, second_reads, view, worklist};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bus::messages;
use contract::v1;
use domain::{LifecycleFact, RequestState, ReturnReason};
use serde::Deserialize;
use std::sync::Arc;
use store::registry::Reviewer;
use uuid::Uuid;

pub(crate) fn router(desk: Arc<Desk>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route(
            "/metrics",
            get(|State(desk): State<Arc<Desk>>| async move {
                telemetry::metrics::exposition(&desk.registry)
            }),
        )
        .route("/v1/worklist/next", post(next))
        .route("/v1/requests/{id}/report", post(report))
        .route("/v1/requests/{id}/return", post(return_request))
        .route("/v1/requests/{id}/revisions", post(revisions::revise))
        .route("/v1/second-reads/next", post(second_reads::next))
        .route("/v1/second-reads/{id}/verdict", post(second_reads::verdict))
        .route("/v1/requests/{id}/heartbeat", post(leases::heartbeat))
        .route("/v1/requests/{id}/draft", put(leases::save_draft))
        .route_layer(axum::middleware::from_fn_with_state(
            desk.clone(),
            correlation::follow_request_trace,
        ))
        .layer(axum::middleware::from_fn_with_state(
            desk.clone(),
            crate::metrics::count_http_requests,
        ))
        .with_state(desk)
}

/// The reviewer behind the bearer token.
pub(crate) struct Authenticated(pub Reviewer);

impl FromRequestParts<Arc<Desk>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, desk: &Arc<Desk>) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        let reviewer = store::registry::reviewer_by_token(&desk.db, token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Authenticated(reviewer))
    }
}

/// Ready while a broker session is up, its channel for the lanes open, and PostgreSQL answers;
/// otherwise 503 with the reason.
async fn ready(State(desk): State<Arc<Desk>>) -> Response {
    if desk.broker.channel().is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no broker channel is open").into_response();
    }
    desk.readiness.response().await
}

async fn next(
    State(desk): State<Arc<Desk>>,
    Authenticated(reviewer): Authenticated,
) -> Result<Response, ApiError> {
    match worklist::claim_next(&desk, &reviewer).await? {
        Some(claimed) => {
            // The claimed request's trace goes back with it, for the reviewer's client to send
            // on its calls about the request.
            let trace = store::trace::of_request(&desk.db, claimed.id).await?;
            let sla = store::sla::claim_context(&desk.db, claimed.id).await?;
            let mut response = Json(view::claimed_request(&claimed, sla)?).into_response();
            if let Some(value) = trace.as_ref().and_then(correlation::header_value) {
                response
                    .headers_mut()
                    .insert(bus::trace::TRACEPARENT, value);
            }
            Ok(response)
        }
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

const MAX_REPORT_TEXT: usize = 20_000;

async fn report(
    State(desk): State<Arc<Desk>>,
    Authenticated(reviewer): Authenticated,
    Path(id): Path<Uuid>,
    Json(body): Json<reports::ReportText>,
) -> Result<Response, ApiError> {
    let critical_finding = body.validate()?;
    let mut tx = desk.db.begin().await?;
    let held = hold(&mut tx, id, &reviewer).await?;
    let subject = reports::Subject {
        id: held.id,
        origin: held.origin,
        request_id: held.request_id,
        correlation_id: held.correlation_id,
        pool: held.pool,
    };
    let kind = held.kind;
    let signed = reports::sign(
        &desk,
        &mut tx,
        &subject,
        &reviewer,
        &body,
        critical_finding,
        None,
    )
    .await?;
    tx.commit().await?;
    desk.broker.outbox_wake.notify_one();
    desk.metrics.report_signed(&kind, body.critical, "first");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "version": signed.version })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReturnBody {
    reason: ReturnReason,
    #[serde(default)]
    detail: String,
}

async fn return_request(
    State(desk): State<Arc<Desk>>,
    Authenticated(reviewer): Authenticated,
    Path(id): Path<Uuid>,
    Json(body): Json<ReturnBody>,
) -> Result<Response, ApiError> {
    if body.detail.len() > MAX_REPORT_TEXT {
        return Err(ApiError::Invalid(format!(
            "detail is limited to {MAX_REPORT_TEXT} bytes"
        )));
    }
    let names = &desk.topology.names;
    let mut tx = desk.db.begin().await?;
    let held = hold(&mut tx, id, &reviewer).await?;
    let returned_at = store::review::record_return(
        &mut tx,
        id,
        body.reason.as_str(),
        &body.detail,
        &reviewer.id,
    )
    .await?;
    let origin = origin_code(&held.origin)?;
    let notice = v1::OriginNotice {
        notice: Some(v1::origin_notice::Notice::Returned(v1::RequestReturned {
            request_id: held.request_id.clone(),
            reason: body.reason.to_wire() as i32,
            detail: body.detail.clone(),
            reviewer_id: reviewer.id.clone(),
            returned_at: Some(domain::wire::timestamp(returned_at)),
        })),
    };
    let reason = format!("returned: {}", body.reason.as_str());
    let outgoing = [
        messages::origin_notice(
            names,
            &origin,
            &notice,
            format!("returned:{id}"),
            held.correlation_id.clone(),
        ),
        messages::lifecycle_event(
            names,
            &fact(
                &held,
                &reviewer,
                RequestState::Returned,
                reason,
                returned_at,
            ),
        ),
    ];
    store::outbox::enqueue(&mut tx, &outgoing).await?;
    tx.commit().await?;
    desk.broker.outbox_wake.notify_one();
    tracing::info!(request_uuid = %id, correlation_id = held.correlation_id, reviewer = reviewer.id,
        reason = body.reason.as_str(), "request returned to origin");
    Ok(Json(serde_json::json!({ "returned": true })).into_response())
}

/// Locks the request and checks that this reviewer holds it.
async fn hold(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    reviewer: &Reviewer,
) -> Result<store::review::HeldRequest, ApiError> {
    let held = store::review::lock_request(tx, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if held.pool.as_deref() != Some(reviewer.pool.as_str()) {
        // Requests of other pools do not exist as far as this reviewer is concerned.
        return Err(ApiError::NotFound);
    }
    if held.state != "claimed" || held.claimed_by.as_deref() != Some(reviewer.id.as_str()) {
        return Err(leases::not_held(&held.state, held.claimed_by.as_deref()));
    }
    Ok(held)
}

fn origin_code(origin: &str) -> Result<domain::HospitalCode, ApiError> {
    domain::HospitalCode::parse(origin)
        .map_err(|why| ApiError::Internal(anyhow::anyhow!("stored origin: {why}")))
}

fn fact(
    held: &store::review::HeldRequest,
    reviewer: &Reviewer,
    state: RequestState,
    reason: String,
    at: chrono::DateTime<chrono::Utc>,
) -> LifecycleFact {
    LifecycleFact {
        event_id: Uuid::new_v4(),
        request_uuid: Some(held.id),
        request_id: held.request_id.clone(),
        origin: held.origin.clone(),
        state,
        actor: format!("reviewer:{}", reviewer.id),
        reason,
        pool: held.pool.clone(),
        correlation_id: held.correlation_id.clone(),
        occurred_at: at,
    }
}
