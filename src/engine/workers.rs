//! The worker pool: `workers` long-lived tasks that run claimed work in
//! claim order, each job under the lease the scheduler took for it.
//!
//! Claimed jobs wait here, not as tasks of their own: a task per job cost a
//! spawn, a wait for a slot and a wake-up for every attempt, and the tasks
//! waiting for a slot made holding more jobs ahead expensive. A queue costs
//! a lock and a permit per job, so the scheduler can claim well ahead of
//! the attempts in flight and never leave a worker without a job while a
//! cycle is being written.
//!
//! At shutdown the jobs still waiting for a worker are handed back
//! unattempted (`pending`, as they were), so that a stop waits only for the
//! attempts in flight, not for up to eight more per worker.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use jiff::Timestamp;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::executor::Executor;
use super::writer::ResultWriter;
use crate::channels::Deadlines;
use crate::lifecycle::signed;
use crate::panic_message;
use crate::store::ClaimedJob;

/// What a worker does with a claimed job.
pub(crate) enum Work {
    /// Attempts the job's current step; its result goes to the writer.
    Attempt(ClaimedJob),
    /// Sends the `on_dead` notification of a dead job (it records its own
    /// result).
    Notify(ClaimedJob),
}

/// Claimed work and the lease that holds it, given back when it is done.
pub(crate) struct Claimed {
    pub work: Work,
    pub lease: OwnedSemaphorePermit,
}

/// Claimed work waiting for a worker, first claimed first served.
#[derive(Clone)]
pub(crate) struct WorkQueue {
    shared: Arc<Shared>,
}

struct Shared {
    waiting: Mutex<VecDeque<Claimed>>,
    /// One permit per job in `waiting`; closed when the pool stops.
    ready: Semaphore,
    /// Shutting down: jobs taken from here are handed back, not attempted.
    handing_back: AtomicBool,
}

