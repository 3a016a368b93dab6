-- no-transaction
--
-- The check on `jobs.state` was `state IN (six names)`. SQLite evaluates a
-- constant `IN` list of more than two values by building a temporary b-tree
-- of the list, at every row a statement writes: a fifth of the step log's
-- CPU per delivered job (`cargo bench --bench step_log`, BENCHMARKS.md). The
-- same check written with `OR` compares in place.
--
-- SQLite cannot change a table's check in place: the table is rebuilt as its
-- documentation prescribes (https://www.sqlite.org/lang_altertable.html,
-- "Making Other Kinds Of Table Schema Changes"), with foreign keys off so
-- that dropping the old table leaves `attempts` and `payload_edits` alone,
-- in one transaction. Run again after a crash before sqlx recorded it, it
-- does the same work again on the rebuilt table.

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

-- Row ids kept: nothing refers to them, but the copy stays exact.
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

-- The indexes of 0001 that 0002 kept.
CREATE INDEX jobs_due_by_flow ON jobs (flow, next_at) WHERE state IN ('pending', 'suspended');
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_notify ON jobs (notify_at) WHERE notify_at IS NOT NULL;
CREATE INDEX jobs_by_state ON jobs (state, id);

COMMIT;

PRAGMA foreign_keys = ON;
