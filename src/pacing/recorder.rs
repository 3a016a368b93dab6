//! This node's side of the insights: every attempt is counted in memory
//! ([`Recorder::record`]) and the counts are added to the step log every
//! [`FLUSH_EVERY`] (and at shutdown, and before a reader asks), so that an
//! attempt costs a lock and a few map updates, never a write of its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::Counter;
use tokio::sync::watch;

use super::insights::{Counted, Tally};
use crate::clock::SharedClock;
use crate::lifecycle::signed;
use crate::store::{SharedStepLog, StoreResult};

/// How often this node adds its counts to the step log.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// How long hourly counts are kept: longer than the widest window a
/// reader may ask for (30 days).
pub const KEEP_COUNTS: Duration = Duration::from_secs(35 * 86_400);

/// How often old counts are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Attempt numbers labelled on their own in the metrics; later ones are
/// `"11+"`, so that the series stay few.
const LABELLED_ATTEMPTS: u32 = 10;

/// This node's counts not yet in the step log, and the metric handles.
#[derive(Default)]
pub struct Recorder {
    tally: Mutex<Tally>,
    counters: Mutex<HashMap<(String, u32, bool), Counter>>,
    /// One flush at a time (the loop's and a reader's).
    flushing: tokio::sync::Mutex<()>,
}

impl Recorder {
    /// Counts one attempt.
    pub fn record(&self, attempt: &Counted<'_>) {
        self.tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(attempt);
        let label = attempt.attempt.clamp(1, LABELLED_ATTEMPTS + 1);
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let key = (attempt.channel.to_string(), label, attempt.success);
        counters
            .entry(key)
            .or_insert_with(|| {
                let number = if label > LABELLED_ATTEMPTS {
                    format!("{}+", LABELLED_ATTEMPTS + 1)
                } else {
                    label.to_string()
                };
                metrics::counter!("steadfast_attempts_by_number_total",
                    "channel" => attempt.channel.to_string(),
                    "attempt" => number,
                    "outcome" => if attempt.success { "success" } else { "failure" })
            })
            .increment(1);
    }

    /// Counts a job of `flow` that ended at `at`, `succeeded` or `dead`.
    pub fn ended(&self, flow: &str, at: jiff::Timestamp, how: &'static str) {
        self.tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add_end(flow, at, how);
    }

    /// Adds the counts gathered so far to the step log; on failure they
    /// stay for the next flush.
    pub async fn flush(&self, store: &SharedStepLog) -> StoreResult<()> {
        let _one = self.flushing.lock().await;
        let counts = self.tally.lock().unwrap_or_else(|e| e.into_inner()).take();
        if counts.is_empty() {
            return Ok(());
        }
        match store.insights_add(&counts).await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.tally
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .restore(counts);
                Err(error)
            }
        }
    }

    /// Flushes every [`FLUSH_EVERY`] until shutdown, then once more;
    /// deletes counts older than [`KEEP_COUNTS`] every hour.
    pub async fn run(
        self: std::sync::Arc<Self>,
        store: SharedStepLog,
        clock: SharedClock,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut pruned_at: Option<jiff::Timestamp> = None;
        loop {
            let now = clock.now();
            if pruned_at.is_none_or(|at| now.duration_since(at).unsigned_abs() >= PRUNE_EVERY) {
                pruned_at = Some(now);
                let before = super::insights::hour_of(now - signed(KEEP_COUNTS));
                if let Err(error) = store.insights_prune(before).await {
                    tracing::warn!(%error, "deleting old channel insights failed");
                }
            }
            let sleep = clock.sleep_until(clock.now() + signed(FLUSH_EVERY));
            let stopping = tokio::select! {
                _ = sleep => false,
                _ = shutdown.changed() => true,
            };
            if let Err(error) = self.flush(&store).await {
                tracing::warn!(%error, "adding this node's channel insights to the step log failed; kept for the next try");
            }
            if stopping || *shutdown.borrow() {
                return;
            }
        }
    }
}
