//! The SLA clock's and the leases' reads and writes: which requests are at risk, overdue or
//! holding an expired lease, the escalation ladder, the next backup pool, drafts and
//! heartbeats. The clock itself (what to do and which messages to send) is
//! `dispatcher::clock`; the review desk's lease calls are `review_desk::leases`.
//!
//! Every `next_*` function locks the one row it returns (`for update skip locked`), so several
//! dispatcher instances work through the same requests without doing anything twice, and a
//! claim racing the clock serialises on the row: whoever locks it first wins, the other sees the
//! row as the winner left it.

use bus::{Names, OutgoingMessage, messages};
use chrono::{DateTime, Utc};
use domain::{LifecycleFact, PoolCode, Priority, RequestState};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// An unreported request the clock is about to act on, locked for the caller's transaction.
#[derive(Clone, Debug)]
pub struct ClockRequest {
    pub id: Uuid,
    pub origin: String,
    pub request_id: String,
    pub correlation_id: String,
    pub kind: String,
    pub priority: String,
    pub department: String,
    pub pool: Option<String>,
    pub state: String,
    pub claimed_by: Option<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub escalation_level: i32,
}

impl ClockRequest {
    /// A lifecycle fact about this request, stamped `at` (the database clock).
    pub fn fact(
        &self,
        state: RequestState,
        actor: &str,
        reason: String,
        at: DateTime<Utc>,
    ) -> LifecycleFact {
        LifecycleFact {
            event_id: Uuid::new_v4(),
            request_uuid: Some(self.id),
            request_id: self.request_id.clone(),
            origin: self.origin.clone(),
            state,
            actor: actor.to_owned(),
            reason,
            pool: self.pool.clone(),
            correlation_id: self.correlation_id.clone(),
            occurred_at: at,
        }
    }
}

/// The claimed request whose lease ran out longest ago.
pub async fn next_expired_lease(conn: &mut PgConnection) -> sqlx::Result<Option<ClockRequest>> {
    sqlx::query_as!(
        ClockRequest,
        r#"select id, origin_hospital as origin, request_id, correlation_id, kind, priority, department,
                  pool_code as pool, state, claimed_by, due_at, escalation_level
           from review_requests
           where state = 'claimed' and claim_expires_at < now()
           order by claim_expires_at limit 1
           for update skip locked"#
    )
    .fetch_optional(conn)
    .await
}

/// An unreported request past its at-risk mark that was not warned about yet.
pub async fn next_at_risk(conn: &mut PgConnection) -> sqlx::Result<Option<ClockRequest>> {
    sqlx::query_as!(
        ClockRequest,
        r#"select id, origin_hospital as origin, request_id, correlation_id, kind, priority, department,
                  pool_code as pool, state, claimed_by, due_at, escalation_level
           from review_requests
           where warned_at is null and at_risk_at <= now() and state in ('routed', 'claimed')
           order by at_risk_at limit 1
           for update skip locked"#
    )
    .fetch_optional(conn)
    .await
}

