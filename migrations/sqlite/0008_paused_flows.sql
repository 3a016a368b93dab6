-- no-transaction
--
-- Flows paused by an operator (`POST /v1/flows/{flow}/pause`): their due
-- jobs wait `suspended` with reason `paused`, on every node, across
-- restarts. The reason joins the check on `jobs.reason` (see 0006), so the
-- jobs table is rebuilt once more, as 0006 did.

PRAGMA foreign_keys = OFF;

BEGIN IMMEDIATE;

CREATE TABLE paused_flows (
    flow      TEXT PRIMARY KEY NOT NULL,
    paused_at INTEGER NOT NULL,
    paused_by TEXT NOT NULL
);

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
                        OR reason = 'flow_removed' OR reason = 'paused'
                        OR reason = 'exhausted' OR reason = 'permanent'),
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
