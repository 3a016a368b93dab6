-- Every index on `jobs` is written three times per delivered job (insert,
-- claim, result), and SQLite writes one transaction at a time: each index
-- costs throughput.
--
-- `jobs_due` duplicated `jobs_due_by_flow`: the earliest due time overall is
-- now the least of each flow's earliest, found by walking the distinct flows.
DROP INDEX jobs_due;
-- `jobs_by_flow` was never chosen by the planner: listings filter with
-- `?n IS NULL OR flow = ?n` and walk the primary key in id order.
DROP INDEX jobs_by_flow;
