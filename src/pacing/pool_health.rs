//! `healthiest` pools read the members' shared history: every
//! [`REFRESH_EVERY`], each member's last hour of insights (every node's
//! attempts) becomes the health a node judges the member by until it has
//! enough attempts of its own (see `channels::pool`).

use std::time::Duration;

use tokio::sync::watch;

use super::insights::{hour_of, Insights};
use crate::channels::pool::Health;
use crate::channels::SharedChannels;
use crate::clock::SharedClock;
use crate::lifecycle::signed;
use crate::store::SharedStepLog;

pub const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// How far back a member's shared health looks (from the start of the
/// hour this reaches into).
const LOOK_BACK: Duration = Duration::from_secs(3600);

/// A member's health as the shared insights tell it.
pub fn health_of(insights: &Insights) -> Health {
    Health {
        success: insights.total.success_rate.unwrap_or(1.0),
        latency: insights.latency_ms.p50.unwrap_or(0.0) / 1000.0,
        attempts: u64::try_from(insights.total.attempts).unwrap_or(0),
    }
}

/// Refreshes the shared health of the members `members()` names (those of
/// `healthiest` pools in the policy in force) until shutdown.
pub async fn run(
    store: SharedStepLog,
    clock: SharedClock,
    channels: SharedChannels,
    members: impl Fn() -> Vec<String> + Send + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let now = clock.now();
        let since = hour_of(now - signed(LOOK_BACK));
        for member in members() {
            match store.insights_of(&member, since).await {
                Ok(counts) => {
                    let since = jiff::Timestamp::from_millisecond(since).unwrap_or(now);
                    let insights = Insights::from_counts(&member, since, &counts);
                    channels.pools().set_shared(&member, health_of(&insights));
                }
                Err(error) => {
                    tracing::warn!(%error, member, "reading a pool member's shared health failed");
                }
            }
        }
        let sleep = clock.sleep_until(now + signed(REFRESH_EVERY));
        tokio::select! {
            _ = sleep => {}
            _ = shutdown.changed() => return,
        }
    }
}
