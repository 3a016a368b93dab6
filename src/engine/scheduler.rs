//! The engine's loop: each cycle commits the results that came in and
//! claims due jobs for the free worker slots, in one transaction, then runs
//! each claimed job on its own task.
//!
//! Waiting jobs live in the step log, not in memory: the scheduler sleeps
//! until the earliest due time (or a wake-up on submit, or a result coming
//! in), so a million waiting retries cost no timers. A cycle takes every
//! result that arrived while the previous one was being written, so both
//! the commits and the claims grow with the load and cost one write to disk
//! between them. Shutdown stops claiming, lets the attempts in flight finish
//! and commits their results; the engine then releases the leases of
//! anything still held.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{watch, Notify, Semaphore};

use super::executor::Executor;
use super::interpreter::signed;
use super::writer::{ResultQueue, ResultWriter, MAX_BATCH};
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

/// While busy with fewer free slots than a worthwhile claim, how long to
/// wait for more results before claiming for fewer: the most a due job
/// waits for batching's sake.
const REFILL_WAIT: Duration = Duration::from_millis(2);

/// While busy, how often dead jobs' notifications are looked for (an idle
/// scheduler looks every time it wakes).
const NOTIFICATIONS_EVERY: Duration = Duration::from_millis(500);

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
        let slots = Arc::new(Semaphore::new(workers));
        // One claim should fill several slots: claiming job by job as single
        // slots free up would cost a transaction per attempt.
        let refill = (workers / 8).clamp(1, self.config.claim_batch);
        let mut batch: Vec<Transition> = Vec::with_capacity(MAX_BATCH);
        let mut next_rescue = Timestamp::MIN;
        let mut next_notifications = Timestamp::MIN;
        // The last claim found fewer due jobs than it asked for: nothing to
        // claim until a wake-up, a due time or a result.
        let mut drained = false;
        let mut backoff: Option<Duration> = None;
        loop {
            let stopping = *shutdown.borrow();
            if stopping
                && batch.is_empty()
                && self.results.is_empty()
                && slots.available_permits() == workers
            {
                // Every permit back: every attempt has handed in its result,
                // and every result is committed.
                break;
            }
            if batch.is_empty() {
                let free = if stopping {
                    0
                } else {
                    slots.available_permits()
                };
                self.wait_for_work(&mut shutdown, &slots, free, drained, refill, &mut batch)
                    .await;
            }
            self.results.take_ready(&mut batch);
            let stopping = *shutdown.borrow();
            let now = self.executor.clock.now();
            if !stopping && now >= next_rescue {
                self.rescue_expired(now).await;
                next_rescue = now + signed(self.config.lease / 4);
            }
            let free = if stopping {
                0
            } else {
                slots.available_permits().min(self.config.claim_batch)
            };
            if batch.is_empty() && free == 0 {
                continue;
            }
            let lease_until = now + signed(self.config.lease);
            let cycle = self
                .executor
                .store
                .transitions_apply_then_claim(
                    batch.clone(),
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
                    batch.clear();
                    backoff = None;
                    drained = free > 0 && jobs.len() < free;
                    self.start_attempts(jobs, &slots).await;
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
                let free = slots.available_permits();
                if free > 0 {
                    self.start_notifications(now, free, &slots).await;
                }
                next_notifications = now + signed(NOTIFICATIONS_EVERY);
            }
        }
    }

    /// Waits, with no results in hand, until there is a reason for a cycle:
    /// a result, free slots with jobs that may be due, or shutdown.
    async fn wait_for_work(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        slots: &Semaphore,
        free: usize,
        drained: bool,
        refill: usize,
        batch: &mut Vec<Transition>,
    ) {
        if *shutdown.borrow() {
            // What is left: the results of the attempts in flight, and the
            // slots of notifications in flight (which have no result).
            let workers = u32::try_from(self.config.workers).unwrap_or(u32::MAX);
            tokio::select! {
                _ = self.results.wait(batch) => {}
                _ = slots.acquire_many(workers) => {}
            }
            return;
        }
        if free == 0 {
            // A slot comes back with a result, or when a notification ends.
            tokio::select! {
                _ = self.results.wait(batch) => {}
                _ = slots.acquire() => {}
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

    /// Starts an attempt for each claimed job on its own task.
    async fn start_attempts(&self, jobs: Vec<ClaimedJob>, slots: &Arc<Semaphore>) {
        for job in jobs {
            // Only this loop takes slots, and it claimed no more than were
            // free, so this does not wait.
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let executor = self.executor.clone();
            let writer = self.writer.clone();
            tokio::spawn(async move {
                let transition = executor.attempt(&job).await;
                writer.submit(transition).await;
                drop(permit);
            });
        }
    }

    async fn start_notifications(&self, now: Timestamp, free: usize, slots: &Arc<Semaphore>) {
        let executor = &self.executor;
        let lease_until = now + signed(self.config.lease);
        let due = match executor
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
        for claim in due {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                break;
            };
            let executor = executor.clone();
            tokio::spawn(async move {
                executor.notify(&claim.job).await;
                drop(permit);
            });
        }
    }

    async fn rescue_expired(&self, now: Timestamp) {
        match self.executor.store.leases_rescue(now).await {
            Ok(0) => {}
            Ok(count) => tracing::warn!(count, "returned jobs with expired leases to pending"),
            Err(error) => tracing::error!(%error, "rescuing expired leases failed"),
        }
    }
}
