//! Behaviour of compiled calendars: office hours, holidays, maintenance,
//! midnight-crossing ranges, daylight saving in New York and Berlin, bounded
//! searches, and property checks over pseudo-random instants.

use jiff::civil::{DateTime, Weekday};
use jiff::{SignedDuration, Timestamp};

use super::*;

fn spec(timezone: &str, hours: &[(&str, &str)]) -> CalendarSpec {
    CalendarSpec {
        timezone: timezone.to_owned(),
        hours: hours
            .iter()
            .map(|(days, ranges)| ((*days).to_owned(), vec![(*ranges).to_owned()]))
            .collect(),
        holidays: Vec::new(),
        maintenance: Vec::new(),
    }
}

fn weekly(text: &str) -> MaintenanceSpec {
    MaintenanceSpec::Weekly(text.to_owned())
}

fn absolute(from: &str, to: &str) -> MaintenanceSpec {
    MaintenanceSpec::Absolute {
        from: from.to_owned(),
        to: to.to_owned(),
    }
}

fn compile(spec: &CalendarSpec) -> Calendar {
    Calendar::compile("test", spec).expect("valid calendar")
}

/// The example calendar of the product page.
fn acme_office() -> Calendar {
    compile(&CalendarSpec {
        holidays: vec!["2026-12-25".to_owned(), "2027-01-01".to_owned()],
        maintenance: vec![
            weekly("sun 02:00-04:00"),
            absolute("2026-12-01T00:00:00Z", "2026-12-01T06:00:00Z"),
        ],
        ..spec(
            "America/New_York",
            &[("mon-fri", "09:00-18:00"), ("sat", "10:00-14:00")],
        )
    })
}

fn utc(text: &str) -> Timestamp {
    text.parse().expect("RFC 3339 instant")
}

/// An unambiguous local time in the calendar's zone.
fn local(calendar: &Calendar, text: &str) -> Timestamp {
    let datetime: DateTime = text.parse().expect("civil datetime");
    calendar
        .timezone()
        .to_timestamp(datetime)
        .expect("representable")
}

fn minutes(count: i64) -> SignedDuration {
    SignedDuration::from_mins(count)
}

#[test]
fn the_dates_used_fall_on_the_expected_weekdays() {
    let weekday = |text: &str| text.parse::<Date>().expect("date").weekday();
    assert_eq!(weekday("2026-01-05"), Weekday::Monday);
    assert_eq!(weekday("2026-12-25"), Weekday::Friday);
    for sunday in ["2026-03-08", "2026-11-01", "2026-03-29", "2026-10-25"] {
        assert_eq!(weekday(sunday), Weekday::Sunday, "{sunday}");
    }
}

#[test]
fn office_hours_open_and_close_on_the_minute() {
    let cal = acme_office();
    // Monday 2026-01-05, EST (UTC-5).
    assert_eq!(local(&cal, "2026-01-05T09:00"), utc("2026-01-05T14:00:00Z"));
    assert!(!cal.is_open(local(&cal, "2026-01-05T08:59:59")));
    assert!(cal.is_open(local(&cal, "2026-01-05T09:00")));
    assert!(cal.is_open(local(&cal, "2026-01-05T17:59:59")));
    assert!(!cal.is_open(local(&cal, "2026-01-05T18:00")));
    assert_eq!(
        cal.open_until(local(&cal, "2026-01-05T10:00")),
        Some(local(&cal, "2026-01-05T18:00"))
    );
    assert_eq!(cal.open_until(local(&cal, "2026-01-05T18:00")), None);
}

#[test]
fn next_open_walks_over_evenings_and_weekends() {
    let cal = acme_office();
    let at = local(&cal, "2026-01-05T12:00");
    assert_eq!(cal.next_open(at), Some(at), "already open");
    assert_eq!(
        cal.next_open(local(&cal, "2026-01-05T18:00")),
        Some(local(&cal, "2026-01-06T09:00"))
    );
    assert_eq!(
        cal.next_open(local(&cal, "2026-01-09T19:30")),
        Some(local(&cal, "2026-01-10T10:00")),
        "friday evening: saturday morning"
    );
    assert_eq!(
        cal.next_open(local(&cal, "2026-01-10T14:00")),
        Some(local(&cal, "2026-01-12T09:00")),
        "saturday afternoon: monday morning"
    );
    assert_eq!(
        cal.availability(local(&cal, "2026-01-11T12:00")),
        Availability::OffHours {
            opens: Some(local(&cal, "2026-01-12T09:00"))
        }
    );
}

