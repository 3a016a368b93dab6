-- Engine health (issue 24): under a retry backlog, a claim gives fresh jobs
-- (`attempt = 0`) the room the retries' share leaves. Looked for in the
-- claim index, they hide among the whole backlog's entries; this index
-- holds the due fresh jobs alone, so finding them costs the same with one
-- retry waiting or a million. A job leaves it at its first claim.
CREATE INDEX jobs_fresh_due ON jobs (flow, priority, next_at)
    WHERE state IN ('pending', 'suspended') AND attempt = 0;
