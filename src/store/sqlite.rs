//! The embedded step log: one SQLite file in WAL mode.
//!
//! Writers serialise on SQLite's single write lock, so every transaction
//! that writes starts with `BEGIN IMMEDIATE`: a deferred transaction that
//! read first could not upgrade to a writer after another commit and would
//! fail with `SQLITE_BUSY` instead of waiting.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlSafeStr, SqlitePool};

use super::plan::{runs_of_distinct_jobs, Lease, RoundRobin};
use super::rows::{
    attempt_from_row, job_from_row, jobs_from_rows, ms, opt_ms, opt_timestamp,
    payload_edit_from_row, same_payload,
};
use super::{
    AttemptRecord, ClaimedJob, InsertOutcome, JobFilter, JobPage, JobRecord, JobState, JobUpdate,
    NewJob, NotificationClaim, PayloadEdit, RetryBatch, StateCounts, StepLog, StoreError,
    StoreResult, Transition,
};
use crate::model::ON_DEAD_STEP;

/// The schema, embedded in the binary: `(version, description, SQL)`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "lean indexes",
        include_str!("../../migrations/sqlite/0002_lean_indexes.sql"),
    ),
];

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

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

pub struct SqliteStepLog {
    /// Readers: WAL lets them run beside the writer.
    pool: SqlitePool,
    /// The one connection that writes. SQLite admits one writer at a time;
    /// writers of one process queue here, in order, instead of meeting
    /// `SQLITE_BUSY` and sleeping in SQLite's busy handler (1, 2, 5, 10 ms
    /// …), which left the database idle while work waited.
    writer: SqlitePool,
}

impl SqliteStepLog {
    /// Opens (creating if needed) and migrates the database at `url`:
    /// `sqlite://PATH`, `sqlite:PATH` or `sqlite::memory:`.
    pub async fn open(url: &str, options: SqliteOptions) -> StoreResult<Self> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if in_memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(match options.synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(30))
            // Rows come back from the database thread through this channel;
            // the default of 50 stalls the thread every 50 rows of a batch.
            .row_buffer_size(1024)
            .foreign_keys(true);
        // Every connection to `:memory:` is a database of its own.
        let max_connections = if in_memory {
            1
        } else {
            options.max_connections.max(1)
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout(if in_memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if in_memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .connect_with(connect.clone())
            .await?;
        migrator().run(&pool).await?;
        let writer = if in_memory {
            pool.clone()
        } else {
            // Kept open for good: its prepared statements stay cached.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(connect)
                .await?
        };
        Ok(SqliteStepLog { pool, writer })
    }

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn job_exists(&self, id: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 FROM jobs WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }
}

/// `dead` → `pending`: the failed step starts afresh on its primary channel
/// (series count reset; the attempts table keeps the history).
const RETRY_SQL: &str = "UPDATE jobs SET state = 'pending', channel_index = 0, attempt = 0, \
     series_started_at = NULL, held_ms = 0, next_at = ?2, reason = NULL, \
     notify_at = NULL, updated_at = ?2 \
 WHERE id = ?1 AND state = 'dead'";

/// The conditions of a [`JobFilter`], parameters ?1 to ?8 (see
/// [`bind_filter`]). Status, error and rule are those of the job's last
/// attempt, its `on_dead` notifications left out.
const FILTER_WHERE: &str = "(?1 IS NULL OR state = ?1) AND (?2 IS NULL OR flow = ?2) \
     AND (?3 IS NULL OR step = ?3) \
     AND ((?4 IS NULL AND ?5 IS NULL AND ?6 IS NULL) OR EXISTS ( \
         SELECT 1 FROM attempts a WHERE a.id = ( \
             SELECT MAX(b.id) FROM attempts b WHERE b.job_id = jobs.id AND b.step <> 'on_dead') \
         AND (?4 IS NULL OR a.status = ?4) AND (?5 IS NULL OR a.error = ?5) \
         AND (?6 IS NULL OR a.rule = ?6))) \
     AND (?7 IS NULL OR updated_at >= ?7) AND (?8 IS NULL OR updated_at < ?8)";

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
}

