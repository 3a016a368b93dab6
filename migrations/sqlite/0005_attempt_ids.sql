-- `attempts.id` without AUTOINCREMENT. With it, SQLite reads and rewrites
-- the table's row in `sqlite_sequence` at every insert: one more b-tree
-- search and write for each attempt recorded, on the path every delivered
-- job takes. What AUTOINCREMENT adds is that an id is never reused after
-- the highest rows are deleted; attempts are never deleted, and a plain
-- INTEGER PRIMARY KEY takes the highest id plus one, so ids still rise in
-- the order attempts were recorded (the "last attempt" of a job is the
-- highest id).
--
-- SQLite cannot drop AUTOINCREMENT in place: the table is rebuilt. No
-- table refers to `attempts`, so foreign keys stay on (each copied row's
-- job is checked again) and the rebuild is one transaction.
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
    outcome        TEXT NOT NULL,
    rule           TEXT,
    decision       TEXT NOT NULL,
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

DELETE FROM sqlite_sequence WHERE name = 'attempts';
