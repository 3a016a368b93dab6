//! `slow_down`: failed attempts counted per channel and second, in the step
//! log so that every node counts the same (on PostgreSQL), and whether each
//! channel with a `slow_down` is past its threshold over its interval. The
//! executor asks [`ErrorWindows::is_over`] (a map lookup) before each
//! attempt on such a channel; the counts go to the step log and the answer
//! is read back every [`REFRESH_EVERY`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::lifecycle::signed;
use crate::model::SlowDown;
use crate::store::{SharedStepLog, StoreResult};

/// How often counts are shared and thresholds read back: how late a
/// channel starts (and stops) slowing down at most, beyond its interval.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// How long per-second counts are kept (longer than the widest `per`).
const KEEP: Duration = Duration::from_secs(86_400);

/// This node's failed attempts not yet in the step log, and the channels
/// past their `slow_down` threshold as last read.
#[derive(Default)]
pub struct ErrorWindows {
    pending: Mutex<HashMap<(String, i64), i64>>,
    over: Mutex<HashSet<String>>,
}

impl ErrorWindows {
    /// Counts a failed attempt on `channel`.
    pub fn failed(&self, channel: &str, at: Timestamp) {
        let second = at.as_millisecond().div_euclid(1000) * 1000;
        *self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((channel.to_string(), second))
            .or_insert(0) += 1;
    }

    /// Whether `channel` is past its threshold, as last read.
    pub fn is_over(&self, channel: &str) -> bool {
        self.over
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(channel)
    }

    /// Shares this node's counts and reads back, for each of `channels`,
    /// whether it is past its threshold at `now`.
    pub async fn refresh(
        &self,
        store: &SharedStepLog,
        channels: &[(String, SlowDown)],
        now: Timestamp,
    ) -> StoreResult<()> {
        let counts: Vec<(String, i64, i64)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().map(|((c, s), n)| (c, s, n)).collect()
        };
        if let Err(error) = store.channel_errors_add(&counts).await {
            // Kept for the next turn.
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (channel, second, count) in counts {
                *pending.entry((channel, second)).or_insert(0) += count;
            }
            return Err(error);
        }
        let mut over = HashSet::new();
        for (channel, slow) in channels {
            let since = (now - signed(slow.per)).as_millisecond();
            let errors = store.channel_errors_since(channel, since).await?;
            if errors > i64::from(slow.errors) {
                over.insert(channel.clone());
            }
        }
        let mut current = self.over.lock().unwrap_or_else(|e| e.into_inner());
        for channel in over.difference(&current) {
            tracing::warn!(channel = %channel, "errors past the channel's slow_down threshold: new attempts wait");
            metrics::gauge!("steadfast_channel_slowed", "channel" => channel.clone()).set(1.0);
        }
        for channel in current.difference(&over) {
            tracing::info!(channel = %channel, "errors back under the channel's slow_down threshold");
            metrics::gauge!("steadfast_channel_slowed", "channel" => channel.clone()).set(0.0);
        }
        *current = over;
        Ok(())
    }

    /// Refreshes every [`REFRESH_EVERY`] until shutdown, for the channels
    /// `channels()` names (those with a `slow_down` in the policy in force);
    /// deletes counts older than a day every hour.
    pub async fn run(
        self: Arc<Self>,
        store: SharedStepLog,
        clock: SharedClock,
        channels: impl Fn() -> Vec<(String, SlowDown)> + Send + 'static,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut pruned_at: Option<Timestamp> = None;
        loop {
            let now = clock.now();
            let watched = channels();
            if !watched.is_empty() {
                if let Err(error) = self.refresh(&store, &watched, now).await {
                    tracing::warn!(%error, "sharing channel error counts failed; slow_down reads the last answer");
                }
            }
            if pruned_at.is_none_or(|at| now.duration_since(at).unsigned_abs() >= KEEP / 24) {
                pruned_at = Some(now);
                let before = (now - signed(KEEP)).as_millisecond();
                if let Err(error) = store.channel_errors_prune(before).await {
                    tracing::warn!(%error, "deleting old channel error counts failed");
                }
            }
            let sleep = clock.sleep_until(now + signed(REFRESH_EVERY));
            tokio::select! {
                _ = sleep => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
