//! `steadfast explain` on the built binary: the timeline of a partner that
//! keeps failing, in text and JSON, and bad input refused with exit 2.

use std::path::Path;
use std::process::{Command, Output};

const POLICY: &str = "\
templates:
  quick: { backoff: fixed, initial: 30s, retries: 2, jitter: none }
  jittery: { initial: 1s, retries: 1 }
channels:
  api: { http: { url: 'https://api.example/x' } }
  backup: { http: { url: 'https://backup.example/x' } }
  spool: { file: { dir: spool } }
flows:
  orders:
    steps:
      - { name: deliver, channel: api, retry: quick, fallback: [backup, spool] }
      - { name: confirm, channel: backup, retry: jittery }
";

fn explain(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .arg("explain")
        .args(args)
        .arg("--policies")
        .arg(dir)
        .output()
        .expect("steadfast runs")
}

fn policies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), POLICY).unwrap();
    dir
}

#[test]
fn the_timeline_shows_retries_fallbacks_and_death() {
    let dir = policies();
    let out = explain(
        dir.path(),
        &[
            "orders",
            "--from",
            "2026-05-04T10:00:00Z",
            "--tz",
            "Europe/Paris",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = "\
flow orders, step deliver: a partner that keeps failing, first attempt at 2026-05-04 10:00:00.000Z

#  channel  try  delay  at (UTC)                  after   at (Europe/Paris)             template  then
1  api      1    -      2026-05-04 10:00:00.000Z  +0s     2026-05-04 12:00:00.000 CEST  quick     retry
2  api      2    30s    2026-05-04 10:00:30.000Z  +30s    2026-05-04 12:00:30.000 CEST  quick     retry
3  api      3    30s    2026-05-04 10:01:00.000Z  +1m     2026-05-04 12:01:00.000 CEST  quick     fallback to backup
4  backup   1    0s     2026-05-04 10:01:00.000Z  +1m     2026-05-04 12:01:00.000 CEST  quick     retry
5  backup   2    30s    2026-05-04 10:01:30.000Z  +1m30s  2026-05-04 12:01:30.000 CEST  quick     retry
6  backup   3    30s    2026-05-04 10:02:00.000Z  +2m     2026-05-04 12:02:00.000 CEST  quick     fallback to spool
7  spool    1    0s     2026-05-04 10:02:00.000Z  +2m     2026-05-04 12:02:00.000 CEST  quick     retry
8  spool    2    30s    2026-05-04 10:02:30.000Z  +2m30s  2026-05-04 12:02:30.000 CEST  quick     retry
9  spool    3    30s    2026-05-04 10:03:00.000Z  +3m     2026-05-04 12:03:00.000 CEST  quick     dead (exhausted)
";
    assert!(text.starts_with(expected), "{text}");
    for line in [
        "fallback 1: backup takes over at 2026-05-04 10:01:00.000Z (attempt 4)",
        "fallback 2: spool takes over at 2026-05-04 10:02:00.000Z (attempt 7)",
        "dead at 2026-05-04 10:03:00.000Z (+3m, attempt 9): every channel's retries ran out",
        "calendar: none applies",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
}

#[test]
fn jitter_shows_as_a_range_and_json_has_every_fact() {
    let dir = policies();
    let out = explain(
        dir.path(),
        &[
            "orders",
            "--step",
            "confirm",
            "--from",
            "2026-05-04T10:00:00Z",
            "--json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["step"], "confirm");
    assert_eq!(json["attempts"].as_array().unwrap().len(), 2);
    let second = &json["attempts"][1];
    assert_eq!(second["at"]["nominal"], "2026-05-04T10:00:01Z");
    assert_eq!(second["at"]["earliest"], "2026-05-04T10:00:00.8Z");
    assert_eq!(second["at"]["latest"], "2026-05-04T10:00:01.2Z");
    assert_eq!(second["delay_before"]["min_ms"], 800);
    assert_eq!(second["template"], "jittery");
    assert_eq!(json["end"]["state"], "dead");
    assert_eq!(json["end"]["reason"], "exhausted");
    assert_eq!(json["fallbacks"].as_array().unwrap().len(), 0);

    let out = explain(
        dir.path(),
        &[
            "orders",
            "--step",
            "confirm",
            "--from",
            "2026-05-04T10:00:00Z",
        ],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("+800ms..+1s200ms"), "{text}");
}

#[test]
fn bad_input_is_refused_with_exit_2_and_says_what_exists() {
    let dir = policies();
    for (args, message) in [
        (
            vec!["nope"],
            "error: unknown flow `nope`; defined flows: orders",
        ),
        (
            vec!["orders", "--step", "x"],
            "error: flow `orders` has no step `x`; its steps: deliver, confirm",
        ),
        (
            vec!["orders", "--from", "today"],
            "error: bad --from `today`: write an RFC 3339 time such as 2026-05-04T10:00:00Z",
        ),
        (
            vec!["orders", "--tz", "Mars/Olympus"],
            "error: unknown time zone `Mars/Olympus`: write an IANA name such as America/New_York",
        ),
    ] {
        let out = explain(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim(), message, "{args:?}");
    }
    std::fs::write(dir.path().join("q.yaml"), "flows: { x: { steps: [] } }\n").unwrap();
    let out = explain(dir.path(), &["orders"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("q.yaml:1:10: error: flows.x: a flow needs at least one step"),
        "{stderr}"
    );
}

#[test]
fn calendar_holds_show_with_their_reason_and_the_local_time() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/office-hours.yaml");
    let out = explain(
        &dir,
        &[
            "acme-callback-requests",
            "--no-env",
            "--from",
            "2026-11-27T22:59:50Z",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["zone"], "America/New_York");
    let attempts = v["attempts"].as_array().unwrap();
    // Friday 17:59:56 New York: the retry would fall after closing.
    assert_eq!(attempts[2]["then"], "suspend");
    assert_eq!(attempts[3]["hold"], "off_hours");
    assert_eq!(attempts[3]["local"], "2026-11-28 10:00:00.000 EST");
    assert_eq!(attempts.len(), 6, "the night does not count: {v:#}");
    let rule = v["calendars"][0]["rule"].as_str().unwrap();
    assert!(
        rule.starts_with("acme-office (America/New_York); closed: held"),
        "{rule}"
    );
}

const LEADS: &str = "\
templates:
  two: { retries: 1, initial: 1s, jitter: none }
  five: { retries: 4, initial: 1s, jitter: none }
channels:
  score: { http: { url: 'https://score.example/x' } }
  crm: { http: { url: 'https://crm.example/x' } }
  spool: { file: { dir: spool } }
flows:
  leads:
    steps:
      - name: score
        channel: score
        retry:
          - { when: 'payload.amount >= 10000', use: five }
          - { use: two }
      - name: deliver
        channel: crm
        when: 'steps.score.response.json.score > 50'
        body: { email: '{{ payload.email }}', score: '{{ steps.score.response.json.score }}' }
        fallback: [{ channel: spool, body: '{{ payload }}' }]
";

fn leads() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), LEADS).unwrap();
    dir
}

#[test]
fn a_payload_shows_the_entries_it_selects_and_the_bodies_it_builds() {
    let dir = leads();
    let out = explain(
        dir.path(),
        &[
            "leads",
            "--from",
            "2026-05-04T10:00:00Z",
            "--payload",
            r#"{"amount": 20000, "email": "a@x"}"#,
            "--response",
            r#"score={"score": 72}"#,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "  step score: runs (no `when`)",
        "    retry: five (entry 0: `payload.amount >= 10000` holds)",
        "    body to score: the payload as submitted",
        "  step deliver: runs: `steps.score.response.json.score > 50` holds",
        r#"    body to crm: {"email":"a@x","score":72}"#,
        r#"    body to spool: {"amount":20000,"email":"a@x"}"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // The high-value template is the one the timeline retries with.
    assert!(text.contains("5  score    5"), "{text}");
    assert!(text.contains("five      dead (exhausted)"), "{text}");

    // Without the answer of the step it reads, the hint is to give one.
    let out = explain(
        dir.path(),
        &["leads", "--payload", r#"{"email": "a@x", "amount": 5}"#],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("(it reads an earlier step's answer: give one with --response STEP=JSON)"),
        "{text}"
    );
    assert!(!text.contains("default("), "{text}");

    let out = explain(
        dir.path(),
        &[
            "leads",
            "--json",
            "--payload",
            r#"{"amount": 5, "email": "e"}"#,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = &json["payload"]["steps"];
    assert_eq!(steps[0]["retry"]["template"], "two");
    assert_eq!(steps[0]["retry"]["entry"], serde_json::Value::Null);
    assert!(steps[1]["bodies"][0]["error"]
        .as_str()
        .unwrap()
        .contains("steps.score.response.json.score"));
    assert_eq!(json["attempts"].as_array().unwrap().len(), 2);
}

#[test]
fn a_bad_payload_or_response_is_refused_with_what_to_write() {
    let dir = leads();
    for (args, expected) in [
        (
            vec!["leads", "--payload", "{bad"],
            "bad --payload: not JSON",
        ),
        (
            vec!["leads", "--payload", "{}", "--response", "score"],
            "bad --response `score`: write STEP=JSON",
        ),
        (
            vec!["leads", "--payload", "{}", "--response", "nope={}"],
            "flow `leads` has no step `nope`",
        ),
        (
            vec!["leads", "--response", "score={}"],
            "--response needs --payload",
        ),
    ] {
        let out = explain(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
