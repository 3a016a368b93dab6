//! Expected times and delays as test cases write them, and how a simulated
//! [`Span`] is checked against them.
//!
//! - `+2s`: exactly 2s after the first attempt (a `delay`: `2s`);
//! - `+2s±20%` or `+2s±400ms`: anywhere within those bounds (`+-` works
//!   too, for keyboards without `±`);
//! - `+1s600ms..+2s400ms`: a range, both ends included;
//! - an RFC 3339 time (`2026-05-04T10:00:02Z`), for `at` only.
//!
//! A check passes when every time the engine could choose (jitter's lowest
//! to highest) lies within the expected bounds, to the millisecond. So an
//! exact expectation fails against a jittered template, and says so.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

use crate::compile::{format_duration, parse_duration};
use crate::simulate::{offset, DurationSpan, Span};

/// Rounding of jittered delays stays below this.
const TOLERANCE: Duration = Duration::from_millis(1);

/// Bounds of a duration (a delay, or an offset from the first attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub lo: Duration,
    pub hi: Duration,
}

impl Bounds {
    pub fn exact(d: Duration) -> Self {
        Self { lo: d, hi: d }
    }

    /// Whether `[lo, hi]` lies within these bounds.
    pub fn contains(&self, lo: Duration, hi: Duration) -> bool {
        lo.saturating_add(TOLERANCE) >= self.lo && hi <= self.hi.saturating_add(TOLERANCE)
    }
}

/// An expression that cannot be read; `Display` says what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("write a time after the first attempt such as `+2s`, `+2s±20%`, `+1s..+3s`, or an RFC 3339 time")]
    At,
    #[error("write a duration such as `2s`, `2s±20%`, `2s±500ms` or `1s..3s`")]
    Delay,
    #[error("`{0}` is before the case's start")]
    BeforeStart(String),
    #[error("the range's end is before its start")]
    Reversed,
}

/// Reads an `at` expression; times are offsets from `start`.
pub fn parse_at(text: &str, start: Timestamp) -> Result<Bounds, ExprError> {
    let text = text.trim();
    if !text.starts_with('+') {
        let at: Timestamp = text.parse().map_err(|_| ExprError::At)?;
        if at < start {
            return Err(ExprError::BeforeStart(text.to_string()));
        }
        return Ok(Bounds::exact(offset(start, at)));
    }
    let parts = match text.split_once("..") {
        Some((lo, hi)) => {
            let (Some(lo), Some(hi)) = (lo.strip_prefix('+'), hi.strip_prefix('+')) else {
                return Err(ExprError::At);
            };
            Range::Two(lo, hi)
        }
        None => Range::One(&text[1..]),
    };
    bounds(parts).map_err(|e| {
        if e == ExprError::Delay {
            ExprError::At
        } else {
            e
        }
    })
}

/// Reads a `delay` expression.
pub fn parse_delay(text: &str) -> Result<Bounds, ExprError> {
    let text = text.trim();
    match text.split_once("..") {
        Some((lo, hi)) => bounds(Range::Two(lo, hi)),
        None => bounds(Range::One(text)),
    }
}

enum Range<'a> {
    One(&'a str),
    Two(&'a str, &'a str),
}

fn bounds(range: Range<'_>) -> Result<Bounds, ExprError> {
    let duration = |s: &str| parse_duration(s.trim()).map_err(|_| ExprError::Delay);
    match range {
        Range::Two(lo, hi) => {
            let (lo, hi) = (duration(lo)?, duration(hi)?);
            if hi < lo {
                return Err(ExprError::Reversed);
            }
            Ok(Bounds { lo, hi })
        }
        Range::One(text) => {
            let split = text.split_once('±').or_else(|| text.split_once("+-"));
            let Some((center, spread)) = split else {
                return Ok(Bounds::exact(duration(text)?));
            };
            let center = duration(center)?;
            let spread = match spread.trim().strip_suffix('%') {
                Some(percent) => {
                    if percent.is_empty()
                        || !percent.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                    {
                        return Err(ExprError::Delay);
                    }
                    let p: f64 = percent.parse().map_err(|_| ExprError::Delay)?;
                    Duration::try_from_secs_f64(center.as_secs_f64() * p / 100.0)
                        .map_err(|_| ExprError::Delay)?
                }
                None => duration(spread)?,
            };
            Ok(Bounds {
                lo: center.saturating_sub(spread),
                hi: center.saturating_add(spread),
            })
        }
    }
}

