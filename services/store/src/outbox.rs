//! The transactional outbox and its relay task.
//!
//! A service writes its state change and the messages announcing it in one transaction
//! ([`enqueue`]). The relay ([`OutboxRelay::run`]) publishes pending rows in id order, waits for
//! every confirm, and only then deletes them. A crash anywhere loses nothing; it may publish a
//! row twice, which every consumer deduplicates. A handler that cannot wait for the relay's next
//! pass (a STAT request's) publishes its own rows right after its commit
//! ([`OutboxRelay::publish_rows`]); row locks keep the two from sending a row twice at once.

use bus::{DeadLetterReason, OutgoingMessage, PublishError, Publisher};
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Adds messages to the outbox inside the caller's transaction; returns their row ids, for a
/// caller that publishes them at once after its commit ([`OutboxRelay::publish_rows`]).
///
/// Within a trace (`bus::trace::within`), each message is stamped with it: a `traceparent`
/// header naming the trace and a new span, replacing any it had.
pub async fn enqueue(
    conn: &mut PgConnection,
    messages: &[OutgoingMessage],
) -> sqlx::Result<Vec<i64>> {
    let trace = bus::trace::current();
    let mut ids = Vec::with_capacity(messages.len());
    for message in messages {
        let headers = match &trace {
            Some(trace) => bus::trace::stamped_headers(&message.headers, trace),
            None => message.headers.clone(),
        };
        let id = sqlx::query_scalar!(
            r#"insert into outbox (exchange, routing_key, message_type, message_id, correlation_id, body, headers)
               values ($1, $2, $3, $4, $5, $6, $7)
               returning id"#,
            message.exchange,
            message.routing_key,
            message.message_type,
            message.message_id,
            message.correlation_id,
            message.body,
            serde_json::to_value(&headers).unwrap_or_default(),
        )
        .fetch_one(&mut *conn)
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The broker connection is gone: the caller reconnects and starts a new relay.
    #[error("outbox relay lost the broker")]
    Broker(#[source] PublishError),
}

/// Publishes the outbox. One per service process; several processes share the outbox safely
/// (rows are locked with `skip locked`).
pub struct OutboxRelay {
    db: PgPool,
    publisher: Publisher,
    wake: Arc<Notify>,
    dead_letter_exchange: String,
    batch_size: i64,
    poll_interval: Duration,
}

impl OutboxRelay {
    /// `wake` is notified by the service after each commit that enqueued messages, so they go out
    /// at once; the relay also polls, to pick up rows left by a crashed process.
    pub fn new(
        db: PgPool,
        publisher: Publisher,
        wake: Arc<Notify>,
        dead_letter_exchange: String,
    ) -> Self {
        Self {
            db,
            publisher,
            wake,
            dead_letter_exchange,
            batch_size: 200,
            poll_interval: Duration::from_millis(500),
        }
    }

    /// How often the relay looks for rows without being woken (default 500 ms): rows left by a
    /// crashed process, or committed by a service whose wake-up it cannot hear.
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Runs `work` (a session's consumers and clocks) with this relay publishing alongside it,
    /// and keeps the relay going until `work` has finished, so everything `work` committed is
    /// published before this returns. A relay that fails first (the broker went away) ends the
    /// session with that error; `work` failing stops the relay at once.
    pub async fn publish_while<T>(
        self,
        work: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let stop = CancellationToken::new();
        let mut relay = tokio::spawn(self.run(stop.clone()));
        let finished = tokio::select! {
            finished = work => finished,
            ended = &mut relay => {
                ended??;
                anyhow::bail!("outbox relay stopped unexpectedly");
            }
        };
        stop.cancel();
        match finished {
            Ok(value) => {
                relay.await??;
                Ok(value)
            }
            Err(error) => {
                // The session is failing (usually the broker): nothing is gained by waiting for
                // confirms that will not come; unpublished rows stay in the outbox.
                relay.abort();
                Err(error)
            }
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RelayError> {
        let mut database_failures = 0u32;
        loop {
            match self.flush_batch().await {
                // Rows were left for the next pass (the batch was full): run it at once.
                Ok(More(true)) => continue,
                Ok(More(false)) => database_failures = 0,
                Err(FlushError::Broker(error)) => return Err(RelayError::Broker(error)),
                Err(FlushError::Database(error)) => {
                    database_failures += 1;
                    tracing::warn!(error = %error, attempt = database_failures, "outbox relay waits for the database");
                    tokio::select! {
                        _ = tokio::time::sleep(crate::database_retry_delay(database_failures)) => continue,
                        _ = shutdown.cancelled() => return Ok(()),
                    }
                }
            }
            if shutdown.is_cancelled() {
                // Everything committed before shutdown was asked for has been published.
                return Ok(());
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// Publishes up to one batch, the oldest rows first: at most `batch_size` rows, and no more
    /// bodies than [`BATCH_BYTES`] (at least one row, whatever its size).
    async fn flush_batch(&self) -> Result<More, FlushError> {
        let mut tx = self.db.begin().await?;
        // Sizes first: `octet_length` reads the stored length without fetching the body.
        let sizes = sqlx::query!(
            r#"select id, octet_length(body) as "bytes!"
               from outbox order by id limit $1 for update skip locked"#,
            self.batch_size,
        )
        .fetch_all(&mut *tx)
        .await?;
        let taken = within_budget(sizes.iter().map(|row| (row.id, row.bytes)), BATCH_BYTES);
        let more = sizes.len() as i64 == self.batch_size || taken.len() < sizes.len();
        let rows = self.locked_rows(&mut tx, &taken).await?;
        self.publish_locked(tx, rows).await?;
        Ok(More(more))
    }

    /// The rows `ids` that no other transaction holds, locked by `tx`.
    async fn locked_rows(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        ids: &[i64],
    ) -> sqlx::Result<Vec<OutboxRow>> {
        sqlx::query_as!(
            OutboxRow,
            r#"select id, exchange, routing_key, message_type, message_id, correlation_id, body, headers
               from outbox where id = any($1) order by id for update skip locked"#,
            ids,
        )
        .fetch_all(&mut **tx)
        .await
    }

    /// Publishes the rows `ids` now, without waiting for the relay's next pass: what a handler
    /// calls right after committing a STAT request, so that its lane message is not queued
    /// behind a routine batch. Rows another pass holds (it locked them first) are skipped: that
    /// pass publishes them. Returns how many rows this call published.
    pub async fn publish_rows(&self, ids: &[i64]) -> Result<usize, FlushError> {
        let mut tx = self.db.begin().await?;
        let rows = self.locked_rows(&mut tx, ids).await?;
        self.publish_locked(tx, rows).await
    }

    /// Publishes `rows`, locked by `tx`, waits for every confirm, then deletes them and commits.
    async fn publish_locked(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        rows: Vec<OutboxRow>,
    ) -> Result<usize, FlushError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        let messages: Vec<OutgoingMessage> =
            rows.into_iter().map(OutboxRow::into_message).collect();
        match self
            .publisher
            .publish_all_marked(&messages, "outbox.after_publish_before_confirm")
            .await
        {
            Ok(()) => {
                crash_point::reached("outbox.after_confirm_before_delete");
                sqlx::query!("delete from outbox where id = any($1)", &ids)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                for message in &messages {
                    tracing::debug!(
                        trace_id = message.trace_id().map(|id| id.to_string()),
                        message_id = message.message_id,
                        exchange = message.exchange,
                        routing_key = message.routing_key,
                        "outbox message published"
                    );
                }
                Ok(messages.len())
            }
            Err(PublishError::Unroutable {
                exchange,
                routing_key,
            }) => {
                // A row nobody can receive would block the outbox forever. Park it in the dead
                // letters with the reason and let the rest go out on the next pass (rows already
                // confirmed in this batch may go out twice; consumers deduplicate).
                let mut parked = Vec::new();
                for (id, message) in ids.iter().zip(&messages) {
                    if message.exchange == exchange && message.routing_key == routing_key {
                        self.publisher
                            .publish(&self.dead_letter_copy(message))
                            .await?;
                        parked.push(*id);
                        tracing::error!(
                            trace_id = message.trace_id().map(|id| id.to_string()),
                            message_id = message.message_id,
                            "unroutable outbox message dead-lettered"
                        );
                    }
                }
                tracing::error!(
                    exchange,
                    routing_key,
                    parked = parked.len(),
                    "unroutable outbox messages dead-lettered"
                );
                sqlx::query!("delete from outbox where id = any($1)", &parked)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(parked.len())
            }
            Err(error) => Err(FlushError::Broker(error)),
        }
    }

    fn dead_letter_copy(&self, message: &OutgoingMessage) -> OutgoingMessage {
        let reason = DeadLetterReason {
            reason: "unroutable".into(),
            detail: format!(
                "no queue bound for {} / {}",
                message.exchange, message.routing_key
            ),
        };
        let headers = bus::DEAD_LETTER_HEADERS;
        OutgoingMessage {
            exchange: self.dead_letter_exchange.clone(),
            routing_key: "outbox".into(),
            headers: vec![
                (headers.reason.into(), reason.reason),
                (headers.detail.into(), reason.detail),
                (headers.source_queue.into(), "outbox".into()),
                (headers.original_exchange.into(), message.exchange.clone()),
                (
                    headers.original_routing_key.into(),
                    message.routing_key.clone(),
                ),
            ],
            ..message.clone()
        }
    }
}

/// The bodies one relay pass holds in memory at most: 200 rows of 12-lead ECGs would be 24 MiB,
/// half a service's memory target (issue 6), for no gain in throughput over a few MiB.
const BATCH_BYTES: i64 = 4 * 1024 * 1024;

/// Whether a pass of the relay left rows for the next one.
struct More(bool);

/// The leading rows of `sizes` (id, bytes) whose bytes add up to at most `budget`; always the
/// first row, so that a message larger than the budget still goes out.
fn within_budget(sizes: impl IntoIterator<Item = (i64, i32)>, budget: i64) -> Vec<i64> {
    let mut total = 0_i64;
    let mut taken = Vec::new();
    for (id, bytes) in sizes {
        total += i64::from(bytes);
        if total > budget && !taken.is_empty() {
            break;
        }
        taken.push(id);
    }
    taken
}

/// One outbox row as stored.
struct OutboxRow {
    id: i64,
    exchange: String,
    routing_key: String,
    message_type: String,
    message_id: String,
    correlation_id: String,
    body: Vec<u8>,
    headers: serde_json::Value,
}

impl OutboxRow {
    fn into_message(self) -> OutgoingMessage {
        OutgoingMessage {
            exchange: self.exchange,
            routing_key: self.routing_key,
            message_type: self.message_type,
            message_id: self.message_id,
            correlation_id: self.correlation_id,
            body: self.body,
            // Written by `enqueue` from a Vec of pairs; anything else is no header at all.
            headers: serde_json::from_value(self.headers).unwrap_or_default(),
        }
    }
}

/// Why rows could not be published: they stay in the outbox, for the relay's next pass.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Broker(#[from] PublishError),
}

#[cfg(test)]
mod tests {
    use super::within_budget;

    #[test]
    fn a_batch_stops_before_its_bodies_pass_the_budget_but_always_takes_one_row() {
        let rows = [(1, 400), (2, 500), (3, 200), (4, 1)];
        assert_eq!(within_budget(rows, 1_000), vec![1, 2]);
        assert_eq!(within_budget(rows, 1_101), vec![1, 2, 3, 4]);
        assert_eq!(within_budget([(7, 5_000), (8, 1)], 1_000), vec![7]);
        assert!(within_budget([], 1_000).is_empty());
    }
}
