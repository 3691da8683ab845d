//! Dead letters an operator can list and replay.
//!
//! The recorder keeps every message that reaches the dead-letter queue ([`keep`]). `relayctl
//! dead-letters replay` records who replayed which dead letter and queues the message in the
//! outbox in one transaction ([`replay`]), so a replay happens at most once and is in the audit
//! trail. The dispatcher trusts a replayed request's original sender only if that replay is on
//! record ([`replayed_sender`]).

use bus::{DeadLetterFacts, OutgoingMessage, REPLAY_OF_HEADER};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Stores a dead letter once; a redelivered one finds its row. Returns its id and whether this
/// call stored it.
pub async fn keep(db: &PgPool, facts: &DeadLetterFacts) -> sqlx::Result<(i64, bool)> {
    let inserted = sqlx::query_scalar!(
        r#"insert into dead_letters
               (fingerprint, source_queue, reason, detail, original_exchange, original_routing_key,
                original_user_id, message_type, message_id, correlation_id, replay_of, headers,
                replay_headers, body)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                   -- A replay header naming no stored dead letter (forged or from another
                   -- installation) links nothing.
                   (select id from dead_letters where id = $11), $12, $13, $14)
           on conflict (fingerprint) do nothing
           returning id"#,
        &facts.fingerprint[..],
        facts.source_queue,
        facts.reason,
        facts.detail,
        facts.original_exchange,
        facts.original_routing_key,
        facts.original_user_id,
        facts.message_type,
        facts.message_id,
        facts.correlation_id,
        facts.replay_of,
        facts.headers,
        serde_json::to_value(&facts.replayable_headers).unwrap_or_default(),
        facts.body,
    )
    .fetch_optional(db)
    .await?;
    if let Some(id) = inserted {
        return Ok((id, true));
    }
    let existing = sqlx::query_scalar!(
        "select id from dead_letters where fingerprint = $1",
        &facts.fingerprint[..]
    )
    .fetch_one(db)
    .await?;
    Ok((existing, false))
}

/// Which dead letters to list or replay.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only these ids (empty: any).
    pub ids: Vec<i64>,
    pub reason: Option<String>,
    pub source_queue: Option<String>,
    /// Also those already replayed (listing only; a replay never repeats).
    pub include_replayed: bool,
}

/// One dead letter as an operator sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub id: i64,
    pub stored_at: DateTime<Utc>,
    pub source_queue: String,
    pub reason: String,
    pub detail: String,
    pub message_type: String,
    pub message_id: String,
    pub correlation_id: String,
    pub original_user_id: Option<String>,
    pub replay_of: Option<i64>,
    pub headers: serde_json::Value,
    pub body: Vec<u8>,
    pub replayed_at: Option<DateTime<Utc>>,
    pub replayed_by: Option<String>,
}

/// Dead letters matching the selection, oldest first.
pub async fn list(db: &PgPool, selection: &Selection) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as!(
        DeadLetter,
        r#"select d.id, d.stored_at, d.source_queue, d.reason, d.detail, d.message_type,
                  d.message_id, d.correlation_id, d.original_user_id, d.replay_of, d.headers,
                  d.body, r.replayed_at as "replayed_at?", r.operator as "replayed_by?"
           from dead_letters d
           left join dead_letter_replays r on r.dead_letter_id = d.id
           where (cardinality($1::bigint[]) = 0 or d.id = any($1))
             and ($2::text is null or d.reason = $2)
             and ($3::text is null or d.source_queue = $3)
             and ($4 or r.dead_letter_id is null)
           order by d.id"#,
        &selection.ids,
        selection.reason,
        selection.source_queue,
        selection.include_replayed,
    )
    .fetch_all(db)
    .await
}

/// What a replay request did to one dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Queued for publishing to `exchange` / `routing_key` (`""` is the default exchange, which
    /// routes to the queue of that name).
    Replayed {
        id: i64,
        exchange: String,
        routing_key: String,
    },
    /// Replayed before; nothing done.
    AlreadyReplayed {
        id: i64,
        at: DateTime<Utc>,
        by: String,
    },
    /// No dead letter has this id.
    NotFound { id: i64 },
}

