//! Signing a report version: the one place where a version is recorded and, in the same
//! transaction, its `ReviewResult` for the origin and its lifecycle event are queued. The final
//! report (version 1), an amendment and an addendum all pass through [`sign`], so every version
//! flows to the origin the same way and is kept.

use crate::error::ApiError;
use crate::{Desk, second_reads};
use bus::messages;
use chrono::{DateTime, Utc};
use contract::v1;
use domain::{LifecycleFact, RequestState};
use serde::Deserialize;
use sqlx::PgConnection;
use store::registry::Reviewer;
use uuid::Uuid;

const MAX_REPORT_TEXT: usize = 20_000;

/// What the reviewer wrote, validated by [`ReportText::validate`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportText {
    pub findings: String,
    pub conclusion: String,
    #[serde(default)]
    pub critical: bool,
    pub critical_finding: Option<String>,
}

impl ReportText {
    /// Checks the text; returns the critical finding, trimmed, when one was named.
    pub fn validate(&self) -> Result<Option<&str>, ApiError> {
        if self.findings.trim().is_empty() || self.conclusion.trim().is_empty() {
            return Err(ApiError::Invalid(
                "findings and conclusion are required".into(),
            ));
        }
        if self.findings.len() > MAX_REPORT_TEXT || self.conclusion.len() > MAX_REPORT_TEXT {
            return Err(ApiError::Invalid(format!(
                "findings and conclusion are limited to {MAX_REPORT_TEXT} bytes"
            )));
        }
        let critical_finding = self
            .critical_finding
            .as_deref()
            .map(str::trim)
            .filter(|text| !text.is_empty());
        if self.critical && critical_finding.is_none() {
            return Err(ApiError::Invalid(
                "a critical report must name the critical finding".into(),
            ));
        }
        Ok(critical_finding)
    }
}

/// A version after the final report: what it does to the report it revises, and why.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Revision<'a> {
    pub kind: RevisionKind,
    /// The version it amends or adds to (the latest one).
    pub supersedes: i32,
    /// The reviewer's reason; goes to the origin, never into logs or events.
    pub reason: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RevisionKind {
    /// Replaces what the report said.
    Amended,
    /// Keeps the report and adds to it.
    Addendum,
}

impl RevisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionKind::Amended => "amended",
            RevisionKind::Addendum => "addendum",
        }
    }
}

/// The request a version is signed for.
#[derive(Clone, Debug)]
pub(crate) struct Subject {
    pub id: Uuid,
    pub origin: String,
    pub request_id: String,
    pub correlation_id: String,
    pub pool: Option<String>,
}

/// A signed version.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Signed {
    pub version: i32,
}

