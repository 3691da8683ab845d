//! The broker supervision loop: connect (to any node of the cluster), run a session, and when
//! the connection fails, wait with backoff and jitter and start a new session. A session
//! re-declares its topology and resumes its consumers, so a broker restart or a node loss costs
//! a pause, never a message.

use bus::BrokerAddresses;
use bus::lapin::Connection;
use std::future::Future;
use telemetry::metrics::PipelineMetrics;
use tokio_util::sync::CancellationToken;

/// What a session returned.
pub enum Session {
    /// Shutdown was requested and the session drained: stop supervising.
    Drained,
}

/// Runs `session` on a fresh connection until it returns `Ok(Session::Drained)` (after shutdown)
/// or the process is asked to stop while disconnected. A session's error (typically a lost
/// connection) is logged with its cause chain and followed by a reconnect. `metrics` counts the
/// reconnects and shows the session down once it ends (the session itself says when it is up:
/// `bus::consume_until` once it consumes); `&PipelineMetrics::default()` counts nowhere.
pub async fn supervise<F, Fut>(
    service: &str,
    addresses: &BrokerAddresses,
    metrics: &PipelineMetrics,
    shutdown: CancellationToken,
    mut session: F,
) -> anyhow::Result<()>
where
    F: FnMut(Connection) -> Fut,
    Fut: Future<Output = anyhow::Result<Session>>,
{
    let mut failures: u32 = 0;
    let mut attempt: usize = 0;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let connected = tokio::select! {
            connected = bus::connect(addresses, service, attempt) => connected,
            _ = shutdown.cancelled() => return Ok(()),
        };
        attempt += 1;
        match connected {
            Ok(connection) => {
                let ended = session(connection).await;
                metrics.set_session_up(false);
                match ended {
                    Ok(Session::Drained) => return Ok(()),
                    Err(error) => {
                        failures = 1;
                        metrics.reconnected();
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "broker session ended; reconnecting"
                        );
                    }
                }
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(
                    error = format!("{error:#}"),
                    attempt = failures,
                    "broker unreachable"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(bus::reconnect_delay(failures)) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}
