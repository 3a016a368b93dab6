//! Pools: a channel whose attempts each go to one of its members, chosen
//! by `round_robin`, `weighted` (smooth weighted round robin: a member of
//! weight 3 gets three attempts for one of weight 1, interleaved) or
//! `healthiest` (the best recent success rate, then the lowest latency),
//! skipping members whose circuit breaker is open. The state is per node:
//! counters and each member's recent health, fed by every attempt the node
//! makes on a member. Until this node has made [`LOCAL_ENOUGH`] attempts on
//! a member, `healthiest` reads the member's last hour from the channel
//! insights every node shares ([`Pools::set_shared`]), so that a node just
//! started, or one that rarely uses a member, does not judge it on nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;

use super::breaker::Breakers;
use crate::model::{Pool, PoolStrategy};

/// How much one attempt moves a member's health averages: about the last
/// 20 attempts count.
const HEALTH_WEIGHT: f64 = 0.1;

/// This node's attempts on a member from which its own averages speak
/// for it (before: the shared insights, when they have as many).
pub const LOCAL_ENOUGH: u64 = 20;

/// One member's recent health.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    /// Moving average of successes (1) and failures (0).
    pub success: f64,
    /// Moving average of attempt latency, in seconds.
    pub latency: f64,
    pub attempts: u64,
}

impl Default for Health {
    /// A member not tried yet looks perfect, so that it gets tried.
    fn default() -> Self {
        Self {
            success: 1.0,
            latency: 0.0,
            attempts: 0,
        }
    }
}

/// The choice made for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Member(String),
    /// Every member's breaker is open: the first lets a probe through at
    /// `until`.
    AllOpen {
        until: Timestamp,
    },
}

#[derive(Default)]
struct PoolState {
    /// Round robin: the next member to start from.
    next: usize,
    /// Weighted: each member's current weight (smooth weighted round robin).
    current: Vec<i64>,
}

/// Every pool's counters and every channel's health, on this node.
#[derive(Default)]
pub struct Pools {
    pools: Mutex<HashMap<String, PoolState>>,
    health: Mutex<HashMap<String, Health>>,
    /// Each member's last hour from the shared insights.
    shared: Mutex<HashMap<String, Health>>,
}

