//! The textual forms of a calendar, as the policy compiler hands them over,
//! and their parsing into typed, validated parts.
//!
//! Every problem is collected (never only the first), and each
//! [`CalendarError`] carries the key path of the entry at fault relative to
//! the calendar (`timezone`, `hours.mon-fri`, `hours.mon-fri[1]`,
//! `holidays[0]`, `maintenance[2].weekly`, `maintenance[3].from`, …), so that
//! the caller can prefix `calendars.NAME.` and look up `file:line:col`.
//!
//! Accepted forms:
//!
//! - days: `mon tue wed thu fri sat sun` (any case), or a range of two
//!   different days joined by `-`, which may wrap over the weekend: `fri-mon`
//!   is fri, sat, sun, mon;
//! - hours: `HH:MM-HH:MM` (the hour may have one digit), several joined by
//!   commas or given as a list; `24:00` may only end a range; an end at or
//!   before the start crosses midnight (`22:00-06:00` on fri runs into
//!   saturday morning); `00:00-24:00` is the whole day;
//! - holidays: `YYYY-MM-DD`, a local date, closed all day;
//! - weekly maintenance: `DAY HH:MM-HH:MM` in local time (`sun 02:00-04:00`,
//!   `sat 23:00-01:00`), with the same day and hours forms as above;
//! - absolute maintenance: two RFC 3339 instants with an offset.

use std::collections::BTreeSet;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::window::{merge, Window};

/// A calendar as written in a policy file, before validation. The policy
/// compiler fills it from the `calendars:` block; [`super::Calendar::compile`]
/// checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CalendarSpec {
    /// An IANA time zone name, e.g. `America/New_York`.
    pub timezone: String,
    /// Opening hours: a day or day range (`mon-fri`, `sat`, `fri-mon`) and
    /// its ranges, in the order written. A single string with commas
    /// (`"09:00-12:00, 13:00-18:00"`) is one element; a YAML list is several.
    pub hours: Vec<(String, Vec<String>)>,
    /// Local dates (`YYYY-MM-DD`) closed all day.
    pub holidays: Vec<String>,
    /// Maintenance windows, in the order written.
    pub maintenance: Vec<MaintenanceSpec>,
}

/// One entry of a calendar's `maintenance:` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintenanceSpec {
    /// `weekly: "sun 02:00-04:00"`: recurring, in the calendar's local time.
    Weekly(String),
    /// `{ from: RFC3339, to: RFC3339 }`: once, between two instants.
    Absolute { from: String, to: String },
}

/// Why a calendar was rejected. Each error names the entry at fault and says
/// what to write instead; [`CalendarError::path`] gives its key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("no time zone: set `timezone` to an IANA name like America/New_York")]
    MissingTimeZone { path: String },
    #[error("unknown time zone `{name}`: use an IANA name like America/New_York")]
    UnknownTimeZone { path: String, name: String },
    #[error("bad day `{text}`: days are mon, tue, wed, thu, fri, sat, sun")]
    BadDay { path: String, text: String },
    #[error("bad day range `{text}`: days are mon, tue, wed, thu, fri, sat, sun")]
    BadDayRange { path: String, text: String },
    #[error(
        "bad day range `{text}`: a range joins two different days, e.g. mon-fri; \
         for one day write just the day"
    )]
    SameDayRange { path: String, text: String },
    #[error(
        "no hours for `{days}`: give at least one range like 09:00-18:00, or leave the day out"
    )]
    NoRanges { path: String, days: String },
    #[error("bad hours `{text}`: {hint}")]
    BadHours {
        path: String,
        text: String,
        hint: &'static str,
    },
    #[error("no opening hours: a calendar needs `hours`, e.g. mon-fri: \"09:00-18:00\"")]
    NoHours { path: String },
    #[error(
        "weekly maintenance covers every opening hour: the calendar would never open; \
         shorten a window or add hours"
    )]
    NeverOpen { path: String },
    #[error("bad holiday `{text}`: write a date as YYYY-MM-DD, e.g. 2026-12-25")]
    BadHoliday { path: String, text: String },
    #[error("bad weekly maintenance `{text}`: {hint}")]
    BadWeeklyWindow {
        path: String,
        text: String,
        hint: &'static str,
    },
    #[error(
        "bad instant `{text}`: write an RFC 3339 time with an offset, e.g. 2026-12-01T00:00:00Z"
    )]
    BadInstant { path: String, text: String },
    #[error("empty maintenance window from `{from}` to `{to}`: `to` must be after `from`")]
    EmptyWindow {
        path: String,
        from: String,
        to: String,
    },
}