#[test]
fn a_holiday_closes_its_whole_local_date() {
    let cal = acme_office();
    // Friday 2026-12-25.
    assert!(!cal.is_open(local(&cal, "2026-12-25T10:00")));
    assert!(cal.is_open(local(&cal, "2026-12-24T17:00")));
    assert_eq!(
        cal.next_open(local(&cal, "2026-12-24T18:00")),
        Some(local(&cal, "2026-12-26T10:00"))
    );
    // 2027-01-01 is a Friday too.
    assert_eq!(
        cal.next_open(local(&cal, "2026-12-31T18:00")),
        Some(local(&cal, "2027-01-02T10:00"))
    );
}

#[test]
fn weekly_maintenance_reports_its_end() {
    let cal = acme_office();
    // Sunday 2026-01-11, out of hours: maintenance still applies.
    assert_eq!(cal.in_maintenance(local(&cal, "2026-01-11T01:59")), None);
    assert_eq!(
        cal.in_maintenance(local(&cal, "2026-01-11T02:00")),
        Some(local(&cal, "2026-01-11T04:00"))
    );
    assert_eq!(
        cal.in_maintenance(local(&cal, "2026-01-11T03:59:59")),
        Some(local(&cal, "2026-01-11T04:00"))
    );
    assert_eq!(cal.in_maintenance(local(&cal, "2026-01-11T04:00")), None);
    assert_eq!(
        cal.availability(local(&cal, "2026-01-11T03:00")),
        Availability::Maintenance {
            until: local(&cal, "2026-01-11T04:00")
        }
    );
    assert_eq!(
        cal.next_maintenance(local(&cal, "2026-01-07T12:00")),
        Some(Window {
            start: local(&cal, "2026-01-11T02:00"),
            end: local(&cal, "2026-01-11T04:00"),
        })
    );
    assert_eq!(
        cal.next_maintenance(local(&cal, "2026-01-11T03:00")),
        Some(Window {
            start: local(&cal, "2026-01-11T03:00"),
            end: local(&cal, "2026-01-11T04:00"),
        }),
        "a window under way starts now"
    );
}

#[test]
fn maintenance_inside_open_hours_closes_and_reopens() {
    let cal = compile(&CalendarSpec {
        maintenance: vec![weekly("sun 02:00-04:00")],
        ..spec("America/New_York", &[("mon-sun", "00:00-24:00")])
    });
    assert!(cal.is_open(local(&cal, "2026-01-11T01:59")));
    assert!(!cal.is_open(local(&cal, "2026-01-11T02:00")));
    assert_eq!(
        cal.open_until(local(&cal, "2026-01-11T00:00")),
        Some(local(&cal, "2026-01-11T02:00"))
    );
    assert_eq!(
        cal.next_open(local(&cal, "2026-01-11T02:30")),
        Some(local(&cal, "2026-01-11T04:00"))
    );
    // Open all week otherwise: the run goes to the next Sunday's window,
    // across six midnights and several search steps.
    assert_eq!(
        cal.open_until(local(&cal, "2026-01-11T04:00")),
        Some(local(&cal, "2026-01-18T02:00"))
    );
    assert_eq!(
        cal.closed_between(
            local(&cal, "2026-01-10T00:00"),
            local(&cal, "2026-01-25T00:00")
        ),
        std::time::Duration::from_secs(2 * 2 * 3600)
    );
}

