//! Retry quotas per hour: for the whole cluster and per flow.
//!
//! Off unless set (PRODUCT.md: an engine delivering tens of thousands of
//! jobs a second must not hold ordinary retries for an hour out of the box).
//! Counted in memory on each node, in fixed windows of a clock hour (UTC):
//! cheap, no database write per retry. With several nodes each counts
//! against its share of the quota ([`RetryQuotas::set_nodes`]: the quota
//! divided by the live nodes, at least one), so that together they keep
//! it; a restart starts its count afresh. A retry over quota is not dead-lettered: it waits for
//! the next window (PRODUCT.md: `suspended`, reason `quota`). The time is an
//! argument, never read here.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use jiff::Timestamp;

const HOUR_MS: i64 = 3_600_000;

/// The quotas in force; `None` and an absent flow: no quota.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaConfig {
    /// Retries decided per hour on this node, all flows together.
    pub per_hour: Option<u64>,
    /// Retries decided per hour for one flow.
    pub per_flow_per_hour: Option<u64>,
    /// A flow's own hourly quota, instead of `per_flow_per_hour`.
    pub flows: BTreeMap<String, u64>,
}

impl QuotaConfig {
    /// Whether any quota is set at all.
    pub fn is_set(&self) -> bool {
        self.per_hour.is_some() || self.per_flow_per_hour.is_some() || !self.flows.is_empty()
    }
}

/// Which quota refused a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaScope {
    Node,
    Flow,
}

impl QuotaScope {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaScope::Node => "node",
            QuotaScope::Flow => "flow",
        }
    }
}

/// A retry refused: wait until the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    pub scope: QuotaScope,
    pub until: Timestamp,
}

#[derive(Debug, Default)]
struct Window {
    /// The hour (milliseconds since the epoch / one hour) being counted.
    hour: i64,
    total: u64,
    per_flow: HashMap<String, u64>,
}

/// When the quota window holding `at` ends: the next full hour (UTC), when
/// a retry refused at `at` may go.
pub fn window_end(at: Timestamp) -> Timestamp {
    let hour = at.as_millisecond().div_euclid(HOUR_MS);
    Timestamp::from_millisecond(hour.saturating_add(1).saturating_mul(HOUR_MS)).unwrap_or(at)
}

/// The counters of one node.
#[derive(Debug)]
pub struct RetryQuotas {
    config: QuotaConfig,
    window: Mutex<Window>,
    /// The live nodes sharing the quotas (1 alone).
    nodes: AtomicU64,
}

impl RetryQuotas {
    pub fn new(config: QuotaConfig) -> Self {
        RetryQuotas {
            config,
            window: Mutex::new(Window::default()),
            nodes: AtomicU64::new(1),
        }
    }

    /// How many live nodes share the quotas from now on.
    pub fn set_nodes(&self, nodes: u32) {
        self.nodes.store(u64::from(nodes.max(1)), Ordering::Relaxed);
    }

    /// This node's share of `limit`.
    fn share(&self, limit: u64) -> u64 {
        (limit / self.nodes.load(Ordering::Relaxed).max(1)).max(1)
    }

    /// Counts a retry of `flow` decided at `now`, or refuses it when either
    /// quota of this hour is spent (a refused retry is not counted).
    pub fn admit(&self, flow: &str, now: Timestamp) -> Result<(), OverQuota> {
        if !self.config.is_set() {
            return Ok(());
        }
        let hour = now.as_millisecond().div_euclid(HOUR_MS);
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if window.hour != hour {
            *window = Window {
                hour,
                ..Window::default()
            };
        }
        let until = window_end(now);
        if self
            .config
            .per_hour
            .is_some_and(|limit| window.total >= self.share(limit))
        {
            return Err(OverQuota {
                scope: QuotaScope::Node,
                until,
            });
        }
        let limit = self
            .config
            .flows
            .get(flow)
            .copied()
            .or(self.config.per_flow_per_hour);
        let used = window.per_flow.get(flow).copied().unwrap_or(0);
        if limit.is_some_and(|limit| used >= self.share(limit)) {
            return Err(OverQuota {
                scope: QuotaScope::Flow,
                until,
            });
        }
        window.total += 1;
        *window.per_flow.entry(flow.to_string()).or_insert(0) += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_flow_over_its_quota_waits_for_the_next_hour() {
        let quotas = RetryQuotas::new(QuotaConfig {
            per_hour: Some(10),
            per_flow_per_hour: Some(2),
            flows: [("big".to_string(), 5)].into_iter().collect(),
        });
        let now = at("2026-11-23T05:20:00Z");
        assert!(quotas.admit("a", now).is_ok());
        assert!(quotas.admit("a", now).is_ok());
        assert_eq!(
            quotas.admit("a", now),
            Err(OverQuota {
                scope: QuotaScope::Flow,
                until: at("2026-11-23T06:00:00Z")
            })
        );
        // Another flow has its own count; `big` its own limit.
        for _ in 0..5 {
            assert!(quotas.admit("big", now).is_ok());
        }
        assert!(quotas.admit("big", now).is_err());
        assert!(quotas.admit("b", now).is_ok());
        // The node's quota: 2 + 5 + 1 used, 2 left.
        assert!(quotas.admit("c", now).is_ok());
        assert!(quotas.admit("c", now).is_ok());
        assert_eq!(
            quotas.admit("d", now).map_err(|e| e.scope),
            Err(QuotaScope::Node)
        );
        // A new hour starts afresh.
        assert!(quotas.admit("a", at("2026-11-23T06:00:00Z")).is_ok());
    }

    #[test]
    fn no_quota_is_set_by_default() {
        let quotas = RetryQuotas::new(QuotaConfig::default());
        let now = at("2026-11-23T05:20:00Z");
        for _ in 0..100_000 {
            assert!(quotas.admit("a", now).is_ok());
        }
    }

    #[test]
    fn a_flow_quota_alone_leaves_other_flows_free() {
        let quotas = RetryQuotas::new(QuotaConfig {
            flows: [("big".to_string(), 1)].into_iter().collect(),
            ..QuotaConfig::default()
        });
        let now = at("2026-11-23T05:20:00Z");
        assert!(quotas.admit("big", now).is_ok());
        assert!(quotas.admit("big", now).is_err());
        for _ in 0..5_000 {
            assert!(quotas.admit("other", now).is_ok());
        }
    }

    #[test]
    fn each_node_counts_against_its_share() {
        let quotas = RetryQuotas::new(QuotaConfig {
            per_hour: Some(10),
            ..QuotaConfig::default()
        });
        quotas.set_nodes(3);
        let now = at("2026-05-04T10:00:00Z");
        let admitted = (0..10).filter(|_| quotas.admit("f", now).is_ok()).count();
        assert_eq!(admitted, 3, "a third of 10, rounded down");
        quotas.set_nodes(20);
        assert!(
            quotas.admit("f", now).is_err(),
            "at least one each, already used"
        );
    }
}
