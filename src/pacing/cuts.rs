//! Where each channel's history cuts an `adapt` template's retries: the
//! channel's insights over the template's window, read from the step log
//! at most once a [`REFRESH`] per channel and window, and asked only when
//! an attempt of such a template failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use super::insights::{hour_of, Insights};
use crate::lifecycle::signed;
use crate::model::Adapt;
use crate::store::SharedStepLog;

/// How old a channel's history may be before it is read again.
pub const REFRESH: Duration = Duration::from_secs(60);

/// What a cut rests on, for the attempt's note and `explain`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    /// The first attempt number not made.
    pub from: u32,
    /// Attempts at that number and later, in the window, and their
    /// successes.
    pub attempts: i64,
    pub successes: i64,
}

#[derive(Default)]
struct Entry {
    insights: Option<Arc<Insights>>,
    read_at: Option<Timestamp>,
}

/// One channel's history over one window, read by one task at a time.
type SharedEntry = Arc<tokio::sync::Mutex<Entry>>;

/// The histories read so far, by channel and window (in seconds).
#[derive(Default)]
pub struct Cuts {
    entries: Mutex<HashMap<(String, u64), SharedEntry>>,
}

impl Cuts {
    /// Where `channel`'s history over `adapt.window` cuts retries, as of
    /// `now`. A store that cannot answer cuts nothing (retrying as the
    /// template says is the safe side).
    pub async fn cut(
        &self,
        store: &SharedStepLog,
        channel: &str,
        adapt: &Adapt,
        now: Timestamp,
    ) -> Option<Cut> {
        let insights = self.insights(store, channel, adapt.window, now).await?;
        cut_of(&insights, adapt)
    }

    async fn insights(
        &self,
        store: &SharedStepLog,
        channel: &str,
        window: Duration,
        now: Timestamp,
    ) -> Option<Arc<Insights>> {
        let entry = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries
                .entry((channel.to_string(), window.as_secs()))
                .or_default()
                .clone()
        };
        // One read at a time per channel and window; the others wait for it.
        let mut entry = entry.lock().await;
        let fresh = entry
            .read_at
            .is_some_and(|at| now.duration_since(at).unsigned_abs() < REFRESH);
        if !fresh {
            let since = hour_of(now - signed(window));
            match store.insights_of(channel, since).await {
                Ok(counts) => {
                    let since = Timestamp::from_millisecond(since).unwrap_or(now);
                    entry.insights = Some(Arc::new(Insights::from_counts(channel, since, &counts)));
                }
                Err(error) => {
                    tracing::warn!(%error, channel, "reading the channel's history for `adapt` failed; no cut until it answers");
                    entry.insights = None;
                }
            }
            entry.read_at = Some(now);
        }
        entry.insights.clone()
    }
}

/// The cut `insights` make for `adapt`, with what it rests on.
pub fn cut_of(insights: &Insights, adapt: &Adapt) -> Option<Cut> {
    let from = insights.cut(adapt.min_samples, adapt.stop_below)?;
    let (attempts, successes) = insights
        .by_attempt
        .range(from..)
        .fold((0, 0), |(a, s), (_, rate)| {
            (a + rate.attempts, s + rate.successes)
        });
    Some(Cut {
        from,
        attempts,
        successes,
    })
}
