//! What the step log costs per job, without HTTP: the three writes every
//! delivered job makes (insert, claim, commit of its result), timed one
//! kind at a time on a SQLite file at `synchronous=FULL` (`--normal`: NORMAL,
//! no fsync at commit in WAL mode, so what is left is the CPU).
//!
//! ```sh
//! cargo bench --bench step_log             # 50,000 jobs
//! cargo bench --bench step_log -- 200000   # another count
//! ```
//!
//! The engine's throughput is bounded by the sum of these per-job costs:
//! SQLite takes one writer at a time. See BENCHMARKS.md.

use std::time::Instant;

use anyhow::Result;
use jiff::{SignedDuration, Timestamp};
use steadfast::store::sqlite::{SqliteOptions, SqliteStepLog, Synchronous};
use steadfast::store::{AttemptRecord, JobState, NewJob, StepLog, Transition};

/// Batch sizes as the engine uses them: API batches of 1,000, claims of
/// 64 (the workers), results committed 64 at a time.
const INSERT_BATCH: usize = 1000;
const CLAIM_BATCH: usize = 64;
const COMMIT_BATCH: usize = 64;

fn main() -> Result<()> {
    let jobs: usize = match std::env::args().skip(1).find(|arg| !arg.starts_with('-')) {
        Some(count) => count.parse()?,
        None => 50_000,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(jobs, std::env::args().any(|arg| arg == "--normal")))
}

async fn run(jobs: usize, normal: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("steadfast.db").display());
    let synchronous = if normal {
        Synchronous::Normal
    } else {
        Synchronous::Full
    };
    let store = SqliteStepLog::open(
        &url,
        SqliteOptions {
            synchronous,
            ..SqliteOptions::default()
        },
    )
    .await?;
    let now = Timestamp::now();

    let started = Instant::now();
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(INSERT_BATCH) {
        let batch = chunk
            .iter()
            .map(|n| NewJob {
                id: uuid::Uuid::now_v7().to_string(),
                flow: "bench".into(),
                idempotency_key: format!("job-{n}"),
                payload: format!(r#"{{"n":{n}}}"#),
                step: "deliver".into(),
                created_at: now,
                next_at: now,
                policy_version: "v1".into(),
                traceparent: None,
                priority: 0,
            })
            .collect();
        store.jobs_insert_batch(batch).await?;
    }
    let insert = started.elapsed();

    let started = Instant::now();
    let lease_until = now + SignedDuration::from_mins(5);
    let mut claimed = Vec::with_capacity(jobs);
    loop {
        let batch = store
            .jobs_claim_due("bench", Timestamp::now(), lease_until, CLAIM_BATCH)
            .await?;
        if batch.is_empty() {
            break;
        }
        claimed.extend(batch);
    }
    let claim = started.elapsed();
    anyhow::ensure!(claimed.len() == jobs, "claimed {} of {jobs}", claimed.len());

    let started = Instant::now();
    for chunk in claimed.chunks(COMMIT_BATCH) {
        let transitions = chunk
            .iter()
            .map(|job| {
                let at = Timestamp::now();
                Transition {
                    job_id: job.id.clone(),
                    owner: "bench".into(),
                    lease_until: job.lease_until,
                    attempt: Some(AttemptRecord {
                        job_id: job.id.clone(),
                        step: job.step.clone(),
                        channel: "partner".into(),
                        attempt: 1,
                        started_at: at,
                        finished_at: at,
                        status: Some(200),
                        error: None,
                        error_message: None,
                        outcome: steadfast::lifecycle::Outcome::Success,
                        rule: Some("builtin[0]".into()),
                        decision: steadfast::lifecycle::Decision::Succeeded,
                        delay_ms: None,
                        next_at: None,
                        policy_version: "v1".into(),
                        member: None,
                        quick_tries: 0,
                    }),
                    to: JobState::Succeeded,
                    step_index: 0,
                    step: job.step.clone(),
                    channel_index: 0,
                    series_attempts: 1,
                    series_started_at: Some(at),
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
                    now: at,
                }
            })
            .collect();
        let applied = store.transitions_apply(transitions).await?;
        anyhow::ensure!(applied.iter().all(|ok| *ok), "a transition did not apply");
    }
    let commit = started.elapsed();

    let per_job = |d: std::time::Duration| d.as_secs_f64() * 1e6 / jobs as f64;
    println!(
        "{jobs} jobs, SQLite synchronous={}",
        if normal { "NORMAL" } else { "FULL" }
    );
    println!("{:28} {:>10}", "operation", "µs / job");
    println!(
        "{:28} {:>10.1}",
        format!("insert ({INSERT_BATCH} a batch)"),
        per_job(insert)
    );
    println!(
        "{:28} {:>10.1}",
        format!("claim ({CLAIM_BATCH} a claim)"),
        per_job(claim)
    );
    println!(
        "{:28} {:>10.1}",
        format!("commit ({COMMIT_BATCH} a batch)"),
        per_job(commit)
    );
    let total = per_job(insert + claim + commit);
    println!(
        "{:28} {:>10.1}  (at most {:.0} jobs/s)",
        "sum",
        total,
        1e6 / total
    );
    Ok(())
}
