-- Flows that read the payload.
--
-- `priority` (-100..100, higher first): within a flow, due jobs of higher
-- priority are claimed first. The claim index leads with it after the flow,
-- so each (flow, priority) lane is read earliest due first by the index
-- alone (store/sql.rs `lanes_waiting`).
--
-- `branches`: each branch of a parallel step retries on its own.
--
-- `responses`: the answers of the steps a later step's expressions read
-- (`steps.NAME.response`), as a JSON object by step name, so that a restart
-- between steps loses nothing. NULL for flows that read none.
--
-- New last columns: `RETURNING *` rows are read by position
-- (store/sqlite/writer.rs).
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0
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
