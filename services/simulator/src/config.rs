//! The simulator's settings (env `TELERELAY_*`, see `runtime::load`), validated at start.

use runtime::{BrokerConfig, ConfigError};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Everything the simulator can be told. Each field `x` is set by `TELERELAY_X`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Config {
    /// The namespace, delivery limit and confirm timeout; `amqp_url` is the operator's
    /// connection, used only to declare the topology the simulator needs.
    #[serde(flatten)]
    pub broker: BrokerConfig,
    pub log_format: String,
    /// The shared clinical data (env `TELERELAY_DATA_DIR`).
    pub data_dir: PathBuf,
    /// The registry file whose origins publish and whose reviewers read.
    pub sim_registry: PathBuf,
    /// Each origin's broker URL; `{user}` becomes the hospital's broker user. May list several
    /// cluster nodes, comma-separated.
    #[serde(serialize_with = "expose")]
    pub sim_origin_amqp_url: SecretString,
    pub sim_review_desk_url: String,
    /// New requests per second over all origins together.
    pub sim_rate_per_second: f64,
    /// Stop publishing after this many confirmed new requests; unbounded when absent.
    pub sim_total: Option<u64>,
    /// Once the total is published, how long to wait for every request's outcome before exiting.
    pub sim_settle_seconds: u64,
    /// Reading time = realistic minutes × this factor (0.02: a 3-minute ECG read takes 3.6 s).
    pub sim_time_scale: f64,
    pub sim_report_seconds: u64,
    /// How long a reviewer bot waits after an empty worklist.
    pub sim_poll_interval_ms: u64,
    /// Relative weights of the study kinds.
    pub sim_mix_ecg: f64,
    pub sim_mix_imaging: f64,
    pub sim_mix_pathology: f64,
    /// Relative weights of the priorities.
    pub sim_priority_stat: f64,
    pub sim_priority_asap: f64,
    pub sim_priority_urgent: f64,
    pub sim_priority_routine: f64,
    /// Share of pathology requests that are intra-operative frozen sections (always STAT).
    pub sim_frozen_section_probability: f64,
    /// Probability that a HIS publishes a request twice (a retry); the relay must dedupe it.
    pub sim_duplicate_probability: f64,
    /// Probability that a reviewer returns a readable request.
    pub sim_return_probability: f64,
    /// Probability that a reviewer finds an unexpected critical value.
    pub sim_critical_probability: f64,
    /// Probability that a reviewer is called away mid-read: the draft stays with the lease,
    /// the lease runs out and a colleague finishes the read.
    pub sim_called_away_probability: f64,
    /// Probability that a reviewer later adds an addendum to, or amends, a signed report.
    pub sim_revision_probability: f64,
    /// Probability that a second reader disagrees with the first report.
    pub sim_discordance_probability: f64,
    /// How long the origin's clinician on duty takes to acknowledge a critical value, in
    /// seconds (drawn between half and twice this).
    pub sim_critical_ack_seconds: f64,
    /// Probability that a critical notification is missed at first, so that only the relay's
    /// reminders bring a clinician to acknowledge it (after `sim_missed_critical_seconds`).
    pub sim_missed_critical_probability: f64,
    pub sim_missed_critical_seconds: f64,
    /// Run the county publishers and inboxes.
    pub sim_origins: bool,
    /// Run the reviewer bots.
    pub sim_reviewer_bots: bool,
    /// Declare the core topology and each origin's results queue with `amqp_url` at start, as
    /// `relayctl` would, so the simulator works against a fresh broker.
    pub sim_declare_topology: bool,
    /// Where the counties write their HIS register (pseudonym, name, national id) as CSV; not
    /// written when absent. Names and national ids never leave the county: a test searches the
    /// relay's logs for them.
    pub sim_his_register: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            broker: BrokerConfig::default(),
            log_format: "json".into(),
            data_dir: formats::default_data_dir(),
            sim_registry: PathBuf::from("registry/hunan.toml"),
            sim_origin_amqp_url: SecretString::from(
                "amqp://{user}:telerelay-demo@127.0.0.1:5672/%2f",
            ),
            sim_review_desk_url: "http://127.0.0.1:8080".into(),
            sim_rate_per_second: 5.0,
            sim_total: None,
            sim_settle_seconds: 120,
            sim_time_scale: 0.02,
            sim_report_seconds: 5,
            sim_poll_interval_ms: 1000,
            sim_mix_ecg: 0.70,
            sim_mix_imaging: 0.20,
            sim_mix_pathology: 0.10,
            sim_priority_stat: 0.05,
            sim_priority_asap: 0.10,
            sim_priority_urgent: 0.15,
            sim_priority_routine: 0.70,
            sim_frozen_section_probability: 0.20,
            sim_duplicate_probability: 0.01,
            sim_return_probability: 0.02,
            sim_critical_probability: 0.01,
            sim_called_away_probability: 0.02,
            sim_revision_probability: 0.03,
            sim_discordance_probability: 0.1,
            sim_critical_ack_seconds: 20.0,
            sim_missed_critical_probability: 0.15,
            sim_missed_critical_seconds: 90.0,
            sim_origins: true,
            sim_reviewer_bots: true,
            sim_declare_topology: true,
            sim_his_register: None,
        }
    }
}

