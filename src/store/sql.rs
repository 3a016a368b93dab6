//! The statements both stores run, written once. SQLite and PostgreSQL
//! differ in how they are told things, not in what they are told: a
//! parameter is `?1` or `$1` (PostgreSQL wants a type where a parameter is
//! only tested for NULL), SQLite takes index hints and a cast on a bound
//! `LIMIT` (see `sqlite::writer::CLAIM_FLOW`), PostgreSQL locks rows that
//! several nodes may reach for. [`Dialect`] writes each difference; the
//! statements below are built from it once per store ([`Sql::new`]).
//!
//! What each store does its own way stays with it: inserts, claims and
//! result batches, tuned to each database (SQLite row by row through
//! cached statements on its writer thread, PostgreSQL in arrays through
//! `unnest`), and the counts by state.

use crate::lifecycle::JobState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Parameter `n`.
    fn p(self, n: u8) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// Parameter `n` of SQL type `ty`, where nothing else tells PostgreSQL
    /// its type (`$1::text IS NULL`).
    fn typed(self, n: u8, ty: &str) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}::{ty}"),
        }
    }

    /// `LIMIT` of parameter `n`. SQLite plans with the value bound to a bare
    /// `LIMIT ?`, and so prepares the statement again at every new value.
    fn limit(self, n: u8) -> String {
        match self {
            Dialect::Sqlite => format!("LIMIT CAST(?{n} AS INTEGER)"),
            Dialect::Postgres => format!("LIMIT ${n}"),
        }
    }

    /// Which index SQLite should search (its planner otherwise scans).
    fn indexed_by(self, index: &str) -> String {
        match self {
            Dialect::Sqlite => format!(" INDEXED BY {index}"),
            Dialect::Postgres => String::new(),
        }
    }

    /// Rows selected to be changed, locked against other nodes: a row
    /// another node holds is left to it. (SQLite has one writer.)
    fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The larger of two values: `MAX(a, b)` or `GREATEST(a, b)`.
    fn greatest(self) -> &'static str {
        match self {
            Dialect::Sqlite => "MAX",
            Dialect::Postgres => "GREATEST",
        }
    }

    /// A row read to be changed in the same transaction, locked.
    fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }
}

/// `column` is one of `states` (`OR`, not `IN`: see
/// `migrations/sqlite/0003_state_check.sql`).
fn one_of(column: &str, states: &[JobState]) -> String {
    let any: Vec<String> = states
        .iter()
        .map(|state| format!("{column} = '{}'", state.as_str()))
        .collect();
    format!("({})", any.join(" OR "))
}

/// The states a payload may be edited in.
const EDITABLE: [JobState; 3] = [JobState::Dead, JobState::Pending, JobState::Suspended];

/// The states a job may be cancelled in.
const CANCELLABLE: [JobState; 3] = [JobState::Pending, JobState::Suspended, JobState::Dead];

