-- The node this step log is written by (SQLite has one: the engine lock
-- keeps a second process out), with its heartbeat, as on PostgreSQL
-- (migrations/postgres/0003_nodes.sql), so that `GET /v1/nodes` and the
-- rescue of expired leases read the same table on both.

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY NOT NULL,
    instance     TEXT NOT NULL,
    version      TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
