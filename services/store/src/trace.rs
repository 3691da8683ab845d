//! The trace id stored with each request, for the services that work on a request they did not
//! receive from the broker (the review desk's calls, the clocks).

use bus::trace::{TraceContext, TraceId};
use uuid::Uuid;

/// A new hop in the trace of `request`; `None` for an unknown request. A stored value that is
/// somehow not a trace id (the schema forbids it) is treated as none rather than failing work.
pub async fn of_request(
    db: impl sqlx::PgExecutor<'_>,
    request: Uuid,
) -> sqlx::Result<Option<TraceContext>> {
    let stored = sqlx::query_scalar!(
        "select trace_id from review_requests where id = $1",
        request
    )
    .fetch_optional(db)
    .await?;
    Ok(stored
        .as_deref()
        .and_then(TraceId::parse)
        .map(TraceContext::in_trace))
}
