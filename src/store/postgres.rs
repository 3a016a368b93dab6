//! The shared step log: one PostgreSQL database, many engine nodes.
//!
//! Nodes claim with `FOR UPDATE SKIP LOCKED` under a lease (owner, expiry),
//! so two nodes never claim the same job and neither waits for the other's
//! locks; every move of a claimed job is guarded by `state = 'running' AND
//! lease_owner = $me AND lease_until = $my_lease`, so a node whose lease was
//! rescued cannot write late.
//! Inserts send `NOTIFY steadfast_jobs` (delivered on commit), which
//! [`StepLog::inserts_watch`] turns into wake-ups of idle schedulers on every node.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Row};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::plan::{
    due_first, runs_of_distinct_jobs, DueLanes, Lease, RetryCut, RetryShare, RoundRobin,
};
use super::rows::{
    attempt_from_row, counts_by_flow, insight_count_from_row, job_from_row, jobs_from_rows, ms,
    node_from_row, opt_ms, opt_timestamp, paused_flow_from_row, payload_edit_from_row,
    same_payload, state_counts,
};
use super::sql::{pause_lifted, Dialect, Sql};
use super::{
    migrator, AttemptRecord, ClaimedJob, InsertOutcome, InsightCount, JobFilter, JobPage,
    JobRecord, JobState, JobUpdate, Membership, NewJob, NodeRecord, NotificationClaim, PausedFlow,
    PayloadEdit, RetryBatch, StateCounts, StepLog, StoreError, StoreResult, Transition,
};
use crate::channels::breaker::BreakerChange;
use crate::lifecycle::Reason;

/// The channel inserts notify on.
pub const JOBS_CHANNEL: &str = "steadfast_jobs";

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "checks on reasons, outcomes and decisions",
        include_str!("../../migrations/postgres/0002_vocabulary_checks.sql"),
    ),
    (
        3,
        "nodes and their heartbeats",
        include_str!("../../migrations/postgres/0003_nodes.sql"),
    ),
    (
        4,
        "breaker changes shared between nodes",
        include_str!("../../migrations/postgres/0004_breaker_changes.sql"),
    ),
    (
        5,
        "paused flows",
        include_str!("../../migrations/postgres/0005_paused_flows.sql"),
    ),
    (
        6,
        "lean indexes on jobs",
        include_str!("../../migrations/postgres/0006_lean_indexes.sql"),
    ),
    (
        7,
        "the traceparent of a submission",
        include_str!("../../migrations/postgres/0007_traceparent.sql"),
    ),
    (
        8,
        "job priority and step responses",
        include_str!("../../migrations/postgres/0008_payload_flows.sql"),
    ),
    (
        9,
        "pacing: quick tries within an attempt",
        include_str!("../../migrations/postgres/0009_pacing.sql"),
    ),
    (
        10,
        "channel insights and error counts",
        include_str!("../../migrations/postgres/0010_insights.sql"),
    ),
    (
        11,
        "reasons slowed and adapted; times slowed",
        include_str!("../../migrations/postgres/0011_pacing_reasons.sql"),
    ),
    (
        12,
        "due fresh jobs indexed alone",
        include_str!("../../migrations/postgres/0012_fresh_due.sql"),
    ),
    (
        13,
        "flows' delivered and dead jobs by hour",
        include_str!("../../migrations/postgres/0013_flow_ends.sql"),
    ),
];

const MAX_PAGE: u32 = 1000;

/// Connections per node unless the URL says otherwise (`?pool_max=N`,
/// taken out before the URL reaches the driver).
pub const DEFAULT_POOL_MAX: u32 = 10;

/// Takes steadfast's own options (`pool_max=N`) out of a `postgres:` URL.
pub fn url_options(url: &str) -> StoreResult<(String, u32)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), DEFAULT_POOL_MAX));
    };
    let mut pool_max = DEFAULT_POOL_MAX;
    let mut passed = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("pool_max", value)) => {
                pool_max = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 2)
                    .ok_or_else(|| StoreError::BadUrlOption {
                        url: super::redact_url(url),
                        message: format!("pool_max={value}: expected a whole number of at least 2"),
                    })?;
            }
            _ => passed.push(pair),
        }
    }
    let url = if passed.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", passed.join("&"))
    };
    Ok((url, pool_max))
}

pub struct PgStepLog {
    pool: PgPool,
    /// Submissions waiting to be committed together (see [`combine`]).
    submissions: tokio::sync::mpsc::Sender<Submission>,
    /// The connection holding this node's id (a session advisory lock):
    /// held as long as the process lives, released by the server the
    /// moment the process dies, however it dies.
    node_lock: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
    /// The retries' share of claims (see [`StepLog::set_retry_share`]).
    retry_share: RetryShare,
}

impl PgStepLog {
    /// `statement` of [`SQL`] for `node` at `now` (an entry, a heartbeat).
    async fn node_write(
        &self,
        statement: &str,
        node: &Membership,
        now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(&node.id)
            .bind(&node.instance)
            .bind(&node.version)
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Makes `flow`'s jobs held for its pause due at `now` by `statement`
/// (`resume_flow`, or the sweep after a resume): how many.
async fn held_for_pause_due(
    tx: &mut sqlx::PgConnection,
    statement: &str,
    flow: &str,
    now: Timestamp,
) -> StoreResult<u64> {
    Ok(sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(Reason::Paused.as_str())
        .bind(ms(now))
        .bind(flow)
        .execute(tx)
        .await?
        .rows_affected())
}

/// Tells every node listening on [`JOBS_CHANNEL`] (this one too), when
/// `tx` commits, that jobs may be due now.
async fn wake_nodes(tx: &mut sqlx::PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(JOBS_CHANNEL)
        .execute(tx)
        .await?;
    Ok(())
}

/// Takes the advisory lock of node id `id` on a connection of its own.
async fn lock_node_id(pool: &PgPool, id: &str) -> StoreResult<sqlx::PgConnection> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect_with(&pool.connect_options()).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("steadfast node {id}"))
        .fetch_one(&mut connection)
        .await?;
    if locked {
        Ok(connection)
    } else {
        let _ = connection.close().await;
        Err(StoreError::NodeIdInUse { id: id.to_string() })
    }
}

