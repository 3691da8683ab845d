//! The critical-value register: per notification, who was told what and when, how often they
//! were reminded, who acknowledged, with what read-back, and how long it took.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// Which notifications to list.
#[derive(Clone, Debug, Default)]
pub struct RegisterQuery {
    /// Only those not yet acknowledged.
    pub open_only: bool,
    /// Notified at or after this moment.
    pub from: Option<DateTime<Utc>>,
    /// Notified before this moment.
    pub to: Option<DateTime<Utc>>,
}

/// One notification in the register.
#[derive(Clone, Debug, PartialEq)]
pub struct RegisterLine {
    pub notification_id: Uuid,
    pub origin: String,
    pub request_id: String,
    pub request_uuid: Uuid,
    pub report_version: i32,
    pub finding: String,
    pub reviewer_id: String,
    pub reviewer_hospital: String,
    pub notified_at: DateTime<Utc>,
    pub acknowledge_by: DateTime<Utc>,
    pub reminders_sent: i32,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub clinician_id: Option<String>,
    pub clinician_name: Option<String>,
    pub read_back: Option<String>,
    pub read_back_matches: Option<bool>,
    /// From notification to acknowledgement; `None` while open.
    pub minutes_to_acknowledge: Option<f64>,
    /// Minutes since notification, by the database clock (an open one's age).
    pub age_minutes: f64,
}

impl RegisterLine {
    pub fn is_open(&self) -> bool {
        self.acknowledged_at.is_none()
    }
}

/// The register, oldest notification first.
pub async fn register(db: &PgPool, query: &RegisterQuery) -> sqlx::Result<Vec<RegisterLine>> {
    sqlx::query_as!(
        RegisterLine,
        r#"select id as notification_id, origin_hospital as origin, request_id, request_uuid,
                  report_version, finding, reviewer_id, reviewer_hospital, notified_at, acknowledge_by,
                  reminders_sent, acknowledged_at, clinician_id, clinician_name, read_back,
                  read_back_matches,
                  (extract(epoch from acknowledged_at - notified_at) / 60)::float8 as minutes_to_acknowledge,
                  (extract(epoch from clock_timestamp() - notified_at) / 60)::float8 as "age_minutes!"
           from critical_notifications
           where (not $1 or acknowledged_at is null)
             and ($2::timestamptz is null or notified_at >= $2)
             and ($3::timestamptz is null or notified_at < $3)
           order by notified_at, id"#,
        query.open_only,
        query.from,
        query.to,
    )
    .fetch_all(db)
    .await
}
