//! The embedded step log: one SQLite file in WAL mode.
//!
//! The writes every delivered job makes run on a thread of their own
//! (`writer`); reads (a pool of connections, beside the writer thanks to
//! WAL) and the rarer writes go through sqlx. Writers serialise on SQLite's
//! single write lock, so every transaction that writes starts with
//! `BEGIN IMMEDIATE`: a deferred transaction that read first could not
//! upgrade to a writer after another commit and would
//! fail with `SQLITE_BUSY` instead of waiting.

pub(crate) mod lock;
mod upkeep;
mod writer;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row, SqlitePool};

use super::plan::{Lease, RetryShare};
use super::rows::{
    attempt_from_row, counts_by_flow, insight_count_from_row, job_from_row, jobs_from_rows, ms,
    node_from_row, opt_ms, opt_timestamp, paused_flow_from_row, payload_edit_from_row,
    state_counts,
};
use super::sql::{Dialect, Sql};
use super::{
    migrator, AttemptRecord, ClaimedJob, InsertOutcome, InsightCount, JobFilter, JobPage,
    JobRecord, JobState, JobUpdate, Membership, NewJob, NodeRecord, NotificationClaim, PausedFlow,
    PayloadEdit, Reason, RetryBatch, StateCounts, StepLog, StoreError, StoreResult, Transition,
};
use writer::{ClaimRequest, HotWriter};

/// The schema, embedded in the binary: `(version, description, SQL)`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "lean indexes",
        include_str!("../../../migrations/sqlite/0002_lean_indexes.sql"),
    ),
    (
        3,
        "state check without a temporary table",
        include_str!("../../../migrations/sqlite/0003_state_check.sql"),
    ),
    (
        4,
        "an index of the parked states only",
        include_str!("../../../migrations/sqlite/0004_parked_index.sql"),
    ),
    (
        5,
        "attempt ids without AUTOINCREMENT",
        include_str!("../../../migrations/sqlite/0005_attempt_ids.sql"),
    ),
    (
        6,
        "checks on reasons, outcomes and decisions",
        include_str!("../../../migrations/sqlite/0006_vocabulary_checks.sql"),
    ),
    (
        7,
        "nodes and their heartbeats",
        include_str!("../../../migrations/sqlite/0007_nodes.sql"),
    ),
    (
        8,
        "paused flows",
        include_str!("../../../migrations/sqlite/0008_paused_flows.sql"),
    ),
    (
        9,
        "the traceparent of a submission",
        include_str!("../../../migrations/sqlite/0009_traceparent.sql"),
    ),
    (
        10,
        "job priority and step responses",
        include_str!("../../../migrations/sqlite/0010_payload_flows.sql"),
    ),
    (
        11,
        "pacing: quick tries within an attempt",
        include_str!("../../../migrations/sqlite/0011_pacing.sql"),
    ),
    (
        12,
        "channel insights and error counts",
        include_str!("../../../migrations/sqlite/0012_insights.sql"),
    ),
    (
        13,
        "reasons slowed and adapted; times slowed",
        include_str!("../../../migrations/sqlite/0013_pacing_reasons.sql"),
    ),
    (
        14,
        "due fresh jobs indexed alone",
        include_str!("../../../migrations/sqlite/0014_fresh_due.sql"),
    ),
    (
        15,
        "flows' delivered and dead jobs by hour",
        include_str!("../../../migrations/sqlite/0015_flow_ends.sql"),
    ),
];

/// The most jobs one page of `jobs_list` returns.
const MAX_PAGE: u32 = 1000;

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged job survives power loss.
    #[default]
    Full,
    /// fsync at WAL checkpoints only: survives a process crash, not power
    /// loss. For benchmarks and throwaway runs.
    Normal,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    pub max_connections: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            max_connections: 8,
        }
    }
}

