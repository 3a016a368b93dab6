-- Each flow's jobs delivered and dead in the hour (see the SQLite
-- migration 15): `metric` may also be `flow_ends`.
ALTER TABLE insight_counts DROP CONSTRAINT insight_counts_metric_check;

ALTER TABLE insight_counts ADD CONSTRAINT insight_counts_metric_check
    CHECK (metric = 'attempts' OR metric = 'successes' OR metric = 'errors'
           OR metric = 'latency' OR metric = 'flow_ends');