#[test]
fn an_absolute_window_closes_open_hours() {
    let cal = compile(&CalendarSpec {
        maintenance: vec![absolute("2026-01-06T15:00:00Z", "2026-01-06T16:00:00Z")],
        ..spec("America/New_York", &[("mon-fri", "09:00-18:00")])
    });
    // Tuesday 10:00-11:00 EST.
    assert_eq!(
        cal.open_until(utc("2026-01-06T14:00:00Z")),
        Some(utc("2026-01-06T15:00:00Z"))
    );
    assert!(!cal.is_open(utc("2026-01-06T15:30:00Z")));
    assert_eq!(
        cal.in_maintenance(utc("2026-01-06T15:30:00Z")),
        Some(utc("2026-01-06T16:00:00Z"))
    );
    assert_eq!(
        cal.next_open(utc("2026-01-06T15:30:00Z")),
        Some(utc("2026-01-06T16:00:00Z"))
    );
    assert_eq!(
        cal.next_maintenance(utc("2026-01-01T00:00:00Z")),
        Some(Window {
            start: utc("2026-01-06T15:00:00Z"),
            end: utc("2026-01-06T16:00:00Z"),
        })
    );
    assert_eq!(cal.next_maintenance(utc("2026-01-06T16:00:00Z")), None);
}

#[test]
fn the_product_page_absolute_window_applies_off_hours() {
    let cal = acme_office();
    // 2026-12-01T00:00Z-06:00Z is Monday 19:00 to Tuesday 01:00 EST.
    assert_eq!(
        cal.in_maintenance(utc("2026-12-01T03:00:00Z")),
        Some(utc("2026-12-01T06:00:00Z"))
    );
    assert_eq!(
        cal.next_open(utc("2026-12-01T03:00:00Z")),
        Some(local(&cal, "2026-12-01T09:00"))
    );
}

#[test]
fn overlapping_and_touching_windows_merge() {
    let cal = compile(&CalendarSpec {
        maintenance: vec![
            weekly("sun 02:00-04:00"),
            // 03:00-05:00 EST on Sunday 2026-01-11: overlaps the weekly one.
            absolute("2026-01-11T08:00:00Z", "2026-01-11T10:00:00Z"),
            // Touching ones chain across midnight.
            weekly("fri 22:00-00:00"),
            weekly("sat 00:00-01:00"),
        ],
        ..spec("America/New_York", &[("mon-sun", "00:00-24:00")])
    });
    assert_eq!(
        cal.in_maintenance(local(&cal, "2026-01-11T02:30")),
        Some(local(&cal, "2026-01-11T05:00"))
    );
    assert_eq!(
        cal.in_maintenance(local(&cal, "2026-01-18T02:30")),
        Some(local(&cal, "2026-01-18T04:00")),
        "the absolute window was once"
    );
    assert_eq!(
        cal.in_maintenance(local(&cal, "2026-01-09T23:00")),
        Some(local(&cal, "2026-01-10T01:00"))
    );
    assert_eq!(
        cal.next_maintenance(local(&cal, "2026-01-09T12:00")),
        Some(Window {
            start: local(&cal, "2026-01-09T22:00"),
            end: local(&cal, "2026-01-10T01:00"),
        })
    );
}

#[test]
fn hours_crossing_midnight_run_into_the_next_day() {
    let cal = compile(&spec(
        "America/New_York",
        &[("fri", "22:00-06:00"), ("sun", "23:00-01:00")],
    ));
    // Friday 2026-01-09.
    assert!(!cal.is_open(local(&cal, "2026-01-09T21:59")));
    assert!(cal.is_open(local(&cal, "2026-01-09T23:00")));
    assert!(cal.is_open(local(&cal, "2026-01-10T05:59")));
    assert!(!cal.is_open(local(&cal, "2026-01-10T06:00")));
    assert_eq!(
        cal.open_until(local(&cal, "2026-01-09T22:00")),
        Some(local(&cal, "2026-01-10T06:00"))
    );
    // Sunday's range wraps over the end of the week into Monday.
    assert!(cal.is_open(local(&cal, "2026-01-12T00:30")));
    assert_eq!(
        cal.next_open(local(&cal, "2026-01-10T06:00")),
        Some(local(&cal, "2026-01-11T23:00"))
    );
}