/// One request's jobs, when they must be written by, and where the
/// outcomes go.
struct Submission {
    jobs: Vec<NewJob>,
    deadline: tokio::time::Instant,
    reply: tokio::sync::oneshot::Sender<StoreResult<Vec<InsertOutcome>>>,
}

/// Tasks committing groups of submissions at once: each group is one
/// multi-row insert and one commit; several groups run side by side on the
/// pool's connections.
const COMBINERS: usize = 4;
/// The most jobs one group holds.
const GROUP_MAX_JOBS: usize = 4096;

impl PgStepLog {
    /// Connects to and migrates the database at `url` (`postgres://…`).
    /// Migrations take an advisory lock, so nodes starting together do not
    /// race to create the schema.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let (url, pool_max) = url_options(url)?;
        let connect = PgConnectOptions::from_str(&url)?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_max)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect)
            .await?;
        migrator(MIGRATIONS).run(&pool).await?;
        let (submissions, inbox) = tokio::sync::mpsc::channel(4096);
        let inbox = Arc::new(tokio::sync::Mutex::new(inbox));
        for _ in 0..COMBINERS {
            tokio::spawn(combine(pool.clone(), inbox.clone()));
        }
        Ok(PgStepLog {
            pool,
            submissions,
            node_lock: tokio::sync::Mutex::new(None),
            retry_share: RetryShare::default(),
        })
    }

    /// Applies transitions (see [`StepLog::transitions_apply`]): one
    /// statement when no job appears twice, as in every scheduler cycle;
    /// otherwise one per run of distinct jobs, in a transaction.
    async fn apply(&self, transitions: &[Transition]) -> StoreResult<Vec<bool>> {
        if transitions.is_empty() {
            return Ok(Vec::new());
        }
        let runs = runs_of_distinct_jobs(transitions);
        if let [run] = runs.as_slice() {
            let mut conn = self.pool.acquire().await?;
            return apply_run(&mut conn, run).await;
        }
        let mut tx = self.pool.begin().await?;
        let mut applied = Vec::with_capacity(transitions.len());
        for run in runs {
            applied.extend(apply_run(&mut tx, run).await?);
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn job_exists(&self, id: &str) -> StoreResult<bool> {
        let row = sqlx::query(sqlx::AssertSqlSafe(SQL.job_exists.as_str()))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }
}

/// A listener on [`JOBS_CHANNEL`] with a connection of its own.
async fn listen_on(pool: &PgPool) -> StoreResult<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(JOBS_CHANNEL).await?;
    Ok(listener)
}

