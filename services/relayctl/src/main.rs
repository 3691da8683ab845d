//! relayctl: the operator's command line.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = relayctl::Cli::parse();
    telemetry::init("relayctl", telemetry::LogFormat::Pretty);
    relayctl::run(cli).await
}
