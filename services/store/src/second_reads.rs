//! Second reads: a colleague of the same pool reads a signed report again and records agreement
//! or discordance. Opened with the report, claimed as a lease, recorded once.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Opens a pending second read of report `version`; false if one was already open for it.
pub async fn open(
    conn: &mut PgConnection,
    request: Uuid,
    version: i32,
    first_reader: &str,
    pool: &str,
    selected_because: &str,
) -> sqlx::Result<bool> {
    let opened = sqlx::query!(
        r#"insert into second_reads (request_uuid, report_version, first_reader, pool_code, state, selected_because)
           values ($1, $2, $3, $4, 'pending', $5)
           on conflict (request_uuid, report_version) do nothing"#,
        request,
        version,
        first_reader,
        pool,
        selected_because,
    )
    .execute(conn)
    .await?;
    Ok(opened.rows_affected() == 1)
}

/// A second read a reviewer now holds, with the request and the report to check.
#[derive(Clone, Debug)]
pub struct ClaimedSecondRead {
    pub id: i64,
    pub request_uuid: Uuid,
    pub report_version: i32,
    pub lease_expires_at: DateTime<Utc>,
    pub origin: String,
    pub request_id: String,
    pub priority: String,
    pub kind: String,
    pub correlation_id: String,
    pub body: Vec<u8>,
    pub first_reader: String,
    pub findings: String,
    pub conclusion: String,
    pub critical: bool,
}

/// Claims the oldest open second read of `pool` that `reviewer` did not report, as a lease:
/// a pending one, or one whose previous holder's lease ran out. Concurrent callers skip each
/// other's rows, so two reviewers never hold one second read.
pub async fn claim_next(
    conn: &mut PgConnection,
    pool: &str,
    reviewer: &str,
    lease: chrono::Duration,
) -> sqlx::Result<Option<ClaimedSecondRead>> {
    sqlx::query_as!(
        ClaimedSecondRead,
        r#"with taken as (
               update second_reads
               set state = 'claimed', second_reader = $2, claimed_at = now(),
                   lease_expires_at = now() + make_interval(secs => $3)
               where id = (select id from second_reads
                           where pool_code = $1 and first_reader <> $2
                             and (state = 'pending' or (state = 'claimed' and lease_expires_at < now()))
                           order by requested_at, id limit 1 for update skip locked)
               returning id, request_uuid, report_version, lease_expires_at, first_reader)
           select t.id as "id!", t.request_uuid as "request_uuid!", t.report_version as "report_version!",
                  t.lease_expires_at as "lease_expires_at!",
                  q.origin_hospital as "origin!", q.request_id as "request_id!", q.priority as "priority!",
                  q.kind as "kind!", q.correlation_id as "correlation_id!", q.body as "body!",
                  t.first_reader as "first_reader!", v.findings as "findings!",
                  v.conclusion as "conclusion!", v.critical as "critical!"
           from taken t
           join review_requests q on q.id = t.request_uuid
           join review_results v on v.request_uuid = t.request_uuid and v.version = t.report_version"#,
        pool,
        reviewer,
        lease.num_milliseconds() as f64 / 1000.0,
    )
    .fetch_optional(conn)
    .await
}

/// A second read locked for recording its verdict.
#[derive(Clone, Debug)]
pub struct HeldSecondRead {
    pub id: i64,
    pub request_uuid: Uuid,
    pub report_version: i32,
    pub pool_code: String,
    pub state: String,
    pub second_reader: Option<String>,
    pub origin: String,
    pub request_id: String,
    pub correlation_id: String,
}

pub async fn lock(conn: &mut PgConnection, id: i64) -> sqlx::Result<Option<HeldSecondRead>> {
    sqlx::query_as!(
        HeldSecondRead,
        r#"select s.id, s.request_uuid, s.report_version, s.pool_code, s.state, s.second_reader,
                  q.origin_hospital as origin, q.request_id, q.correlation_id
           from second_reads s join review_requests q on q.id = s.request_uuid
           where s.id = $1 for update of s"#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// Records the verdict of a held second read; returns when.
pub async fn record_verdict(
    conn: &mut PgConnection,
    id: i64,
    verdict: &str,
    comment: &str,
) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar!(
        r#"update second_reads
           set state = 'recorded', verdict = $2, comment = $3, recorded_at = now(), lease_expires_at = null
           where id = $1 and state = 'claimed'
           returning recorded_at as "recorded_at!""#,
        id,
        verdict,
        comment,
    )
    .fetch_one(conn)
    .await
}

/// One second read as the operator sees it.
#[derive(Clone, Debug)]
pub struct SecondReadLine {
    pub id: i64,
    pub origin: String,
    pub request_id: String,
    pub report_version: i32,
    pub pool_code: String,
    pub first_reader: String,
    pub second_reader: Option<String>,
    pub state: String,
    pub verdict: Option<String>,
    pub selected_because: String,
    pub requested_at: DateTime<Utc>,
    pub recorded_at: Option<DateTime<Utc>>,
}

/// Every second read (only discordant ones with `discordant_only`), newest first.
pub async fn list(
    db: &PgPool,
    discordant_only: bool,
    limit: i64,
) -> sqlx::Result<Vec<SecondReadLine>> {
    sqlx::query_as!(
        SecondReadLine,
        r#"select s.id, q.origin_hospital as origin, q.request_id, s.report_version, s.pool_code,
                  s.first_reader, s.second_reader, s.state, s.verdict, s.selected_because,
                  s.requested_at, s.recorded_at
           from second_reads s join review_requests q on q.id = s.request_uuid
           where not $1 or s.verdict = 'discordant'
           order by s.requested_at desc, s.id desc limit $2"#,
        discordant_only,
        limit,
    )
    .fetch_all(db)
    .await
}
