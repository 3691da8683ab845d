//! relayctl: the operator's command line.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = relayctl::Cli::parse();
    // Its output is for a person at a terminal: warnings and errors only, unless RUST_LOG says.
    telemetry::init_with_default_level("relayctl", telemetry::LogFormat::Pretty, "warn");
    relayctl::run(cli).await
}
