//! Calendars end to end: the real engine on a real SQLite file against a
//! real HTTP partner on loopback, with a manual clock so that every instant
//! is exact. No attempt inside a maintenance window and delivery right after
//! it; the off-hours template; holding until the calendar opens; held time
//! left out of `total_timeout` (a calendar's, and a retry's wait for the
//! engine); what the API and the CLI show.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use jiff::Timestamp;
use serde_json::{json, Value};
use steadfast::clock::ManualClock;
use steadfast::compile::load_policy;
use steadfast::engine::SchedulerConfig;
use steadfast::policy::EnvMode;

const POLICY: &str = r#"
templates:
  steady:           # 5s apart, and no new attempt 30s after the first
    backoff: fixed
    initial: 5s
    retries: 3
    total_timeout: 30s
    jitter: none
  in-hours:
    backoff: fixed
    initial: 1s
    retries: 5
    jitter: none
  after-hours:
    backoff: fixed
    initial: 10m
    retries: 5
    jitter: none

calendars:
  partner-ops:      # always open but for its Sunday maintenance
    timezone: America/New_York
    hours: { mon-sun: "00:00-24:00" }
    maintenance:
      - weekly: "sun 02:00-04:00"
  office:
    timezone: UTC
    hours: { mon-fri: "09:00-18:00" }
    holidays: [2026-05-13]

channels:
  partner: { http: { url: "${PARTNER}/leads" } }

flows:
  maintained:
    steps:
      - name: deliver
        channel: partner
        retry: steady
        hours: { calendar: partner-ops, maintenance: suspend }
  switching:
    steps:
      - name: deliver
        channel: partner
        retry: in-hours
        hours: { calendar: office, off_hours: { retry: after-hours } }
  held:
    steps:
      - name: deliver
        channel: partner
        retry: steady
        hours: { calendar: office, off_hours: hold }
  plain:
    steps:
      - name: deliver
        channel: partner
        retry: steady
"#;

struct Setup {
    clock: ManualClock,
    partner: Partner,
    node: TestNode,
    _policies: tempfile::TempDir,
}

fn at(text: &str) -> Timestamp {
    text.parse().expect("RFC 3339 instant")
}

/// A node whose engine and API read `clock`, and a partner that answers
/// as `script` says.
async fn setup(
    start: &str,
    script: impl Fn(&Received) -> axum::response::Response + Send + Sync + 'static,
) -> Setup {
    let clock = ManualClock::new(at(start));
    let partner = Partner::start(script).await;
    let policies = policy_dir(&[("hours.yaml", POLICY)]);
    let node = TestNode::start_clocked(
        policies.path(),
        &[("PARTNER", &partner.url)],
        clock.clone(),
        SchedulerConfig {
            workers: 4,
            ..SchedulerConfig::default()
        },
    )
    .await;
    Setup {
        clock,
        partner,
        node,
        _policies: policies,
    }
}

impl Setup {
    /// Moves the clock to `to` (the engine wakes for what became due).
    fn set_clock(&self, to: &str) {
        self.clock.set(at(to));
    }

    /// Waits until the job satisfies `done`; returns it.
    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let what = format!("job {id} never {what}");
        wait_for(Duration::from_secs(30), what, || self.node.job(id), done).await
    }

    /// Waits until the job has made `attempts` attempts and is waiting
    /// again (pending or suspended) or finished.
    async fn wait_attempts(&self, id: &str, attempts: u64) -> Value {
        self.wait_for(id, &format!("made {attempts} attempts"), |job| {
            job["attempts_total"] == attempts && job["state"] != "running"
        })
        .await
    }

    async fn wait_state(&self, id: &str, state: &str) -> Value {
        self.wait_for(id, &format!("reached {state}"), |job| job["state"] == state)
            .await
    }

    async fn submit(&self, flow: &str, key: &str) -> String {
        self.node
            .submit_ok(flow, json!({ "lead": key }), Some(key))
            .await
    }

    fn requests(&self) -> usize {
        self.partner.requests_to("/leads").len()
    }
}