#[test]
fn a_holiday_cuts_the_part_of_a_range_that_spills_into_it() {
    let cal = compile(&CalendarSpec {
        holidays: vec!["2026-01-10".to_owned()],
        ..spec("America/New_York", &[("fri", "22:00-06:00")])
    });
    assert_eq!(
        cal.open_until(local(&cal, "2026-01-09T22:00")),
        Some(local(&cal, "2026-01-10T00:00"))
    );
    assert!(!cal.is_open(local(&cal, "2026-01-10T01:00")));
}

#[test]
fn maintenance_crossing_midnight() {
    let cal = compile(&CalendarSpec {
        maintenance: vec![weekly("sat 23:00-01:00")],
        ..spec("America/New_York", &[("mon-sun", "00:00-24:00")])
    });
    assert_eq!(
        cal.in_maintenance(local(&cal, "2026-01-10T23:30")),
        Some(local(&cal, "2026-01-11T01:00"))
    );
    assert_eq!(
        cal.in_maintenance(local(&cal, "2026-01-11T00:30")),
        Some(local(&cal, "2026-01-11T01:00"))
    );
    assert!(cal.is_open(local(&cal, "2026-01-11T01:00")));
}

#[test]
fn always_open_reports_the_horizon() {
    let cal = compile(&spec("Europe/Berlin", &[("mon-sun", "00:00-24:00")]));
    let at = utc("2026-05-05T05:05:05Z");
    assert_eq!(cal.next_open(at), Some(at));
    let horizon = SignedDuration::from_hours(24 * SEARCH_HORIZON_DAYS);
    assert_eq!(
        cal.open_until(at),
        Some(at.checked_add(horizon).expect("in range"))
    );
    assert_eq!(cal.in_maintenance(at), None);
    assert_eq!(cal.next_maintenance(at), None);
}

#[test]
fn a_calendar_closed_by_holidays_still_answers_quickly() {
    // Open one hour a week; holidays cover the next 400 days.
    let first: Date = "2026-01-01".parse().expect("date");
    let holidays = (0..400)
        .map(|day| {
            first
                .checked_add(SignedDuration::from_hours(24 * day))
                .expect("date")
                .to_string()
        })
        .collect();
    let cal = compile(&CalendarSpec {
        holidays,
        ..spec("America/New_York", &[("mon", "09:00-10:00")])
    });
    // 2027-02-05 is the first free date; the first Monday after it:
    assert_eq!(
        cal.next_open(utc("2026-01-01T00:00:00Z")),
        Some(local(&cal, "2027-02-08T09:00"))
    );
}

#[test]
fn next_open_gives_up_at_the_end_of_time() {
    let cal = compile(&spec("America/New_York", &[("mon", "09:00-10:00")]));
    assert_eq!(cal.next_open(Timestamp::MAX), None);
    assert!(!cal.is_open(Timestamp::MAX));
    assert_eq!(cal.open_until(Timestamp::MAX), None);
    let near_the_end = utc("9999-12-29T00:00:00Z");
    assert_eq!(cal.next_open(near_the_end), None);
}

#[test]
fn a_long_absolute_window_is_skipped_not_counted() {
    let cal = compile(&CalendarSpec {
        maintenance: vec![absolute("2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z")],
        ..spec("UTC", &[("mon-fri", "09:00-17:00")])
    });
    assert_eq!(
        cal.next_open(utc("2026-06-01T00:00:00Z")),
        Some(utc("2028-01-03T09:00:00Z"))
    );
    assert_eq!(
        cal.in_maintenance(utc("2026-06-01T00:00:00Z")),
        Some(utc("2028-01-01T00:00:00Z"))
    );
}

#[test]
fn closed_between_counts_held_time() {
    let cal = acme_office();
    let monday = local(&cal, "2026-01-05T00:00");
    let tuesday = local(&cal, "2026-01-06T00:00");
    assert_eq!(
        cal.closed_between(monday, tuesday),
        std::time::Duration::from_secs(15 * 3600)
    );
    assert_eq!(
        cal.closed_between(tuesday, monday),
        std::time::Duration::ZERO
    );
}

// --- Daylight saving: America/New_York --------------------------------------

