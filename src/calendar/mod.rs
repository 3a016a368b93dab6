//! Partner calendars: a time zone, weekly opening hours, holidays and
//! maintenance windows, and exact answers to "is this instant open?", "when
//! does it next open?" and "when does this maintenance window end?".
//!
//! Everything here is pure: the instant is always an argument and nothing
//! reads the clock, so the engine's interpreter can decide "attempt now, hold
//! until T, or suspend until the window ends" and tests can check it exactly.
//!
//! # What is open
//!
//! An instant is open when it is inside the opening hours, its local date is
//! not a holiday, and it is in no maintenance window. Holidays close their
//! whole local date, including the part of a midnight-crossing range that
//! spills into it (`fri 22:00-06:00` with a holiday on saturday closes at
//! midnight). Maintenance applies in and out of hours, and overlapping or
//! touching windows (weekly or absolute) merge into one: a window ends only
//! when no other window continues it. All windows are half-open: a range
//! `09:00-18:00` is open at 09:00 and closed at 18:00.
//!
//! # Local time and daylight saving
//!
//! Hours, holidays and weekly windows are written in local wall time; each
//! range occupies one continuous window of real time, **from the first
//! instant the wall clock shows its start to the last instant it shows its
//! end**. So:
//!
//! - spring forward: local times skipped by the gap resolve forward, to the
//!   instant the gap ends. Hours `02:00-03:00` on 2026-03-08 in New York do
//!   not exist that day (the calendar is closed), `01:30-02:30` lasts 30 real
//!   minutes (01:30 EST to 03:00 EDT), and `02:30-04:00` opens at 03:00 EDT;
//! - fall back: a range across the repeated hour lasts its real elapsed
//!   length (`sun 00:00-03:00` on 2026-11-01 in New York is four hours), and
//!   a range starting or ending inside it starts at the first showing of its
//!   start and ends at the second showing of its end (`01:00-01:30` runs from
//!   01:00 EDT to 01:30 EST, 90 real minutes), so a window never splits in
//!   two and maintenance never has a hole in it.
//!
//! # Bounded searches
//!
//! A calendar that compiled has some weekly minute in its hours outside
//! weekly maintenance, but holidays and absolute windows may still close it
//! for a long time. Searches therefore stop: [`Calendar::next_open`] looks
//! [`SEARCH_HORIZON_DAYS`] plus seven days per holiday ahead (each holiday can
//! cancel at most one week's occurrence of a slot), not counting time inside
//! absolute windows, which it skips whole; beyond that it answers `None`.
//! Runs of open time and of maintenance that last longer than the horizon
//! are reported as ending at the horizon: "at least until then; ask again".

mod spec;
mod window;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};

pub use spec::{CalendarError, CalendarSpec, MaintenanceSpec};
pub use window::Window;

use spec::{DailyRange, WeeklyRanges};
use window::{clip, merge, resolve, subtract};

/// How far ahead searches look, in days, before holidays extend it.
pub const SEARCH_HORIZON_DAYS: i64 = 366;

/// How far each holiday extends [`Calendar::next_open`]'s search: a holiday
/// can cancel one occurrence of a weekly slot, which then recurs a week later.
const HORIZON_DAYS_PER_HOLIDAY: i64 = 7;
/// Searches compute windows a week at a time: long enough that a typical
/// answer needs one step, short enough to stay cheap.
const SEARCH_STEP_DAYS: i64 = 7;
const SEARCH_STEP: SignedDuration = SignedDuration::from_hours(SEARCH_STEP_DAYS * 24);
const DAY: SignedDuration = SignedDuration::from_hours(24);
/// A local range starts on its date and ends within two days of it, and a
/// time zone's offset stays within a day of UTC: dates this far around an
/// instant's UTC date cover every range that can reach it.
const DAYS_BEFORE: i64 = 3;
const DAYS_AFTER: i64 = 2;

/// A compiled, validated calendar. Cheap to share behind an `Arc`; every
/// method is pure.
#[derive(Debug, Clone)]
pub struct Calendar {
    name: String,
    timezone: TimeZone,
    hours: WeeklyRanges,
    holidays: BTreeSet<Date>,
    weekly_maintenance: WeeklyRanges,
    /// Merged and sorted.
    absolute_maintenance: Vec<Window>,
}

