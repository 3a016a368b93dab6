//! The interpreter: a pure function from where a job stands and the verdict
//! on its last attempt to what happens next.
//!
//! A step is tried on its primary channel until its template's retries run
//! out (or its `total_timeout` would be passed); then each fallback channel in
//! order, each with the step's template afresh; then the job is dead. A
//! permanent failure goes dead at once. A success moves to the next step, or
//! finishes the job.
//!
//! # Calendars
//!
//! A step with `hours` asks its calendar twice, through [`hold_at`]:
//!
//! - before an attempt (the executor asks at the instant the job is
//!   claimed): inside a maintenance window with `maintenance: suspend`, the
//!   job is suspended until the window ends; while closed with
//!   `off_hours: hold`, until the calendar next opens. No attempt is made,
//!   none is counted;
//! - after a failure ([`decide`]): the retry's delay, retries and deadline
//!   come from the template in force at the failure ([`template_at`]: the
//!   `off_hours` template while the calendar is closed, the `in_hours` one
//!   while it is open, else the step's `retry`); then, if the retry
//!   would fall where the step holds, the job is suspended straight to the
//!   end of that hold ([`Then::Suspend`]), so the API shows the real resume
//!   time at once.
//!
//! Time held never counts against `total_timeout`: the machine adds each
//! hold's length to [`Attempted::held`] — from the instant the attempt would
//! otherwise have run (the claim, or the retry's due time) to the hold's end.
//! Waiting for a claim after a hold ends counts as active time, like the lag
//! of any retry. A hold before a series' first attempt adds nothing: the
//! deadline runs from that attempt.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::Reason;
use crate::calendar::Availability;
use crate::clock::later;
use crate::model::{Flow, MaintenanceRule, OffHours, Outcome, RetryTemplate, Step};
use crate::retry::{delay_before_retry, Verdict};

/// Where a job stands after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempted {
    pub step_index: usize,
    /// 0 is the primary channel, `k` the k-th fallback.
    pub channel_index: usize,
    /// Attempts made on this channel of this step, the last one included.
    pub attempts: u32,
    /// When the first attempt of this channel's series started.
    pub series_started_at: Timestamp,
    /// Time held by calendars or breakers during the series, which does not
    /// count against `total_timeout`.
    pub held: Duration,
    /// The step's `retry` entry chosen for the job (`None`: its own).
    pub retry_choice: Option<usize>,
    /// The attempt number from which the channel's history says retries
    /// do not succeed (an `adapt` template; `None`: no cut).
    pub adapt_cut: Option<u32>,
}

/// What the engine does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Then {
    /// Try the same channel again at `at`.
    Retry { at: Timestamp, delay: Duration },
    /// Try the same channel again, but the step's calendar holds the job at
    /// `at`, the time the retry was due: suspend it until `hold.until`.
    Suspend {
        at: Timestamp,
        delay: Duration,
        hold: Hold,
    },
    /// Retries ran out: start a fresh series on this fallback channel now.
    Fallback { channel_index: usize },
    /// The step succeeded: start the next one now.
    NextStep { step_index: usize },
    /// The last step succeeded.
    Succeeded,
    Dead {
        /// [`Reason::Exhausted`] or [`Reason::Permanent`].
        reason: Reason,
    },
}

#[cfg(test)]
impl Then {
    /// The decision recorded on the attempt's row.
    pub fn decision(&self) -> super::Decision {
        use super::Decision;
        match self {
            Then::Retry { .. } => Decision::Retry,
            Then::Suspend { .. } => Decision::Suspend,
            Then::Fallback { .. } => Decision::Fallback,
            Then::NextStep { .. } => Decision::NextStep,
            Then::Succeeded => Decision::Succeeded,
            Then::Dead { .. } => Decision::Dead,
        }
    }
}

