//! The thread that writes the SQLite step log: job inserts, claims and
//! results (the hot path), and every rarer write (see `upkeep`), through
//! the one connection this process writes with.
//!
//! Every delivered job costs three writes (inserted, claimed, its result
//! recorded), and SQLite admits one writer at a time: these writes bound the
//! engine's throughput. They run here, on a thread that owns its connection,
//! through cached prepared statements, one row at a time. A scheduler cycle
//! (its results, then its claims, then one commit) is one request and one
//! reply. Through sqlx the same cycle was a round trip to sqlx's connection
//! thread for every statement, each waiting for the scheduler's task to be
//! polled again on a runtime busy with HTTP, and every bound and returned
//! value was copied on the way (BENCHMARKS.md has the figures).
//!
//! The connection is rusqlite's, on the same bundled SQLite library sqlx
//! links; the schema, the migrations and the reads stay with sqlx.

use std::path::Path;
use std::sync::{mpsc, LazyLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rusqlite::{params, Connection, OpenFlags, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::super::plan::{due_first, DueLanes, Lease, RetryCut, RoundRobin};
use super::super::rows::{job_from_row, ms, opt_ms, opt_timestamp, same_payload, Columns};
use super::super::sql::pause_lifted;
use super::super::{
    AttemptRecord, ClaimedJob, InsertOutcome, JobRecord, JobState, NewJob, StoreError, StoreResult,
    Transition,
};
use super::{Synchronous, SQL};
use crate::lifecycle::Reason;

/// What a cycle claims after applying its results: up to `limit` jobs
/// under `lease`.
pub(super) struct ClaimRequest {
    pub lease: Lease,
    pub limit: usize,
    /// The retries' share of each lane's room, when cut.
    pub retry_cut: Option<RetryCut>,
}

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// A cycle's results and claims, or its error with the transitions it was
/// given, so that the caller can commit them again.
pub(super) type CycleAnswer = Result<CycleDone, (StoreError, Vec<Transition>)>;

/// A committed cycle: whether each transition applied, the jobs claimed,
/// and the transitions themselves, handed back to be freed (and their
/// vector reused) on the thread that made them.
pub(super) struct CycleDone {
    pub applied: Vec<bool>,
    pub claimed: Vec<ClaimedJob>,
    pub transitions: Vec<Transition>,
}

enum Request {
    /// Written only if its commit can start before `deadline`.
    Insert {
        jobs: Vec<NewJob>,
        deadline: Instant,
        reply: Reply<Vec<InsertOutcome>>,
    },
    /// A write transaction that changes nothing, for `/readyz`.
    Probe { deadline: Instant, reply: Reply<()> },
    Cycle {
        transitions: Vec<Transition>,
        claim: Option<ClaimRequest>,
        reply: oneshot::Sender<CycleAnswer>,
    },
    /// Any other write: runs on the connection and sends its own reply.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
}

impl Request {
    /// What a request that was never served gives back to its caller.
    fn into_transitions(self) -> Vec<Transition> {
        match self {
            Request::Cycle { transitions, .. } => transitions,
            Request::Insert { .. } | Request::Probe { .. } | Request::Run(_) => Vec::new(),
        }
    }
}

/// The handle to the writer thread. Dropping it lets the thread finish the
/// request in hand, close its connection and end.
pub(super) struct HotWriter {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl HotWriter {
    /// Opens a connection to the (already created and migrated) database at
    /// `path` and starts the thread that owns it.
    pub fn start(path: &Path, synchronous: Synchronous) -> StoreResult<Self> {
        let connection = open(path, synchronous)?;
        let (requests, inbox) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || serve(connection, inbox))
            .map_err(|error| StoreError::WriterStopped(error.to_string()))?;
        Ok(HotWriter {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Inserts jobs in one transaction (see `StepLog::jobs_insert_batch`),
    /// or nothing when that cannot be done before `deadline`.
    pub async fn insert(
        &self,
        jobs: Vec<NewJob>,
        deadline: Instant,
    ) -> StoreResult<Vec<InsertOutcome>> {
        self.ask(|reply| Request::Insert {
            jobs,
            deadline,
            reply,
        })
        .await
    }

    /// Whether a write transaction can be had and committed before
    /// `deadline`.
    pub async fn probe(&self, deadline: Instant) -> StoreResult<()> {
        self.ask(|reply| Request::Probe { deadline, reply }).await
    }

    /// Applies `transitions`, then claims (when asked to), in one
    /// transaction (see `StepLog::transitions_apply_then_claim`). A failed
    /// cycle hands its transitions back, unless the thread itself is gone.
    pub async fn cycle(
        &self,
        transitions: Vec<Transition>,
        claim: Option<ClaimRequest>,
    ) -> CycleAnswer {
        let (reply, answer) = oneshot::channel();
        let request = Request::Cycle {
            transitions,
            claim,
            reply,
        };
        let Some(requests) = self.requests.as_ref() else {
            return Err((writer_stopped(), request.into_transitions()));
        };
        if let Err(mpsc::SendError(request)) = requests.send(request) {
            return Err((writer_stopped(), request.into_transitions()));
        }
        // No answer: the thread died with the batch in hand (a panic), and
        // takes no more requests. The jobs stay leased here until their
        // leases run out and a rescue returns them to `pending`.
        answer
            .await
            .unwrap_or_else(|_| Err((writer_stopped(), Vec::new())))
    }

    /// Runs `write` on the writer's connection, in its turn.
    pub async fn run<T: Send + 'static>(
        &self,
        write: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.ask(|reply| {
            Request::Run(Box::new(move |connection| {
                let _ = reply.send(write(connection));
            }))
        })
        .await
    }

    async fn ask<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or_else(writer_stopped)?
            .send(request(reply))
            .map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }
}

fn writer_stopped() -> StoreError {
    StoreError::WriterStopped("it no longer takes requests".into())
}

impl Drop for HotWriter {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the SQLite writer thread panicked");
            }
        }
    }
}

