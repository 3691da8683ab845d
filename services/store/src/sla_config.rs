//! The SLA configuration the operator edits with `relayctl sla` and `relayctl escalation`:
//! turnaround targets per kind × priority, the escalation ladder, and pool heads. Durations
//! travel as seconds; PostgreSQL stores intervals.

use crate::sla::LadderStep;
use sqlx::PgPool;

/// A turnaround target.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub kind: String,
    pub priority: String,
    pub frozen_section: bool,
    pub target_seconds: f64,
    pub at_risk_seconds: f64,
}

pub async fn policies(db: &PgPool) -> sqlx::Result<Vec<Policy>> {
    sqlx::query_as!(
        Policy,
        r#"select kind, priority, frozen_section,
                  extract(epoch from target)::float8 as "target_seconds!",
                  extract(epoch from at_risk_after)::float8 as "at_risk_seconds!"
           from sla_policies
           order by kind, frozen_section,
                    array_position(array['stat', 'asap', 'urgent', 'routine'], priority)"#
    )
    .fetch_all(db)
    .await
}

/// Sets (or adds) a target; the at-risk mark defaults to three quarters of the target. Applies to
/// requests received from now on.
pub async fn set_policy(db: &PgPool, policy: &Policy) -> sqlx::Result<()> {
    sqlx::query!(
        r#"insert into sla_policies (kind, priority, frozen_section, target, at_risk_after)
           values ($1, $2, $3, make_interval(secs => $4), make_interval(secs => $5))
           on conflict (kind, priority, frozen_section) do update
           set target = excluded.target, at_risk_after = excluded.at_risk_after, updated_at = now()"#,
        policy.kind,
        policy.priority,
        policy.frozen_section,
        policy.target_seconds,
        policy.at_risk_seconds,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn ladder(db: &PgPool) -> sqlx::Result<Vec<LadderStep>> {
    sqlx::query_as!(
        LadderStep,
        r#"select step, extract(epoch from delay_after_breach)::float8 as "delay_seconds!", action, contact
           from escalation_ladder order by step"#
    )
    .fetch_all(db)
    .await
}

/// Sets (or adds) one step of the ladder.
pub async fn set_ladder_step(db: &PgPool, step: &LadderStep) -> sqlx::Result<()> {
    sqlx::query!(
        r#"insert into escalation_ladder (step, delay_after_breach, action, contact)
           values ($1, make_interval(secs => $2), $3, $4)
           on conflict (step) do update
           set delay_after_breach = excluded.delay_after_breach, action = excluded.action,
               contact = excluded.contact, updated_at = now()"#,
        step.step,
        step.delay_seconds,
        step.action,
        step.contact,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Removes a step; returns whether it existed. Requests past it stop climbing at the gap.
pub async fn remove_ladder_step(db: &PgPool, step: i32) -> sqlx::Result<bool> {
    let removed = sqlx::query!("delete from escalation_ladder where step = $1", step)
        .execute(db)
        .await?;
    Ok(removed.rows_affected() == 1)
}

/// Sets or clears a pool's head; returns false for an unknown pool.
pub async fn set_pool_head(db: &PgPool, pool: &str, contact: Option<&str>) -> sqlx::Result<bool> {
    let updated = sqlx::query!(
        "update reviewer_pools set head_contact = $2, updated_at = now() where code = $1",
        pool,
        contact,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Every pool with its head (if any).
pub async fn pool_heads(db: &PgPool) -> sqlx::Result<Vec<(String, Option<String>)>> {
    let rows = sqlx::query!("select code, head_contact from reviewer_pools order by code")
        .fetch_all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.code, row.head_contact))
        .collect())
}
