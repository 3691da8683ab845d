//! Accepting and refusing requests (the dispatcher's writes).

use chrono::{DateTime, Utc};
use domain::{HospitalCode, OriginRequestId, PoolCode, Priority, StudyKind};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

/// A validated request about to be recorded as routed to `pool`.
#[derive(Clone, Debug)]
pub struct NewRequest<'a> {
    pub id: Uuid,
    pub origin: &'a HospitalCode,
    pub request_id: &'a OriginRequestId,
    pub kind: StudyKind,
    pub priority: Priority,
    pub department: &'a str,
    pub subspecialty: Option<&'a str>,
    pub correlation_id: &'a str,
    /// The W3C trace id that follows the request (32 lower-case hex digits).
    pub trace_id: &'a str,
    pub requested_at: DateTime<Utc>,
    pub body: &'a [u8],
    pub pool: &'a PoolCode,
    /// An intra-operative frozen section: it selects the frozen-section SLA policy.
    pub frozen_section: bool,
    /// The broker handed this message out before and it was not acked (a consumer crashed or
    /// lost its connection). Finding the request already recorded is then the relay's own
    /// retry, not a copy the origin sent, and is not counted in `duplicates_received`.
    pub redelivered: bool,
}

/// What recording a request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acceptance {
    /// A new request; the caller routes it.
    Accepted,
    /// The same request again (same origin, id and content): nothing to do.
    Duplicate { existing: Uuid },
    /// The same request id with different content: refuse it, never merge.
    ConflictingDuplicate { existing: Uuid },
}

pub fn content_sha256(body: &[u8]) -> Vec<u8> {
    Sha256::digest(body).to_vec()
}

/// Records the request as routed, unless (origin, request id) is already known. Concurrent
/// duplicates are safe: the unique key lets exactly one insert win; the other waits for it to
/// commit and then sees the winner.
pub async fn accept(conn: &mut PgConnection, request: &NewRequest<'_>) -> sqlx::Result<Acceptance> {
    let digest = content_sha256(request.body);
    let inserted = sqlx::query_scalar!(
        r#"insert into review_requests
               (id, origin_hospital, request_id, content_sha256, kind, priority, department, subspecialty,
                correlation_id, requested_at, state, pool_code, routed_at, body, frozen_section, trace_id)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'routed', $11, now(), $12, $13, $14)
           on conflict (origin_hospital, request_id) do nothing
           returning id"#,
        request.id,
        request.origin.as_str(),
        request.request_id.as_str(),
        &digest,
        request.kind.as_str(),
        request.priority.as_str(),
        request.department,
        request.subspecialty,
        request.correlation_id,
        request.requested_at,
        request.pool.as_str(),
        request.body,
        request.frozen_section,
        request.trace_id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_some() {
        return Ok(Acceptance::Accepted);
    }
    let existing = sqlx::query!(
        "select id, content_sha256 from review_requests where origin_hospital = $1 and request_id = $2",
        request.origin.as_str(),
        request.request_id.as_str(),
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(if existing.content_sha256 == digest {
        if !request.redelivered {
            sqlx::query!("update review_requests set duplicates_received = duplicates_received + 1 where id = $1", existing.id)
                .execute(&mut *conn)
                .await?;
        }
        Acceptance::Duplicate {
            existing: existing.id,
        }
    } else {
        Acceptance::ConflictingDuplicate {
            existing: existing.id,
        }
    })
}

/// A message the dispatcher refused.
#[derive(Clone, Debug)]
pub struct Refusal<'a> {
    /// The publish's message id, or the body's hash when it had none.
    pub message_key: &'a str,
    pub sender: Option<&'a HospitalCode>,
    pub claimed_origin: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub reason: &'a str,
    pub detail: &'a str,
}

/// Records a refusal once; returns false when this message was already refused (a redelivery).
pub async fn record_refusal(conn: &mut PgConnection, refusal: &Refusal<'_>) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        r#"insert into rejected_messages (message_key, sender_hospital, claimed_origin, request_id, reason, detail)
           values ($1, $2, $3, $4, $5, $6)
           on conflict (message_key) do nothing"#,
        refusal.message_key,
        refusal.sender.map(HospitalCode::as_str),
        refusal.claimed_origin,
        refusal.request_id,
        refusal.reason,
        refusal.detail,
    )
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}