/// Takes steadfast's own options (`synchronous=full|normal`) out of a
/// `sqlite:` URL's query; the rest goes to SQLite as it is.
pub fn url_options(url: &str, mut options: SqliteOptions) -> StoreResult<(String, SqliteOptions)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), options));
    };
    let mut passed = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("synchronous", value)) => {
                options.synchronous = match value.to_ascii_lowercase().as_str() {
                    "full" => Synchronous::Full,
                    "normal" => Synchronous::Normal,
                    _ => {
                        return Err(StoreError::BadUrlOption {
                            url: url.to_string(),
                            message: format!(
                        "synchronous={value} is not supported: use full (the default) or normal"
                    ),
                        })
                    }
                }
            }
            _ => passed.push(pair),
        }
    }
    let url = if passed.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", passed.join("&"))
    };
    Ok((url, options))
}

/// How long `/readyz` waits for a write to the log.
const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// How long past its deadline a submission waits for the writer's answer:
/// the writer starts nothing after the deadline, but a commit begun before
/// it may still be syncing.
const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// The database file a `sqlite:` URL names; `None` for an in-memory one.
pub fn database_file(url: &str) -> StoreResult<Option<std::path::PathBuf>> {
    let (url, _) = url_options(url, SqliteOptions::default())?;
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(None);
    }
    let connect = SqliteConnectOptions::from_str(&url)?;
    Ok(Some(connect.get_filename().to_path_buf()))
}

pub struct SqliteStepLog {
    /// Readers: WAL lets them run beside the writer.
    pool: SqlitePool,
    /// Every write, on a thread of its own (see `writer`): SQLite admits
    /// one writer at a time, and one queue serves them in order instead of
    /// meeting `SQLITE_BUSY` and sleeping in SQLite's busy handler (1, 2, 5,
    /// 10 ms …), which left the database idle while work waited.
    hot: HotWriter,
    /// Where `sqlite::memory:` keeps its file (removed on drop): the writer
    /// thread's connection and sqlx's must see the same database, and every
    /// connection to `:memory:` is a database of its own.
    _scratch: Option<tempfile::TempDir>,
    /// The retries' share of claims (see [`StepLog::set_retry_share`]).
    retry_share: RetryShare,
}

impl SqliteStepLog {
    /// Opens (creating if needed) and migrates the database at `url`:
    /// `sqlite://PATH`, `sqlite:PATH` or `sqlite::memory:` (a temporary file,
    /// removed when the log is dropped).
    pub async fn open(url: &str, options: SqliteOptions) -> StoreResult<Self> {
        let mut connect = SqliteConnectOptions::from_str(url)?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let scratch = if in_memory {
            let dir = tempfile::Builder::new()
                .prefix("steadfast-memory-")
                .tempdir()
                .map_err(|error| StoreError::BadUrlOption {
                    url: url.to_string(),
                    message: format!("cannot create its temporary file: {error}"),
                })?;
            connect = SqliteConnectOptions::new().filename(dir.path().join("steadfast.db"));
            Some(dir)
        } else {
            None
        };
        let connect = connect
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match options.synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        // Migrations run on a connection of their own, closed after: one
        // that sets `foreign_keys` off and fails halfway must not be reused.
        let mut migrating = connect.connect().await.map_err(|source| StoreError::Open {
            path: connect.get_filename().display().to_string(),
            source,
        })?;
        migrator(MIGRATIONS).run(&mut migrating).await?;
        migrating.close().await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .min_connections(0)
            .idle_timeout(Some(Duration::from_secs(600)))
            .max_lifetime(Some(Duration::from_secs(3600)))
            .connect_with(connect.clone())
            .await?;
        let hot = HotWriter::start(connect.get_filename(), options.synchronous)?;
        Ok(SqliteStepLog {
            pool,
            hot,
            _scratch: scratch,
            retry_share: RetryShare::default(),
        })
    }
}

/// The statements both stores share, in SQLite's dialect.
static SQL: LazyLock<Sql> = LazyLock::new(|| Sql::new(Dialect::Sqlite));

