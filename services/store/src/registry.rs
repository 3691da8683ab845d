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
    /// Only requests that name this subspecialty (e.g. "neuro"); absent: every subspecialty.
    pub subspecialty: Option<String>,
    pub pool: String,
    /// Where overflow and escalation go, in this order.
    #[serde(default)]
    pub backups: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindBackupEntry {
    pub kind: String,
    pub pool: String,
}

/// Where a request goes, by which rule, and where it may go next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub pool: PoolCode,
    pub rule: RouteRule,
    /// The pairing's backup pools, in the operator's order: where load-aware overflow and SLA
    /// escalation send a request. Empty for the province-wide backup pool.
    pub backups: Vec<PoolCode>,
}

/// Which pairing decided a route, most specific first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteRule {
    /// A pairing for the origin's department and the request's subspecialty.
    DepartmentSubspecialtyPairing,
    /// A pairing for the origin's department (科包科).
    DepartmentPairing,
    /// A pairing for the request's subspecialty, any department of the origin.
    SubspecialtyPairing,
    /// A pairing for the whole origin hospital (结对帮扶).
    HospitalPairing,
    /// No pairing for this kind: the province-wide backup pool.
    KindBackup,
}

impl RouteRule {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteRule::DepartmentSubspecialtyPairing => "department and subspecialty pairing",
            RouteRule::DepartmentPairing => "department pairing",
            RouteRule::SubspecialtyPairing => "subspecialty pairing",
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

/// Finds the pool for a request. The most specific pairing wins: department and subspecialty,
/// then department, then subspecialty, then hospital-wide; without any, the province-wide backup
/// pool for the kind. Subspecialties compare in lower case. Read for every request, so an
/// operator's edit applies to the next request without a restart.
pub async fn route(
    db: &PgPool,
    origin: &HospitalCode,
    department: &str,
    subspecialty: Option<&str>,
    kind: StudyKind,
) -> sqlx::Result<Option<Route>> {
    let pairing = sqlx::query!(
        r#"select p.primary_pool,
                  p.department is not null as "for_department!",
                  p.subspecialty is not null as "for_subspecialty!",
                  array(select b.pool_code from pairing_backups b
                        where b.pairing_id = p.id order by b.rank) as "backups!"
           from pairings p
           where p.origin_hospital = $1 and p.kind = $2
             and (p.department = $3 or p.department is null)
             and (p.subspecialty = lower($4) or p.subspecialty is null)
           order by p.department is null, p.subspecialty is null
           limit 1"#,
        origin.as_str(),
        kind.as_str(),
        department,
        subspecialty,
    )
    .fetch_optional(db)
    .await?;
    if let Some(pairing) = pairing {
        let rule = match (pairing.for_department, pairing.for_subspecialty) {
            (true, true) => RouteRule::DepartmentSubspecialtyPairing,
            (true, false) => RouteRule::DepartmentPairing,
            (false, true) => RouteRule::SubspecialtyPairing,
            (false, false) => RouteRule::HospitalPairing,
        };
        let backups = pairing
            .backups
            .iter()
            .filter_map(|pool| PoolCode::parse(pool).ok())
            .collect();
        return Ok(PoolCode::parse(&pairing.primary_pool)
            .ok()
            .map(|pool| Route {
                pool,
                rule,
                backups,
            }));
    }
    Ok(kind_backup_pool(db, kind).await?.map(|pool| Route {
        pool,
        rule: RouteRule::KindBackup,
        backups: Vec::new(),
    }))
}

/// The province-wide backup pool for a kind, if the registry names one.
async fn kind_backup_pool(db: &PgPool, kind: StudyKind) -> sqlx::Result<Option<PoolCode>> {
    let pool = sqlx::query_scalar!(
        "select pool_code from kind_backup_pools where kind = $1",
        kind.as_str()
    )
    .fetch_optional(db)
    .await?;
    Ok(pool.and_then(|pool| PoolCode::parse(&pool).ok()))
}

/// The route a stored request would take now (its origin, department, subspecialty and kind
/// through today's registry): for escalation, whose next pool is the first of `backups` that is
/// not the pool the request is in. `None` for an unknown request or one with no route any more.
pub async fn route_of_request(db: &PgPool, request: uuid::Uuid) -> sqlx::Result<Option<Route>> {
    let row = sqlx::query!(
        "select origin_hospital, department, subspecialty, kind from review_requests where id = $1",
        request
    )
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let (Ok(origin), Some(kind)) = (
        HospitalCode::parse(&row.origin_hospital),
        StudyKind::parse(&row.kind),
    ) else {
        return Ok(None);
    };
    route(
        db,
        &origin,
        &row.department,
        row.subspecialty.as_deref(),
        kind,
    )
    .await
}

/// The pool a request escalates to from where it is now: along today's ladder of the request
/// (its route's primary, then the backups in order, then the province-wide backup pool for the
/// kind), the pool after the one the request is in. If the request is in a pool that is not on
/// the ladder any more (the pairing was edited), the first pool of the ladder other than its own.
/// `None` at the end of the ladder, or for an unknown request.
pub async fn next_pool_of_request(
    db: &PgPool,
    request: uuid::Uuid,
) -> sqlx::Result<Option<PoolCode>> {
    let Some(stored) = sqlx::query!(
        "select pool_code, kind from review_requests where id = $1",
        request
    )
    .fetch_optional(db)
    .await?
    else {
        return Ok(None);
    };
    let current = stored.pool_code;
    let Some(route) = route_of_request(db, request).await? else {
        return Ok(None);
    };
    let province_wide = match StudyKind::parse(&stored.kind) {
        Some(kind) => kind_backup_pool(db, kind).await?,
        None => None,
    };
    let mut ladder: Vec<PoolCode> = std::iter::once(route.pool).chain(route.backups).collect();
    if let Some(pool) = province_wide.filter(|pool| !ladder.contains(pool)) {
        ladder.push(pool);
    }
    let next = match ladder
        .iter()
        .position(|pool| Some(pool.as_str()) == current.as_deref())
    {
        Some(at) => ladder.get(at + 1).cloned(),
        None => ladder
            .into_iter()
            .find(|pool| Some(pool.as_str()) != current.as_deref()),
    };
    Ok(next)
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

/// As [`load_by`], audited as the operator "registry-load".
pub async fn load(db: &PgPool, file: &RegistryFile) -> anyhow::Result<LoadSummary> {
    load_by(db, file, crate::registry_edits::REGISTRY_LOAD_OPERATOR, "").await
}

/// Upserts hospitals, pools and reviewers, and replaces all pairings and backup pools, in one
/// transaction: the dispatcher sees the old registry or the new one, never half of each. The same
/// transaction writes a `registry_load` row to `registry_changes` with every pairing before and
/// after, in `operator`'s name.
pub async fn load_by(
    db: &PgPool,
    file: &RegistryFile,
    operator: &str,
    note: &str,
) -> anyhow::Result<LoadSummary> {
    anyhow::ensure!(!operator.trim().is_empty(), "the operator must be named");
    let mut tx = db.begin().await?;
    let before = crate::registry_edits::all_pairings_json(&mut tx).await?;
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
            "insert into pairings (origin_hospital, department, kind, subspecialty, primary_pool) values ($1, $2, $3, lower($4), $5) returning id",
            pairing.origin,
            pairing.department,
            pairing.kind,
            pairing.subspecialty,
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
    let after = crate::registry_edits::all_pairings_json(&mut tx).await?;
    crate::registry_edits::record_change(
        &mut tx,
        &crate::registry_edits::ChangeRecord {
            operator,
            action: "registry_load",
            subject: serde_json::json!({ "pairings": "all" }),
            before: Some(before),
            after: Some(after),
            note,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(LoadSummary {
        hospitals: file.hospitals.len(),
        pools: file.pools.len(),
        reviewers: file.reviewers.len(),
        pairings: file.pairings.len(),
    })
}