fn open(path: &Path, synchronous: Synchronous) -> StoreResult<Connection> {
    // The journal mode (WAL) is the file's own, set when sqlx opened it.
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.pragma_update(
        None,
        "synchronous",
        match synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        },
    )?;
    // The one reference these statements could break is an attempt's job:
    // an attempt row is written only after the guarded update of its job
    // changed a row, in the same transaction, under the same id. The check
    // would look the job up a second time for every attempt (2 % of a
    // delivery's instructions); every other connection keeps it on.
    connection.pragma_update(None, "foreign_keys", false)?;
    connection.set_prepared_statement_cache_capacity(32);
    Ok(connection)
}

/// A write that could not start before its deadline.
const NOT_IN_TIME: &str = "no commit within 5 s (is another process holding the database \
     file, or is its disk full?); nothing was written";

/// How long a write waits for a lock held elsewhere before it fails. A
/// failed cycle is retried by the scheduler with its results kept, so a
/// short wait costs nothing and keeps the thread answering submissions.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `write` with SQLite's busy wait cut to what is left until
/// `deadline`; nothing at all once it has passed.
fn before<T>(
    connection: &mut Connection,
    deadline: Instant,
    write: impl FnOnce(&mut Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(StoreError::Unavailable(NOT_IN_TIME.into()));
    }
    connection.busy_timeout(left.min(BUSY_TIMEOUT))?;
    let written = write(connection);
    connection.busy_timeout(BUSY_TIMEOUT)?;
    written.map_err(|error| match error {
        StoreError::Sqlite(_) if error.is_unavailable() => {
            StoreError::Unavailable(format!("{error}; nothing was written"))
        }
        other => other,
    })
}

/// A write transaction that changes nothing on the rows but rewrites the
/// header's user version, so that a full disk or an unwritable file shows.
fn probe(connection: &mut Connection) -> StoreResult<()> {
    let tx = begin(connection)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    tx.pragma_update(None, "user_version", version)?;
    tx.commit()?;
    Ok(())
}

/// The most jobs one group commit of submissions holds.
const GROUP_MAX_JOBS: usize = 4096;

/// Submissions waiting for the same commit.
type InsertGroup = Vec<(Vec<NewJob>, Instant, Reply<Vec<InsertOutcome>>)>;