impl CalendarError {
    /// The key path of the entry at fault, relative to the calendar
    /// (`hours.mon-fri[1]`, `maintenance[0].weekly`, …).
    pub fn path(&self) -> &str {
        match self {
            Self::MissingTimeZone { path }
            | Self::UnknownTimeZone { path, .. }
            | Self::BadDay { path, .. }
            | Self::BadDayRange { path, .. }
            | Self::SameDayRange { path, .. }
            | Self::NoRanges { path, .. }
            | Self::BadHours { path, .. }
            | Self::NoHours { path }
            | Self::NeverOpen { path }
            | Self::BadHoliday { path, .. }
            | Self::BadWeeklyWindow { path, .. }
            | Self::BadInstant { path, .. }
            | Self::EmptyWindow { path, .. } => path,
        }
    }
}

pub(super) const MINUTES_PER_DAY: u16 = 24 * 60;
const DAYS_PER_WEEK: usize = 7;
const DAY_NAMES: [&str; DAYS_PER_WEEK] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A range of local wall-clock time starting on some day: minutes since that
/// day's midnight. `end` is after `start` and at most a day later, so a range
/// crossing midnight has `end > 1440`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DailyRange {
    pub(super) start: u16,
    pub(super) end: u16,
}

/// Ranges per weekday, indexed from monday = 0 (jiff's monday-zero offset).
pub(super) type WeeklyRanges = [Vec<DailyRange>; DAYS_PER_WEEK];

/// A calendar whose every entry parsed.
#[derive(Debug)]
pub(super) struct ParsedCalendar {
    pub(super) timezone: TimeZone,
    pub(super) hours: WeeklyRanges,
    pub(super) holidays: BTreeSet<Date>,
    pub(super) weekly_maintenance: WeeklyRanges,
    /// Merged and sorted.
    pub(super) absolute_maintenance: Vec<Window>,
}

/// Parses and checks a whole spec, returning every problem found.
pub(super) fn parse(spec: &CalendarSpec) -> Result<ParsedCalendar, Vec<CalendarError>> {
    let mut errors = Vec::new();

    let timezone = parse_timezone(&spec.timezone)
        .map_err(|e| errors.push(e))
        .ok();

    let mut hours = WeeklyRanges::default();
    let hours_errors_before = errors.len();
    for (days_text, ranges) in &spec.hours {
        add_hours(&mut hours, days_text, ranges, &mut errors);
    }
    let hours_parsed = errors.len() == hours_errors_before;
    if spec.hours.is_empty() {
        errors.push(CalendarError::NoHours {
            path: "hours".to_owned(),
        });
    }

    let mut holidays = BTreeSet::new();
    for (index, text) in spec.holidays.iter().enumerate() {
        match text.trim().parse::<Date>() {
            Ok(date) => {
                holidays.insert(date);
            }
            Err(_) => errors.push(CalendarError::BadHoliday {
                path: format!("holidays[{index}]"),
                text: text.clone(),
            }),
        }
    }

    let mut weekly_maintenance = WeeklyRanges::default();
    let mut absolute_maintenance = Vec::new();
    let maintenance_errors_before = errors.len();
    for (index, entry) in spec.maintenance.iter().enumerate() {
        match entry {
            MaintenanceSpec::Weekly(text) => {
                add_weekly_window(&mut weekly_maintenance, index, text, &mut errors);
            }
            MaintenanceSpec::Absolute { from, to } => {
                if let Some(window) = parse_absolute(index, from, to, &mut errors) {
                    absolute_maintenance.push(window);
                }
            }
        }
    }
    let maintenance_parsed = errors.len() == maintenance_errors_before;

    // Only judge coverage on entries that all parsed: a half-read spec would
    // give a misleading verdict on top of the real errors.
    if hours_parsed
        && maintenance_parsed
        && !spec.hours.is_empty()
        && !has_open_minute(&hours, &weekly_maintenance)
    {
        errors.push(CalendarError::NeverOpen {
            path: "maintenance".to_owned(),
        });
    }

    match timezone {
        Some(timezone) if errors.is_empty() => Ok(ParsedCalendar {
            timezone,
            hours,
            holidays,
            weekly_maintenance,
            absolute_maintenance: merge(absolute_maintenance),
        }),
        _ => Err(errors),
    }
}