/// A simulated time as an offset from `start`: `+2s`, or `+1s600ms..+2s400ms`.
pub struct ShowAt<'a>(pub Timestamp, pub &'a Span);

impl fmt::Display for ShowAt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (start, span) = (self.0, self.1);
        let lo = format_duration(offset(start, span.lo));
        if span.is_exact() {
            write!(f, "+{lo}")
        } else {
            write!(f, "+{lo}..+{}", format_duration(offset(start, span.hi)))
        }
    }
}

/// A simulated delay: `2s`, or `1s600ms..2s400ms`.
pub struct ShowDelay<'a>(pub &'a DurationSpan);

impl fmt::Display for ShowDelay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_exact() {
            f.write_str(&format_duration(d.mid))
        } else {
            write!(f, "{}..{}", format_duration(d.lo), format_duration(d.hi))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn start() -> Timestamp {
        "2026-05-04T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn at_reads_offsets_spreads_ranges_and_times() {
        let b = |lo, hi| {
            Ok(Bounds {
                lo: ms(lo),
                hi: ms(hi),
            })
        };
        assert_eq!(parse_at("+2s", start()), b(2000, 2000));
        assert_eq!(parse_at("+0s", start()), b(0, 0));
        assert_eq!(parse_at("+2s±20%", start()), b(1600, 2400));
        assert_eq!(parse_at("+2s+-20%", start()), b(1600, 2400));
        assert_eq!(parse_at("+2s±500ms", start()), b(1500, 2500));
        assert_eq!(parse_at("+1s..+3s", start()), b(1000, 3000));
        assert_eq!(parse_at("2026-05-04T10:00:30Z", start()), b(30_000, 30_000));
        assert_eq!(parse_at("+1s±200%", start()), b(0, 3000));
    }

    #[test]
    fn bad_expressions_say_what_to_write() {
        for bad in ["2s", "+2", "+2s±", "+2s±x%", "+1s..3s", "soon", "+2s±20"] {
            assert_eq!(parse_at(bad, start()), Err(ExprError::At), "{bad}");
        }
        assert_eq!(
            parse_at("2026-05-04T09:00:00Z", start()),
            Err(ExprError::BeforeStart("2026-05-04T09:00:00Z".into()))
        );
        assert_eq!(parse_at("+3s..+1s", start()), Err(ExprError::Reversed));
        for bad in ["+2s", "2", "2s±", "fast"] {
            assert_eq!(parse_delay(bad), Err(ExprError::Delay), "{bad}");
        }
        assert_eq!(parse_delay("30s"), Ok(Bounds::exact(ms(30_000))));
        assert_eq!(
            parse_delay("1s..3s"),
            Ok(Bounds {
                lo: ms(1000),
                hi: ms(3000)
            })
        );
    }

    #[test]
    fn a_span_must_lie_within_the_bounds_to_the_millisecond() {
        let b = Bounds {
            lo: ms(1600),
            hi: ms(2400),
        };
        assert!(b.contains(ms(1600), ms(2400)));
        assert!(b.contains(Duration::from_nanos(1_599_999_999), ms(2400)));
        assert!(b.contains(ms(2000), ms(2000)));
        assert!(!b.contains(ms(1500), ms(2000)));
        assert!(!b.contains(ms(2000), ms(2500)));
        assert!(!Bounds::exact(ms(2000)).contains(ms(1600), ms(2400)));
    }

    #[test]
    fn spans_show_as_offsets() {
        let s = start();
        let exact = Span::exact(s + jiff::SignedDuration::from_millis(2000));
        assert_eq!(ShowAt(s, &exact).to_string(), "+2s");
        let spread = Span {
            lo: s + jiff::SignedDuration::from_millis(1600),
            mid: s + jiff::SignedDuration::from_millis(2000),
            hi: s + jiff::SignedDuration::from_millis(2400),
        };
        assert_eq!(ShowAt(s, &spread).to_string(), "+1s600ms..+2s400ms");
    }
}