/// Each attempt's (started_at, status, decision, delay_ms, next_at).
fn attempts(job: &Value) -> Vec<(String, u64, String, Value, Value)> {
    job["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            (
                a["started_at"].as_str().unwrap_or_default().to_string(),
                a["status"].as_u64().unwrap_or_default(),
                a["decision"].as_str().unwrap_or_default().to_string(),
                a["delay_ms"].clone(),
                a["next_at"].clone(),
            )
        })
        .collect()
}

fn attempt(
    started: &str,
    status: u64,
    decision: &str,
    delay_ms: Option<u64>,
    next_at: Option<&str>,
) -> (String, u64, String, Value, Value) {
    (
        started.to_string(),
        status,
        decision.to_string(),
        delay_ms.map_or(Value::Null, |d| json!(d)),
        next_at.map_or(Value::Null, |t| json!(t)),
    )
}

/// Sunday 2026-05-10, New York: maintenance from 02:00 to 04:00 EDT, i.e.
/// 06:00 to 08:00 UTC.
#[tokio::test]
async fn no_attempt_inside_a_maintenance_window_and_delivery_right_after() {
    // Job `a` fails twice then succeeds; job `b` succeeds at once.
    let s = setup("2026-05-10T05:59:58Z", |r| {
        if r.idempotency_key == "a" && r.attempt <= 2 {
            status(503)
        } else {
            status(200)
        }
    })
    .await;

    // 01:59:58 EDT: the first attempt fails; its retry would be due at
    // 02:00:03, inside the window, so the job is suspended to its end.
    let a = s.submit("maintained", "a").await;
    let job = s.wait_attempts(&a, 1).await;
    assert_eq!(job["state"], "suspended");
    assert_eq!(job["reason"], "maintenance");
    assert_eq!(job["next_at"], "2026-05-10T08:00:00Z");
    assert_eq!(
        attempts(&job),
        [attempt(
            "2026-05-10T05:59:58Z",
            503,
            "suspend",
            Some(5000),
            Some("2026-05-10T08:00:00Z")
        )]
    );

    // Submitted inside the window: accepted, and waits without an attempt.
    s.set_clock("2026-05-10T06:30:00Z");
    let b = s.submit("maintained", "b").await;
    let job = s
        .wait_for(&b, "was suspended", |job| job["state"] == "suspended")
        .await;
    assert_eq!(job["reason"], "maintenance");
    assert_eq!(job["next_at"], "2026-05-10T08:00:00Z");
    assert_eq!(job["attempts_total"], 0);

    // What the CLI shows of a suspended job: its reason and resume time.
    let shown = cli_show(s.node.node.url(), b.clone()).await;
    assert!(shown.contains("suspended"), "{shown}");
    assert!(shown.contains("maintenance"), "{shown}");
    assert!(shown.contains("2026-05-10 08:00:00.000Z"), "{shown}");

    // A second before the end, still nothing.
    s.set_clock("2026-05-10T07:59:59Z");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.requests(), 1, "an attempt inside the window");
    assert_eq!(s.node.job(&b).await["state"], "suspended");

    // At the end both go: `b` delivers, `a` fails once more and retries
    // 5s later. The two hours suspended do not count against `a`'s 30s
    // `total_timeout`, or that retry would not be allowed.
    s.set_clock("2026-05-10T08:00:00Z");
    let job = s.wait_state(&b, "succeeded").await;
    assert_eq!(
        attempts(&job),
        [attempt(
            "2026-05-10T08:00:00Z",
            200,
            "succeeded",
            None,
            None
        )]
    );
    let job = s.wait_attempts(&a, 2).await;
    assert_eq!(job["state"], "pending");
    assert_eq!(job["reason"], Value::Null);
    assert_eq!(job["next_at"], "2026-05-10T08:00:05Z");
    s.set_clock("2026-05-10T08:00:05Z");
    let job = s.wait_state(&a, "succeeded").await;
    assert_eq!(
        attempts(&job),
        [
            attempt(
                "2026-05-10T05:59:58Z",
                503,
                "suspend",
                Some(5000),
                Some("2026-05-10T08:00:00Z")
            ),
            attempt(
                "2026-05-10T08:00:00Z",
                503,
                "retry",
                Some(5000),
                Some("2026-05-10T08:00:05Z")
            ),
            attempt("2026-05-10T08:00:05Z", 200, "succeeded", None, None),
        ]
    );
    assert_eq!(s.requests(), 4);
    s.node.shutdown().await;
}

