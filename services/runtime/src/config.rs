//! Typed configuration, layered: defaults, then an optional TOML file named by
//! `TELERELAY_CONFIG`, then `TELERELAY_*` environment variables. Loaded and validated once at
//! start-up; a service with a bad setting refuses to start and says which one.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Read(#[from] Box<figment::Error>),
    #[error("configuration setting {setting} is invalid: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
}

/// Loads `T` from the layers. `defaults` supplies every value that has one.
pub fn load<T: DeserializeOwned + Serialize>(defaults: &T) -> Result<T, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Ok(path) = std::env::var("TELERELAY_CONFIG") {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment
        .merge(Env::prefixed("TELERELAY_").split("__"))
        .extract()
        .map_err(|error| ConfigError::Read(Box::new(error)))
}

/// How a service reaches the broker. Env: `TELERELAY_AMQP_URL` (comma-separated cluster nodes),
/// `TELERELAY_NAMESPACE`, `TELERELAY_DELIVERY_LIMIT`, `TELERELAY_CONFIRM_TIMEOUT_MS`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BrokerConfig {
    #[serde(serialize_with = "expose")]
    pub amqp_url: SecretString,
    pub namespace: String,
    pub delivery_limit: u32,
    pub confirm_timeout_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            amqp_url: SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f"),
            namespace: "telerelay".into(),
            delivery_limit: 10,
            confirm_timeout_ms: 10_000,
        }
    }
}

impl BrokerConfig {
    pub fn addresses(&self) -> Result<bus::BrokerAddresses, ConfigError> {
        bus::BrokerAddresses::parse(self.amqp_url.expose_secret()).map_err(|reason| {
            ConfigError::Invalid {
                setting: "amqp_url",
                reason,
            }
        })
    }

    pub fn topology(&self) -> Result<bus::Topology, ConfigError> {
        let namespace_ok = !self.namespace.is_empty()
            && self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !namespace_ok {
            return Err(ConfigError::Invalid {
                setting: "namespace",
                reason: "letters, digits, - and _ only".into(),
            });
        }
        if !(1..=100).contains(&self.delivery_limit) {
            return Err(ConfigError::Invalid {
                setting: "delivery_limit",
                reason: "must be 1 to 100".into(),
            });
        }
        Ok(bus::Topology::new(
            bus::Names::new(self.namespace.clone()),
            bus::QueueSettings {
                delivery_limit: self.delivery_limit,
            },
        ))
    }

    pub fn confirm_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.confirm_timeout_ms)
    }
}

/// How a service reaches PostgreSQL. Env: `TELERELAY_DATABASE_URL`, `TELERELAY_DATABASE_MAX_CONNECTIONS`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct DatabaseConfig {
    #[serde(serialize_with = "expose")]
    pub database_url: SecretString,
    pub database_max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            database_url: SecretString::from(
                "postgres://telerelay:telerelay@127.0.0.1:5432/telerelay",
            ),
            database_max_connections: 8,
        }
    }
}

/// Serializes a secret only so figment can use the default as its lowest layer; `Debug` of a
/// `SecretString` still prints it redacted.
fn expose<S: serde::Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

/// The settings every service shares: broker, database and log format. Services flatten it into
/// their own `Config`, so the environment variables stay `TELERELAY_AMQP_URL`, … .
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ServiceConfig {
    #[serde(flatten)]
    pub broker: BrokerConfig,
    #[serde(flatten)]
    pub database: DatabaseConfig,
    /// `json` (production) or `pretty` (a developer's terminal). Env `TELERELAY_LOG_FORMAT`.
    pub log_format: String,
    /// How often the service's outbox relay looks for unpublished rows without being woken:
    /// rows a crashed process left, or rows another service committed (env
    /// `TELERELAY_OUTBOX_POLL_MS`, default 500).
    pub outbox_poll_ms: u64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            broker: BrokerConfig::default(),
            database: DatabaseConfig::default(),
            log_format: "json".into(),
            outbox_poll_ms: 500,
        }
    }
}

impl ServiceConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.broker.addresses()?;
        self.broker.topology()?;
        self.log_format()?;
        if !(10..=3_600_000).contains(&self.outbox_poll_ms) {
            return Err(ConfigError::Invalid {
                setting: "outbox_poll_ms",
                reason: "must be 10 ms to 1 h".into(),
            });
        }
        Ok(())
    }

    pub fn outbox_poll(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.outbox_poll_ms)
    }

    pub fn log_format(&self) -> Result<telemetry::LogFormat, ConfigError> {
        telemetry::LogFormat::parse(&self.log_format).ok_or(ConfigError::Invalid {
            setting: "log_format",
            reason: "json or pretty".into(),
        })
    }
}

/// Checks that a listening address is an IP address and port (`127.0.0.1:9601`, `[::]:0`).
pub fn validate_socket_addr(setting: &'static str, value: &str) -> Result<(), ConfigError> {
    value
        .parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| ConfigError::Invalid {
            setting,
            reason: format!("{value:?} is not an IP address and port"),
        })
}