/// What a calendar says about one instant, in the order the interpreter
/// should heed it: maintenance first (no attempt inside a window, even off
/// hours), then opening hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Open; the open period ends at `until` (or lasts at least until then,
    /// when it reaches the search horizon).
    Open { until: Timestamp },
    /// Inside a maintenance window that ends at `until`.
    Maintenance { until: Timestamp },
    /// Outside hours or on a holiday; `opens` is the next opening, `None`
    /// when there is none within the search horizon.
    OffHours { opens: Option<Timestamp> },
}

impl Calendar {
    /// Checks `spec` and builds the calendar named `name`, or returns every
    /// problem found, each with the key path of its entry.
    pub fn compile(name: &str, spec: &CalendarSpec) -> Result<Calendar, Vec<CalendarError>> {
        let parsed = spec::parse(spec)?;
        Ok(Calendar {
            name: name.to_owned(),
            timezone: parsed.timezone,
            hours: parsed.hours,
            holidays: parsed.holidays,
            weekly_maintenance: parsed.weekly_maintenance,
            absolute_maintenance: parsed.absolute_maintenance,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The calendar's time zone, for showing local times.
    pub fn timezone(&self) -> &TimeZone {
        &self.timezone
    }

    /// `at` on the calendar's wall clock.
    pub fn local_time(&self, at: Timestamp) -> Zoned {
        at.to_zoned(self.timezone.clone())
    }

    /// Whether `at` is in hours, not on a holiday and in no maintenance
    /// window.
    pub fn is_open(&self, at: Timestamp) -> bool {
        // Membership in a union needs no merging: test each window directly.
        // This is also a second, independent reading of the rules that the
        // property tests hold the window-based searches against.
        let dates = self.dates_near(at);
        let in_hours = self.any_range_contains(&self.hours, &dates, at);
        in_hours && !self.holiday_contains(&dates, at) && !self.maintenance_contains(&dates, at)
    }

    /// The end of the maintenance window containing `at` (merged with any
    /// window that continues it), or `None` when `at` is in none.
    pub fn in_maintenance(&self, at: Timestamp) -> Option<Timestamp> {
        // Most instants are in no window: answer those without a search.
        if !self.maintenance_contains(&self.dates_near(at), at) {
            return None;
        }
        let limit = later(
            self.last_absolute_end().max(at),
            horizon(SEARCH_HORIZON_DAYS),
        );
        self.run_end(at, limit, Self::maintenance_windows)
    }

    /// The earliest open instant at or after `at`: `at` itself when open;
    /// `None` when nothing opens within the search horizon.
    pub fn next_open(&self, at: Timestamp) -> Option<Timestamp> {
        if self.is_open(at) {
            return Some(at);
        }
        let holiday_days = i64::try_from(self.holidays.len())
            .unwrap_or(i64::MAX)
            .saturating_mul(HORIZON_DAYS_PER_HOLIDAY);
        let horizon = SEARCH_HORIZON_DAYS.saturating_add(holiday_days);
        let mut searched_days = 0;
        let mut lo = at;
        while searched_days < horizon {
            // Skipping absolute windows whole keeps a long planned outage
            // from eating the horizon.
            if let Some(window) = self.absolute_maintenance.iter().find(|w| w.contains(lo)) {
                lo = window.end;
                continue;
            }
            let hi = later(lo, SEARCH_STEP);
            if hi == lo {
                return None;
            }
            if let Some(first) = self.open_windows(lo, hi).first() {
                return Some(first.start);
            }
            lo = hi;
            searched_days += SEARCH_STEP_DAYS;
        }
        None
    }

    /// When the open period containing `at` ends (the first closed instant
    /// after it, capped at the search horizon), or `None` when `at` is not
    /// open.
    pub fn open_until(&self, at: Timestamp) -> Option<Timestamp> {
        if !self.is_open(at) {
            return None;
        }
        self.run_end(
            at,
            later(at, horizon(SEARCH_HORIZON_DAYS)),
            Self::open_windows,
        )
    }

    /// The maintenance window containing `at`, or else the next one to begin,
    /// within the search horizon; a window already under way is reported as
    /// starting at `at`.
    pub fn next_maintenance(&self, at: Timestamp) -> Option<Window> {
        if self.weekly_maintenance.iter().all(Vec::is_empty) {
            // Absolute windows are merged and sorted: no need to search.
            return self
                .absolute_maintenance
                .iter()
                .find(|window| window.end > at)
                .map(|window| Window {
                    start: window.start.max(at),
                    end: window.end,
                });
        }
        let limit = later(at, horizon(SEARCH_HORIZON_DAYS));
        let mut lo = at;
        while lo < limit {
            let hi = later(lo, SEARCH_STEP);
            if let Some(first) = self.maintenance_windows(lo, hi).first() {
                let end = self.in_maintenance(first.start)?;
                return Some(Window {
                    start: first.start,
                    end,
                });
            }
            lo = hi;
        }
        None
    }

    /// The interpreter's question in one answer: in maintenance (suspend
    /// until it ends), open (attempt now), or off hours (hold until it
    /// opens, or retry with the step's off-hours template).
    pub fn availability(&self, at: Timestamp) -> Availability {
        if let Some(until) = self.in_maintenance(at) {
            return Availability::Maintenance { until };
        }
        match self.open_until(at) {
            Some(until) => Availability::Open { until },
            None => Availability::OffHours {
                opens: self.next_open(at),
            },
        }
    }

    /// The time within `[from, to)` when the calendar is not open: what a job
    /// held by it over that span would not be charged. Zero when `to` is not
    /// after `from`. Costs one step per week of the span.
    pub fn closed_between(&self, from: Timestamp, to: Timestamp) -> Duration {
        if to <= from {
            return Duration::ZERO;
        }
        let mut open = SignedDuration::ZERO;
        let mut lo = from;
        while lo < to {
            let hi = later(lo, SEARCH_STEP).min(to);
            for window in self.open_windows(lo, hi) {
                open = open.saturating_add(window.duration());
            }
            lo = hi;
        }
        Duration::try_from(to.duration_since(from).saturating_sub(open)).unwrap_or(Duration::ZERO)
    }

    /// The open windows within `[from, to)`, clipped to it, sorted and
    /// disjoint; for showing a timeline.
    pub fn open_windows(&self, from: Timestamp, to: Timestamp) -> Vec<Window> {
        if to <= from {
            return Vec::new();
        }
        let dates = dates_around(from, to);
        let hours = merge(self.range_windows(&self.hours, &dates));
        let mut closed = self.range_windows(&self.weekly_maintenance, &dates);
        closed.extend(self.holiday_windows(&dates));
        closed.extend(self.absolute_maintenance.iter().copied());
        let closed = merge(closed);
        subtract(&clip(&hours, from, to), &clip(&closed, from, to))
    }

    /// The maintenance windows within `[from, to)`, merged, clipped to it.
    pub fn maintenance_windows(&self, from: Timestamp, to: Timestamp) -> Vec<Window> {
        if to <= from {
            return Vec::new();
        }
        let dates = dates_around(from, to);
        let mut windows = self.range_windows(&self.weekly_maintenance, &dates);
        windows.extend(self.absolute_maintenance.iter().copied());
        clip(&merge(windows), from, to)
    }

    /// The end of the run of windows that starts at `at`, following it from
    /// one step to the next while it reaches the step's end, up to `limit`.
    fn run_end(
        &self,
        at: Timestamp,
        limit: Timestamp,
        windows_in: fn(&Self, Timestamp, Timestamp) -> Vec<Window>,
    ) -> Option<Timestamp> {
        let mut step_end = later(at, SEARCH_STEP);
        let first = windows_in(self, at, step_end).into_iter().next()?;
        if first.start != at {
            return None;
        }
        let mut end = first.end;
        // A window clipped at the step's end may go on in the next step.
        while end == step_end && end < limit {
            let step_start = step_end;
            step_end = later(step_start, SEARCH_STEP);
            match windows_in(self, step_start, step_end).first() {
                Some(next) if next.start == step_start => end = next.end,
                _ => break,
            }
        }
        Some(end.min(limit))
    }

    /// The local dates whose ranges can contain `at`: a range ends within
    /// two days of its date's midnight, and a fall-back repeats at most a
    /// day of wall time.
    fn dates_near(&self, at: Timestamp) -> Vec<Date> {
        let local_date = self.timezone.to_datetime(at).date();
        let shift = |days: i64| {
            local_date
                .checked_add(SignedDuration::from_hours(24 * days))
                .ok()
        };
        (-2..=1).filter_map(shift).collect()
    }

    fn any_range_contains(&self, ranges: &WeeklyRanges, dates: &[Date], at: Timestamp) -> bool {
        dates.iter().any(|&date| {
            let weekday = weekday_index(date);
            ranges
                .get(weekday)
                .into_iter()
                .flatten()
                .filter_map(|range| self.resolve_range(date, *range))
                .any(|window| window.contains(at))
        })
    }

    fn holiday_contains(&self, dates: &[Date], at: Timestamp) -> bool {
        self.holiday_windows(dates)
            .any(|window| window.contains(at))
    }

    fn maintenance_contains(&self, dates: &[Date], at: Timestamp) -> bool {
        self.any_range_contains(&self.weekly_maintenance, dates, at)
            || self
                .absolute_maintenance
                .iter()
                .any(|window| window.contains(at))
    }

    fn range_windows(&self, ranges: &WeeklyRanges, dates: &[Date]) -> Vec<Window> {
        let mut windows = Vec::new();
        for &date in dates {
            for range in ranges.get(weekday_index(date)).into_iter().flatten() {
                windows.extend(self.resolve_range(date, *range));
            }
        }
        windows
    }

    fn resolve_range(&self, date: Date, range: DailyRange) -> Option<Window> {
        let midnight = date.to_datetime(Time::midnight());
        let start = midnight.checked_add(minutes(range.start)).ok()?;
        let end = midnight.checked_add(minutes(range.end)).ok()?;
        resolve(&self.timezone, start, end)
    }

    fn holiday_windows<'a>(&'a self, dates: &'a [Date]) -> impl Iterator<Item = Window> + 'a {
        dates
            .iter()
            .filter(|date| self.holidays.contains(date))
            .filter_map(|&date| {
                self.resolve_range(
                    date,
                    DailyRange {
                        start: 0,
                        end: spec::MINUTES_PER_DAY,
                    },
                )
            })
    }

    fn last_absolute_end(&self) -> Timestamp {
        self.absolute_maintenance
            .last()
            .map_or(Timestamp::MIN, |window| window.end)
    }
}

/// Monday = 0, as [`WeeklyRanges`] is indexed.
fn weekday_index(date: Date) -> usize {
    usize::from(date.weekday().to_monday_zero_offset().unsigned_abs())
}

fn minutes(count: u16) -> SignedDuration {
    SignedDuration::from_mins(i64::from(count))
}

fn horizon(days: i64) -> SignedDuration {
    DAY.checked_mul(i32::try_from(days).unwrap_or(i32::MAX))
        .unwrap_or(SignedDuration::MAX)
}

/// `at + duration`, saturating at the end of representable time.
fn later(at: Timestamp, duration: SignedDuration) -> Timestamp {
    at.checked_add(duration).unwrap_or(Timestamp::MAX)
}

/// The local dates whose ranges can reach `[from, to)`.
fn dates_around(from: Timestamp, to: Timestamp) -> Vec<Date> {
    let utc_date = |at: Timestamp| TimeZone::UTC.to_datetime(at).date();
    let shift = |date: Date, days: i64| {
        date.checked_add(SignedDuration::from_hours(24 * days))
            .unwrap_or(date)
    };
    let first = shift(utc_date(from), -DAYS_BEFORE);
    let last = shift(utc_date(to), DAYS_AFTER);
    let mut dates = Vec::new();
    let mut date = first;
    while date <= last {
        dates.push(date);
        match date.tomorrow() {
            Ok(next) => date = next,
            Err(_) => break,
        }
    }
    dates
}
