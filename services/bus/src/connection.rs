//! Connecting to one of several broker nodes, and how long to wait before trying again.
//!
//! Services run a supervision loop (see each service's `run`): connect, declare what they use,
//! work until the connection fails, then wait [`reconnect_delay`] and connect again, possibly to
//! another node of the cluster. lapin's own auto-recovery is not used: it reconnects to a single
//! address, and our consumers must re-declare and resume deliberately.

use lapin::{Connection, ConnectionProperties};
use rand::Rng;
use std::time::Duration;

/// The AMQP URIs of the broker's nodes (one for a single broker, three for a cluster).
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerAddresses(Vec<String>);

impl BrokerAddresses {
    /// Parses a comma-separated list of `amqp://` or `amqps://` URIs.
    pub fn parse(list: &str) -> Result<Self, String> {
        let addresses: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|uri| !uri.is_empty())
            .map(str::to_owned)
            .collect();
        if addresses.is_empty() {
            return Err("no broker address given".into());
        }
        if let Some(bad) = addresses
            .iter()
            .find(|uri| !(uri.starts_with("amqp://") || uri.starts_with("amqps://")))
        {
            return Err(format!("{} is not an amqp:// or amqps:// URI", redact(bad)));
        }
        Ok(Self(addresses))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for BrokerAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|uri| redact(uri)))
            .finish()
    }
}

/// A URI with its password replaced, for logs and errors.
fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &uri[scheme_end + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &uri[..scheme_end + 3], &uri[at..])
        }
        _ => uri.to_owned(),
    }
}

/// Connects to the first node that answers, starting at node `attempt % len` so that repeated
/// attempts spread over the cluster instead of hammering a dead first node.
pub async fn connect(
    addresses: &BrokerAddresses,
    connection_name: &str,
    attempt: usize,
) -> anyhow::Result<Connection> {
    let mut last_error = None;
    for offset in 0..addresses.len() {
        let uri = &addresses.0[(attempt + offset) % addresses.len()];
        let properties =
            ConnectionProperties::default().with_connection_name(connection_name.into());
        match Connection::connect(uri, properties).await {
            Ok(connection) => {
                tracing::info!(broker = %redact(uri), connection_name, "connected to broker");
                return Ok(connection);
            }
            Err(error) => {
                tracing::warn!(broker = %redact(uri), error = %error, "broker node did not accept a connection");
                last_error = Some(error);
            }
        }
    }
    Err(anyhow::anyhow!(
        "no broker node accepted a connection: {last_error:?}"
    ))
}

/// Exponential backoff with full jitter: 0.2 s, 0.4 s, … capped at 15 s, each drawn uniformly
/// below the cap so that services restarted together do not reconnect in lockstep.
pub fn reconnect_delay(attempt: u32) -> Duration {
    let cap_ms = 200u64.saturating_mul(1u64 << attempt.min(7)).min(15_000);
    Duration::from_millis(rand::rng().random_range(cap_ms / 2..=cap_ms))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn addresses_are_listed_without_passwords() {
        let addresses = BrokerAddresses::parse(
            "amqp://hub:s3cret@10.0.0.1:5672/%2f, amqp://hub:s3cret@10.0.0.2:5672/%2f",
        )
        .unwrap();
        assert_eq!(addresses.len(), 2);
        let shown = format!("{addresses:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("hub:***@10.0.0.2"), "{shown}");
    }

    #[test]
    fn an_address_list_must_hold_amqp_uris() {
        assert!(BrokerAddresses::parse("").is_err());
        assert!(BrokerAddresses::parse("http://x").is_err());
    }

    #[test]
    fn reconnect_delay_grows_and_stays_capped() {
        assert!(reconnect_delay(0) <= Duration::from_millis(200));
        for attempt in 0..40 {
            assert!(reconnect_delay(attempt) <= Duration::from_secs(15));
        }
        assert!(reconnect_delay(20) >= Duration::from_millis(7_500));
    }
}
