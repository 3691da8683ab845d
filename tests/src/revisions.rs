//! Harness for the revisions tests (resubmissions, amendments and addenda, second reads): a
//! review desk of the test's own configuration beside the relay's, and the desk calls.
//!
//! The extra desk shares the relay's database and broker namespace (its outbox relay and the
//! relay desk's take rows with `skip locked`, so they never publish one row twice); what differs
//! is its second-read settings, which the relay's own desk turns off (so that the other tests'
//! exact histories hold).

use crate::{DEADLINE, TestRelay, wait_until};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A review desk with its own second-read settings.
pub struct ConfiguredDesk {
    pub url: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl ConfiguredDesk {
    /// Starts a desk on `relay`'s database and namespace with `second_read_share` and
    /// `second_read_all_critical` as given; ready when this returns.
    pub async fn start(relay: &TestRelay, share: f64, all_critical: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let config = review_desk::Config {
            service: relay.service_config(),
            second_read_share: share,
            second_read_all_critical: all_critical,
            ..Default::default()
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(review_desk::run(
            config,
            relay.db.clone(),
            listener,
            shutdown.clone(),
        ));
        let desk = Self {
            url,
            http: reqwest::Client::new(),
            shutdown,
            task,
        };
        let ready = format!("{}/ready", desk.url);
        wait_until("the configured review desk to be ready", || async {
            matches!(desk.http.get(&ready).send().await, Ok(answer) if answer.status().is_success())
        })
        .await;
        desk
    }

    /// Stops the desk (it drains its outbox) and checks that it ended cleanly. Call before
    /// `relay.stop()`, which deletes the namespace.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let ended = tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the configured desk drains in time");
        ended
            .expect("the configured desk did not panic")
            .expect("the configured desk ended cleanly");
    }

    /// `POST <path>` with `body` as the reviewer with `token`: the status and the JSON answer
    /// (`Null` for an empty one).
    pub async fn post(
        &self,
        token: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let answer = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or_default())
    }

    /// Signs the final report of `request_uuid` (held by the reviewer with `token`).
    pub async fn report(&self, token: &str, request_uuid: &str, critical: bool) -> u16 {
        let path = format!("/v1/requests/{request_uuid}/report");
        let (status, body) = self.post(token, &path, crate::report_body(critical)).await;
        assert!(
            matches!(status, 201 | 409 | 404),
            "report answered {status}: {body}"
        );
        status
    }

    /// `POST /v1/requests/{id}/revisions`.
    pub async fn revise(
        &self,
        token: &str,
        request_uuid: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.post(
            token,
            &format!("/v1/requests/{request_uuid}/revisions"),
            body,
        )
        .await
    }

    /// `POST /v1/second-reads/next`.
    pub async fn next_second_read(&self, token: &str) -> (u16, serde_json::Value) {
        self.post(token, "/v1/second-reads/next", serde_json::json!({}))
            .await
    }

    /// `POST /v1/second-reads/{id}/verdict`.
    pub async fn verdict(
        &self,
        token: &str,
        second_read: i64,
        verdict: &str,
        comment: &str,
    ) -> (u16, serde_json::Value) {
        self.post(
            token,
            &format!("/v1/second-reads/{second_read}/verdict"),
            serde_json::json!({ "verdict": verdict, "comment": comment }),
        )
        .await
    }
}

/// A revision body as a reviewer would send it.
pub fn revision_body(kind: &str, reason: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": kind,
        "findings": "sinus rhythm 72/min; on review, T-wave inversion in V1-V3",
        "conclusion": "T-wave inversion V1-V3, compare with a previous ECG",
        "reason": reason,
        "critical": false
    })
}

/// Lifecycle events of a request in one state: (actor, reason), oldest first.
pub async fn events_in_state(
    relay: &TestRelay,
    request: uuid::Uuid,
    state: domain::RequestState,
) -> Vec<(String, String)> {
    store::audit::history(&relay.db, request)
        .await
        .unwrap()
        .into_iter()
        .filter(|line| line.state == state.as_str())
        .map(|line| (line.actor, line.reason))
        .collect()
}

/// Waits until a request's audit trail holds `count` events in `state`, and returns them.
pub async fn wait_for_events(
    relay: &TestRelay,
    request: uuid::Uuid,
    state: domain::RequestState,
    count: usize,
) -> Vec<(String, String)> {
    crate::wait_for(
        &format!("{count} {state} event(s) of {request}"),
        || async {
            let events = events_in_state(relay, request, state).await;
            (events.len() >= count).then_some(events)
        },
    )
    .await
}