impl Config {
    /// Loads the layers and validates the result.
    pub fn load() -> Result<Self, ConfigError> {
        let config = runtime::load(&Config::default())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting; the registry file and data directory are checked to exist here,
    /// and read in full by [`crate::run`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting: &'static str, reason: &str| ConfigError::Invalid {
            setting,
            reason: reason.into(),
        };
        self.broker.addresses()?;
        self.broker.topology()?;
        self.log_format()?;
        if !(self.sim_rate_per_second.is_finite() && self.sim_rate_per_second > 0.0) {
            return Err(invalid("sim_rate_per_second", "must be a positive number"));
        }
        if !(self.sim_time_scale.is_finite() && self.sim_time_scale > 0.0) {
            return Err(invalid("sim_time_scale", "must be a positive number"));
        }
        if self.sim_total == Some(0) {
            return Err(invalid("sim_total", "must be at least 1 when set"));
        }
        if self.sim_report_seconds == 0 {
            return Err(invalid("sim_report_seconds", "must be at least 1"));
        }
        if self.sim_poll_interval_ms < 10 {
            return Err(invalid("sim_poll_interval_ms", "must be at least 10"));
        }
        for (setting, weights) in [
            ("sim_mix_*", self.kind_weights().to_vec()),
            ("sim_priority_*", self.priority_weights().to_vec()),
        ] {
            if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
                || weights.iter().sum::<f64>() <= 0.0
            {
                return Err(invalid(
                    setting,
                    "weights must be non-negative and not all zero",
                ));
            }
        }
        for (setting, probability) in [
            (
                "sim_frozen_section_probability",
                self.sim_frozen_section_probability,
            ),
            ("sim_duplicate_probability", self.sim_duplicate_probability),
            ("sim_return_probability", self.sim_return_probability),
            ("sim_critical_probability", self.sim_critical_probability),
            (
                "sim_called_away_probability",
                self.sim_called_away_probability,
            ),
            ("sim_revision_probability", self.sim_revision_probability),
            (
                "sim_discordance_probability",
                self.sim_discordance_probability,
            ),
            (
                "sim_missed_critical_probability",
                self.sim_missed_critical_probability,
            ),
        ] {
            if !(0.0..=1.0).contains(&probability) {
                return Err(invalid(setting, "must be between 0 and 1"));
            }
        }
        for (setting, seconds) in [
            ("sim_critical_ack_seconds", self.sim_critical_ack_seconds),
            (
                "sim_missed_critical_seconds",
                self.sim_missed_critical_seconds,
            ),
        ] {
            if !(seconds.is_finite() && (0.0..=86_400.0).contains(&seconds)) {
                return Err(invalid(setting, "must be 0 to 86400 seconds"));
            }
        }
        if !self.sim_origin_amqp_url.expose_secret().contains("{user}") {
            return Err(invalid(
                "sim_origin_amqp_url",
                "must contain {user}: each origin connects as its own broker user",
            ));
        }
        bus::BrokerAddresses::parse(&self.origin_amqp_url("user")).map_err(|reason| {
            ConfigError::Invalid {
                setting: "sim_origin_amqp_url",
                reason,
            }
        })?;
        let desk = &self.sim_review_desk_url;
        if !(desk.starts_with("http://") || desk.starts_with("https://")) {
            return Err(invalid("sim_review_desk_url", "must be an http(s) URL"));
        }
        if !self.data_dir.is_dir() {
            return Err(invalid(
                "data_dir",
                &format!("{} is not a directory", self.data_dir.display()),
            ));
        }
        if let Err(error) = crate::Province::load(&self.sim_registry) {
            return Err(invalid("sim_registry", &format!("{error:#}")));
        }
        Ok(())
    }

    pub fn log_format(&self) -> Result<telemetry::LogFormat, ConfigError> {
        telemetry::LogFormat::parse(&self.log_format).ok_or(ConfigError::Invalid {
            setting: "log_format",
            reason: "json or pretty".into(),
        })
    }

    /// The broker URL(s) an origin connects with.
    pub fn origin_amqp_url(&self, broker_user: &str) -> String {
        self.sim_origin_amqp_url
            .expose_secret()
            .replace("{user}", broker_user)
    }

    /// Weights of ECG, imaging, pathology.
    pub fn kind_weights(&self) -> [f64; 3] {
        [
            self.sim_mix_ecg,
            self.sim_mix_imaging,
            self.sim_mix_pathology,
        ]
    }

    /// Weights of stat, asap, urgent, routine.
    pub fn priority_weights(&self) -> [f64; 4] {
        [
            self.sim_priority_stat,
            self.sim_priority_asap,
            self.sim_priority_urgent,
            self.sim_priority_routine,
        ]
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.sim_poll_interval_ms)
    }
}

