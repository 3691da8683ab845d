//! The review desk process: configuration, logs, signals, the listening socket.

use secrecy::ExposeSecret;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = review_desk::Config::load()?;
    telemetry::init("review-desk", config.service.log_format()?);
    let db = store::connect_lazy(
        config.service.database.database_url.expose_secret(),
        config.service.database.database_max_connections,
    )?;
    let listener = tokio::net::TcpListener::bind(&config.http_addr).await?;
    tracing::info!(address = %listener.local_addr()?, "review desk listening");
    let shutdown = tokio_util::sync::CancellationToken::new();
    runtime::cancel_on_signals(shutdown.clone());
    review_desk::run(config, db, listener, shutdown).await
}
