//! What each channel's history says: hourly counts of attempts and
//! successes by attempt number, of error kinds, and a latency sketch. Each
//! node adds its own counts to the step log's `insight_counts` (the same
//! rows on every node, so the counts are shared), and anyone reading sums
//! the hours of a window: `GET /v1/channels/{name}/insights`, `steadfast
//! insights`, `adapt` templates and `healthiest` pools.
//!
//! Pure: [`Tally`] gathers one node's counts between two flushes, and
//! [`Insights::from_counts`] turns stored counts back into rates and
//! percentiles.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::store::InsightCount;

/// The counted kinds of one channel's hour.
pub mod metric {
    /// Attempts, keyed by attempt number.
    pub const ATTEMPTS: &str = "attempts";
    /// Successful attempts, keyed by attempt number.
    pub const SUCCESSES: &str = "successes";
    /// Failed attempts, keyed by error kind (`timeout`) or answer
    /// (`status:503`).
    pub const ERRORS: &str = "errors";
    /// Attempts, keyed by latency bucket (see [`super::bucket_of`]).
    pub const LATENCY: &str = "latency";
    /// A flow's jobs that ended in the hour, keyed by how (`succeeded`,
    /// `dead`); the row's `channel` names the flow. Not a channel's: the
    /// channel readers leave it out.
    pub const FLOW_ENDS: &str = "flow_ends";
}

/// The highest attempt number counted on its own; later ones count as
/// this one (a 30-retry schedule's tail says little apiece).
pub const MAX_ATTEMPT_NUMBER: u32 = 50;

const HOUR_MS: i64 = 3_600_000;

/// Latency buckets grow by a quarter from 1 ms: a percentile read from
/// them is within 12 % of the true one, up to about 11 minutes.
const BUCKET_GROWTH: f64 = 1.25;
const BUCKETS: u32 = 80;

/// The bucket of a latency.
pub fn bucket_of(latency: Duration) -> u32 {
    let ms = latency.as_secs_f64() * 1000.0;
    if ms <= 1.0 {
        return 0;
    }
    let bucket = (ms.ln() / BUCKET_GROWTH.ln()).ceil();
    (bucket as u32).min(BUCKETS - 1)
}

/// The upper bound of a bucket, in milliseconds.
pub fn bucket_upper_ms(bucket: u32) -> f64 {
    BUCKET_GROWTH.powi(bucket as i32)
}

/// The start of the hour `at` falls in, in milliseconds.
pub fn hour_of(at: Timestamp) -> i64 {
    at.as_millisecond().div_euclid(HOUR_MS) * HOUR_MS
}

/// One attempt, as insights count it.
#[derive(Debug, Clone)]
pub struct Counted<'a> {
    /// The channel that was sent to (a pool's member).
    pub channel: &'a str,
    /// 1-based, within its series on the channel.
    pub attempt: u32,
    pub success: bool,
    /// Why it failed: an error kind, or `status:NNN`; `None` on success.
    pub error: Option<String>,
    pub latency: Duration,
    pub finished: Timestamp,
}

/// One node's counts since its last flush.
#[derive(Debug, Default)]
pub struct Tally {
    counts: HashMap<(String, i64, &'static str, String), i64>,
}

impl Tally {
    pub fn add(&mut self, attempt: &Counted<'_>) {
        let hour = hour_of(attempt.finished);
        let number = attempt.attempt.clamp(1, MAX_ATTEMPT_NUMBER).to_string();
        let mut bump = |metric: &'static str, key: String| {
            *self
                .counts
                .entry((attempt.channel.to_string(), hour, metric, key))
                .or_insert(0) += 1;
        };
        bump(metric::ATTEMPTS, number.clone());
        if attempt.success {
            bump(metric::SUCCESSES, number);
        }
        if let Some(error) = &attempt.error {
            bump(metric::ERRORS, error.clone());
        }
        bump(metric::LATENCY, bucket_of(attempt.latency).to_string());
    }