fn parse_timezone(name: &str) -> Result<TimeZone, CalendarError> {
    let path = "timezone".to_owned();
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(CalendarError::MissingTimeZone { path });
    }
    TimeZone::get(trimmed).map_err(|_| CalendarError::UnknownTimeZone {
        path,
        name: name.to_owned(),
    })
}

fn add_hours(
    hours: &mut WeeklyRanges,
    days_text: &str,
    ranges: &[String],
    errors: &mut Vec<CalendarError>,
) {
    let base_path = format!("hours.{days_text}");
    let days = parse_days(days_text, &base_path)
        .map_err(|e| errors.push(e))
        .ok();
    if ranges.is_empty() {
        errors.push(CalendarError::NoRanges {
            path: base_path.clone(),
            days: days_text.to_owned(),
        });
    }
    for (index, text) in ranges.iter().enumerate() {
        // A single string sits at the key itself; list items have an index.
        let path = if ranges.len() == 1 {
            base_path.clone()
        } else {
            format!("{base_path}[{index}]")
        };
        match parse_ranges(text) {
            Ok(parsed) => {
                for day in days.iter().flatten() {
                    hours[*day].extend_from_slice(&parsed);
                }
            }
            Err((piece, problem)) => errors.push(CalendarError::BadHours {
                path,
                text: piece,
                hint: problem.hint(),
            }),
        }
    }
}

fn add_weekly_window(
    windows: &mut WeeklyRanges,
    index: usize,
    text: &str,
    errors: &mut Vec<CalendarError>,
) {
    let path = format!("maintenance[{index}].weekly");
    let Some((days_text, ranges_text)) = text.trim().split_once(char::is_whitespace) else {
        errors.push(CalendarError::BadWeeklyWindow {
            path,
            text: text.to_owned(),
            hint: WEEKLY_FORMAT_HINT,
        });
        return;
    };
    let days = match parse_days(days_text, &path) {
        Ok(days) => days,
        Err(error) => {
            errors.push(error);
            return;
        }
    };
    match parse_ranges(ranges_text) {
        Ok(ranges) => {
            for day in days {
                windows[day].extend_from_slice(&ranges);
            }
        }
        Err((_, problem)) => errors.push(CalendarError::BadWeeklyWindow {
            path,
            text: text.to_owned(),
            hint: match problem {
                RangeProblem::Format => WEEKLY_FORMAT_HINT,
                other => other.hint(),
            },
        }),
    }
}

const WEEKLY_FORMAT_HINT: &str =
    "write DAY HH:MM-HH:MM, e.g. sun 02:00-04:00 (it may cross midnight: sat 23:00-01:00)";

fn parse_absolute(
    index: usize,
    from: &str,
    to: &str,
    errors: &mut Vec<CalendarError>,
) -> Option<Window> {
    let mut instant = |field: &str, text: &str| {
        text.trim()
            .parse::<Timestamp>()
            .map_err(|_| {
                errors.push(CalendarError::BadInstant {
                    path: format!("maintenance[{index}].{field}"),
                    text: text.to_owned(),
                });
            })
            .ok()
    };
    let start = instant("from", from);
    let end = instant("to", to);
    let (start, end) = (start?, end?);
    if end <= start {
        errors.push(CalendarError::EmptyWindow {
            path: format!("maintenance[{index}]"),
            from: from.to_owned(),
            to: to.to_owned(),
        });
        return None;
    }
    Some(Window { start, end })
}

fn day_index(text: &str) -> Option<usize> {
    let text = text.trim();
    DAY_NAMES
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
}