/// Records the version and queues, in the caller's transaction, the result for the origin and
/// the `reported` (final) or `amended` (revision) event; for a final report, opens a second read
/// when the request is selected for one. The caller commits and wakes the outbox relay.
pub(crate) async fn sign(
    desk: &Desk,
    tx: &mut PgConnection,
    subject: &Subject,
    reviewer: &Reviewer,
    text: &ReportText,
    critical_finding: Option<&str>,
    revision: Option<Revision<'_>>,
) -> Result<Signed, ApiError> {
    let (version, reported_at) = match revision {
        None => {
            store::review::record_report(
                tx,
                &store::review::NewResult {
                    request: subject.id,
                    status: "final",
                    reviewer: &reviewer.id,
                    findings: &text.findings,
                    conclusion: &text.conclusion,
                    critical: text.critical,
                    critical_finding,
                },
            )
            .await?
        }
        Some(revision) => {
            store::revisions::record_revision(
                tx,
                &store::revisions::NewRevision {
                    request: subject.id,
                    status: revision.kind.as_str(),
                    reviewer: &reviewer.id,
                    findings: &text.findings,
                    conclusion: &text.conclusion,
                    critical: text.critical,
                    critical_finding,
                    supersedes: revision.supersedes,
                    reason: revision.reason,
                },
            )
            .await?
        }
    };
    let names = &desk.topology.names;
    let origin = domain::HospitalCode::parse(&subject.origin)
        .map_err(|why| ApiError::Internal(anyhow::anyhow!("stored origin: {why}")))?;
    let (status, supersedes_version, revision_reason) = match revision {
        None => (v1::ReportStatus::Final, 0, String::new()),
        Some(revision) => (
            match revision.kind {
                RevisionKind::Amended => v1::ReportStatus::Amended,
                RevisionKind::Addendum => v1::ReportStatus::Addendum,
            },
            u32::try_from(revision.supersedes).unwrap_or_default(),
            revision.reason.to_owned(),
        ),
    };
    let result = v1::OriginNotice {
        notice: Some(v1::origin_notice::Notice::Result(v1::ReviewResult {
            request_id: subject.request_id.clone(),
            origin_hospital: subject.origin.clone(),
            report_version: u32::try_from(version).unwrap_or_default(),
            status: status as i32,
            reviewer_id: reviewer.id.clone(),
            reviewer_hospital: reviewer.hospital.clone(),
            findings: text.findings.clone(),
            conclusion: text.conclusion.clone(),
            critical: text.critical,
            critical_finding: critical_finding.unwrap_or_default().to_owned(),
            reported_at: Some(domain::wire::timestamp(reported_at)),
            supersedes_version,
            revision_reason,
        })),
    };
    // The event says what happened in codes and numbers; the reviewer's own words (findings,
    // reason) go only to the origin, because they may describe the patient.
    let critical_mark = if text.critical { ", CRITICAL" } else { "" };
    let (state, reason) = match revision {
        None => (
            RequestState::Reported,
            format!("report version {version}{critical_mark}"),
        ),
        Some(revision) => (
            RequestState::Amended,
            format!(
                "report version {version} ({}) revises version {}{critical_mark}",
                revision.kind.as_str(),
                revision.supersedes
            ),
        ),
    };
    let mut outgoing = vec![
        messages::origin_notice(
            names,
            &origin,
            &result,
            // Deliveries are per request and version; so is the message id.
            format!("result:{}:{version}", subject.id),
            subject.correlation_id.clone(),
        ),
        messages::lifecycle_event(names, &fact(subject, reviewer, state, reason, reported_at)),
    ];
    // Only a final report is sampled for a second read; revisions are the reporter's own.
    let second_read = match revision {
        None => second_reads::selection(&desk.config, subject.id, text.critical),
        Some(_) => None,
    };
    if let Some(because) = second_read {
        let opened = store::second_reads::open(
            tx,
            subject.id,
            version,
            &reviewer.id,
            reviewer.pool.as_str(),
            because,
        )
        .await?;
        if opened {
            outgoing.push(messages::lifecycle_event(
                names,
                &LifecycleFact {
                    actor: "service:review-desk".into(),
                    ..fact(
                        subject,
                        reviewer,
                        RequestState::SecondReadRequested,
                        format!("second read of report version {version} opened ({because})"),
                        reported_at,
                    )
                },
            ));
        }
    }
    store::outbox::enqueue(tx, &outgoing).await?;
    // 危急值: a critical version of any kind (final, amended, addendum) also goes to the origin's
    // own critical lane, in this same transaction.
    store::critical::notify_if_critical(tx, names, subject.id, version, desk.config.critical_ack())
        .await?;
    tracing::info!(request_uuid = %subject.id, correlation_id = subject.correlation_id, reviewer = reviewer.id,
        version, status = ?status, critical = text.critical, "report version signed");
    Ok(Signed { version })
}

pub(crate) fn fact(
    subject: &Subject,
    reviewer: &Reviewer,
    state: RequestState,
    reason: String,
    at: DateTime<Utc>,
) -> LifecycleFact {
    LifecycleFact {
        event_id: Uuid::new_v4(),
        request_uuid: Some(subject.id),
        request_id: subject.request_id.clone(),
        origin: subject.origin.clone(),
        state,
        actor: format!("reviewer:{}", reviewer.id),
        reason,
        pool: subject.pool.clone(),
        correlation_id: subject.correlation_id.clone(),
        occurred_at: at,
    }
}
