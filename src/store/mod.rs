//! The durable step log: the single source of truth about jobs and attempts.
//!
//! One trait, [`StepLog`], with noun-verb methods; SQLite is the embedded
//! implementation. Every state transition is a guarded update (`… WHERE
//! state = 'running' AND lease_owner = $me AND lease_until = $my_lease`),
//! so a late or stale writer can never move a job twice, nor over a later
//! claim of the same job. Times are stored as milliseconds since the Unix
//! epoch.

mod plan;
pub(crate) mod postgres;
mod records;
mod rows;
mod sql;
pub mod sqlite;
pub(crate) mod view;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::channels::breaker::BreakerChange;
use jiff::Timestamp;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::SqlSafeStr;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use records::{
    AttemptRecord, ClaimedJob, Decision, InsertOutcome, InsightCount, JobFilter, JobPage,
    JobRecord, JobState, JobUpdate, Membership, NewJob, NodeRecord, NotificationClaim, Outcome,
    PausedFlow, PayloadEdit, Reason, Retention, RetryBatch, StateCounts, Transition,
};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the SQLite writer thread stopped: {0}")]
    WriterStopped(String),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("database URL `{url}`: {message}")]
    BadUrlOption { url: String, message: String },
    #[error("cannot open the SQLite database {path}: {source} (does its directory exist, and may this user write there?)")]
    Open { path: String, source: sqlx::Error },
    #[error("corrupt row in the step log: {0}")]
    Corrupt(String),
    #[error(
        "the SQLite file {db} is in use by another steadfast engine{holder}; one SQLite file \
         belongs to one engine: stop that one, give this one its own --db, or use \
         postgres://… for several nodes"
    )]
    InUse { db: String, holder: String },
    #[error("cannot lock {path}: {message}")]
    Lock { path: String, message: String },
    #[error(
        "node id `{id}` is taken by a live node on this step log; each node needs an id of \
         its own: give this one --node-id (or STEADFAST_NODE_ID), or stop the other"
    )]
    NodeIdInUse { id: String },
    /// The log cannot take writes now (locked, disk full, unreachable);
    /// nothing was written. Worth trying again.
    #[error("{0}")]
    Unavailable(String),
}

/// How long a dead node's row stays in `nodes` (and `steadfast nodes`).
pub const FORGET_NODES_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// How long a submission may wait for its commit before it is answered
/// 503 (PRODUCT.md, "Step log outage").
pub const SUBMIT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

impl StoreError {
    /// Whether the log is out of reach or cannot take writes for now (a
    /// lock held elsewhere, a full disk, a database that does not answer),
    /// rather than refusing this request: the caller should try again.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) | StoreError::WriterStopped(_) => true,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(error, _)) => matches!(
                error.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::ReadOnly
            ),
            StoreError::Database(error) => match error {
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
                sqlx::Error::Database(db) => {
                    let Some(code) = db.code() else {
                        return false;
                    };
                    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                        // BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN
                        // (extended codes keep the primary in the low byte).
                        let primary = code.parse::<i32>().ok().map(|c| c & 0xff);
                        matches!(primary, Some(5 | 6 | 8 | 10 | 13 | 14))
                    } else {
                        // PostgreSQL SQLSTATEs: connection exceptions,
                        // shutdown and restart, a read-only standby.
                        code.starts_with("08") || code.starts_with("57P") || code == "25006"
                    }
                }
                _ => false,
            },
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

pub type SharedStepLog = Arc<dyn StepLog>;

/// The first line of a migration that manages its own transaction (sqlx's
/// convention): SQLite ignores `PRAGMA foreign_keys` inside one.
const NO_TRANSACTION: &str = "-- no-transaction";

/// A store's embedded schema, `(version, description, SQL)` per
/// migration, as sqlx runs it.
fn migrator(migrations: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    sql.starts_with(NO_TRANSACTION),
                )
            })
            .collect(),
    )
}

/// Opens the step log a URL names (`sqlite://path`, `sqlite::memory:` (a
/// temporary file, removed when the log is dropped);
/// `?synchronous=normal` trades power-loss durability for speed;
/// `postgres://user:pw@host/db`, `?pool_max=N` connections per node).
pub async fn open(url: &str) -> StoreResult<SharedStepLog> {
    open_with(url, sqlite::SqliteOptions::default()).await
}

