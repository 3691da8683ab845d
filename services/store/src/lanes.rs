//! Lane policies and how long work has waited in each lane: what load-aware overflow (dispatcher)
//! and aging (review desk) decide from. Both read the policy for every request or claim, so an
//! operator's `relayctl lanes set` ([`set_lane_policy`], audited like every registry edit in
//! `registry_changes`) applies without a restart.

use crate::registry_edits::{Change, ChangeRecord, EditError, record_change};
use domain::{PoolCode, Priority};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use std::time::Duration;

/// One lane's policy (table `lane_policies`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LanePolicy {
    pub priority: Priority,
    /// New requests overflow to a backup pool when the pool's oldest waiting request in this
    /// lane has waited longer than this. `None`: never.
    pub overflow_after: Option<Duration>,
    /// Waiting longer than this, a request is offered as if one lane more urgent. `None`: never.
    pub promote_after: Option<Duration>,
}

/// Every lane's policy, most urgent first (a lane without a row has neither overflow nor aging).
pub async fn policies(db: &PgPool) -> sqlx::Result<Vec<LanePolicy>> {
    let rows = sqlx::query!(
        r#"select priority,
                  extract(epoch from overflow_after)::float8 as overflow_secs,
                  extract(epoch from promote_after)::float8 as promote_secs
           from lane_policies"#
    )
    .fetch_all(db)
    .await?;
    let mut policies: Vec<LanePolicy> = rows
        .into_iter()
        .filter_map(|row| {
            Some(LanePolicy {
                priority: Priority::parse(&row.priority)?,
                overflow_after: row.overflow_secs.map(seconds),
                promote_after: row.promote_secs.map(seconds),
            })
        })
        .collect();
    policies.sort_by_key(|policy| policy.priority);
    Ok(policies)
}

/// The overflow age of one lane, `None` when the lane never overflows.
pub async fn overflow_after(db: &PgPool, priority: Priority) -> sqlx::Result<Option<Duration>> {
    let secs = sqlx::query_scalar!(
        r#"select extract(epoch from overflow_after)::float8 from lane_policies where priority = $1"#,
        priority.as_str()
    )
    .fetch_optional(db)
    .await?;
    Ok(secs.flatten().map(seconds))
}

/// How long the oldest request waiting to be claimed (state `routed`) in `priority`'s lane of
/// each of `pools` has waited, by the database clock. Pools with nothing waiting are absent.
pub async fn oldest_waiting(
    db: &PgPool,
    pools: &[PoolCode],
    priority: Priority,
) -> sqlx::Result<Vec<(String, Duration)>> {
    let pools: Vec<String> = pools.iter().map(ToString::to_string).collect();
    let rows = sqlx::query!(
        r#"select pool_code as "pool!",
                  extract(epoch from now() - min(routed_at))::float8 as "waited_secs!"
           from review_requests
           where pool_code = any($1) and priority = $2 and state = 'routed'
           group by pool_code"#,
        &pools,
        priority.as_str(),
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.pool, seconds(row.waited_secs)))
        .collect())
}

/// One lane of a pool as the review desk orders them: how long its oldest waiting request has
/// waited (zero when none waits), the lane's promotion age, and whether a reviewer's lease on
/// one of its requests has expired (so that the desk looks for those only when there are some).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneWait {
    pub priority: Priority,
    pub waited: Duration,
    pub promote_after: Option<Duration>,
    pub expired_leases: bool,
}

/// Every lane of `pool` with its oldest waiting request's age, its promotion age and whether it
/// has expired leases, in one query (it runs for every claim).
pub async fn lane_waits(db: &PgPool, pool: &PoolCode) -> sqlx::Result<Vec<LaneWait>> {
    let rows = sqlx::query!(
        r#"select l.priority,
                  extract(epoch from l.promote_after)::float8 as promote_secs,
                  coalesce(extract(epoch from now() - min(r.routed_at) filter (where r.state = 'routed'))::float8, 0)
                    as "waited_secs!",
                  count(r.id) filter (where r.state = 'claimed') > 0 as "expired_leases!"
           from lane_policies l
           left join review_requests r
             on r.pool_code = $1 and r.priority = l.priority
            and (r.state = 'routed' or (r.state = 'claimed' and r.claim_expires_at < now()))
           group by l.priority, l.promote_after"#,
        pool.as_str(),
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            Some(LaneWait {
                priority: Priority::parse(&row.priority)?,
                waited: seconds(row.waited_secs),
                promote_after: row.promote_secs.map(seconds),
                expired_leases: row.expired_leases,
            })
        })
        .collect())
}

/// Seconds from PostgreSQL as a duration; a negative age (clock adjustments) counts as zero.
fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::ZERO)
}

/// A lane policy setting as an operator gives it: leave it, set it, or switch it off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    Keep,
    Set(Duration),
    Off,
}

/// Changes the overflow and/or promotion age of one lane; returns the policy as it now is.
pub async fn set_lane_policy(
    db: &PgPool,
    priority: &str,
    overflow_after: Setting,
    promote_after: Setting,
    change: Change<'_>,
) -> Result<Value, EditError> {
    change.check()?;
    let priority =
        Priority::parse(priority).ok_or_else(|| EditError::UnknownPriority(priority.to_owned()))?;
    if priority == Priority::Stat && matches!(promote_after, Setting::Set(_)) {
        return Err(EditError::StatPromotion);
    }
    for setting in [overflow_after, promote_after] {
        if setting == Setting::Set(Duration::ZERO) {
            return Err(EditError::Invalid {
                what: "age",
                value: "0".into(),
                rule: "must be longer than zero (use `off` to switch it off)",
            });
        }
    }
    let mut tx = db.begin().await?;
    let before = lane_policy_json(&mut tx, priority).await?;
    let (keep_overflow, overflow_secs) = as_update(overflow_after);
    let (keep_promote, promote_secs) = as_update(promote_after);
    sqlx::query!(
        r#"insert into lane_policies (priority, overflow_after, promote_after)
           values ($1, make_interval(secs => $3), make_interval(secs => $5))
           on conflict (priority) do update set
               overflow_after = case when $2 then lane_policies.overflow_after
                                     else excluded.overflow_after end,
               promote_after = case when $4 then lane_policies.promote_after
                                    else excluded.promote_after end,
               updated_at = now()"#,
        priority.as_str(),
        keep_overflow,
        overflow_secs,
        keep_promote,
        promote_secs,
    )
    .execute(&mut *tx)
    .await?;
    let after = lane_policy_json(&mut tx, priority).await?;
    record_change(
        &mut tx,
        &ChangeRecord {
            operator: change.operator,
            action: "lane_policy_set",
            subject: serde_json::json!({ "priority": priority.as_str() }),
            before,
            after: after.clone(),
            note: change.note,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(after.unwrap_or(Value::Null))
}

/// (keep the current value?, the new value in seconds or NULL).
fn as_update(setting: Setting) -> (bool, Option<f64>) {
    match setting {
        Setting::Keep => (true, None),
        Setting::Set(duration) => (false, Some(duration.as_secs_f64())),
        Setting::Off => (false, None),
    }
}

async fn lane_policy_json(
    conn: &mut PgConnection,
    priority: Priority,
) -> sqlx::Result<Option<Value>> {
    sqlx::query_scalar!(
        r#"select jsonb_build_object('priority', priority,
                                     'overflow_after', overflow_after::text,
                                     'promote_after', promote_after::text) as "policy!"
           from lane_policies where priority = $1 for update"#,
        priority.as_str()
    )
    .fetch_optional(conn)
    .await
}
