//! Half-open windows of real time, the set operations the calendar needs on
//! sorted lists of them, and the one rule that turns a range of local wall
//! time into a window (see [`resolve`]).

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// A window of real time, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    /// Whether `at` is inside: `start <= at < end`.
    pub fn contains(&self, at: Timestamp) -> bool {
        self.start <= at && at < self.end
    }

    /// The real time between start and end.
    pub fn duration(&self) -> SignedDuration {
        self.end.duration_since(self.start)
    }

    fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Sorts, drops empty windows and joins those that overlap or touch, so that
/// the result is disjoint and a gap between two windows is real.
pub(super) fn merge(mut windows: Vec<Window>) -> Vec<Window> {
    windows.retain(|window| !window.is_empty());
    windows.sort_unstable();
    let mut merged: Vec<Window> = Vec::with_capacity(windows.len());
    for window in windows {
        match merged.last_mut() {
            Some(last) if window.start <= last.end => last.end = last.end.max(window.end),
            _ => merged.push(window),
        }
    }
    merged
}

/// The parts of `windows` inside `[lo, hi)`.
pub(super) fn clip(windows: &[Window], lo: Timestamp, hi: Timestamp) -> Vec<Window> {
    windows
        .iter()
        .map(|window| Window {
            start: window.start.max(lo),
            end: window.end.min(hi),
        })
        .filter(|window| !window.is_empty())
        .collect()
}

/// `kept` minus `removed`; both merged (sorted, disjoint), and so is the
/// result.
pub(super) fn subtract(kept: &[Window], removed: &[Window]) -> Vec<Window> {
    let mut result = Vec::with_capacity(kept.len());
    let mut removed = removed.iter().peekable();
    for window in kept {
        let mut start = window.start;
        // Windows that end before this one starts cannot cut any later one.
        while removed.next_if(|cut| cut.end <= start).is_some() {}
        for cut in removed.clone() {
            if cut.start >= window.end {
                break;
            }
            if cut.start > start {
                result.push(Window {
                    start,
                    end: cut.start,
                });
            }
            start = start.max(cut.end);
            if start >= window.end {
                break;
            }
        }
        if start < window.end {
            result.push(Window {
                start,
                end: window.end,
            });
        }
    }
    result
}

/// The window of real time that the local range `[start, end)` occupies in
/// `timezone`: from the first instant the wall clock shows `start` to the
/// last instant it shows `end`.
///
/// - A time skipped by a spring-forward gap resolves forward, to the instant
///   the gap ends; so a range wholly inside the gap is empty (`None`).
/// - A time shown twice in a fall-back overlap counts from its first showing
///   at the start of a range and to its second showing at the end; so a
///   range across the repeated hour lasts its real elapsed length, and a
///   window is never split in two.
///
/// `None` also for dates beyond jiff's range, which only a query near
/// `Timestamp::MIN` or `MAX` can reach.
pub(super) fn resolve(timezone: &TimeZone, start: DateTime, end: DateTime) -> Option<Window> {
    let window = Window {
        start: first_showing(timezone, start)?,
        end: last_showing(timezone, end)?,
    };
    (!window.is_empty()).then_some(window)
}

fn first_showing(timezone: &TimeZone, local: DateTime) -> Option<Timestamp> {
    match timezone.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(local).ok(),
        // The earlier of two showings is the one under the larger offset.
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(local).ok(),
        AmbiguousOffset::Gap { before, after } => gap_end(timezone, local, before, after),
    }
}

fn last_showing(timezone: &TimeZone, local: DateTime) -> Option<Timestamp> {
    match timezone.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(local).ok(),
        AmbiguousOffset::Fold { after, .. } => after.to_timestamp(local).ok(),
        AmbiguousOffset::Gap { before, after } => gap_end(timezone, local, before, after),
    }
}

/// The instant a gap containing `local` ends. Read with the offset after the
/// gap, `local` lands before the transition; with the offset before it, at or
/// after it: the transition is the first one following the former.
fn gap_end(
    timezone: &TimeZone,
    local: DateTime,
    before: jiff::tz::Offset,
    after: jiff::tz::Offset,
) -> Option<Timestamp> {
    let too_early = after.to_timestamp(local).ok()?;
    let not_early = before.to_timestamp(local).ok()?;
    let transition = timezone
        .following(too_early)
        .next()
        .map(|transition| transition.timestamp())
        .filter(|&transition| transition <= not_early);
    // Without a transition in between, the offsets disagree with the zone's
    // own table; the later reading is the safe, forward-resolving answer.
    Some(transition.unwrap_or(not_early))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn window(start: &str, end: &str) -> Window {
        Window {
            start: ts(start),
            end: ts(end),
        }
    }

    #[test]
    fn merge_joins_overlapping_and_touching() {
        let merged = merge(vec![
            window("2026-01-01T05:00:00Z", "2026-01-01T06:00:00Z"),
            window("2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"),
            window("2026-01-01T02:00:00Z", "2026-01-01T03:00:00Z"),
            window("2026-01-01T01:30:00Z", "2026-01-01T01:45:00Z"),
            window("2026-01-01T07:00:00Z", "2026-01-01T07:00:00Z"),
        ]);
        assert_eq!(
            merged,
            [
                window("2026-01-01T01:00:00Z", "2026-01-01T03:00:00Z"),
                window("2026-01-01T05:00:00Z", "2026-01-01T06:00:00Z"),
            ]
        );
    }

    #[test]
    fn subtract_cuts_holes_and_ends() {
        let kept = [
            window("2026-01-01T00:00:00Z", "2026-01-01T10:00:00Z"),
            window("2026-01-01T12:00:00Z", "2026-01-01T14:00:00Z"),
        ];
        let removed = [
            window("2025-12-31T00:00:00Z", "2026-01-01T01:00:00Z"),
            window("2026-01-01T03:00:00Z", "2026-01-01T04:00:00Z"),
            window("2026-01-01T09:00:00Z", "2026-01-01T13:00:00Z"),
        ];
        assert_eq!(
            subtract(&kept, &removed),
            [
                window("2026-01-01T01:00:00Z", "2026-01-01T03:00:00Z"),
                window("2026-01-01T04:00:00Z", "2026-01-01T09:00:00Z"),
                window("2026-01-01T13:00:00Z", "2026-01-01T14:00:00Z"),
            ]
        );
        assert_eq!(subtract(&kept, &[]), kept);
        assert!(subtract(
            &kept,
            &[window("2025-01-01T00:00:00Z", "2027-01-01T00:00:00Z")]
        )
        .is_empty());
    }

    #[test]
    fn clip_keeps_the_inside() {
        let windows = [window("2026-01-01T00:00:00Z", "2026-01-01T10:00:00Z")];
        assert_eq!(
            clip(
                &windows,
                ts("2026-01-01T05:00:00Z"),
                ts("2026-01-02T00:00:00Z")
            ),
            [window("2026-01-01T05:00:00Z", "2026-01-01T10:00:00Z")]
        );
        assert!(clip(
            &windows,
            ts("2026-01-01T10:00:00Z"),
            ts("2026-01-02T00:00:00Z")
        )
        .is_empty());
    }
}
