-- no-transaction
--
-- Pacing that adapts: two reasons join the check on `jobs.reason`:
-- `slowed` (held by a channel's `slow_down` or by the engine's health,
-- burning nothing) and `adapted` (dead because the channel's history said
-- further retries would not succeed). SQLite cannot alter a CHECK, so the
-- table is rebuilt once more, as 0008 did, its columns in the same order
-- (`RETURNING *` rows are read by position, store/sqlite/writer.rs), with
-- one new last column: `slowed`, how many times `slow_down` delayed the job
-- (for its `max_delays`).

PRAGMA foreign_keys = OFF;

BEGIN IMMEDIATE;

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
                        OR reason = 'flow_removed' OR reason = 'paused' OR reason = 'slowed'
                        OR reason = 'exhausted' OR reason = 'permanent' OR reason = 'adapted'),
    policy_version    TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    attempts_total    INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_until       INTEGER,
    notify_at         INTEGER,
    notify_attempts   INTEGER NOT NULL DEFAULT 0,
    traceparent       TEXT,
    priority          INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    responses         TEXT,
    branches          TEXT,
    slowed            INTEGER NOT NULL DEFAULT 0 CHECK (slowed >= 0),
    UNIQUE (flow, idempotency_key),
    CHECK ((state = 'running') = (lease_owner IS NOT NULL))
);

INSERT INTO jobs_rebuilt (rowid, id, flow, idempotency_key, payload, state, step_index,
        step, channel_index, attempt, series_started_at, held_ms, next_at, reason,
        policy_version, created_at, updated_at, attempts_total, lease_owner, lease_until,
        notify_at, notify_attempts, traceparent, priority, responses, branches)
    SELECT rowid, id, flow, idempotency_key, payload, state, step_index,
        step, channel_index, attempt, series_started_at, held_ms, next_at, reason,
        policy_version, created_at, updated_at, attempts_total, lease_owner, lease_until,
        notify_at, notify_attempts, traceparent, priority, responses, branches
    FROM jobs;

DROP TABLE jobs;

ALTER TABLE jobs_rebuilt RENAME TO jobs;

-- The indexes of 0008 and 0010.
CREATE INDEX jobs_due_by_flow ON jobs (flow, priority, next_at)
    WHERE state IN ('pending', 'suspended');
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_notify ON jobs (notify_at) WHERE notify_at IS NOT NULL;
CREATE INDEX jobs_parked ON jobs (state, id)
    WHERE state = 'suspended' OR state = 'dead' OR state = 'cancelled';

COMMIT;

PRAGMA foreign_keys = ON;