/// The weekdays (monday = 0) a day or day range names, in week order from
/// its first day.
pub(super) fn parse_days(text: &str, path: &str) -> Result<Vec<usize>, CalendarError> {
    let Some((first, last)) = text.split_once('-') else {
        return day_index(text)
            .map(|day| vec![day])
            .ok_or_else(|| CalendarError::BadDay {
                path: path.to_owned(),
                text: text.to_owned(),
            });
    };
    let (Some(first), Some(last)) = (day_index(first), day_index(last)) else {
        return Err(CalendarError::BadDayRange {
            path: path.to_owned(),
            text: text.to_owned(),
        });
    };
    if first == last {
        return Err(CalendarError::SameDayRange {
            path: path.to_owned(),
            text: text.to_owned(),
        });
    }
    // Walking forward with wrap-around makes `fri-mon` mean the long weekend.
    let length = (last + DAYS_PER_WEEK - first) % DAYS_PER_WEEK + 1;
    Ok((0..length)
        .map(|offset| (first + offset) % DAYS_PER_WEEK)
        .collect())
}

/// What is wrong with one `HH:MM-HH:MM` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RangeProblem {
    Format,
    OutOfRange,
    StartsAtMidnightEnd,
    Empty,
}

impl RangeProblem {
    fn hint(self) -> &'static str {
        match self {
            Self::Format => "write HH:MM-HH:MM, e.g. 09:00-18:00",
            Self::OutOfRange => {
                "hours run from 00 to 23 and minutes from 00 to 59 (24:00 may end a range)"
            }
            Self::StartsAtMidnightEnd => "24:00 can only end a range; start at 00:00 instead",
            Self::Empty => "a range must not be empty; for the whole day write 00:00-24:00",
        }
    }
}

/// Parses comma-separated ranges; on failure returns the offending piece.
pub(super) fn parse_ranges(text: &str) -> Result<Vec<DailyRange>, (String, RangeProblem)> {
    text.split(',')
        .map(|piece| parse_range(piece).map_err(|problem| (piece.trim().to_owned(), problem)))
        .collect()
}

fn parse_range(text: &str) -> Result<DailyRange, RangeProblem> {
    let (start, end) = text.split_once('-').ok_or(RangeProblem::Format)?;
    let start = parse_clock(start)?;
    let end = parse_clock(end)?;
    if start == MINUTES_PER_DAY {
        return Err(RangeProblem::StartsAtMidnightEnd);
    }
    if end == start {
        return Err(RangeProblem::Empty);
    }
    // An end at or before the start is on the next day.
    let end = if end < start {
        end + MINUTES_PER_DAY
    } else {
        end
    };
    Ok(DailyRange { start, end })
}

