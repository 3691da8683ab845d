//! One telerelay service as a process of its own, for the tests that kill it with SIGKILL,
//! restart it or measure its memory (see `tests::service_process`):
//!
//! ```text
//! relay-service dispatcher|recorder|review-desk
//! ```
//!
//! It does what the service's own `main.rs` does — configuration from `TELERELAY_*`, logs,
//! SIGTERM to drain — so the process under test is the service as deployed, plus one thing:
//! `TELERELAY_CRASH_AT` is checked at start-up, so that a misspelt crash point fails the test
//! at once instead of never firing.

use anyhow::Context as _;
use runtime::DatabaseConfig;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let service = std::env::args().nth(1).unwrap_or_default();
    crash_point::arm_from_env()?;
    let shutdown = CancellationToken::new();
    match service.as_str() {
        "dispatcher" => {
            let config = dispatcher::Config::load()?;
            telemetry::init("dispatcher", config.service.log_format()?);
            let db = connect(&config.service.database)?;
            let metrics_listener = listen(&config.metrics_addr).await?;
            runtime::cancel_on_signals(shutdown.clone());
            dispatcher::run(config, db, metrics_listener, shutdown).await
        }
        "recorder" => {
            let config = recorder::Config::load()?;
            telemetry::init("recorder", config.service.log_format()?);
            let db = connect(&config.service.database)?;
            let metrics_listener = listen(&config.metrics_addr).await?;
            runtime::cancel_on_signals(shutdown.clone());
            recorder::run(config, db, metrics_listener, shutdown).await
        }
        "review-desk" => {
            let config = review_desk::Config::load()?;
            telemetry::init("review-desk", config.service.log_format()?);
            let db = connect(&config.service.database)?;
            let listener = tokio::net::TcpListener::bind(&config.http_addr)
                .await
                .with_context(|| format!("listening on {}", config.http_addr))?;
            tracing::info!(address = %listener.local_addr()?, "review desk listening");
            runtime::cancel_on_signals(shutdown.clone());
            review_desk::run(config, db, listener, shutdown).await
        }
        other => {
            anyhow::bail!("usage: relay-service dispatcher|recorder|review-desk (not {other:?})")
        }
    }
}

async fn listen(address: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address}"))?;
    tracing::info!(address = %listener.local_addr()?, "metrics and health endpoints listening");
    Ok(listener)
}

fn connect(database: &DatabaseConfig) -> anyhow::Result<sqlx::PgPool> {
    Ok(store::connect_lazy(
        database.database_url.expose_secret(),
        database.database_max_connections,
    )?)
}
