//! Claims due jobs in batches, up to the free worker slots, and runs each on
//! its own task.
//!
//! Waiting jobs live in the step log, not in memory: the scheduler sleeps
//! until the earliest due time (or a wake-up on submit or commit), so a
//! million waiting retries cost no timers. Shutdown stops claiming first,
//! lets the attempts in flight finish and commit, then releases the leases
//! of anything still held.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{watch, Notify, Semaphore};

use super::executor::Executor;
use super::interpreter::signed;
use super::writer::ResultWriter;

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

/// While busy, how long to wait for several slots to free up before
/// claiming for fewer: the most a due job waits for batching's sake.
const REFILL_WAIT: Duration = Duration::from_millis(2);

/// While busy, how often dead jobs' notifications are looked for (an idle
/// scheduler looks every time it wakes).
const NOTIFICATIONS_EVERY: Duration = Duration::from_millis(500);

pub(crate) struct Scheduler {
    pub executor: Executor,
    pub writer: ResultWriter,
    pub config: SchedulerConfig,
    pub wake: Arc<Notify>,
}

impl Scheduler {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.config.workers));
        // One claim should fill several slots: claiming job by job as single
        // slots free up would cost a write transaction per attempt.
        let refill = (self.config.workers / 8).clamp(1, self.config.claim_batch);
        let mut next_rescue = Timestamp::MIN;
        let mut next_notifications = Timestamp::MIN;
        while !*shutdown.borrow() {
            let now = self.executor.clock.now();
            if now >= next_rescue {
                self.rescue_expired(now).await;
                next_rescue = now + signed(self.config.lease / 4);
            }
            let free = slots.available_permits();
            if free < refill {
                // Either enough slots free up, or at least one and then
                // REFILL_WAIT passes; never a spin while every slot is busy.
                tokio::select! {
                    _ = slots.acquire_many(refill as u32) => {}
                    _ = async {
                        drop(slots.acquire().await);
                        tokio::time::sleep(REFILL_WAIT).await;
                    } => {}
                    _ = shutdown.changed() => {}
                }
                if slots.available_permits() == 0 {
                    continue;
                }
            }
            let now = self.executor.clock.now();
            let free = slots.available_permits();
            let wanted = free.min(self.config.claim_batch);
            let claimed = self.claim(now, wanted, &slots).await;
            let filled = claimed >= wanted;
            if now >= next_notifications || !filled {
                let free = slots.available_permits();
                if free > 0 {
                    self.start_notifications(now, free, &slots).await;
                }
                next_notifications = now + signed(NOTIFICATIONS_EVERY);
            }
            if !filled {
                self.idle(&mut shutdown).await;
            }
        }
        // Every permit back means every attempt in flight has handed its
        // result to the writer.
        let workers = u32::try_from(self.config.workers).unwrap_or(u32::MAX);
        let _ = slots.acquire_many(workers).await;
    }

    /// Claims up to `wanted` due jobs and starts an attempt for each; returns
    /// how many it claimed.
    async fn claim(&self, now: Timestamp, wanted: usize, slots: &Arc<Semaphore>) -> usize {
        let executor = &self.executor;
        let lease_until = now + signed(self.config.lease);
        let jobs = match executor
            .store
            .jobs_claim_due(&executor.owner, now, lease_until, wanted)
            .await
        {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::error!(%error, "claiming due jobs failed");
                return 0;
            }
        };
        let claimed = jobs.len();
        for job in jobs {
            // Only this loop takes slots, and it asked for no more than were
            // free, so this does not wait.
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let executor = executor.clone();
            let writer = self.writer.clone();
            tokio::spawn(async move {
                let transition = executor.attempt(&job).await;
                writer.submit(transition).await;
                drop(permit);
            });
        }
        claimed
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

    /// Sleeps until the earliest due job, a wake-up, or shutdown.
    async fn idle(&self, shutdown: &mut watch::Receiver<bool>) {
        let executor = &self.executor;
        let now = executor.clock.now();
        let mut until = now + signed(self.config.max_idle);
        match executor.store.next_due_at().await {
            Ok(Some(due)) if due < until => until = due.max(now),
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "reading the next due time failed"),
        }
        if until <= now {
            return;
        }
        tokio::select! {
            _ = executor.clock.sleep_until(until) => {}
            _ = self.wake.notified() => {}
            _ = shutdown.changed() => {}
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
