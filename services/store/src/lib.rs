//! telerelay's PostgreSQL store. Every query is checked against the schema at compile time
//! (`sqlx::query!`, with the metadata committed in `.sqlx/`).
//!
//! The store owns the relay's durable truth: the registry, each request's state and lease, the
//! results, the append-only audit trail, and the outbox through which state changes reach the
//! broker.

pub mod audit;
pub mod critical;
pub mod dead_letters;
pub mod lanes;
pub mod outbox;
pub mod registry;
pub mod registry_edits;
pub mod reports;
pub mod requests;
pub mod review;
pub mod revisions;
pub mod second_reads;
pub mod sla;
pub mod sla_config;
pub mod status;
pub mod trace;

use sqlx::postgres::{PgPool, PgPoolOptions};
use std::time::Duration;

/// The schema migrations, embedded so that `relayctl migrate` and the tests apply the same ones.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Opens a pool. It connects lazily and reconnects by itself, so a service can start while
/// PostgreSQL is still coming up and survives a database restart.
pub fn connect_lazy(database_url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(database_url)
}

/// The database's clock. Every lifecycle event is stamped by this one clock, so the events of a
/// request sort in the order they happened even when services run on hosts with skewed clocks.
pub async fn db_now(conn: &mut sqlx::PgConnection) -> sqlx::Result<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar!(r#"select clock_timestamp() as "now!""#)
        .fetch_one(conn)
        .await
}

/// Runs `operation` until it succeeds or fails for a reason other than the database being
/// unavailable; waits out outages with backoff. Gives up only when `shutdown` is cancelled, so
/// a database outage never costs a message a delivery attempt.
pub async fn wait_out_outages<T, F, Fut>(
    shutdown: &tokio_util::sync::CancellationToken,
    what: &str,
    mut operation: F,
) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut failures = 0u32;
    loop {
        match operation().await {
            Err(error) if is_transient(&error) && !shutdown.is_cancelled() => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(error = %error, what, attempt = failures, "database unavailable; waiting");
                }
                tokio::select! {
                    _ = tokio::time::sleep(database_retry_delay(failures)) => {}
                    _ = shutdown.cancelled() => return Err(error),
                }
            }
            result => return result,
        }
    }
}

/// How long to wait before trying the database again: the broker backoff, capped at 2 s, with
/// jitter. Lower than the broker's cap because every waiting delivery is a request held up, and
/// the pool's own acquire timeout already spaces attempts while the database is down.
pub fn database_retry_delay(attempt: u32) -> std::time::Duration {
    let cap = bus::reconnect_delay(attempt).min(std::time::Duration::from_millis(2_000));
    cap.max(std::time::Duration::from_millis(50))
}

/// Whether an error is worth waiting out (the database is down, restarting or overloaded) rather
/// than a fault in the data. Transient errors are retried inside the process and never cost a
/// message a delivery attempt.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            // Class 08 connection exceptions, 40001 serialization failure, 40P01 deadlock,
            // 53 insufficient resources, 57P01-03 admin shutdown / crash / cannot connect now.
            let code = db.code().unwrap_or_default();
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(
                    code.as_ref(),
                    "40001" | "40P01" | "57P01" | "57P02" | "57P03"
                )
        }
        _ => false,
    }
}
