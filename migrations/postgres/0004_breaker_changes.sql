-- Circuit breakers opened and closed on one node, for the others: each node
-- appends its own changes and reads the others' in order, once a second.
-- Kept an hour.

CREATE TABLE breaker_changes (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel   TEXT NOT NULL,
    open      BOOLEAN NOT NULL,
    at        BIGINT NOT NULL,
    until     BIGINT NOT NULL,
    reason    TEXT NOT NULL,
    node      TEXT NOT NULL
);