/// Friday 2026-05-08; the office closes at 18:00 UTC.
#[tokio::test]
async fn off_hours_failures_are_retried_with_the_off_hours_template() {
    let s = setup("2026-05-08T17:59:59Z", |r| {
        if r.attempt <= 2 {
            status(503)
        } else {
            status(200)
        }
    })
    .await;
    let id = s.submit("switching", "c").await;
    // In hours: `in-hours` retries after 1s.
    let job = s.wait_attempts(&id, 1).await;
    assert_eq!(job["state"], "pending");
    assert_eq!(job["next_at"], "2026-05-08T18:00:00Z");
    // At 18:00 the office is closed: `after-hours` waits 10 minutes. Off
    // hours do not hold this step; they change its template.
    s.set_clock("2026-05-08T18:00:00Z");
    let job = s.wait_attempts(&id, 2).await;
    assert_eq!(job["state"], "pending");
    assert_eq!(job["reason"], Value::Null);
    assert_eq!(job["next_at"], "2026-05-08T18:10:00Z");
    s.set_clock("2026-05-08T18:10:00Z");
    let job = s.wait_state(&id, "succeeded").await;
    assert_eq!(
        attempts(&job),
        [
            attempt(
                "2026-05-08T17:59:59Z",
                503,
                "retry",
                Some(1000),
                Some("2026-05-08T18:00:00Z")
            ),
            attempt(
                "2026-05-08T18:00:00Z",
                503,
                "retry",
                Some(600_000),
                Some("2026-05-08T18:10:00Z")
            ),
            attempt("2026-05-08T18:10:00Z", 200, "succeeded", None, None),
        ]
    );
    s.node.shutdown().await;
}

/// Saturday 2026-05-09: the office opens on Monday at 09:00 UTC; Wednesday
/// 2026-05-13 is a holiday.
#[tokio::test]
async fn off_hours_hold_waits_for_the_opening() {
    // `late` fails once; everything else succeeds.
    let s = setup("2026-05-09T12:00:00Z", |r| {
        if r.idempotency_key == "late" && r.attempt == 1 {
            status(503)
        } else {
            status(200)
        }
    })
    .await;

    let weekend = s.submit("held", "weekend").await;
    let job = s
        .wait_for(&weekend, "was held", |job| job["state"] == "suspended")
        .await;
    assert_eq!(job["reason"], "off_hours");
    assert_eq!(job["next_at"], "2026-05-11T09:00:00Z");
    assert_eq!(job["attempts_total"], 0);

    s.set_clock("2026-05-11T08:59:59Z");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.requests(), 0, "an attempt before the opening");

    s.set_clock("2026-05-11T09:00:00Z");
    let job = s.wait_state(&weekend, "succeeded").await;
    assert_eq!(
        attempts(&job),
        [attempt(
            "2026-05-11T09:00:00Z",
            200,
            "succeeded",
            None,
            None
        )]
    );

    // Tuesday 17:59:58: a failure whose retry falls after closing waits for
    // the next opening, past Wednesday's holiday, and is not charged for the
    // wait: `steady` allows 30s after the first attempt.
    s.set_clock("2026-05-12T17:59:58Z");
    let late = s.submit("held", "late").await;
    let job = s.wait_attempts(&late, 1).await;
    assert_eq!(job["state"], "suspended");
    assert_eq!(job["reason"], "off_hours");
    assert_eq!(job["next_at"], "2026-05-14T09:00:00Z");
    s.set_clock("2026-05-14T09:00:00Z");
    let job = s.wait_state(&late, "succeeded").await;
    assert_eq!(
        attempts(&job),
        [
            attempt(
                "2026-05-12T17:59:58Z",
                503,
                "suspend",
                Some(5000),
                Some("2026-05-14T09:00:00Z")
            ),
            attempt("2026-05-14T09:00:00Z", 200, "succeeded", None, None),
        ]
    );
    assert_eq!(s.requests(), 3);
    s.node.shutdown().await;
}