fn serve(mut connection: Connection, inbox: mpsc::Receiver<Request>) {
    // A request taken from the inbox while gathering a group, served next.
    let mut held: Option<Request> = None;
    while let Some(request) = held.take().or_else(|| inbox.recv().ok()) {
        // A caller that stopped waiting (its request was cancelled) no
        // longer wants the reply; the transaction stands or fell all the same.
        match request {
            Request::Insert {
                jobs,
                deadline,
                reply,
            } => {
                // Group commit: the submissions queued behind this one share
                // its transaction, and so its one sync to disk.
                let mut count = jobs.len();
                let mut group: InsertGroup = vec![(jobs, deadline, reply)];
                while count < GROUP_MAX_JOBS {
                    match inbox.try_recv() {
                        Ok(Request::Insert {
                            jobs,
                            deadline,
                            reply,
                        }) => {
                            count += jobs.len();
                            group.push((jobs, deadline, reply));
                        }
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                insert_group(&mut connection, group);
            }
            Request::Probe { deadline, reply } => {
                let _ = reply.send(before(&mut connection, deadline, probe));
            }
            Request::Run(write) => write(&mut connection),
            Request::Cycle {
                transitions,
                claim,
                reply,
            } => {
                let answer = match cycle(&mut connection, &transitions, claim.as_ref()) {
                    Ok((applied, claimed)) => Ok(CycleDone {
                        applied,
                        claimed,
                        transitions,
                    }),
                    Err(error) => Err((error, transitions)),
                };
                let _ = reply.send(answer);
            }
        }
    }
}

/// The columns of `jobs`, in the order the statements here return them.
/// Rows are read by position: looking every column's name up in every
/// claimed row cost an eighth of this thread's time.
const JOB_COLUMNS: [&str; 26] = [
    "id",
    "flow",
    "idempotency_key",
    "payload",
    "state",
    "step_index",
    "step",
    "channel_index",
    "attempt",
    "series_started_at",
    "held_ms",
    "next_at",
    "reason",
    "policy_version",
    "created_at",
    "updated_at",
    "attempts_total",
    "lease_owner",
    "lease_until",
    "notify_at",
    "notify_attempts",
    "traceparent",
    "priority",
    "responses",
    "branches",
    "slowed",
];

/// A job from a row of [`JOB_COLUMNS`] (a `RETURNING *` of `jobs`).
pub(super) fn job_from_written(row: &rusqlite::Row<'_>) -> StoreResult<JobRecord> {
    job_from_row(&Written(row))
}

/// A row of [`JOB_COLUMNS`], read by the decoder both stores share.
struct Written<'a, 'row>(&'a rusqlite::Row<'row>);

impl Written<'_, '_> {
    fn get<T: rusqlite::types::FromSql>(&self, column: &str) -> StoreResult<T> {
        let position = job_column_position(column)
            .ok_or_else(|| rusqlite::Error::InvalidColumnName(column.to_string()))?;
        Ok(self.0.get(position)?)
    }
}

/// The position of `column` in [`JOB_COLUMNS`] (a test holds the two
/// together). A `match` rather than a search of the list: the decoder asks
/// for 21 columns of every claimed row.
fn job_column_position(column: &str) -> Option<usize> {
    Some(match column {
        "id" => 0,
        "flow" => 1,
        "idempotency_key" => 2,
        "payload" => 3,
        "state" => 4,
        "step_index" => 5,
        "step" => 6,
        "channel_index" => 7,
        "attempt" => 8,
        "series_started_at" => 9,
        "held_ms" => 10,
        "next_at" => 11,
        "reason" => 12,
        "policy_version" => 13,
        "created_at" => 14,
        "updated_at" => 15,
        "attempts_total" => 16,
        "lease_owner" => 17,
        "lease_until" => 18,
        "notify_at" => 19,
        "traceparent" => 21,
        "notify_attempts" => 20,
        "priority" => 22,
        "responses" => 23,
        "branches" => 24,
        "slowed" => 25,
        _ => return None,
    })
}

impl Columns for Written<'_, '_> {
    fn text(&self, column: &str) -> StoreResult<String> {
        self.get(column)
    }

    fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
        self.get(column)
    }

    fn int(&self, column: &str) -> StoreResult<i64> {
        self.get(column)
    }

    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
        self.get(column)
    }
}

pub(super) fn begin(connection: &mut Connection) -> StoreResult<Transaction<'_>> {
    // IMMEDIATE: see the module documentation of `sqlite`.
    Ok(connection.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

// `OR FAIL` on every statement: SQLite then keeps no statement journal (a
// copy of what a statement changed, to undo that statement alone if a
// constraint fails halfway); a failure here rolls the whole transaction back
// anyway.

const INSERT_JOB: &str = "INSERT OR FAIL INTO jobs (id, flow, idempotency_key, payload, state, \
         step_index, step, next_at, policy_version, created_at, updated_at, traceparent, \
         priority) \
     VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?6, ?7, ?8, ?8, ?9, ?10) \
     ON CONFLICT (flow, idempotency_key) DO NOTHING";

static JOB_BY_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM jobs WHERE flow = ?1 AND idempotency_key = ?2",
        JOB_COLUMNS.join(", ")
    )
});