/// `H:MM` or `HH:MM` as minutes since midnight; `24:00` gives 1440.
fn parse_clock(text: &str) -> Result<u16, RangeProblem> {
    let (hours, minutes) = text.trim().split_once(':').ok_or(RangeProblem::Format)?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(1..=2).contains(&hours.len()) || minutes.len() != 2 {
        return Err(RangeProblem::Format);
    }
    if !all_digits(hours) || !all_digits(minutes) {
        return Err(RangeProblem::Format);
    }
    let hours: u16 = hours.parse().map_err(|_| RangeProblem::Format)?;
    let minutes: u16 = minutes.parse().map_err(|_| RangeProblem::Format)?;
    match (hours, minutes) {
        (24, 0) => Ok(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Ok(hours * 60 + minutes),
        _ => Err(RangeProblem::OutOfRange),
    }
}

/// Whether some minute of the week is in the hours and in no weekly
/// maintenance window, on the wall clock. This is the only way a calendar can
/// be closed forever by its own rules; holidays and absolute windows end.
fn has_open_minute(hours: &WeeklyRanges, maintenance: &WeeklyRanges) -> bool {
    let minutes_per_week = DAYS_PER_WEEK * usize::from(MINUTES_PER_DAY);
    let mark = |ranges: &WeeklyRanges| {
        let mut minutes = vec![false; minutes_per_week];
        for (day, day_ranges) in ranges.iter().enumerate() {
            let day_start = day * usize::from(MINUTES_PER_DAY);
            for range in day_ranges {
                for minute in usize::from(range.start)..usize::from(range.end) {
                    minutes[(day_start + minute) % minutes_per_week] = true;
                }
            }
        }
        minutes
    };
    let open = mark(hours);
    let closed = mark(maintenance);
    open.iter()
        .zip(&closed)
        .any(|(&open, &closed)| open && !closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn office() -> CalendarSpec {
        CalendarSpec {
            timezone: "America/New_York".to_owned(),
            hours: vec![
                ("mon-fri".to_owned(), vec!["09:00-18:00".to_owned()]),
                ("sat".to_owned(), vec!["10:00-14:00".to_owned()]),
            ],
            holidays: vec!["2026-12-25".to_owned()],
            maintenance: vec![
                MaintenanceSpec::Weekly("sun 02:00-04:00".to_owned()),
                MaintenanceSpec::Absolute {
                    from: "2026-12-01T00:00:00Z".to_owned(),
                    to: "2026-12-01T06:00:00Z".to_owned(),
                },
            ],
        }
    }

    fn errors_of(spec: &CalendarSpec) -> Vec<CalendarError> {
        match parse(spec) {
            Ok(_) => panic!("expected errors for {spec:?}"),
            Err(errors) => errors,
        }
    }

    fn only_error(spec: &CalendarSpec) -> CalendarError {
        let mut errors = errors_of(spec);
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.remove(0)
    }

    fn with_hours(days: &str, ranges: &[&str]) -> CalendarSpec {
        CalendarSpec {
            hours: vec![(
                days.to_owned(),
                ranges.iter().map(|r| (*r).to_owned()).collect(),
            )],
            ..office()
        }
    }

    #[test]
    fn the_example_calendar_parses() {
        let parsed = parse(&office()).expect("valid");
        assert_eq!(
            parsed.hours[0],
            vec![DailyRange {
                start: 540,
                end: 1080
            }]
        );
        assert!(parsed.hours[6].is_empty());
        assert_eq!(
            parsed.hours[5],
            vec![DailyRange {
                start: 600,
                end: 840
            }]
        );
        assert_eq!(
            parsed.weekly_maintenance[6],
            vec![DailyRange {
                start: 120,
                end: 240
            }]
        );
        assert_eq!(parsed.holidays.len(), 1);
        assert_eq!(parsed.absolute_maintenance.len(), 1);
    }

    #[test]
    fn day_ranges_expand_and_wrap() {
        assert_eq!(parse_days("mon-fri", "p"), Ok(vec![0, 1, 2, 3, 4]));
        assert_eq!(parse_days("fri-mon", "p"), Ok(vec![4, 5, 6, 0]));
        assert_eq!(parse_days("SUN", "p"), Ok(vec![6]));
        assert_eq!(parse_days(" tue - thu ", "p"), Ok(vec![1, 2, 3]));
    }

    #[test]
    fn ranges_parse_with_commas_midnight_and_whole_day() {
        assert_eq!(
            parse_ranges("09:00-12:00, 13:00-18:00"),
            Ok(vec![
                DailyRange {
                    start: 540,
                    end: 720
                },
                DailyRange {
                    start: 780,
                    end: 1080
                }
            ])
        );
        assert_eq!(
            parse_ranges("22:00-06:00"),
            Ok(vec![DailyRange {
                start: 1320,
                end: 1800
            }])
        );
        assert_eq!(
            parse_ranges("00:00-24:00"),
            Ok(vec![DailyRange {
                start: 0,
                end: 1440
            }])
        );
        assert_eq!(
            parse_ranges("9:30-17:00"),
            Ok(vec![DailyRange {
                start: 570,
                end: 1020
            }])
        );
    }

    #[test]
    fn bad_day_range_names_the_days() {
        let error = only_error(&with_hours("mon-fry", &["09:00-18:00"]));
        assert_eq!(error.path(), "hours.mon-fry");
        assert_eq!(
            error.to_string(),
            "bad day range `mon-fry`: days are mon, tue, wed, thu, fri, sat, sun"
        );
    }

    #[test]
    fn bad_single_day() {
        let error = only_error(&with_hours("monday", &["09:00-18:00"]));
        assert!(matches!(error, CalendarError::BadDay { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "bad day `monday`: days are mon, tue, wed, thu, fri, sat, sun"
        );
    }

    #[test]
    fn same_day_range() {
        let error = only_error(&with_hours("mon-mon", &["09:00-18:00"]));
        assert!(
            matches!(error, CalendarError::SameDayRange { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("two different days"));
    }

    #[test]
    fn bad_hours_says_the_format() {
        let error = only_error(&with_hours("mon-fri", &["9-18"]));
        assert_eq!(error.path(), "hours.mon-fri");
        assert_eq!(
            error.to_string(),
            "bad hours `9-18`: write HH:MM-HH:MM, e.g. 09:00-18:00"
        );
    }

    #[test]
    fn bad_hours_quotes_the_piece_and_indexes_the_list() {
        let error = only_error(&with_hours("mon", &["08:00-09:00", "09:00-12:00, 13-18"]));
        assert_eq!(error.path(), "hours.mon[1]");
        assert!(
            error.to_string().starts_with("bad hours `13-18`:"),
            "{error}"
        );
    }

    #[test]
    fn hours_out_of_range() {
        let error = only_error(&with_hours("mon", &["09:00-25:00"]));
        assert!(
            error.to_string().contains("hours run from 00 to 23"),
            "{error}"
        );
        let error = only_error(&with_hours("mon", &["09:60-10:00"]));
        assert!(
            error.to_string().contains("minutes from 00 to 59"),
            "{error}"
        );
    }

    #[test]
    fn hours_starting_at_24() {
        let error = only_error(&with_hours("mon", &["24:00-06:00"]));
        assert!(
            error.to_string().contains("24:00 can only end a range"),
            "{error}"
        );
    }

    #[test]
    fn empty_hours_range() {
        let error = only_error(&with_hours("mon", &["00:00-00:00"]));
        assert!(error.to_string().contains("write 00:00-24:00"), "{error}");
    }

    #[test]
    fn hours_with_junk() {
        for junk in [
            "",
            "09:00",
            "09:00-18:00,",
            "0900-1800",
            "09:000-18:00",
            "a9:00-18:00",
        ] {
            let error = only_error(&with_hours("mon", &[junk]));
            assert!(
                matches!(error, CalendarError::BadHours { hint, .. } if hint.contains("HH:MM")),
                "{junk}: {error:?}"
            );
        }
    }

    #[test]
    fn a_day_without_ranges() {
        let error = only_error(&with_hours("sat", &[]));
        assert_eq!(error.path(), "hours.sat");
        assert_eq!(
            error.to_string(),
            "no hours for `sat`: give at least one range like 09:00-18:00, or leave the day out"
        );
    }

    #[test]
    fn no_hours_at_all() {
        let error = only_error(&CalendarSpec {
            hours: Vec::new(),
            ..office()
        });
        assert_eq!(
            error,
            CalendarError::NoHours {
                path: "hours".to_owned()
            }
        );
    }

    #[test]
    fn unknown_time_zone_hints_at_iana() {
        let error = only_error(&CalendarSpec {
            timezone: "Eastern".to_owned(),
            ..office()
        });
        assert_eq!(error.path(), "timezone");
        assert_eq!(
            error.to_string(),
            "unknown time zone `Eastern`: use an IANA name like America/New_York"
        );
    }

    #[test]
    fn missing_time_zone() {
        let error = only_error(&CalendarSpec {
            timezone: " ".to_owned(),
            ..office()
        });
        assert!(
            matches!(error, CalendarError::MissingTimeZone { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn bad_holiday() {
        let error = only_error(&CalendarSpec {
            holidays: vec!["2026-12-25".to_owned(), "2026-13-01".to_owned()],
            ..office()
        });
        assert_eq!(error.path(), "holidays[1]");
        assert_eq!(
            error.to_string(),
            "bad holiday `2026-13-01`: write a date as YYYY-MM-DD, e.g. 2026-12-25"
        );
    }

    #[test]
    fn bad_weekly_maintenance() {
        let spec = |text: &str| CalendarSpec {
            maintenance: vec![MaintenanceSpec::Weekly(text.to_owned())],
            ..office()
        };
        let error = only_error(&spec("sun"));
        assert_eq!(error.path(), "maintenance[0].weekly");
        assert!(
            error.to_string().contains("write DAY HH:MM-HH:MM"),
            "{error}"
        );
        let error = only_error(&spec("sun 2-4"));
        assert_eq!(
            error.to_string(),
            "bad weekly maintenance `sun 2-4`: write DAY HH:MM-HH:MM, e.g. sun 02:00-04:00 \
             (it may cross midnight: sat 23:00-01:00)"
        );
        let error = only_error(&spec("sunday 02:00-04:00"));
        assert!(matches!(error, CalendarError::BadDay { .. }), "{error:?}");
        assert_eq!(error.path(), "maintenance[0].weekly");
        let error = only_error(&spec("sun 02:00-02:00"));
        assert!(error.to_string().contains("must not be empty"), "{error}");
    }

    #[test]
    fn weekly_maintenance_accepts_day_ranges_and_midnight() {
        let parsed = parse(&CalendarSpec {
            maintenance: vec![
                MaintenanceSpec::Weekly("sat 23:00-01:00".to_owned()),
                MaintenanceSpec::Weekly("tue-wed 12:00-12:30".to_owned()),
            ],
            ..office()
        })
        .expect("valid");
        assert_eq!(
            parsed.weekly_maintenance[5],
            vec![DailyRange {
                start: 1380,
                end: 1500
            }]
        );
        assert_eq!(
            parsed.weekly_maintenance[1],
            vec![DailyRange {
                start: 720,
                end: 750
            }]
        );
        assert_eq!(
            parsed.weekly_maintenance[2],
            vec![DailyRange {
                start: 720,
                end: 750
            }]
        );
    }

    #[test]
    fn bad_absolute_instants() {
        let errors = errors_of(&CalendarSpec {
            maintenance: vec![MaintenanceSpec::Absolute {
                from: "2026-12-01T00:00:00".to_owned(),
                to: "tomorrow".to_owned(),
            }],
            ..office()
        });
        let paths: Vec<&str> = errors.iter().map(CalendarError::path).collect();
        assert_eq!(paths, ["maintenance[0].from", "maintenance[0].to"]);
        assert_eq!(
            errors[0].to_string(),
            "bad instant `2026-12-01T00:00:00`: write an RFC 3339 time with an offset, \
             e.g. 2026-12-01T00:00:00Z"
        );
    }

    #[test]
    fn absolute_window_ending_before_it_starts() {
        let error = only_error(&CalendarSpec {
            maintenance: vec![MaintenanceSpec::Absolute {
                from: "2026-12-01T06:00:00Z".to_owned(),
                to: "2026-12-01T06:00:00Z".to_owned(),
            }],
            ..office()
        });
        assert_eq!(error.path(), "maintenance[0]");
        assert!(
            error.to_string().contains("`to` must be after `from`"),
            "{error}"
        );
    }

    #[test]
    fn maintenance_covering_every_hour_never_opens() {
        let error = only_error(&CalendarSpec {
            hours: vec![("mon-fri".to_owned(), vec!["09:00-18:00".to_owned()])],
            maintenance: vec![MaintenanceSpec::Weekly("mon-fri 08:00-19:00".to_owned())],
            ..office()
        });
        assert_eq!(
            error,
            CalendarError::NeverOpen {
                path: "maintenance".to_owned()
            }
        );
    }

    #[test]
    fn maintenance_across_midnight_counts_toward_coverage() {
        // Sunday 22:00 to Monday 10:00 leaves Monday 10:00-11:00 open.
        let spec = CalendarSpec {
            hours: vec![("mon".to_owned(), vec!["09:00-11:00".to_owned()])],
            maintenance: vec![MaintenanceSpec::Weekly("sun 22:00-10:00".to_owned())],
            ..office()
        };
        assert!(parse(&spec).is_ok());
        let spec = CalendarSpec {
            maintenance: vec![MaintenanceSpec::Weekly("sun 22:00-11:00".to_owned())],
            ..spec
        };
        assert!(matches!(
            errors_of(&spec)[..],
            [CalendarError::NeverOpen { .. }]
        ));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = errors_of(&CalendarSpec {
            timezone: "Mars/Olympus".to_owned(),
            hours: vec![
                ("mon-fry".to_owned(), vec!["9-18".to_owned()]),
                ("sat".to_owned(), vec!["10:00-14:00".to_owned()]),
            ],
            holidays: vec!["25/12/2026".to_owned()],
            maintenance: vec![
                MaintenanceSpec::Weekly("sun 2-4".to_owned()),
                MaintenanceSpec::Absolute {
                    from: "x".to_owned(),
                    to: "2026-12-01T06:00:00Z".to_owned(),
                },
            ],
        });
        let paths: Vec<&str> = errors.iter().map(CalendarError::path).collect();
        assert_eq!(
            paths,
            [
                "timezone",
                "hours.mon-fry",
                "hours.mon-fry",
                "holidays[0]",
                "maintenance[0].weekly",
                "maintenance[1].from"
            ]
        );
    }
}