// Batches are bound as multi-row `VALUES` lists: one statement per chunk
// instead of one per row keeps the round trips to the database thread few,
// and SQLite reads the bound values directly (an earlier version passed one
// JSON array and took it apart with `json_each`; re-reading each object for
// every field cost a fifth of the database's time).

/// The rows per statement. A batch is cut into chunks of at most the
/// largest size, and each chunk is padded with rows of NULLs (which the
/// statements skip) up to the next size: three statement texts, each
/// prepared once per connection, serve every batch, and a batch of a few
/// dozen results costs one round trip per statement, not one per power of
/// two. 256 rows × 16 columns stays far below SQLite's limit on bound
/// parameters.
const CHUNK_SIZES: [usize; 3] = [8, 64, 256];

/// `rows` in chunks, each with the row count of its statement.
fn chunked<T>(rows: &[T]) -> Vec<(&[T], usize)> {
    let largest = CHUNK_SIZES[CHUNK_SIZES.len() - 1];
    rows.chunks(largest)
        .map(|chunk| {
            let size = CHUNK_SIZES
                .into_iter()
                .find(|size| *size >= chunk.len())
                .unwrap_or(largest);
            (chunk, size)
        })
        .collect()
}

/// A `VALUES` list of `rows` rows of `columns` parameters each.
fn values_list(columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(",")
}

/// Binds the NULL rows that pad a chunk up to its statement's size.
fn bind_padding<'q>(mut query: SqliteQuery<'q>, parameters: usize) -> SqliteQuery<'q> {
    for _ in 0..parameters {
        query = query.bind(None::<i64>);
    }
    query
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// The record of a job just inserted, as the database now holds it (times
/// at the log's millisecond precision).
fn created_record(job: &NewJob) -> StoreResult<JobRecord> {
    let created_at =
        opt_timestamp("created_at", Some(ms(job.created_at)))?.unwrap_or(job.created_at);
    Ok(JobRecord {
        id: job.id.clone(),
        flow: job.flow.clone(),
        state: JobState::Pending,
        step_index: 0,
        step: job.step.clone(),
        channel_index: 0,
        attempt: 0,
        series_started_at: None,
        held_ms: 0,
        next_at: opt_timestamp("next_at", Some(ms(job.next_at)))?,
        reason: None,
        idempotency_key: job.idempotency_key.clone(),
        payload: job.payload.clone(),
        policy_version: job.policy_version.clone(),
        created_at,
        updated_at: created_at,
        attempts_total: 0,
        lease_owner: None,
        lease_until: None,
        notify_at: None,
        notify_attempts: 0,
    })
}

async fn insert_many(
    conn: &mut sqlx::SqliteConnection,
    jobs: &[NewJob],
) -> StoreResult<Vec<InsertOutcome>> {
    let mut outcomes = Vec::with_capacity(jobs.len());
    for (chunk, size) in chunked(jobs) {
        // `WHERE` also tells SQLite's parser that ON CONFLICT belongs to the
        // INSERT. `OR FAIL`: see `claim_flow`.
        let sql = format!(
            "INSERT OR FAIL INTO jobs (id, flow, idempotency_key, payload, state, step_index, step, \
                               next_at, policy_version, created_at, updated_at) \
             SELECT column1, column2, column3, column4, 'pending', 0, column5, column6, \
                    column7, column8, column8 \
             FROM (VALUES {}) WHERE column1 IS NOT NULL \
             ON CONFLICT (flow, idempotency_key) DO NOTHING",
            values_list(8, size)
        );
        let mut query: SqliteQuery<'_> = sqlx::query(sqlx::AssertSqlSafe(sql));
        for job in chunk {
            query = query
                .bind(&job.id)
                .bind(&job.flow)
                .bind(&job.idempotency_key)
                .bind(&job.payload)
                .bind(&job.step)
                .bind(ms(job.next_at))
                .bind(&job.policy_version)
                .bind(ms(job.created_at));
        }
        let query = bind_padding(query, 8 * (size - chunk.len()));
        let inserted = query.execute(&mut *conn).await?.rows_affected();
        if inserted == chunk.len() as u64 {
            for job in chunk {
                outcomes.push(InsertOutcome::Created(created_record(job)?));
            }
            continue;
        }
        // Some keys were taken: look each job's key up to tell which.
        for job in chunk {
            let row = sqlx::query("SELECT * FROM jobs WHERE flow = ?1 AND idempotency_key = ?2")
                .bind(&job.flow)
                .bind(&job.idempotency_key)
                .fetch_optional(&mut *conn)
                .await?;
            let record = row.as_ref().map(job_from_row).transpose()?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "job with key `{}` in flow `{}` neither inserted nor found",
                    job.idempotency_key, job.flow
                ))
            })?;
            outcomes.push(if record.id == job.id {
                InsertOutcome::Created(record)
            } else if same_payload(&record.payload, &job.payload) {
                InsertOutcome::Existing(record)
            } else {
                InsertOutcome::Conflict(record)
            });
        }
    }
    Ok(outcomes)
}

