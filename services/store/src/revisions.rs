//! Revisions of a request's story: the link from a returned request to its resubmission, and
//! amendments and addenda of a signed report.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// The request a resubmission names, as found (and locked) by the dispatcher.
#[derive(Clone, Debug)]
pub struct ResubmissionTarget {
    pub id: Uuid,
    pub request_id: String,
    pub state: String,
    pub pool: Option<String>,
    pub correlation_id: String,
    /// The origin's request id of the resubmission already linked to it, if any.
    pub resubmitted_as: Option<String>,
}

/// Looks up the request `origin` names in a resubmission and locks it for this transaction, so
/// that two resubmissions of one returned request are judged one after the other: the second
/// sees the first. Only the origin's own requests are found.
pub async fn lock_resubmission_target(
    conn: &mut PgConnection,
    origin: &str,
    original_request_id: &str,
) -> sqlx::Result<Option<ResubmissionTarget>> {
    sqlx::query_as!(
        ResubmissionTarget,
        r#"select original.id, original.request_id, original.state, original.pool_code as pool,
                  original.correlation_id,
                  (select later.request_id from review_requests later
                   where later.resubmission_of = original.id) as resubmitted_as
           from review_requests original
           where original.origin_hospital = $1 and original.request_id = $2
           for update of original"#,
        origin,
        original_request_id,
    )
    .fetch_optional(conn)
    .await
}

/// Links a freshly accepted request to the returned request it replaces. The unique index on
/// `resubmission_of` makes a second link impossible even if a caller skipped the lock.
pub async fn link_resubmission(
    conn: &mut PgConnection,
    resubmission: Uuid,
    original: Uuid,
) -> sqlx::Result<()> {
    sqlx::query!(
        "update review_requests set resubmission_of = $2 where id = $1",
        resubmission,
        original,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What a reviewer may revise: the request and its latest report version.
#[derive(Clone, Debug)]
pub struct RevisableRequest {
    pub id: Uuid,
    pub origin: String,
    pub request_id: String,
    pub correlation_id: String,
    pub state: String,
    pub pool: Option<String>,
    /// The pool of the reviewer who signed the first (final) report; `None` if never reported.
    pub reporting_pool: Option<String>,
    /// The latest version; `None` if never reported.
    pub latest_version: Option<i32>,
    /// The study kind (a metric label).
    pub kind: String,
}

/// Locks a request a reviewer wants to amend or add to, with who reported it.
pub async fn lock_revisable(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<RevisableRequest>> {
    sqlx::query_as!(
        RevisableRequest,
        r#"select q.id, q.origin_hospital as origin, q.request_id, q.correlation_id, q.state,
                  q.pool_code as pool,
                  (select r.pool_code from review_results v join reviewers r on r.id = v.reviewer_id
                   where v.request_uuid = q.id and v.status = 'final'
                   order by v.version limit 1) as reporting_pool,
                  (select max(v.version) from review_results v where v.request_uuid = q.id) as latest_version,
                  q.kind
           from review_requests q where q.id = $1 for update of q"#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// A new version that amends or adds to `supersedes`.
#[derive(Clone, Debug)]
pub struct NewRevision<'a> {
    pub request: Uuid,
    /// `amended` or `addendum`.
    pub status: &'a str,
    pub reviewer: &'a str,
    pub findings: &'a str,
    pub conclusion: &'a str,
    pub critical: bool,
    pub critical_finding: Option<&'a str>,
    pub supersedes: i32,
    pub reason: &'a str,
}

/// Stores the revision as the next version. The request's state is left as it is: the report
/// stands (reported or delivered) and the new version's delivery is recorded per version.
pub async fn record_revision(
    conn: &mut PgConnection,
    revision: &NewRevision<'_>,
) -> sqlx::Result<(i32, DateTime<Utc>)> {
    let row = sqlx::query!(
        r#"insert into review_results
               (request_uuid, version, status, reviewer_id, findings, conclusion, critical, critical_finding,
                reported_at, supersedes_version, revision_reason)
           values ($1, (select coalesce(max(version), 0) + 1 from review_results where request_uuid = $1),
                   $2, $3, $4, $5, $6, $7, now(), $8, $9)
           returning version, reported_at"#,
        revision.request,
        revision.status,
        revision.reviewer,
        revision.findings,
        revision.conclusion,
        revision.critical,
        revision.critical_finding,
        revision.supersedes,
        revision.reason,
    )
    .fetch_one(conn)
    .await?;
    Ok((row.version, row.reported_at))
}
