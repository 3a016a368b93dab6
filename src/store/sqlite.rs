//! The embedded step log: one SQLite file in WAL mode.
//!
//! Writers serialise on SQLite's single write lock, so every transaction
//! that writes starts with `BEGIN IMMEDIATE`: a deferred transaction that
//! read first could not upgrade to a writer after another commit and would
//! fail with `SQLITE_BUSY` instead of waiting.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlSafeStr, SqlitePool};

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
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "init",
    include_str!("../../migrations/sqlite/0001_init.sql"),
)];

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
    pool: SqlitePool,
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
            .connect_with(connect)
            .await?;
        migrator().run(&pool).await?;
        Ok(SqliteStepLog { pool })
    }

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
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

// Batches travel as one JSON array bound to one parameter and are taken
// apart by `json_each` inside SQLite: one statement per batch instead of one
// per row keeps the round trips to the database thread constant.

/// A [`NewJob`] as the insert statement reads it.
#[derive(serde::Serialize)]
struct NewJobRow<'a> {
    id: &'a str,
    flow: &'a str,
    key: &'a str,
    payload: &'a str,
    step: &'a str,
    next_at: i64,
    version: &'a str,
    created_at: i64,
}

async fn insert_many(
    conn: &mut sqlx::SqliteConnection,
    jobs: &[NewJob],
) -> StoreResult<Vec<InsertOutcome>> {
    let rows: Vec<NewJobRow<'_>> = jobs
        .iter()
        .map(|job| NewJobRow {
            id: &job.id,
            flow: &job.flow,
            key: &job.idempotency_key,
            payload: &job.payload,
            step: &job.step,
            next_at: ms(job.next_at),
            version: &job.policy_version,
            created_at: ms(job.created_at),
        })
        .collect();
    let batch = to_json(&rows)?;
    // `WHERE true` tells SQLite's parser that ON CONFLICT belongs to the
    // INSERT, not to a join in the SELECT.
    let created = sqlx::query(
        "INSERT INTO jobs (id, flow, idempotency_key, payload, state, step_index, step, \
                           next_at, policy_version, created_at, updated_at) \
         SELECT j.value ->> 'id', j.value ->> 'flow', j.value ->> 'key', j.value ->> 'payload', \
                'pending', 0, j.value ->> 'step', j.value ->> 'next_at', j.value ->> 'version', \
                j.value ->> 'created_at', j.value ->> 'created_at' \
         FROM json_each(?1) AS j WHERE true ORDER BY j.key \
         ON CONFLICT (flow, idempotency_key) DO NOTHING \
         RETURNING *",
    )
    .bind(&batch)
    .fetch_all(&mut *conn)
    .await?;
    let mut created: HashMap<String, JobRecord> = jobs_from_rows(&created)?
        .into_iter()
        .map(|job| (job.id.clone(), job))
        .collect();
    let mut existing: HashMap<(String, String), JobRecord> = HashMap::new();
    if created.len() < jobs.len() {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE (flow, idempotency_key) IN \
                 (SELECT j.value ->> 'flow', j.value ->> 'key' FROM json_each(?1) AS j)",
        )
        .bind(&batch)
        .fetch_all(&mut *conn)
        .await?;
        for job in jobs_from_rows(&rows)? {
            existing.insert((job.flow.clone(), job.idempotency_key.clone()), job);
        }
    }
    jobs.iter()
        .map(|job| {
            if let Some(record) = created.remove(&job.id) {
                return Ok(InsertOutcome::Created(record));
            }
            let key = (job.flow.clone(), job.idempotency_key.clone());
            let record = existing.get(&key).cloned().ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "job with key `{}` in flow `{}` neither inserted nor found",
                    job.idempotency_key, job.flow
                ))
            })?;
            Ok(if same_payload(&record.payload, &job.payload) {
                InsertOutcome::Existing(record)
            } else {
                InsertOutcome::Conflict(record)
            })
        })
        .collect()
}

fn to_json(value: &impl serde::Serialize) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|error| StoreError::Corrupt(format!("cannot encode a batch: {error}")))
}

/// A [`Transition`]'s update of its job, as the statement reads it.
#[derive(serde::Serialize)]
struct TransitionRow<'a> {
    id: &'a str,
    owner: &'a str,
    state: &'a str,
    step_index: u32,
    step: &'a str,
    channel_index: u32,
    attempt: u32,
    series_started_at: Option<i64>,
    held_ms: i64,
    next_at: Option<i64>,
    reason: Option<&'a str>,
    version: &'a str,
    notify_at: Option<i64>,
    now: i64,
    /// 1 when the attempt counts towards `attempts_total`.
    counts: u8,
    /// 1 when the job stays `running` (and keeps its lease).
    running: u8,
}