/// Applies transitions of distinct jobs: finds those whose job is no
/// longer leased to the transition's owner, then one guarded update for the
/// rest and one insert of their attempts.
async fn apply_run(
    conn: &mut sqlx::SqliteConnection,
    run: &[Transition],
) -> StoreResult<Vec<bool>> {
    let mut stale: HashSet<String> = HashSet::new();
    for (chunk, size) in chunked(run) {
        let sql = format!(
            "WITH t (id, owner, lease) AS (VALUES {}) \
             SELECT t.id FROM t WHERE t.id IS NOT NULL AND NOT EXISTS ( \
                 SELECT 1 FROM jobs WHERE jobs.id = t.id AND jobs.state = 'running' \
                     AND jobs.lease_owner = t.owner AND jobs.lease_until IS t.lease)",
            values_list(3, size)
        );
        let mut query: SqliteQuery<'_> = sqlx::query(sqlx::AssertSqlSafe(sql));
        for t in chunk {
            query = query
                .bind(&t.job_id)
                .bind(&t.owner)
                .bind(opt_ms(t.lease_until));
        }
        let query = bind_padding(query, 3 * (size - chunk.len()));
        for row in query.fetch_all(&mut *conn).await? {
            stale.insert(row.try_get::<String, _>(0)?);
        }
    }
    let fresh: Vec<&Transition> = run.iter().filter(|t| !stale.contains(&t.job_id)).collect();
    for (chunk, size) in chunked(&fresh) {
        let sql = format!(
            // The primary key's index, named so that the planner walks the
            // batch and looks each job up, rather than walking every running
            // job and searching the batch for it. `OR FAIL`: see `claim_flow`.
            "WITH t (id, owner, state, step_index, step, channel_index, attempt, \
                     series_started_at, held_ms, next_at, reason, version, notify_at, now, \
                     counts, running, lease) AS (VALUES {}) \
             UPDATE OR FAIL jobs INDEXED BY sqlite_autoindex_jobs_1 \
             SET state = t.state, step_index = t.step_index, step = t.step, \
                 channel_index = t.channel_index, attempt = t.attempt, \
                 series_started_at = t.series_started_at, held_ms = t.held_ms, \
                 next_at = t.next_at, reason = t.reason, policy_version = t.version, \
                 notify_at = t.notify_at, updated_at = t.now, \
                 attempts_total = jobs.attempts_total + t.counts, \
                 lease_owner = CASE WHEN t.running = 1 THEN jobs.lease_owner END, \
                 lease_until = CASE WHEN t.running = 1 THEN jobs.lease_until END \
             FROM t \
             WHERE jobs.id = t.id AND jobs.state = 'running' AND jobs.lease_owner = t.owner \
                 AND jobs.lease_until IS t.lease",
            values_list(17, size)
        );
        let mut query: SqliteQuery<'_> = sqlx::query(sqlx::AssertSqlSafe(sql));
        for t in chunk {
            // Notifications and skips (a breaker sent the job on without
            // trying this channel) are not attempts of the job.
            let counts = t.attempt.as_ref().is_some_and(|attempt| {
                attempt.step != ON_DEAD_STEP && attempt.outcome != "skipped"
            });
            query = query
                .bind(&t.job_id)
                .bind(&t.owner)
                .bind(t.to.as_str())
                .bind(i64::from(t.step_index))
                .bind(&t.step)
                .bind(i64::from(t.channel_index))
                .bind(i64::from(t.series_attempts))
                .bind(opt_ms(t.series_started_at))
                .bind(t.held_ms)
                .bind(opt_ms(t.next_at))
                .bind(t.reason.as_deref())
                .bind(&t.policy_version)
                .bind(opt_ms(t.notify_at))
                .bind(ms(t.now))
                .bind(i64::from(counts))
                .bind(i64::from(t.to == JobState::Running))
                .bind(opt_ms(t.lease_until));
        }
        let query = bind_padding(query, 17 * (size - chunk.len()));
        let updated = query.execute(&mut *conn).await?.rows_affected();
        if updated != chunk.len() as u64 {
            // The write lock has been ours since the check above.
            return Err(StoreError::Corrupt(format!(
                "{updated} of {} leased jobs took their transition",
                chunk.len()
            )));
        }
    }
    let attempts: Vec<&AttemptRecord> = fresh.iter().filter_map(|t| t.attempt.as_ref()).collect();
    attempts_insert(conn, &attempts).await?;
    Ok(run.iter().map(|t| !stale.contains(&t.job_id)).collect())
}

