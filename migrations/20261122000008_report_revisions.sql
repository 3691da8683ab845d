-- Report revisions: the link from a returned request to its resubmission, amendments and
-- addenda of a signed report, and second reads (a colleague's independent check of a report).

-- The returned request this one replaces. A reviewer returned the original (unreadable ECG,
-- missing series, unsuitable specimen); the origin sent a new request naming it in
-- `resubmission_of`. The dispatcher links the two only when the original is the same origin's
-- and was returned, and the unique index below allows one resubmission per returned request, so
-- the chain of attempts for one patient question is a list, never a tree.
alter table review_requests
    add column resubmission_of uuid references review_requests (id),
    add constraint review_requests_resubmission_not_self check (resubmission_of <> id);

create unique index review_requests_one_resubmission on review_requests (resubmission_of)
    where resubmission_of is not null;

-- A version after the first may amend the report (replace what it said) or add an addendum to
-- it (keep it, add to it). Either names the version it revises and why; the final report names
-- neither. Every version is kept and delivered, so the origin sees the whole story.
alter table review_results
    -- The version this one amends or adds to (the latest version when it was signed).
    add column supersedes_version int,
    -- Why the reviewer changed or added to the report, in the reviewer's words.
    add column revision_reason text,
    add constraint review_results_revision_fields check (
        (status = 'final' and supersedes_version is null and revision_reason is null)
        or (status in ('amended', 'addendum') and supersedes_version is not null
            and revision_reason is not null and supersedes_version < version)
    );

-- Second reads: a share of final reports (and, if configured, every critical one) is read again
-- by a second reviewer of the same pool, who records agreement or discordance. Opened in the
-- transaction that signs the report; claimed as a lease like a request, because a careful second
-- read outlasts any broker timeout.
create table second_reads (
    id              bigint generated always as identity primary key,
    request_uuid    uuid not null references review_requests (id),
    -- The report version being checked and who signed it: the first reader never gets it.
    report_version  int not null,
    first_reader    text not null references reviewers (id),
    -- The pool whose reviewers may take it (the first reader's pool).
    pool_code       text not null references reviewer_pools (code),
    -- pending: waiting for a second reader; claimed: a second reader holds the lease;
    -- recorded: the verdict is in (final).
    state           text not null check (state in ('pending', 'claimed', 'recorded')),
    second_reader   text references reviewers (id),
    -- The second reader's lease; an expired lease lets a colleague take the read over.
    lease_expires_at timestamptz,
    verdict         text check (verdict in ('agree', 'discordant')),
    -- The second reader's comment (what differs, for a discordant read).
    comment         text,
    -- Why it was opened: 'sampled' (the configured share) or 'critical' (every critical report).
    selected_because text not null check (selected_because in ('sampled', 'critical')),
    requested_at    timestamptz not null default now(),
    claimed_at      timestamptz,
    recorded_at     timestamptz,
    foreign key (request_uuid, report_version) references review_results (request_uuid, version),
    -- One second read per report version.
    unique (request_uuid, report_version),
    check (second_reader is distinct from first_reader),
    check ((state = 'pending') = (second_reader is null)),
    check ((state = 'claimed') = (lease_expires_at is not null)),
    check ((state = 'recorded') = (verdict is not null and recorded_at is not null))
);

-- Reviewers look for the oldest open second read of their pool.
create index second_reads_open on second_reads (pool_code, requested_at) where state <> 'recorded';