impl Pools {
    /// Records an attempt on channel `member` (any channel: a pool may
    /// name it later).
    pub fn record(&self, member: &str, success: bool, latency: Duration) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let h = health.entry(member.to_string()).or_default();
        let sample = if success { 1.0 } else { 0.0 };
        if h.attempts == 0 {
            *h = Health {
                success: sample,
                latency: latency.as_secs_f64(),
                attempts: 1,
            };
        } else {
            h.success += HEALTH_WEIGHT * (sample - h.success);
            h.latency += HEALTH_WEIGHT * (latency.as_secs_f64() - h.latency);
            h.attempts += 1;
        }
    }

    /// The health `healthiest` judges `member` by: this node's own
    /// averages once it has [`LOCAL_ENOUGH`] attempts, else the shared
    /// insights' when they have as many, else what this node has.
    pub fn health(&self, member: &str) -> Health {
        let local = {
            let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
            health.get(member).copied().unwrap_or_default()
        };
        if local.attempts >= LOCAL_ENOUGH {
            return local;
        }
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        match shared.get(member) {
            Some(shared) if shared.attempts >= LOCAL_ENOUGH => *shared,
            _ => local,
        }
    }

    /// Sets `member`'s health from the insights every node shares.
    pub fn set_shared(&self, member: &str, health: Health) {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(member.to_string(), health);
    }

    /// The member of `pool` (named `name`) the next attempt goes to at
    /// `now`.
    pub fn pick(&self, name: &str, pool: &Pool, breakers: &Breakers, now: Timestamp) -> Pick {
        let open: Vec<Option<Timestamp>> = pool
            .members
            .iter()
            .map(|m| breakers.open_until(&m.name, now))
            .collect();
        // Every member open: the times they let a probe through. Otherwise
        // the members whose breaker is not open are the choice.
        let Some(until) = open.iter().copied().collect::<Option<Vec<_>>>() else {
            let closed: Vec<usize> = (0..pool.members.len())
                .filter(|&i| open[i].is_none())
                .collect();
            let chosen = match pool.strategy {
                PoolStrategy::RoundRobin => self.round_robin(name, pool, &closed),
                PoolStrategy::Weighted => self.weighted(name, pool, &closed),
                PoolStrategy::Healthiest => self.healthiest(name, pool, &closed),
            };
            return Pick::Member(pool.members[chosen].name.clone());
        };
        Pick::AllOpen {
            until: until.into_iter().min().unwrap_or(now),
        }
    }

    fn state<R>(&self, name: &str, f: impl FnOnce(&mut PoolState) -> R) -> R {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        f(pools.entry(name.to_string()).or_default())
    }

    /// The next member in order among `open` (indexes, ascending,
    /// non-empty).
    fn round_robin(&self, name: &str, pool: &Pool, open: &[usize]) -> usize {
        self.state(name, |state| {
            let n = pool.members.len();
            let start = state.next % n;
            let chosen = (0..n)
                .map(|k| (start + k) % n)
                .find(|i| open.contains(i))
                .unwrap_or(open[0]);
            state.next = chosen + 1;
            chosen
        })
    }

    /// Smooth weighted round robin over `open`: each member gains its
    /// weight, the richest is chosen and pays the total.
    fn weighted(&self, name: &str, pool: &Pool, open: &[usize]) -> usize {
        self.state(name, |state| {
            state.current.resize(pool.members.len(), 0);
            let total: i64 = open
                .iter()
                .map(|&i| i64::from(pool.members[i].weight))
                .sum();
            let mut best = open[0];
            for &i in open {
                state.current[i] += i64::from(pool.members[i].weight);
                if state.current[i] > state.current[best] {
                    best = i;
                }
            }
            state.current[best] -= total;
            best
        })
    }

    /// The best recent success rate, then the lowest latency; ties go round
    /// robin, so that equals share the load.
    fn healthiest(&self, name: &str, pool: &Pool, open: &[usize]) -> usize {
        let scores: Vec<(usize, Health)> = open
            .iter()
            .map(|&i| (i, self.health(&pool.members[i].name)))
            .collect();
        let best = scores
            .iter()
            .map(|(_, h)| h.success)
            .fold(f64::MIN, f64::max);
        // Within a few points of the best success rate, latency decides.
        let near: Vec<(usize, Health)> = scores
            .into_iter()
            .filter(|(_, h)| h.success >= best - 0.05)
            .collect();
        let fastest = near.iter().map(|(_, h)| h.latency).fold(f64::MAX, f64::min);
        let tied: Vec<usize> = near
            .iter()
            .filter(|(_, h)| h.latency <= fastest * 1.2 + 0.005)
            .map(|(i, _)| *i)
            .collect();
        self.round_robin(name, pool, &tied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PoolMember;

    fn pool(strategy: PoolStrategy, members: &[(&str, u32)]) -> Pool {
        Pool {
            strategy,
            members: members
                .iter()
                .map(|(name, weight)| PoolMember {
                    name: name.to_string(),
                    weight: *weight,
                })
                .collect(),
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn picks(pools: &Pools, p: &Pool, breakers: &Breakers, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| match pools.pick("p", p, breakers, now()) {
                Pick::Member(m) => m,
                Pick::AllOpen { .. } => "-".to_string(),
            })
            .collect()
    }

    #[test]
    fn healthiest_reads_the_shared_history_until_this_node_has_its_own() {
        let p = pool(PoolStrategy::Healthiest, &[("a", 1), ("b", 1)]);
        let pools = Pools::default();
        let breakers = Breakers::new();
        // No attempts here yet: the cluster says `a` fails half the time.
        let shared = |success| Health {
            success,
            latency: 0.1,
            attempts: 500,
        };
        pools.set_shared("a", shared(0.5));
        pools.set_shared("b", shared(0.99));
        assert_eq!(picks(&pools, &p, &breakers, 4), ["b", "b", "b", "b"]);
        // Once this node has its own say on `a` (all successes), it counts.
        for _ in 0..LOCAL_ENOUGH {
            pools.record("a", true, Duration::from_millis(100));
        }
        assert_eq!(pools.health("a").success, 1.0);
        assert!(picks(&pools, &p, &breakers, 4).contains(&"a".to_string()));
    }

    #[test]
    fn round_robin_takes_turns() {
        let p = pool(PoolStrategy::RoundRobin, &[("a", 1), ("b", 1), ("c", 1)]);
        let got = picks(&Pools::default(), &p, &Breakers::new(), 6);
        assert_eq!(got, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn weighted_interleaves_by_weight() {
        let p = pool(PoolStrategy::Weighted, &[("a", 3), ("b", 1)]);
        let got = picks(&Pools::default(), &p, &Breakers::new(), 8);
        assert_eq!(got, ["a", "a", "b", "a", "a", "a", "b", "a"]);
        assert_eq!(got.iter().filter(|m| *m == "a").count(), 6);
    }

    #[test]
    fn healthiest_prefers_success_then_speed() {
        let pools = Pools::default();
        let p = pool(PoolStrategy::Healthiest, &[("a", 1), ("b", 1), ("c", 1)]);
        for _ in 0..10 {
            pools.record("a", false, Duration::from_millis(10));
            pools.record("b", true, Duration::from_millis(400));
            pools.record("c", true, Duration::from_millis(20));
        }
        assert_eq!(picks(&pools, &p, &Breakers::new(), 3), ["c", "c", "c"]);
        // `a` recovers and is as quick: the two share.
        for _ in 0..60 {
            pools.record("a", true, Duration::from_millis(20));
        }
        let got = picks(&pools, &p, &Breakers::new(), 4);
        assert!(
            got.contains(&"a".to_string()) && got.contains(&"c".to_string()),
            "{got:?}"
        );
        assert!(!got.contains(&"b".to_string()), "{got:?}");
    }
}