/// Decides what follows an attempt judged `verdict` at `now`. `jitter_sample`
/// is uniform in `[0, 1)`.
pub fn decide(
    flow: &Flow,
    at: &Attempted,
    verdict: &Verdict,
    now: Timestamp,
    jitter_sample: f64,
) -> Then {
    let Some(step) = flow.steps.get(at.step_index) else {
        // The caller checks the step exists; a vanished step cannot go on.
        return Then::Dead {
            reason: Reason::Permanent,
        };
    };
    match verdict.outcome {
        Outcome::Success => {
            if at.step_index + 1 < flow.steps.len() {
                Then::NextStep {
                    step_index: at.step_index + 1,
                }
            } else {
                Then::Succeeded
            }
        }
        Outcome::Fail => Then::Dead {
            reason: Reason::Permanent,
        },
        Outcome::Retry | Outcome::RefreshAuth => {
            let template = template_at(step, now, at.retry_choice);
            let delay = delay_before_retry(template, at.attempts, jitter_sample)
                .map(|backoff| verdict.retry_after.unwrap_or(backoff));
            let retry_at = delay.map(|d| (later(now, d), d));
            let within_deadline = |when: Timestamp| match template.total_timeout {
                Some(total) => when <= later(later(at.series_started_at, total), at.held),
                None => true,
            };
            let scheduled = retry_at.filter(|(when, _)| within_deadline(*when));
            // History cuts a retry the template would have made.
            let cut = at
                .adapt_cut
                .is_some_and(|cut| at.attempts.saturating_add(1) >= cut);
            match scheduled {
                Some((when, delay)) if !cut => match hold_at(step, when) {
                    Some(hold) => Then::Suspend {
                        at: when,
                        delay,
                        hold,
                    },
                    None => Then::Retry { at: when, delay },
                },
                _ if at.channel_index + 1 < step.channel_count() => Then::Fallback {
                    channel_index: at.channel_index + 1,
                },
                Some(_) => Then::Dead {
                    reason: Reason::Adapted,
                },
                None => Then::Dead {
                    reason: Reason::Exhausted,
                },
            }
        }
    }
}

/// A calendar's answer for one instant: no attempt before `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub until: Timestamp,
    /// [`Reason::Maintenance`] or [`Reason::OffHours`].
    pub reason: Reason,
}

impl Hold {
    /// How long the hold keeps a job that would have run at `from`.
    pub fn length_from(&self, from: Timestamp) -> Duration {
        Duration::try_from(self.until.duration_since(from)).unwrap_or(Duration::ZERO)
    }
}

/// How long a job is held when its calendar does not open within the
/// calendar's search horizon (a year and more): then it asks again.
pub const HOLD_RECHECK: Duration = Duration::from_secs(24 * 3600);

/// Whether `step`'s calendar forbids an attempt at `at`, and until when.
/// Maintenance comes first: inside a window a step that suspends waits for
/// the window's end (the calendar may then still be closed, and the next
/// question holds it again, with reason `off_hours`). Otherwise a closed
/// calendar — off hours, a holiday, or a window the step does not suspend
/// for — holds the job until it next opens, when `off_hours` is `hold`.
pub fn hold_at(step: &Step, at: Timestamp) -> Option<Hold> {
    let hours = step.hours.as_ref()?;
    let calendar = &hours.calendar;
    let opens = match calendar.availability(at) {
        Availability::Open { .. } => return None,
        Availability::Maintenance { until } if hours.maintenance == MaintenanceRule::Suspend => {
            return Some(Hold {
                until,
                reason: Reason::Maintenance,
            });
        }
        Availability::Maintenance { .. } => None,
        Availability::OffHours { opens } => Some(opens),
    };
    match hours.off_hours {
        OffHours::Hold => {
            let opens = opens.unwrap_or_else(|| calendar.next_open(at));
            Some(Hold {
                until: opens.unwrap_or_else(|| later(at, HOLD_RECHECK)),
                reason: Reason::OffHours,
            })
        }
        OffHours::Attempt | OffHours::Retry(_) => None,
    }
}

