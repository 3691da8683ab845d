-- The transactional outbox. A service that changes state and must tell others writes the state
-- and the messages in one transaction; its relay task publishes the rows (confirmed, mandatory)
-- and deletes them. A crash between commit and publish therefore loses nothing; it can only
-- publish a row twice, and every consumer deduplicates (message ids, unique keys).
create table outbox (
    id             bigint generated always as identity primary key,
    exchange       text not null,
    routing_key    text not null,
    message_type   text not null,
    message_id     text not null,
    correlation_id text not null,
    body           bytea not null,
    -- Extra string headers as [[name, value], ...]; used for dead-letter reasons.
    headers        jsonb not null default '[]',
    created_at     timestamptz not null default now()
);
