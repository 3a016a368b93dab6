-- Flows paused by an operator: their due jobs wait `suspended` with
-- reason `paused`, on every node, across restarts. The reason joins the
-- check on `jobs.reason` (see 0002).

CREATE TABLE paused_flows (
    flow      TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    paused_at BIGINT NOT NULL,
    paused_by TEXT NOT NULL
);

ALTER TABLE jobs DROP CONSTRAINT jobs_reason_check;

ALTER TABLE jobs ADD CONSTRAINT jobs_reason_check
    CHECK (reason IS NULL OR reason = 'maintenance' OR reason = 'off_hours' OR reason = 'breaker_open'
          OR reason = 'quota' OR reason = 'flow_removed' OR reason = 'paused'
          OR reason = 'exhausted' OR reason = 'permanent');