    /// Counts a job of `flow` that ended (`how`: `succeeded` or `dead`).
    pub fn add_end(&mut self, flow: &str, at: Timestamp, how: &'static str) {
        *self
            .counts
            .entry((
                flow.to_string(),
                hour_of(at),
                metric::FLOW_ENDS,
                how.to_string(),
            ))
            .or_insert(0) += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The counts to add to the step log, leaving the tally empty.
    pub fn take(&mut self) -> Vec<InsightCount> {
        let mut counts: Vec<InsightCount> = self
            .counts
            .drain()
            .map(|((channel, hour, metric, key), count)| InsightCount {
                channel,
                hour,
                metric: metric.to_string(),
                key,
                count,
            })
            .collect();
        // One order on every node: concurrent upserts of the same rows
        // then lock them in the same order.
        counts.sort_by(|a, b| {
            (&a.channel, a.hour, &a.metric, &a.key).cmp(&(&b.channel, b.hour, &b.metric, &b.key))
        });
        counts
    }

    /// Puts counts back after a failed flush, to go with the next.
    pub fn restore(&mut self, counts: Vec<InsightCount>) {
        for count in counts {
            let metric = [
                metric::ATTEMPTS,
                metric::SUCCESSES,
                metric::ERRORS,
                metric::LATENCY,
                metric::FLOW_ENDS,
            ]
            .into_iter()
            .find(|m| *m == count.metric);
            if let Some(metric) = metric {
                *self
                    .counts
                    .entry((count.channel, count.hour, metric, count.key))
                    .or_insert(0) += count.count;
            }
        }
    }
}

/// Attempts and successes of one attempt number, or one hour of the week.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rate {
    pub attempts: i64,
    pub successes: i64,
    /// `successes / attempts`; `null` without attempts.
    pub success_rate: Option<f64>,
}

impl Rate {
    fn of(attempts: i64, successes: i64) -> Self {
        Rate {
            attempts,
            successes,
            success_rate: (attempts > 0).then(|| successes as f64 / attempts as f64),
        }
    }
}

/// A channel's history over a window, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Insights {
    pub channel: String,
    /// The first hour counted (the window reaches back to it).
    pub since: Timestamp,
    #[serde(flatten)]
    pub total: Rate,
    /// By attempt number within a series (`"1"`: first tries); the last,
    /// `"50"`, counts every later one too. (JSON keys are text: the
    /// document says so.)
    #[schema(value_type = BTreeMap<String, Rate>)]
    pub by_attempt: BTreeMap<u32, Rate>,
    /// By hour of the week in UTC, `mon 00` to `sun 23`, hours with
    /// attempts only.
    pub by_hour_of_week: BTreeMap<String, Rate>,
    /// Failed attempts by error kind or answer (`status:503`).
    pub errors: BTreeMap<String, i64>,
    /// Latency percentiles in milliseconds (within 12 %); `null` without
    /// attempts.
    pub latency_ms: Latency,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn hour_of_week(hour_ms: i64) -> String {
    // 1970-01-01 was a Thursday.
    let hours = hour_ms.div_euclid(HOUR_MS);
    let day = (hours.div_euclid(24) + 3).rem_euclid(7) as usize;
    format!("{} {:02}", DAYS[day], hours.rem_euclid(24))
}

impl Insights {
    /// Sums `counts` (one channel's, from `since` on).
    pub fn from_counts(channel: &str, since: Timestamp, counts: &[InsightCount]) -> Self {
        let mut by_number: BTreeMap<u32, (i64, i64)> = BTreeMap::new();
        let mut by_hour: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        let mut errors = BTreeMap::new();
        let mut buckets: BTreeMap<u32, i64> = BTreeMap::new();
        for count in counts {
            let number = || count.key.parse::<u32>().ok();
            match count.metric.as_str() {
                metric::ATTEMPTS => {
                    if let Some(n) = number() {
                        by_number.entry(n).or_default().0 += count.count;
                    }
                    by_hour.entry(count.hour).or_default().0 += count.count;
                }
                metric::SUCCESSES => {
                    if let Some(n) = number() {
                        by_number.entry(n).or_default().1 += count.count;
                    }
                    by_hour.entry(count.hour).or_default().1 += count.count;
                }
                metric::ERRORS => *errors.entry(count.key.clone()).or_insert(0) += count.count,
                metric::LATENCY => {
                    if let Some(bucket) = number() {
                        *buckets.entry(bucket).or_insert(0) += count.count;
                    }
                }
                _ => {}
            }
        }
        let mut week: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for (hour, (attempts, successes)) in by_hour {
            let slot = week.entry(hour_of_week(hour)).or_default();
            slot.0 += attempts;
            slot.1 += successes;
        }
        let attempts: i64 = by_number.values().map(|(a, _)| a).sum();
        let successes: i64 = by_number.values().map(|(_, s)| s).sum();
        Insights {
            channel: channel.to_string(),
            since,
            total: Rate::of(attempts, successes),
            by_attempt: by_number
                .into_iter()
                .map(|(n, (a, s))| (n, Rate::of(a, s)))
                .collect(),
            by_hour_of_week: week
                .into_iter()
                .map(|(slot, (a, s))| (slot, Rate::of(a, s)))
                .collect(),
            errors,
            latency_ms: Latency {
                p50: percentile(&buckets, 0.50),
                p99: percentile(&buckets, 0.99),
            },
        }
    }

