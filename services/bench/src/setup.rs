//! The bench's own world: a fresh database (created, migrated, dropped at the end), a fresh
//! namespace on the broker (every queue and exchange deleted at the end: leaked quorum queues
//! hold file handles, and enough of them stop RabbitMQ 3.10 from accepting connections), and a
//! generated registry with one county origin paired with a provincial pool per kind.

use anyhow::Context as _;
use bus::lapin::Connection;
use bus::{Names, Topology};
use domain::{HospitalCode, PoolCode, Priority};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use store::registry::{HospitalEntry, PairingEntry, PoolEntry, RegistryFile, ReviewerEntry};

/// The county that sends every request. Its broker user is the one the bench connects as, so
/// the broker vouches for the `user_id` of each publish exactly as it does for a county HIS.
pub const ORIGIN: &str = "HN-HH-001";

/// The provincial pools, one per kind, and how many automated reviewers each has.
pub const POOLS: [(&str, &str); 3] = [
    ("xy-ecg", "ecg"),
    ("xy-imaging", "imaging"),
    ("xy-pathology", "pathology"),
];
pub const REVIEWERS_PER_POOL: usize = 4;

/// An automated reviewer: a pool and a bearer token.
#[derive(Clone, Debug)]
pub struct Reviewer {
    pub pool: String,
    pub token: String,
}

pub struct Environment {
    pub db: PgPool,
    pub database_url: String,
    admin_url: String,
    database_name: String,
    pub amqp_url: String,
    pub topology: Topology,
    pub reviewers: Vec<Reviewer>,
    /// Queues the bench declared itself (the raw pipe's), deleted with the namespace.
    pub extra_queues: Vec<String>,
}

impl Environment {
    /// Creates and migrates the database `telerelay_bench_<run>` on the server of `admin_url`,
    /// loads the generated registry, and declares the core topology, lanes and origin queues
    /// under the namespace `bench_<run>`.
    pub async fn create(admin_url: &str, amqp_url: &str, run: &str) -> anyhow::Result<Self> {
        let database_name = format!("telerelay_bench_{run}");
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(admin_url)
            .await
            .context("connecting to PostgreSQL (TELERELAY_DATABASE_URL)")?;
        // A name made of [a-z0-9_] only (`run` is hex); identifiers cannot be bound as
        // parameters, so the statement is built.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "create database {database_name}"
        )))
        .execute(&admin)
        .await
        .with_context(|| format!("creating database {database_name}"))?;
        admin.close().await;
        let database_url = replace_database(admin_url, &database_name)?;
        let db = PgPoolOptions::new()
            .max_connections(8)
            .connect(&database_url)
            .await?;
        store::MIGRATOR.run(&db).await.context("migrating")?;
        let registry = registry();
        store::registry::load(&db, &registry).await?;
        let reviewers = registry
            .reviewers
            .iter()
            .map(|r| Reviewer {
                pool: r.pool.clone(),
                token: r.token.clone(),
            })
            .collect();
        let topology = Topology::new(
            Names::new(format!("bench_{run}")),
            bus::QueueSettings::default(),
        );
        let environment = Self {
            db,
            database_url,
            admin_url: admin_url.to_owned(),
            database_name,
            amqp_url: amqp_url.to_owned(),
            topology,
            reviewers,
            extra_queues: Vec::new(),
        };
        environment.declare().await?;
        Ok(environment)
    }

    async fn declare(&self) -> anyhow::Result<()> {
        let connection = Connection::connect(&self.amqp_url, Default::default()).await?;
        let channel = connection.create_channel().await?;
        self.topology.declare_core(&channel).await?;
        let origin = HospitalCode::parse(ORIGIN).map_err(anyhow::Error::msg)?;
        self.topology
            .declare_origin_results(&channel, &origin)
            .await?;
        for (pool, _) in POOLS {
            let pool = PoolCode::parse(pool).map_err(anyhow::Error::msg)?;
            self.topology.declare_pool_lanes(&channel, &pool).await?;
        }
        connection.close(200, "declared".into()).await.ok();
        Ok(())
    }

    pub fn names(&self) -> &Names {
        &self.topology.names
    }

    /// Every queue of the namespace the bench knows of.
    pub fn queues(&self) -> Vec<String> {
        let names = self.names();
        let mut queues = vec![
            names.dispatcher_queue(),
            names.dispatcher_stat_queue(),
            names.recorder_results_queue(),
            names.recorder_events_queue(),
            names.recorder_acknowledgements_queue(),
            names.dead_letter_queue(),
            names.alerts_queue(),
        ];
        for code in [ORIGIN, "HN-XY"] {
            if let Ok(code) = HospitalCode::parse(code) {
                queues.push(names.origin_results_queue(&code));
                queues.push(names.origin_critical_queue(&code));
            }
        }
        for (pool, _) in POOLS {
            if let Ok(pool) = PoolCode::parse(pool) {
                for priority in Priority::LANES_MOST_URGENT_FIRST {
                    queues.push(names.review_lane(&pool, priority));
                }
            }
        }
        queues.extend(self.extra_queues.iter().cloned());
        queues
    }

    /// Deletes the namespace's queues and exchanges and drops the database. Best effort: each
    /// failure is reported and the rest still cleaned.
    pub async fn destroy(self) {
        let names = self.names().clone();
        let queues = self.queues();
        let cleanup = async {
            let connection = Connection::connect(&self.amqp_url, Default::default()).await?;
            let mut channel = connection.create_channel().await?;
            for queue in &queues {
                if let Err(error) = channel
                    .queue_delete(queue.as_str().into(), Default::default())
                    .await
                {
                    eprintln!("bench: could not delete queue {queue}: {error}");
                    // A failed method closes the channel: the rest need a new one (one run left
                    // 20 queues behind when they shared the closed channel).
                    channel = connection.create_channel().await?;
                }
            }
            for exchange in [
                names.requests_exchange(),
                names.review_exchange(),
                names.results_exchange(),
                names.events_exchange(),
                names.dead_letter_exchange(),
                names.critical_exchange(),
                names.acknowledgements_exchange(),
                names.alerts_exchange(),
            ] {
                channel
                    .exchange_delete(exchange.as_str().into(), Default::default())
                    .await
                    .ok();
            }
            connection.close(200, "bench done".into()).await.ok();
            anyhow::Ok(())
        };
        if let Err(error) = cleanup.await {
            eprintln!(
                "bench: cleaning namespace {} failed: {error:#}",
                names.namespace()
            );
        }
        self.db.close().await;
        let drop_database = async {
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect(&self.admin_url)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "drop database if exists {} with (force)",
                self.database_name
            )))
            .execute(&admin)
            .await?;
            admin.close().await;
            anyhow::Ok(())
        };
        if let Err(error) = drop_database.await {
            eprintln!(
                "bench: dropping database {} failed: {error:#}",
                self.database_name
            );
        }
    }
}