/// `steadfast jobs show ID` against the node, as a user runs it (on a
/// blocking thread: the node answers on this test's runtime).
async fn cli_show(server: String, id: String) -> String {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .args(["jobs", "show", &id, "--server", &server])
            .env_remove("STEADFAST_TOKEN")
            .output()
    })
    .await
    .expect("the CLI thread")
    .expect("run the steadfast binary");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

// ---------- the README's walk-through, on the shipped example ----------

/// How a job of `flow` in `examples/office-hours.yaml` goes when its first
/// `failures` attempts fail (the rest succeed), starting at `start` (local
/// time in the calendar's zone): one line per event, times local. Driven
/// the way the executor drives the state machine, jitter at its midpoint.
fn walk(flow: &str, start: &str, failures: u32) -> Vec<String> {
    use steadfast::lifecycle::{next, Event, MoveKind, Position};
    use steadfast::model::Outcome;
    use steadfast::retry::Verdict;

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/office-hours.yaml");
    let policy = load_policy(&[example], &EnvMode::Placeholders)
        .policy
        .expect("the example compiles");
    let flow = policy.flow(flow).expect("flow").clone();
    let calendar = policy.calendar("acme-office").expect("calendar").clone();
    let zone = calendar.timezone().clone();
    let local = |t: Timestamp| t.to_zoned(zone.clone()).strftime("%a %H:%M:%S").to_string();
    let start: jiff::civil::DateTime = start.parse().expect("local time");
    let mut now = zone.to_timestamp(start).expect("unambiguous");

    let mut log = Vec::new();
    let mut position = Position::fresh(&flow, now);
    let mut made = 0;
    for _ in 0..50 {
        now = now.max(position.due.expect("a waiting job is due"));
        let claimed = next(&position, &Event::Claimed, &policy, now);
        if let MoveKind::Hold { until, reason } = claimed.kind {
            log.push(format!(
                "{}: held ({reason}) until {}",
                local(now),
                local(until)
            ));
            position = position.landed(&flow, &claimed.landing);
            now = until;
            continue;
        }
        made += 1;
        let fails = made <= failures;
        let step = &flow.steps[position.step_index];
        let channel = step.channel_at(position.channel_index).expect("channel");
        let verdict = Verdict {
            outcome: if fails {
                Outcome::Retry
            } else {
                Outcome::Success
            },
            rule: "walk".into(),
            retry_after: None,
        };
        let answer = if fails { "503" } else { "200" };
        let head = format!(
            "{}: {channel} #{} {answer}",
            local(now),
            position.attempts + 1
        );
        let answered = Event::Answered {
            started: now,
            verdict,
            jitter: 0.5,
        };
        let moved = next(&position, &answered, &policy, now);
        match moved.kind {
            MoveKind::Retry { at, delay } => {
                log.push(format!("{head}, retry in {delay:?}"));
                now = at;
            }
            MoveKind::RetryHeld {
                due,
                delay,
                until,
                reason,
            } => {
                log.push(format!(
                    "{head}, retry in {delay:?}, at {}: held ({reason}) until {}",
                    local(due),
                    local(until)
                ));
                now = until;
            }
            MoveKind::Fallback { .. } => log.push(format!("{head}, fallback")),
            MoveKind::NextStep { .. } => log.push(format!("{head}, next step")),
            MoveKind::Succeeded => {
                log.push(format!("{head}, delivered"));
                return log;
            }
            MoveKind::Dead { reason } => {
                log.push(format!("{head}, dead ({reason})"));
                return log;
            }
            other => panic!("an answer cannot lead to {other:?}"),
        }
        position = position.landed(&flow, &moved.landing);
    }
    panic!("the walk never ended: {log:#?}");
}

