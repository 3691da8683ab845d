//! What every telerelay service runs in: its configuration, its reaction to SIGTERM, and the
//! loop that keeps it connected to the broker.

mod config;
mod supervise;

pub use config::{
    BrokerConfig, ConfigError, DatabaseConfig, ServiceConfig, load, validate_socket_addr,
};
pub use supervise::{Session, supervise};

use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on SIGTERM or Ctrl-C, so that services drain: stop taking deliveries,
/// finish and ack what is in flight, flush the outbox, close.
pub fn cancel_on_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = terminate => tracing::info!("SIGTERM: draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: draining"),
        }
        shutdown.cancel();
    });
}
