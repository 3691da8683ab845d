//! The registry: hospitals, reviewer pools, reviewers and pairings. The dispatcher reads it for
//! every request (so edits take effect at once); `relayctl registry load` replaces it from a
//! TOML file in one transaction.

use domain::{HospitalCode, PoolCode, StudyKind};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// The registry file (see `registry/hunan.toml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    #[serde(rename = "hospital", default)]
    pub hospitals: Vec<HospitalEntry>,
    #[serde(rename = "pool", default)]
    pub pools: Vec<PoolEntry>,
    #[serde(rename = "reviewer", default)]
    pub reviewers: Vec<ReviewerEntry>,
    #[serde(rename = "pairing", default)]
    pub pairings: Vec<PairingEntry>,
    /// Province-wide backup pool per kind, for origins without a pairing for that kind.
    #[serde(default)]
    pub kind_backup: Vec<KindBackupEntry>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HospitalEntry {
    pub code: String,
    pub name: String,
    /// Defaults to the code in lower case.
    pub broker_user: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolEntry {
    pub code: String,
    pub hospital: String,
    pub kind: String,
    pub name: String,
    pub subspecialty: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewerEntry {
    pub id: String,
    pub pool: String,
    pub name: String,
    /// The reviewer's bearer token for the review desk; only its SHA-256 is stored.
    pub token: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairingEntry {
    pub origin: String,
    pub department: Option<String>,
    pub kind: String,
    pub pool: String,
    #[serde(default)]
    pub backups: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindBackupEntry {
    pub kind: String,
    pub pool: String,
}

/// Where a request goes, and by which rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub pool: PoolCode,
    pub rule: RouteRule,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteRule {
    /// A pairing for the origin's department (科包科).
    DepartmentPairing,
    /// A pairing for the whole origin hospital (结对帮扶).
    HospitalPairing,
    /// No pairing for this kind: the province-wide backup pool.
    KindBackup,
}

impl RouteRule {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteRule::DepartmentPairing => "department pairing",
            RouteRule::HospitalPairing => "hospital pairing",
            RouteRule::KindBackup => "province-wide backup pool",
        }
    }
}

pub fn token_sha256(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The broker user registered for a hospital, or `None` for an unknown hospital.
pub async fn broker_user_of(db: &PgPool, hospital: &HospitalCode) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "select broker_user from hospitals where code = $1",
        hospital.as_str()
    )
    .fetch_optional(db)
    .await
}

/// The hospital that publishes as `broker_user`.
pub async fn hospital_of_broker_user(
    db: &PgPool,
    broker_user: &str,
) -> sqlx::Result<Option<HospitalCode>> {
    let code = sqlx::query_scalar!(
        "select code from hospitals where broker_user = $1",
        broker_user
    )
    .fetch_optional(db)
    .await?;
    Ok(code.and_then(|code| HospitalCode::parse(&code).ok()))
}

/// Finds the pool for a request: the department's pairing, else the hospital's, else the
/// province-wide backup pool for the kind.
pub async fn route(
    db: &PgPool,
    origin: &HospitalCode,
    department: &str,
    kind: StudyKind,
) -> sqlx::Result<Option<Route>> {
    let pairing = sqlx::query!(
        r#"select primary_pool, department is not null as "for_department!"
           from pairings
           where origin_hospital = $1 and kind = $2 and (department = $3 or department is null)
           order by department is null
           limit 1"#,
        origin.as_str(),
        kind.as_str(),
        department,
    )
    .fetch_optional(db)
    .await?;
    if let Some(pairing) = pairing {
        let rule = if pairing.for_department {
            RouteRule::DepartmentPairing
        } else {
            RouteRule::HospitalPairing
        };
        return Ok(PoolCode::parse(&pairing.primary_pool)
            .ok()
            .map(|pool| Route { pool, rule }));
    }
    let backup = sqlx::query_scalar!(
        "select pool_code from kind_backup_pools where kind = $1",
        kind.as_str()
    )
    .fetch_optional(db)
    .await?;
    Ok(backup
        .and_then(|pool| PoolCode::parse(&pool).ok())
        .map(|pool| Route {
            pool,
            rule: RouteRule::KindBackup,
        }))
}

pub async fn pool_codes(db: &PgPool) -> sqlx::Result<Vec<PoolCode>> {
    let codes = sqlx::query_scalar!("select code from reviewer_pools order by code")
        .fetch_all(db)
        .await?;
    Ok(codes
        .iter()
        .filter_map(|code| PoolCode::parse(code).ok())
        .collect())
}

pub async fn hospital_codes(db: &PgPool) -> sqlx::Result<Vec<HospitalCode>> {
    let codes = sqlx::query_scalar!("select code from hospitals order by code")
        .fetch_all(db)
        .await?;
    Ok(codes
        .iter()
        .filter_map(|code| HospitalCode::parse(code).ok())
        .collect())
}

/// A reviewer, found by bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reviewer {
    pub id: String,
    pub pool: PoolCode,
    pub hospital: String,
}