    /// The first attempt number from which this history says retrying is
    /// not worth it: the attempts at that number (and every later one
    /// seen) number at least `min_samples` together and succeeded less
    /// than `stop_below` of the time. `None`: no cut (too few samples, or
    /// later attempts still succeed).
    pub fn cut(&self, min_samples: u64, stop_below: f64) -> Option<u32> {
        let mut cut = None;
        // From the last attempt number back: a number is cut when it and
        // everything after it fare below the bar.
        let (mut attempts, mut successes) = (0i64, 0i64);
        for (number, rate) in self.by_attempt.iter().rev() {
            if *number <= 1 {
                break;
            }
            attempts += rate.attempts;
            successes += rate.successes;
            let enough = u64::try_from(attempts).is_ok_and(|n| n >= min_samples);
            if enough && (successes as f64) < stop_below * attempts as f64 {
                cut = Some(*number);
            } else if enough {
                break;
            }
        }
        cut
    }
}

fn percentile(buckets: &BTreeMap<u32, i64>, q: f64) -> Option<f64> {
    let total: i64 = buckets.values().sum();
    if total <= 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as i64;
    let mut seen = 0;
    for (bucket, count) in buckets {
        seen += count;
        if seen >= rank {
            return Some((bucket_upper_ms(*bucket) * 10.0).round() / 10.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn attempt(number: u32, success: bool, ms: u64, finished: &str) -> Counted<'static> {
        Counted {
            channel: "acme",
            attempt: number,
            success,
            error: (!success).then(|| "status:503".to_string()),
            latency: Duration::from_millis(ms),
            finished: at(finished),
        }
    }

    #[test]
    fn latency_buckets_keep_percentiles_within_a_quarter() {
        for ms in [1u64, 2, 10, 47, 250, 1_000, 30_000] {
            let upper = bucket_upper_ms(bucket_of(Duration::from_millis(ms)));
            assert!(
                upper >= ms as f64 && upper < ms as f64 * 1.25 + 0.01,
                "{ms}: {upper}"
            );
        }
        assert_eq!(bucket_of(Duration::from_secs(100_000)), BUCKETS - 1);
    }

    #[test]
    fn a_tally_sums_back_into_rates_by_attempt_and_hour_of_week() {
        let mut tally = Tally::default();
        // Monday 2026-12-07, 09:xx UTC: three first tries, one succeeds;
        // two second tries, both succeed.
        tally.add(&attempt(1, true, 100, "2026-12-07T09:10:00Z"));
        tally.add(&attempt(1, false, 20, "2026-12-07T09:20:00Z"));
        tally.add(&attempt(1, false, 20, "2026-12-07T09:30:00Z"));
        tally.add(&attempt(2, true, 100, "2026-12-07T10:05:00Z"));
        tally.add(&attempt(2, true, 100, "2026-12-07T10:06:00Z"));
        let mut counts = tally.take();
        assert!(tally.is_empty());
        // A failed flush puts them back; the next takes them again.
        tally.restore(counts.clone());
        assert_eq!(tally.take(), counts);
        counts.retain(|c| c.channel == "acme");
        let insights = Insights::from_counts("acme", at("2026-12-07T00:00:00Z"), &counts);
        assert_eq!((insights.total.attempts, insights.total.successes), (5, 3));
        assert_eq!(insights.by_attempt[&1], Rate::of(3, 1));
        assert_eq!(insights.by_attempt[&2], Rate::of(2, 2));
        assert_eq!(insights.by_hour_of_week["mon 09"], Rate::of(3, 1));
        assert_eq!(insights.by_hour_of_week["mon 10"], Rate::of(2, 2));
        assert_eq!(insights.errors["status:503"], 2);
        assert_eq!(insights.latency_ms.p50, Some(108.4));
        assert_eq!(insights.latency_ms.p99, Some(108.4));
    }

    #[test]
    fn history_cuts_where_every_later_attempt_fares_below_the_bar() {
        let rates = |list: &[(u32, i64, i64)]| Insights {
            channel: "acme".into(),
            since: at("2026-12-01T00:00:00Z"),
            total: Rate::of(0, 0),
            by_attempt: list
                .iter()
                .map(|(n, a, s)| (*n, Rate::of(*a, *s)))
                .collect(),
            by_hour_of_week: BTreeMap::new(),
            errors: BTreeMap::new(),
            latency_ms: Latency {
                p50: None,
                p99: None,
            },
        };
        // Attempts past the third never succeed.
        let history = rates(&[
            (1, 1000, 600),
            (2, 400, 200),
            (3, 200, 50),
            (4, 150, 0),
            (5, 150, 0),
        ]);
        assert_eq!(history.cut(200, 0.01), Some(4));
        // Too few samples: no cut.
        assert_eq!(history.cut(1000, 0.01), None);
        // A late attempt that still succeeds keeps everything before it.
        let late = rates(&[(1, 1000, 600), (2, 400, 0), (3, 400, 0), (4, 400, 100)]);
        assert_eq!(late.cut(200, 0.01), None);
        // The first attempt is never cut.
        let never = rates(&[(1, 1000, 0)]);
        assert_eq!(never.cut(10, 0.5), None);
    }
}
