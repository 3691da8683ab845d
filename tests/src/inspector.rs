//! Looking into the broker and the database a fault test runs on, from outside the relay: the
//! harness's own connection may have died with a node, and a fault test wants its services on
//! several threads, which `#[sqlx::test]` does not give.

use bus::lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use bus::lapin::types::FieldTable;
use bus::lapin::{Channel, Connection};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool};

/// A connection of the test's own to one node, for looking into queues: opened fresh when the
/// test needs it, e.g. to a node restarted after a kill (the harness's own connection died with
/// it) or to a surviving node of a cluster.
pub struct Inspector {
    connection: Connection,
    channel: Channel,
}

impl Inspector {
    pub async fn connect(url: &str) -> Self {
        let connection = Connection::connect(url, Default::default()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        Self {
            connection,
            channel,
        }
    }

    /// Messages ready in a queue.
    pub async fn depth(&self, queue: &str) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .unwrap()
            .message_count()
    }

    /// Takes every message of a lane; returns the relay's request id of each.
    pub async fn drain(&self, queue: &str) -> Vec<uuid::Uuid> {
        let mut ids = Vec::new();
        while let Some(message) = self.get(queue).await {
            let headers = message.properties.headers().as_ref();
            let id = bus::header_str(headers, bus::messages::RELAY_REQUEST_UUID_HEADER)
                .expect("a lane message names its request");
            ids.push(id.parse().unwrap());
        }
        ids
    }

    /// Takes every message of a queue; returns their bodies.
    pub async fn drain_bodies(&self, queue: &str) -> Vec<Vec<u8>> {
        let mut bodies = Vec::new();
        while let Some(message) = self.get(queue).await {
            bodies.push(message.data);
        }
        bodies
    }

    /// Takes (and acks) the next message of a queue, if one is ready.
    async fn get(&self, queue: &str) -> Option<bus::lapin::message::Delivery> {
        let message = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()?;
        message
            .delivery
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        Some(message.delivery)
    }

    pub async fn close(self) {
        self.connection.close(200, "inspected".into()).await.ok();
    }
}

/// A database of the test's own on the shared PostgreSQL server, migrated, like the one
/// `#[sqlx::test]` gives; that attribute runs the test on a single-threaded runtime, and the fault
/// tests want the services on several threads, as in production. Dropped at the end of a test
/// that passes ([`TestDatabase::drop_database`]); a failing test leaves it for inspection, as
/// `#[sqlx::test]` does.
pub struct TestDatabase {
    server: PgConnectOptions,
    name: String,
    /// A pool on the test's database, for the relay and the test's own queries.
    pub pool: PgPool,
}

impl TestDatabase {
    /// Creates and migrates `tr_{label}_` followed by random hex digits; `label` (lowercase
    /// letters and `_`) says which test a database left behind belongs to.
    pub async fn create(label: &str) -> Self {
        assert!(
            label.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "a database label is lowercase letters and `_`: {label}"
        );
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let server: PgConnectOptions = url.parse().expect("DATABASE_URL is a PostgreSQL URL");
        let name = format!(
            "tr_{label}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut admin = PgConnection::connect_with(&server)
            .await
            .expect("connecting to the shared PostgreSQL server");
        // A database name cannot be a bind parameter; this one is ours, made of the checked
        // label and hex digits.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"create database "{name}""#)))
            .execute(&mut admin)
            .await
            .expect("creating the test database");
        admin.close().await.ok();
        // Enough connections for the dispatcher's prefetch, the recorder and the desk at once.
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(server.clone().database(&name))
            .await
            .expect("connecting to the test database");
        store::MIGRATOR
            .run(&pool)
            .await
            .expect("migrating the test database");
        Self { server, name, pool }
    }

    /// Closes the pool and drops the database, ending any connection still open to it.
    pub async fn drop_database(self) {
        self.pool.close().await;
        let mut admin = PgConnection::connect_with(&self.server).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            r#"drop database "{}" with (force)"#,
            self.name
        )))
        .execute(&mut admin)
        .await
        .expect("dropping the test database");
        admin.close().await.ok();
    }
}

/// A `count(*)` query without parameters. Plain `query_scalar` rather than `query!`, so that the
/// tests using it need no entries in the committed `.sqlx/` metadata.
pub async fn count(db: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}
