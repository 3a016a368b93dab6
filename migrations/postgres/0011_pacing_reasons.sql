-- Pacing that adapts: `slowed` (held by a channel's `slow_down` or by the
-- engine's health, burning nothing) and `adapted` (dead because the
-- channel's history said further retries would not succeed) join the check
-- on `jobs.reason` (see 0005); `slowed` counts the times `slow_down`
-- delayed the job (for its `max_delays`).

ALTER TABLE jobs DROP CONSTRAINT jobs_reason_check;

ALTER TABLE jobs ADD CONSTRAINT jobs_reason_check
    CHECK (reason IS NULL OR reason = 'maintenance' OR reason = 'off_hours' OR reason = 'breaker_open'
          OR reason = 'quota' OR reason = 'flow_removed' OR reason = 'paused' OR reason = 'slowed'
          OR reason = 'exhausted' OR reason = 'permanent' OR reason = 'adapted');

ALTER TABLE jobs ADD COLUMN slowed BIGINT NOT NULL DEFAULT 0 CHECK (slowed >= 0);
