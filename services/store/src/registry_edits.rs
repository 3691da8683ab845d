//! Operators' edits of the routing truth: one pairing set or removed (lane policies: `lanes`).
//! Each edit is one transaction that makes the change and writes its `registry_changes` row
//! (who, when by the database clock, what, before and after), so no edit exists without its audit
//! and no audit row describes an edit that did not happen. The dispatcher and the review desk read
//! the registry and the lane policies for every request and claim: an edit applies at once.

use domain::StudyKind;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

/// The operator a registry file load is recorded under when no one is named.
pub const REGISTRY_LOAD_OPERATOR: &str = "registry-load";

/// Why an edit was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("the operator must be named (--operator)")]
    NoOperator,
    #[error("unknown hospital {0}: it is not in the registry")]
    UnknownHospital(String),
    #[error("unknown kind {0}: expected ecg, imaging or pathology")]
    UnknownKind(String),
    #[error("unknown priority {0}: expected stat, asap, urgent or routine")]
    UnknownPriority(String),
    #[error("unknown reviewer pool {0}: it is not in the registry")]
    UnknownPool(String),
    #[error("pool {pool} reads {pool_kind}, not {kind}")]
    WrongKind {
        pool: String,
        pool_kind: String,
        kind: String,
    },
    #[error("pool {0} is named more than once (as primary or backup)")]
    RepeatedPool(String),
    #[error("invalid {what} {value:?}: {rule}")]
    Invalid {
        what: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("no pairing {0}")]
    NoSuchPairing(String),
    #[error("stat is the most urgent lane: it cannot be promoted")]
    StatPromotion,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Who makes an edit, and why.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    pub operator: &'a str,
    pub note: &'a str,
}

impl Change<'_> {
    pub(crate) fn check(&self) -> Result<(), EditError> {
        if self.operator.trim().is_empty() {
            return Err(EditError::NoOperator);
        }
        Ok(())
    }
}

/// The key of a pairing: origin hospital, kind, and optionally department and subspecialty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairingKey {
    pub origin: String,
    pub department: Option<String>,
    pub kind: String,
    pub subspecialty: Option<String>,
}

impl PairingKey {
    fn subspecialty(&self) -> Result<Option<String>, EditError> {
        let Some(subspecialty) = &self.subspecialty else {
            return Ok(None);
        };
        let lower = subspecialty.trim().to_lowercase();
        let valid = !lower.is_empty()
            && lower.len() <= 48
            && lower
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !lower.starts_with(['-', '_']);
        if !valid {
            return Err(EditError::Invalid {
                what: "subspecialty",
                value: subspecialty.clone(),
                rule: "1-48 letters, digits, '-' or '_'",
            });
        }
        Ok(Some(lower))
    }

    fn department(&self) -> Result<Option<String>, EditError> {
        match &self.department {
            Some(department) if department.trim().is_empty() => Err(EditError::Invalid {
                what: "department",
                value: department.clone(),
                rule: "must not be empty (leave it out for the whole hospital)",
            }),
            department => Ok(department.clone()),
        }
    }

    fn subject(&self, department: &Option<String>, subspecialty: &Option<String>) -> Value {
        serde_json::json!({
            "origin": self.origin,
            "department": department,
            "kind": self.kind,
            "subspecialty": subspecialty,
        })
    }
}

impl std::fmt::Display for PairingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} department {} subspecialty {}",
            self.origin,
            self.kind,
            self.department.as_deref().unwrap_or("(any)"),
            self.subspecialty.as_deref().unwrap_or("(any)")
        )
    }
}

/// One audit row, as written.
pub(crate) struct ChangeRecord<'a> {
    pub operator: &'a str,
    pub action: &'a str,
    pub subject: Value,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub note: &'a str,
}

pub(crate) async fn record_change(
    conn: &mut PgConnection,
    change: &ChangeRecord<'_>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"insert into registry_changes (operator, action, subject, before, after, note)
           values ($1, $2, $3, $4, $5, $6)"#,
        change.operator,
        change.action,
        change.subject,
        change.before,
        change.after,
        change.note,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Every pairing as a JSON array, in a stable order (for a registry load's before and after).
pub(crate) async fn all_pairings_json(conn: &mut PgConnection) -> sqlx::Result<Value> {
    sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(document order by origin_hospital, kind,
                                     department nulls first, subspecialty nulls first),
                           '[]'::jsonb) as "pairings!"
           from pairing_documents"#
    )
    .fetch_one(conn)
    .await
}