pub async fn reviewer_by_token(db: &PgPool, token: &str) -> sqlx::Result<Option<Reviewer>> {
    let row = sqlx::query!(
        r#"select r.id, r.pool_code, p.hospital_code
           from reviewers r join reviewer_pools p on p.code = r.pool_code
           where r.token_sha256 = $1"#,
        token_sha256(token),
    )
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|row| {
        Some(Reviewer {
            id: row.id,
            pool: PoolCode::parse(&row.pool_code).ok()?,
            hospital: row.hospital_code,
        })
    }))
}

/// Counts of what a registry load wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadSummary {
    pub hospitals: usize,
    pub pools: usize,
    pub reviewers: usize,
    pub pairings: usize,
}

/// Upserts hospitals, pools and reviewers, and replaces all pairings and backup pools, in one
/// transaction: the dispatcher sees the old registry or the new one, never half of each.
pub async fn load(db: &PgPool, file: &RegistryFile) -> anyhow::Result<LoadSummary> {
    let mut tx = db.begin().await?;
    for hospital in &file.hospitals {
        HospitalCode::parse(&hospital.code).map_err(anyhow::Error::msg)?;
        let broker_user = hospital
            .broker_user
            .clone()
            .unwrap_or_else(|| hospital.code.to_lowercase());
        sqlx::query!(
            r#"insert into hospitals (code, name, broker_user) values ($1, $2, $3)
               on conflict (code) do update set name = excluded.name, broker_user = excluded.broker_user, updated_at = now()"#,
            hospital.code,
            hospital.name,
            broker_user,
        )
        .execute(&mut *tx)
        .await?;
    }
    for pool in &file.pools {
        PoolCode::parse(&pool.code).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            StudyKind::parse(&pool.kind).is_some(),
            "pool {}: unknown kind {}",
            pool.code,
            pool.kind
        );
        sqlx::query!(
            r#"insert into reviewer_pools (code, hospital_code, kind, subspecialty, name) values ($1, $2, $3, $4, $5)
               on conflict (code) do update set hospital_code = excluded.hospital_code, kind = excluded.kind,
                   subspecialty = excluded.subspecialty, name = excluded.name, updated_at = now()"#,
            pool.code,
            pool.hospital,
            pool.kind,
            pool.subspecialty,
            pool.name,
        )
        .execute(&mut *tx)
        .await?;
    }
    for reviewer in &file.reviewers {
        sqlx::query!(
            r#"insert into reviewers (id, pool_code, display_name, token_sha256) values ($1, $2, $3, $4)
               on conflict (id) do update set pool_code = excluded.pool_code, display_name = excluded.display_name,
                   token_sha256 = excluded.token_sha256, updated_at = now()"#,
            reviewer.id,
            reviewer.pool,
            reviewer.name,
            token_sha256(&reviewer.token),
        )
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query!("delete from pairings")
        .execute(&mut *tx)
        .await?;
    sqlx::query!("delete from kind_backup_pools")
        .execute(&mut *tx)
        .await?;
    for pairing in &file.pairings {
        let id = sqlx::query_scalar!(
            "insert into pairings (origin_hospital, department, kind, primary_pool) values ($1, $2, $3, $4) returning id",
            pairing.origin,
            pairing.department,
            pairing.kind,
            pairing.pool,
        )
        .fetch_one(&mut *tx)
        .await?;
        for (rank, backup) in pairing.backups.iter().enumerate() {
            sqlx::query!(
                "insert into pairing_backups (pairing_id, rank, pool_code) values ($1, $2, $3)",
                id,
                i32::try_from(rank + 1)?,
                backup,
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    for backup in &file.kind_backup {
        sqlx::query!(
            "insert into kind_backup_pools (kind, pool_code) values ($1, $2)",
            backup.kind,
            backup.pool
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(LoadSummary {
        hospitals: file.hospitals.len(),
        pools: file.pools.len(),
        reviewers: file.reviewers.len(),
        pairings: file.pairings.len(),
    })
}