/// The timelines the README shows, line for line.
#[test]
fn the_readme_walk_through() {
    let cases: [(&str, &str, u32, &[&str]); 7] = [
        (
            "acme-leads",
            "2026-06-05T17:55:00",
            3,
            &[
                "Fri 17:55:00: acme-api #1 503, retry in 1s",
                "Fri 17:55:01: acme-api #2 503, retry in 2s",
                "Fri 17:55:03: acme-api #3 503, retry in 4s",
                "Fri 17:55:07: acme-api #4 200, delivered",
            ],
        ),
        (
            "acme-leads",
            "2026-06-05T17:59:58",
            3,
            &[
                "Fri 17:59:58: acme-api #1 503, retry in 1s",
                "Fri 17:59:59: acme-api #2 503, retry in 2s",
                "Fri 18:00:01: acme-api #3 503, fallback",
                "Fri 18:00:01: acme-spool #1 200, delivered",
            ],
        ),
        (
            "acme-leads",
            "2026-06-05T20:00:00",
            1,
            &[
                "Fri 20:00:00: acme-api #1 503, retry in 5s",
                "Fri 20:00:05: acme-api #2 200, delivered",
            ],
        ),
        (
            "acme-leads",
            "2026-06-07T01:59:58",
            2,
            &[
                "Sun 01:59:58: acme-api #1 503, retry in 5s, at Sun 02:00:03: held \
                 (maintenance) until Sun 04:00:00",
                "Sun 04:00:00: acme-api #2 503, retry in 5s",
                "Sun 04:00:05: acme-api #3 200, delivered",
            ],
        ),
        (
            "acme-leads",
            "2026-06-07T03:00:00",
            0,
            &[
                "Sun 03:00:00: held (maintenance) until Sun 04:00:00",
                "Sun 04:00:00: acme-api #1 200, delivered",
            ],
        ),
        (
            "acme-callback-requests",
            "2026-06-05T17:59:55",
            2,
            &[
                "Fri 17:59:55: acme-callbacks #1 503, retry in 2s",
                "Fri 17:59:57: acme-callbacks #2 503, retry in 4s, at Fri 18:00:01: held \
                 (off_hours) until Sat 10:00:00",
                "Sat 10:00:00: acme-callbacks #3 200, delivered",
            ],
        ),
        (
            "acme-callback-requests",
            "2026-11-25T18:30:00",
            0,
            &[
                "Wed 18:30:00: held (off_hours) until Fri 09:00:00",
                "Fri 09:00:00: acme-callbacks #1 200, delivered",
            ],
        ),
    ];
    for (flow, start, failures, expected) in cases {
        assert_eq!(walk(flow, start, failures), expected, "{flow} from {start}");
    }
}

#[tokio::test]
async fn a_retry_claimed_an_hour_late_keeps_its_total_timeout() {
    // `steady`: 5 s apart, no new attempt 30 s after the first. The retry
    // due at 10:00:05 is claimed an hour late (the engine was stopped, or
    // behind): that hour is the engine's, not the partner's, so the job
    // retries on instead of dying `exhausted`.
    let s = setup("2026-05-06T10:00:00Z", |r| {
        if r.attempt <= 2 {
            status(503)
        } else {
            status(200)
        }
    })
    .await;
    let id = s.submit("plain", "late-1").await;
    let job = s.wait_attempts(&id, 1).await;
    assert_eq!(job["next_at"], "2026-05-06T10:00:05Z", "{job:#}");
    s.set_clock("2026-05-06T11:00:05Z");
    let job = s.wait_attempts(&id, 2).await;
    assert_eq!(
        (&job["state"], &job["next_at"]),
        (&json!("pending"), &json!("2026-05-06T11:00:10Z")),
        "{job:#}"
    );
    s.set_clock("2026-05-06T11:00:10Z");
    let job = s.wait_state(&id, "succeeded").await;
    assert_eq!(job["attempts_total"], 3);
    assert_eq!(s.requests(), 3);
    s.node.shutdown().await;
}
