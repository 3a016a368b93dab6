-- The words of a job's life, checked where they are stored: a job's
-- `reason`, an attempt's `outcome` and `decision` (the enums of
-- src/lifecycle/vocabulary.rs; a test compares these checks with them).
-- Written with `OR` as in SQLite's 0006, so that one list serves both.

ALTER TABLE jobs ADD CONSTRAINT jobs_reason_check
    CHECK (reason IS NULL OR reason = 'maintenance' OR reason = 'off_hours' OR reason = 'breaker_open'
          OR reason = 'quota' OR reason = 'flow_removed' OR reason = 'exhausted'
          OR reason = 'permanent');

ALTER TABLE attempts ADD CONSTRAINT attempts_outcome_check
    CHECK (outcome = 'success' OR outcome = 'retry' OR outcome = 'fail'
          OR outcome = 'refresh_auth' OR outcome = 'skipped');

ALTER TABLE attempts ADD CONSTRAINT attempts_decision_check
    CHECK (decision = 'retry' OR decision = 'suspend' OR decision = 'fallback'
          OR decision = 'next_step' OR decision = 'succeeded' OR decision = 'dead'
          OR decision = 'notified' OR decision = 'gave_up' OR decision = 'skipped');