/// The shared statements, in one store's dialect. Parameters are listed
/// beside each.
pub(super) struct Sql {
    dialect: Dialect,
    /// A job by id: `id`.
    pub job_by_id: String,
    /// Whether a job exists: `id`.
    pub job_exists: String,
    /// A job's attempts in the order they were recorded: `job_id`.
    pub attempts_of_job: String,
    /// The last attempt (notifications left out) of each of a list of
    /// jobs: the ids as a JSON array (SQLite) or a text array (PostgreSQL).
    pub last_attempts_of_jobs: String,
    /// A job's payload edits in order: `job_id`.
    pub payload_edits_of_job: String,
    /// `dead` → `pending`: the failed step starts afresh on its primary
    /// channel (series count reset; the attempts keep the history):
    /// `id`, `at`.
    pub retry_dead: String,
    /// Every job leased to an owner, back to `pending`: `owner`.
    pub leases_release: String,
    /// The running jobs of owners that are not live nodes (no heartbeat at
    /// or after `alive_after`), past their lease or held by a dead node,
    /// back to `pending`: `now`, `alive_after`.
    pub leases_rescue: String,
    /// A node entered, or its heartbeat: `id`, `instance`, `version`,
    /// `now` (its start when it enters).
    pub node_join: String,
    /// A heartbeat: `id`, `instance`, `version`, `now`.
    pub node_heartbeat: String,
    /// A node gone: `id`, `instance`.
    pub node_leave: String,
    /// Nodes silent since before `before` that hold no job: `before`.
    pub nodes_forget: String,
    /// The nodes with their running jobs.
    pub nodes_list: String,
    /// How many nodes beat at or after `alive_after`.
    pub nodes_live: String,
    /// Dead jobs whose notification is due at `now`, leased until
    /// `lease_until`: `now`, `lease_until`, `limit`.
    pub notifications_claim: String,
    /// A notification attempt counted, the next one due: `id`, `notify_at`.
    pub notification_counted: String,
    /// Jobs suspended for a reason, due now: `reason`, `now`.
    pub resume: String,
    /// The same, for one flow: `reason`, `now`, `flow`.
    pub resume_flow: String,
    /// [`Sql::resume_flow`] unless the flow is paused again: `reason`,
    /// `now`, `flow`.
    pub resume_flow_unless_paused: String,
    /// A flow paused: `flow`, `at`, `by`.
    pub flow_pause: String,
    /// A flow's pause lifted: `flow`.
    pub flow_unpause: String,
    /// The paused flows.
    pub flows_paused: String,
    /// Adds to a channel's hourly count: `channel`, `hour`, `metric`,
    /// `key`, `count`.
    pub insight_add: String,
    /// A channel's counts from an hour on: `channel`, `since`.
    pub insights_of: String,
    /// Counts of hours before `before` deleted.
    pub insights_prune: String,
    /// Adds to a channel's errors of a second: `channel`, `second`,
    /// `count`.
    pub channel_errors_add: String,
    /// A channel's errors from a second on: `channel`, `since`.
    pub channel_errors_since: String,
    /// Error counts before `before` deleted.
    pub channel_errors_prune: String,
    /// Jobs by flow and state.
    pub count_by_flow_and_state: String,
    /// Jobs a prune may delete: `state`, `before`, `limit`.
    pub prunable: String,
    /// How many: `state`, `before`.
    pub prunable_count: String,
    /// The audit row of a payload edit, from the row being replaced:
    /// `id`, `new_payload`, `editor`, `at`.
    pub edit_audit: String,
    /// A payload replaced: `id`, `payload`, `at`.
    pub edit_payload: String,
    /// A job cancelled: `id`, `at`.
    pub cancel: String,
    /// Each lane (a flow and a priority) with waiting jobs and its earliest
    /// due time (`flow`, `priority`, `earliest`): a recursive walk over the
    /// distinct lanes of the `jobs_due_by_flow` index, a few seeks per lane,
    /// so the cost follows the number of lanes, not of waiting jobs (a
    /// `GROUP BY` over the due rows took 9 ms a cycle on PostgreSQL with
    /// 50,000 of them). The next lane is the next priority of the same flow
    /// or else the first of the next flow: two seeks the index answers
    /// directly, where one row-value comparison would scan the flow.
    pub lanes_waiting: String,
    /// Jobs by state in one statement (one snapshot), without an index over
    /// every job's state (see the lean-index migrations): waiting jobs
    /// through `jobs_due_by_flow`, running ones through `jobs_leased`, the
    /// parked states through `jobs_parked`; succeeded jobs are what the
    /// others leave of the total. Read by [`super::rows::state_counts`].
    pub count_by_state: String,
}