#[test]
fn new_york_spring_forward_hours_in_the_gap_do_not_exist() {
    // 2026-03-08: 02:00 EST jumps to 03:00 EDT at 07:00Z.
    let cal = compile(&spec("America/New_York", &[("sun", "02:00-03:00")]));
    assert_eq!(
        cal.next_open(utc("2026-03-08T05:00:00Z")),
        // The next Sunday, 02:00 EDT.
        Some(utc("2026-03-15T06:00:00Z"))
    );
    assert!(!cal.is_open(utc("2026-03-08T07:00:00Z")));
    assert_eq!(
        cal.open_windows(utc("2026-03-07T00:00:00Z"), utc("2026-03-10T00:00:00Z")),
        []
    );
}

#[test]
fn new_york_spring_forward_boundaries_in_the_gap_resolve_forward() {
    let cal = compile(&CalendarSpec {
        maintenance: vec![weekly("sun 01:00-04:00")],
        ..spec("America/New_York", &[("sun", "01:30-02:30, 02:45-05:00")])
    });
    let windows =
        |cal: &Calendar| cal.open_windows(utc("2026-03-08T00:00:00Z"), utc("2026-03-09T00:00:00Z"));
    // Hours alone: 01:30 EST..03:00 EDT (30 min), then 03:00 EDT..05:00 EDT
    // touch and merge; maintenance 01:00 EST..04:00 EDT is two real hours.
    assert_eq!(
        cal.maintenance_windows(utc("2026-03-08T00:00:00Z"), utc("2026-03-09T00:00:00Z")),
        [Window {
            start: utc("2026-03-08T06:00:00Z"),
            end: utc("2026-03-08T08:00:00Z"),
        }]
    );
    assert_eq!(
        windows(&cal),
        [Window {
            start: utc("2026-03-08T08:00:00Z"),
            end: utc("2026-03-08T09:00:00Z"),
        }]
    );
    let hours_only = compile(&spec("America/New_York", &[("sun", "01:30-02:30")]));
    assert_eq!(
        windows(&hours_only),
        [Window {
            start: utc("2026-03-08T06:30:00Z"),
            end: utc("2026-03-08T07:00:00Z"),
        }]
    );
    let opens_in_gap = compile(&spec("America/New_York", &[("sun", "02:30-04:00")]));
    assert_eq!(
        opens_in_gap.next_open(utc("2026-03-08T05:00:00Z")),
        Some(utc("2026-03-08T07:00:00Z")),
        "02:30 does not exist: opens at 03:00 EDT"
    );
}

#[test]
fn new_york_fall_back_windows_last_their_real_length() {
    // 2026-11-01: 02:00 EDT falls back to 01:00 EST at 06:00Z.
    let cal = compile(&CalendarSpec {
        maintenance: vec![weekly("sun 00:00-03:00")],
        ..spec("America/New_York", &[("mon-sun", "00:00-24:00")])
    });
    let at = utc("2026-11-01T04:00:00Z"); // 00:00 EDT
    assert_eq!(cal.in_maintenance(at), Some(utc("2026-11-01T08:00:00Z")));
    assert_eq!(
        cal.closed_between(utc("2026-11-01T00:00:00Z"), utc("2026-11-02T00:00:00Z")),
        std::time::Duration::from_secs(4 * 3600),
        "three wall-clock hours, four real ones"
    );
}

#[test]
fn new_york_fall_back_ranges_inside_the_repeated_hour_do_not_split() {
    let cal = compile(&CalendarSpec {
        maintenance: vec![weekly("sun 01:00-02:00")],
        ..spec("America/New_York", &[("mon-sun", "00:00-24:00")])
    });
    // 01:00 EDT (05:00Z) to 02:00 EST (07:00Z): both passes of the hour.
    assert_eq!(
        cal.in_maintenance(utc("2026-11-01T05:00:00Z")),
        Some(utc("2026-11-01T07:00:00Z"))
    );
    assert_eq!(
        cal.in_maintenance(utc("2026-11-01T06:30:00Z")),
        Some(utc("2026-11-01T07:00:00Z")),
        "01:30 EST, the second pass"
    );
    let hours = compile(&spec("America/New_York", &[("sun", "01:00-01:30")]));
    // From the first 01:00 (EDT) to the second 01:30 (EST): 90 minutes.
    assert_eq!(
        hours.open_windows(utc("2026-11-01T00:00:00Z"), utc("2026-11-02T00:00:00Z")),
        [Window {
            start: utc("2026-11-01T05:00:00Z"),
            end: utc("2026-11-01T06:30:00Z"),
        }]
    );
}

