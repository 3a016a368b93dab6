//! The engine's loop: each cycle commits the results that came in and
//! claims due jobs for the free leases, in one transaction, then queues the
//! claimed jobs for the worker pool (`workers`).
//!
//! Waiting jobs live in the step log, not in memory: the scheduler sleeps
//! until the earliest due time (or a wake-up on submit, or a result coming
//! in), so a million waiting retries cost no timers. A cycle takes every
//! result that arrived while the previous one was being written, so both
//! the commits and the claims grow with the load and cost one write to disk
//! between them. Shutdown stops claiming, hands back the jobs claimed ahead
//! unattempted, lets the attempts in flight finish and commits every
//! result; the engine then releases the leases of anything still held.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{watch, Notify, Semaphore};

use super::executor::Executor;
use super::workers::{Claimed, Work, WorkQueue, WorkerPool};
use super::writer::{ResultQueue, ResultWriter, MAX_BATCH};
use crate::lifecycle::signed;
use crate::store::{ClaimedJob, Transition};

/// How the scheduler paces itself.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Attempts in flight at once.
    pub workers: usize,
    /// The most jobs claimed in one query.
    pub claim_batch: usize,
    /// How long a claim is ours before a rescuer may hand it to another.
    pub lease: Duration,
    /// The longest sleep between looks at the step log, whatever it says.
    pub max_idle: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            workers: 64,
            claim_batch: 256,
            lease: Duration::from_secs(300),
            max_idle: Duration::from_secs(1),
        }
    }
}

/// While busy with fewer free leases than a worthwhile claim, how long to
/// wait for more results before claiming for fewer: the most a due job
/// waits for batching's sake.
const REFILL_WAIT: Duration = Duration::from_millis(2);

/// While busy, how often dead jobs' notifications are looked for (an idle
/// scheduler looks every time it wakes).
const NOTIFICATIONS_EVERY: Duration = Duration::from_millis(500);

/// Jobs a node holds claimed per worker: those beyond the workers wait in
/// memory, in claim order, for an attempt to finish. Enough that the
/// workers still have jobs when a cycle takes several times its usual
/// length (a slow fsync, the writer thread waiting for a core): at 4, a
/// tenth of the cycles ended with half the workers idle (BENCHMARKS.md).
const CLAIM_AHEAD: usize = 8;

/// The longest pause before committing again after a failed commit.
const MAX_COMMIT_BACKOFF: Duration = Duration::from_secs(5);

pub(crate) struct Scheduler {
    pub executor: Executor,
    /// Cloned into each attempt's task.
    pub writer: ResultWriter,
    pub results: ResultQueue,
    pub config: SchedulerConfig,
    pub wake: Arc<Notify>,
}

