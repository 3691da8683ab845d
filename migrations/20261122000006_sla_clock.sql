-- The SLA clock, the escalation ladder and the lease's draft.
--
-- Turnaround targets live here, not in a service's memory: the clock starts when the county
-- published the request and must survive restarts of every service, and several dispatcher
-- instances must agree on it. The dispatcher's clock task (`dispatcher::clock`) reads these
-- columns every `clock_interval_ms`; every step it takes is one transaction that also writes its
-- lifecycle event and messages to the outbox.

-- Turnaround target per kind × priority. A frozen section (术中冰冻) has its own rows: the
-- surgeon waits at the table, whatever priority the lab chose. Edited with `relayctl sla set`;
-- a change applies to requests received afterwards (a request keeps the due time it got).
create table sla_policies (
    kind           text not null check (kind in ('ecg', 'imaging', 'pathology')),
    priority       text not null check (priority in ('stat', 'asap', 'urgent', 'routine')),
    frozen_section boolean not null default false,
    -- Time from the county's publish to the report being due.
    target         interval not null check (target > interval '0'),
    -- Time from the publish at which the request is "at risk" and a warning event is emitted;
    -- by default three quarters of the target.
    at_risk_after  interval not null check (at_risk_after > interval '0'),
    updated_at     timestamptz not null default now(),
    primary key (kind, priority, frozen_section),
    check (at_risk_after <= target),
    check (not frozen_section or kind = 'pathology')
);

insert into sla_policies (kind, priority, frozen_section, target, at_risk_after) values
    ('ecg',       'stat',    false, interval '10 minutes', interval '7 minutes 30 seconds'),
    ('ecg',       'asap',    false, interval '30 minutes', interval '22 minutes 30 seconds'),
    ('ecg',       'urgent',  false, interval '1 hour',     interval '45 minutes'),
    ('ecg',       'routine', false, interval '2 hours',    interval '90 minutes'),
    ('imaging',   'stat',    false, interval '30 minutes', interval '22 minutes 30 seconds'),
    ('imaging',   'asap',    false, interval '2 hours',    interval '90 minutes'),
    ('imaging',   'urgent',  false, interval '6 hours',    interval '4 hours 30 minutes'),
    ('imaging',   'routine', false, interval '24 hours',   interval '18 hours'),
    ('pathology', 'stat',    false, interval '4 hours',    interval '3 hours'),
    ('pathology', 'asap',    false, interval '12 hours',   interval '9 hours'),
    ('pathology', 'urgent',  false, interval '24 hours',   interval '18 hours'),
    ('pathology', 'routine', false, interval '72 hours',   interval '54 hours'),
    ('pathology', 'stat',    true,  interval '30 minutes', interval '22 minutes 30 seconds'),
    ('pathology', 'asap',    true,  interval '30 minutes', interval '22 minutes 30 seconds'),
    ('pathology', 'urgent',  true,  interval '30 minutes', interval '22 minutes 30 seconds'),
    ('pathology', 'routine', true,  interval '30 minutes', interval '22 minutes 30 seconds');

-- What happens once a request is overdue, in order. Step n runs once per request, when the
-- request is still unreported `delay_after_breach` after its due time and step n-1 has run.
-- Edited with `relayctl escalation set`.
create table escalation_ladder (
    step               int primary key check (step >= 1),
    delay_after_breach interval not null check (delay_after_breach >= interval '0'),
    -- reroute_backup: a request still waiting moves to the next backup pool (a request being
    --   read stays with its reader; see docs/notes-sla.md);
    -- page_pool_head: page the head of the pool the request is in (reviewer_pools.head_contact);
    -- page_on_call:   page `contact`, the province's on-call.
    action             text not null check (action in ('reroute_backup', 'page_pool_head', 'page_on_call')),
    -- The paging address for page_on_call; it becomes the routing key `page.<contact>`.
    contact            text check (contact ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    updated_at         timestamptz not null default now(),
    check ((action = 'page_on_call') = (contact is not null))
);

insert into escalation_ladder (step, delay_after_breach, action, contact) values
    (1, interval '0',          'reroute_backup', null),
    (2, interval '10 minutes', 'page_pool_head', null),
    (3, interval '30 minutes', 'page_on_call',   'hunan-on-call');

-- The head of a reviewer pool: who is paged when the pool's requests stay overdue (step
-- page_pool_head). A paging address, not a person's name. Set with `relayctl escalation head`.
alter table reviewer_pools
    add column head_contact text check (head_contact ~ '^[a-z0-9][a-z0-9_-]{0,63}$');

alter table review_requests
    -- Set by the dispatcher for an intra-operative frozen section: it selects the frozen-section
    -- SLA policy.
    add column frozen_section   boolean not null default false,
    -- When the report is due and when the request counts as at risk, fixed at insert from the
    -- policy (trigger below). NULL when no policy applies: no clock runs for it.
    add column due_at           timestamptz,
    add column at_risk_at       timestamptz,
    -- When the clock emitted the at-risk warning (once) and noticed the breach (once).
    add column warned_at        timestamptz,
    add column breached_at      timestamptz,
    -- Ladder steps done so far (0 = none); step n runs only when this is n-1.
    add column escalation_level int not null default 0,
    -- Overdue: shown to reviewers and operators; never cleared (the breach happened).
    add column flagged          boolean not null default false,
    -- The draft report of the lease holder. It outlives the lease on purpose: whoever claims
    -- the request next (after an expiry or an operator's break-lock) continues from it.
    add column draft            jsonb,
    add column draft_saved_at   timestamptz,
    add column draft_saved_by   text references reviewers (id);

-- The clock's scans: unreported requests by due time and at-risk mark, leases by expiry.
create index review_requests_sla_due on review_requests (due_at) where state in ('routed', 'claimed');
create index review_requests_sla_at_risk on review_requests (at_risk_at)
    where warned_at is null and state in ('routed', 'claimed');
create index review_requests_lease_expiry on review_requests (claim_expires_at) where state = 'claimed';

-- Fixes the due time at insert. The clock starts at the county's publish (`requested_at`), but
-- never later than the relay received the request: a county clock running fast must not buy
-- the reviewers time. A frozen section without a policy of its own falls back to its priority's.
create function review_requests_set_due_at() returns trigger
language plpgsql as $$
declare
    started timestamptz := least(new.requested_at, new.received_at);
    policy  sla_policies%rowtype;
begin
    if new.due_at is not null then
        return new;
    end if;
    select * into policy from sla_policies
     where kind = new.kind and priority = new.priority
       and (not frozen_section or new.frozen_section)
     order by frozen_section desc
     limit 1;
    if found then
        new.due_at := started + policy.target;
        new.at_risk_at := started + policy.at_risk_after;
    end if;
    return new;
end;
$$;

create trigger review_requests_due_at
    before insert on review_requests
    for each row execute function review_requests_set_due_at();
