//! Delays between attempts.
//!
//! Retry `n` (1-based: the first retry follows the first attempt) waits:
//!
//! - exponential: `initial × multiplier^(n−1)`, capped at `max_interval`;
//! - fixed: `initial` every time;
//! - schedule: the `n`-th entry of the list (the last does not repeat).
//!
//! Jitter then spreads the delay (±p, or anywhere in `[0, delay]` for
//! `full`), and never pushes it past `max_interval`.

use std::time::Duration;

use jiff::Timestamp;

use crate::model::{Backoff, Jitter, RetryTemplate};

/// The delay before retry `retry` (1-based) before jitter, or `None` when the
/// template allows no such retry.
pub fn nominal_delay(template: &RetryTemplate, retry: u32) -> Option<Duration> {
    if retry == 0 || retry > template.retries {
        return None;
    }
    let base = match &template.backoff {
        Backoff::Exponential {
            initial,
            multiplier,
        } => {
            let exponent = i32::try_from(retry - 1).unwrap_or(i32::MAX);
            let secs = initial.as_secs_f64() * multiplier.powi(exponent);
            duration_from_secs(secs)
        }
        Backoff::Fixed { interval } => *interval,
        Backoff::Schedule { delays } => *delays.get(retry as usize - 1)?,
    };
    Some(cap(template, base))
}

/// The delay before retry `retry` with jitter applied; `sample` is uniform in
/// `[0, 1)`.
pub fn delay_before_retry(template: &RetryTemplate, retry: u32, sample: f64) -> Option<Duration> {
    let base = nominal_delay(template, retry)?;
    let sample = sample.clamp(0.0, 1.0);
    let jittered = match template.jitter {
        Jitter::None => base,
        Jitter::Full => duration_from_secs(base.as_secs_f64() * sample),
        Jitter::Proportional(fraction) => {
            let factor = 1.0 + fraction * (2.0 * sample - 1.0);
            duration_from_secs(base.as_secs_f64() * factor)
        }
    };
    Some(cap(template, jittered))
}

fn cap(template: &RetryTemplate, delay: Duration) -> Duration {
    match template.max_interval {
        Some(max) => delay.min(max),
        None => delay,
    }
}

fn duration_from_secs(secs: f64) -> Duration {
    // An overflowing exponent is "forever"; the cap brings it back.
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
}

/// Reads a `Retry-After` header: delay-seconds or an HTTP date. A date in the
/// past means "now".
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = date.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(name: &str) -> RetryTemplate {
        RetryTemplate::builtin(name).expect("built-in template")
    }

    fn nominal_series(template: &RetryTemplate) -> Vec<u64> {
        (1..=template.retries + 1)
            .map_while(|n| nominal_delay(template, n))
            .map(|d| d.as_secs())
            .collect()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn builtin_templates_space_retries_as_documented() {
        assert_eq!(nominal_series(&builtin("conservative")), vec![5, 5]);
        assert_eq!(nominal_series(&builtin("standard")), vec![2, 4, 8]);
        assert_eq!(nominal_series(&builtin("aggressive")), vec![1, 2, 4, 8, 16]);
    }

    #[test]
    fn no_delay_beyond_the_last_retry_or_before_the_first() {
        let t = builtin("standard");
        assert_eq!(nominal_delay(&t, 0), None);
        assert_eq!(nominal_delay(&t, 4), None);
        assert_eq!(delay_before_retry(&t, 4, 0.5), None);
    }

    #[test]
    fn builtin_jitter_stays_within_twenty_percent() {
        let t = builtin("aggressive");
        for retry in 1..=5 {
            let nominal = nominal_delay(&t, retry).unwrap().as_secs_f64();
            for i in 0..=100 {
                let d = delay_before_retry(&t, retry, f64::from(i) / 100.0)
                    .unwrap()
                    .as_secs_f64();
                assert!(
                    d >= nominal * 0.8 - 1e-9 && d <= nominal * 1.2 + 1e-9,
                    "{d}"
                );
            }
        }
        assert_eq!(
            (
                delay_before_retry(&t, 1, 0.0),
                delay_before_retry(&t, 1, 1.0)
            ),
            (
                Some(Duration::from_millis(800)),
                Some(Duration::from_millis(1200))
            )
        );
    }

    #[test]
    fn exponential_is_capped_at_max_interval() {
        let mut t = builtin("standard");
        t.retries = 10;
        t.max_interval = Some(secs(60));
        t.jitter = Jitter::None;
        assert_eq!(
            nominal_series(&t),
            vec![2, 4, 8, 16, 32, 60, 60, 60, 60, 60]
        );
    }

    #[test]
    fn jitter_never_exceeds_max_interval() {
        let mut t = builtin("standard");
        t.retries = 8;
        t.max_interval = Some(secs(60));
        // 2^5 × 2 = 64 → capped to 60; +20% must not lift it above 60.
        for i in 0..=10 {
            let d = delay_before_retry(&t, 6, f64::from(i) / 10.0).unwrap();
            assert!(d <= secs(60), "{d:?}");
        }
        assert_eq!(delay_before_retry(&t, 6, 1.0), Some(secs(60)));
        assert_eq!(delay_before_retry(&t, 6, 0.0), Some(secs(48)));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_delay() {
        let mut t = builtin("standard");
        t.jitter = Jitter::Full;
        assert_eq!(delay_before_retry(&t, 3, 0.0), Some(Duration::ZERO));
        assert_eq!(delay_before_retry(&t, 3, 0.5), Some(secs(4)));
        assert_eq!(delay_before_retry(&t, 3, 1.0), Some(secs(8)));
    }

    #[test]
    fn schedule_follows_the_list_and_does_not_repeat_the_last() {
        let t = RetryTemplate {
            name: "nightly".into(),
            retries: 5,
            backoff: Backoff::Schedule {
                delays: vec![
                    secs(60),
                    secs(300),
                    secs(3600),
                    secs(5 * 3600),
                    secs(12 * 3600),
                ],
            },
            max_interval: None,
            total_timeout: None,
            jitter: Jitter::None,
            retry_after_cap: RetryTemplate::DEFAULT_RETRY_AFTER_CAP,
            adapt: None,
        };
        assert_eq!(nominal_series(&t), vec![60, 300, 3600, 18000, 43200]);
        assert_eq!(nominal_delay(&t, 6), None);
    }

    #[test]
    fn huge_exponents_saturate_then_cap() {
        let t = RetryTemplate {
            name: "wild".into(),
            retries: 2000,
            backoff: Backoff::Exponential {
                initial: secs(1),
                multiplier: 10.0,
            },
            max_interval: Some(secs(3600)),
            total_timeout: None,
            jitter: Jitter::Proportional(0.2),
            retry_after_cap: secs(3600),
            adapt: None,
        };
        assert_eq!(delay_before_retry(&t, 2000, 0.99), Some(secs(3600)));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(parse_retry_after(" 7 ", now), Some(secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 01 Mar 2026 12:01:30 GMT", now),
            Some(secs(90))
        );
        assert_eq!(
            parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
