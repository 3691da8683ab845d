//! Reviewer bots: one per `[[reviewer]]` of the registry, each a doctor at the review desk who
//! takes the next request, reads it for a realistic (scaled) time, and reports or returns it.
//!
//! A bot knows what the county sent from the label in the request id (see [`crate::ids`]), so
//! it reads like a doctor who has seen the study: the noisy MIT-BIH 105 goes back as
//! unreadable, the PTB infarct and the VT runs are reported critical.

use crate::Simulation;
use crate::catalog::Catalog;
use crate::clinical;
use crate::ids;
use crate::progress::Stats;
use chrono::{DateTime, Utc};
use domain::StudyKind;
use rand::Rng;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

/// A reviewer as the registry lists it.
#[derive(Clone)]
pub struct ReviewerBot {
    pub id: String,
    pub pool: String,
    /// Bearer token for the review desk; never logged.
    pub token: String,
}

impl std::fmt::Debug for ReviewerBot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewerBot")
            .field("id", &self.id)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// A claimed request as `POST /v1/worklist/next` returns it (fields the bot does not use are
/// ignored).
#[derive(Debug, Deserialize)]
struct WorkItem {
    request_uuid: String,
    request_id: String,
    origin: String,
    kind: String,
    priority: String,
    claim_expires_at: Option<DateTime<Utc>>,
}

/// What the reviewer does with a request.
#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    Report {
        findings: String,
        conclusion: String,
        critical_finding: Option<String>,
    },
    Return {
        reason: &'static str,
        detail: &'static str,
    },
}

#[derive(Debug, thiserror::Error)]
enum DeskError {
    #[error("the review desk refused the token (401)")]
    Unauthorized,
    #[error("the claim is no longer ours (409)")]
    Conflict,
    #[error("the review desk is unavailable ({0})")]
    Unavailable(String),
    #[error("unexpected answer {0} from the review desk")]
    Unexpected(StatusCode),
}

/// Attempts at delivering one finished report before giving it up.
const REPORT_ATTEMPTS: u32 = 6;

/// Runs one bot until shutdown. A bot that is reading when shutdown comes signs off its
/// report at once rather than abandoning it.
pub(crate) async fn run(sim: &Simulation, client: &reqwest::Client, bot: &ReviewerBot) {
    let mut failures: u32 = 0;
    while !sim.shutdown.is_cancelled() {
        let pause = match next(sim, client, bot).await {
            Ok(Some(item)) => {
                failures = 0;
                work(sim, client, bot, item).await;
                continue;
            }
            Ok(None) => sim.config.poll_interval(),
            Err(DeskError::Unauthorized) => {
                Stats::add(&sim.stats.desk_errors);
                tracing::warn!(
                    reviewer = bot.id,
                    "token refused; is the registry loaded? retrying in 30 s"
                );
                Duration::from_secs(30)
            }
            Err(error) => {
                failures += 1;
                Stats::add(&sim.stats.desk_errors);
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(reviewer = bot.id, error = %error, failures, "cannot get work; backing off");
                }
                bus::reconnect_delay(failures).max(sim.config.poll_interval())
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = sim.shutdown.cancelled() => {}
        }
    }
}

async fn next(
    sim: &Simulation,
    client: &reqwest::Client,
    bot: &ReviewerBot,
) -> Result<Option<WorkItem>, DeskError> {
    let response = client
        .post(format!("{}/v1/worklist/next", desk(sim)))
        .bearer_auth(&bot.token)
        .send()
        .await
        .map_err(|error| DeskError::Unavailable(cause_chain(&error)))?;
    match response.status() {
        StatusCode::OK => response
            .json()
            .await
            .map(Some)
            .map_err(|error| DeskError::Unavailable(cause_chain(&error))),
        StatusCode::NO_CONTENT => Ok(None),
        status => Err(status_error(status)),
    }
}

