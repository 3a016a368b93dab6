-- The indexes SQLite's step log shed in its 0002 and 0004, for the same
-- reason: every index on `jobs` is written at each of the three writes a
-- delivered job makes (its insert, its claim, its result), since each one
-- changes `state` and so can never be a heap-only update. Profiled at one
-- node (50,000 jobs, pg_stat_statements), the claim and the result were 60 %
-- of the server's time, most of it index entries.
--
-- `jobs_due` duplicated `jobs_due_by_flow`: the earliest due time overall is
-- the least of each flow's earliest, found by skipping through the flows.
DROP INDEX jobs_due;
-- Listings filter by flow among other conditions and walk the primary key
-- in id order.
DROP INDEX jobs_by_flow;
-- `jobs_by_state` held every job. In its place, only the jobs set aside
-- from the delivery path: suspended, dead (the dead-letter queue),
-- cancelled. A delivered job never enters it. Listings and counts by one of
-- these states name the state as a literal (store/sql.rs), which lets the
-- planner use it; waiting and running jobs are counted through
-- `jobs_due_by_flow` and `jobs_leased`, succeeded ones as what the others
-- leave of the total.
DROP INDEX jobs_by_state;
CREATE INDEX jobs_parked ON jobs (state, id)
    WHERE state IN ('suspended', 'dead', 'cancelled');
