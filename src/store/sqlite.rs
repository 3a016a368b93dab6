//! The embedded step log: one SQLite file in WAL mode.
//!
//! Writers serialise on SQLite's single write lock, so every transaction
//! that writes starts with `BEGIN IMMEDIATE`: a deferred transaction that
//! read first could not upgrade to a writer after another commit and would
//! fail with `SQLITE_BUSY` instead of waiting.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr, SqlitePool};

use super::{
    AttemptRecord, ClaimedJob, InsertOutcome, JobFilter, JobPage, JobRecord, JobState, JobUpdate,
    NewJob, NotificationClaim, StateCounts, StepLog, StoreError, StoreResult, Transition,
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

fn ms(at: Timestamp) -> i64 {
    at.as_millisecond()
}

fn opt_ms(at: Option<Timestamp>) -> Option<i64> {
    at.map(ms)
}

fn timestamp(column: &str, value: i64) -> StoreResult<Timestamp> {
    Timestamp::from_millisecond(value)
        .map_err(|error| StoreError::Corrupt(format!("{column} = {value}: {error}")))
}

fn opt_timestamp(column: &str, value: Option<i64>) -> StoreResult<Option<Timestamp>> {
    value.map(|value| timestamp(column, value)).transpose()
}

fn count(column: &str, value: i64) -> StoreResult<u32> {
    u32::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{column} = {value} is not a count")))
}

fn job_from_row(row: &SqliteRow) -> StoreResult<JobRecord> {
    let state: String = row.try_get("state")?;
    Ok(JobRecord {
        id: row.try_get("id")?,
        flow: row.try_get("flow")?,
        state: JobState::from_str(&state).map_err(StoreError::Corrupt)?,
        step_index: count("step_index", row.try_get("step_index")?)?,
        step: row.try_get("step")?,
        channel_index: count("channel_index", row.try_get("channel_index")?)?,
        attempt: count("attempt", row.try_get("attempt")?)?,
        series_started_at: opt_timestamp("series_started_at", row.try_get("series_started_at")?)?,
        held_ms: row.try_get("held_ms")?,
        next_at: opt_timestamp("next_at", row.try_get("next_at")?)?,
        reason: row.try_get("reason")?,
        idempotency_key: row.try_get("idempotency_key")?,
        payload: row.try_get("payload")?,
        policy_version: row.try_get("policy_version")?,
        created_at: timestamp("created_at", row.try_get("created_at")?)?,
        updated_at: timestamp("updated_at", row.try_get("updated_at")?)?,
        attempts_total: count("attempts_total", row.try_get("attempts_total")?)?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: opt_timestamp("lease_until", row.try_get("lease_until")?)?,
        notify_at: opt_timestamp("notify_at", row.try_get("notify_at")?)?,
        notify_attempts: count("notify_attempts", row.try_get("notify_attempts")?)?,
    })
}

fn jobs_from_rows(rows: &[SqliteRow]) -> StoreResult<Vec<JobRecord>> {
    rows.iter().map(job_from_row).collect()
}

fn attempt_from_row(row: &SqliteRow) -> StoreResult<AttemptRecord> {
    let status: Option<i64> = row.try_get("status")?;
    Ok(AttemptRecord {
        job_id: row.try_get("job_id")?,
        step: row.try_get("step")?,
        channel: row.try_get("channel")?,
        attempt: count("attempt", row.try_get("attempt")?)?,
        started_at: timestamp("started_at", row.try_get("started_at")?)?,
        finished_at: timestamp("finished_at", row.try_get("finished_at")?)?,
        status: status
            .map(|status| {
                u16::try_from(status).map_err(|_| StoreError::Corrupt(format!("status = {status}")))
            })
            .transpose()?,
        error: row.try_get("error")?,
        error_message: row.try_get("error_message")?,
        outcome: row.try_get("outcome")?,
        rule: row.try_get("rule")?,
        decision: row.try_get("decision")?,
        delay_ms: row.try_get("delay_ms")?,
        next_at: opt_timestamp("next_at", row.try_get("next_at")?)?,
        policy_version: row.try_get("policy_version")?,
    })
}

const INSERT_JOB: &str = "\
    INSERT INTO jobs (id, flow, idempotency_key, payload, state, step_index, step, \
                      next_at, policy_version, created_at, updated_at) \
    VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?6, ?7, ?8, ?8) \
    ON CONFLICT (flow, idempotency_key) DO NOTHING \
    RETURNING *";

const SELECT_BY_KEY: &str = "SELECT * FROM jobs WHERE flow = ?1 AND idempotency_key = ?2";

async fn insert_one(conn: &mut sqlx::SqliteConnection, job: &NewJob) -> StoreResult<InsertOutcome> {
    let created = sqlx::query(INSERT_JOB)
        .bind(&job.id)
        .bind(&job.flow)
        .bind(&job.idempotency_key)
        .bind(&job.payload)
        .bind(&job.step)
        .bind(ms(job.next_at))
        .bind(&job.policy_version)
        .bind(ms(job.created_at))
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(row) = created {
        return Ok(InsertOutcome::Created(job_from_row(&row)?));
    }
    let row = sqlx::query(SELECT_BY_KEY)
        .bind(&job.flow)
        .bind(&job.idempotency_key)
        .fetch_one(&mut *conn)
        .await?;
    let existing = job_from_row(&row)?;
    if same_payload(&existing.payload, &job.payload) {
        Ok(InsertOutcome::Existing(existing))
    } else {
        Ok(InsertOutcome::Conflict(existing))
    }
}

/// Payloads are compared as JSON values, so key order and spacing do not
/// make a resubmission a conflict.
fn same_payload(stored: &str, submitted: &str) -> bool {
    if stored == submitted {
        return true;
    }
    match (
        serde_json::from_str::<serde_json::Value>(stored),
        serde_json::from_str::<serde_json::Value>(submitted),
    ) {
        (Ok(stored), Ok(submitted)) => stored == submitted,
        _ => false,
    }
}

async fn insert_attempt(
    conn: &mut sqlx::SqliteConnection,
    attempt: &AttemptRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO attempts (job_id, step, channel, attempt, started_at, finished_at, status, \
                               error, error_message, outcome, rule, decision, delay_ms, next_at, \
                               policy_version) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )
    .bind(&attempt.job_id)
    .bind(&attempt.step)
    .bind(&attempt.channel)
    .bind(i64::from(attempt.attempt))
    .bind(ms(attempt.started_at))
    .bind(ms(attempt.finished_at))
    .bind(attempt.status.map(i64::from))
    .bind(&attempt.error)
    .bind(&attempt.error_message)
    .bind(&attempt.outcome)
    .bind(&attempt.rule)
    .bind(&attempt.decision)
    .bind(attempt.delay_ms)
    .bind(opt_ms(attempt.next_at))
    .bind(&attempt.policy_version)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait]