/// Group commit for submissions: takes the submissions waiting (one at
/// least), inserts them in one transaction with one multi-row statement,
/// and answers each once the commit is durable (`synchronous_commit` as
/// the server has it, on by default). A submission past its deadline is
/// answered unwritten; the group's transaction is given until the earliest
/// deadline, then dropped, which rolls it back. Ends when the log is
/// dropped.
async fn combine(
    pool: PgPool,
    inbox: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Submission>>>,
) {
    loop {
        let mut group = Vec::new();
        {
            let mut inbox = inbox.lock().await;
            let Some(first) = inbox.recv().await else {
                return;
            };
            let mut count = first.jobs.len();
            group.push(first);
            while count < GROUP_MAX_JOBS {
                match inbox.try_recv() {
                    Ok(next) => {
                        count += next.jobs.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
        }
        let now = tokio::time::Instant::now();
        let (live, late): (Vec<Submission>, Vec<Submission>) =
            group.into_iter().partition(|s| s.deadline > now);
        for submission in late {
            let _ = submission.reply.send(Err(not_in_time()));
        }
        let Some(earliest) = live.iter().map(|s| s.deadline).min() else {
            continue;
        };
        // The jobs moved into one list, each request keeping its count.
        let mut jobs = Vec::new();
        let mut requests = Vec::with_capacity(live.len());
        for submission in live {
            requests.push((submission.jobs.len(), submission.deadline, submission.reply));
            jobs.extend(submission.jobs);
        }
        match tokio::time::timeout_at(earliest, insert_alone(&pool, &jobs)).await {
            Ok(Ok(outcomes)) => {
                let mut outcomes = outcomes.into_iter();
                for (count, _, reply) in requests {
                    let _ = reply.send(Ok(outcomes.by_ref().take(count).collect()));
                }
            }
            Ok(Err(error)) if error.is_unavailable() => {
                let message = error.to_string();
                for (_, _, reply) in requests {
                    let _ = reply.send(Err(StoreError::Unavailable(message.clone())));
                }
            }
            // A request alone: trying it alone again would fail the same way.
            Ok(Err(error)) if requests.len() == 1 => {
                if let Some((_, _, reply)) = requests.into_iter().next() {
                    let _ = reply.send(Err(error));
                }
            }
            Ok(Err(error)) => {
                // One request's failure must not fail the others: each is
                // committed alone.
                tracing::warn!(%error, submissions = requests.len(),
                    "a group of submissions failed together; committing each alone");
                let mut start = 0;
                for (count, deadline, reply) in requests {
                    let alone = insert_alone(&pool, &jobs[start..start + count]);
                    start += count;
                    let outcome = match tokio::time::timeout_at(deadline, alone).await {
                        Ok(outcome) => outcome,
                        Err(_) => Err(not_in_time()),
                    };
                    let _ = reply.send(outcome);
                }
            }
            Err(_) => {
                for (_, _, reply) in requests {
                    let _ = reply.send(Err(not_in_time()));
                }
            }
        }
    }
}

/// Inserts `jobs` in one transaction of their own and announces them.
async fn insert_alone(pool: &PgPool, jobs: &[NewJob]) -> StoreResult<Vec<InsertOutcome>> {
    let mut tx = pool.begin().await?;
    let outcomes = insert_many(&mut tx, jobs).await?;
    if outcomes
        .iter()
        .any(|outcome| matches!(outcome, InsertOutcome::Created(_)))
    {
        // Delivered on commit, to every node listening (this one too).
        wake_nodes(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

fn not_in_time() -> StoreError {
    StoreError::Unavailable(format!(
        "PostgreSQL did not commit within {} s; nothing was written",
        super::SUBMIT_DEADLINE.as_secs()
    ))
}

/// The statements both stores share, in PostgreSQL's dialect.
static SQL: LazyLock<Sql> = LazyLock::new(|| Sql::new(Dialect::Postgres));

fn bind_filter<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    filter: &'q JobFilter,
    state: Option<&'static str>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(state)
        .bind(&filter.flow)
        .bind(&filter.step)
        .bind(filter.status.map(i64::from))
        .bind(&filter.error)
        .bind(&filter.rule)
        .bind(filter.since.map(ms))
        .bind(filter.until.map(ms))
        .bind(&filter.key)
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Inserts a batch with one statement: the columns travel as arrays and
/// `unnest` takes them apart, `WITH ORDINALITY` keeping the batch's order.
async fn insert_many(
    conn: &mut sqlx::PgConnection,
    jobs: &[NewJob],
) -> StoreResult<Vec<InsertOutcome>> {
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    let flows: Vec<&str> = jobs.iter().map(|j| j.flow.as_str()).collect();
    let keys: Vec<&str> = jobs.iter().map(|j| j.idempotency_key.as_str()).collect();
    let payloads: Vec<&str> = jobs.iter().map(|j| j.payload.as_str()).collect();
    let steps: Vec<&str> = jobs.iter().map(|j| j.step.as_str()).collect();
    let next_ats: Vec<i64> = jobs.iter().map(|j| ms(j.next_at)).collect();
    let versions: Vec<&str> = jobs.iter().map(|j| j.policy_version.as_str()).collect();
    let created: Vec<i64> = jobs.iter().map(|j| ms(j.created_at)).collect();
    let traceparents: Vec<Option<&str>> = jobs.iter().map(|j| j.traceparent.as_deref()).collect();
    let priorities: Vec<i64> = jobs.iter().map(|j| i64::from(j.priority)).collect();
    let rows = sqlx::query(
        "INSERT INTO jobs (id, flow, idempotency_key, payload, state, step_index, step, \
                           next_at, policy_version, created_at, updated_at, traceparent, \
                           priority) \
         SELECT j.id, j.flow, j.key, j.payload, 'pending', 0, j.step, j.next_at, j.version, \
                j.created_at, j.created_at, j.traceparent, j.priority \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
                     $7::text[], $8::bigint[], $9::text[], $10::bigint[]) \
              WITH ORDINALITY AS j (id, flow, key, payload, step, next_at, version, created_at, \
                                    traceparent, priority, n) \
         ORDER BY j.n \
         ON CONFLICT (flow, idempotency_key) DO NOTHING \
         RETURNING *",
    )
    .bind(&ids)
    .bind(&flows)
    .bind(&keys)
    .bind(&payloads)
    .bind(&steps)
    .bind(&next_ats)
    .bind(&versions)
    .bind(&created)
    .bind(&traceparents)
    .bind(&priorities)
    .fetch_all(&mut *conn)
    .await?;
    let mut created: HashMap<String, JobRecord> = jobs_from_rows(&rows)?
        .into_iter()
        .map(|job| (job.id.clone(), job))
        .collect();
    let mut existing: HashMap<(String, String), JobRecord> = HashMap::new();
    if created.len() < jobs.len() {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE (flow, idempotency_key) IN \
                 (SELECT * FROM unnest($1::text[], $2::text[]))",
        )
        .bind(&flows)
        .bind(&keys)
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

/// The columns of attempt rows, as arrays bound to one statement.
struct AttemptColumns<'a> {
    job_ids: Vec<&'a str>,
    steps: Vec<&'a str>,
    channels: Vec<&'a str>,
    numbers: Vec<i64>,
    started: Vec<i64>,
    finished: Vec<i64>,
    statuses: Vec<Option<i64>>,
    errors: Vec<Option<&'a str>>,
    messages: Vec<Option<&'a str>>,
    outcomes: Vec<&'static str>,
    rules: Vec<Option<&'a str>>,
    decisions: Vec<&'static str>,
    delays: Vec<Option<i64>>,
    next_ats: Vec<Option<i64>>,
    versions: Vec<&'a str>,
    members: Vec<Option<&'a str>>,
    quick_tries: Vec<i64>,
}

/// The `INSERT INTO attempts` of [`AttemptColumns`] bound from parameter
/// `first` on, in the order given (ids ascend with `WITH ORDINALITY`, so
/// `attempts_list` reads them back in that order), keeping only rows whose
/// job passes `only` (a condition on `a.job_id`, or `TRUE`).
fn insert_attempts_sql(first: usize, only: &str) -> String {
    let p = |k: usize, ty: &str| format!("${}::{ty}[]", first + k);
    format!(
        "INSERT INTO attempts (job_id, step, channel, attempt, started_at, finished_at, status, \
                               error, error_message, outcome, rule, decision, delay_ms, next_at, \
                               policy_version, member, quick_tries) \
         SELECT a.job_id, a.step, a.channel, a.attempt, a.started_at, a.finished_at, a.status, \
                a.error, a.error_message, a.outcome, a.rule, a.decision, a.delay_ms, a.next_at, \
                a.version, a.member, a.quick_tries \
         FROM unnest({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}) \
              WITH ORDINALITY AS a (job_id, step, channel, attempt, started_at, finished_at, \
                                    status, error, error_message, outcome, rule, decision, \
                                    delay_ms, next_at, version, member, quick_tries, n) \
         WHERE {only} \
         ORDER BY a.n",
        p(0, "text"),
        p(1, "text"),
        p(2, "text"),
        p(3, "bigint"),
        p(4, "bigint"),
        p(5, "bigint"),
        p(6, "bigint"),
        p(7, "text"),
        p(8, "text"),
        p(9, "text"),
        p(10, "text"),
        p(11, "text"),
        p(12, "bigint"),
        p(13, "bigint"),
        p(14, "text"),
        p(15, "text"),
        p(16, "bigint"),
    )
}

impl<'a> AttemptColumns<'a> {
    fn of(attempts: &[&'a AttemptRecord]) -> Self {
        AttemptColumns {
            job_ids: attempts.iter().map(|a| a.job_id.as_str()).collect(),
            steps: attempts.iter().map(|a| a.step.as_str()).collect(),
            channels: attempts.iter().map(|a| a.channel.as_str()).collect(),
            numbers: attempts.iter().map(|a| i64::from(a.attempt)).collect(),
            started: attempts.iter().map(|a| ms(a.started_at)).collect(),
            finished: attempts.iter().map(|a| ms(a.finished_at)).collect(),
            statuses: attempts.iter().map(|a| a.status.map(i64::from)).collect(),
            errors: attempts.iter().map(|a| a.error.as_deref()).collect(),
            messages: attempts
                .iter()
                .map(|a| a.error_message.as_deref())
                .collect(),
            outcomes: attempts.iter().map(|a| a.outcome.as_str()).collect(),
            rules: attempts.iter().map(|a| a.rule.as_deref()).collect(),
            decisions: attempts.iter().map(|a| a.decision.as_str()).collect(),
            delays: attempts.iter().map(|a| a.delay_ms).collect(),
            next_ats: attempts.iter().map(|a| opt_ms(a.next_at)).collect(),
            versions: attempts.iter().map(|a| a.policy_version.as_str()).collect(),
            members: attempts.iter().map(|a| a.member.as_deref()).collect(),
            quick_tries: attempts.iter().map(|a| i64::from(a.quick_tries)).collect(),
        }
    }

    /// Binds the seventeen arrays, in the order of [`insert_attempts_sql`].
    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.job_ids)
            .bind(&self.steps)
            .bind(&self.channels)
            .bind(&self.numbers)
            .bind(&self.started)
            .bind(&self.finished)
            .bind(&self.statuses)
            .bind(&self.errors)
            .bind(&self.messages)
            .bind(&self.outcomes)
            .bind(&self.rules)
            .bind(&self.decisions)
            .bind(&self.delays)
            .bind(&self.next_ats)
            .bind(&self.versions)
            .bind(&self.members)
            .bind(&self.quick_tries)
    }
}

/// Appends attempts in one statement, in the order given.
async fn attempts_insert(
    conn: &mut sqlx::PgConnection,
    attempts: &[&AttemptRecord],
) -> StoreResult<()> {
    static INSERT: LazyLock<String> = LazyLock::new(|| insert_attempts_sql(1, "TRUE"));
    if attempts.is_empty() {
        return Ok(());
    }
    let columns = AttemptColumns::of(attempts);
    columns
        .bind(sqlx::query(sqlx::AssertSqlSafe(INSERT.as_str())))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Applies transitions of distinct jobs in one statement, so in one round
/// trip and without a transaction around it: a guarded update of the jobs
/// (the columns travel as arrays) and the insert of the attempts of those
/// that moved.
async fn apply_run(conn: &mut sqlx::PgConnection, run: &[Transition]) -> StoreResult<Vec<bool>> {
    static APPLY: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH moved AS ( \
                 UPDATE jobs SET state = CASE WHEN {stale} THEN 'pending' ELSE t.state END, \
                     step_index = t.step_index, step = t.step, \
                     channel_index = t.channel_index, attempt = t.attempt, \
                     series_started_at = t.series_started_at, \
                     held_ms = CASE WHEN {stale} THEN jobs.held_ms ELSE t.held_ms END, \
                     next_at = CASE WHEN {stale} THEN t.now ELSE t.next_at END, \
                     reason = CASE WHEN {stale} THEN NULL ELSE t.reason END, \
                     policy_version = t.version, \
                     notify_at = t.notify_at, updated_at = t.now, \
                     attempts_total = jobs.attempts_total + t.counts, \
                     lease_owner = CASE WHEN t.running THEN jobs.lease_owner END, \
                     lease_until = CASE WHEN t.running THEN jobs.lease_until END, \
                     responses = COALESCE(t.responses, jobs.responses), \
                     branches = COALESCE(t.branches, jobs.branches), \
                     slowed = jobs.slowed + t.slowed \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
                             $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], \
                             $10::bigint[], $11::text[], $12::text[], $13::bigint[], \
                             $14::bigint[], $15::bigint[], $16::boolean[], $17::bigint[], \
                             $18::text[], $19::text[], $20::bigint[]) \
                      AS t (id, owner, state, step_index, step, channel_index, attempt, \
                            series_started_at, held_ms, next_at, reason, version, notify_at, \
                            now, counts, running, lease, responses, branches, slowed) \
                 WHERE jobs.id = t.id AND jobs.state = 'running' AND jobs.lease_owner = t.owner \
                     AND jobs.lease_until IS NOT DISTINCT FROM t.lease \
                 RETURNING jobs.id), \
             recorded AS ({}) \
             SELECT id FROM moved",
            insert_attempts_sql(21, "a.job_id IN (SELECT id FROM moved)"),
            // A hold for a pause lifted since: pending and due instead.
            stale = pause_lifted("t.reason"),
        )
    });
    let ids: Vec<&str> = run.iter().map(|t| t.job_id.as_str()).collect();
    let owners: Vec<&str> = run.iter().map(|t| t.owner.as_str()).collect();
    let states: Vec<&str> = run.iter().map(|t| t.to.as_str()).collect();
    let step_indexes: Vec<i64> = run.iter().map(|t| i64::from(t.step_index)).collect();
    let steps: Vec<&str> = run.iter().map(|t| t.step.as_str()).collect();
    let channel_indexes: Vec<i64> = run.iter().map(|t| i64::from(t.channel_index)).collect();
    let attempts: Vec<i64> = run.iter().map(|t| i64::from(t.series_attempts)).collect();
    let series: Vec<Option<i64>> = run.iter().map(|t| opt_ms(t.series_started_at)).collect();
    let held: Vec<i64> = run.iter().map(|t| t.held_ms).collect();
    let next_ats: Vec<Option<i64>> = run.iter().map(|t| opt_ms(t.next_at)).collect();
    let reasons: Vec<Option<&str>> = run.iter().map(|t| t.reason.map(Reason::as_str)).collect();
    let versions: Vec<&str> = run.iter().map(|t| t.policy_version.as_str()).collect();
    let notify_ats: Vec<Option<i64>> = run.iter().map(|t| opt_ms(t.notify_at)).collect();
    let nows: Vec<i64> = run.iter().map(|t| ms(t.now)).collect();
    let counts: Vec<i64> = run.iter().map(|t| i64::from(t.attempts_added)).collect();
    let running: Vec<bool> = run.iter().map(|t| t.to == JobState::Running).collect();
    let leases: Vec<Option<i64>> = run.iter().map(|t| opt_ms(t.lease_until)).collect();
    let responses: Vec<Option<&str>> = run.iter().map(|t| t.responses.as_deref()).collect();
    let branches: Vec<Option<&str>> = run.iter().map(|t| t.branches.as_deref()).collect();
    let slowed: Vec<i64> = run.iter().map(|t| i64::from(t.slowed_added)).collect();
    let recorded: Vec<&AttemptRecord> = run
        .iter()
        .flat_map(|t| t.attempt.iter().chain(&t.branch_attempts))
        .collect();
    let recorded = AttemptColumns::of(&recorded);
    let query = sqlx::query(sqlx::AssertSqlSafe(APPLY.as_str()))
        .bind(&ids)
        .bind(&owners)
        .bind(&states)
        .bind(&step_indexes)
        .bind(&steps)
        .bind(&channel_indexes)
        .bind(&attempts)
        .bind(&series)
        .bind(&held)
        .bind(&next_ats)
        .bind(&reasons)
        .bind(&versions)
        .bind(&notify_ats)
        .bind(&nows)
        .bind(&counts)
        .bind(&running)
        .bind(&leases)
        .bind(&responses)
        .bind(&branches)
        .bind(&slowed);
    let moved = recorded.bind(query).fetch_all(&mut *conn).await?;
    let moved: HashSet<String> = moved
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
    Ok(run.iter().map(|t| moved.contains(&t.job_id)).collect())
}

