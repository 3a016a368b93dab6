//! This node among the nodes sharing the step log: it enters under its id
//! (refused while another live process holds the id), writes a heartbeat
//! every [`HEARTBEAT`], and every [`RESCUE_EVERY`] hands back to `pending`
//! the running jobs of nodes that fell silent for the node timeout. A live
//! node's claims are never taken over, however long an attempt runs: its
//! heartbeat is what keeps them. Once a second, so that a dead node's jobs
//! are back within the timeout plus a second.
//!
//! Each heartbeat also counts the live nodes: channels' `rate` and
//! `concurrency` and the retry quotas are the cluster's, and each node
//! enforces its share of them.
//!
//! After the step log was out of reach, every node's heartbeat is old: a
//! node judges no other dead until it has itself beaten again for
//! [`AFTER_OUTAGE`], time enough for every live node to beat too.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{watch, Notify};

use super::LivePolicy;
use crate::channels::SharedChannels;
use crate::clock::SharedClock;
use crate::lifecycle::signed;
use crate::retry::quota::RetryQuotas;
use crate::store::{Membership, SharedStepLog};

/// How often a node writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// How often a node looks for dead nodes' jobs.
pub const RESCUE_EVERY: Duration = Duration::from_secs(1);

/// How long a node beats again after a failed heartbeat before it judges
/// others dead: more than one heartbeat interval of theirs.
pub const AFTER_OUTAGE: Duration = Duration::from_secs(3);

pub(super) struct Heart {
    pub store: SharedStepLog,
    pub clock: SharedClock,
    pub node: Membership,
    /// Silent this long, a node is dead.
    pub timeout: Duration,
    /// Woken when jobs come back to `pending`.
    pub wake: Arc<Notify>,
    /// The channels' limits and the retry quotas, shared among the live
    /// nodes.
    pub channels: SharedChannels,
    pub quotas: Arc<RetryQuotas>,
    /// For each channel's breaker configuration.
    pub policy: Arc<LivePolicy>,
    /// The paused flows, read again at every beat.
    pub paused: Arc<super::PausedFlows>,
}

impl Heart {
    /// Beats and rescues until shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut next_beat = self.clock.now();
        // Since when the heartbeats have been written without a failure.
        let mut beating_since = Some(self.clock.now() - signed(AFTER_OUTAGE));
        // The position in the other nodes' breaker changes.
        let mut breakers_seen = 0;
        loop {
            let now = self.clock.now();
            if self.store.is_shared() {
                breakers_seen = self.share_breakers(breakers_seen, now).await;
                match self.store.flows_paused().await {
                    Ok(paused) => self.paused.replace(paused.into_iter().map(|p| p.flow)),
                    Err(error) => tracing::debug!(%error, "reading the paused flows failed"),
                }
            }
            if now >= next_beat {
                match self.store.node_heartbeat(&self.node, now).await {
                    Ok(()) => {
                        next_beat = now + signed(HEARTBEAT);
                        beating_since.get_or_insert(now);
                        self.count_live(now).await;
                    }
                    Err(error) => {
                        beating_since = None;
                        tracing::error!(%error, node = %self.node.id,
                            "writing this node's heartbeat failed; other nodes may take its jobs over")
                    }
                }
            }
            // A log of its own (SQLite) has no other node: what its last run
            // left running went back at start, and a live node's own claims
            // are never rescued. Its writer is spared the statement.
            let settled = beating_since.is_some_and(|since| now >= since + signed(AFTER_OUTAGE));
            if settled && self.store.is_shared() {
                self.rescue(now).await;
            }
            let sleep = self.clock.sleep_until(now + signed(RESCUE_EVERY));
            let breakers = self.channels.breakers().clone();
            tokio::select! {
                _ = sleep => {}
                // A breaker of this node opened or closed: tell the others
                // now rather than within the second.
                _ = breakers.changed(), if self.store.is_shared() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Hands back the jobs of nodes silent since before `now - timeout`
    /// (and of owners that are no node at all, once their lease ran out).
    async fn rescue(&self, now: Timestamp) {
        let alive_after = now - signed(self.timeout);
        match self.store.leases_rescue(now, alive_after).await {
            Ok(0) => {}
            Ok(count) => {
                metrics::counter!("steadfast_jobs_rescued_total").increment(count);
                tracing::warn!(count, "returned the running jobs of dead nodes to pending");
                self.wake.notify_one();
            }
            Err(error) => tracing::error!(%error, "rescuing dead nodes' jobs failed"),
        }
    }

    /// Publishes this node's breaker changes, then applies the others'
    /// (those after position `seen`); returns the new position.
    async fn share_breakers(&self, seen: i64, now: Timestamp) -> i64 {
        let breakers = self.channels.breakers();
        let mut mine = breakers.take_changes();
        for change in &mut mine {
            change.node.clone_from(&self.node.id);
        }
        if let Err(error) = self.store.breakers_publish(&mine).await {
            tracing::error!(%error, "publishing breaker changes failed");
        }
        let (theirs, next) = match self.store.breakers_since(seen, &self.node.id).await {
            Ok(read) => read,
            Err(error) => {
                tracing::debug!(%error, "reading other nodes' breaker changes failed");
                return seen;
            }
        };
        let policy = self.policy.current();
        for change in &theirs {
            let Some(config) = policy
                .channel(&change.channel)
                .and_then(|channel| channel.breaker.as_ref())
            else {
                continue;
            };
            // An opening whose every cooldown is over says nothing now.
            let stale = change.open
                && crate::clock::later(
                    crate::clock::later(change.until, config.cooldown),
                    RESCUE_EVERY,
                ) <= now;
            if !stale {
                breakers.apply_remote(change, config);
            }
        }
        next
    }

    /// Counts the live nodes (this one among them) and gives each limit
    /// and quota its share.
    async fn count_live(&self, now: Timestamp) {
        let alive_after = now - signed(self.timeout);
        match self.store.nodes_live(alive_after).await {
            Ok(live) => {
                let live = live.max(1);
                metrics::gauge!("steadfast_nodes_live").set(f64::from(live));
                let limits = self.channels.limits();
                if limits.nodes() != live {
                    tracing::info!(
                        nodes = live,
                        "live nodes changed: limits and quotas re-shared"
                    );
                }
                limits.set_nodes(live);
                self.quotas.set_nodes(live);
            }
            Err(error) => tracing::debug!(%error, "counting live nodes failed"),
        }
    }
}
