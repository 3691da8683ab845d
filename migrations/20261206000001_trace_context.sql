-- Trace context: the W3C trace id that follows a request through every service's logs and every
-- message the relay publishes about it (the `traceparent` header, see docs/metrics.md,
-- "Correlation").
--
-- The trace id is the county's own when its publish carried a valid `traceparent`, otherwise one
-- the dispatcher made. It is kept beside `correlation_id`, not in its place: `correlation_id` is
-- the value the county chose and gets back on every notice (HIS vendors match on it, and it may
-- be any text), while a trace id has a fixed form that log search and tracing tools rely on.
--
-- Requests recorded before this migration get a random trace id of their own (the default is
-- evaluated per row), so every request has exactly one and the column needs no null case. The
-- dispatcher always sets it explicitly.
alter table review_requests
    -- 32 lower-case hex digits, never all zero (W3C Trace Context, level 1).
    add column trace_id text not null default replace(gen_random_uuid()::text, '-', ''),
    add constraint review_requests_trace_id_form check (
        trace_id ~ '^[0-9a-f]{32}$' and trace_id <> '00000000000000000000000000000000'
    );

-- Operators find a request by the trace id they read in a log line.
create index review_requests_trace_id on review_requests (trace_id);