impl WorkQueue {
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                waiting: Mutex::new(VecDeque::new()),
                ready: Semaphore::new(0),
                handing_back: AtomicBool::new(false),
            }),
        }
    }

    /// Queues claimed work behind what is already waiting.
    pub fn push(&self, claimed: impl IntoIterator<Item = Claimed>) {
        let added = {
            let mut waiting = self.waiting();
            let before = waiting.len();
            waiting.extend(claimed);
            waiting.len() - before
        };
        self.shared.ready.add_permits(added);
    }

    /// The next claimed work, once there is some; `None` once closed.
    async fn next(&self) -> Option<Claimed> {
        let permit = self.shared.ready.acquire().await.ok()?;
        permit.forget();
        self.waiting().pop_front()
    }

    /// From now on, jobs taken from the queue are handed back unattempted
    /// (notifications are still sent).
    pub fn hand_back_waiting(&self) {
        self.shared.handing_back.store(true, Ordering::Relaxed);
    }

    fn handing_back(&self) -> bool {
        self.shared.handing_back.load(Ordering::Relaxed)
    }

    /// Wakes every idle worker to end. Only called with the queue empty:
    /// the scheduler stops once every lease is back.
    fn close(&self) {
        self.shared.ready.close();
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, VecDeque<Claimed>> {
        // A panic while holding the lock left a valid queue: pushing and
        // popping cannot fail halfway.
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The workers and what they share.
pub(crate) struct WorkerPool {
    queue: WorkQueue,
    executor: Executor,
    writer: ResultWriter,
    lease_length: Duration,
    workers: JoinSet<()>,
    /// Each worker's attempt timeout (see `channels::deadline`).
    deadlines: Deadlines,
}

impl WorkerPool {
    /// Starts `count` workers on the queue.
    pub fn start(
        count: usize,
        queue: WorkQueue,
        executor: Executor,
        writer: ResultWriter,
        lease_length: Duration,
    ) -> Self {
        let mut pool = Self {
            queue,
            executor,
            writer,
            lease_length,
            workers: JoinSet::new(),
            deadlines: Deadlines::start(),
        };
        for _ in 0..count {
            pool.spawn_worker();
        }
        pool
    }

    /// Replaces the workers that panicked. The job a worker held stays
    /// `running` under its lease until the lease runs out and a rescue
    /// returns it to `pending`, as for any attempt that never reported.
    pub fn replace_failed(&mut self) {
        while let Some(ended) = self.workers.try_join_next() {
            match ended {
                Err(error) if error.is_panic() => {
                    tracing::error!("a worker panicked during an attempt; starting another");
                }
                _ => tracing::error!("a worker stopped early; starting another"),
            }
            self.spawn_worker();
        }
    }

    /// Ends the workers once they are idle.
    pub async fn stop(mut self) {
        self.queue.close();
        while self.workers.join_next().await.is_some() {}
    }

    fn spawn_worker(&mut self) {
        let (queue, executor, writer) = (
            self.queue.clone(),
            self.executor.clone(),
            self.writer.clone(),
        );
        let lease_length = self.lease_length;
        let deadline = self.deadlines.deadline();
        self.workers.spawn(async move {
            while let Some(Claimed { work, lease }) = queue.next().await {
                match work {
                    Work::Attempt(job) => {
                        let transition = if queue.handing_back() {
                            executor.release(&job)
                        } else if lease_mostly_spent(&job, executor.clock.now(), lease_length) {
                            tracing::warn!(job = %job.id, flow = %job.flow,
                                "a claimed job waited over half its lease for a worker; handed \
                                 back unattempted, so that it cannot be delivered twice (raise \
                                 --workers or --lease)");
                            executor.release(&job)
                        } else {
                            let attempt = AssertUnwindSafe(executor.attempt(&job, &deadline));
                            match attempt.catch_unwind().await {
                                Ok(transition) => transition,
                                Err(panic) => executor.after_panic(&job, &panic_message(&*panic)),
                            }
                        };
                        writer.submit(transition).await;
                    }
                    Work::Notify(job) => executor.notify(&job, &deadline).await,
                }
                drop(lease);
            }
        });
    }
}

/// Whether a claimed job that waited in memory for a worker has less than
/// half its lease left. An attempt started then might outlive the lease;
/// the job would be rescued and claimed again, by another node or this one,
/// and delivered twice.
fn lease_mostly_spent(job: &ClaimedJob, now: Timestamp, lease: Duration) -> bool {
    job.lease_until
        .is_some_and(|until| now + signed(lease / 2) > until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobRecord;

    fn job(n: i64, lease_until: Timestamp) -> ClaimedJob {
        let at = Timestamp::from_second(1_800_000_000).expect("a valid time");
        JobRecord {
            lease_until: Some(lease_until),
            ..JobRecord::claimed_for_test(&format!("job-{n}"), "orders", &format!("{n}"), at)
        }
    }

    fn id(claimed: &Claimed) -> &str {
        match &claimed.work {
            Work::Attempt(job) | Work::Notify(job) => &job.id,
        }
    }

    #[tokio::test]
    async fn claimed_work_is_served_in_claim_order_with_its_lease() {
        let leases = Arc::new(Semaphore::new(3));
        let queue = WorkQueue::new();
        let until = Timestamp::from_second(1_800_000_300).expect("a valid time");
        let claim = |n| Claimed {
            work: Work::Attempt(job(n, until)),
            lease: leases.clone().try_acquire_owned().expect("a free lease"),
        };
        queue.push([claim(1), claim(2)]);
        queue.push([claim(3)]);
        assert_eq!(leases.available_permits(), 0);

        let mut served = Vec::new();
        for _ in 0..3 {
            let claimed = queue.next().await.expect("queued work");
            served.push(id(&claimed).to_string());
            drop(claimed);
        }
        assert_eq!(served, ["job-1", "job-2", "job-3"]);
        assert_eq!(
            leases.available_permits(),
            3,
            "done work gives its lease back"
        );
    }

    #[tokio::test]
    async fn closing_the_queue_ends_the_idle_workers() {
        let queue = WorkQueue::new();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await.is_none() }
        });
        tokio::task::yield_now().await;
        queue.close();
        assert!(waiting.await.expect("the worker ends"));
    }

    #[test]
    fn a_job_with_less_than_half_its_lease_left_is_not_attempted() {
        let lease = Duration::from_secs(300);
        let until = Timestamp::from_second(1_800_000_300).expect("a valid time");
        let claimed = job(1, until);
        let at = |second| Timestamp::from_second(second).expect("a valid time");
        assert!(!lease_mostly_spent(&claimed, at(1_800_000_000), lease));
        assert!(!lease_mostly_spent(&claimed, at(1_800_000_150), lease));
        assert!(lease_mostly_spent(&claimed, at(1_800_000_151), lease));
    }
}
