//! The review desk's writes: claims as leases, reports, returns. A claim lives here, not as an
//! unacked message: a human read outlasts any broker consumer timeout, and a lease that expires
//! gives the request back to the pool without anyone having to notice.

use chrono::{DateTime, Utc};
use domain::{PoolCode, Priority};
use sqlx::PgConnection;
use uuid::Uuid;

/// A request a reviewer now holds.
#[derive(Clone, Debug)]
pub struct ClaimedRequest {
    pub id: Uuid,
    pub origin: String,
    pub request_id: String,
    pub priority: String,
    pub kind: String,
    pub correlation_id: String,
    pub claim_expires_at: DateTime<Utc>,
    pub body: Vec<u8>,
}

/// Claims a routed request for `reviewer` if it is still waiting in `pool`. Returns `None` when
/// the lane message is stale (already claimed, reported or moved), which the caller acks away.
pub async fn claim_routed(
    conn: &mut PgConnection,
    id: Uuid,
    pool: &PoolCode,
    reviewer: &str,
    lease: chrono::Duration,
) -> sqlx::Result<Option<ClaimedRequest>> {
    sqlx::query_as!(
        ClaimedRequest,
        r#"update review_requests
           set state = 'claimed', claimed_by = $3, claim_expires_at = now() + make_interval(secs => $4)
           where id = $1 and pool_code = $2 and state = 'routed'
           returning id, origin_hospital as origin, request_id, priority, kind, correlation_id,
                     claim_expires_at as "claim_expires_at!", body"#,
        id,
        pool.as_str(),
        reviewer,
        to_interval(lease),
    )
    .fetch_optional(conn)
    .await
}

/// Takes over the oldest request of `priority` in `pool` whose lease has run out, so that work a
/// reviewer abandoned is offered again before newer work of the same priority.
pub async fn claim_expired(
    conn: &mut PgConnection,
    pool: &PoolCode,
    priority: Priority,
    reviewer: &str,
    lease: chrono::Duration,
) -> sqlx::Result<Option<ClaimedRequest>> {
    sqlx::query_as!(
        ClaimedRequest,
        r#"update review_requests
           set claimed_by = $3, claim_expires_at = now() + make_interval(secs => $4)
           where id = (select id from review_requests
                       where pool_code = $1 and priority = $2 and state = 'claimed' and claim_expires_at < now()
                       order by routed_at limit 1 for update skip locked)
           returning id, origin_hospital as origin, request_id, priority, kind, correlation_id,
                     claim_expires_at as "claim_expires_at!", body"#,
        pool.as_str(),
        priority.as_str(),
        reviewer,
        to_interval(lease),
    )
    .fetch_optional(conn)
    .await
}

/// The request a reviewer is about to report on or return, locked for this transaction.
#[derive(Clone, Debug)]
pub struct HeldRequest {
    pub id: Uuid,
    pub origin: String,
    pub request_id: String,
    pub correlation_id: String,
    pub pool: Option<String>,
    pub state: String,
    pub claimed_by: Option<String>,
    /// The study kind (a metric label).
    pub kind: String,
}

pub async fn lock_request(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<HeldRequest>> {
    sqlx::query_as!(
        HeldRequest,
        r#"select id, origin_hospital as origin, request_id, correlation_id, pool_code as pool, state, claimed_by,
                  kind
           from review_requests where id = $1 for update"#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// A signed report version.
#[derive(Clone, Debug)]
pub struct NewResult<'a> {
    pub request: Uuid,
    pub status: &'a str,
    pub reviewer: &'a str,
    pub findings: &'a str,
    pub conclusion: &'a str,
    pub critical: bool,
    pub critical_finding: Option<&'a str>,
}

/// Stores the next report version and marks the request reported; returns the version and time.
pub async fn record_report(
    conn: &mut PgConnection,
    result: &NewResult<'_>,
) -> sqlx::Result<(i32, DateTime<Utc>)> {
    let row = sqlx::query!(
        r#"insert into review_results
               (request_uuid, version, status, reviewer_id, findings, conclusion, critical, critical_finding, reported_at)
           values ($1, (select coalesce(max(version), 0) + 1 from review_results where request_uuid = $1),
                   $2, $3, $4, $5, $6, $7, now())
           returning version, reported_at"#,
        result.request,
        result.status,
        result.reviewer,
        result.findings,
        result.conclusion,
        result.critical,
        result.critical_finding,
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query!(
        "update review_requests set state = 'reported', claimed_by = null, claim_expires_at = null where id = $1",
        result.request,
    )
    .execute(&mut *conn)
    .await?;
    Ok((row.version, row.reported_at))
}

/// Records that the reviewer handed the request back; returns when.
pub async fn record_return(
    conn: &mut PgConnection,
    request: Uuid,
    reason: &str,
    detail: &str,
    reviewer: &str,
) -> sqlx::Result<DateTime<Utc>> {
    let returned_at = sqlx::query_scalar!(
        r#"insert into request_returns (request_uuid, reason, detail, reviewer_id, returned_at)
           values ($1, $2, $3, $4, now()) returning returned_at"#,
        request,
        reason,
        detail,
        reviewer,
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query!(
        "update review_requests set state = 'returned', claimed_by = null, claim_expires_at = null where id = $1",
        request,
    )
    .execute(&mut *conn)
    .await?;
    Ok(returned_at)
}

/// A lease length as the seconds `make_interval` takes.
fn to_interval(duration: chrono::Duration) -> f64 {
    duration.num_milliseconds() as f64 / 1000.0
}
