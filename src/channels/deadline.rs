//! Attempt timeouts without a timer per attempt.
//!
//! Every HTTP attempt needs a timeout, and a tokio timer per attempt costs a
//! registration in the runtime's timer wheel and a removal from it (under
//! its lock) even though almost every attempt finishes long before its
//! timeout: 2.5 % of the engine's deliveries per second (BENCHMARKS.md).
//! Instead each worker owns a [`Deadline`]: an attempt writes its deadline
//! there (one atomic store), and one watcher task per engine, ticking every
//! [`TICK`], wakes the attempts whose deadline has passed. A timeout thus
//! fires up to one tick (and a millisecond) late, never early.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::time::{Instant, MissedTickBehavior};

/// How often the watcher looks at the deadlines: how late a timeout fires
/// at most.
pub const TICK: Duration = Duration::from_millis(10);

/// No attempt in progress.
const DISARMED: u64 = 0;
/// The attempt in progress ran past its deadline.
const EXPIRED: u64 = u64::MAX;

/// The deadlines of one engine's workers, and the watcher that enforces
/// them. The watcher ends once this and every [`Deadline`] are dropped.
pub struct Deadlines {
    shared: Arc<Shared>,
}

struct Shared {
    /// What deadlines count from: they are milliseconds since this, plus
    /// one (0 is [`DISARMED`]).
    origin: Instant,
    slots: Mutex<Vec<Weak<Slot>>>,
}

#[derive(Default)]
struct Slot {
    /// [`DISARMED`], [`EXPIRED`] or the deadline of the attempt in progress.
    state: AtomicU64,
    waker: AtomicWaker,
}

/// One worker's deadline: one attempt at a time runs under it.
pub struct Deadline {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
}

impl Deadlines {
    /// Starts the watcher; needs a tokio runtime.
    pub fn start() -> Self {
        let shared = Arc::new(Shared {
            origin: Instant::now(),
            slots: Mutex::new(Vec::new()),
        });
        tokio::spawn(watch(Arc::downgrade(&shared)));
        Self { shared }
    }

    /// A deadline for one more worker.
    pub fn deadline(&self) -> Deadline {
        let slot = Arc::new(Slot::default());
        self.shared.slots().push(Arc::downgrade(&slot));
        Deadline {
            shared: self.shared.clone(),
            slot,
        }
    }
}

impl Shared {
    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Slot>>> {
        // Pushing and pruning cannot leave the list half-changed.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ticks(&self, at: Instant) -> u64 {
        let ms = at.saturating_duration_since(self.origin).as_millis();
        u64::try_from(ms).unwrap_or(EXPIRED - 1).saturating_add(1)
    }
}

impl Deadline {
    /// Runs `work` for at most `timeout` (plus up to one [`TICK`] and a
    /// millisecond); `None` when it ran out of time (and was dropped).
    pub async fn within<F: Future>(&self, timeout: Duration, work: F) -> Option<F::Output> {
        let deadline = self.shared.ticks(Instant::now() + timeout).min(EXPIRED - 1);
        self.slot.state.store(deadline, Ordering::Release);
        let _disarm = Disarm(&self.slot);
        let mut work = pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            // Registered before looking, so that an expiry between the look
            // and the registration still wakes this attempt.
            self.slot.waker.register(cx.waker());
            if self.slot.state.load(Ordering::Acquire) == EXPIRED {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// Clears the slot when an attempt ends, however it ends (finished, timed
/// out, or dropped with its worker).
struct Disarm<'a>(&'a Slot);

impl Drop for Disarm<'_> {
    fn drop(&mut self) {
        self.0.state.store(DISARMED, Ordering::Release);
    }
}

async fn watch(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        expire(&shared, Instant::now());
    }
}

/// Marks every attempt past its deadline at `now` as expired and wakes it;
/// forgets the slots of workers that ended. Times are whole milliseconds:
/// a deadline has passed once `now` is in a later millisecond, so that a
/// timeout never fires early.
fn expire(shared: &Shared, now: Instant) {
    let now = shared.ticks(now);
    shared.slots().retain(|slot| {
        let Some(slot) = slot.upgrade() else {
            return false;
        };
        let deadline = slot.state.load(Ordering::Acquire);
        // The exchange fails when the attempt ended (and perhaps the next
        // one began) since the load: that one is left alone.
        if deadline != DISARMED
            && deadline != EXPIRED
            && deadline < now
            && slot
                .state
                .compare_exchange(deadline, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.waker.wake();
        }
        true
    });
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("state", &self.slot.state.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_that_finishes_in_time_gives_its_output() {
        let deadlines = Deadlines::start();
        let deadline = deadlines.deadline();
        let output = deadline
            .within(Duration::from_secs(1), async {
                tokio::time::sleep(Duration::from_millis(900)).await;
                7
            })
            .await;
        assert_eq!(output, Some(7));
        assert_eq!(deadline.slot.state.load(Ordering::Relaxed), DISARMED);
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_its_deadline_is_dropped_within_a_tick() {
        let deadlines = Deadlines::start();
        let deadline = deadlines.deadline();
        let started = Instant::now();
        let output = tokio::time::timeout(
            Duration::from_secs(10),
            deadline.within(Duration::from_millis(300), std::future::pending::<()>()),
        )
        .await
        .expect("the deadline fires long before the test's own timeout");
        let took = started.elapsed();
        assert_eq!(output, None);
        assert!(
            took >= Duration::from_millis(300) && took <= Duration::from_millis(300) + TICK,
            "timed out after {took:?}"
        );
        // The next attempt on the same deadline starts afresh.
        let output = deadline
            .within(Duration::from_millis(300), async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                "in time"
            })
            .await;
        assert_eq!(output, Some("in time"));
    }

    #[tokio::test(start_paused = true)]
    async fn each_worker_has_its_own_deadline() {
        let deadlines = Deadlines::start();
        let (short, long) = (deadlines.deadline(), deadlines.deadline());
        let (a, b) = tokio::join!(
            short.within(Duration::from_millis(100), std::future::pending::<()>()),
            long.within(Duration::from_secs(5), async {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }),
        );
        assert_eq!((a, b), (None, Some(())));
    }

    /// A watcher's state with one worker's slot, to call `expire` on.
    fn one_watched_slot() -> (Shared, Arc<Slot>) {
        let shared = Shared {
            origin: Instant::now(),
            slots: Mutex::new(Vec::new()),
        };
        let slot = Arc::new(Slot::default());
        shared.slots().push(Arc::downgrade(&slot));
        (shared, slot)
    }

    #[test]
    fn a_deadline_never_fires_early() {
        let (shared, slot) = one_watched_slot();
        let now = shared.origin + Duration::from_secs(10);
        slot.state.store(
            shared.ticks(now + Duration::from_millis(1)),
            Ordering::Relaxed,
        );
        expire(&shared, now);
        assert_ne!(slot.state.load(Ordering::Relaxed), EXPIRED);
        expire(&shared, now + Duration::from_millis(1));
        assert_ne!(
            slot.state.load(Ordering::Relaxed),
            EXPIRED,
            "not within the deadline's own millisecond"
        );
        expire(&shared, now + Duration::from_millis(2));
        assert_eq!(slot.state.load(Ordering::Relaxed), EXPIRED);
    }

    #[test]
    fn the_slot_of_a_worker_that_ended_is_forgotten() {
        let (shared, slot) = one_watched_slot();
        expire(&shared, Instant::now());
        assert_eq!(shared.slots().len(), 1);
        drop(slot);
        expire(&shared, Instant::now());
        assert!(
            shared.slots().is_empty(),
            "an ended worker's slot is forgotten"
        );
    }
}