impl Scheduler {
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let workers = self.config.workers;
        let queue = WorkQueue::new();
        let mut pool = WorkerPool::start(
            workers,
            queue.clone(),
            self.executor.clone(),
            self.writer.clone(),
            self.config.lease,
        );
        // Jobs claimed and not yet handed in.
        let held = self.lease_count();
        let leases = Arc::new(Semaphore::new(held));
        // One claim should take several jobs: claiming job by job as single
        // leases come back would cost a transaction per attempt.
        let refill = (workers / 8).clamp(1, self.config.claim_batch);
        let mut batch: Vec<Transition> = Vec::with_capacity(MAX_BATCH);
        let mut next_notifications = Timestamp::MIN;
        // The last claim found fewer due jobs than it asked for: nothing to
        // claim until a wake-up, a due time or a result.
        let mut drained = false;
        let mut backoff: Option<Duration> = None;
        loop {
            let stopping = *shutdown.borrow();
            if stopping {
                queue.hand_back_waiting();
            }
            if stopping
                && batch.is_empty()
                && self.results.is_empty()
                && leases.available_permits() == held
            {
                // Every lease back: every claimed job has handed in its
                // result, and every result is committed.
                break;
            }
            if batch.is_empty() {
                let free = if stopping {
                    0
                } else {
                    leases.available_permits()
                };
                self.wait_for_work(&mut shutdown, &leases, free, drained, refill, &mut batch)
                    .await;
            }
            self.results.take_ready(&mut batch);
            let stopping = *shutdown.borrow();
            let now = self.executor.clock.now();
            let free = if stopping {
                0
            } else {
                leases.available_permits().min(self.config.claim_batch)
            };
            if batch.is_empty() && free == 0 {
                continue;
            }
            let lease_until = now + signed(self.config.lease);
            let cycle = self
                .executor
                .store
                .transitions_apply_then_claim(
                    &mut batch,
                    &self.executor.owner,
                    now,
                    lease_until,
                    free,
                )
                .await;
            match cycle {
                Ok((applied, jobs)) => {
                    let stale = applied.iter().filter(|ok| !**ok).count();
                    if stale > 0 {
                        tracing::warn!(
                            stale,
                            "results for jobs no longer leased here were dropped"
                        );
                    }
                    // The store took what it committed; results it could
                    // not commit are still in `batch`, for the next cycle.
                    backoff = None;
                    drained = free > 0 && jobs.len() < free;
                    pool.replace_failed();
                    queue.push(take_leases(jobs, &leases, Work::Attempt));
                }
                Err(error) => {
                    // The jobs stay `running` under our lease: committing
                    // again is safe, dropping the results would lose the
                    // attempts.
                    tracing::error!(%error, results = batch.len(), "committing results and claiming failed; retrying");
                    let pause = backoff.map_or(Duration::from_millis(50), |last| {
                        (last * 2).min(MAX_COMMIT_BACKOFF)
                    });
                    backoff = Some(pause);
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
            if !stopping && (now >= next_notifications || drained) {
                let free = leases.available_permits();
                if free > 0 {
                    self.start_notifications(now, free, &leases, &queue).await;
                }
                next_notifications = now + signed(NOTIFICATIONS_EVERY);
            }
        }
        pool.stop().await;
    }

    /// The jobs this node holds claimed at most. Claiming ahead of the
    /// workers lets a cycle claim for the attempts that finish while it is
    /// being written, instead of only for those that finished before.
    fn lease_count(&self) -> usize {
        self.config.workers * CLAIM_AHEAD
    }

    /// Waits, with no results in hand, until there is a reason for a cycle:
    /// a result, free leases with jobs that may be due, or shutdown.
    async fn wait_for_work(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        leases: &Semaphore,
        free: usize,
        drained: bool,
        refill: usize,
        batch: &mut Vec<Transition>,
    ) {
        if *shutdown.borrow() {
            // What is left: the results of the attempts in flight, and the
            // leases of notifications in flight (which have no result).
            let held = u32::try_from(self.lease_count()).unwrap_or(u32::MAX);
            tokio::select! {
                _ = self.results.wait(batch) => {}
                _ = leases.acquire_many(held) => {}
            }
            return;
        }
        if free == 0 {
            // A lease comes back with a result, or when a notification ends.
            tokio::select! {
                _ = self.results.wait(batch) => {}
                _ = leases.acquire() => {}
                _ = shutdown.changed() => {}
            }
        } else if drained {
            let until = self.idle_until().await;
            let clock = self.executor.clock.clone();
            tokio::select! {
                _ = self.results.wait(batch) => {}
                _ = clock.sleep_until(until) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        } else if free < refill {
            tokio::select! {
                _ = self.results.wait(batch) => {}
                _ = tokio::time::sleep(REFILL_WAIT) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// When an idle scheduler looks again at the latest: the earliest due
    /// time, or `max_idle` from now.
    async fn idle_until(&self) -> Timestamp {
        let now = self.executor.clock.now();
        let mut until = now + signed(self.config.max_idle);
        match self.executor.store.next_due_at().await {
            Ok(Some(due)) if due < until => until = due.max(now),
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "reading the next due time failed"),
        }
        until
    }

    /// Claims the dead jobs whose notification is due and queues them for
    /// the workers.
    async fn start_notifications(
        &self,
        now: Timestamp,
        free: usize,
        leases: &Arc<Semaphore>,
        queue: &WorkQueue,
    ) {
        let lease_until = now + signed(self.config.lease);
        let due = match self
            .executor
            .store
            .notifications_claim_due(now, lease_until, free.min(self.config.claim_batch))
            .await
        {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, "claiming due notifications failed");
                return;
            }
        };
        let jobs = due.into_iter().map(|claim| claim.job).collect();
        queue.push(take_leases(jobs, leases, Work::Notify));
    }
}

/// Claimed jobs as work for the pool, each holding one of the leases.
fn take_leases(
    jobs: Vec<ClaimedJob>,
    leases: &Arc<Semaphore>,
    work: fn(ClaimedJob) -> Work,
) -> Vec<Claimed> {
    let mut claimed = Vec::with_capacity(jobs.len());
    for job in jobs {
        // Only the scheduler takes leases, and it claimed no more than were
        // free.
        let Ok(lease) = leases.clone().try_acquire_owned() else {
            tracing::error!(job = %job.id, "claimed more jobs than leases; its lease will expire");
            continue;
        };
        claimed.push(Claimed {
            work: work(job),
            lease,
        });
    }
    claimed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{JobRecord, NewJob};

    fn t0() -> Timestamp {
        "2026-05-04T10:00:00Z".parse().expect("a time")
    }

    async fn scheduler() -> Scheduler {
        let text = "channels:\n  spool: { file: { dir: spool } }\n\
                    flows:\n  f:\n    steps:\n      - { name: deliver, channel: spool }\n";
        let (writer, results) = super::super::writer::channel();
        Scheduler {
            executor: crate::engine::testing::executor(text, t0()).await,
            writer,
            results,
            config: SchedulerConfig::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    async fn submit_due_at(scheduler: &Scheduler, id: &str, at: Timestamp) {
        scheduler
            .executor
            .store
            .job_insert(NewJob {
                id: id.into(),
                flow: "f".into(),
                idempotency_key: id.into(),
                payload: "{}".into(),
                step: "deliver".into(),
                created_at: t0(),
                next_at: at,
                policy_version: "v".into(),
                traceparent: None,
                priority: 0,
            })
            .await
            .expect("inserted");
    }

    #[tokio::test]
    async fn an_idle_scheduler_sleeps_until_the_earliest_due_job_or_its_longest_idle() {
        let scheduler = scheduler().await;
        let longest = t0() + signed(SchedulerConfig::default().max_idle);
        assert_eq!(scheduler.idle_until().await, longest, "nothing waiting");
        submit_due_at(&scheduler, "later", t0() + signed(Duration::from_secs(60))).await;
        assert_eq!(scheduler.idle_until().await, longest, "due after max_idle");
        let soon = t0() + signed(Duration::from_millis(200));
        submit_due_at(&scheduler, "soon", soon).await;
        assert_eq!(scheduler.idle_until().await, soon);
        submit_due_at(&scheduler, "late", t0() - signed(Duration::from_secs(5))).await;
        assert_eq!(scheduler.idle_until().await, t0(), "overdue: at once");
    }

    #[test]
    fn claimed_jobs_each_hold_a_lease_and_none_beyond_the_free_ones() {
        let leases = Arc::new(Semaphore::new(2));
        let jobs: Vec<ClaimedJob> = (0..3)
            .map(|n| JobRecord::claimed_for_test(&format!("j{n}"), "f", "k", t0()))
            .collect();
        let claimed = take_leases(jobs, &leases, Work::Attempt);
        assert_eq!(claimed.len(), 2);
        assert_eq!(leases.available_permits(), 0);
        drop(claimed);
        assert_eq!(
            leases.available_permits(),
            2,
            "a finished job gives its lease back"
        );
    }
}
