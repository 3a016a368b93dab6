-- The step log. Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY NOT NULL,   -- UUID v7: sorts by creation time
    flow              TEXT NOT NULL,
    idempotency_key   TEXT NOT NULL,
    payload           TEXT NOT NULL,               -- JSON text
    state             TEXT NOT NULL CHECK (state IN
                        ('pending', 'running', 'suspended', 'succeeded', 'dead', 'cancelled')),
    step_index        INTEGER NOT NULL CHECK (step_index >= 0),
    step              TEXT NOT NULL,
    channel_index     INTEGER NOT NULL DEFAULT 0 CHECK (channel_index >= 0),
    attempt           INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    series_started_at INTEGER,
    held_ms           INTEGER NOT NULL DEFAULT 0,
    next_at           INTEGER,
    reason            TEXT,
    policy_version    TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    attempts_total    INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_until       INTEGER,
    notify_at         INTEGER,
    notify_attempts   INTEGER NOT NULL DEFAULT 0,
    UNIQUE (flow, idempotency_key),
    CHECK ((state = 'running') = (lease_owner IS NOT NULL))
);

-- What the scheduler claims: only waiting jobs are indexed. Claims go flow
-- by flow (fairness), and the earliest due time overall says how long to
-- sleep.
CREATE INDEX jobs_due ON jobs (next_at) WHERE state IN ('pending', 'suspended');
CREATE INDEX jobs_due_by_flow ON jobs (flow, next_at) WHERE state IN ('pending', 'suspended');
-- Expired leases to rescue.
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'running';
-- Dead-job notifications owed.
CREATE INDEX jobs_notify ON jobs (notify_at) WHERE notify_at IS NOT NULL;
-- Listing by state or flow, newest first.
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE INDEX jobs_by_flow ON jobs (flow, id);

CREATE TABLE attempts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id         TEXT NOT NULL REFERENCES jobs (id),
    step           TEXT NOT NULL,
    channel        TEXT NOT NULL,
    attempt        INTEGER NOT NULL,
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER NOT NULL,
    status         INTEGER,
    error          TEXT,
    error_message  TEXT,
    outcome        TEXT NOT NULL,
    rule           TEXT,
    decision       TEXT NOT NULL,
    delay_ms       INTEGER,
    next_at        INTEGER,
    policy_version TEXT NOT NULL
);

CREATE INDEX attempts_by_job ON attempts (job_id, id);

-- Every payload an operator replaced, with who and when.
CREATE TABLE payload_edits (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    old_payload TEXT NOT NULL,
    new_payload TEXT NOT NULL,
    editor      TEXT NOT NULL,
    edited_at   INTEGER NOT NULL
);

CREATE INDEX payload_edits_by_job ON payload_edits (job_id, id);