impl Sql {
    pub fn new(d: Dialect) -> Self {
        let p = |n| d.p(n);
        let due_by_flow = d.indexed_by("jobs_due_by_flow");
        let parked = d.indexed_by("jobs_parked");
        Sql {
            dialect: d,
            lanes_waiting: {
                let waiting =
                    format!("FROM jobs{due_by_flow} WHERE state IN ('pending', 'suspended')");
                let next_in_flow = |column: &str| {
                    format!(
                        "(SELECT {column} {waiting} AND flow = lanes.flow \
                             AND priority > lanes.priority ORDER BY priority LIMIT 1)"
                    )
                };
                let first_of_next_flow = |column: &str| {
                    format!(
                        "(SELECT {column} {waiting} AND flow > lanes.flow \
                             ORDER BY flow, priority LIMIT 1)"
                    )
                };
                format!(
                    "WITH RECURSIVE lanes (flow, priority) AS ( \
                         SELECT (SELECT flow {waiting} ORDER BY flow, priority LIMIT 1), \
                                (SELECT priority {waiting} ORDER BY flow, priority LIMIT 1) \
                         UNION ALL \
                         SELECT COALESCE({flow_in}, {flow_next}), \
                                COALESCE({priority_in}, {priority_next}) \
                         FROM lanes WHERE lanes.flow IS NOT NULL) \
                     SELECT lanes.flow, lanes.priority, \
                            (SELECT next_at {waiting} AND flow = lanes.flow \
                                 AND priority = lanes.priority ORDER BY next_at LIMIT 1) AS earliest \
                     FROM lanes WHERE lanes.flow IS NOT NULL",
                    flow_in = next_in_flow("flow"),
                    flow_next = first_of_next_flow("flow"),
                    priority_in = next_in_flow("priority"),
                    priority_next = first_of_next_flow("priority"),
                )
            },
            count_by_state: format!(
                "SELECT \
                     (SELECT COUNT(*) FROM jobs) AS total, \
                     (SELECT COUNT(*) FROM jobs{due_by_flow} \
                      WHERE state IN ('pending', 'suspended')) AS waiting, \
                     (SELECT COUNT(*) FROM jobs{leased} WHERE state = 'running') AS running, \
                     (SELECT COUNT(*) FROM jobs{parked} WHERE state = 'suspended') AS suspended, \
                     (SELECT COUNT(*) FROM jobs{parked} WHERE state = 'dead') AS dead, \
                     (SELECT COUNT(*) FROM jobs{parked} WHERE state = 'cancelled') AS cancelled",
                leased = d.indexed_by("jobs_leased"),
            ),
            job_by_id: format!("SELECT * FROM jobs WHERE id = {}", p(1)),
            job_exists: format!("SELECT 1 FROM jobs WHERE id = {}", p(1)),
            attempts_of_job: format!("SELECT * FROM attempts WHERE job_id = {} ORDER BY id", p(1)),
            last_attempts_of_jobs: format!(
                "SELECT * FROM attempts WHERE id IN ( \
                     SELECT MAX(id) FROM attempts \
                     WHERE job_id {} AND step <> 'on_dead' GROUP BY job_id)",
                match d {
                    Dialect::Sqlite => "IN (SELECT value FROM json_each(?1))",
                    Dialect::Postgres => "= ANY($1)",
                }
            ),
            payload_edits_of_job: format!(
                "SELECT * FROM payload_edits WHERE job_id = {} ORDER BY id",
                p(1)
            ),
            retry_dead: format!(
                "UPDATE jobs SET state = 'pending', channel_index = 0, attempt = 0, \
                     series_started_at = NULL, held_ms = 0, next_at = {at}, reason = NULL, \
                     notify_at = NULL, updated_at = {at} \
                 WHERE id = {id} AND state = 'dead'",
                id = p(1),
                at = p(2),
            ),
            leases_release: format!(
                "UPDATE jobs SET state = 'pending', lease_owner = NULL, lease_until = NULL \
                 WHERE state = 'running' AND lease_owner = {}",
                p(1)
            ),
            leases_rescue: format!(
                "UPDATE jobs{} \
                 SET state = 'pending', lease_owner = NULL, lease_until = NULL, \
                     next_at = COALESCE(next_at, {now}) \
                 WHERE state = 'running' \
                     AND NOT EXISTS (SELECT 1 FROM nodes n \
                                     WHERE n.id = jobs.lease_owner AND n.heartbeat_at >= {alive}) \
                     AND (lease_until < {now} \
                          OR EXISTS (SELECT 1 FROM nodes n WHERE n.id = jobs.lease_owner))",
                d.indexed_by("jobs_leased"),
                now = p(1),
                alive = p(2),
            ),
            node_join: format!(
                "INSERT INTO nodes (id, instance, version, started_at, heartbeat_at) \
                 VALUES ({id}, {instance}, {version}, {now}, {now}) \
                 ON CONFLICT (id) DO UPDATE SET instance = excluded.instance, \
                     version = excluded.version, started_at = excluded.started_at, \
                     heartbeat_at = excluded.heartbeat_at",
                id = p(1),
                instance = p(2),
                version = p(3),
                now = p(4),
            ),
            node_heartbeat: format!(
                "INSERT INTO nodes (id, instance, version, started_at, heartbeat_at) \
                 VALUES ({id}, {instance}, {version}, {now}, {now}) \
                 ON CONFLICT (id) DO UPDATE SET instance = excluded.instance, \
                     heartbeat_at = excluded.heartbeat_at",
                id = p(1),
                instance = p(2),
                version = p(3),
                now = p(4),
            ),
            node_leave: format!(
                "DELETE FROM nodes WHERE id = {} AND instance = {}",
                p(1),
                p(2)
            ),
            nodes_forget: format!(
                "DELETE FROM nodes WHERE heartbeat_at < {} \
                     AND NOT EXISTS (SELECT 1 FROM jobs WHERE state = 'running' \
                                     AND lease_owner = nodes.id)",
                p(1)
            ),
            nodes_list: "SELECT n.id, n.version, n.started_at, n.heartbeat_at, \
                     (SELECT COUNT(*) FROM jobs WHERE state = 'running' \
                          AND lease_owner = n.id) AS running \
                 FROM nodes n ORDER BY n.id"
                .to_string(),
            nodes_live: format!("SELECT COUNT(*) FROM nodes WHERE heartbeat_at >= {}", p(1)),
            notifications_claim: format!(
                "UPDATE jobs SET notify_at = {lease} \
                 WHERE id IN (SELECT id FROM jobs{index} \
                              WHERE notify_at IS NOT NULL AND notify_at <= {now} \
                                  AND state = 'dead' \
                              ORDER BY notify_at {limit}{lock}) \
                 RETURNING *",
                now = p(1),
                lease = p(2),
                limit = d.limit(3),
                index = d.indexed_by("jobs_notify"),
                lock = d.skip_locked(),
            ),
            notification_counted: format!(
                "UPDATE jobs SET notify_attempts = notify_attempts + 1, notify_at = {} \
                 WHERE id = {}",
                p(2),
                p(1)
            ),
            // The hold was counted as held time up to its planned end;
            // what is left of it was not waited, and is taken back.
            resume: format!(
                "UPDATE jobs SET next_at = {now}, updated_at = {now}, \
                     held_ms = CASE WHEN attempt > 0 \
                         THEN {max}(held_ms - (next_at - {now}), 0) ELSE held_ms END \
                 WHERE state = 'suspended' AND reason = {reason} AND next_at > {now}",
                reason = p(1),
                now = p(2),
                max = d.greatest(),
            ),
            resume_flow: resume_flow(d),
            resume_flow_unless_paused: format!(
                "{} AND NOT EXISTS (SELECT 1 FROM paused_flows WHERE flow = {})",
                resume_flow(d),
                p(3)
            ),
            flow_pause: format!(
                "INSERT INTO paused_flows (flow, paused_at, paused_by) VALUES ({}, {}, {}) \
                 ON CONFLICT (flow) DO NOTHING",
                p(1),
                p(2),
                p(3)
            ),
            flow_unpause: format!("DELETE FROM paused_flows WHERE flow = {}", p(1)),
            flows_paused: "SELECT flow, paused_at, paused_by FROM paused_flows ORDER BY flow"
                .to_string(),
            insight_add: format!(
                "INSERT INTO insight_counts (channel, hour, metric, key, count) \
                 VALUES ({}, {}, {}, {}, {}) \
                 ON CONFLICT (channel, hour, metric, key) \
                 DO UPDATE SET count = insight_counts.count + excluded.count",
                p(1),
                p(2),
                p(3),
                p(4),
                p(5)
            ),
            insights_of: format!(
                "SELECT channel, hour, metric, key, count FROM insight_counts \
                 WHERE channel = {} AND hour >= {} ORDER BY hour, metric, key",
                p(1),
                p(2)
            ),
            insights_prune: format!("DELETE FROM insight_counts WHERE hour < {}", p(1)),
            channel_errors_add: format!(
                "INSERT INTO channel_errors (channel, second, count) VALUES ({}, {}, {}) \
                 ON CONFLICT (channel, second) \
                 DO UPDATE SET count = channel_errors.count + excluded.count",
                p(1),
                p(2),
                p(3)
            ),
            channel_errors_since: format!(
                "SELECT COALESCE(SUM(count), 0) FROM channel_errors \
                 WHERE channel = {} AND second >= {}",
                p(1),
                p(2)
            ),
            channel_errors_prune: format!("DELETE FROM channel_errors WHERE second < {}", p(1)),
            prunable: format!(
                "SELECT id FROM jobs WHERE state = {} AND updated_at < {} {}{}",
                p(1),
                p(2),
                d.limit(3),
                d.skip_locked()
            ),
            prunable_count: format!(
                "SELECT COUNT(*) AS n FROM jobs WHERE state = {} AND updated_at < {}",
                p(1),
                p(2)
            ),
            count_by_flow_and_state: "SELECT flow, state, COUNT(*) AS n FROM jobs \
                 GROUP BY flow, state"
                .to_string(),
            edit_audit: format!(
                "INSERT INTO payload_edits (job_id, old_payload, new_payload, editor, edited_at) \
                 SELECT id, payload, {}, {}, {} FROM jobs WHERE id = {} AND {}{}",
                p(2),
                p(3),
                p(4),
                p(1),
                one_of("state", &EDITABLE),
                d.for_update(),
            ),
            edit_payload: format!(
                "UPDATE jobs SET payload = {}, updated_at = {} WHERE id = {} AND {}",
                p(2),
                p(3),
                p(1),
                one_of("state", &EDITABLE)
            ),
            cancel: format!(
                "UPDATE jobs SET state = 'cancelled', next_at = NULL, notify_at = NULL, \
                     updated_at = {} \
                 WHERE id = {} AND {}",
                p(2),
                p(1),
                one_of("state", &CANCELLABLE)
            ),
        }
    }

