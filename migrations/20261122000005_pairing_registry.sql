-- The pairing registry as routing truth: subspecialty pairings, an audit of every registry edit,
-- and the per-lane policy that drives load-aware overflow and the desk's aging rule.

-- A pairing may be for one subspecialty (e.g. cardiac imaging, neuropathology) of a kind, with or
-- without a department. NULL means "every subspecialty". Routing takes the most specific match:
-- department + subspecialty, then department, then subspecialty, then hospital-wide.
alter table pairings add column subspecialty text
    check (subspecialty is null or subspecialty ~ '^[a-z0-9][a-z0-9_-]{0,47}$');

-- The key becomes origin + department + kind + subspecialty. NULLs are not distinct, so there is
-- exactly one hospital-wide pairing per origin and kind, as before.
alter table pairings drop constraint pairings_origin_hospital_department_kind_key;
alter table pairings add constraint pairings_key
    unique nulls not distinct (origin_hospital, department, kind, subspecialty);

-- Every change an operator made to the routing truth: who, when (the database clock), what.
-- Written in the same transaction as the change itself, so no edit exists without its row.
-- Append-only: the trigger below refuses updates and deletes, as for lifecycle_events.
create table registry_changes (
    id          bigint generated always as identity primary key,
    changed_at  timestamptz not null default clock_timestamp(),
    -- The operator's name as given to relayctl (`--operator`), or "registry-load" for a file load
    -- without one.
    operator    text not null check (operator <> ''),
    -- pairing_set (created or replaced), pairing_remove, lane_policy_set, registry_load.
    action      text not null check (action in ('pairing_set', 'pairing_remove',
                    'lane_policy_set', 'registry_load')),
    -- What was changed, as JSON: the pairing's key {origin, department, kind, subspecialty}, the
    -- lane {priority}, or {file} for a registry load.
    subject     jsonb not null,
    -- The state before and after the change (NULL when there was none: a creation or a removal).
    -- For a registry load, every pairing before and after.
    before      jsonb,
    after       jsonb,
    note        text not null default ''
);

create index registry_changes_changed_at on registry_changes (changed_at);

create trigger registry_changes_append_only
    before update or delete on registry_changes
    for each row execute function refuse_history_rewrite();

-- Per priority lane: when new requests overflow from a pool to its backups, and when waiting work
-- is offered as if it were more urgent. Read for every request and every claim, so an operator's
-- change (`relayctl lanes set`) takes effect without a restart.
create table lane_policies (
    priority       text primary key check (priority in ('stat', 'asap', 'urgent', 'routine')),
    -- A new request overflows to the first backup pool when the chosen pool's oldest request
    -- waiting (state routed) in this lane has waited longer than this. NULL: never overflow.
    overflow_after interval check (overflow_after > interval '0'),
    -- A request that has waited longer than this in this lane is offered as if it were one lane
    -- more urgent (aging, so routine work is never starved). NULL: never promoted (stat has no
    -- lane above it).
    promote_after  interval check (promote_after > interval '0'),
    check (priority <> 'stat' or promote_after is null),
    updated_at     timestamptz not null default now()
);

insert into lane_policies (priority, overflow_after, promote_after) values
    ('stat',    interval '5 minutes',  null),
    ('asap',    interval '15 minutes', interval '20 minutes'),
    ('urgent',  interval '30 minutes', interval '1 hour'),
    ('routine', interval '4 hours',    interval '2 hours');

-- A pairing as one JSON document (key, primary pool, ordered backups): what registry_changes
-- keeps as "before" and "after", written in one place so every audit row has the same shape.
create view pairing_documents as
select p.id,
       p.origin_hospital,
       p.department,
       p.kind,
       p.subspecialty,
       jsonb_build_object(
           'origin', p.origin_hospital,
           'department', p.department,
           'kind', p.kind,
           'subspecialty', p.subspecialty,
           'pool', p.primary_pool,
           'backups', coalesce((select jsonb_agg(b.pool_code order by b.rank)
                                from pairing_backups b where b.pairing_id = p.id), '[]'::jsonb)
       ) as document
from pairings p;