async fn work(sim: &Simulation, client: &reqwest::Client, bot: &ReviewerBot, item: WorkItem) {
    let Some(kind) = StudyKind::parse(&item.kind) else {
        tracing::warn!(
            reviewer = bot.id,
            kind = item.kind,
            "unknown kind on the worklist; leaving the claim to expire"
        );
        return;
    };
    let label = ids::label_of(&item.request_id, &item.origin, kind).unwrap_or_default();
    let decision = decide(
        &sim.catalog,
        kind,
        label,
        sim.config.sim_return_probability,
        sim.config.sim_critical_probability,
    );
    let mut reading = reading_time(
        kind,
        &item.priority,
        label == "frozen",
        sim.config.sim_time_scale,
    );
    if matches!(decision, Decision::Return { .. }) {
        // Seeing that a study cannot be read takes a fraction of reading it.
        reading = reading.mul_f64(0.3);
    }
    if let Some(expires) = item.claim_expires_at {
        // Report before the lease runs out, as a doctor watching the clock would.
        let left = (expires - Utc::now()).to_std().unwrap_or_default();
        reading = reading.min(left.saturating_sub(Duration::from_secs(5)));
    }
    tracing::debug!(
        reviewer = bot.id,
        request_id = item.request_id,
        seconds = reading.as_secs_f64(),
        "reading"
    );
    tokio::select! {
        _ = tokio::time::sleep(reading) => {}
        _ = sim.shutdown.cancelled() => {}
    }
    let (path, body) = match &decision {
        Decision::Report {
            findings,
            conclusion,
            critical_finding,
        } => (
            "report",
            json!({
                "findings": findings,
                "conclusion": conclusion,
                "critical": critical_finding.is_some(),
                "critical_finding": critical_finding,
            }),
        ),
        Decision::Return { reason, detail } => {
            ("return", json!({ "reason": reason, "detail": detail }))
        }
    };
    let url = format!("{}/v1/requests/{}/{path}", desk(sim), item.request_uuid);
    for attempt in 1..=REPORT_ATTEMPTS {
        match submit(client, bot, &url, &body).await {
            Ok(()) => {
                let counter = if path == "report" {
                    &sim.stats.reports
                } else {
                    &sim.stats.bot_returns
                };
                Stats::add(counter);
                tracing::info!(
                    reviewer = bot.id,
                    request_id = item.request_id,
                    action = path,
                    "submitted"
                );
                return;
            }
            Err(
                error @ (DeskError::Conflict | DeskError::Unauthorized | DeskError::Unexpected(_)),
            ) => {
                Stats::add(&sim.stats.desk_errors);
                tracing::warn!(reviewer = bot.id, request_id = item.request_id, error = %error, action = path, "not accepted");
                return;
            }
            Err(error) => {
                Stats::add(&sim.stats.desk_errors);
                tracing::warn!(reviewer = bot.id, request_id = item.request_id, error = %error, attempt, "retrying");
                tokio::time::sleep(bus::reconnect_delay(attempt)).await;
            }
        }
    }
    tracing::error!(
        reviewer = bot.id,
        request_id = item.request_id,
        "gave up submitting; the claim will expire"
    );
}

