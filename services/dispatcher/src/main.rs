//! The dispatcher process: configuration, logs, signals; everything else is in the library.

use anyhow::Context as _;
use secrecy::ExposeSecret;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = dispatcher::Config::load()?;
    telemetry::init("dispatcher", config.service.log_format()?);
    let db = store::connect_lazy(
        config.service.database.database_url.expose_secret(),
        config.service.database.database_max_connections,
    )?;
    let metrics_listener = tokio::net::TcpListener::bind(&config.metrics_addr)
        .await
        .with_context(|| format!("listening on {}", config.metrics_addr))?;
    tracing::info!(address = %metrics_listener.local_addr()?, "metrics and health endpoints listening");
    let shutdown = tokio_util::sync::CancellationToken::new();
    runtime::cancel_on_signals(shutdown.clone());
    dispatcher::run(config, db, metrics_listener, shutdown).await
}