/// The template that governs a retry decided at `at`: the step's
/// `in_hours` template while its calendar is open, its `off_hours` one while
/// it is closed, and where `hours` chooses none, its `retry` entry `choice`
/// (the one whose `when` held for the job) or its own template.
pub fn template_at(step: &Step, at: Timestamp, choice: Option<usize>) -> &RetryTemplate {
    let chosen_by_payload = step.template(choice);
    let Some(hours) = &step.hours else {
        return chosen_by_payload;
    };
    let chosen = if hours.calendar.is_open(at) {
        hours.in_hours.as_ref()
    } else {
        match &hours.off_hours {
            OffHours::Retry(template) => Some(template),
            OffHours::Attempt | OffHours::Hold => None,
        }
    };
    chosen.unwrap_or(chosen_by_payload)
}

/// A `Duration` as jiff's signed duration, saturating.
pub fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::calendar::{Calendar, CalendarSpec, MaintenanceSpec};
    use crate::model::{Backoff, Jitter, RetryTemplate, Step, StepHours};

    fn t0() -> Timestamp {
        "2026-05-04T10:00:00Z".parse().unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn step(name: &str, template: RetryTemplate, fallback: &[&str]) -> Step {
        Step {
            name: name.into(),
            channel: format!("{name}-primary"),
            parallel: Vec::new(),
            fallback: fallback.iter().map(|s| s.to_string()).collect(),
            retry: Arc::new(template),
            retry_when: Vec::new(),
            when: None,
            body: None,
            fallback_bodies: vec![None; fallback.len()],
            classifier: None,
            hours: None,
        }
    }

    fn no_jitter(name: &str) -> RetryTemplate {
        RetryTemplate {
            jitter: Jitter::None,
            ..RetryTemplate::builtin(name).unwrap()
        }
    }

    fn flow(steps: Vec<Step>) -> Flow {
        Flow {
            name: "f".into(),
            priority: 0,
            steps,
            on_dead: None,
            kept_responses: Default::default(),
        }
    }

    fn verdict(outcome: Outcome) -> Verdict {
        Verdict {
            outcome,
            rule: "test".into(),
            retry_after: None,
        }
    }

    /// Drives a step that keeps failing; returns each decision and the time
    /// it was made, as the engine would.
    fn run_failing(flow: &Flow, sample: f64) -> Vec<(Timestamp, Then)> {
        let mut now = t0();
        let mut pos = Attempted {
            step_index: 0,
            channel_index: 0,
            attempts: 1,
            series_started_at: now,
            held: Duration::ZERO,
            retry_choice: None,
            adapt_cut: None,
        };
        let mut out = Vec::new();
        loop {
            let next = decide(flow, &pos, &verdict(Outcome::Retry), now, sample);
            out.push((now, next.clone()));
            match next {
                Then::Retry { at, .. } => {
                    now = at;
                    pos.attempts += 1;
                }
                Then::Fallback { channel_index } => {
                    pos = Attempted {
                        channel_index,
                        attempts: 1,
                        series_started_at: now,
                        ..pos
                    };
                }
                _ => return out,
            }
        }
    }

    fn offsets(run: &[(Timestamp, Then)]) -> Vec<i64> {
        run.iter()
            .map(|(at, _)| at.duration_since(t0()).as_secs())
            .collect()
    }

    #[test]
    fn builtin_templates_space_attempts_exactly() {
        let cases = [
            ("conservative", vec![0, 5, 10]),
            ("standard", vec![0, 2, 6, 14]),
            ("aggressive", vec![0, 1, 3, 7, 15, 31]),
        ];
        for (name, expected) in cases {
            let f = flow(vec![step("s", no_jitter(name), &[])]);
            let run = run_failing(&f, 0.5);
            assert_eq!(offsets(&run), expected, "{name}");
            assert_eq!(
                run.last().unwrap().1,
                Then::Dead {
                    reason: Reason::Exhausted
                },
                "dead after exhaustion"
            );
        }
    }

    #[test]
    fn jitter_bounds_hold_for_every_retry() {
        let f = flow(vec![step(
            "s",
            RetryTemplate::builtin("standard").unwrap(),
            &[],
        )]);
        for sample in [0.0, 0.25, 0.5, 0.999] {
            let run = run_failing(&f, sample);
            for (i, (_, next)) in run.iter().enumerate() {
                if let Then::Retry { delay, .. } = next {
                    let nominal = 2f64 * 2f64.powi(i as i32);
                    let d = delay.as_secs_f64();
                    assert!(d >= nominal * 0.8 - 1e-9 && d <= nominal * 1.2 + 1e-9);
                }
            }
        }
    }

    #[test]
    fn total_timeout_stops_new_attempts() {
        let template = RetryTemplate {
            retries: 10,
            total_timeout: Some(secs(20)),
            ..no_jitter("standard")
        };
        let f = flow(vec![step("s", template, &[])]);
        // 0, 2, 6, 14: the next (30) is past 20s after the first attempt.
        assert_eq!(offsets(&run_failing(&f, 0.5)), vec![0, 2, 6, 14]);
    }

    #[test]
    fn held_time_does_not_count_against_the_deadline() {
        let template = RetryTemplate {
            retries: 10,
            total_timeout: Some(secs(20)),
            ..no_jitter("standard")
        };
        let f = flow(vec![step("s", template, &[])]);
        let pos = Attempted {
            step_index: 0,
            channel_index: 0,
            attempts: 3,
            series_started_at: t0(),
            held: secs(3600),
            retry_choice: None,
            adapt_cut: None,
        };
        // 10s of active time + 8s delay fits the 20s deadline once the held
        // hour is left out.
        let now = t0() + signed(secs(3610));
        let next = decide(&f, &pos, &verdict(Outcome::Retry), now, 0.5);
        assert!(
            matches!(next, Then::Retry { delay, .. } if delay == secs(8)),
            "{next:?}"
        );
        let not_held = Attempted {
            held: Duration::ZERO,
            retry_choice: None,
            adapt_cut: None,
            ..pos
        };
        assert!(matches!(
            decide(&f, &not_held, &verdict(Outcome::Retry), now, 0.5),
            Then::Dead { .. }
        ));
    }

    #[test]
    fn schedule_lists_are_followed_then_the_job_dies() {
        let template = RetryTemplate {
            name: "nightly".into(),
            retries: 3,
            backoff: Backoff::Schedule {
                delays: vec![secs(60), secs(300), secs(3600)],
            },
            max_interval: None,
            total_timeout: None,
            jitter: Jitter::None,
            retry_after_cap: secs(3600),
            adapt: None,
        };
        let f = flow(vec![step("s", template, &[])]);
        assert_eq!(offsets(&run_failing(&f, 0.5)), vec![0, 60, 360, 3960]);
    }

    #[test]
    fn retry_after_replaces_the_backoff_delay() {
        let f = flow(vec![step("s", no_jitter("standard"), &[])]);
        let pos = Attempted {
            step_index: 0,
            channel_index: 0,
            attempts: 1,
            series_started_at: t0(),
            held: Duration::ZERO,
            retry_choice: None,
            adapt_cut: None,
        };
        let v = Verdict {
            retry_after: Some(secs(30)),
            ..verdict(Outcome::Retry)
        };
        assert_eq!(
            decide(&f, &pos, &v, t0(), 0.5),
            Then::Retry {
                at: t0() + signed(secs(30)),
                delay: secs(30)
            }
        );
    }

    #[test]
    fn fallbacks_are_tried_in_order_each_with_a_fresh_template() {
        let f = flow(vec![step(
            "s",
            no_jitter("conservative"),
            &["backup", "spool"],
        )]);
        let run = run_failing(&f, 0.5);
        let decisions: Vec<&str> = run.iter().map(|(_, n)| n.decision().as_str()).collect();
        assert_eq!(
            decisions,
            [
                "retry", "retry", "fallback", // primary: 3 attempts
                "retry", "retry", "fallback", // backup: 3 attempts
                "retry", "retry", "dead", // spool: 3 attempts
            ]
        );
        assert_eq!(run[2].1, Then::Fallback { channel_index: 1 });
        assert_eq!(run[5].1, Then::Fallback { channel_index: 2 });
        assert_eq!(offsets(&run), vec![0, 5, 10, 10, 15, 20, 20, 25, 30]);
    }

    #[test]
    fn a_permanent_failure_dies_at_once_even_with_fallbacks() {
        let f = flow(vec![step("s", no_jitter("standard"), &["backup"])]);
        let pos = Attempted {
            step_index: 0,
            channel_index: 0,
            attempts: 1,
            series_started_at: t0(),
            held: Duration::ZERO,
            retry_choice: None,
            adapt_cut: None,
        };
        assert_eq!(
            decide(&f, &pos, &verdict(Outcome::Fail), t0(), 0.5),
            Then::Dead {
                reason: Reason::Permanent
            }
        );
    }

    #[test]
    fn success_moves_through_the_steps_then_finishes() {
        let f = flow(vec![
            step("deliver", no_jitter("standard"), &[]),
            step("confirm", no_jitter("standard"), &[]),
        ]);
        let mut pos = Attempted {
            step_index: 0,
            channel_index: 0,
            attempts: 2,
            series_started_at: t0(),
            held: Duration::ZERO,
            retry_choice: None,
            adapt_cut: None,
        };
        assert_eq!(
            decide(&f, &pos, &verdict(Outcome::Success), t0(), 0.5),
            Then::NextStep { step_index: 1 }
        );
        pos.step_index = 1;
        assert_eq!(
            decide(&f, &pos, &verdict(Outcome::Success), t0(), 0.5),
            Then::Succeeded
        );
    }

    // ---------- calendars ----------

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// Weekdays 09:00-18:00 in New York, a holiday on Friday 2026-07-03,
    /// Sunday 02:00-04:00 maintenance and a planned outage on Tuesday
    /// 2026-05-12 from 10:00 to 11:00 local (14:00-15:00 UTC).
    fn office() -> Arc<Calendar> {
        let spec = CalendarSpec {
            timezone: "America/New_York".into(),
            hours: vec![("mon-fri".into(), vec!["09:00-18:00".into()])],
            holidays: vec!["2026-07-03".into()],
            maintenance: vec![
                MaintenanceSpec::Weekly("sun 02:00-04:00".into()),
                MaintenanceSpec::Absolute {
                    from: "2026-05-12T14:00:00Z".into(),
                    to: "2026-05-12T15:00:00Z".into(),
                },
            ],
        };
        Arc::new(Calendar::compile("office", &spec).unwrap())
    }

    fn with_hours(
        mut step: Step,
        calendar: Arc<Calendar>,
        off_hours: OffHours,
        maintenance: MaintenanceRule,
    ) -> Step {
        step.hours = Some(StepHours {
            calendar,
            in_hours: None,
            off_hours,
            maintenance,
        });
        step
    }

    fn office_step(off_hours: OffHours, maintenance: MaintenanceRule) -> Step {
        with_hours(
            step("deliver", no_jitter("aggressive"), &[]),
            office(),
            off_hours,
            maintenance,
        )
    }

    fn hold(until: &str, reason: Reason) -> Option<Hold> {
        Some(Hold {
            until: at(until),
            reason,
        })
    }

    #[test]
    fn holds_follow_the_step_rules() {
        use MaintenanceRule::{AsOffHours, Suspend};
        use Reason::{Maintenance, OffHours as Closed};
        // Friday 2026-05-08 17:59 and 18:00 EDT; Sunday 03:00 EDT (inside
        // maintenance); the planned outage on Tuesday.
        let open = at("2026-05-08T21:59:00Z");
        let evening = at("2026-05-08T22:00:00Z");
        let sunday_window = at("2026-05-10T07:00:00Z");
        let outage = at("2026-05-12T14:30:00Z");
        let monday_nine = "2026-05-11T13:00:00Z";

        let hold_all = office_step(OffHours::Hold, Suspend);
        assert_eq!(hold_at(&hold_all, open), None);
        assert_eq!(hold_at(&hold_all, evening), hold(monday_nine, Closed));
        assert_eq!(
            hold_at(&hold_all, sunday_window),
            hold("2026-05-10T08:00:00Z", Maintenance)
        );
        assert_eq!(
            hold_at(&hold_all, outage),
            hold("2026-05-12T15:00:00Z", Maintenance)
        );

        // Windows not suspended for are closed time: `hold` waits for the
        // opening, which for the Sunday window is Monday morning.
        let hold_only = office_step(OffHours::Hold, AsOffHours);
        assert_eq!(
            hold_at(&hold_only, sunday_window),
            hold(monday_nine, Closed)
        );
        assert_eq!(
            hold_at(&hold_only, outage),
            hold("2026-05-12T15:00:00Z", Closed)
        );

        // Suspending for maintenance alone leaves off hours to attempts.
        let suspend_only = office_step(OffHours::Attempt, Suspend);
        assert_eq!(hold_at(&suspend_only, evening), None);
        assert_eq!(
            hold_at(&suspend_only, sunday_window),
            hold("2026-05-10T08:00:00Z", Maintenance)
        );

        let conservative = Arc::new(no_jitter("conservative"));
        let switch = office_step(OffHours::Retry(conservative), AsOffHours);
        for instant in [open, evening, sunday_window, outage] {
            assert_eq!(hold_at(&switch, instant), None);
        }
        // The holiday: Friday 2026-07-03 is closed all day.
        assert_eq!(
            hold_at(&hold_all, at("2026-07-03T15:00:00Z")),
            hold("2026-07-06T13:00:00Z", Closed)
        );
    }

    #[test]
    fn a_cut_by_history_ends_the_series_sooner_and_says_so_only_when_it_decided() {
        let alone = flow(vec![step("s", no_jitter("standard"), &[])]);
        let with_fallback = flow(vec![step("s", no_jitter("standard"), &["backup"])]);
        let failed = verdict(Outcome::Retry);
        let pos = |attempts, adapt_cut| Attempted {
            step_index: 0,
            channel_index: 0,
            attempts,
            series_started_at: t0(),
            held: Duration::ZERO,
            retry_choice: None,
            adapt_cut,
        };
        // History says attempts from #4 do not succeed: after the third,
        // no retry; dead for that reason, or on to the fallback.
        assert!(matches!(
            decide(&alone, &pos(2, Some(4)), &failed, t0(), 0.5),
            Then::Retry { .. }
        ));
        assert_eq!(
            decide(&alone, &pos(3, Some(4)), &failed, t0(), 0.5),
            Then::Dead {
                reason: Reason::Adapted
            }
        );
        assert_eq!(
            decide(&with_fallback, &pos(3, Some(4)), &failed, t0(), 0.5),
            Then::Fallback { channel_index: 1 }
        );
        // Retries that ran out anyway are `exhausted`, cut or not.
        let last = RetryTemplate::builtin("standard").unwrap().retries + 1;
        assert_eq!(
            decide(&alone, &pos(last, Some(2)), &failed, t0(), 0.5),
            Then::Dead {
                reason: Reason::Exhausted
            }
        );
        // A success is a success.
        assert_eq!(
            decide(
                &alone,
                &pos(5, Some(2)),
                &verdict(Outcome::Success),
                t0(),
                0.5
            ),
            Then::Succeeded
        );
    }

    #[test]
    fn a_failure_off_hours_is_retried_with_the_off_hours_template() {
        let conservative = Arc::new(no_jitter("conservative"));
        let s = office_step(OffHours::Retry(conservative), MaintenanceRule::Suspend);
        let f = flow(vec![s]);
        let pos = |attempts| Attempted {
            step_index: 0,
            channel_index: 0,
            attempts,
            series_started_at: at("2026-05-08T21:00:00Z"),
            held: Duration::ZERO,
            retry_choice: None,
            adapt_cut: None,
        };
        let failed = verdict(Outcome::Retry);
        // 17:59 EDT: in hours, aggressive's second delay.
        let in_hours = at("2026-05-08T21:59:00Z");
        assert_eq!(
            decide(&f, &pos(2), &failed, in_hours, 0.5),
            Then::Retry {
                at: in_hours + signed(secs(2)),
                delay: secs(2)
            }
        );
        // 18:00 EDT: closed, conservative's fixed 5s.
        let evening = at("2026-05-08T22:00:00Z");
        assert_eq!(
            decide(&f, &pos(2), &failed, evening, 0.5),
            Then::Retry {
                at: evening + signed(secs(5)),
                delay: secs(5)
            }
        );
        // Conservative allows 2 retries: a third failure off hours ends the
        // series, though aggressive would allow five.
        assert_eq!(
            decide(&f, &pos(3), &failed, evening, 0.5),
            Then::Dead {
                reason: Reason::Exhausted
            }
        );
        assert!(matches!(
            decide(&f, &pos(3), &failed, in_hours, 0.5),
            Then::Retry { .. }
        ));

        // `in_hours` replaces the step's template while open; closed, with
        // no `off_hours` template, the step's own applies.
        let mut s = office_step(OffHours::Attempt, MaintenanceRule::AsOffHours);
        if let Some(hours) = s.hours.as_mut() {
            hours.in_hours = Some(Arc::new(no_jitter("standard")));
        }
        let f = flow(vec![s]);
        let delay = |now| match decide(&f, &pos(2), &failed, now, 0.5) {
            Then::Retry { delay, .. } => delay,
            other => panic!("{other:?}"),
        };
        assert_eq!(delay(in_hours), secs(4), "standard's second delay");
        assert_eq!(delay(evening), secs(2), "aggressive's second delay");
    }

    #[test]
    fn a_retry_due_where_the_step_holds_is_suspended_to_the_opening() {
        let s = office_step(OffHours::Hold, MaintenanceRule::Suspend);
        let f = flow(vec![s]);
        let pos = Attempted {
            step_index: 0,
            channel_index: 0,
            attempts: 4,
            series_started_at: at("2026-05-08T21:59:30Z"),
            held: Duration::ZERO,
            retry_choice: None,
            adapt_cut: None,
        };
        // Failing at 17:59:55 EDT, the 8s retry would be at 18:00:03.
        let now = at("2026-05-08T21:59:55Z");
        let next = decide(&f, &pos, &verdict(Outcome::Retry), now, 0.5);
        assert_eq!(
            next,
            Then::Suspend {
                at: now + signed(secs(8)),
                delay: secs(8),
                hold: Hold {
                    until: at("2026-05-11T13:00:00Z"),
                    reason: Reason::OffHours,
                },
            }
        );
        assert_eq!(next.decision(), "suspend");
    }

    /// Runs a step that always fails the way the executor does, calendar
    /// included: the hold before each attempt, the decision after it, and
    /// the held time added for each hold. Returns each attempt's instant
    /// and its active time (since the series' first attempt, held time
    /// left out), and how the series ended.
    fn run_with_holds(f: &Flow, start: Timestamp) -> (Vec<(Timestamp, Duration)>, Then) {
        let mut now = start;
        let mut attempts = 0;
        let mut series_started_at = start;
        let mut held = Duration::ZERO;
        let mut out = Vec::new();
        for _ in 0..1000 {
            if let Some(hold) = hold_at(&f.steps[0], now) {
                assert!(hold.until > now, "{now}: {hold:?}");
                if attempts > 0 {
                    held += hold.length_from(now);
                }
                now = hold.until;
                continue;
            }
            if attempts == 0 {
                series_started_at = now;
            }
            attempts += 1;
            let active = Duration::try_from(now.duration_since(series_started_at)).unwrap() - held;
            out.push((now, active));
            let pos = Attempted {
                step_index: 0,
                channel_index: 0,
                attempts,
                series_started_at,
                held,
                retry_choice: None,
                adapt_cut: None,
            };
            match decide(f, &pos, &verdict(Outcome::Retry), now, 0.5) {
                Then::Retry { at, .. } => now = at,
                Then::Suspend { at, hold, .. } => {
                    held += hold.length_from(at);
                    now = hold.until;
                }
                end => return (out, end),
            }
        }
        panic!("the series never ended");
    }

    #[test]
    fn property_held_time_costs_neither_retries_nor_the_deadline() {
        // A minute-scale template whose deadline cuts the series short: five
        // minutes of opening per hour make holds land inside the series.
        let template = RetryTemplate {
            name: "minutes".into(),
            retries: 8,
            backoff: Backoff::Exponential {
                initial: secs(60),
                multiplier: 2.0,
            },
            max_interval: None,
            total_timeout: Some(secs(40 * 60)),
            jitter: Jitter::None,
            retry_after_cap: secs(3600),
            adapt: None,
        };
        let hourly = (0..24)
            .map(|h| format!("{h:02}:00-{h:02}:05"))
            .collect::<Vec<_>>()
            .join(", ");
        let spec = CalendarSpec {
            timezone: "Europe/Berlin".into(),
            hours: vec![("mon-sat".into(), vec![hourly])],
            holidays: vec!["2026-10-24".into()],
            maintenance: vec![
                MaintenanceSpec::Weekly("wed 10:02-11:03".into()),
                MaintenanceSpec::Absolute {
                    from: "2026-10-25T00:30:00Z".into(),
                    to: "2026-10-26T00:03:00Z".into(),
                },
            ],
        };
        let minutes = Arc::new(Calendar::compile("minutes", &spec).unwrap());
        let plain = flow(vec![step("s", template.clone(), &[])]);
        let (expected, expected_end) = run_with_holds(&plain, t0());
        let actives: Vec<Duration> = expected.iter().map(|(_, active)| *active).collect();
        // 0, 1, 3, 7, 15, 31 minutes; 63 is past the 40-minute deadline.
        assert_eq!(actives.len(), 6);

        let calendars = [minutes, office()];
        let mut held_runs = 0;
        let mut rng = fastrand::Rng::with_seed(0x401d);
        let first = at("2026-01-01T00:00:00Z").as_second();
        let last = at("2027-01-01T00:00:00Z").as_second();
        for calendar in calendars {
            for rule in [MaintenanceRule::Suspend, MaintenanceRule::AsOffHours] {
                let f = flow(vec![with_hours(
                    step("s", template.clone(), &[]),
                    calendar.clone(),
                    OffHours::Hold,
                    rule,
                )]);
                for _ in 0..80 {
                    let start = Timestamp::from_second(rng.i64(first..last)).unwrap();
                    let (run, end) = run_with_holds(&f, start);
                    let got: Vec<Duration> = run.iter().map(|(_, active)| *active).collect();
                    assert_eq!(got, actives, "{} from {start}", calendar.name());
                    assert_eq!(end, expected_end);
                    let elapsed = run[run.len() - 1].0.duration_since(run[0].0);
                    if Duration::try_from(elapsed).unwrap() > actives[actives.len() - 1] {
                        held_runs += 1;
                    }
                    for (instant, _) in &run {
                        assert!(
                            calendar.is_open(*instant),
                            "{}: attempt at {instant} while closed",
                            calendar.name()
                        );
                    }
                }
            }
        }
        // The property means something only if series were held.
        assert!(held_runs > 100, "only {held_runs} of 320 series were held");
    }
}
