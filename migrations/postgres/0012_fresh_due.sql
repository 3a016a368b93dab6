-- Due fresh jobs alone, for a claim under a retry backlog (see the SQLite
-- migration 14).
CREATE INDEX jobs_fresh_due ON jobs (flow, priority, next_at)
    WHERE state IN ('pending', 'suspended') AND attempt = 0;
