//! The dispatcher process: configuration, logs, signals; everything else is in the library.

use secrecy::ExposeSecret;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = dispatcher::Config::load()?;
    telemetry::init("dispatcher", config.service.log_format()?);
    let db = store::connect_lazy(
        config.service.database.database_url.expose_secret(),
        config.service.database.database_max_connections,
    )?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    runtime::cancel_on_signals(shutdown.clone());
    dispatcher::run(config, db, shutdown).await
}
