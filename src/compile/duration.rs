//! Durations (`500ms`, `2s`, `1m30s`, `1d`) and jitter (`20%`, `full`,
//! `none`) as written in policy files.
//!
//! A duration is one or more `<digits><unit>` groups with no spaces, units
//! from the largest down, each at most once: `ms`, `s`, `m`, `h`, `d`. A
//! bare number is refused: `30` could mean seconds or milliseconds.
//!
//! Jitter is a percentage from `0%` to `100%` (decimals allowed: `12.5%`),
//! `full` or `none`. A bare number such as `0.2` is refused for the same
//! reason: `0.2` and `20` would both look plausible and mean different
//! things.

use std::time::Duration;

use crate::model::Jitter;

/// A duration that cannot be read. `Display` does not include the text: the
/// caller quotes it, as written, so that no expanded value is shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("write a number and a unit (ms, s, m, h, d), e.g. `30s`")]
    Syntax,
    #[error("write each unit once, largest first, e.g. `1m30s`")]
    Order,
    #[error("too large; the longest a policy may say is `{MAX_DAYS}d`")]
    Overflow,
    #[error(
        "longer than {MAX_DAYS} days, the longest a policy may say; write at most `{MAX_DAYS}d`"
    )]
    TooLong,
}

/// The longest duration a policy may write: a year is past any sensible
/// delay, window or deadline, and sums of such durations stay far from the
/// end of representable time.
pub const MAX_DAYS: u64 = 365;
const MAX_MS: u64 = MAX_DAYS * 86_400_000;

/// The units, largest first, with their length in milliseconds.
const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let mut rest = text;
    if rest.is_empty() {
        return Err(DurationError::Syntax);
    }
    let mut total: u64 = 0;
    // Index into UNITS of the last unit used: the next must be smaller.
    let mut last: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let letters = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        if digits == 0 || letters == 0 {
            return Err(DurationError::Syntax);
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::Overflow)?;
        let unit = &rest[digits..digits + letters];
        let index = UNITS
            .iter()
            .position(|(name, _)| *name == unit)
            .ok_or(DurationError::Syntax)?;
        if last.is_some_and(|last| index <= last) {
            return Err(DurationError::Order);
        }
        last = Some(index);
        let millis = number
            .checked_mul(UNITS[index].1)
            .ok_or(DurationError::Overflow)?;
        total = total.checked_add(millis).ok_or(DurationError::Overflow)?;
        rest = &rest[digits + letters..];
    }
    if total > MAX_MS {
        return Err(DurationError::TooLong);
    }
    Ok(Duration::from_millis(total))
}

/// Writes a duration the way policy files do, to the millisecond:
/// `1h2m3s4ms`, `300ms`, `0s`. [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    let mut millis = d.as_millis();
    if millis == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, len) in UNITS {
        let len = u128::from(len);
        if millis >= len {
            out.push_str(&format!("{}{unit}", millis / len));
            millis %= len;
        }
    }
    out
}

/// Jitter that cannot be read; as with durations, the caller quotes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("write a percentage from 0% to 100% (e.g. `20%`), `full` or `none`")]
pub struct JitterError;

pub fn parse_jitter(text: &str) -> Result<Jitter, JitterError> {
    match text {
        "none" => return Ok(Jitter::None),
        "full" => return Ok(Jitter::Full),
        _ => {}
    }
    let number = text.strip_suffix('%').ok_or(JitterError)?;
    // `f64::from_str` takes `inf`, `nan` and `1e2`; a percentage is digits.
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(JitterError);
    }
    let percent: f64 = number.parse().map_err(|_| JitterError)?;
    if !(0.0..=100.0).contains(&percent) {
        return Err(JitterError);
    }
    Ok(Jitter::Proportional(percent / 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations_read_every_unit_and_combinations() {
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("2s"), Ok(ms(2_000)));
        assert_eq!(parse_duration("1m"), Ok(ms(60_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("1d"), Ok(ms(86_400_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1h2m3s4ms"), Ok(ms(3_723_004)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_what_to_write() {
        for bad in [
            "", "2", "2 s", " 2s", "2s ", "s", "2sec", "1.5s", "-1s", "2S", "1m 30s",
        ] {
            assert_eq!(parse_duration(bad), Err(DurationError::Syntax), "{bad:?}");
        }
        assert_eq!(parse_duration("30s1m"), Err(DurationError::Order));
        assert_eq!(parse_duration("1s1s"), Err(DurationError::Order));
        assert_eq!(
            parse_duration("99999999999999999999d"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("999999999999999d"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("365d"),
            Ok(Duration::from_secs(365 * 86_400))
        );
        assert_eq!(parse_duration("366d"), Err(DurationError::TooLong));
        assert_eq!(parse_duration("365d1ms"), Err(DurationError::TooLong));
        assert_eq!(parse_duration("4000000d"), Err(DurationError::TooLong));
        assert_eq!(
            parse_duration("18446744073709551615ms"),
            Err(DurationError::TooLong)
        );
        assert_eq!(
            DurationError::Syntax.to_string(),
            "write a number and a unit (ms, s, m, h, d), e.g. `30s`"
        );
    }

    #[test]
    fn durations_are_written_back_as_policy_files_write_them() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (ms(300), "300ms"),
            (ms(1_600), "1s600ms"),
            (ms(90_000), "1m30s"),
            (ms(3_723_004), "1h2m3s4ms"),
            (ms(86_400_000 * 2 + 3_600_000), "2d1h"),
            (Duration::from_nanos(1_999_999), "1ms"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(
                parse_duration(text).map(format_duration).as_deref(),
                Ok(text)
            );
        }
    }

    #[test]
    fn jitter_reads_percentages_full_and_none() {
        assert_eq!(parse_jitter("20%"), Ok(Jitter::Proportional(0.2)));
        assert_eq!(parse_jitter("0%"), Ok(Jitter::Proportional(0.0)));
        assert_eq!(parse_jitter("100%"), Ok(Jitter::Proportional(1.0)));
        assert_eq!(parse_jitter("12.5%"), Ok(Jitter::Proportional(0.125)));
        assert_eq!(parse_jitter("full"), Ok(Jitter::Full));
        assert_eq!(parse_jitter("none"), Ok(Jitter::None));
        for bad in [
            "0.2", "20", "101%", "-5%", "%", "inf%", "1e1%", "Full", "20 %",
        ] {
            assert_eq!(parse_jitter(bad), Err(JitterError), "{bad:?}");
        }
    }
}