/// Creates the pairing with this key, or replaces its pools; the backups keep the order given.
/// Returns the pairing as it now is.
pub async fn set_pairing(
    db: &PgPool,
    key: &PairingKey,
    pool: &str,
    backups: &[String],
    change: Change<'_>,
) -> Result<Value, EditError> {
    change.check()?;
    let department = key.department()?;
    let subspecialty = key.subspecialty()?;
    let kind =
        StudyKind::parse(&key.kind).ok_or_else(|| EditError::UnknownKind(key.kind.clone()))?;
    let mut tx = db.begin().await?;
    check_hospital(&mut tx, &key.origin).await?;
    let mut named: Vec<&str> = Vec::new();
    for candidate in std::iter::once(pool).chain(backups.iter().map(String::as_str)) {
        if named.contains(&candidate) {
            return Err(EditError::RepeatedPool(candidate.to_owned()));
        }
        check_pool(&mut tx, candidate, kind).await?;
        named.push(candidate);
    }
    let before = pairing_json(&mut tx, key, &department, &subspecialty).await?;
    let id = sqlx::query_scalar!(
        r#"insert into pairings (origin_hospital, department, kind, subspecialty, primary_pool)
           values ($1, $2, $3, $4, $5)
           on conflict on constraint pairings_key
           do update set primary_pool = excluded.primary_pool, updated_at = now()
           returning id"#,
        key.origin,
        department,
        kind.as_str(),
        subspecialty,
        pool,
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!("delete from pairing_backups where pairing_id = $1", id)
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        r#"insert into pairing_backups (pairing_id, rank, pool_code)
           select $1, ordinality::int, pool_code
           from unnest($2::text[]) with ordinality as backup (pool_code, ordinality)"#,
        id,
        backups,
    )
    .execute(&mut *tx)
    .await?;
    let after = pairing_json(&mut tx, key, &department, &subspecialty).await?;
    record_change(
        &mut tx,
        &ChangeRecord {
            operator: change.operator,
            action: "pairing_set",
            subject: key.subject(&department, &subspecialty),
            before,
            after: after.clone(),
            note: change.note,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(after.unwrap_or(Value::Null))
}

/// Removes the pairing with exactly this key (its backups go with it). Requests it covered fall
/// to the next most specific pairing, or to the province-wide backup pool. Returns what was removed.
pub async fn remove_pairing(
    db: &PgPool,
    key: &PairingKey,
    change: Change<'_>,
) -> Result<Value, EditError> {
    change.check()?;
    let department = key.department()?;
    let subspecialty = key.subspecialty()?;
    let mut tx = db.begin().await?;
    let Some(before) = pairing_json(&mut tx, key, &department, &subspecialty).await? else {
        return Err(EditError::NoSuchPairing(key.to_string()));
    };
    sqlx::query!(
        r#"delete from pairings
           where origin_hospital = $1 and kind = $2
             and department is not distinct from $3 and subspecialty is not distinct from $4"#,
        key.origin,
        key.kind,
        department,
        subspecialty,
    )
    .execute(&mut *tx)
    .await?;
    record_change(
        &mut tx,
        &ChangeRecord {
            operator: change.operator,
            action: "pairing_remove",
            subject: key.subject(&department, &subspecialty),
            before: Some(before.clone()),
            after: None,
            note: change.note,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(before)
}

/// The pairing with exactly this key, locked for the transaction, as its JSON document.
async fn pairing_json(
    conn: &mut PgConnection,
    key: &PairingKey,
    department: &Option<String>,
    subspecialty: &Option<String>,
) -> sqlx::Result<Option<Value>> {
    sqlx::query_scalar!(
        r#"select d.document as "document!"
           from pairing_documents d join pairings p on p.id = d.id
           where d.origin_hospital = $1 and d.kind = $2
             and d.department is not distinct from $3 and d.subspecialty is not distinct from $4
           for update of p"#,
        key.origin,
        key.kind,
        department.as_deref(),
        subspecialty.as_deref(),
    )
    .fetch_optional(conn)
    .await
}

async fn check_hospital(conn: &mut PgConnection, code: &str) -> Result<(), EditError> {
    let known = sqlx::query_scalar!(
        r#"select exists (select 1 from hospitals where code = $1) as "known!""#,
        code
    )
    .fetch_one(conn)
    .await?;
    if known {
        Ok(())
    } else {
        Err(EditError::UnknownHospital(code.to_owned()))
    }
}

async fn check_pool(conn: &mut PgConnection, pool: &str, kind: StudyKind) -> Result<(), EditError> {
    let pool_kind = sqlx::query_scalar!("select kind from reviewer_pools where code = $1", pool)
        .fetch_optional(conn)
        .await?;
    match pool_kind {
        None => Err(EditError::UnknownPool(pool.to_owned())),
        Some(pool_kind) if pool_kind != kind.as_str() => Err(EditError::WrongKind {
            pool: pool.to_owned(),
            pool_kind,
            kind: kind.as_str().to_owned(),
        }),
        Some(_) => Ok(()),
    }
}

/// A pairing as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pairing {
    pub origin: String,
    pub department: Option<String>,
    pub kind: String,
    pub subspecialty: Option<String>,
    pub pool: String,
    pub backups: Vec<String>,
}

pub async fn list_pairings(db: &PgPool) -> sqlx::Result<Vec<Pairing>> {
    sqlx::query_as!(
        Pairing,
        r#"select p.origin_hospital as origin, p.department, p.kind, p.subspecialty,
                  p.primary_pool as pool,
                  array(select b.pool_code from pairing_backups b
                        where b.pairing_id = p.id order by b.rank) as "backups!"
           from pairings p
           order by p.origin_hospital, p.kind, p.department nulls first, p.subspecialty nulls first"#
    )
    .fetch_all(db)
    .await
}

/// One audit row of `registry_changes`.
#[derive(Clone, Debug)]
pub struct RegistryChange {
    pub id: i64,
    pub changed_at: chrono::DateTime<chrono::Utc>,
    pub operator: String,
    pub action: String,
    pub subject: Value,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub note: String,
}

/// The most recent `limit` changes, oldest first.
pub async fn history(db: &PgPool, limit: i64) -> sqlx::Result<Vec<RegistryChange>> {
    sqlx::query_as!(
        RegistryChange,
        r#"select id, changed_at, operator, action, subject, before, after, note
           from (select * from registry_changes order by id desc limit $1) recent
           order by id"#,
        limit
    )
    .fetch_all(db)
    .await
}