// --- Daylight saving: Europe/Berlin -----------------------------------------

#[test]
fn berlin_spring_forward() {
    // 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00Z.
    let in_gap = compile(&spec("Europe/Berlin", &[("sun", "02:00-03:00")]));
    assert_eq!(
        in_gap.next_open(utc("2026-03-28T12:00:00Z")),
        Some(utc("2026-04-05T00:00:00Z")),
        "skips the day the hour does not exist: next Sunday 02:00 CEST"
    );
    let across = compile(&CalendarSpec {
        maintenance: vec![weekly("sun 01:00-04:00")],
        ..spec("Europe/Berlin", &[("mon-sun", "00:00-24:00")])
    });
    // 01:00 CET = 00:00Z to 04:00 CEST = 02:00Z: two real hours.
    assert_eq!(
        across.in_maintenance(utc("2026-03-29T00:00:00Z")),
        Some(utc("2026-03-29T02:00:00Z"))
    );
    assert!(across.is_open(utc("2026-03-28T23:59:59Z")));
}

#[test]
fn berlin_fall_back() {
    // 2026-10-25: 03:00 CEST falls back to 02:00 CET at 01:00Z.
    let cal = compile(&CalendarSpec {
        maintenance: vec![weekly("sat 23:00-04:00")],
        ..spec("Europe/Berlin", &[("mon-sun", "00:00-24:00")])
    });
    // Saturday 23:00 CEST = 21:00Z to Sunday 04:00 CET = 03:00Z: six hours.
    assert_eq!(
        cal.next_maintenance(utc("2026-10-24T12:00:00Z")),
        Some(Window {
            start: utc("2026-10-24T21:00:00Z"),
            end: utc("2026-10-25T03:00:00Z"),
        })
    );
    let repeated = compile(&spec("Europe/Berlin", &[("sun", "02:00-03:00")]));
    // First 02:00 (CEST, 00:00Z) to the only 03:00 (CET, 02:00Z).
    assert_eq!(
        repeated.open_until(utc("2026-10-25T00:00:00Z")),
        Some(utc("2026-10-25T02:00:00Z"))
    );
    assert!(repeated.is_open(utc("2026-10-25T01:30:00Z")), "02:30 CET");
}

// --- Properties over pseudo-random instants ---------------------------------

fn property_calendars() -> Vec<Calendar> {
    vec![
        acme_office(),
        compile(&CalendarSpec {
            holidays: vec!["2026-10-24".to_owned(), "2027-03-27".to_owned()],
            maintenance: vec![
                weekly("sat 23:00-04:00"),
                weekly("wed 12:00-12:30"),
                absolute("2026-07-01T10:00:00Z", "2026-07-03T10:00:00Z"),
            ],
            hours: vec![
                (
                    "mon-fri".to_owned(),
                    vec!["08:00-12:00, 12:15-17:00".to_owned()],
                ),
                ("fri-sun".to_owned(), vec!["22:00-06:00".to_owned()]),
                (
                    "sun".to_owned(),
                    vec!["02:00-03:00".to_owned(), "01:30-02:30".to_owned()],
                ),
            ],
            ..spec("Europe/Berlin", &[])
        }),
        compile(&CalendarSpec {
            maintenance: vec![weekly("sun 01:00-02:00")],
            ..spec(
                "America/New_York",
                &[("sun", "00:30-01:30, 02:00-02:15"), ("wed", "12:00-13:00")],
            )
        }),
    ]
}

/// Instants spread over 2026 and 2027, both DST seasons included, at
/// second resolution so that boundaries are hit only by luck.
fn random_instants(rng: &mut fastrand::Rng, count: usize) -> Vec<Timestamp> {
    let start = utc("2026-01-01T00:00:00Z").as_second();
    let end = utc("2028-01-01T00:00:00Z").as_second();
    (0..count)
        .map(|_| Timestamp::from_second(rng.i64(start..end)).expect("in range"))
        .collect()
}