/// The flows with a job due at `now`, the one waiting longest first, with
/// their due lanes.
async fn lanes_due(conn: &mut sqlx::PgConnection, now: Timestamp) -> StoreResult<DueLanes> {
    let waiting: Vec<(String, i64, Option<i64>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(SQL.lanes_waiting.as_str()))
            .fetch_all(&mut *conn)
            .await?;
    Ok(due_first(waiting, now))
}

/// Claims up to `limit` due jobs of one flow's lane at `priority`,
/// earliest due first (`only`: a further condition), skipping rows another
/// node is claiming this very moment.
async fn claim_lane(
    conn: &mut sqlx::PgConnection,
    flow: &str,
    priority: i64,
    lease: &Lease,
    limit: usize,
    only: &str,
) -> StoreResult<Vec<JobRecord>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let sql = format!(
        "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, updated_at = $3 \
         WHERE id IN (SELECT id FROM jobs \
                      WHERE state IN ('pending', 'suspended') AND flow = $4 \
                          AND priority = $6 AND next_at <= $3 {only} \
                      ORDER BY next_at LIMIT $5 FOR UPDATE SKIP LOCKED) \
         RETURNING *"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&lease.owner)
        .bind(ms(lease.lease_until))
        .bind(ms(lease.now))
        .bind(flow)
        .bind(limit_i64(limit))
        .bind(priority)
        .fetch_all(&mut *conn)
        .await?;
    jobs_from_rows(&rows)
}