/// `url` with its database (the path) replaced by `database`.
pub fn replace_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (without_query, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = without_query
        .find("://")
        .context("a database URL has a scheme")?
        + 3;
    let base = match without_query[authority_start..].find('/') {
        Some(slash) => &without_query[..authority_start + slash],
        None => without_query,
    };
    Ok(match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    })
}

/// One county paired with Xiangya for every kind, [`REVIEWERS_PER_POOL`] reviewers per pool.
pub fn registry() -> RegistryFile {
    let mut reviewers = Vec::new();
    for (pool, _) in POOLS {
        for n in 1..=REVIEWERS_PER_POOL {
            reviewers.push(ReviewerEntry {
                id: format!("{pool}-bot-{n}"),
                pool: pool.into(),
                name: format!("{pool} reviewer {n}"),
                token: format!("bench-token-{pool}-{n}"),
            });
        }
    }
    RegistryFile {
        hospitals: vec![
            HospitalEntry {
                code: "HN-XY".into(),
                name: "Xiangya".into(),
                broker_user: Some("hn-xy-his".into()),
            },
            HospitalEntry {
                code: ORIGIN.into(),
                name: "Huaihua".into(),
                broker_user: Some("guest".into()),
            },
        ],
        pools: POOLS
            .iter()
            .map(|(code, kind)| PoolEntry {
                code: (*code).into(),
                hospital: "HN-XY".into(),
                kind: (*kind).into(),
                name: (*code).into(),
                subspecialty: None,
            })
            .collect(),
        reviewers,
        pairings: POOLS
            .iter()
            .map(|(pool, kind)| PairingEntry {
                origin: ORIGIN.into(),
                department: None,
                kind: (*kind).into(),
                subspecialty: None,
                pool: (*pool).into(),
                backups: vec![],
            })
            .collect(),
        kind_backup: vec![],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            replace_database("postgres://u:p@127.0.0.1:5432/telerelay", "b1").unwrap(),
            "postgres://u:p@127.0.0.1:5432/b1"
        );
        assert_eq!(
            replace_database("postgres://u:p@host/telerelay?sslmode=require", "b1").unwrap(),
            "postgres://u:p@host/b1?sslmode=require"
        );
        assert_eq!(
            replace_database("postgres://host", "b1").unwrap(),
            "postgres://host/b1"
        );
    }

    #[test]
    fn the_registry_pairs_the_origin_with_every_pool() {
        let registry = registry();
        assert_eq!(registry.pairings.len(), 3);
        assert_eq!(registry.reviewers.len(), 3 * REVIEWERS_PER_POOL);
        assert!(simulator::Province::from_registry(&registry).is_ok());
    }
}
