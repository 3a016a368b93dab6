-- The console's overview (issue 25): each flow's jobs delivered and dead
-- in the hour, counted like the channels' insights, in the same table:
-- `metric` `flow_ends`, `channel` naming the flow, `key` `succeeded` or
-- `dead`. SQLite cannot change a CHECK in place: the table is rebuilt.
CREATE TABLE insight_counts_rebuilt (
    channel TEXT NOT NULL,
    hour    INTEGER NOT NULL,
    metric  TEXT NOT NULL CHECK (metric = 'attempts' OR metric = 'successes'
                OR metric = 'errors' OR metric = 'latency' OR metric = 'flow_ends'),
    key     TEXT NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (channel, hour, metric, key)
) WITHOUT ROWID;

INSERT INTO insight_counts_rebuilt (channel, hour, metric, key, count)
    SELECT channel, hour, metric, key, count FROM insight_counts;

DROP TABLE insight_counts;

ALTER TABLE insight_counts_rebuilt RENAME TO insight_counts;

CREATE INDEX insight_counts_by_hour ON insight_counts (hour);