#[test]
fn property_next_open_is_the_first_open_instant() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_ca1e);
    for cal in property_calendars() {
        for at in random_instants(&mut rng, 700) {
            let opens = cal.next_open(at).expect("opens within the horizon");
            assert!(opens >= at, "{at}: {opens}");
            assert!(cal.is_open(opens), "{at}: next_open {opens} is closed");
            if opens > at {
                assert!(!cal.is_open(at), "{at}: open but next_open is {opens}");
                let just_before = opens
                    .checked_sub(SignedDuration::from_nanos(1))
                    .expect("in range");
                assert!(!cal.is_open(just_before), "{at}: open before {opens}");
            }
            let step = minutes(rng.i64(3..=7));
            let mut probe = at;
            while probe < opens {
                assert!(
                    !cal.is_open(probe),
                    "{}: {probe} is open, before next_open {opens} from {at}",
                    cal.name()
                );
                probe = probe.checked_add(step).expect("in range");
            }
        }
    }
}

#[test]
fn property_maintenance_ends_after_its_window() {
    let mut rng = fastrand::Rng::with_seed(0xface_b00c);
    for cal in property_calendars() {
        // Half the instants inside a window, so the property is exercised.
        let mut instants = random_instants(&mut rng, 1000);
        for at in instants.clone() {
            if let Some(window) = cal.next_maintenance(at) {
                let length = window.duration().as_secs().max(1);
                let offset = SignedDuration::from_secs(rng.i64(0..length));
                instants.push(window.start.checked_add(offset).expect("in range"));
            }
        }
        for at in instants {
            let Some(end) = cal.in_maintenance(at) else {
                continue;
            };
            assert!(end > at, "{at}: ends at {end}");
            assert!(!cal.is_open(at), "{at}: open inside maintenance");
            assert_eq!(
                cal.in_maintenance(end),
                None,
                "{at}: {end} in the same window"
            );
            let step = minutes(rng.i64(3..=7));
            let mut probe = at;
            while probe < end {
                assert_eq!(cal.in_maintenance(probe), Some(end), "{at}: probe {probe}");
                probe = probe.checked_add(step).expect("in range");
            }
        }
    }
}

#[test]
fn property_open_until_ends_the_open_period() {
    let mut rng = fastrand::Rng::with_seed(0x0be7_1157);
    for cal in property_calendars() {
        for at in random_instants(&mut rng, 700) {
            let opens = cal.next_open(at).expect("opens within the horizon");
            let until = cal.open_until(opens).expect("open at next_open");
            assert!(until > opens, "{at}: {opens}..{until}");
            assert!(!cal.is_open(until), "{at}: still open at {until}");
            assert!(cal.is_open(
                until
                    .checked_sub(SignedDuration::from_nanos(1))
                    .expect("in range")
            ));
            assert_eq!(cal.open_until(at).is_some(), cal.is_open(at));
            let step = minutes(rng.i64(3..=7));
            let mut probe = opens;
            while probe < until {
                assert!(
                    cal.is_open(probe),
                    "{at}: {probe} closed inside {opens}..{until}"
                );
                probe = probe.checked_add(step).expect("in range");
            }
        }
    }
}

#[test]
fn property_availability_agrees_with_the_single_answers() {
    let mut rng = fastrand::Rng::with_seed(42);
    for cal in property_calendars() {
        for at in random_instants(&mut rng, 500) {
            match cal.availability(at) {
                Availability::Maintenance { until } => {
                    assert_eq!(cal.in_maintenance(at), Some(until));
                    assert!(!cal.is_open(at));
                }
                Availability::Open { until } => {
                    assert!(cal.is_open(at));
                    assert_eq!(cal.open_until(at), Some(until));
                }
                Availability::OffHours { opens } => {
                    assert!(!cal.is_open(at));
                    assert_eq!(cal.in_maintenance(at), None);
                    assert_eq!(cal.next_open(at), opens);
                }
            }
        }
    }
}