    /// The conditions of a [`super::JobFilter`], parameters 1 to 9: state,
    /// flow, step, then the status, error kind and rule of the job's last
    /// attempt (its `on_dead` notifications left out), then `updated_at`
    /// since and until, then text within the idempotency key. With `state`, the state is also named as a literal:
    /// SQLite can then prove that the partial index `jobs_parked` holds
    /// every suspended, dead or cancelled job, which it cannot of a bound
    /// parameter. (The text is one of [`JobState`]'s names, never input.)
    pub fn filter_where(&self, state: Option<JobState>) -> String {
        let d = self.dialect;
        let (text, int) = (|n| d.typed(n, "text"), |n| d.typed(n, "bigint"));
        let p = |n| d.p(n);
        let conditions = format!(
            "({s} IS NULL OR state = {ps}) AND ({f} IS NULL OR flow = {pf}) \
             AND ({st} IS NULL OR step = {pst}) \
             AND (({code} IS NULL AND {err} IS NULL AND {rule} IS NULL) OR EXISTS ( \
                 SELECT 1 FROM attempts a WHERE a.id = ( \
                     SELECT MAX(b.id) FROM attempts b \
                     WHERE b.job_id = jobs.id AND b.step <> 'on_dead') \
                 AND ({code} IS NULL OR a.status = {pcode}) \
                 AND ({err} IS NULL OR a.error = {perr}) \
                 AND ({rule} IS NULL OR a.rule = {prule}))) \
             AND ({since} IS NULL OR updated_at >= {psince}) \
             AND ({until} IS NULL OR updated_at < {puntil}) \
             AND ({key} IS NULL OR {key_has})",
            s = text(1),
            ps = p(1),
            f = text(2),
            pf = p(2),
            st = text(3),
            pst = p(3),
            code = int(4),
            pcode = p(4),
            err = text(5),
            perr = p(5),
            rule = text(6),
            prule = p(6),
            since = int(7),
            psince = p(7),
            until = int(8),
            puntil = p(8),
            key = text(9),
            key_has = match d {
                Dialect::Sqlite => "instr(idempotency_key, ?9) > 0",
                Dialect::Postgres => "strpos(idempotency_key, $9) > 0",
            },
        );
        match state {
            Some(state) => format!("state = '{}' AND {conditions}", state.as_str()),
            None => conditions,
        }
    }

