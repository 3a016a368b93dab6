-- no-transaction
--
-- The words of a job's life, checked where they are stored: a job's
-- `reason`, an attempt's `outcome` and `decision` (the enums of
-- src/lifecycle/vocabulary.rs; a test compares these checks with them).
-- Before, any string was accepted, and five places in the code spelled
-- reasons by hand.
--
-- `OR`, not `IN` (see 0003). SQLite cannot add a check to a table: both
-- tables are rebuilt as 0003 and 0005 did, in one transaction, foreign keys
-- off so that dropping `jobs` leaves `attempts` and `payload_edits` alone.
-- A stored word outside the lists fails the migration (and the engine's
-- start) rather than being changed silently; no version of steadfast wrote
-- one.

PRAGMA foreign_keys = OFF;

BEGIN IMMEDIATE;

CREATE TABLE attempts_rebuilt (
    id             INTEGER PRIMARY KEY,
    job_id         TEXT NOT NULL REFERENCES jobs (id),
    step           TEXT NOT NULL,
    channel        TEXT NOT NULL,
    attempt        INTEGER NOT NULL,
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER NOT NULL,
    status         INTEGER,
    error          TEXT,
    error_message  TEXT,
    outcome        TEXT NOT NULL CHECK (outcome = 'success' OR outcome = 'retry' OR outcome = 'fail'
                        OR outcome = 'refresh_auth' OR outcome = 'skipped'),
    rule           TEXT,
    decision       TEXT NOT NULL CHECK (decision = 'retry' OR decision = 'suspend' OR decision = 'fallback'
                        OR decision = 'next_step' OR decision = 'succeeded'
                        OR decision = 'dead' OR decision = 'notified'
                        OR decision = 'gave_up' OR decision = 'skipped'),
    delay_ms       INTEGER,
    next_at        INTEGER,
    policy_version TEXT NOT NULL
);

INSERT INTO attempts_rebuilt (id, job_id, step, channel, attempt, started_at, finished_at,
        status, error, error_message, outcome, rule, decision, delay_ms, next_at,
        policy_version)
    SELECT id, job_id, step, channel, attempt, started_at, finished_at,
        status, error, error_message, outcome, rule, decision, delay_ms, next_at,
        policy_version
    FROM attempts;

DROP TABLE attempts;

ALTER TABLE attempts_rebuilt RENAME TO attempts;

CREATE INDEX attempts_by_job ON attempts (job_id, id);

CREATE TABLE jobs_rebuilt (
    id                TEXT PRIMARY KEY NOT NULL,   -- UUID v7: sorts by creation time
    flow              TEXT NOT NULL,
    idempotency_key   TEXT NOT NULL,
    payload           TEXT NOT NULL,               -- JSON text
    state             TEXT NOT NULL CHECK (state = 'pending' OR state = 'running'
                        OR state = 'suspended' OR state = 'succeeded' OR state = 'dead'
                        OR state = 'cancelled'),
    step_index        INTEGER NOT NULL CHECK (step_index >= 0),
    step              TEXT NOT NULL,
    channel_index     INTEGER NOT NULL DEFAULT 0 CHECK (channel_index >= 0),
    attempt           INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    series_started_at INTEGER,
    held_ms           INTEGER NOT NULL DEFAULT 0,
    next_at           INTEGER,
    reason            TEXT CHECK (reason IS NULL OR reason = 'maintenance' OR reason = 'off_hours'
                        OR reason = 'breaker_open' OR reason = 'quota'
                        OR reason = 'flow_removed' OR reason = 'exhausted'
                        OR reason = 'permanent'),
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

INSERT INTO jobs_rebuilt (rowid, id, flow, idempotency_key, payload, state, step_index,
        step, channel_index, attempt, series_started_at, held_ms, next_at, reason,
        policy_version, created_at, updated_at, attempts_total, lease_owner, lease_until,
        notify_at, notify_attempts)
    SELECT rowid, id, flow, idempotency_key, payload, state, step_index,
        step, channel_index, attempt, series_started_at, held_ms, next_at, reason,
        policy_version, created_at, updated_at, attempts_total, lease_owner, lease_until,
        notify_at, notify_attempts
    FROM jobs;

DROP TABLE jobs;

ALTER TABLE jobs_rebuilt RENAME TO jobs;

-- The indexes of 0003 and 0004.
CREATE INDEX jobs_due_by_flow ON jobs (flow, next_at) WHERE state IN ('pending', 'suspended');
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_notify ON jobs (notify_at) WHERE notify_at IS NOT NULL;
CREATE INDEX jobs_parked ON jobs (state, id)
    WHERE state = 'suspended' OR state = 'dead' OR state = 'cancelled';

COMMIT;

PRAGMA foreign_keys = ON;
