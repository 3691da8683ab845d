//! The desk's side of correlation: each call about a request (`/v1/requests/{id}/…`) runs within
//! the trace stored with that request, so its log lines carry `trace_id` and the messages it
//! queues carry `traceparent`. A reviewer's client may send the `traceparent` it was given with
//! the claim; the stored trace wins, because the trace belongs to the request, not to the caller.

use crate::Desk;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use bus::trace::{Incoming, TRACEPARENT, TraceContext};
use std::sync::Arc;
use uuid::Uuid;

/// Middleware: runs a call about a request within the request's trace.
pub(crate) async fn follow_request_trace(
    State(desk): State<Arc<Desk>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(id) = request_in_path(request.uri().path()) else {
        return next.run(request).await;
    };
    let trace = match store::trace::of_request(&desk.db, id).await {
        Ok(trace) => trace,
        Err(error) => {
            // The call itself will meet the same database and answer for it.
            tracing::debug!(error = %error, request_uuid = %id, "trace of the request not found");
            None
        }
    };
    let sent = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok());
    let sent = Incoming::of_value(sent);
    bus::trace::within(trace, async move {
        match (trace, sent) {
            (Some(trace), Incoming::Valid(sent)) if sent.trace_id != trace.trace_id => {
                tracing::debug!(sent_trace_id = %sent.trace_id, "traceparent sent differs from the request's trace; the request's is used");
            }
            (_, Incoming::Malformed(error)) => {
                tracing::debug!(error = %error, "malformed traceparent sent; ignored");
            }
            _ => {}
        }
        next.run(request).await
    })
    .await
}

/// The request id of `/v1/requests/{id}/…`.
fn request_in_path(path: &str) -> Option<Uuid> {
    let rest = path.strip_prefix("/v1/requests/")?;
    Uuid::parse_str(rest.split('/').next()?).ok()
}

/// The `traceparent` response header for a claimed request.
pub(crate) fn header_value(trace: &TraceContext) -> Option<HeaderValue> {
    HeaderValue::from_str(&trace.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_request_paths_name_a_request() {
        let id = Uuid::new_v4();
        assert_eq!(
            request_in_path(&format!("/v1/requests/{id}/report")),
            Some(id)
        );
        assert_eq!(request_in_path("/v1/requests/not-a-uuid/report"), None);
        assert_eq!(request_in_path("/v1/worklist/next"), None);
        assert_eq!(request_in_path("/v1/second-reads/7/verdict"), None);
    }
}
