-- Flows that read the payload (see the SQLite migration 10): a job's
-- `priority` leads its flow's claim lane, and `responses` keeps the answers
-- of the steps a later step's expressions read.
ALTER TABLE jobs ADD COLUMN priority BIGINT NOT NULL DEFAULT 0
    CHECK (priority BETWEEN -100 AND 100);
ALTER TABLE jobs ADD COLUMN responses TEXT;
-- The branches of the job's parallel steps, as a JSON object by step name
-- then channel: each branch's series (state, attempts, next try).
ALTER TABLE jobs ADD COLUMN branches TEXT;
-- The member of a pool an attempt went to (`channel` names the pool).
ALTER TABLE attempts ADD COLUMN member TEXT;

DROP INDEX jobs_due_by_flow;
CREATE INDEX jobs_due_by_flow ON jobs (flow, priority, next_at)
    WHERE state IN ('pending', 'suspended');
