//! Lane policies and how long work has waited in each lane: what load-aware overflow (dispatcher)
//! and aging (review desk) decide from. Both read the policy for every request or claim, so an
//! operator's `relayctl lanes set` applies without a restart.

use domain::{PoolCode, Priority};
use sqlx::PgPool;
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
/// waited (zero when none waits) and the lane's promotion age.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneWait {
    pub priority: Priority,
    pub waited: Duration,
    pub promote_after: Option<Duration>,
}

/// Every lane of `pool` with its oldest waiting request's age and its promotion age, in one
/// query (it runs for every claim).
pub async fn lane_waits(db: &PgPool, pool: &PoolCode) -> sqlx::Result<Vec<LaneWait>> {
    let rows = sqlx::query!(
        r#"select l.priority,
                  extract(epoch from l.promote_after)::float8 as promote_secs,
                  coalesce(extract(epoch from now() - min(r.routed_at))::float8, 0) as "waited_secs!"
           from lane_policies l
           left join review_requests r
             on r.pool_code = $1 and r.priority = l.priority and r.state = 'routed'
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
            })
        })
        .collect())
}

/// Seconds from PostgreSQL as a duration; a negative age (clock adjustments) counts as zero.
fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::ZERO)
}
