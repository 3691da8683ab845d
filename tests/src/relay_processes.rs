//! The dispatcher, recorder and review desk of one [`TestRelay`] all as processes, each writing
//! its JSON log lines to a file of its own (see [`service_process`]), for the tests that read
//! what the services log: correlation (one trace id in every service's lines) and the absence
//! of patient data from every line.

use crate::service_process::{Launcher, Service, ServiceProcess};
use crate::wait_for;

/// The three services as processes, the desk's address read from its own log.
pub struct RelayProcesses {
    pub dispatcher: ServiceProcess,
    pub recorder: ServiceProcess,
    pub desk: ServiceProcess,
    /// `http://<address>` of the desk process.
    pub desk_url: String,
}

impl RelayProcesses {
    /// Starts the three with `extra_env` on top of the relay's settings (e.g. `RUST_LOG`).
    pub async fn start(launcher: &Launcher, extra_env: &[(&str, &str)]) -> Self {
        let dispatcher = launcher.start(Service::Dispatcher, extra_env);
        let recorder = launcher.start(Service::Recorder, extra_env);
        let desk = launcher.start(Service::ReviewDesk, extra_env);
        let address = wait_for("the review desk process to listen", || async {
            json_lines(&desk.log_text())
                .into_iter()
                .find(|line| line["fields"]["message"] == "review desk listening")
                .and_then(|line| line["fields"]["address"].as_str().map(str::to_owned))
        })
        .await;
        Self {
            dispatcher,
            recorder,
            desk,
            desk_url: format!("http://{address}"),
        }
    }

    /// Everything each service has logged so far, by service name.
    pub fn logs(&self) -> [(&'static str, String); 3] {
        [
            ("dispatcher", self.dispatcher.log_text()),
            ("recorder", self.recorder.log_text()),
            ("review desk", self.desk.log_text()),
        ]
    }

    /// SIGTERM to each; each must drain and exit cleanly.
    pub async fn stop(self) {
        self.dispatcher.stop().await;
        self.recorder.stop().await;
        self.desk.stop().await;
    }
}

/// The lines of a log that are JSON objects (all of them, for a service logging JSON).
pub fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}