/// Moves a job, only while it is still `running` under the lease the
/// transition was claimed with. A hold for a pause that is no longer in
/// the step log (a node that had not yet heard of a resume on another)
/// lands the job pending and due instead: the resume already swept the
/// flow's held jobs and would not see this one.
static APPLY_TRANSITION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE OR FAIL jobs \
         SET state = CASE WHEN {lifted} THEN 'pending' ELSE ?3 END, \
             step_index = ?4, step = ?5, channel_index = ?6, attempt = ?7, \
             series_started_at = ?8, \
             held_ms = CASE WHEN {lifted} THEN held_ms ELSE ?9 END, \
             next_at = CASE WHEN {lifted} THEN ?14 ELSE ?10 END, \
             reason = CASE WHEN {lifted} THEN NULL ELSE ?11 END, \
             policy_version = ?12, notify_at = ?13, updated_at = ?14, \
             attempts_total = attempts_total + ?15, \
             lease_owner = CASE WHEN ?16 THEN lease_owner END, \
             lease_until = CASE WHEN ?16 THEN lease_until END, \
             responses = COALESCE(?18, responses), branches = COALESCE(?19, branches), \
             slowed = slowed + ?20 \
         WHERE id = ?1 AND state = 'running' AND lease_owner = ?2 AND lease_until IS ?17",
        lifted = pause_lifted("?11"),
    )
});

pub(super) const INSERT_ATTEMPT: &str =
    "INSERT OR FAIL INTO attempts (job_id, step, channel, attempt, \
         started_at, finished_at, status, error, error_message, outcome, rule, decision, \
         delay_ms, next_at, policy_version, member, quick_tries) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

/// Claims up to ?5 due jobs of flow ?4 at priority ?6, earliest first. The limit is cast
/// because SQLite plans with the value bound to a bare `LIMIT ?`, and so
/// prepares the statement again at every new binding. Rows are picked by
/// row id, which the index entries carry: by `id`, each claimed job cost a
/// search of the primary key's text index too.
static CLAIM_LANE: LazyLock<String> = LazyLock::new(|| claim_lane_sql("jobs_due_by_flow", ""));

/// [`CLAIM_LANE`] for retries alone (`attempt > 0`), earliest due first.
static CLAIM_LANE_RETRIES: LazyLock<String> =
    LazyLock::new(|| claim_lane_sql("jobs_due_by_flow", "AND attempt > 0"));

/// [`CLAIM_LANE`] for fresh jobs alone (`attempt = 0`), earliest due
/// first, from the index that holds them alone: in the claim index they
/// sit among the whole retry backlog.
static CLAIM_LANE_FRESH: LazyLock<String> =
    LazyLock::new(|| claim_lane_sql("jobs_fresh_due", "AND attempt = 0"));

fn claim_lane_sql(index: &str, only: &str) -> String {
    format!(
        "UPDATE OR FAIL jobs \
         SET state = 'running', lease_owner = ?1, lease_until = ?2, updated_at = ?3 \
         WHERE rowid IN (SELECT rowid FROM jobs INDEXED BY {index} \
                         WHERE state IN ('pending', 'suspended') AND flow = ?4 \
                             AND priority = ?6 AND next_at <= ?3 {only} \
                         ORDER BY next_at LIMIT CAST(?5 AS INTEGER)) \
         RETURNING {}",
        JOB_COLUMNS.join(", ")
    )
}