/// Every due job of a lane.
const ALL_DUE: &str = "";
/// Retries alone.
const RETRIES_DUE: &str = "AND attempt > 0";
/// Fresh jobs alone: `jobs_fresh_due` holds them (the claim index would
/// walk the whole retry backlog to find them).
const FRESH_DUE: &str = "AND attempt = 0";

/// A lane's claim: everything due, or under a cut, retries up to their
/// share and fresh jobs for the rest of the room.
async fn claim_lane_cut(
    conn: &mut sqlx::PgConnection,
    flow: &str,
    priority: i64,
    lease: &Lease,
    limit: usize,
    cut: Option<RetryCut>,
) -> StoreResult<Vec<JobRecord>> {
    match cut {
        None => claim_lane(conn, flow, priority, lease, limit, ALL_DUE).await,
        Some(cut) => {
            let room = cut.retry_room(limit);
            let mut jobs = claim_lane(&mut *conn, flow, priority, lease, room, RETRIES_DUE).await?;
            let fresh = limit - jobs.len();
            jobs.extend(claim_lane(conn, flow, priority, lease, fresh, FRESH_DUE).await?);
            Ok(jobs)
        }
    }
}

/// Claims up to `limit` due jobs, flow by flow (see
/// [`StepLog::jobs_claim_due`]). Each flow's claim is a statement of its
/// own, committed as it runs: no transaction round trips around them, and
/// should one fail, the jobs the others claimed are returned all the same
/// (committed, they would otherwise stay `running` under a live node).
async fn claim_due(
    conn: &mut sqlx::PgConnection,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
    limit: usize,
    cut: Option<RetryCut>,
) -> StoreResult<Vec<ClaimedJob>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let due = lanes_due(&mut *conn, now).await?;
    let lease = Lease {
        owner: owner.to_string(),
        now,
        lease_until,
    };
    let mut round = RoundRobin::new(&due.flows, limit);
    while let Some((flow, room)) = round.next() {
        let mut jobs = Vec::with_capacity(room);
        let mut failed = None;
        for &priority in due.priorities(flow) {
            let left = room - jobs.len();
            if left == 0 {
                break;
            }
            match claim_lane_cut(&mut *conn, flow, priority, &lease, left, cut).await {
                Ok(claimed) => jobs.extend(claimed),
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        round.claimed(flow, room, jobs);
        if let Some(error) = failed {
            let jobs = round.into_jobs();
            if jobs.is_empty() {
                return Err(error);
            }
            tracing::warn!(%error, claimed = jobs.len(), "claiming stopped part way; the jobs claimed go to the workers");
            return Ok(jobs);
        }
    }
    Ok(round.into_jobs())
}

#[async_trait]
impl StepLog for PgStepLog {
    async fn jobs_insert_batch(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<InsertOutcome>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + super::SUBMIT_DEADLINE;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let submission = Submission {
            jobs,
            deadline,
            reply,
        };
        tokio::time::timeout_at(deadline, self.submissions.send(submission))
            .await
            .map_err(|_| not_in_time())?
            .map_err(|_| StoreError::WriterStopped("the submission combiners stopped".into()))?;
        // The combiner answers by the deadline, or soon after when a commit
        // it began before is still on its way.
        tokio::time::timeout_at(deadline + Duration::from_secs(2), answer)
            .await
            .map_err(|_| {
                StoreError::Unavailable(
                    "no answer from PostgreSQL in time; the submission may or may not be \
                     stored: send it again with the same idempotency_key"
                        .into(),
                )
            })?
            .map_err(|_| StoreError::WriterStopped("the submission combiners stopped".into()))?
    }

    async fn writable(&self) -> StoreResult<()> {
        let probe = async {
            let read_only: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                .fetch_one(&self.pool)
                .await?;
            if read_only {
                return Err(StoreError::Unavailable(
                    "the PostgreSQL server is a read-only standby".into(),
                ));
            }
            Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(2), probe).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Unavailable(
                "PostgreSQL did not answer within 2 s".into(),
            )),
        }
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
        let mut conn = self.pool.acquire().await?;
        claim_due(
            &mut conn,
            owner,
            now,
            lease_until,
            limit,
            self.retry_share.cut(),
        )
        .await
    }

    async fn transitions_apply(&self, transitions: Vec<Transition>) -> StoreResult<Vec<bool>> {
        self.apply(&transitions).await
    }

    async fn transitions_apply_then_claim(
        &self,
        transitions: &mut Vec<Transition>,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> StoreResult<(Vec<bool>, Vec<ClaimedJob>)> {
        // Side by side, not one after the other: a backend runs one
        // statement at a time, and a cycle's apply and claim were most of a
        // node's time on the server. They touch different rows (the apply,
        // jobs running under this node's leases; the claim, due ones), so
        // neither waits for the other; a job the apply makes due is claimed
        // by the next cycle.
        let (applied, claimed) = tokio::join!(
            self.apply(transitions),
            self.jobs_claim_due(owner, now, lease_until, limit)
        );
        match (applied, claimed) {
            (Ok(applied), Ok(claimed)) => {
                transitions.clear();
                Ok((applied, claimed))
            }
            (Ok(_), Err(error)) => {
                transitions.clear();
                Err(error)
            }
            (Err(error), Ok(claimed)) if claimed.is_empty() => Err(error),
            // The claims are committed: they must reach the workers, or
            // they would stay `running` under a live node's lease. The
            // results stay in the batch for the next cycle.
            (Err(error), Ok(claimed)) => {
                tracing::warn!(%error, results = transitions.len(), "committing results failed; they are kept for the next cycle");
                Ok((Vec::new(), claimed))
            }
            (Err(error), Err(_)) => Err(error),
        }
    }

    async fn next_due_at(&self) -> StoreResult<Option<Timestamp>> {
        let waiting: Vec<(String, i64, Option<i64>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(SQL.lanes_waiting.as_str()))
                .fetch_all(&self.pool)
                .await?;
        let next = waiting
            .into_iter()
            .filter_map(|(_, _, earliest)| earliest)
            .min();
        opt_timestamp("next_at", next)
    }

    async fn leases_release(&self, owner: &str) -> StoreResult<u64> {
        let result = sqlx::query(sqlx::AssertSqlSafe(SQL.leases_release.as_str()))
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn leases_rescue(&self, now: Timestamp, alive_after: Timestamp) -> StoreResult<u64> {
        let result = sqlx::query(sqlx::AssertSqlSafe(SQL.leases_rescue.as_str()))
            .bind(ms(now))
            .bind(ms(alive_after))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn node_join(&self, node: &Membership, now: Timestamp) -> StoreResult<()> {
        let connection = lock_node_id(&self.pool, &node.id).await?;
        *self.node_lock.lock().await = Some(connection);
        let before = now - crate::lifecycle::signed(super::FORGET_NODES_AFTER);
        sqlx::query(sqlx::AssertSqlSafe(SQL.nodes_forget.as_str()))
            .bind(ms(before))
            .execute(&self.pool)
            .await?;
        self.node_write(&SQL.node_join, node, now).await
    }

    async fn node_heartbeat(&self, node: &Membership, now: Timestamp) -> StoreResult<()> {
        // The lock's connection may have been lost with the server (a
        // restart): take the id again.
        let mut held = self.node_lock.lock().await;
        let alive = match held.as_mut() {
            Some(connection) => {
                let probe = sqlx::query("SELECT 1").execute(&mut *connection);
                matches!(
                    tokio::time::timeout(Duration::from_secs(2), probe).await,
                    Ok(Ok(_))
                )
            }
            None => false,
        };
        let connection = match held.as_mut() {
            Some(connection) if alive => connection,
            _ => held.insert(lock_node_id(&self.pool, &node.id).await?),
        };
        // On the id's own connection, not the pool's: workers that keep
        // every pooled connection busy must not hold the heartbeat back
        // until the other nodes take this live node for dead.
        sqlx::query(sqlx::AssertSqlSafe(SQL.node_heartbeat.as_str()))
            .bind(&node.id)
            .bind(&node.instance)
            .bind(&node.version)
            .bind(ms(now))
            .execute(connection)
            .await?;
        Ok(())
    }

    async fn node_leave(&self, node: &Membership) -> StoreResult<()> {
        sqlx::query(sqlx::AssertSqlSafe(SQL.node_leave.as_str()))
            .bind(&node.id)
            .bind(&node.instance)
            .execute(&self.pool)
            .await?;
        if let Some(connection) = self.node_lock.lock().await.take() {
            use sqlx::Connection;
            let _ = connection.close().await;
        }
        Ok(())
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
        let inserted = sqlx::query(sqlx::AssertSqlSafe(SQL.flow_pause.as_str()))
            .bind(flow)
            .bind(ms(now))
            .bind(by)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(inserted == 1)
    }

    async fn flow_resume(&self, flow: &str, now: Timestamp) -> StoreResult<Option<u64>> {
        let mut tx = self.pool.begin().await?;
        let unpaused = sqlx::query(sqlx::AssertSqlSafe(SQL.flow_unpause.as_str()))
            .bind(flow)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let resumed = if unpaused == 1 {
            let count = held_for_pause_due(&mut tx, &SQL.resume_flow, flow, now).await?;
            wake_nodes(&mut tx).await?;
            Some(count)
        } else {
            None
        };
        tx.commit().await?;
        Ok(resumed)
    }

    async fn flow_resume_sweep(&self, flow: &str, now: Timestamp) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let swept = held_for_pause_due(&mut tx, &SQL.resume_flow_unless_paused, flow, now).await?;
        if swept > 0 {
            wake_nodes(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(swept)
    }

    async fn jobs_prune(&self, state: JobState, before: Timestamp, limit: u32) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(SQL.prunable.as_str()))
            .bind(state.as_str())
            .bind(ms(before))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        for table in ["attempts", "payload_edits"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE job_id = ANY($1)"
            )))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        }
        let deleted = sqlx::query("DELETE FROM jobs WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
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
        if counts.is_empty() {
            return Ok(());
        }
        // One statement for the lot, in the order given (the same order on
        // every node, so that concurrent flushes lock rows alike).
        static ADD: LazyLock<String> = LazyLock::new(|| {
            "INSERT INTO insight_counts (channel, hour, metric, key, count) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[]) \
             ON CONFLICT (channel, hour, metric, key) \
             DO UPDATE SET count = insight_counts.count + excluded.count"
                .to_string()
        });
        let channels: Vec<&str> = counts.iter().map(|c| c.channel.as_str()).collect();
        let hours: Vec<i64> = counts.iter().map(|c| c.hour).collect();
        let metrics: Vec<&str> = counts.iter().map(|c| c.metric.as_str()).collect();
        let keys: Vec<&str> = counts.iter().map(|c| c.key.as_str()).collect();
        let values: Vec<i64> = counts.iter().map(|c| c.count).collect();
        sqlx::query(sqlx::AssertSqlSafe(ADD.as_str()))
            .bind(&channels)
            .bind(&hours)
            .bind(&metrics)
            .bind(&keys)
            .bind(&values)
            .execute(&self.pool)
            .await?;
        Ok(())
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
        let deleted = sqlx::query(sqlx::AssertSqlSafe(SQL.insights_prune.as_str()))
            .bind(before_hour)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted)
    }

    async fn channel_errors_add(&self, counts: &[(String, i64, i64)]) -> StoreResult<()> {
        if counts.is_empty() {
            return Ok(());
        }
        static ADD: LazyLock<String> = LazyLock::new(|| {
            "INSERT INTO channel_errors (channel, second, count) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) \
             ON CONFLICT (channel, second) \
             DO UPDATE SET count = channel_errors.count + excluded.count"
                .to_string()
        });
        let channels: Vec<&str> = counts.iter().map(|(c, _, _)| c.as_str()).collect();
        let seconds: Vec<i64> = counts.iter().map(|(_, s, _)| *s).collect();
        let values: Vec<i64> = counts.iter().map(|(_, _, n)| *n).collect();
        sqlx::query(sqlx::AssertSqlSafe(ADD.as_str()))
            .bind(&channels)
            .bind(&seconds)
            .bind(&values)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn channel_errors_since(&self, channel: &str, since: i64) -> StoreResult<i64> {
        // SUM of BIGINT is NUMERIC in PostgreSQL.
        static SINCE: LazyLock<String> = LazyLock::new(|| {
            "SELECT COALESCE(SUM(count), 0)::bigint FROM channel_errors \
             WHERE channel = $1 AND second >= $2"
                .to_string()
        });
        let sum: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(SINCE.as_str()))
            .bind(channel)
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        Ok(sum)
    }

    async fn channel_errors_prune(&self, before: i64) -> StoreResult<u64> {
        let deleted = sqlx::query(sqlx::AssertSqlSafe(SQL.channel_errors_prune.as_str()))
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted)
    }

    async fn flows_paused(&self) -> StoreResult<Vec<PausedFlow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.flows_paused.as_str()))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(paused_flow_from_row).collect()
    }

    async fn jobs_count_by_flow(
        &self,
    ) -> StoreResult<std::collections::BTreeMap<String, StateCounts>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.count_by_flow_and_state.as_str()))
            .fetch_all(&self.pool)
            .await?;
        counts_by_flow(&rows)
    }

    async fn breakers_publish(&self, changes: &[BreakerChange]) -> StoreResult<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for change in changes {
            sqlx::query(
                "INSERT INTO breaker_changes (channel, open, at, until, reason, node) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&change.channel)
            .bind(change.open)
            .bind(ms(change.at))
            .bind(ms(change.until))
            .bind(&change.reason)
            .bind(&change.node)
            .execute(&mut *tx)
            .await?;
        }
        // An hour of history is plenty: a change is read within a second.
        sqlx::query("DELETE FROM breaker_changes WHERE at < $1")
            .bind(ms(changes[0].at) - 3_600_000)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn breakers_since(
        &self,
        after: i64,
        node: &str,
    ) -> StoreResult<(Vec<BreakerChange>, i64)> {
        let rows = sqlx::query(
            "SELECT seq, channel, open, at, until, reason, node FROM breaker_changes \
             WHERE seq > $1 ORDER BY seq",
        )
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        let mut last = after;
        let mut changes = Vec::new();
        for row in rows {
            last = row.try_get("seq")?;
            let from: String = row.try_get("node")?;
            if from == node {
                continue;
            }
            let time = |column: &str| -> StoreResult<Timestamp> {
                let value: i64 = row.try_get(column)?;
                opt_timestamp(column, Some(value))?
                    .ok_or_else(|| StoreError::Corrupt(format!("{column} missing")))
            };
            changes.push(BreakerChange {
                channel: row.try_get("channel")?,
                open: row.try_get("open")?,
                at: time("at")?,
                until: time("until")?,
                reason: row.try_get("reason")?,
                node: from,
            });
        }
        Ok((changes, last))
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
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.notifications_claim.as_str()))
            .bind(ms(now))
            .bind(ms(lease_until))
            .bind(limit_i64(limit))
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(SQL.notification_counted.as_str()))
            .bind(&attempt.job_id)
            .bind(opt_ms(next_at))
            .execute(&mut *tx)
            .await?;
        attempts_insert(&mut tx, &[&attempt]).await?;
        tx.commit().await?;
        Ok(())
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
        let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.last_attempts_of_jobs.as_str()))
            .bind(job_ids)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(attempt_from_row).collect()
    }

    async fn jobs_list(&self, filter: &JobFilter) -> StoreResult<JobPage> {
        let limit = filter.limit.clamp(1, MAX_PAGE);
        let sql = SQL.list(filter.state, filter.cursor.is_some());
        // Only constant text is formatted into `sql`; values are bound.
        let rows = bind_filter(
            sqlx::query(sqlx::AssertSqlSafe(sql)),
            filter,
            filter.state.map(JobState::as_str),
        )
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
        // Only constant text is formatted into `sql`; values are bound.
        let row = bind_filter(
            sqlx::query(sqlx::AssertSqlSafe(sql)),
            filter,
            filter.state.map(JobState::as_str),
        )
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
        // SKIP LOCKED: a job another node is retrying or editing right now is
        // left to it rather than waited for.
        let sql = SQL.dead_to_retry();
        let mut tx = self.pool.begin().await?;
        // Only constant text is formatted into `sql`; values are bound.
        let rows = bind_filter(
            sqlx::query(sqlx::AssertSqlSafe(sql)),
            filter,
            Some(JobState::Dead.as_str()),
        )
        .bind(after)
        .bind(i64::from(limit.max(1)))
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
        let ats: Vec<i64> = (0..ids.len())
            .map(|k| ms(first_at).saturating_add(spacing_us.saturating_mul(k as i64) / 1000))
            .collect();
        let retried = sqlx::query(
            "UPDATE jobs SET state = 'pending', channel_index = 0, attempt = 0, \
                 series_started_at = NULL, held_ms = 0, next_at = batch.at, reason = NULL, \
                 notify_at = NULL, updated_at = batch.at \
             FROM UNNEST($1::text[], $2::bigint[]) AS batch(id, at) \
             WHERE jobs.id = batch.id AND jobs.state = 'dead'",
        )
        .bind(&ids)
        .bind(&ats)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if retried > 0 {
            // Idle nodes pick the first of them up at once.
            wake_nodes(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(RetryBatch {
            matched: ids.len() as u64,
            retried,
            last_id: ids.last().cloned(),
        })
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
        let result = sqlx::query(sqlx::AssertSqlSafe(SQL.resume.as_str()))
            .bind(reason.as_str())
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn job_update(&self, id: &str, update: JobUpdate) -> StoreResult<Option<bool>> {
        let mut tx = self.pool.begin().await?;
        let changed = match &update {
            JobUpdate::Retry { at } => sqlx::query(sqlx::AssertSqlSafe(SQL.retry_dead.as_str()))
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
                // The row is locked first, so the audit row and the update
                // see the same state.
                sqlx::query(sqlx::AssertSqlSafe(SQL.edit_audit.as_str()))
                    .bind(id)
                    .bind(payload)
                    .bind(editor)
                    .bind(ms(*at))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(sqlx::AssertSqlSafe(SQL.edit_payload.as_str()))
                    .bind(id)
                    .bind(payload)
                    .bind(ms(*at))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            }
            JobUpdate::Cancel { at } => sqlx::query(sqlx::AssertSqlSafe(SQL.cancel.as_str()))
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

    fn is_shared(&self) -> bool {
        true
    }

    fn inserts_watch(&self, wake: Arc<Notify>) -> Option<JoinHandle<()>> {
        let pool = self.pool.clone();
        Some(tokio::spawn(async move {
            loop {
                match listen_on(&pool).await {
                    Ok(mut listener) => {
                        // Inserts made while nobody listened were not
                        // announced: look once.
                        wake.notify_one();
                        loop {
                            match listener.recv().await {
                                Ok(_) => wake.notify_one(),
                                Err(error) => {
                                    tracing::warn!(%error, "lost the job notifications; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for job notifications; polling meanwhile");
                    }
                }
                // The scheduler still polls (max_idle) while this retries.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::url_options;

    #[test]
    fn pool_size_comes_from_the_url() {
        let (url, max) = url_options("postgres://u@h/db?pool_max=4&sslmode=disable").unwrap();
        assert_eq!(url, "postgres://u@h/db?sslmode=disable");
        assert_eq!(max, 4);
        assert!(url_options("postgres://u:pw@h/db?pool_max=x").is_err());
    }
}

/// The tests' private server (a path relative to this file's directory).
#[cfg(test)]
#[path = "../../tests/common/postgres.rs"]
mod test_server;

/// The planner's use of the lean indexes (migration 6), on a real server.
#[cfg(test)]
mod plans {
    use super::test_server as pg;
    use super::{PgStepLog, SQL};
    use crate::store::JobState;

    /// The plan of `sql` with sequential scans priced out, so that the
    /// question is only whether an index can serve it (on an empty table
    /// the planner would rightly scan it whatever the indexes).
    async fn plan(conn: &mut sqlx::PgConnection, sql: &str) -> String {
        let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
            .fetch_all(&mut *conn)
            .await
            .expect("a plan");
        lines.join("\n")
    }

    #[tokio::test]
    async fn parked_waiting_and_running_jobs_are_found_through_their_indexes() {
        let Some(url) = pg::fresh_database().await else {
            return;
        };
        let log = PgStepLog::open(&url).await.expect("the log opens");
        let mut conn = log.pool.acquire().await.expect("a connection");
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut *conn)
            .await
            .expect("set");
        for state in [JobState::Dead, JobState::Suspended, JobState::Cancelled] {
            // Every parameter NULL: no other condition, no cursor, no limit.
            for (sql, parameters) in [
                (SQL.list(Some(state), false), 11),
                (SQL.count(Some(state)), 9),
            ] {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PREPARE q AS {sql}")))
                    .execute(&mut *conn)
                    .await
                    .expect("prepare");
                let nulls = vec!["NULL"; parameters].join(", ");
                let steps = plan(&mut conn, &format!("EXECUTE q ({nulls})")).await;
                assert!(steps.contains("jobs_parked"), "{state:?}: {steps}");
                sqlx::raw_sql("DEALLOCATE q")
                    .execute(&mut *conn)
                    .await
                    .expect("deallocate");
            }
        }
        let steps = plan(&mut conn, &SQL.count_by_state).await;
        assert_eq!(steps.matches("jobs_parked").count(), 3, "{steps}");
        assert!(steps.contains("jobs_due_by_flow"), "{steps}");
        assert!(steps.contains("jobs_leased"), "{steps}");
        let steps = plan(&mut conn, &SQL.lanes_waiting).await;
        assert!(!steps.contains("Seq Scan"), "{steps}");
    }
}
