-- The step log on PostgreSQL: the same tables as SQLite's, so records.rs
-- stays shared. Times are milliseconds since the Unix epoch (UTC), BIGINT,
-- like SQLite's INTEGER; counts are BIGINT too so one decoder reads both.

CREATE TABLE jobs (
    id                TEXT COLLATE "C" PRIMARY KEY NOT NULL,  -- UUID v7, byte order: sorts by creation time
    flow              TEXT COLLATE "C" NOT NULL,
    idempotency_key   TEXT NOT NULL,
    payload           TEXT NOT NULL,               -- JSON text, kept byte for byte
    state             TEXT NOT NULL CHECK (state IN
                        ('pending', 'running', 'suspended', 'succeeded', 'dead', 'cancelled')),
    step_index        BIGINT NOT NULL CHECK (step_index >= 0),
    step              TEXT NOT NULL,
    channel_index     BIGINT NOT NULL DEFAULT 0 CHECK (channel_index >= 0),
    attempt           BIGINT NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    series_started_at BIGINT,
    held_ms           BIGINT NOT NULL DEFAULT 0,
    next_at           BIGINT,
    reason            TEXT,
    policy_version    TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    attempts_total    BIGINT NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_until       BIGINT,
    notify_at         BIGINT,
    notify_attempts   BIGINT NOT NULL DEFAULT 0,
    UNIQUE (flow, idempotency_key),
    CHECK ((state = 'running') = (lease_owner IS NOT NULL))
);

CREATE INDEX jobs_due ON jobs (next_at) WHERE state IN ('pending', 'suspended');
CREATE INDEX jobs_due_by_flow ON jobs (flow, next_at) WHERE state IN ('pending', 'suspended');
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_notify ON jobs (notify_at) WHERE notify_at IS NOT NULL;
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE INDEX jobs_by_flow ON jobs (flow, id);

CREATE TABLE attempts (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id         TEXT NOT NULL REFERENCES jobs (id),
    step           TEXT NOT NULL,
    channel        TEXT NOT NULL,
    attempt        BIGINT NOT NULL,
    started_at     BIGINT NOT NULL,
    finished_at    BIGINT NOT NULL,
    status         BIGINT,
    error          TEXT,
    error_message  TEXT,
    outcome        TEXT NOT NULL,
    rule           TEXT,
    decision       TEXT NOT NULL,
    delay_ms       BIGINT,
    next_at        BIGINT,
    policy_version TEXT NOT NULL
);

CREATE INDEX attempts_by_job ON attempts (job_id, id);

CREATE TABLE payload_edits (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    old_payload TEXT NOT NULL,
    new_payload TEXT NOT NULL,
    editor      TEXT NOT NULL,
    edited_at   BIGINT NOT NULL
);

CREATE INDEX payload_edits_by_job ON payload_edits (job_id, id);
