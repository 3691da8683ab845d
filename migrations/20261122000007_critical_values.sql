-- Critical values (危急值): the closed loop between the reviewer who flags a critical finding and
-- the clinician at the origin who must acknowledge it with a read-back. Four tables: the
-- notification itself (open until acknowledged), the register of every send, the valid
-- acknowledgements received, and those the relay refused.

-- One notification per critical report version. Opened by the review desk in the transaction
-- that signs the report; closed by the recorder in the transaction that records the first valid
-- acknowledgement. The row answers "who was told what, when, who acknowledged, how long".
create table critical_notifications (
    -- The notification id the origin's acknowledgement must name.
    id                 uuid primary key,
    request_uuid       uuid not null,
    report_version     int not null,
    -- Denormalised from the request so that the register and the acknowledgement check read one
    -- row: the origin is the only hospital whose broker user may acknowledge.
    origin_hospital    text not null references hospitals (code),
    request_id         text not null,
    correlation_id     text not null,
    -- The critical finding in the reviewer's words, as sent (clinical text, no patient identity).
    finding            text not null,
    reviewer_id        text not null references reviewers (id),
    reviewer_hospital  text not null references hospitals (code),
    -- When the desk opened the notification (database clock, the same transaction as the report).
    notified_at        timestamptz not null,
    -- After this moment, unacknowledged, the recorder's critical clock sends reminders.
    acknowledge_by     timestamptz not null,
    -- Reminders sent so far (the first notification is reminder 0 and not counted here).
    reminders_sent     int not null default 0 check (reminders_sent >= 0),
    -- When the notification or its latest reminder was enqueued; the next reminder is due
    -- critical_repeat_seconds after it.
    last_sent_at       timestamptz not null,
    -- Set once, by the first valid acknowledgement (database clock when the relay recorded it);
    -- null while the notification is open.
    acknowledged_at    timestamptz,
    -- When the clinician says they acknowledged (the origin's clock; informative only).
    clinician_acknowledged_at timestamptz,
    -- The acknowledging clinician's staff id and display name at the origin (staff data).
    clinician_id       text,
    clinician_name     text,
    -- The finding as the clinician read it back, and whether it matches the finding after
    -- normalisation (case, punctuation and spacing ignored; the read-back must contain the whole
    -- finding). A mismatch is kept and shown in the register, not refused: the clinician did
    -- acknowledge, and the reviewing side must see that the read-back differs.
    read_back          text,
    read_back_matches  boolean,
    -- The message id of the acknowledgement that closed the notification.
    ack_message_id     text,
    unique (request_uuid, report_version),
    foreign key (request_uuid, report_version) references review_results (request_uuid, version),
    -- An acknowledgement is recorded whole or not at all.
    check ((acknowledged_at is null) = (clinician_id is null)
       and (acknowledged_at is null) = (clinician_name is null)
       and (acknowledged_at is null) = (read_back is null)
       and (acknowledged_at is null) = (read_back_matches is null)
       and (acknowledged_at is null) = (ack_message_id is null))
);

-- The critical clock scans only open notifications, oldest send first.
create index critical_notifications_open on critical_notifications (last_sent_at)
    where acknowledged_at is null;
-- The register lists by time, per origin.
create index critical_notifications_notified on critical_notifications (notified_at);

-- The register of sends: every time the relay put a notification (reminder 0) or a reminder
-- (n >= 1) into the origin's critical queue, with the minutes it had been open. Append-only, so
-- "was the origin told, and how often" can never be rewritten.
create table critical_notification_sends (
    notification_id uuid not null references critical_notifications (id),
    reminder        int not null check (reminder >= 0),
    -- The AMQP message id of the send (critical:<notification>:<reminder>).
    message_id      text not null,
    sent_at         timestamptz not null,
    primary key (notification_id, reminder)
);

-- Acknowledgements the relay refused: unknown or malformed notification id, another origin's
-- notification, missing clinician or read-back, an unreadable body, an unregistered sender.
-- Keyed by the publish's message id (or the body's hash when it had none) so that a redelivered
-- refusal is recorded, answered and dead-lettered once. Append-only.
create table critical_acknowledgement_refusals (
    message_key     text primary key,
    -- As the acknowledgement named it (may not be a UUID, may be empty).
    notification_id text not null,
    -- The hospital behind the broker-verified user_id, when it is a registered one.
    sender_hospital text references hospitals (code),
    -- The broker-verified user_id itself, when the publisher set one.
    sender_user     text,
    -- Stable machine-readable reason, as sent in AcknowledgementRefused.reason.
    reason          text not null,
    detail          text not null,
    refused_at      timestamptz not null default now()
);

-- Every acknowledgement the relay accepted as valid, the one that closed the notification and
-- any later ones (a county's retry, a second clinician): who acknowledged which notification,
-- with what read-back, when. Keyed by the message id (or body hash), so a redelivered message is
-- recorded once. Append-only.
create table critical_acknowledgements (
    message_key       text primary key,
    notification_id   uuid not null references critical_notifications (id),
    clinician_id      text not null,
    clinician_name    text not null,
    read_back         text not null,
    read_back_matches boolean not null,
    -- As stated by the origin (its clock), if it said.
    clinician_acknowledged_at timestamptz,
    received_at       timestamptz not null default clock_timestamp(),
    -- True for the acknowledgement that closed the notification; false for later repeats.
    closed_it         boolean not null
);

create index critical_acknowledgements_notification on critical_acknowledgements (notification_id);

-- The register is history: refuse_history_rewrite() (migration 0004) refuses changes to it.
create trigger critical_notification_sends_append_only
    before update or delete on critical_notification_sends
    for each row execute function refuse_history_rewrite();

create trigger critical_acknowledgements_append_only
    before update or delete on critical_acknowledgements
    for each row execute function refuse_history_rewrite();

create trigger critical_acknowledgement_refusals_append_only
    before update or delete on critical_acknowledgement_refusals
    for each row execute function refuse_history_rewrite();