/// Serializes a secret only so figment can use the default as its lowest layer; `Debug` still
/// prints it redacted.
fn expose<S: serde::Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use figment::Figment;
    use figment::providers::{Format, Serialized, Toml};

    fn with_toml(toml: &str) -> Result<Config, Box<figment::Error>> {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(toml))
            .extract()
            .map_err(Box::new)
    }

    fn workspace_config() -> Config {
        // Tests run in the crate's folder; the registry lives at the workspace root.
        Config {
            sim_registry: PathBuf::from("../../registry/hunan.toml"),
            ..Config::default()
        }
    }

    #[test]
    fn defaults_round_trip_through_figment_and_keep_an_unbounded_total() {
        let config = with_toml("").unwrap();
        assert_eq!(config.sim_total, None);
        assert_eq!(config.sim_rate_per_second, 5.0);
        assert_eq!(
            config.origin_amqp_url("hn-hh-001"),
            "amqp://hn-hh-001:telerelay-demo@127.0.0.1:5672/%2f"
        );
    }

    #[test]
    fn whole_numbers_are_accepted_for_rates_and_totals_can_be_set() {
        let config = with_toml("sim_rate_per_second = 20\nsim_total = 100").unwrap();
        assert_eq!(
            (config.sim_rate_per_second, config.sim_total),
            (20.0, Some(100))
        );
    }

    #[test]
    fn the_default_configuration_is_valid_from_the_workspace() {
        workspace_config().validate().unwrap();
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let refused = |config: Config| match config.validate() {
            Err(ConfigError::Invalid { setting, .. }) => setting,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(
            refused(Config {
                sim_rate_per_second: 0.0,
                ..workspace_config()
            }),
            "sim_rate_per_second"
        );
        assert_eq!(
            refused(Config {
                sim_time_scale: -1.0,
                ..workspace_config()
            }),
            "sim_time_scale"
        );
        assert_eq!(
            refused(Config {
                data_dir: "/nonexistent".into(),
                ..workspace_config()
            }),
            "data_dir"
        );
        assert_eq!(
            refused(Config {
                sim_registry: "/nonexistent.toml".into(),
                ..workspace_config()
            }),
            "sim_registry"
        );
        assert_eq!(
            refused(Config {
                sim_duplicate_probability: 1.5,
                ..workspace_config()
            }),
            "sim_duplicate_probability"
        );
        let no_user = SecretString::from("amqp://fixed:pw@127.0.0.1:5672/%2f");
        assert_eq!(
            refused(Config {
                sim_origin_amqp_url: no_user,
                ..workspace_config()
            }),
            "sim_origin_amqp_url"
        );
        let no_kinds = Config {
            sim_mix_ecg: 0.0,
            sim_mix_imaging: 0.0,
            sim_mix_pathology: 0.0,
            ..workspace_config()
        };
        assert_eq!(refused(no_kinds), "sim_mix_*");
    }

    #[test]
    fn the_origin_url_password_is_not_printed() {
        let shown = format!("{:?}", Config::default());
        assert!(!shown.contains("telerelay-demo"), "{shown}");
    }
}