impl StepLog for SqliteStepLog {
    async fn job_insert(&self, job: NewJob) -> StoreResult<InsertOutcome> {
        let mut tx = self.begin_write().await?;
        let outcome = insert_one(&mut tx, &job).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn jobs_insert_batch(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<InsertOutcome>> {
        let mut tx = self.begin_write().await?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in &jobs {
            outcomes.push(insert_one(&mut tx, job).await?);
        }
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
        let rows = sqlx::query(
            "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_until = ?2, updated_at = ?3 \
             WHERE id IN (SELECT id FROM jobs \
                          WHERE state IN ('pending', 'suspended') AND next_at <= ?3 \
                          ORDER BY next_at LIMIT ?4) \
             RETURNING *",
        )
        .bind(owner)
        .bind(ms(lease_until))
        .bind(ms(now))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut jobs = jobs_from_rows(&rows)?;
        // RETURNING gives no order; the earliest due goes first.
        jobs.sort_by_key(|job| job.next_at);
        Ok(jobs)
    }

    async fn transitions_apply(&self, transitions: Vec<Transition>) -> StoreResult<Vec<bool>> {
        if transitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let mut applied = Vec::with_capacity(transitions.len());
        for transition in &transitions {
            let counts = transition
                .attempt
                .as_ref()
                .is_some_and(|attempt| attempt.step != ON_DEAD_STEP);
            let still_running = transition.to == JobState::Running;
            let result = sqlx::query(
                "UPDATE jobs SET state = ?3, step_index = ?4, step = ?5, channel_index = ?6, \
                     attempt = ?7, series_started_at = ?8, held_ms = ?9, next_at = ?10, \
                     reason = ?11, policy_version = ?12, notify_at = ?13, updated_at = ?14, \
                     attempts_total = attempts_total + ?15, \
                     lease_owner = CASE WHEN ?16 THEN lease_owner END, \
                     lease_until = CASE WHEN ?16 THEN lease_until END \
                 WHERE id = ?1 AND state = 'running' AND lease_owner = ?2",
            )
            .bind(&transition.job_id)
            .bind(&transition.owner)
            .bind(transition.to.as_str())
            .bind(i64::from(transition.step_index))
            .bind(&transition.step)
            .bind(i64::from(transition.channel_index))
            .bind(i64::from(transition.series_attempts))
            .bind(opt_ms(transition.series_started_at))
            .bind(transition.held_ms)
            .bind(opt_ms(transition.next_at))
            .bind(&transition.reason)
            .bind(&transition.policy_version)
            .bind(opt_ms(transition.notify_at))
            .bind(ms(transition.now))
            .bind(i64::from(counts))
            .bind(still_running)
            .execute(&mut *tx)
            .await?;
            let moved = result.rows_affected() == 1;
            if moved {
                if let Some(attempt) = &transition.attempt {
                    insert_attempt(&mut tx, attempt).await?;
                }
            }
            applied.push(moved);
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn next_due_at(&self) -> StoreResult<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_at) FROM jobs WHERE state IN ('pending', 'suspended')",
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
            "UPDATE jobs SET state = 'pending', lease_owner = NULL, lease_until = NULL, \
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
        insert_attempt(&mut tx, &attempt).await?;
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
        let rows = sqlx::query(
            "SELECT * FROM jobs \
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR flow = ?2) \
               AND (?3 IS NULL OR step = ?3) AND (?4 IS NULL OR id < ?4) \
             ORDER BY id DESC LIMIT ?5",
        )
        .bind(filter.state.map(JobState::as_str))
        .bind(&filter.flow)
        .bind(&filter.step)
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

    async fn job_update(&self, id: &str, update: JobUpdate) -> StoreResult<Option<bool>> {
        let mut tx = self.begin_write().await?;
        let changed = match &update {
            JobUpdate::Retry { at } => sqlx::query(
                "UPDATE jobs SET state = 'pending', channel_index = 0, attempt = 0, \
                     series_started_at = NULL, held_ms = 0, next_at = ?2, reason = NULL, \
                     notify_at = NULL, updated_at = ?2 \
                 WHERE id = ?1 AND state = 'dead'",
            )
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

    async fn jobs_resume_vanished(&self, flows: &[String], now: Timestamp) -> StoreResult<u64> {
        if flows.is_empty() {
            return Ok(0);
        }
        let names = serde_json::to_string(flows)
            .map_err(|e| StoreError::Corrupt(format!("flow names: {e}")))?;
        let result = sqlx::query(
            "UPDATE jobs SET next_at = ?1, updated_at = ?1 \
             WHERE state = 'suspended' AND reason = 'flow_removed' AND next_at > ?1 \
               AND flow IN (SELECT value FROM json_each(?2))",
        )
        .bind(ms(now))
        .bind(names)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::same_payload;

    #[test]
    fn payloads_compare_as_json() {
        assert!(same_payload(r#"{"a":1,"b":2}"#, r#"{ "b": 2, "a": 1 }"#));
        assert!(!same_payload(r#"{"a":1}"#, r#"{"a":2}"#));
        assert!(!same_payload("not json", "other"));
    }
}