/// Opens the step log with explicit SQLite options.
pub async fn open_with(url: &str, options: sqlite::SqliteOptions) -> StoreResult<SharedStepLog> {
    if url.starts_with("sqlite:") {
        let (url, options) = sqlite::url_options(url, options)?;
        Ok(Arc::new(sqlite::SqliteStepLog::open(&url, options).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(postgres::PgStepLog::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(redact_url(url)))
    }
}

/// For a SQLite step log, the lock that makes its file this engine's alone
/// (see `sqlite::lock`); PostgreSQL is shared by design.
pub fn engine_lock(url: &str) -> StoreResult<Option<sqlite::lock::EngineLock>> {
    if !url.starts_with("sqlite:") {
        return Ok(None);
    }
    match sqlite::database_file(url)? {
        Some(file) => sqlite::lock::EngineLock::acquire(&file).map(Some),
        None => Ok(None),
    }
}

/// A database URL with its password replaced, safe to print.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[async_trait]
pub trait StepLog: Send + Sync + 'static {
    /// Inserts a job, idempotent on `(flow, idempotency_key)`: the same key
    /// with the same payload returns the existing job, with another payload a
    /// conflict. A batch of one.
    async fn job_insert(&self, job: NewJob) -> StoreResult<InsertOutcome> {
        self.jobs_insert_batch(vec![job])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("an insert returned no outcome".into()))
    }

    /// Inserts many jobs in one transaction; one outcome per job, in order.
    async fn jobs_insert_batch(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<InsertOutcome>>;

    /// Claims up to `limit` jobs that are `pending` or `suspended` with
    /// `next_at <= now`, earliest first, and marks them `running` under a
    /// lease held by `owner` until `lease_until`.
    async fn jobs_claim_due(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<ClaimedJob>>;

    /// Applies many attempt results in one transaction: for each, appends the
    /// attempt row (when there is one) and moves the job, but only while it is
    /// still `running` under the lease it was claimed with (`owner` and
    /// `lease_until`). Returns, per transition, whether it applied.
    async fn transitions_apply(&self, transitions: Vec<Transition>) -> StoreResult<Vec<bool>>;

    /// The scheduler's cycle: applies `transitions` as
    /// [`StepLog::transitions_apply`] does and claims up to `limit` due
    /// jobs as [`StepLog::jobs_claim_due`] does. SQLite does both in one
    /// transaction (one commit to disk; jobs the transitions made due, the
    /// next step of a flow, can be claimed at once); PostgreSQL in two side
    /// by side, on two connections, so that the server works on both at
    /// once (the next step is then claimed by the next cycle).
    ///
    /// Committed, the batch is left empty (a store may take it rather than
    /// copy it); not committed, it is left as it was, to be committed again.
    /// An error means nothing was claimed; jobs claimed are always returned,
    /// with an empty list of results applied when the results were not.
    async fn transitions_apply_then_claim(
        &self,
        transitions: &mut Vec<Transition>,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<(Vec<bool>, Vec<ClaimedJob>)>;

    /// The earliest `next_at` of a claimable job, to know how long to sleep.
    async fn next_due_at(&self) -> StoreResult<Option<Timestamp>>;

    /// Returns every job `owner` holds to `pending` (clean shutdown).
    async fn leases_release(&self, owner: &str) -> StoreResult<u64>;

    /// Returns to `pending` the running jobs whose owner is not a live node
    /// (no heartbeat at or after `alive_after`) and that are either past
    /// their lease (`now`) or held by a node known dead. A live node's
    /// claims are never taken over: its heartbeat renews them.
    async fn leases_rescue(&self, now: Timestamp, alive_after: Timestamp) -> StoreResult<u64>;

    /// Enters this process in the nodes sharing the log, at `now`. Refused
    /// with [`StoreError::NodeIdInUse`] while another live process holds
    /// the id. Nodes silent for [`FORGET_NODES_AFTER`] that hold no job are
    /// forgotten.
    async fn node_join(&self, node: &Membership, now: Timestamp) -> StoreResult<()>;

    /// This node's heartbeat at `now`.
    async fn node_heartbeat(&self, node: &Membership, now: Timestamp) -> StoreResult<()>;

    /// Leaves the nodes (clean shutdown).
    async fn node_leave(&self, node: &Membership) -> StoreResult<()>;

    /// The nodes, with the jobs each holds running.
    async fn nodes_list(&self) -> StoreResult<Vec<NodeRecord>>;

    /// How many nodes have beaten at or after `alive_after` (cheap enough
    /// for every heartbeat, unlike [`StepLog::nodes_list`]'s job counts).
    async fn nodes_live(&self, alive_after: Timestamp) -> StoreResult<u32>;

    /// Pauses `flow`; false when it already was.
    async fn flow_pause(&self, flow: &str, by: &str, now: Timestamp) -> StoreResult<bool>;

    /// Lifts `flow`'s pause and makes its jobs held for it due at `now`:
    /// how many, or `None` when the flow was not paused.
    async fn flow_resume(&self, flow: &str, now: Timestamp) -> StoreResult<Option<u64>>;

    /// Makes due at `now` the jobs of `flow` still held for a pause, unless
    /// the flow is paused again: how many. Run a few seconds after a
    /// resume, it catches a hold that a node wrote as the resume committed
    /// (a statement that began before it, on PostgreSQL, still saw the
    /// pause).
    async fn flow_resume_sweep(&self, flow: &str, now: Timestamp) -> StoreResult<u64>;

    /// The paused flows.
    async fn flows_paused(&self) -> StoreResult<Vec<PausedFlow>>;

    /// The share of each claim's room retries (jobs with `attempt > 0`)
    /// may take from now on: `None`, no cut (claims take the earliest due
    /// first); `Some(share)`, each lane's retries are claimed earliest due
    /// first up to that share, and the rest of the room goes to fresh jobs,
    /// earliest due first from an index of their own, so that what arrives
    /// now is not queued behind a backlog. Set by the scheduler from the engine's health.
    fn set_retry_share(&self, share: Option<f64>);

    /// Adds `counts` to the channels' hourly insight counts, in one
    /// transaction.
    async fn insights_add(&self, counts: &[InsightCount]) -> StoreResult<()>;

    /// `channel`'s insight counts from the hour starting at `since_hour`
    /// (milliseconds) on.
    async fn insights_of(&self, channel: &str, since_hour: i64) -> StoreResult<Vec<InsightCount>>;

    /// Deletes insight counts of hours before `before_hour`; how many.
    async fn insights_prune(&self, before_hour: i64) -> StoreResult<u64>;

    /// Adds failed attempts to channels' per-second counts: `(channel,
    /// second in milliseconds, count)`.
    async fn channel_errors_add(&self, counts: &[(String, i64, i64)]) -> StoreResult<()>;

    /// `channel`'s failed attempts from second `since` (milliseconds) on,
    /// from every node.
    async fn channel_errors_since(&self, channel: &str, since: i64) -> StoreResult<i64>;

    /// Deletes per-second error counts before `before`; how many.
    async fn channel_errors_prune(&self, before: i64) -> StoreResult<u64>;

    /// Deletes up to `limit` jobs in `state` last changed before `before`,
    /// with their attempts and payload edits, in one short transaction;
    /// how many.
    async fn jobs_prune(&self, state: JobState, before: Timestamp, limit: u32) -> StoreResult<u64>;

    /// How many jobs [`StepLog::jobs_prune`] would delete, all batches.
    async fn jobs_prunable(&self, state: JobState, before: Timestamp) -> StoreResult<u64>;

    /// Jobs by flow, then by state (every job read: for listings of flows).
    async fn jobs_count_by_flow(&self) -> StoreResult<BTreeMap<String, StateCounts>>;

    /// Publishes this node's breaker openings and closings to the other
    /// nodes. A log of its own (SQLite, one node) has nobody to tell.
    async fn breakers_publish(&self, changes: &[BreakerChange]) -> StoreResult<()> {
        let _ = changes;
        Ok(())
    }

    /// The other nodes' breaker changes after position `after` (0: all
    /// kept), in order, and the position to ask after next time; `node` is
    /// this node's id, whose own changes are skipped.
    async fn breakers_since(
        &self,
        after: i64,
        node: &str,
    ) -> StoreResult<(Vec<BreakerChange>, i64)> {
        let _ = node;
        Ok((Vec::new(), after))
    }

    /// Dead jobs whose `on_dead` notification is due; claiming pushes the
    /// notification's due time to `lease_until` so a crash retries it.
    async fn notifications_claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<NotificationClaim>>;

    /// Records a notification attempt and sets when the next one is due
    /// (`None`: done, delivered or given up).
    async fn notification_record(
        &self,
        attempt: AttemptRecord,
        next_at: Option<Timestamp>,
    ) -> StoreResult<()>;

    async fn job_get(&self, id: &str) -> StoreResult<Option<JobRecord>>;

    /// Every attempt of a job, oldest first.
    async fn attempts_list(&self, job_id: &str) -> StoreResult<Vec<AttemptRecord>>;

    /// The last attempt of each of these jobs (their `on_dead`
    /// notifications left out), in no particular order; a job without
    /// attempts has none.
    async fn attempts_last_of(&self, job_ids: &[String]) -> StoreResult<Vec<AttemptRecord>>;

    /// A page of jobs, newest first; `cursor` is the last id of the previous
    /// page.
    async fn jobs_list(&self, filter: &JobFilter) -> StoreResult<JobPage>;

    /// How many jobs are in each state.
    async fn jobs_count_by_state(&self) -> StoreResult<StateCounts>;

    /// Makes every job suspended for `reason` due at `now` (a reload brought
    /// back what they were waiting for); returns how many.
    async fn jobs_resume(&self, reason: Reason, now: Timestamp) -> StoreResult<u64>;

    /// Applies an operator's change to a job (retry, payload edit, cancel),
    /// guarded by the states it may come from. `None` when the job does not
    /// exist; `Some(false)` when its state forbids the change.
    async fn job_update(&self, id: &str, update: JobUpdate) -> StoreResult<Option<bool>>;

    /// How many jobs match `filter` (`limit` and `cursor` ignored).
    async fn jobs_count(&self, filter: &JobFilter) -> StoreResult<u64>;

    /// One batch of a bulk retry, in one short transaction: the first
    /// `limit` `dead` jobs matching `filter` (its `state`, `limit` and
    /// `cursor` are ignored) with `id > after`, in ascending id order, move
    /// to `pending` as [`JobUpdate::Retry`] does; the k-th of them (from 0)
    /// gets `next_at = first_at + k * spacing_us` (microseconds, stored
    /// rounded down to milliseconds), so a large retry is
    /// spread over time instead of becoming a retry storm.
    async fn jobs_retry_batch(
        &self,
        filter: &JobFilter,
        after: Option<&str>,
        limit: u32,
        first_at: Timestamp,
        spacing_us: i64,
    ) -> StoreResult<RetryBatch>;

    /// Every payload edit of a job, oldest first.
    async fn payload_edits_list(&self, job_id: &str) -> StoreResult<Vec<PayloadEdit>>;

    /// Whether the log can take writes now: a short write transaction,
    /// within a couple of seconds. What `GET /readyz` answers.
    async fn writable(&self) -> StoreResult<()>;

    /// Whether other processes share this log (PostgreSQL). A node on a
    /// shared log must not take over `running` jobs when it starts: they may
    /// be another node's live claims, so it waits for their leases to expire.
    fn is_shared(&self) -> bool {
        false
    }

    /// Wakes `wake` whenever any process inserts jobs, so that an idle node
    /// starts another node's new jobs at once rather than at its next poll.
    /// `None` when only this process writes the log (its own submissions
    /// already wake its scheduler). The task runs until aborted.
    fn inserts_watch(&self, wake: Arc<Notify>) -> Option<JoinHandle<()>> {
        let _ = wake;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
    }

    /// Each store's check on a stored word lists exactly the enum's words.
    #[test]
    fn the_checks_of_both_stores_list_the_words_of_the_enums() {
        use crate::lifecycle::{Decision, Outcome, Reason, Word};
        let flat = |sql: &str| sql.split_whitespace().collect::<Vec<_>>().join(" ");
        // The latest migration that writes each check.
        let attempts = [
            include_str!("../../migrations/sqlite/0006_vocabulary_checks.sql"),
            include_str!("../../migrations/postgres/0002_vocabulary_checks.sql"),
        ];
        let jobs = [
            include_str!("../../migrations/sqlite/0013_pacing_reasons.sql"),
            include_str!("../../migrations/postgres/0011_pacing_reasons.sql"),
        ];
        for sql in attempts.map(flat) {
            for check in [
                format!("CHECK ({})", Outcome::sql_check("outcome")),
                format!("CHECK ({})", Decision::sql_check("decision")),
            ] {
                assert!(sql.contains(&check), "{check}\nnot in\n{sql}");
            }
        }
        for sql in jobs.map(flat) {
            let check = format!("CHECK (reason IS NULL OR {})", Reason::sql_check("reason"));
            assert!(sql.contains(&check), "{check}\nnot in\n{sql}");
        }
    }
}