/// Commits a group of submissions in one transaction and answers each
/// once it is durable. A submission whose deadline passed is answered
/// unwritten; should the group fail for a reason of its own (not an
/// unavailable log), each submission is tried alone, so that one bad
/// request cannot fail the others.
fn insert_group(connection: &mut Connection, group: InsertGroup) {
    let now = Instant::now();
    let (live, late): (InsertGroup, InsertGroup) = group
        .into_iter()
        .partition(|(_, deadline, _)| *deadline > now);
    for (_, _, reply) in late {
        let _ = reply.send(Err(StoreError::Unavailable(NOT_IN_TIME.into())));
    }
    let Some(earliest) = live.iter().map(|(_, deadline, _)| *deadline).min() else {
        return;
    };
    let (requests, rest): (Vec<Vec<NewJob>>, Vec<_>) = live
        .into_iter()
        .map(|(jobs, deadline, reply)| (jobs, (deadline, reply)))
        .unzip();
    match before(connection, earliest, |c| insert(c, &requests)) {
        Ok(outcomes) => {
            for (outcome, (_, reply)) in outcomes.into_iter().zip(rest) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(error) if error.is_unavailable() => {
            let message = error.to_string();
            for (_, reply) in rest {
                let _ = reply.send(Err(StoreError::Unavailable(message.clone())));
            }
        }
        // A request alone: trying it alone again would fail the same way.
        Err(error) if rest.len() == 1 => {
            if let Some((_, reply)) = rest.into_iter().next() {
                let _ = reply.send(Err(error));
            }
        }
        Err(error) => {
            tracing::warn!(%error, submissions = rest.len(),
                "a group of submissions failed together; committing each alone");
            for (jobs, (deadline, reply)) in requests.iter().zip(rest) {
                let alone = before(connection, deadline, |c| {
                    insert(c, std::slice::from_ref(jobs))
                });
                let _ = reply.send(alone.map(|mut outcomes| outcomes.pop().unwrap_or_default()));
            }
        }
    }
}

/// Inserts each request's jobs, all in one transaction; the outcomes per
/// request, in order.
fn insert(
    connection: &mut Connection,
    requests: &[Vec<NewJob>],
) -> StoreResult<Vec<Vec<InsertOutcome>>> {
    let tx = begin(connection)?;
    let mut answers = Vec::new();
    {
        let mut insert = tx.prepare_cached(INSERT_JOB)?;
        for jobs in requests {
            let mut outcomes = Vec::with_capacity(jobs.len());
            for job in jobs {
                let inserted = insert.execute(params![
                    job.id,
                    job.flow,
                    job.idempotency_key,
                    job.payload,
                    job.step,
                    ms(job.next_at),
                    job.policy_version,
                    ms(job.created_at),
                    job.traceparent,
                    job.priority,
                ])?;
                outcomes.push(if inserted == 1 {
                    InsertOutcome::Created(created_record(job)?)
                } else {
                    existing(&tx, job)?
                });
            }
            answers.push(outcomes);
        }
    }
    tx.commit()?;
    Ok(answers)
}

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
        traceparent: job.traceparent.clone(),
        priority: job.priority,
        responses: None,
        branches: None,
        slowed: 0,
    })
}

/// The outcome for a job whose idempotency key was taken.
fn existing(tx: &Transaction<'_>, job: &NewJob) -> StoreResult<InsertOutcome> {
    let mut find = tx.prepare_cached(&JOB_BY_KEY)?;
    let mut rows = find.query(params![job.flow, job.idempotency_key])?;
    let record = match rows.next()? {
        Some(row) => job_from_row(&Written(row))?,
        None => {
            return Err(StoreError::Corrupt(format!(
                "job with key `{}` in flow `{}` neither inserted nor found",
                job.idempotency_key, job.flow
            )))
        }
    };
    Ok(if same_payload(&record.payload, &job.payload) {
        InsertOutcome::Existing(record)
    } else {
        InsertOutcome::Conflict(record)
    })
}

fn cycle(
    connection: &mut Connection,
    transitions: &[Transition],
    claim: Option<&ClaimRequest>,
) -> StoreResult<(Vec<bool>, Vec<ClaimedJob>)> {
    let tx = begin(connection)?;
    let applied = apply(&tx, transitions)?;
    let claimed = match claim {
        Some(claim) => claim_due(&tx, claim)?,
        None => Vec::new(),
    };
    tx.commit()?;
    Ok((applied, claimed))
}

/// Applies transitions in order; a job's second transition in one batch
/// sees what its first did.
fn apply(tx: &Transaction<'_>, transitions: &[Transition]) -> StoreResult<Vec<bool>> {
    let mut applied = Vec::with_capacity(transitions.len());
    if transitions.is_empty() {
        return Ok(applied);
    }
    let mut update = tx.prepare_cached(&APPLY_TRANSITION)?;
    let mut record = tx.prepare_cached(INSERT_ATTEMPT)?;
    for t in transitions {
        let moved = update.execute(params![
            t.job_id,
            t.owner,
            t.to.as_str(),
            t.step_index,
            t.step,
            t.channel_index,
            t.series_attempts,
            opt_ms(t.series_started_at),
            t.held_ms,
            opt_ms(t.next_at),
            t.reason.map(Reason::as_str),
            t.policy_version,
            opt_ms(t.notify_at),
            ms(t.now),
            t.attempts_added,
            t.to == JobState::Running,
            opt_ms(t.lease_until),
            t.responses,
            t.branches,
            t.slowed_added,
        ])? == 1;
        if moved {
            // The job just updated: see `open` on foreign keys.
            for attempt in t.attempt.iter().chain(&t.branch_attempts) {
                record_attempt(&mut record, &t.job_id, attempt)?;
            }
        }
        applied.push(moved);
    }
    Ok(applied)
}

