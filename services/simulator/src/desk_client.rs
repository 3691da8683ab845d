//! The review desk's HTTP API as a reviewer's workstation calls it: the worklist, the lease
//! (heartbeat, draft), reports, returns, revisions and second reads. Tokens are never logged.

use crate::reviewer_bot::ReviewerBot;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub(crate) enum DeskError {
    #[error("the review desk refused the token (401)")]
    Unauthorized,
    #[error("the claim is no longer ours (409)")]
    Conflict,
    #[error("the review desk is unavailable ({0})")]
    Unavailable(String),
    #[error("unexpected answer {0} from the review desk")]
    Unexpected(StatusCode),
}

/// A draft report kept with the lease (what the previous reader had written); the bot only
/// needs to know whose it was.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Draft {
    #[serde(default)]
    pub saved_by: Option<String>,
}

/// A claimed request as `POST /v1/worklist/next` returns it (fields the bot does not use are
/// ignored).
#[derive(Debug, Deserialize)]
pub(crate) struct WorkItem {
    pub request_uuid: String,
    pub request_id: String,
    pub origin: String,
    pub kind: String,
    pub priority: String,
    pub claim_expires_at: Option<DateTime<Utc>>,
    /// Present when a previous reader's lease ran out or was broken: continue from it.
    #[serde(default)]
    pub draft: Option<Draft>,
}

/// The first report a second reader is asked to check.
#[derive(Debug, Deserialize)]
pub(crate) struct FirstReport {
    pub version: i64,
    pub critical: bool,
}

/// A second read as `POST /v1/second-reads/next` returns it.
#[derive(Debug, Deserialize)]
pub(crate) struct SecondReadItem {
    pub second_read_id: serde_json::Value,
    pub request: SecondReadRequest,
    pub first_report: FirstReport,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SecondReadRequest {
    pub request_id: String,
    pub kind: String,
    pub priority: String,
}

#[derive(Debug, Deserialize)]
struct Lease {
    lease_expires_at: DateTime<Utc>,
}

/// One reviewer's session with the desk.
pub(crate) struct DeskClient<'a> {
    pub http: &'a reqwest::Client,
    pub base: &'a str,
    pub bot: &'a ReviewerBot,
    /// The `traceparent` the desk returned with the request being read, sent back on every
    /// call about it, as a workstation that joins the relay's traces does. A bot reads one
    /// thing at a time, so one slot is enough.
    pub traceparent: std::sync::Mutex<Option<String>>,
}

impl DeskClient<'_> {
    pub async fn next(&self) -> Result<Option<WorkItem>, DeskError> {
        // A claim call is about no request yet.
        self.remember_trace(None);
        let (item, traceparent) = self.take("/v1/worklist/next").await?;
        self.remember_trace(traceparent);
        Ok(item)
    }

    pub async fn next_second_read(&self) -> Result<Option<SecondReadItem>, DeskError> {
        // A claim call is about no request yet.
        self.remember_trace(None);
        let (item, traceparent) = self.take("/v1/second-reads/next").await?;
        self.remember_trace(traceparent);
        Ok(item)
    }

    fn remember_trace(&self, traceparent: Option<String>) {
        if let Ok(mut slot) = self.traceparent.lock() {
            *slot = traceparent;
        }
    }

    /// Renews the lease; returns when it now runs out.
    pub async fn heartbeat(&self, request_uuid: &str) -> Result<DateTime<Utc>, DeskError> {
        let url = format!("{}/v1/requests/{request_uuid}/heartbeat", self.base);
        let response = self.send(self.http.post(url)).await?;
        Ok(read_json::<Lease>(response).await?.lease_expires_at)
    }

    /// Saves the draft with the lease (which renews it).
    pub async fn save_draft(
        &self,
        request_uuid: &str,
        findings: &str,
        conclusion: &str,
    ) -> Result<DateTime<Utc>, DeskError> {
        let url = format!("{}/v1/requests/{request_uuid}/draft", self.base);
        let body = serde_json::json!({ "findings": findings, "conclusion": conclusion });
        let response = self.send(self.http.put(url).json(&body)).await?;
        Ok(read_json::<Lease>(response).await?.lease_expires_at)
    }

    /// POSTs a JSON body to `path` (a report, return, revision or verdict).
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Result<(), DeskError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.post(url).json(body)).await.map(drop)
    }

    /// What the desk handed out, with the `traceparent` it came with.
    async fn take<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<(Option<T>, Option<String>), DeskError> {
        let url = format!("{}{path}", self.base);
        let response = self.send(self.http.post(url)).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok((None, None));
        }
        let traceparent = response
            .headers()
            .get(bus::trace::TRACEPARENT)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Ok((Some(read_json(response).await?), traceparent))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, DeskError> {
        let traceparent = self.traceparent.lock().ok().and_then(|slot| slot.clone());
        let request = match traceparent {
            Some(value) => request.header(bus::trace::TRACEPARENT, value),
            None => request,
        };
        let response = request
            .bearer_auth(&self.bot.token)
            .send()
            .await
            .map_err(|error| DeskError::Unavailable(cause_chain(&error)))?;
        match response.status() {
            status if status.is_success() => Ok(response),
            status => Err(status_error(status)),
        }
    }
}

async fn read_json<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, DeskError> {
    response
        .json()
        .await
        .map_err(|error| DeskError::Unavailable(cause_chain(&error)))
}

fn status_error(status: StatusCode) -> DeskError {
    match status {
        StatusCode::UNAUTHORIZED => DeskError::Unauthorized,
        StatusCode::CONFLICT => DeskError::Conflict,
        status if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
            DeskError::Unavailable(status.to_string())
        }
        status => DeskError::Unexpected(status),
    }
}

/// An error with its causes ("error sending request: ... Connection refused"), which
/// reqwest's own message leaves out.
fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
