-- Dead letters, kept where an operator can read and replay them.
--
-- Every queue dead-letters into the dead-letter exchange; the recorder consumes the dead-letter
-- queue and stores each message here before acking it, so the broker's copy is only a buffer.
-- Both tables are append-only (see the trigger below): a dead letter and its replay are part of
-- the audit trail.
create table dead_letters (
    id                   bigint generated always as identity primary key,
    -- SHA-256 over the message as it reached the dead-letter queue (routing key, message id,
    -- headers except the broker's redelivery counter, body). A dead letter redelivered to the
    -- recorder is stored once; the same message dying again after a replay carries the replay
    -- header and a new x-death entry, so it is a new dead letter.
    fingerprint          bytea not null unique,
    -- The queue it died in, or 'outbox' for a message that no queue would take.
    source_queue         text not null,
    -- telerelay's own reason (e.g. sender_mismatch) or the broker's (delivery_limit, rejected).
    reason               text not null,
    detail               text not null,
    original_exchange    text,
    original_routing_key text,
    -- The broker-verified user that first published it. Only the relay's own user and the
    -- broker itself can publish to the dead-letter exchange, so this is trustworthy.
    original_user_id     text,
    message_type         text not null,
    message_id           text not null,
    correlation_id       text not null,
    -- The dead letter this one is a replay of, when a replayed message died again.
    replay_of            bigint references dead_letters (id),
    -- Every header as JSON (x-death included), for inspection.
    headers              jsonb not null,
    -- The headers a replay carries ([[name, value], ...] as in the outbox): the original
    -- publisher's own, without telerelay's or the broker's death records.
    replay_headers       jsonb not null,
    body                 bytea not null,
    stored_at            timestamptz not null default now()
);

create index dead_letters_reason on dead_letters (reason, stored_at);

-- One row per replay an operator asked for. The primary key makes a replay idempotent: a dead
-- letter is re-injected at most once. If the replayed message dies again, it comes back as a new
-- dead letter (replay_of set), which can be replayed in its turn.
create table dead_letter_replays (
    dead_letter_id bigint primary key references dead_letters (id),
    -- Who asked (relayctl --operator), and why.
    operator       text not null,
    note           text not null,
    -- Where the replay was sent: the queue it died in through the default exchange, or for an
    -- unroutable outbox message its original exchange and routing key.
    exchange       text not null,
    routing_key    text not null,
    replayed_at    timestamptz not null default now()
);

create function refuse_history_rewrite() returns trigger
language plpgsql as $$
begin
    raise exception '% is append-only (% refused)', tg_table_name, tg_op;
end;
$$;

create trigger dead_letters_append_only
    before update or delete on dead_letters
    for each row execute function refuse_history_rewrite();

create trigger dead_letter_replays_append_only
    before update or delete on dead_letter_replays
    for each row execute function refuse_history_rewrite();