async fn attempts_insert(
    conn: &mut sqlx::SqliteConnection,
    attempts: &[&AttemptRecord],
) -> StoreResult<()> {
    for (chunk, size) in chunked(attempts) {
        // `OR FAIL`: see `claim_flow`.
        let sql = format!(
            "INSERT OR FAIL INTO attempts (job_id, step, channel, attempt, started_at, finished_at, \
                                   status, error, error_message, outcome, rule, decision, \
                                   delay_ms, next_at, policy_version) \
             SELECT * FROM (VALUES {}) WHERE column1 IS NOT NULL",
            values_list(15, size)
        );
        let mut query: SqliteQuery<'_> = sqlx::query(sqlx::AssertSqlSafe(sql));
        for attempt in chunk {
            query = query
                .bind(&attempt.job_id)
                .bind(&attempt.step)
                .bind(&attempt.channel)
                .bind(i64::from(attempt.attempt))
                .bind(ms(attempt.started_at))
                .bind(ms(attempt.finished_at))
                .bind(attempt.status.map(i64::from))
                .bind(attempt.error.as_deref())
                .bind(attempt.error_message.as_deref())
                .bind(&attempt.outcome)
                .bind(attempt.rule.as_deref())
                .bind(&attempt.decision)
                .bind(attempt.delay_ms)
                .bind(opt_ms(attempt.next_at))
                .bind(&attempt.policy_version);
        }
        bind_padding(query, 15 * (size - chunk.len()))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Each flow with waiting jobs and its earliest due time, in one
/// statement: a recursive walk over the distinct flows of the
/// `jobs_due_by_flow` index, one seek per flow, so the cost follows the
/// number of flows, not of waiting jobs.
async fn flows_waiting(conn: &mut sqlx::SqliteConnection) -> StoreResult<Vec<(String, i64)>> {
    let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
        "WITH RECURSIVE flows (flow) AS ( \
             SELECT (SELECT flow FROM jobs INDEXED BY jobs_due_by_flow \
                     WHERE state IN ('pending', 'suspended') ORDER BY flow LIMIT 1) \
             UNION ALL \
             SELECT (SELECT flow FROM jobs INDEXED BY jobs_due_by_flow \
                     WHERE state IN ('pending', 'suspended') AND flow > flows.flow \
                     ORDER BY flow LIMIT 1) \
             FROM flows WHERE flows.flow IS NOT NULL) \
         SELECT flows.flow, (SELECT next_at FROM jobs INDEXED BY jobs_due_by_flow \
                             WHERE state IN ('pending', 'suspended') AND flow = flows.flow \
                             ORDER BY next_at LIMIT 1) \
         FROM flows WHERE flows.flow IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(flow, earliest)| earliest.map(|at| (flow, at)))
        .collect())
}

/// The flows that have a job due at `now`, the one waiting longest first.
async fn flows_due(conn: &mut sqlx::SqliteConnection, now: Timestamp) -> StoreResult<Vec<String>> {
    let mut due: Vec<(i64, String)> = flows_waiting(conn)
        .await?
        .into_iter()
        .filter(|(_, earliest)| *earliest <= ms(now))
        .map(|(flow, earliest)| (earliest, flow))
        .collect();
    due.sort();
    Ok(due.into_iter().map(|(_, flow)| flow).collect())
}

/// Claims up to `limit` due jobs of one flow, earliest first.
async fn claim_flow(
    conn: &mut sqlx::SqliteConnection,
    flow: &str,
    lease: &Lease<'_>,
    limit: usize,
) -> StoreResult<Vec<JobRecord>> {
    // `OR FAIL` spares SQLite a statement journal (a copy of every page a
    // multi-row statement touches, kept to undo that statement alone if a
    // constraint fails halfway): a failure here rolls the whole transaction
    // back anyway. The limit is cast because SQLite plans with the value
    // bound to a bare `LIMIT ?`, and so prepares the statement again at every
    // new binding.
    let rows = sqlx::query(
        "UPDATE OR FAIL jobs SET state = 'running', lease_owner = ?1, lease_until = ?2, updated_at = ?3 \
         WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_due_by_flow \
                      WHERE state IN ('pending', 'suspended') AND flow = ?4 AND next_at <= ?3 \
                      ORDER BY next_at LIMIT CAST(?5 AS INTEGER)) \
         RETURNING *",
    )
    .bind(lease.owner)
    .bind(ms(lease.lease_until))
    .bind(ms(lease.now))
    .bind(flow)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    jobs_from_rows(&rows)
}

/// Claims up to `limit` due jobs, flow by flow (see
/// [`StepLog::jobs_claim_due`]), inside the caller's transaction.
async fn claim_due(
    tx: &mut sqlx::SqliteConnection,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
    limit: usize,
) -> StoreResult<Vec<ClaimedJob>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let due = flows_due(&mut *tx, now).await?;
    let lease = Lease {
        owner,
        now,
        lease_until,
    };
    let mut round = RoundRobin::new(&due, limit);
    while let Some((flow, room)) = round.next() {
        let claimed = claim_flow(&mut *tx, flow, &lease, room).await?;
        round.claimed(flow, room, claimed);
    }
    Ok(round.into_jobs())
}

