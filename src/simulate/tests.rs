//! Runs on small compiled policies: exact times without jitter, bounds with
//! it, answers judged by the step's classifier, calendar holds of real
//! calendars, and runs whose path depends on luck.

use super::*;
use crate::compile::compile;
use crate::lifecycle::signed;
use crate::model::{CompiledPolicy, ErrorKind, Response, TransportError};
use crate::policy::{EnvMode, Format, SourceFile};

fn policy(text: &str) -> CompiledPolicy {
    let c = compile(
        &[SourceFile::new("p.yaml", text, Format::Yaml)],
        &EnvMode::Placeholders,
    );
    assert!(!c.has_errors(), "{:#?}", c.diagnostics);
    c.policy.unwrap()
}

fn opts(limit: u32) -> Options {
    Options {
        limit,
        split: JitterSplit::Refuse,
        history: Default::default(),
    }
}

fn t0() -> Timestamp {
    "2026-05-04T10:00:00Z".parse().unwrap()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn offsets(run: &Run) -> Vec<(Duration, Duration)> {
    run.attempts
        .iter()
        .map(|a| (offset(t0(), a.at.lo), offset(t0(), a.at.hi)))
        .collect()
}

fn status(code: u16, body: &str, retry_after: Option<&str>) -> Answer {
    Answer::Result(Ok(Response {
        status: code,
        retry_after: retry_after.map(str::to_string),
        body: body.to_string(),
        headers: Vec::new(),
    }))
}

const CHANNELS: &str = "channels:\n  a: { file: { dir: a } }\n  b: { file: { dir: b } }\n  \
                        c: { file: { dir: c } }\n";

#[test]
fn a_failing_partner_without_jitter_gets_exact_times_then_fallbacks_then_death() {
    let p = policy(&format!(
        "templates:\n  t: {{ backoff: fixed, initial: 5s, retries: 1, jitter: none }}\n\
         {CHANNELS}flows:\n  f:\n    steps:\n      - {{ name: s, channel: a, retry: t, \
         fallback: [b, c] }}\n"
    ));
    let run = simulate(&p, &p.flows["f"], 0, t0(), opts(100), None, |_| {
        Some(Answer::Failing)
    })
    .unwrap();
    let at: Vec<u64> = run
        .attempts
        .iter()
        .map(|a| {
            assert!(a.at.is_exact());
            offset(t0(), a.at.mid).as_secs()
        })
        .collect();
    assert_eq!(at, [0, 5, 5, 10, 10, 15]);
    let channels: Vec<&str> = run.attempts.iter().map(|a| a.channel.as_str()).collect();
    assert_eq!(channels, ["a", "a", "b", "b", "c", "c"]);
    let decisions: Vec<&str> = run.attempts.iter().map(|a| a.decision.as_str()).collect();
    assert_eq!(
        decisions,
        ["retry", "fallback", "retry", "fallback", "retry", "dead"]
    );
    assert_eq!(run.attempts[3].series_attempt, 2);
    assert_eq!(run.end, End::Dead(Reason::Exhausted));
}

#[test]
fn jitter_gives_bounds_that_add_up() {
    let p = policy(&format!(
        "{CHANNELS}flows:\n  f:\n    steps:\n      - {{ name: s, channel: a }}\n"
    ));
    // standard: 2s, 4s, 8s, each ±20%.
    let run = simulate(&p, &p.flows["f"], 0, t0(), opts(100), None, |_| {
        Some(Answer::Failing)
    })
    .unwrap();
    assert_eq!(
        offsets(&run),
        [
            (secs(0.0), secs(0.0)),
            (secs(1.6), secs(2.4)),
            (secs(4.8), secs(7.2)),
            (secs(11.2), secs(16.8)),
        ]
    );
    assert_eq!(offset(t0(), run.attempts[3].at.mid), secs(14.0));
    let delay = run.attempts[0].delay.unwrap();
    assert_eq!(
        (delay.lo, delay.mid, delay.hi),
        (secs(1.6), secs(2.0), secs(2.4))
    );
    assert_eq!(run.attempts[3].delay, None);
}

#[test]
fn answers_are_judged_by_the_steps_classifier_and_move_through_steps() {
    let p = policy(&format!(
        "classifiers:\n  k:\n    rules:\n      - name: busy\n        match: {{ status: 200, \
         body: busy }}\n        outcome: retry\n{CHANNELS}flows:\n  f:\n    steps:\n      \
         - {{ name: one, channel: a, classify: k }}\n      - {{ name: two, channel: b }}\n"
    ));
    let mut answers = vec![
        status(200, "busy", None),
        status(429, "", Some("30")),
        status(201, "ok", None),
        Answer::Result(Err(TransportError {
            kind: ErrorKind::Timeout,
            message: "timed out".into(),
        })),
    ]
    .into_iter();
    let run = simulate(&p, &p.flows["f"], 0, t0(), opts(100), None, |_| {
        answers.next()
    })
    .unwrap();
    let seen: Vec<(&str, &str, &str)> = run
        .attempts
        .iter()
        .map(|a| (a.step.as_str(), a.rule.as_str(), a.decision.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("one", "busy", "retry"),
            ("one", "builtin[1]", "retry"),
            ("one", "builtin[0]", "next_step"),
            ("two", "builtin[3]", "retry"),
        ]
    );
    // Retry-After replaces the backoff, jitter and all.
    let delay = run.attempts[1].delay.unwrap();
    assert!(delay.is_exact());
    assert_eq!(delay.mid, secs(30.0));
    assert_eq!(run.attempts[1].retry_after, Some(secs(30.0)));
    // The next step starts at once, where the success was.
    assert_eq!(run.attempts[3].at, run.attempts[2].at);
    match run.end {
        End::Pending {
            step_index,
            channel_index,
            next,
            held: None,
        } => {
            assert_eq!((step_index, channel_index), (1, 0));
            assert_eq!(next.lo, run.attempts[3].at.lo + signed(secs(1.6)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_permanent_failure_is_dead_at_once() {
    let p = policy(&format!(
        "{CHANNELS}flows:\n  f:\n    steps:\n      - {{ name: s, channel: a, fallback: b }}\n"
    ));
    let run = simulate(&p, &p.flows["f"], 0, t0(), opts(100), None, |_| {
        Some(status(400, "", None))
    })
    .unwrap();
    assert_eq!(run.attempts.len(), 1);
    assert_eq!(run.end, End::Dead(Reason::Permanent));
}

/// Open Mondays from 11:00 UTC (an hour after `t0`) for `monday`, and
/// Tuesdays 09:00-18:00; the step holds off hours.
fn held_policy(template: &str, monday: &str) -> CompiledPolicy {
    policy(&format!(
        "templates:\n  t: {template}\ncalendars:\n  c:\n    timezone: UTC\n    hours:\n      \
         mon: \"{monday}\"\n      tue: \"09:00-18:00\"\n{CHANNELS}flows:\n  f:\n    steps:\n      \
         - {{ name: s, channel: a, retry: t, hours: {{ calendar: c, off_hours: hold }} }}\n"
    ))
}

#[test]
fn calendar_holds_move_attempts_without_burning_the_deadline() {
    let p = held_policy(
        "{ backoff: fixed, initial: 10s, retries: 3, total_timeout: 30s, jitter: none }",
        "11:00-18:00",
    );
    let run = simulate(&p, &p.flows["f"], 0, t0(), opts(100), None, |_| {
        Some(Answer::Failing)
    })
    .unwrap();
    let first = &run.attempts[0];
    assert_eq!(first.hold, Some(Reason::OffHours));
    assert_eq!(offset(t0(), first.due.mid), secs(0.0));
    assert_eq!(offset(t0(), first.at.mid), secs(3600.0));
    let at: Vec<u64> = run
        .attempts
        .iter()
        .map(|a| offset(t0(), a.at.mid).as_secs())
        .collect();
    // The hour held before the first attempt is not part of the series.
    assert_eq!(at, [3600, 3610, 3620, 3630]);
    assert_eq!(run.end, End::Dead(Reason::Exhausted));
}

#[test]
fn a_retry_due_while_closed_waits_for_the_opening_and_the_night_is_not_counted() {
    // Monday 11:00-11:15 only: the second retry (11:20) waits until
    // Tuesday 09:00; the 30m deadline is counted in open time only.
    let p = held_policy(
        "{ backoff: fixed, initial: 10m, retries: 3, total_timeout: 30m, jitter: none }",
        "11:00-11:15",
    );
    let run = simulate(&p, &p.flows["f"], 0, t0(), opts(100), None, |_| {
        Some(Answer::Failing)
    })
    .unwrap();
    let at: Vec<String> = run.attempts.iter().map(|a| a.at.mid.to_string()).collect();
    assert_eq!(
        at,
        [
            "2026-05-04T11:00:00Z",
            "2026-05-04T11:10:00Z",
            "2026-05-05T09:00:00Z",
            "2026-05-05T09:10:00Z",
        ]
    );
    assert_eq!(run.attempts[1].decision, "suspend");
    assert_eq!(run.attempts[2].hold, Some(Reason::OffHours));
    assert_eq!(
        offset(run.attempts[2].due.mid, run.attempts[2].at.mid),
        secs(21.0 * 3600.0 + 40.0 * 60.0)
    );
    assert_eq!(run.end, End::Dead(Reason::Exhausted));
}

#[test]
fn a_path_that_depends_on_jitter_is_refused() {
    // Retry 3 lands at 24s..36s; the deadline is 25s.
    let p = policy(&format!(
        "templates:\n  t: {{ backoff: fixed, initial: 10s, retries: 3, total_timeout: 25s }}\n\
         {CHANNELS}flows:\n  f:\n    steps:\n      - {{ name: s, channel: a, retry: t }}\n"
    ));
    let err = simulate(&p, &p.flows["f"], 0, t0(), opts(100), None, |_| {
        Some(Answer::Failing)
    })
    .unwrap_err();
    assert_eq!(
        err,
        SimError::DependsOnJitter {
            attempt: 3,
            lo: "retry",
            hi: "give up (dead)",
        }
    );
    // Explain follows the nominal path (dead at 30s) and says where luck
    // decides.
    let run = simulate(
        &p,
        &p.flows["f"],
        0,
        t0(),
        Options {
            limit: 100,
            split: JitterSplit::FollowNominal,
            history: Default::default(),
        },
        None,
        |_| Some(Answer::Failing),
    )
    .unwrap();
    assert_eq!(run.attempts.len(), 3);
    assert_eq!(run.attempts[2].split, Some(("retry", "give up (dead)")));
    assert_eq!(run.attempts[1].split, None);
    assert_eq!(run.end, End::Dead(Reason::Exhausted));
}

#[test]
fn the_limit_and_the_start_step_are_kept() {
    let p = policy(&format!(
        "{CHANNELS}flows:\n  f:\n    steps:\n      - {{ name: one, channel: a }}\n      \
         - {{ name: two, channel: b }}\n"
    ));
    let run = simulate(&p, &p.flows["f"], 1, t0(), opts(2), None, |_| {
        Some(Answer::Failing)
    })
    .unwrap();
    assert_eq!(run.attempts.len(), 2);
    assert_eq!(run.attempts[0].step, "two");
    assert_eq!(run.end, End::Limit);
    assert!(simulate(&p, &p.flows["f"], 2, t0(), opts(2), None, |_| None).is_err());
}

const BREAKERS: &str = "templates:\n  t: { backoff: fixed, initial: 5s, retries: 1, jitter: none }\n\
                        channels:\n  a: { file: { dir: a }, circuit_breaker: { failures: 2, cooldown: 30s } }\n  \
                        b: { file: { dir: b }, circuit_breaker: { failures: 2, cooldown: 60s } }\n";

#[test]
fn an_open_breaker_skips_to_the_fallback_and_is_recorded_as_a_skip() {
    let p = policy(&format!(
        "{BREAKERS}flows:\n  f:\n    steps:\n      - {{ name: s, channel: a, retry: t, fallback: b }}\n"
    ));
    let mut answers = [Answer::BreakerOpen, status(200, "", None)].into_iter();
    let run = simulate(&p, &p.flows["f"], 0, t0(), opts(100), None, |_| {
        answers.next()
    })
    .unwrap();
    let rows: Vec<(&str, Outcome, Decision)> = run
        .attempts
        .iter()
        .map(|a| (a.channel.as_str(), a.outcome, a.decision))
        .collect();
    assert_eq!(
        rows,
        [
            ("a", Outcome::Skipped, Decision::Fallback),
            ("b", Outcome::Success, Decision::Succeeded),
        ]
    );
    assert_eq!(run.attempts[1].at, Span::exact(t0()));
    assert_eq!(run.end, End::Succeeded);
}

#[test]
fn an_open_breaker_on_the_last_channel_holds_the_job_until_the_probe() {
    let p = policy(&format!(
        "{BREAKERS}flows:\n  f:\n    steps:\n      - {{ name: s, channel: b, retry: t }}\n"
    ));
    // Held, the answers run out: suspended, reason breaker_open.
    let mut answers = [Answer::BreakerOpen].into_iter();
    let run = simulate(&p, &p.flows["f"], 0, t0(), opts(100), None, |_| {
        answers.next()
    })
    .unwrap();
    assert!(run.attempts.is_empty(), "nothing sent, nothing recorded");
    assert_eq!(
        run.end,
        End::Pending {
            step_index: 0,
            channel_index: 0,
            next: Span::exact(t0() + signed(secs(60.0))),
            held: Some(Reason::BreakerOpen),
        }
    );
    // The probe goes when the cooldown ends, and the wait is not spent
    // against the series.
    let mut answers = [Answer::BreakerOpen, status(200, "", None)].into_iter();
    let run = simulate(&p, &p.flows["f"], 0, t0(), opts(100), None, |_| {
        answers.next()
    })
    .unwrap();
    assert_eq!(run.attempts.len(), 1);
    assert_eq!(run.attempts[0].at, Span::exact(t0() + signed(secs(60.0))));
    assert_eq!(run.attempts[0].hold, Some(Reason::BreakerOpen));
    assert_eq!(run.end, End::Succeeded);
}

#[test]
fn a_breaker_answer_needs_a_breaker_on_the_channel() {
    let p = policy(&format!(
        "{CHANNELS}flows:\n  f:\n    steps:\n      - {{ name: s, channel: a }}\n"
    ));
    let err = simulate(&p, &p.flows["f"], 0, t0(), opts(100), None, |_| {
        Some(Answer::BreakerOpen)
    })
    .unwrap_err();
    assert_eq!(
        err,
        SimError::NoBreaker {
            answer: 1,
            channel: "a".into()
        }
    );
}

#[test]
fn a_retry_over_quota_waits_for_the_next_hour_and_is_held() {
    let p = policy(&format!(
        "{BREAKERS}flows:\n  f:\n    steps:\n      - {{ name: s, channel: a, retry: t }}\n"
    ));
    let over = |code| {
        let Answer::Result(result) = status(code, "", None) else {
            unreachable!()
        };
        Answer::OverQuota(result)
    };
    let mut answers = [over(503), status(200, "", None)].into_iter();
    let run = simulate(&p, &p.flows["f"], 0, t0(), opts(100), None, |_| {
        answers.next()
    })
    .unwrap();
    assert_eq!(run.attempts[0].decision, Decision::Suspend);
    assert_eq!(run.attempts[0].delay.map(|d| d.mid), Some(secs(5.0)));
    let hour: Timestamp = "2026-05-04T11:00:00Z".parse().unwrap();
    assert_eq!(run.attempts[1].due, Span::exact(t0() + signed(secs(5.0))));
    assert_eq!(run.attempts[1].at, Span::exact(hour));
    assert_eq!(run.attempts[1].hold, Some(Reason::Quota));
    // The hour waited is held time: the one retry is still allowed, and a
    // success ends the job.
    assert_eq!(run.end, End::Succeeded);
}
