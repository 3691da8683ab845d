-- The registry: who may send, who reads, and which pool reads what for whom.
-- Maintained by the relay operator with `relayctl registry load`; the dispatcher reads it on
-- every request, so a change takes effect without a restart.

-- A hospital taking part in the relay: an origin (county/city, 受援医院), a reviewer hospital
-- (provincial, 支援医院) or both.
create table hospitals (
    code        text primary key check (code ~ '^[A-Z0-9][A-Z0-9-]{1,31}$'),
    name        text not null,
    -- The AMQP user this hospital publishes as. The broker stamps it into `user_id` and refuses a
    -- forged one; the dispatcher refuses a request whose origin does not own that user.
    broker_user text not null unique,
    updated_at  timestamptz not null default now()
);

-- A group of reviewers at one hospital who read one kind of study (optionally one subspecialty).
-- Each pool has one queue lane per priority.
create table reviewer_pools (
    code          text primary key check (code ~ '^[a-z0-9][a-z0-9-]{1,47}$'),
    hospital_code text not null references hospitals (code),
    kind          text not null check (kind in ('ecg', 'imaging', 'pathology')),
    subspecialty  text,
    name          text not null,
    updated_at    timestamptz not null default now()
);

-- A licensed doctor who reads for a pool. No patient data here; doctors are named on purpose
-- because reports are signed.
create table reviewers (
    id           text primary key check (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$'),
    pool_code    text not null references reviewer_pools (code),
    display_name text not null,
    -- The bearer token hash the review desk checks; the token itself is never stored.
    token_sha256 bytea not null,
    updated_at   timestamptz not null default now()
);

-- 结对帮扶 / 科包科: requests of `kind` from `origin_hospital` (optionally only from one
-- `department`) go to `primary_pool`. A pairing for a department wins over the hospital-wide one.
create table pairings (
    id              bigint generated always as identity primary key,
    origin_hospital text not null references hospitals (code),
    -- NULL means "every department of the origin".
    department      text,
    kind            text not null check (kind in ('ecg', 'imaging', 'pathology')),
    primary_pool    text not null references reviewer_pools (code),
    updated_at      timestamptz not null default now(),
    unique nulls not distinct (origin_hospital, department, kind)
);

-- Ordered backup pools of a pairing: where escalation and overflow go.
create table pairing_backups (
    pairing_id bigint not null references pairings (id) on delete cascade,
    rank       int not null check (rank >= 1),
    pool_code  text not null references reviewer_pools (code),
    primary key (pairing_id, rank)
);

-- The province-wide backup pool for a kind: it reads requests from origins that have no pairing
-- for that kind (e.g. the provincial alliance's ECG centre). At most one per kind.
create table kind_backup_pools (
    kind      text primary key check (kind in ('ecg', 'imaging', 'pathology')),
    pool_code text not null references reviewer_pools (code)
);
