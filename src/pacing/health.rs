//! The engine's health, green, yellow or red, from the lag of due jobs:
//! how late after its due time each claimed job starts (the scheduler
//! claims the earliest due first, so this is the age of the backlog). The
//! worst lag over the last [`WINDOW`] decides: under `yellow_lag` green,
//! under `red_lag` yellow, else red. Pure: the executor reports each lag
//! with its time, readers ask at a time.
//!
//! With `cut_retries` (on unless set off), in yellow retries get at most half
//! of each claim, in red a tenth (the store claims them earliest due first
//! up to that share, and fresh jobs, from an index of their own, for the
//! rest), so that a large retry backlog drains without starving what
//! arrives now.
//! [`publish`] sets the share on the step log every second.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// How far back the worst lag is looked for.
pub const WINDOW: Duration = Duration::from_secs(5);

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Green,
    Yellow,
    Red,
}

impl Level {
    /// As the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Green => "green",
            Level::Yellow => "yellow",
            Level::Red => "red",
        }
    }

    /// The value of `steadfast_engine_health`.
    pub fn gauge(self) -> f64 {
        match self {
            Level::Green => 0.0,
            Level::Yellow => 1.0,
            Level::Red => 2.0,
        }
    }
}

/// The lags past which the engine is yellow, then red, and whether
/// retries' share of claims is cut then (`[pacing]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub yellow_lag: Duration,
    pub red_lag: Duration,
    pub cut_retries: bool,
}

impl Default for Thresholds {
    /// The cut is on: under 500,000 retries made due at once, fresh jobs'
    /// p99 from submission to first attempt is 18 ms with it and 16.6 s
    /// without (BENCHMARKS.md, "Engine health pacing").
    fn default() -> Self {
        Self {
            yellow_lag: Duration::from_secs(1),
            red_lag: Duration::from_secs(10),
            cut_retries: true,
        }
    }
}

impl Level {
    /// The share of claims retries get at this level (`None`: no cut).
    pub fn retry_share(self) -> Option<f64> {
        match self {
            Level::Green => None,
            Level::Yellow => Some(0.5),
            Level::Red => Some(0.1),
        }
    }
}

/// The engine's health as of one moment, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    pub health: Level,
    /// The worst lag of a claimed job over the last five seconds.
    pub lag_ms: u64,
    pub yellow_lag_ms: u64,
    pub red_lag_ms: u64,
    /// The share of claims retries get now (1.0: no cut).
    pub retry_share: f64,
}

/// Recent lags, one per second at most (the worst of that second).
pub struct EngineHealth {
    thresholds: Thresholds,
    recent: Mutex<VecDeque<(i64, Duration)>>,
}

impl EngineHealth {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// A job claimed at `at` started `lag` after its due time.
    pub fn observe(&self, lag: Duration, at: Timestamp) {
        let second = at.as_second();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        match recent.back_mut() {
            Some((last, worst)) if *last == second => *worst = (*worst).max(lag),
            _ => recent.push_back((second, lag)),
        }
        let oldest = second - WINDOW.as_secs() as i64;
        while recent.front().is_some_and(|(s, _)| *s < oldest) {
            recent.pop_front();
        }
    }

    /// The health at `now`: no claim within the window is green (nothing
    /// due waited).
    pub fn report(&self, now: Timestamp) -> Report {
        let oldest = now.as_second() - WINDOW.as_secs() as i64;
        let lag = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(second, _)| *second >= oldest)
            .map(|(_, lag)| *lag)
            .max()
            .unwrap_or(Duration::ZERO);
        let health = if lag < self.thresholds.yellow_lag {
            Level::Green
        } else if lag < self.thresholds.red_lag {
            Level::Yellow
        } else {
            Level::Red
        };
        let share = health.retry_share().filter(|_| self.thresholds.cut_retries);
        Report {
            health,
            lag_ms: lag.as_millis() as u64,
            yellow_lag_ms: self.thresholds.yellow_lag.as_millis() as u64,
            red_lag_ms: self.thresholds.red_lag.as_millis() as u64,
            retry_share: share.unwrap_or(1.0),
        }
    }
}

impl Default for EngineHealth {
    fn default() -> Self {
        Self::new(Thresholds::default())
    }
}

/// Every second until shutdown: sets `steadfast_engine_health` (so that an
/// engine gone idle turns green without a claim) and the retries' share of
/// the step log's claims.
pub async fn publish(
    health: std::sync::Arc<EngineHealth>,
    store: crate::store::SharedStepLog,
    clock: crate::clock::SharedClock,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let now = clock.now();
        let report = health.report(now);
        let level = report.health;
        store.set_retry_share((report.retry_share < 1.0).then_some(report.retry_share));
        // Asked for each time: the metrics recorder may be installed after
        // the engine starts.
        metrics::gauge!("steadfast_engine_health").set(level.gauge());
        if last.is_some_and(|l| l != level) {
            tracing::info!(health = ?level, "engine health changed");
        }
        last = Some(level);
        let sleep = clock.sleep_until(now + crate::lifecycle::signed(Duration::from_secs(1)));
        tokio::select! {
            _ = sleep => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    #[test]
    fn a_backlog_turns_the_engine_yellow_then_red_then_green() {
        let health = EngineHealth::default();
        assert_eq!(health.report(at(0)).health, Level::Green, "idle");
        health.observe(Duration::from_millis(20), at(0));
        assert_eq!(health.report(at(0)).health, Level::Green);
        // A backlog builds: its jobs start later and later.
        health.observe(Duration::from_millis(2_500), at(1));
        assert_eq!(health.report(at(1)).health, Level::Yellow);
        health.observe(Duration::from_secs(12), at(2));
        let red = health.report(at(2));
        assert_eq!((red.health, red.lag_ms), (Level::Red, 12_000));
        // It drains: jobs start on time again; the worst of the last five
        // seconds still says red until it is older than that.
        for second in 3..=7 {
            health.observe(Duration::from_millis(5), at(second));
        }
        assert_eq!(health.report(at(7)).health, Level::Red);
        health.observe(Duration::from_millis(5), at(8));
        assert_eq!(health.report(at(8)).health, Level::Green);
        // And with nothing claimed at all, green.
        assert_eq!(health.report(at(100)).health, Level::Green);
    }

    #[test]
    fn thresholds_come_from_the_settings() {
        let thresholds = Thresholds {
            yellow_lag: Duration::from_millis(100),
            red_lag: Duration::from_millis(500),
            cut_retries: true,
        };
        let health = EngineHealth::new(thresholds);
        health.observe(Duration::from_millis(200), at(0));
        let report = health.report(at(0));
        assert_eq!(report.health, Level::Yellow);
        assert_eq!((report.yellow_lag_ms, report.red_lag_ms), (100, 500));
        assert_eq!(report.retry_share, 0.5);
        health.observe(Duration::from_secs(1), at(0));
        assert_eq!(health.report(at(0)).retry_share, 0.1);
        // Pacing off: measured, not acted on.
        let off = EngineHealth::new(Thresholds {
            cut_retries: false,
            ..thresholds
        });
        off.observe(Duration::from_secs(1), at(0));
        let report = off.report(at(0));
        assert_eq!((report.health, report.retry_share), (Level::Red, 1.0));
    }
}
