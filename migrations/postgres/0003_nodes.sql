-- The nodes sharing this step log: each writes a heartbeat every 2 s. A
-- node silent for its `--node-timeout` is dead, and its running jobs go
-- back to `pending` at once; a live node's claims are never taken over,
-- whatever their lease says (its heartbeat renews them).

CREATE TABLE nodes (
    id           TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    instance     TEXT NOT NULL,       -- one process's run under this id
    version      TEXT NOT NULL,       -- the steadfast version it runs
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