fn bind_filter<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    filter: &'q JobFilter,
    state: Option<&'static str>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    query
        .bind(state)
        .bind(&filter.flow)
        .bind(&filter.step)
        .bind(filter.status.map(i64::from))
        .bind(&filter.error)
        .bind(&filter.rule)
        .bind(opt_ms(filter.since))
        .bind(opt_ms(filter.until))
        .bind(&filter.key)
}

#[async_trait]
impl StepLog for SqliteStepLog {
    async fn jobs_insert_batch(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<InsertOutcome>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        // Submissions queue at the writer thread, which commits all that
        // are waiting together (group commit), between the scheduler's
        // cycles.
        let deadline = tokio::time::Instant::now() + super::SUBMIT_DEADLINE;
        tokio::time::timeout_at(
            deadline + ANSWER_GRACE,
            self.hot.insert(jobs, deadline.into_std()),
        )
        .await
        .map_err(|_| {
            StoreError::Unavailable(
                "no answer from the step log in time; the submission may or may not be \
                 stored: send it again with the same idempotency_key"
                    .into(),
            )
        })?
    }

    async fn writable(&self) -> StoreResult<()> {
        let deadline = tokio::time::Instant::now() + PROBE_DEADLINE;
        tokio::time::timeout_at(deadline + ANSWER_GRACE, self.hot.probe(deadline.into_std()))
            .await
            .map_err(|_| StoreError::Unavailable("the writer has been busy for 2 s".into()))?
    }