/// Applies transitions inside the caller's transaction (see
/// [`StepLog::transitions_apply`]).
async fn apply_all(
    tx: &mut sqlx::SqliteConnection,
    transitions: &[Transition],
) -> StoreResult<Vec<bool>> {
    let mut applied = Vec::with_capacity(transitions.len());
    for run in runs_of_distinct_jobs(transitions) {
        applied.extend(apply_run(&mut *tx, run).await?);
    }
    Ok(applied)
}

#[async_trait]
impl StepLog for SqliteStepLog {
    async fn job_insert(&self, job: NewJob) -> StoreResult<InsertOutcome> {
        self.jobs_insert_batch(vec![job])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("an insert returned no outcome".into()))
    }

    async fn jobs_insert_batch(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<InsertOutcome>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let outcomes = insert_many(&mut tx, &jobs).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn jobs_claim_due(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<ClaimedJob>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let jobs = claim_due(&mut tx, owner, now, lease_until, limit).await?;
        tx.commit().await?;
        Ok(jobs)
    }

    async fn transitions_apply(&self, transitions: Vec<Transition>) -> StoreResult<Vec<bool>> {
        if transitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let applied = apply_all(&mut tx, &transitions).await?;
        tx.commit().await?;
        Ok(applied)
    }

    async fn transitions_apply_then_claim(
        &self,
        transitions: &[Transition],
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<(Vec<bool>, Vec<ClaimedJob>)> {
        if transitions.is_empty() && limit == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut tx = self.begin_write().await?;
        let applied = apply_all(&mut tx, transitions).await?;
        let claimed = claim_due(&mut tx, owner, now, lease_until, limit).await?;
        tx.commit().await?;
        Ok((applied, claimed))
    }

    async fn next_due_at(&self) -> StoreResult<Option<Timestamp>> {
        let mut conn = self.pool.acquire().await?;
        let next = flows_waiting(&mut conn)
            .await?
            .into_iter()
            .map(|(_, earliest)| earliest)
            .min();
        opt_timestamp("next_at", next)
    }

    async fn leases_release(&self, owner: &str) -> StoreResult<u64> {
        let result = sqlx::query(
            "UPDATE jobs SET state = 'pending', lease_owner = NULL, lease_until = NULL \
             WHERE state = 'running' AND lease_owner = ?1",
        )
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(result.rows_affected())
    }

    async fn leases_rescue(&self, now: Timestamp) -> StoreResult<u64> {
        let result = sqlx::query(
            "UPDATE jobs INDEXED BY jobs_leased \
             SET state = 'pending', lease_owner = NULL, lease_until = NULL, \
                 next_at = COALESCE(next_at, ?1) \
             WHERE state = 'running' AND lease_until < ?1",
        )
        .bind(ms(now))
        .execute(&self.writer)
        .await?;
        Ok(result.rows_affected())
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
        // The limit is cast: see `claim_flow`.
        let rows = sqlx::query(
            "UPDATE jobs SET notify_at = ?2 \
             WHERE id IN (SELECT id FROM jobs \
                          INDEXED BY jobs_notify \
                          WHERE notify_at IS NOT NULL AND notify_at <= ?1 AND state = 'dead' \
                          ORDER BY notify_at LIMIT CAST(?3 AS INTEGER)) \
             RETURNING *",
        )
        .bind(ms(now))
        .bind(ms(lease_until))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.writer)
        .await?;
        Ok(jobs_from_rows(&rows)?
            .into_iter()
            .map(|job| NotificationClaim { job })
            .collect())
    }

    async fn notification_record(
        &self,
        attempt: AttemptRecord,
        next_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE jobs SET notify_attempts = notify_attempts + 1, notify_at = ?2 WHERE id = ?1",
        )
        .bind(&attempt.job_id)
        .bind(opt_ms(next_at))
        .execute(&mut *tx)
        .await?;
        attempts_insert(&mut tx, &[&attempt]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn job_get(&self, id: &str) -> StoreResult<Option<JobRecord>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn attempts_list(&self, job_id: &str) -> StoreResult<Vec<AttemptRecord>> {
        let rows = sqlx::query("SELECT * FROM attempts WHERE job_id = ?1 ORDER BY id")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(attempt_from_row).collect()
    }

    async fn jobs_list(&self, filter: &JobFilter) -> StoreResult<JobPage> {
        let limit = filter.limit.clamp(1, MAX_PAGE);
        let sql = format!(
            "SELECT * FROM jobs WHERE {FILTER_WHERE} AND (?9 IS NULL OR id < ?9) \
             ORDER BY id DESC LIMIT ?10"
        );
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
        let sql = format!("SELECT COUNT(*) AS n FROM jobs WHERE {FILTER_WHERE}");
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
        let sql = format!(
            "SELECT id FROM jobs WHERE {FILTER_WHERE} AND (?9 IS NULL OR id > ?9) \
             ORDER BY id ASC LIMIT ?10"
        );
        let mut tx = self.begin_write().await?;
        let rows = // Only constant text is formatted into `sql`; values are bound.
        bind_filter(sqlx::query(sqlx::AssertSqlSafe(sql)), filter, Some(JobState::Dead.as_str()))
            .bind(after)
            .bind(i64::from(limit.max(1)))
            .fetch_all(&mut *tx)
            .await?;
        let mut batch = RetryBatch::default();
        for (k, row) in rows.iter().enumerate() {
            let id: String = row.try_get("id")?;
            let at = ms(first_at).saturating_add(spacing_us.saturating_mul(k as i64) / 1000);
            let changed = sqlx::query(RETRY_SQL)
                .bind(&id)
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            batch.matched += 1;
            batch.retried += changed;
            batch.last_id = Some(id);
        }
        tx.commit().await?;
        Ok(batch)
    }

    async fn payload_edits_list(&self, job_id: &str) -> StoreResult<Vec<PayloadEdit>> {
        let rows = sqlx::query("SELECT * FROM payload_edits WHERE job_id = ?1 ORDER BY id")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(payload_edit_from_row).collect()
    }

    async fn jobs_count_by_state(&self) -> StoreResult<StateCounts> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut counts: StateCounts = JobState::ALL.iter().map(|state| (*state, 0)).collect();
        for row in rows {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            let state = JobState::from_str(&state).map_err(StoreError::Corrupt)?;
            counts.insert(state, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }

    async fn jobs_resume(&self, reason: &str, now: Timestamp) -> StoreResult<u64> {
        let result = sqlx::query(
            "UPDATE jobs SET next_at = ?2, updated_at = ?2 \
             WHERE state = 'suspended' AND reason = ?1 AND next_at > ?2",
        )
        .bind(reason)
        .bind(ms(now))
        .execute(&self.writer)
        .await?;
        Ok(result.rows_affected())
    }

    async fn job_update(&self, id: &str, update: JobUpdate) -> StoreResult<Option<bool>> {
        let mut tx = self.begin_write().await?;
        let changed = match &update {
            JobUpdate::Retry { at } => sqlx::query(RETRY_SQL)
                .bind(id)
                .bind(ms(*at))
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            JobUpdate::EditPayload {
                payload,
                editor,
                at,
            } => {
                // The audit row is written first, from the row being
                // replaced, under the same state guard as the update.
                sqlx::query(
                    "INSERT INTO payload_edits (job_id, old_payload, new_payload, editor, edited_at) \
                     SELECT id, payload, ?2, ?3, ?4 FROM jobs \
                     WHERE id = ?1 AND state IN ('dead', 'pending', 'suspended')",
                )
                .bind(id)
                .bind(payload)
                .bind(editor)
                .bind(ms(*at))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE jobs SET payload = ?2, updated_at = ?3 \
                     WHERE id = ?1 AND state IN ('dead', 'pending', 'suspended')",
                )
                .bind(id)
                .bind(payload)
                .bind(ms(*at))
                .execute(&mut *tx)
                .await?
                .rows_affected()
            }
            JobUpdate::Cancel { at } => sqlx::query(
                "UPDATE jobs SET state = 'cancelled', next_at = NULL, notify_at = NULL, \
                     updated_at = ?2 \
                 WHERE id = ?1 AND state IN ('pending', 'suspended', 'dead')",
            )
            .bind(id)
            .bind(ms(*at))
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        tx.commit().await?;
        if changed == 1 {
            return Ok(Some(true));
        }
        Ok(if self.job_exists(id).await? {
            Some(false)
        } else {
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{same_payload, url_options, SqliteOptions, Synchronous};

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

    #[test]
    fn payloads_compare_as_json() {
        assert!(same_payload(r#"{"a":1,"b":2}"#, r#"{ "b": 2, "a": 1 }"#));
        assert!(!same_payload(r#"{"a":1}"#, r#"{"a":2}"#));
        assert!(!same_payload("not json", "other"));
    }
}