    /// A page of jobs matching the filter, newest first, after the cursor
    /// (parameter 10, `NULL` unless `after`), at most parameter 11. With a
    /// cursor the condition is a plain `id < cursor`, which the planner
    /// seeks to in the primary key (an `IS NULL OR` would have it walk
    /// every newer job first).
    pub fn list(&self, state: Option<JobState>, after: bool) -> String {
        let d = self.dialect;
        let cursor = if after {
            format!("id < {}", d.p(10))
        } else {
            format!("{} IS NULL", d.typed(10, "text"))
        };
        format!(
            "SELECT * FROM jobs WHERE {} AND {cursor} ORDER BY id DESC LIMIT {}",
            self.filter_where(state),
            d.p(11)
        )
    }

    /// How many jobs match the filter.
    pub fn count(&self, state: Option<JobState>) -> String {
        format!(
            "SELECT COUNT(*) AS n FROM jobs WHERE {}",
            self.filter_where(state)
        )
    }

    /// The next dead jobs to retry, oldest first, after parameter 10, at
    /// most parameter 11.
    pub fn dead_to_retry(&self) -> String {
        let d = self.dialect;
        format!(
            "SELECT id FROM jobs WHERE {} AND ({} IS NULL OR id > {}) ORDER BY id ASC LIMIT {}{}",
            self.filter_where(Some(JobState::Dead)),
            d.typed(10, "text"),
            d.p(10),
            d.p(11),
            d.skip_locked()
        )
    }
}