    async fn jobs_claim_due(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<ClaimedJob>> {
        let (_, claimed) = self
            .transitions_apply_then_claim(&mut Vec::new(), owner, now, lease_until, limit)
            .await?;
        Ok(claimed)
    }

    async fn transitions_apply(&self, transitions: Vec<Transition>) -> StoreResult<Vec<bool>> {
        if transitions.is_empty() {
            return Ok(Vec::new());
        }
        let done = self
            .hot
            .cycle(transitions, None)
            .await
            .map_err(|(error, _)| error)?;
        Ok(done.applied)
    }

    async fn transitions_apply_then_claim(
        &self,
        transitions: &mut Vec<Transition>,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<(Vec<bool>, Vec<ClaimedJob>)> {
        if transitions.is_empty() && limit == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let claim = ClaimRequest {
            lease: Lease {
                owner: owner.to_string(),
                now,
                lease_until,
            },
            limit,
            retry_cut: self.retry_share.cut(),
        };
        // The batch goes to the writer thread, which hands it back: emptied
        // here once committed (freed on the threads that allocated it, its
        // vector kept for the next cycle), as it was if the cycle failed.
        let batch = std::mem::take(transitions);
        match self.hot.cycle(batch, Some(claim)).await {
            Ok(done) => {
                *transitions = done.transitions;
                transitions.clear();
                Ok((done.applied, done.claimed))
            }
            Err((error, batch)) => {
                *transitions = batch;
                Err(error)
            }
        }
    }

    async fn next_due_at(&self) -> StoreResult<Option<Timestamp>> {
        let rows: Vec<(String, i64, Option<i64>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(SQL.lanes_waiting.as_str()))
                .fetch_all(&self.pool)
                .await?;
        let next = rows
            .into_iter()
            .filter_map(|(_, _, earliest)| earliest)
            .min();
        opt_timestamp("next_at", next)
    }

    async fn leases_release(&self, owner: &str) -> StoreResult<u64> {
        let owner = owner.to_string();
        self.hot
            .run(move |c| upkeep::leases_release(c, &owner))
            .await
    }

    async fn leases_rescue(&self, now: Timestamp, alive_after: Timestamp) -> StoreResult<u64> {
        self.hot
            .run(move |c| upkeep::leases_rescue(c, now, alive_after))
            .await
    }

    async fn node_join(&self, node: &Membership, now: Timestamp) -> StoreResult<()> {
        // The engine lock keeps any other process off this file.
        let node = node.clone();
        let before = now - crate::lifecycle::signed(super::FORGET_NODES_AFTER);
        self.hot
            .run(move |c| {
                upkeep::nodes_forget(c, before)?;
                upkeep::node_write(c, &SQL.node_join, &node, now)
            })
            .await
    }

    async fn node_heartbeat(&self, node: &Membership, now: Timestamp) -> StoreResult<()> {
        let node = node.clone();
        self.hot
            .run(move |c| upkeep::node_write(c, &SQL.node_heartbeat, &node, now))
            .await
    }

    async fn node_leave(&self, node: &Membership) -> StoreResult<()> {
        let node = node.clone();
        self.hot.run(move |c| upkeep::node_leave(c, &node)).await
    }

    async fn nodes_list(&self) -> StoreResult<Vec<NodeRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.nodes_list.as_str()))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(node_from_row).collect()
    }

    async fn nodes_live(&self, alive_after: Timestamp) -> StoreResult<u32> {
        let live: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(SQL.nodes_live.as_str()))
            .bind(ms(alive_after))
            .fetch_one(&self.pool)
            .await?;
        Ok(u32::try_from(live).unwrap_or(u32::MAX))
    }

    async fn flow_pause(&self, flow: &str, by: &str, now: Timestamp) -> StoreResult<bool> {
        let (flow, by) = (flow.to_string(), by.to_string());
        self.hot
            .run(move |c| upkeep::flow_pause(c, &flow, &by, now))
            .await
    }

    async fn flow_resume(&self, flow: &str, now: Timestamp) -> StoreResult<Option<u64>> {
        let flow = flow.to_string();
        self.hot
            .run(move |c| upkeep::flow_resume(c, &flow, now))
            .await
    }

    async fn flow_resume_sweep(&self, flow: &str, now: Timestamp) -> StoreResult<u64> {
        let flow = flow.to_string();
        self.hot
            .run(move |c| upkeep::flow_resume_sweep(c, &flow, now))
            .await
    }

    async fn jobs_prune(&self, state: JobState, before: Timestamp, limit: u32) -> StoreResult<u64> {
        self.hot
            .run(move |c| upkeep::jobs_prune(c, state, before, limit))
            .await
    }

    async fn jobs_prunable(&self, state: JobState, before: Timestamp) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(SQL.prunable_count.as_str()))
            .bind(state.as_str())
            .bind(ms(before))
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn set_retry_share(&self, share: Option<f64>) {
        self.retry_share.set(share);
    }

    async fn insights_add(&self, counts: &[InsightCount]) -> StoreResult<()> {
        let counts = counts.to_vec();
        self.hot
            .run(move |c| upkeep::insights_add(c, &counts))
            .await
    }

    async fn insights_of(&self, channel: &str, since_hour: i64) -> StoreResult<Vec<InsightCount>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.insights_of.as_str()))
            .bind(channel)
            .bind(since_hour)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(insight_count_from_row).collect()
    }

    async fn insights_prune(&self, before_hour: i64) -> StoreResult<u64> {
        self.hot
            .run(move |c| upkeep::insights_prune(c, before_hour))
            .await
    }

    async fn channel_errors_add(&self, counts: &[(String, i64, i64)]) -> StoreResult<()> {
        let counts = counts.to_vec();
        self.hot
            .run(move |c| upkeep::channel_errors_add(c, &counts))
            .await
    }

    async fn channel_errors_since(&self, channel: &str, since: i64) -> StoreResult<i64> {
        let sum: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(SQL.channel_errors_since.as_str()))
            .bind(channel)
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        Ok(sum)
    }

    async fn channel_errors_prune(&self, before: i64) -> StoreResult<u64> {
        self.hot
            .run(move |c| upkeep::channel_errors_prune(c, before))
            .await
    }

    async fn flows_paused(&self) -> StoreResult<Vec<PausedFlow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.flows_paused.as_str()))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(paused_flow_from_row).collect()
    }

    async fn jobs_count_by_flow(&self) -> StoreResult<BTreeMap<String, StateCounts>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.count_by_flow_and_state.as_str()))
            .fetch_all(&self.pool)
            .await?;
        counts_by_flow(&rows)
    }

    async fn notifications_claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<NotificationClaim>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.hot
            .run(move |c| upkeep::notifications_claim_due(c, now, lease_until, limit))
            .await
    }

    async fn notification_record(
        &self,
        attempt: AttemptRecord,
        next_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        self.hot
            .run(move |c| upkeep::notification_record(c, &attempt, next_at))
            .await
    }

    async fn job_get(&self, id: &str) -> StoreResult<Option<JobRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(SQL.job_by_id.as_str()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn attempts_list(&self, job_id: &str) -> StoreResult<Vec<AttemptRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.attempts_of_job.as_str()))
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(attempt_from_row).collect()
    }

    async fn attempts_last_of(&self, job_ids: &[String]) -> StoreResult<Vec<AttemptRecord>> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        // Text always serializes; the list goes as one JSON parameter.
        let ids = serde_json::to_string(job_ids).unwrap_or_else(|_| "[]".into());
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.last_attempts_of_jobs.as_str()))
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(attempt_from_row).collect()
    }

    async fn jobs_list(&self, filter: &JobFilter) -> StoreResult<JobPage> {
        let limit = filter.limit.clamp(1, MAX_PAGE);
        let sql = SQL.list(filter.state, filter.cursor.is_some());
        let rows = // Only constant text is formatted into `sql`; values are bound.
        bind_filter(sqlx::query(sqlx::AssertSqlSafe(sql)), filter, filter.state.map(JobState::as_str))
            .bind(&filter.cursor)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let mut jobs = jobs_from_rows(&rows)?;
        let next_cursor = if jobs.len() > limit as usize {
            jobs.truncate(limit as usize);
            jobs.last().map(|job| job.id.clone())
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    async fn jobs_count(&self, filter: &JobFilter) -> StoreResult<u64> {
        let sql = SQL.count(filter.state);
        let row = // Only constant text is formatted into `sql`; values are bound.
        bind_filter(sqlx::query(sqlx::AssertSqlSafe(sql)), filter, filter.state.map(JobState::as_str))
            .fetch_one(&self.pool)
            .await?;
        let n: i64 = row.try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn jobs_retry_batch(
        &self,
        filter: &JobFilter,
        after: Option<&str>,
        limit: u32,
        first_at: Timestamp,
        spacing_us: i64,
    ) -> StoreResult<RetryBatch> {
        let (filter, after) = (filter.clone(), after.map(str::to_string));
        self.hot
            .run(move |c| {
                upkeep::jobs_retry_batch(c, &filter, after.as_deref(), limit, first_at, spacing_us)
            })
            .await
    }

    async fn payload_edits_list(&self, job_id: &str) -> StoreResult<Vec<PayloadEdit>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.payload_edits_of_job.as_str()))
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(payload_edit_from_row).collect()
    }

    async fn jobs_count_by_state(&self) -> StoreResult<StateCounts> {
        let row = sqlx::query(sqlx::AssertSqlSafe(SQL.count_by_state.as_str()))
            .fetch_one(&self.pool)
            .await?;
        state_counts(&row)
    }

    async fn jobs_resume(&self, reason: Reason, now: Timestamp) -> StoreResult<u64> {
        self.hot
            .run(move |c| upkeep::jobs_resume(c, reason, now))
            .await
    }

    async fn job_update(&self, id: &str, update: JobUpdate) -> StoreResult<Option<bool>> {
        let id = id.to_string();
        self.hot
            .run(move |c| upkeep::job_update(c, &id, &update))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::rows::same_payload;
    use super::{url_options, SqliteOptions, Synchronous};

    #[test]
    fn synchronous_comes_from_the_url() {
        let (url, options) = url_options(
            "sqlite://a.db?synchronous=normal&mode=rwc",
            SqliteOptions::default(),
        )
        .unwrap();
        assert_eq!(url, "sqlite://a.db?mode=rwc");
        assert_eq!(options.synchronous, Synchronous::Normal);
        let (url, options) = url_options("sqlite://a.db", SqliteOptions::default()).unwrap();
        assert_eq!(url, "sqlite://a.db");
        assert_eq!(options.synchronous, Synchronous::Full);
        let error = url_options("sqlite://a.db?synchronous=off", SqliteOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("use full (the default) or normal"),
            "{error}"
        );
    }

    /// The `CREATE TABLE` statement SQLite keeps for `table`.
    async fn table_sql<'e>(db: impl sqlx::SqliteExecutor<'e>, table: &'e str) -> String {
        use sqlx::Row;
        sqlx::query("SELECT sql FROM sqlite_schema WHERE name = ?1")
            .bind(table)
            .fetch_one(db)
            .await
            .expect("the schema")
            .get(0)
    }

    /// A log written before migration 3 keeps every job, attempt and
    /// payload edit through the rebuilds of `jobs` (3) and `attempts` (5),
    /// and its checks and foreign keys still hold after.
    #[tokio::test]
    async fn the_table_rebuilds_keep_what_an_older_log_holds() {
        use sqlx::{ConnectOptions, Connection, Row};

        use super::super::{migrator, StepLog};
        use super::{SqliteStepLog, MIGRATIONS};

        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("old.db");
        let connect = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .foreign_keys(true);
        let mut old = connect.connect().await.expect("a connection");
        migrator(&MIGRATIONS[..2])
            .run(&mut old)
            .await
            .expect("the first two migrations");
        sqlx::raw_sql(
            "INSERT INTO jobs (id, flow, idempotency_key, payload, state, step_index, step, \
                 next_at, policy_version, created_at, updated_at, reason) \
             VALUES ('j1', 'orders', 'k1', '{\"n\":1}', 'dead', 0, 'deliver', NULL, 'v1', 1, 2, 'exhausted'); \
             INSERT INTO attempts (job_id, step, channel, attempt, started_at, finished_at, \
                 status, outcome, decision, policy_version) \
             VALUES ('j1', 'deliver', 'api', 1, 1, 2, 503, 'retry', 'dead', 'v1'); \
             INSERT INTO payload_edits (job_id, old_payload, new_payload, editor, edited_at) \
             VALUES ('j1', '{}', '{\"n\":1}', 'ops', 3);",
        )
        .execute(&mut old)
        .await
        .expect("rows of an older log");
        let before = table_sql(&mut old, "jobs").await;
        assert!(before.contains("state IN"), "{before}");
        old.close().await.expect("closed");

        let url = format!("sqlite://{}", path.display());
        let log = SqliteStepLog::open(&url, SqliteOptions::default())
            .await
            .expect("the log opens and migrates");
        let job = log.job_get("j1").await.expect("read").expect("the job");
        assert_eq!(
            (job.payload.as_str(), job.reason.map(|r| r.as_str())),
            (r#"{"n":1}"#, Some("exhausted"))
        );
        assert_eq!(log.attempts_list("j1").await.expect("attempts").len(), 1);
        assert_eq!(log.payload_edits_list("j1").await.expect("edits").len(), 1);

        let schema = table_sql(&log.pool, "jobs").await;
        assert!(!schema.contains("state IN"), "{schema}");
        let indexes: Vec<String> = sqlx::query(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'jobs' \
             AND sql IS NOT NULL ORDER BY name",
        )
        .fetch_all(&log.pool)
        .await
        .expect("the indexes")
        .iter()
        .map(|row| row.get(0))
        .collect();
        assert_eq!(
            indexes,
            [
                "jobs_due_by_flow",
                "jobs_fresh_due",
                "jobs_leased",
                "jobs_notify",
                "jobs_parked"
            ]
        );
        for bad in [
            "UPDATE jobs SET reason = 'tired' WHERE id = 'j1'",
            "UPDATE attempts SET outcome = 'meh' WHERE job_id = 'j1'",
            "UPDATE attempts SET decision = 'shrug' WHERE job_id = 'j1'",
        ] {
            let refused = sqlx::query(sqlx::AssertSqlSafe(bad))
                .execute(&log.pool)
                .await;
            assert!(refused.is_err(), "{bad} was let through");
        }
        let violations = sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(&log.pool)
            .await
            .expect("foreign key check");
        assert!(violations.is_empty());
        let enforced: i64 = sqlx::query("PRAGMA foreign_keys")
            .fetch_one(&log.pool)
            .await
            .expect("pragma")
            .get(0);
        assert_eq!(enforced, 1);
        let orphan = sqlx::query(
            "INSERT INTO attempts (job_id, step, channel, attempt, started_at, finished_at, \
                 outcome, decision, policy_version) \
             VALUES ('nope', 'deliver', 'api', 1, 1, 2, 'success', 'succeed', 'v1')",
        )
        .execute(&log.pool)
        .await;
        assert!(orphan.is_err(), "an attempt of no job is refused");
        let bad_state = sqlx::query("UPDATE jobs SET state = 'lost' WHERE id = 'j1'")
            .execute(&log.pool)
            .await;
        assert!(bad_state.is_err(), "the state check still holds");

        // Migration 5: attempt ids go on rising, without sqlite_sequence.
        let attempts = table_sql(&log.pool, "attempts").await;
        assert!(!attempts.contains("AUTOINCREMENT"), "{attempts}");
        let sequenced: i64 =
            sqlx::query("SELECT COUNT(*) FROM sqlite_sequence WHERE name = 'attempts'")
                .fetch_one(&log.pool)
                .await
                .expect("sqlite_sequence")
                .get(0);
        assert_eq!(sequenced, 0);
        let old_id: i64 = sqlx::query("SELECT MAX(id) FROM attempts")
            .fetch_one(&log.pool)
            .await
            .expect("an id")
            .get(0);
        let new_id = sqlx::query(
            "INSERT INTO attempts (job_id, step, channel, attempt, started_at, finished_at, \
                 outcome, decision, policy_version) \
             VALUES ('j1', 'deliver', 'api', 2, 3, 4, 'success', 'succeeded', 'v1')",
        )
        .execute(&log.pool)
        .await
        .expect("a new attempt")
        .last_insert_rowid();
        assert!(new_id > old_id, "{new_id} after {old_id}");
        drop(log);

        // Opening again finds every migration applied.
        let again = SqliteStepLog::open(&url, SqliteOptions::default())
            .await
            .expect("reopens");
        assert!(again.job_get("j1").await.expect("read").is_some());
    }

    /// Dead-letter listings, counts and bulk retries, and the job gauges,
    /// search the small `jobs_parked` index instead of walking every job.
    #[test]
    fn parked_states_are_found_through_their_index() {
        use super::{MIGRATIONS, SQL};
        use crate::store::JobState;
        let connection = rusqlite::Connection::open_in_memory().expect("a database");
        for (_, _, sql) in MIGRATIONS {
            connection.execute_batch(sql).expect("a migration");
        }
        let plan = |sql: &str| -> String {
            let mut statement = connection
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("a plan");
            let mut rows = statement.raw_query();
            let mut steps = Vec::new();
            while let Some(row) = rows.next().expect("a plan step") {
                steps.push(row.get::<_, String>(3).expect("its text"));
            }
            steps.join("; ")
        };
        for state in [JobState::Dead, JobState::Suspended, JobState::Cancelled] {
            for sql in [
                SQL.list(Some(state), false),
                SQL.list(Some(state), true),
                SQL.count(Some(state)),
            ] {
                let steps = plan(&sql);
                assert!(
                    steps.contains("USING INDEX jobs_parked"),
                    "{state:?}: {steps}"
                );
            }
        }
        let steps = plan(&SQL.dead_to_retry());
        assert!(steps.contains("USING INDEX jobs_parked"), "{steps}");
        let steps = plan(&SQL.count_by_state);
        assert_eq!(
            steps.matches("COVERING INDEX jobs_parked").count(),
            3,
            "{steps}"
        );
    }

    /// A cycle that fails leaves the scheduler its batch to commit again;
    /// one that commits takes it.
    #[tokio::test]
    async fn a_failed_cycle_hands_its_transitions_back() {
        use super::SqliteStepLog;
        use crate::store::{AttemptRecord, InsertOutcome, JobState, NewJob, StepLog, Transition};
        use jiff::Timestamp;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("log.db").display());
        let log = SqliteStepLog::open(&url, SqliteOptions::default())
            .await
            .expect("opens");
        let now = Timestamp::from_second(1_800_000_000).expect("a time");
        let new_job = |n: u32| NewJob {
            id: format!("job-{n}"),
            flow: "leads".into(),
            idempotency_key: format!("key-{n}"),
            payload: "{}".into(),
            step: "deliver".into(),
            created_at: now,
            next_at: now,
            policy_version: "v1".into(),
            traceparent: None,
            priority: 0,
        };
        for n in 0..2 {
            let inserted = log.job_insert(new_job(n)).await.expect("inserted");
            assert!(matches!(inserted, InsertOutcome::Created(_)));
        }
        let later = now + jiff::SignedDuration::from_secs(300);
        let claimed = log
            .jobs_claim_due("a", now, later, 2)
            .await
            .expect("claimed");
        let done = |job: &crate::store::JobRecord| Transition {
            job_id: job.id.clone(),
            owner: "a".into(),
            lease_until: job.lease_until,
            attempt: Some(AttemptRecord {
                job_id: job.id.clone(),
                step: "deliver".into(),
                channel: "api".into(),
                attempt: 1,
                started_at: now,
                finished_at: now,
                status: Some(200),
                error: None,
                error_message: None,
                outcome: crate::store::Outcome::Success,
                rule: None,
                decision: crate::store::Decision::Succeeded,
                delay_ms: None,
                next_at: None,
                policy_version: "v1".into(),
                member: None,
                quick_tries: 0,
            }),
            to: JobState::Succeeded,
            step_index: 0,
            step: "deliver".into(),
            channel_index: 0,
            series_attempts: 1,
            series_started_at: Some(now),
            held_ms: 0,
            next_at: None,
            reason: None,
            policy_version: "v1".into(),
            attempts_added: 1,
            slowed_added: 0,
            notify_at: None,
            responses: None,
            branches: None,
            branch_attempts: Vec::new(),
            now,
        };

        let mut batch = vec![done(&claimed[0])];
        let (applied, _) = log
            .transitions_apply_then_claim(&mut batch, "a", now, later, 0)
            .await
            .expect("committed");
        assert_eq!(applied, [true]);
        assert!(batch.is_empty(), "a committed batch is taken");

        // Attempts can no longer be written: the cycle fails.
        sqlx::query("ALTER TABLE attempts RENAME TO attempts_elsewhere")
            .execute(&log.pool)
            .await
            .expect("renamed");
        let mut batch = vec![done(&claimed[1])];
        let failed = log
            .transitions_apply_then_claim(&mut batch, "a", now, later, 0)
            .await;
        assert!(failed.is_err());
        assert_eq!(batch.len(), 1, "the batch is handed back whole");
        assert_eq!(batch[0].job_id, "job-1");
        assert_eq!(batch[0].attempt, done(&claimed[1]).attempt);
        let job = log.job_get("job-1").await.expect("read").expect("the job");
        assert_eq!(job.state, JobState::Running, "nothing of it applied");
    }

    #[test]
    fn payloads_compare_as_json() {
        assert!(same_payload(r#"{"a":1,"b":2}"#, r#"{ "b": 2, "a": 1 }"#));
        assert!(!same_payload(r#"{"a":1}"#, r#"{"a":2}"#));
        assert!(!same_payload("not json", "other"));
    }
}
