-- Review requests, their results and the audit trail.

-- One row per accepted request. (origin_hospital, request_id) is the origin's idempotency key:
-- the unique constraint is what makes a duplicate publish a no-op instead of a second review.
create table review_requests (
    -- The relay's own id, carried in every message about the request.
    id                uuid primary key,
    origin_hospital   text not null references hospitals (code),
    request_id        text not null,
    -- SHA-256 of the request body as received: the same request id with other content is a
    -- conflicting duplicate and is rejected, never merged.
    content_sha256    bytea not null,
    -- Identical copies received after the first (HIS retries, broker redeliveries): deduplicated,
    -- counted so that an operator can see a retry storm.
    duplicates_received int not null default 0,
    kind              text not null check (kind in ('ecg', 'imaging', 'pathology')),
    priority          text not null check (priority in ('stat', 'asap', 'urgent', 'routine')),
    department        text not null,
    subspecialty      text,
    correlation_id    text not null,
    requested_at      timestamptz not null,
    received_at       timestamptz not null default now(),
    -- Latest lifecycle state; the full history is in lifecycle_events.
    state             text not null check (state in ('received', 'routed', 'claimed', 'reported',
                          'delivered', 'acknowledged', 'rejected', 'returned', 'escalated',
                          'cancelled', 'expired')),
    pool_code         text references reviewer_pools (code),
    routed_at         timestamptz,
    -- The claim is a lease: a reviewer holds the request until claim_expires_at. It lives here,
    -- not as an unacked message, because a human read outlasts the broker's consumer timeout.
    claimed_by        text references reviewers (id),
    claim_expires_at  timestamptz,
    -- The request exactly as the origin sent it (protobuf), so it can be offered again when a
    -- lease expires and so the audit shows what the reviewer was asked.
    body              bytea not null,
    unique (origin_hospital, request_id),
    check ((claimed_by is null) = (claim_expires_at is null))
);

-- The reviewer's worklist and the status view look requests up by pool and state.
create index review_requests_pool_state on review_requests (pool_code, state, priority, routed_at);

-- Each report version a reviewer signed. Versions only grow; an amendment or addendum is a new row.
create table review_results (
    request_uuid     uuid not null references review_requests (id),
    version          int not null check (version >= 1),
    status           text not null check (status in ('final', 'amended', 'addendum')),
    reviewer_id      text not null references reviewers (id),
    findings         text not null,
    conclusion       text not null,
    critical         boolean not null,
    critical_finding text,
    reported_at      timestamptz not null,
    -- Set by the recorder once the result sits durably in the origin's results queue.
    delivered_at     timestamptz,
    primary key (request_uuid, version)
);

-- A reviewer handed the request back (unreadable ECG, missing series, unsuitable specimen).
create table request_returns (
    request_uuid uuid primary key references review_requests (id),
    reason       text not null,
    detail       text not null,
    reviewer_id  text not null references reviewers (id),
    returned_at  timestamptz not null
);

-- Messages the dispatcher refused. Keyed by the publish's message id (or the body's hash when the
-- sender set none) so a redelivered refusal is recorded once.
create table rejected_messages (
    message_key     text primary key,
    -- The hospital that really sent it (from the broker-verified user_id), when known.
    sender_hospital text references hospitals (code),
    claimed_origin  text,
    request_id      text,
    reason          text not null,
    detail          text not null,
    rejected_at     timestamptz not null default now()
);

-- The audit trail: every state change of every request, who, when and why. Written by the
-- recorder from the events exchange (and for deliveries by the recorder itself). Append-only:
-- the trigger below refuses updates and deletes, so history cannot be rewritten.
create table lifecycle_events (
    event_id        uuid primary key,
    request_uuid    uuid references review_requests (id),
    origin_hospital text not null,
    request_id      text not null,
    state           text not null,
    actor           text not null,
    reason          text not null,
    pool_code       text,
    correlation_id  text not null,
    occurred_at     timestamptz not null,
    recorded_at     timestamptz not null default now()
);

create index lifecycle_events_request on lifecycle_events (request_uuid, occurred_at);
create index lifecycle_events_origin on lifecycle_events (origin_hospital, occurred_at);

create function lifecycle_events_are_append_only() returns trigger
language plpgsql as $$
begin
    raise exception 'lifecycle_events is append-only (% refused)', tg_op;
end;
$$;

create trigger lifecycle_events_append_only
    before update or delete on lifecycle_events
    for each row execute function lifecycle_events_are_append_only();
