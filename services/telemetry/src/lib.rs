//! Logging for every telerelay service, set up once in `main`, and its metrics and health
//! endpoints ([`metrics`]).
//!
//! Production logs are JSON lines (one object per event, with the current span's fields: the
//! `request` span of `bus::trace::within` gives every line about a request its `trace_id`), so
//! that one id finds every line about a request across services. Tests stay silent unless `TELERELAY_TEST_LOG` is set.

pub mod metrics;

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line: for production and log shippers.
    #[default]
    Json,
    /// Human-readable lines: for a developer's terminal.
    Pretty,
}

impl LogFormat {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "json" => Some(LogFormat::Json),
            "pretty" | "text" => Some(LogFormat::Pretty),
            _ => None,
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides the default level (`info`).
/// Calling it twice is harmless: the second call keeps the first subscriber.
pub fn init(service: &'static str, format: LogFormat) {
    init_with_default_level(service, format, "info");
}

/// As [`init`], with another default level: a command-line tool logs only warnings unless asked.
pub fn init_with_default_level(service: &'static str, format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_target(false),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().with_target(false)).try_init(),
    };
    if installed.is_ok() {
        tracing::debug!(service, "logging started");
    }
}

/// For tests: logs to the test harness only when `TELERELAY_TEST_LOG` is set.
pub fn init_for_tests() {
    if std::env::var_os("TELERELAY_TEST_LOG").is_some() {
        let _ = tracing_subscriber::registry()
            .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("debug")))
            .with(fmt::layer().with_test_writer())
            .try_init();
    }
}