#[derive(serde::Serialize)]
struct AttemptRow<'a> {
    job_id: &'a str,
    step: &'a str,
    channel: &'a str,
    attempt: u32,
    started_at: i64,
    finished_at: i64,
    status: Option<u16>,
    error: Option<&'a str>,
    error_message: Option<&'a str>,
    outcome: &'a str,
    rule: Option<&'a str>,
    decision: &'a str,
    delay_ms: Option<i64>,
    next_at: Option<i64>,
    version: &'a str,
}

impl<'a> From<&'a AttemptRecord> for AttemptRow<'a> {
    fn from(attempt: &'a AttemptRecord) -> Self {
        AttemptRow {
            job_id: &attempt.job_id,
            step: &attempt.step,
            channel: &attempt.channel,
            attempt: attempt.attempt,
            started_at: ms(attempt.started_at),
            finished_at: ms(attempt.finished_at),
            status: attempt.status,
            error: attempt.error.as_deref(),
            error_message: attempt.error_message.as_deref(),
            outcome: &attempt.outcome,
            rule: attempt.rule.as_deref(),
            decision: &attempt.decision,
            delay_ms: attempt.delay_ms,
            next_at: opt_ms(attempt.next_at),
            version: &attempt.policy_version,
        }
    }
}

/// Splits a batch into runs in which no job appears twice, so that one
/// set-based update per run says exactly which transitions applied.
fn runs_of_distinct_jobs(transitions: &[Transition]) -> Vec<&[Transition]> {
    let mut runs = Vec::new();
    let mut seen = HashSet::new();
    let mut start = 0;
    for (index, transition) in transitions.iter().enumerate() {
        if !seen.insert(transition.job_id.as_str()) {
            runs.push(&transitions[start..index]);
            seen.clear();
            seen.insert(transition.job_id.as_str());
            start = index;
        }
    }
    runs.push(&transitions[start..]);
    runs
}

/// Applies transitions of distinct jobs: one guarded update for all, then
/// one insert for the attempts of those that applied.
async fn apply_run(
    conn: &mut sqlx::SqliteConnection,
    run: &[Transition],
) -> StoreResult<Vec<bool>> {
    let rows: Vec<TransitionRow<'_>> = run
        .iter()
        .map(|t| TransitionRow {
            id: &t.job_id,
            owner: &t.owner,
            state: t.to.as_str(),
            step_index: t.step_index,
            step: &t.step,
            channel_index: t.channel_index,
            attempt: t.series_attempts,
            series_started_at: opt_ms(t.series_started_at),
            held_ms: t.held_ms,
            next_at: opt_ms(t.next_at),
            reason: t.reason.as_deref(),
            version: &t.policy_version,
            notify_at: opt_ms(t.notify_at),
            now: ms(t.now),
            // Notifications and skips (a breaker sent the job on without
            // trying this channel) are not attempts of the job.
            counts: u8::from(t.attempt.as_ref().is_some_and(|attempt| {
                attempt.step != ON_DEAD_STEP && attempt.outcome != "skipped"
            })),
            running: u8::from(t.to == JobState::Running),
        })
        .collect();
    let moved: Vec<String> = sqlx::query_scalar(
        // The primary key's index, named so that the planner walks the batch
        // and looks each job up, rather than walking every running job and
        // searching the batch for it.
        "UPDATE jobs INDEXED BY sqlite_autoindex_jobs_1 \
         SET state = t.value ->> 'state', step_index = t.value ->> 'step_index', \
             step = t.value ->> 'step', channel_index = t.value ->> 'channel_index', \
             attempt = t.value ->> 'attempt', series_started_at = t.value ->> 'series_started_at', \
             held_ms = t.value ->> 'held_ms', next_at = t.value ->> 'next_at', \
             reason = t.value ->> 'reason', policy_version = t.value ->> 'version', \
             notify_at = t.value ->> 'notify_at', updated_at = t.value ->> 'now', \
             attempts_total = jobs.attempts_total + (t.value ->> 'counts'), \
             lease_owner = CASE WHEN t.value ->> 'running' = 1 THEN jobs.lease_owner END, \
             lease_until = CASE WHEN t.value ->> 'running' = 1 THEN jobs.lease_until END \
         FROM json_each(?1) AS t \
         WHERE jobs.id = t.value ->> 'id' AND jobs.state = 'running' \
           AND jobs.lease_owner = t.value ->> 'owner' \
         RETURNING jobs.id",
    )
    .bind(to_json(&rows)?)
    .fetch_all(&mut *conn)
    .await?;
    let moved: HashSet<String> = moved.into_iter().collect();
    let attempts: Vec<AttemptRow<'_>> = run
        .iter()
        .filter(|t| moved.contains(&t.job_id))
        .filter_map(|t| t.attempt.as_ref().map(AttemptRow::from))
        .collect();
    attempts_insert(conn, &attempts).await?;
    Ok(run.iter().map(|t| moved.contains(&t.job_id)).collect())
}