/// Whether a transition whose reason is `reason` (an SQL expression) holds
/// a job for a pause that is no longer in the step log: a node that had
/// not yet heard of a resume on another. Such a hold lands the job pending
/// and due instead, in both stores' transition statements.
pub(super) fn pause_lifted(reason: &str) -> String {
    format!(
        "{reason} = 'paused' AND NOT EXISTS \
         (SELECT 1 FROM paused_flows p WHERE p.flow = jobs.flow)"
    )
}

/// Makes due at once the jobs of a flow held for its pause: `reason`,
/// `now`, `flow`. The hold's remaining time is taken back out of the
/// series' held time.
fn resume_flow(d: Dialect) -> String {
    format!(
        "UPDATE jobs SET next_at = {now}, updated_at = {now}, \
             held_ms = CASE WHEN attempt > 0 \
                 THEN {max}(held_ms - (next_at - {now}), 0) ELSE held_ms END \
         WHERE state = 'suspended' AND reason = {reason} AND next_at > {now} \
             AND flow = {flow}",
        reason = d.p(1),
        now = d.p(2),
        max = d.greatest(),
        flow = d.p(3),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_written_in_each_dialect() {
        let sqlite = Sql::new(Dialect::Sqlite);
        let postgres = Sql::new(Dialect::Postgres);
        assert_eq!(
            sqlite.retry_dead.replace('?', "$"),
            postgres.retry_dead,
            "the same statement but for its parameters"
        );
        assert!(sqlite.leases_rescue.contains("INDEXED BY jobs_leased"));
        assert!(!postgres.leases_rescue.contains("INDEXED BY"));
        assert!(postgres
            .notifications_claim
            .contains("FOR UPDATE SKIP LOCKED"));
        assert!(sqlite
            .notifications_claim
            .contains("LIMIT CAST(?3 AS INTEGER)"));
        assert!(postgres.filter_where(None).contains("$4::bigint IS NULL"));
        assert!(!sqlite.filter_where(None).contains("::"));
        assert!(sqlite
            .count(Some(JobState::Dead))
            .starts_with("SELECT COUNT(*) AS n FROM jobs WHERE state = 'dead' AND"));
        assert!(postgres
            .edit_audit
            .ends_with("(state = 'dead' OR state = 'pending' OR state = 'suspended') FOR UPDATE"));
    }
}
