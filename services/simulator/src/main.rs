//! The simulator process: configuration, logs, signals; everything else is in the library.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = simulator::Config::load()?;
    telemetry::init("simulator", config.log_format()?);
    let shutdown = tokio_util::sync::CancellationToken::new();
    runtime::cancel_on_signals(shutdown.clone());
    simulator::run(config, shutdown).await?;
    Ok(())
}
