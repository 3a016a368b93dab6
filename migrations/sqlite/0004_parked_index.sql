-- `jobs_by_state` held every job and was written at each of the three
-- writes a delivered job makes (in at the insert, out and in again at the
-- claim and at the result): 15 % of the step log's instructions. Listings
-- never used it (their filter is `?1 IS NULL OR state = ?1`); the job
-- gauges did, to count by state.
--
-- In its place, only the jobs set aside from the delivery path: suspended,
-- dead (the dead-letter queue), cancelled. A delivered job never enters it.
-- Listings and counts by one of these states search it (their SQL names the
-- state as a literal, which lets SQLite prove the index holds every row
-- wanted); waiting and running jobs are counted through `jobs_due_by_flow`
-- and `jobs_leased`, and succeeded ones as what the others leave.
--
-- `OR`, not `IN`: SQLite evaluates a partial index's condition at every row
-- written, and builds a temporary b-tree for an `IN` list of more than two
-- values (see 0003).
DROP INDEX jobs_by_state;
CREATE INDEX jobs_parked ON jobs (state, id)
    WHERE state = 'suspended' OR state = 'dead' OR state = 'cancelled';
