//! Reviewer bots: one per `[[reviewer]]` of the registry, each a doctor at the review desk who
//! takes the next request, reads it for a realistic (scaled) time, and reports or returns it.
//!
//! A bot knows what the county sent from the label in the request id (see [`crate::ids`]), so
//! it reads like a doctor who has seen the study: the noisy MIT-BIH 105 goes back as
//! unreadable, the PTB infarct and the VT runs are reported critical.

use crate::Simulation;
use crate::catalog::Catalog;
use crate::clinical;
use crate::desk_client::{DeskClient, DeskError, SecondReadItem, WorkItem};
use crate::ids;
use crate::progress::Stats;
use crate::second_reader;
use chrono::Utc;
use domain::StudyKind;
use rand::Rng;
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

/// Attempts at delivering one finished report before giving it up.
const REPORT_ATTEMPTS: u32 = 6;

/// Runs one bot until shutdown. A bot that is reading when shutdown comes signs off its
/// report at once rather than abandoning it. With nothing on its worklist, it takes a
/// colleague's report to second-read.
pub(crate) async fn run(sim: &Simulation, client: &reqwest::Client, bot: &ReviewerBot) {
    let desk = DeskClient {
        http: client,
        base: sim.config.sim_review_desk_url.trim_end_matches('/'),
        bot,
        traceparent: std::sync::Mutex::new(None),
    };
    let mut failures: u32 = 0;
    while !sim.shutdown.is_cancelled() {
        let taken = match desk.next().await {
            Ok(Some(item)) => Ok(Some(Work::Read(item))),
            Ok(None) => desk
                .next_second_read()
                .await
                .map(|item| item.map(Work::SecondRead)),
            Err(error) => Err(error),
        };
        let pause = match taken {
            Ok(Some(work)) => {
                failures = 0;
                match work {
                    Work::Read(item) => read(sim, &desk, item).await,
                    Work::SecondRead(item) => second_reader::read(sim, &desk, item).await,
                }
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

enum Work {
    Read(WorkItem),
    SecondRead(SecondReadItem),
}

/// How a stretch of reading under a lease ended.
enum Reading {
    Finished,
    /// The lease was released or taken over (409 on a heartbeat): the work is someone else's.
    LeaseLost,
    /// Called away mid-read: the draft stays with the lease, which runs out, and the request
    /// goes back to the pool for a colleague to finish.
    CalledAway,
}

async fn read(sim: &Simulation, desk: &DeskClient<'_>, item: WorkItem) {
    let bot = desk.bot;
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
    if let Some(draft) = &item.draft {
        // A colleague's draft is waiting: finishing it takes less than starting over.
        Stats::add(&sim.stats.drafts_continued);
        tracing::info!(
            reviewer = bot.id,
            request_id = item.request_id,
            draft_by = draft.saved_by.as_deref().unwrap_or("unknown"),
            "continuing a colleague's draft"
        );
        reading = reading.mul_f64(0.4);
    }
    tracing::debug!(
        reviewer = bot.id,
        request_id = item.request_id,
        seconds = reading.as_secs_f64(),
        "reading"
    );
    let called_away = rand::rng().random_bool(sim.config.sim_called_away_probability);
    match read_under_lease(sim, desk, &item, reading, &decision, called_away).await {
        Reading::Finished => {}
        Reading::LeaseLost => {
            Stats::add(&sim.stats.leases_lost);
            tracing::warn!(
                reviewer = bot.id,
                request_id = item.request_id,
                "lease lost while reading"
            );
            return;
        }
        Reading::CalledAway => {
            Stats::add(&sim.stats.called_away);
            tracing::info!(
                reviewer = bot.id,
                request_id = item.request_id,
                "called away mid-read; the draft stays with the lease"
            );
            return;
        }
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
    let url = format!("/v1/requests/{}/{path}", item.request_uuid);
    if !submit(sim, desk, &item.request_id, path, &url, &body).await {
        return;
    }
    let counter = if path == "report" {
        &sim.stats.reports
    } else {
        &sim.stats.bot_returns
    };
    Stats::add(counter);
    if path == "report" && rand::rng().random_bool(sim.config.sim_revision_probability) {
        revise(sim, desk, &item, kind).await;
    }
}

/// Reads for `reading`, in stretches of a third of the lease: between stretches the lease is
/// renewed, and halfway through the draft is saved with it, as a workstation does.
async fn read_under_lease(
    sim: &Simulation,
    desk: &DeskClient<'_>,
    item: &WorkItem,
    reading: Duration,
    decision: &Decision,
    called_away: bool,
) -> Reading {
    let lease = item
        .claim_expires_at
        .and_then(|expires| (expires - Utc::now()).to_std().ok())
        .unwrap_or(Duration::from_secs(60));
    let stretch = (lease / 3).max(Duration::from_millis(200));
    let mut left = reading;
    let mut draft_saved = false;
    while !left.is_zero() {
        let this = stretch.min(left);
        tokio::select! {
            _ = tokio::time::sleep(this) => {}
            // Shutdown: sign off at once rather than abandon the read.
            _ = sim.shutdown.cancelled() => return Reading::Finished,
        }
        left = left.saturating_sub(this);
        if left.is_zero() {
            break;
        }
        let renewed = if !draft_saved && left <= reading / 2 {
            draft_saved = true;
            let (findings, conclusion) = match decision {
                Decision::Report {
                    findings,
                    conclusion,
                    ..
                } => (findings.as_str(), format!("Preliminary: {conclusion}")),
                Decision::Return { detail, .. } => (*detail, "Preliminary: may return".into()),
            };
            let saved = desk
                .save_draft(&item.request_uuid, findings, &conclusion)
                .await;
            if saved.is_ok() {
                Stats::add(&sim.stats.drafts_saved);
            }
            if called_away {
                return Reading::CalledAway;
            }
            saved
        } else {
            desk.heartbeat(&item.request_uuid).await
        };
        match renewed {
            Ok(_) => Stats::add(&sim.stats.heartbeats),
            Err(DeskError::Conflict) => return Reading::LeaseLost,
            // The desk is briefly away: keep reading; the next renewal may get through.
            Err(error) => {
                tracing::debug!(reviewer = desk.bot.id, error = %error, "lease renewal failed")
            }
        }
    }
    Reading::Finished
}

/// A later thought on a signed report: mostly an addendum (a comparison, a recommendation),
/// now and then an amendment that corrects it.
async fn revise(sim: &Simulation, desk: &DeskClient<'_>, item: &WorkItem, kind: StudyKind) {
    let pause = reading_time(kind, "routine", false, sim.config.sim_time_scale).mul_f64(0.5);
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = sim.shutdown.cancelled() => return,
    }
    let body = if rand::rng().random_bool(2.0 / 3.0) {
        json!({
            "kind": "addendum",
            "findings": clinical::addendum_text(kind),
            "conclusion": "Addendum as above; the signed conclusion stands.",
            "reason": "comparison with prior study received after signing",
        })
    } else {
        json!({
            "kind": "amended",
            "findings": clinical::amendment_text(kind),
            "conclusion": "Amended conclusion as above.",
            "reason": "measurement corrected on review",
        })
    };
    let url = format!("/v1/requests/{}/revisions", item.request_uuid);
    if submit(sim, desk, &item.request_id, "revision", &url, &body).await {
        Stats::add(&sim.stats.revisions);
    }
}

/// Posts a finished piece of work, retrying while the desk is unavailable. Returns whether the
/// desk took it.
pub(crate) async fn submit(
    sim: &Simulation,
    desk: &DeskClient<'_>,
    request_id: &str,
    action: &str,
    path: &str,
    body: &serde_json::Value,
) -> bool {
    let bot = desk.bot;
    for attempt in 1..=REPORT_ATTEMPTS {
        match desk.post(path, body).await {
            Ok(()) => {
                tracing::info!(reviewer = bot.id, request_id, action, "submitted");
                return true;
            }
            Err(
                error @ (DeskError::Conflict | DeskError::Unauthorized | DeskError::Unexpected(_)),
            ) => {
                Stats::add(&sim.stats.desk_errors);
                tracing::warn!(reviewer = bot.id, request_id, error = %error, action, "not accepted");
                return false;
            }
            Err(error) => {
                Stats::add(&sim.stats.desk_errors);
                tracing::warn!(reviewer = bot.id, request_id, error = %error, attempt, "retrying");
                tokio::time::sleep(bus::reconnect_delay(attempt)).await;
            }
        }
    }
    tracing::error!(
        reviewer = bot.id,
        request_id,
        action,
        "gave up submitting; the claim will expire"
    );
    false
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