pub async fn mark_warned(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "update review_requests set warned_at = now() where id = $1",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An unreported request past its due time whose breach was not recorded yet.
pub async fn next_breach(conn: &mut PgConnection) -> sqlx::Result<Option<ClockRequest>> {
    sqlx::query_as!(
        ClockRequest,
        r#"select id, origin_hospital as origin, request_id, correlation_id, kind, priority, department,
                  pool_code as pool, state, claimed_by, due_at, escalation_level
           from review_requests
           where breached_at is null and due_at <= now() and state in ('routed', 'claimed')
           order by due_at limit 1
           for update skip locked"#
    )
    .fetch_optional(conn)
    .await
}

/// Records the breach: the request is flagged for good.
pub async fn mark_breached(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "update review_requests set breached_at = now(), flagged = true where id = $1",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One step of the escalation ladder.
#[derive(Clone, Debug, PartialEq)]
pub struct LadderStep {
    pub step: i32,
    /// Seconds after the due time at which the step runs.
    pub delay_seconds: f64,
    /// `reroute_backup`, `page_pool_head` or `page_on_call`.
    pub action: String,
    pub contact: Option<String>,
}

/// A breached, still unreported request whose next ladder step is due, with that step.
#[derive(Clone, Debug)]
pub struct DueStep {
    pub request: ClockRequest,
    pub step: LadderStep,
}

pub async fn next_ladder_step(conn: &mut PgConnection) -> sqlx::Result<Option<DueStep>> {
    let row = sqlx::query!(
        r#"select r.id, r.origin_hospital, r.request_id, r.correlation_id, r.kind, r.priority, r.department,
                  r.pool_code, r.state, r.claimed_by, r.due_at, r.escalation_level,
                  l.step, extract(epoch from l.delay_after_breach)::float8 as "delay_seconds!", l.action, l.contact
           from review_requests r
           join escalation_ladder l on l.step = r.escalation_level + 1
           where r.breached_at is not null and r.state in ('routed', 'claimed')
             and r.due_at + l.delay_after_breach <= now()
           order by r.due_at limit 1
           for update of r skip locked"#
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| DueStep {
        request: ClockRequest {
            id: row.id,
            origin: row.origin_hospital,
            request_id: row.request_id,
            correlation_id: row.correlation_id,
            kind: row.kind,
            priority: row.priority,
            department: row.department,
            pool: row.pool_code,
            state: row.state,
            claimed_by: row.claimed_by,
            due_at: row.due_at,
            escalation_level: row.escalation_level,
        },
        step: LadderStep {
            step: row.step,
            delay_seconds: row.delay_seconds,
            action: row.action,
            contact: row.contact,
        },
    }))
}

/// Records that ladder step `step` ran for the request.
pub async fn mark_step_done(conn: &mut PgConnection, id: Uuid, step: i32) -> sqlx::Result<()> {
    sqlx::query!(
        "update review_requests set escalation_level = $2 where id = $1",
        id,
        step
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves a waiting request to another pool. Only a `routed` request moves: the caller holds the
/// row lock, so a reviewer's claim either committed before (state `claimed`, no move) or waits
/// and then finds the request in the other pool (its lane message is stale).
pub async fn reroute(conn: &mut PgConnection, id: Uuid, pool: &PoolCode) -> sqlx::Result<bool> {
    let moved = sqlx::query!(
        "update review_requests set pool_code = $2, routed_at = now() where id = $1 and state = 'routed'",
        id,
        pool.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// The paging address of a pool's head, if one is registered.
pub async fn pool_head(conn: &mut PgConnection, pool: &str) -> sqlx::Result<Option<String>> {
    let head = sqlx::query_scalar!(
        "select head_contact from reviewer_pools where code = $1",
        pool
    )
    .fetch_optional(conn)
    .await?;
    Ok(head.flatten())
}

/// The request as the origin sent it, for a copy of its lane message.
pub async fn request_body(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Vec<u8>> {
    sqlx::query_scalar!("select body from review_requests where id = $1", id)
        .fetch_one(conn)
        .await
}

/// A copy of a request's lane message for `pool`, with a message id of its own (the first
/// routing used the request's id).
pub async fn lane_copy(
    conn: &mut PgConnection,
    names: &Names,
    request: &ClockRequest,
    pool: &PoolCode,
) -> sqlx::Result<Option<OutgoingMessage>> {
    let Some(priority) = Priority::parse(&request.priority) else {
        return Ok(None);
    };
    let body = request_body(conn, request.id).await?;
    let mut message = messages::routed_request(
        names,
        pool,
        priority,
        request.id,
        request.correlation_id.clone(),
        body,
    );
    message.message_id = format!("{}:{}", request.id, Uuid::new_v4());
    Ok(Some(message))
}

/// Gives a claimed request back to its pool: state `routed`, lease cleared, the draft kept; in
/// the same transaction a `released` event (by `actor`, because `reason`) and a copy of the
/// lane message go to the outbox. Used by the clock (lease expired) and by an operator's
/// break-lock. The caller holds the row lock and has checked that the request is claimed.
pub async fn release_to_lane(
    conn: &mut PgConnection,
    names: &Names,
    request: &ClockRequest,
    actor: &str,
    reason: String,
) -> sqlx::Result<()> {
    sqlx::query!(
        "update review_requests set state = 'routed', claimed_by = null, claim_expires_at = null where id = $1",
        request.id,
    )
    .execute(&mut *conn)
    .await?;
    let at = crate::db_now(conn).await?;
    let mut outgoing = vec![messages::lifecycle_event(
        names,
        &request.fact(RequestState::Released, actor, reason, at),
    )];
    if let Some(pool) = request
        .pool
        .as_deref()
        .and_then(|p| PoolCode::parse(p).ok())
        && let Some(copy) = lane_copy(conn, names, request, &pool).await?
    {
        outgoing.push(copy);
    }
    crate::outbox::enqueue(conn, &outgoing).await?;
    Ok(())
}

/// A claimed request, locked for an operator's break-lock; `None` when it does not exist.
pub async fn lock_for_release(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<ClockRequest>> {
    sqlx::query_as!(
        ClockRequest,
        r#"select id, origin_hospital as origin, request_id, correlation_id, kind, priority, department,
                  pool_code as pool, state, claimed_by, due_at, escalation_level
           from review_requests where id = $1 for update"#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// Renews the lease of `reviewer` on a request they hold; returns the new expiry, or `None` when
/// they no longer hold it (released, taken over, reported).
pub async fn heartbeat(
    conn: &mut PgConnection,
    id: Uuid,
    reviewer: &str,
    lease_seconds: f64,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!(
        r#"update review_requests set claim_expires_at = now() + make_interval(secs => $3)
           where id = $1 and state = 'claimed' and claimed_by = $2
           returning claim_expires_at as "claim_expires_at!""#,
        id,
        reviewer,
        lease_seconds,
    )
    .fetch_optional(conn)
    .await
}

/// Saves the holder's draft and renews the lease; `None` when they no longer hold it.
pub async fn save_draft(
    conn: &mut PgConnection,
    id: Uuid,
    reviewer: &str,
    draft: &serde_json::Value,
    lease_seconds: f64,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!(
        r#"update review_requests
           set claim_expires_at = now() + make_interval(secs => $4),
               draft = $3, draft_saved_at = now(), draft_saved_by = $2
           where id = $1 and state = 'claimed' and claimed_by = $2
           returning claim_expires_at as "claim_expires_at!""#,
        id,
        reviewer,
        draft,
        lease_seconds,
    )
    .fetch_optional(conn)
    .await
}

/// A saved draft report.
#[derive(Clone, Debug, PartialEq)]
pub struct Draft {
    pub content: serde_json::Value,
    pub saved_by: Option<String>,
    pub saved_at: Option<DateTime<Utc>>,
}

/// What a reviewer claiming a request is told besides the request: the draft left by an earlier
/// holder, when the report is due, and whether it is already overdue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClaimContext {
    pub draft: Option<Draft>,
    pub due_at: Option<DateTime<Utc>>,
    pub flagged: bool,
}

pub async fn claim_context(db: &PgPool, id: Uuid) -> sqlx::Result<ClaimContext> {
    let row = sqlx::query!(
        "select draft, draft_saved_by, draft_saved_at, due_at, flagged from review_requests where id = $1",
        id
    )
    .fetch_optional(db)
    .await?;
    Ok(row
        .map(|row| ClaimContext {
            draft: row.draft.map(|content| Draft {
                content,
                saved_by: row.draft_saved_by,
                saved_at: row.draft_saved_at,
            }),
            due_at: row.due_at,
            flagged: row.flagged,
        })
        .unwrap_or_default())
}