/// Replays the selected dead letters that were never replayed: records each replay (who, why,
/// where to) and queues the message in the outbox, in one transaction. Running it again does
/// nothing more. The services' outbox relays publish the messages.
pub async fn replay(
    db: &PgPool,
    selection: &Selection,
    operator: &str,
    note: &str,
) -> sqlx::Result<Vec<ReplayOutcome>> {
    let mut tx = db.begin().await?;
    let candidates = sqlx::query!(
        r#"select d.id, d.source_queue, d.original_exchange, d.original_routing_key,
                  d.message_type, d.message_id, d.correlation_id, d.replay_headers, d.body
           from dead_letters d
           where (cardinality($1::bigint[]) = 0 or d.id = any($1))
             and ($2::text is null or d.reason = $2)
             and ($3::text is null or d.source_queue = $3)
           order by d.id
           for update"#,
        &selection.ids,
        selection.reason,
        selection.source_queue,
    )
    .fetch_all(&mut *tx)
    .await?;

    let mut outcomes = Vec::new();
    for missing in selection
        .ids
        .iter()
        .filter(|id| !candidates.iter().any(|c| c.id == **id))
    {
        outcomes.push(ReplayOutcome::NotFound { id: *missing });
    }
    for dead in candidates {
        // The queue it died in, through the default exchange; a message no queue would take
        // goes back to where it was first sent, in case a queue is bound there now.
        let (exchange, routing_key) = match (
            dead.source_queue.as_str(),
            dead.original_exchange,
            dead.original_routing_key,
        ) {
            ("outbox", Some(exchange), Some(routing_key)) => (exchange, routing_key),
            (queue, _, _) => (String::new(), queue.to_owned()),
        };
        let recorded = sqlx::query!(
            r#"insert into dead_letter_replays (dead_letter_id, operator, note, exchange, routing_key)
               values ($1, $2, $3, $4, $5)
               on conflict (dead_letter_id) do nothing"#,
            dead.id,
            operator,
            note,
            exchange,
            routing_key,
        )
        .execute(&mut *tx)
        .await?;
        if recorded.rows_affected() == 0 {
            let earlier = sqlx::query!(
                "select operator, replayed_at from dead_letter_replays where dead_letter_id = $1",
                dead.id
            )
            .fetch_one(&mut *tx)
            .await?;
            outcomes.push(ReplayOutcome::AlreadyReplayed {
                id: dead.id,
                at: earlier.replayed_at,
                by: earlier.operator,
            });
            continue;
        }
        let mut headers: Vec<(String, String)> =
            serde_json::from_value(dead.replay_headers).unwrap_or_default();
        headers.push((REPLAY_OF_HEADER.into(), dead.id.to_string()));
        let message = OutgoingMessage {
            exchange: exchange.clone(),
            routing_key: routing_key.clone(),
            message_type: dead.message_type,
            message_id: dead.message_id,
            correlation_id: dead.correlation_id,
            body: dead.body,
            headers,
        };
        crate::outbox::enqueue(&mut tx, &[message]).await?;
        outcomes.push(ReplayOutcome::Replayed {
            id: dead.id,
            exchange,
            routing_key,
        });
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// The broker user that first sent a replayed message, if an operator's replay of dead letter
/// `dead_letter_id` with exactly this body is on record. `None`: no such replay, so the replay
/// header proves nothing and must be ignored. `Some(None)`: a replay whose original carried no
/// user.
pub async fn replayed_sender(
    db: &PgPool,
    dead_letter_id: i64,
    body: &[u8],
) -> sqlx::Result<Option<Option<String>>> {
    let found = sqlx::query_scalar!(
        r#"select d.original_user_id
           from dead_letters d
           join dead_letter_replays r on r.dead_letter_id = d.id
           where d.id = $1 and d.body = $2"#,
        dead_letter_id,
        body,
    )
    .fetch_optional(db)
    .await?;
    Ok(found)
}

/// Dead letters not yet replayed, per reason: for `relayctl status`.
pub async fn waiting_by_reason(db: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        r#"select d.reason, count(*) as "count!"
           from dead_letters d
           where not exists (select 1 from dead_letter_replays r where r.dead_letter_id = d.id)
           group by d.reason
           order by d.reason"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.reason, row.count))
        .collect())
}