async fn attempts_insert(
    conn: &mut sqlx::SqliteConnection,
    attempts: &[AttemptRow<'_>],
) -> StoreResult<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO attempts (job_id, step, channel, attempt, started_at, finished_at, status, \
                               error, error_message, outcome, rule, decision, delay_ms, next_at, \
                               policy_version) \
         SELECT a.value ->> 'job_id', a.value ->> 'step', a.value ->> 'channel', \
                a.value ->> 'attempt', a.value ->> 'started_at', a.value ->> 'finished_at', \
                a.value ->> 'status', a.value ->> 'error', a.value ->> 'error_message', \
                a.value ->> 'outcome', a.value ->> 'rule', a.value ->> 'decision', \
                a.value ->> 'delay_ms', a.value ->> 'next_at', a.value ->> 'version' \
         FROM json_each(?1) AS a ORDER BY a.key",
    )
    .bind(to_json(&attempts)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

struct Lease<'a> {
    owner: &'a str,
    now: Timestamp,
    lease_until: Timestamp,
}

/// The flows that have a job due at `now`, the one waiting longest first.
/// Walks the distinct flows of the `jobs_due_by_flow` index one seek at a
/// time, so the cost follows the number of flows, not of waiting jobs.
async fn flows_due(conn: &mut sqlx::SqliteConnection, now: Timestamp) -> StoreResult<Vec<String>> {
    let mut due: Vec<(i64, String)> = Vec::new();
    let mut after = String::new();
    loop {
        let flow: Option<String> = sqlx::query_scalar(
            "SELECT flow FROM jobs INDEXED BY jobs_due_by_flow \
             WHERE state IN ('pending', 'suspended') AND flow > ?1 \
             ORDER BY flow LIMIT 1",
        )
        .bind(&after)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(flow) = flow else { break };
        let earliest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_at) FROM jobs INDEXED BY jobs_due_by_flow \
             WHERE state IN ('pending', 'suspended') AND flow = ?1",
        )
        .bind(&flow)
        .fetch_one(&mut *conn)
        .await?;
        if let Some(earliest) = earliest.filter(|at| *at <= ms(now)) {
            due.push((earliest, flow.clone()));
        }
        after = flow;
    }
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
    let rows = sqlx::query(
        "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_until = ?2, updated_at = ?3 \
         WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_due_by_flow \
                      WHERE state IN ('pending', 'suspended') AND flow = ?4 AND next_at <= ?3 \
                      ORDER BY next_at LIMIT ?5) \
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
        let due = flows_due(&mut tx, now).await?;
        let lease = Lease {
            owner,
            now,
            lease_until,
        };
        let mut jobs = Vec::with_capacity(limit);
        // Round robin: every flow with due jobs gets an equal share of the
        // round first, so a backlog in one flow delays another flow's job by
        // one round at most; what the share leaves free goes, in order, to
        // the flows that had more.
        let share = (limit / due.len().max(1)).max(1);
        let mut hungry = Vec::new();
        for flow in &due {
            let room = share.min(limit - jobs.len());
            if room == 0 {
                break;
            }
            let claimed = claim_flow(&mut tx, flow, &lease, room).await?;
            if claimed.len() == room {
                hungry.push(flow);
            }
            jobs.extend(claimed);
        }
        for flow in hungry {
            let room = limit - jobs.len();
            if room == 0 {
                break;
            }
            jobs.extend(claim_flow(&mut tx, flow, &lease, room).await?);
        }
        tx.commit().await?;
        jobs.sort_by_key(|job| job.next_at);
        Ok(jobs)
    }

    async fn transitions_apply(&self, transitions: Vec<Transition>) -> StoreResult<Vec<bool>> {
        if transitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let mut applied = Vec::with_capacity(transitions.len());
        for run in runs_of_distinct_jobs(&transitions) {
            applied.extend(apply_run(&mut tx, run).await?);
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn next_due_at(&self) -> StoreResult<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_at) FROM jobs INDEXED BY jobs_due \
             WHERE state IN ('pending', 'suspended')",
        )
        .fetch_one(&self.pool)
        .await?;
        opt_timestamp("next_at", next)
    }

    async fn leases_release(&self, owner: &str) -> StoreResult<u64> {
        let result = sqlx::query(
            "UPDATE jobs SET state = 'pending', lease_owner = NULL, lease_until = NULL \
             WHERE state = 'running' AND lease_owner = ?1",
        )
        .bind(owner)
        .execute(&self.pool)
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
        .execute(&self.pool)
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
        let rows = sqlx::query(
            "UPDATE jobs SET notify_at = ?2 \
             WHERE id IN (SELECT id FROM jobs \
                          INDEXED BY jobs_notify \
                          WHERE notify_at IS NOT NULL AND notify_at <= ?1 AND state = 'dead' \
                          ORDER BY notify_at LIMIT ?3) \
             RETURNING *",
        )
        .bind(ms(now))
        .bind(ms(lease_until))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
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
        attempts_insert(&mut tx, &[AttemptRow::from(&attempt)]).await?;
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
        .execute(&self.pool)
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