/// Appends `attempt` as a row of job `job_id`, through [`INSERT_ATTEMPT`].
pub(super) fn record_attempt(
    statement: &mut rusqlite::CachedStatement<'_>,
    job_id: &str,
    attempt: &AttemptRecord,
) -> StoreResult<()> {
    statement.execute(params![
        job_id,
        attempt.step,
        attempt.channel,
        attempt.attempt,
        ms(attempt.started_at),
        ms(attempt.finished_at),
        attempt.status,
        attempt.error,
        attempt.error_message,
        attempt.outcome.as_str(),
        attempt.rule,
        attempt.decision.as_str(),
        attempt.delay_ms,
        opt_ms(attempt.next_at),
        attempt.policy_version,
        attempt.member,
        attempt.quick_tries,
    ])?;
    Ok(())
}

/// Claims up to `limit` due jobs, flow by flow, in the round robin both
/// stores share.
fn claim_due(tx: &Transaction<'_>, claim: &ClaimRequest) -> StoreResult<Vec<ClaimedJob>> {
    if claim.limit == 0 {
        return Ok(Vec::new());
    }
    let due = lanes_due(tx, claim.lease.now)?;
    let mut round = RoundRobin::new(&due.flows, claim.limit);
    while let Some((flow, room)) = round.next() {
        let mut jobs: Vec<JobRecord> = Vec::with_capacity(room);
        for priority in due.priorities(flow) {
            let left = room - jobs.len();
            if left == 0 {
                break;
            }
            let lane = |sql: &str, limit: usize, jobs: &mut Vec<JobRecord>| -> StoreResult<usize> {
                if limit == 0 {
                    return Ok(0);
                }
                let mut statement = tx.prepare_cached(sql)?;
                let mut rows = statement.query(params![
                    claim.lease.owner,
                    ms(claim.lease.lease_until),
                    ms(claim.lease.now),
                    flow,
                    i64::try_from(limit).unwrap_or(i64::MAX),
                    priority,
                ])?;
                let before = jobs.len();
                while let Some(row) = rows.next()? {
                    jobs.push(job_from_row(&Written(row))?);
                }
                Ok(jobs.len() - before)
            };
            match claim.retry_cut {
                None => {
                    lane(&CLAIM_LANE, left, &mut jobs)?;
                }
                Some(cut) => {
                    // Retries up to their share, the rest of the room to
                    // fresh jobs; room fresh jobs leave is left unused.
                    let retries = lane(&CLAIM_LANE_RETRIES, cut.retry_room(left), &mut jobs)?;
                    lane(&CLAIM_LANE_FRESH, left - retries, &mut jobs)?;
                }
            }
        }
        round.claimed(flow, room, jobs);
    }
    Ok(round.into_jobs())
}

/// The flows that have a job due at `now`, the one waiting longest first,
/// with their due lanes.
fn lanes_due(tx: &Transaction<'_>, now: Timestamp) -> StoreResult<DueLanes> {
    let mut statement = tx.prepare_cached(&SQL.lanes_waiting)?;
    let mut rows = statement.query([])?;
    let mut waiting = Vec::new();
    while let Some(row) = rows.next()? {
        waiting.push((row.get(0)?, row.get(1)?, row.get(2)?));
    }
    Ok(due_first(waiting, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_columns_are_the_columns_of_the_jobs_table() {
        let connection = Connection::open_in_memory().expect("an in-memory database");
        for (_, _, sql) in super::super::MIGRATIONS {
            connection.execute_batch(sql).expect("the migrations apply");
        }
        let mut statement = connection
            .prepare("SELECT name FROM pragma_table_info('jobs') ORDER BY cid")
            .expect("table_info");
        let columns: Vec<String> = statement
            .query_map([], |row| row.get(0))
            .expect("columns")
            .collect::<Result<_, _>>()
            .expect("names");
        assert_eq!(columns, JOB_COLUMNS);
        for (position, column) in JOB_COLUMNS.iter().enumerate() {
            assert_eq!(job_column_position(column), Some(position), "{column}");
        }
        assert_eq!(job_column_position("nope"), None);
    }
}