async fn submit(
    client: &reqwest::Client,
    bot: &ReviewerBot,
    url: &str,
    body: &serde_json::Value,
) -> Result<(), DeskError> {
    let response = client
        .post(url)
        .bearer_auth(&bot.token)
        .json(body)
        .send()
        .await
        .map_err(|error| DeskError::Unavailable(cause_chain(&error)))?;
    match response.status() {
        status if status.is_success() => Ok(()),
        status => Err(status_error(status)),
    }
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

fn desk(sim: &Simulation) -> &str {
    sim.config.sim_review_desk_url.trim_end_matches('/')
}

/// Realistic reading time for a kind and priority, scaled: ECG 2–6 min, imaging 5–20,
/// pathology 10–40, a frozen section 10–25; STAT work is read twice as fast, ASAP a third faster.
pub(crate) fn reading_time(
    kind: StudyKind,
    priority: &str,
    frozen_section: bool,
    scale: f64,
) -> Duration {
    let (low, high) = match kind {
        StudyKind::Ecg => (2.0, 6.0),
        StudyKind::Imaging => (5.0, 20.0),
        StudyKind::Pathology if frozen_section => (10.0, 25.0),
        StudyKind::Pathology => (10.0, 40.0),
    };
    let urgency = match priority {
        "stat" => 0.5,
        "asap" => 0.75,
        _ => 1.0,
    };
    let minutes = rand::rng().random_range(low..=high) * urgency;
    Duration::from_secs_f64(minutes * 60.0 * scale)
}

/// What a reviewer makes of a request, from what the label says was sent.
pub(crate) fn decide(
    catalog: &Catalog,
    kind: StudyKind,
    label: &str,
    return_probability: f64,
    critical_probability: f64,
) -> Decision {
    let mut rng = rand::rng();
    let record = (kind == StudyKind::Ecg)
        .then(|| catalog.ecg_record(label))
        .flatten();
    let unreadable = record.is_some_and(|record| record.unreadable);
    if unreadable || rng.random_bool(return_probability) {
        let (reason, detail) = clinical::return_reason(kind, unreadable);
        return Decision::Return { reason, detail };
    }
    let frozen = kind == StudyKind::Pathology && label == "frozen";
    let (mut findings, conclusion) = match kind {
        StudyKind::Ecg => ecg_report(
            record
                .map(|record| record.statements.as_slice())
                .unwrap_or_default(),
        ),
        StudyKind::Imaging => {
            let modality = catalog
                .imaging_sources()
                .iter()
                .find(|s| s.label == label)
                .map_or("", |s| s.header.modality.as_str());
            let findings = clinical::imaging_findings(modality);
            (
                pick_random(findings, &mut rng),
                pick_random(clinical::IMAGING_CONCLUSIONS, &mut rng),
            )
        }
        StudyKind::Pathology if frozen => (
            pick_random(clinical::FROZEN_FINDINGS, &mut rng),
            "Frozen section diagnosis as above; final diagnosis on permanent sections.".into(),
        ),
        StudyKind::Pathology => (
            pick_random(clinical::PATHOLOGY_FINDINGS, &mut rng),
            "Diagnosis as above; no further stains required.".into(),
        ),
    };
    let critical_finding = match record.and_then(|record| record.critical_finding) {
        Some(finding) => Some(finding.to_owned()),
        None if rng.random_bool(critical_probability) => {
            Some(clinical::unexpected_critical(kind).to_owned())
        }
        None => None,
    };
    let conclusion = match &critical_finding {
        Some(finding) => {
            findings.push_str(&format!(" CRITICAL: {finding}."));
            format!("Critical value: {finding}. Immediate action advised.")
        }
        None => conclusion,
    };
    Decision::Report {
        findings,
        conclusion,
        critical_finding,
    }
}

fn ecg_report(statements: &[&str]) -> (String, String) {
    if statements.is_empty() {
        return (
            "Sinus rhythm. No acute ST-T changes.".into(),
            "No acute abnormality.".into(),
        );
    }
    let mut findings = statements.join(", ");
    findings[..1].make_ascii_uppercase();
    findings.push('.');
    let normal = statements
        .iter()
        .all(|s| matches!(*s, "sinus rhythm" | "normal ECG"));
    let conclusion = match statements
        .iter()
        .find(|s| !matches!(**s, "sinus rhythm" | "normal ECG"))
    {
        Some(main) if !normal => format!("Abnormal ECG: {main}."),
        _ => "Normal ECG.".into(),
    };
    (findings, conclusion)
}

fn pick_random(items: &[&str], rng: &mut impl Rng) -> String {
    items[rng.random_range(0..items.len())].to_owned()
}

#[cfg(test)]
#[path = "reviewer_bot_tests.rs"]
mod tests;
