//! Suites end to end on policies and test files written to a temporary
//! directory: passing cases, failures pointing at the expectation, bad
//! cases reported at their position, where cases are found.

use std::fs;
use std::path::PathBuf;

use super::*;

const POLICY: &str = "\
classifiers:
  k:
    rules:
      - name: busy
        match: { status: 200, body: busy }
        outcome: retry
templates:
  quick: { backoff: fixed, initial: 1s, retries: 2, jitter: none }
channels:
  a: { file: { dir: a } }
  b: { file: { dir: b } }
flows:
  f:
    steps:
      - { name: one, channel: a, classify: k, retry: quick, fallback: b }
      - { name: two, channel: a }
";

fn suite(files: &[(&str, &str)], args: &[&str]) -> (tempfile::TempDir, Suite) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        fs::write(dir.path().join(name), text).unwrap();
    }
    let paths: Vec<PathBuf> = args.iter().map(|a| dir.path().join(a)).collect();
    let suite = run_suite(&paths, &EnvMode::Placeholders);
    (dir, suite)
}

fn relative(dir: &tempfile::TempDir, text: &str) -> String {
    text.replace(&format!("{}/", dir.path().display()), "")
}

#[test]
fn passing_cases_from_a_test_file_and_a_tests_block() {
    let policy = format!(
        "{POLICY}tests:\n  - name: inline\n    flow: f\n    responses: [{{ status: 201 }}, \
         {{ status: 201 }}]\n    expect: {{ state: succeeded, step: two }}\n"
    );
    let cases = "\
tests:
  - name: busy then fine, then the next step waits
    flow: f
    start: 2026-05-04T10:00:00Z
    responses:
      - { status: 200, body: { status: busy } }
      - { status: 200, body: 'fine' }
    expect:
      attempts:
        - { step: one, channel: a, outcome: retry, rule: busy, decision: retry, at: '+0s', delay: 1s }
        - { outcome: success, rule: 'builtin[0]', decision: next_step, at: '2026-05-04T10:00:01Z' }
      state: pending
      step: two
  - name: the fallback takes over, then all is dead
    flow: f
    responses: [{ error: timeout, times: 6 }]
    expect:
      attempts:
        - { channel: a, at: '+0s' }
        - { channel: a, at: '+1s' }
        - { channel: a, at: '+2s', decision: fallback }
        - { channel: b, at: '+2s' }
        - { channel: b, at: '+3s' }
        - { channel: b, at: '+4s', decision: dead }
      state: dead
      reason: exhausted
      channel: b
  - name: jitter is checked within bounds
    flow: f
    step: two
    responses: [{ status: 503 }, { status: 503 }]
    expect:
      attempts:
        - { at: '+0s' }
        - { at: '+2s±20%', delay: '3s..5s' }
      state: pending
";
    let (dir, suite) = suite(&[("p.yaml", &policy), ("p.test.yaml", cases)], &["."]);
    let report = relative(&dir, &text(&suite));
    assert!(suite.ok(), "{report}");
    assert_eq!(suite.passed(), 4, "{report}");
    assert!(
        report.contains("ok    ./p.test.yaml:2:5  busy then fine"),
        "{report}"
    );
    assert!(report.ends_with("result: 4 passed, 0 failed\n"), "{report}");
}

#[test]
fn a_failing_case_points_at_each_expectation_and_shows_what_ran() {
    let cases = "\
tests:
  - name: wrong
    flow: f
    responses: [{ status: 400 }]
    expect:
      attempts:
        - { outcome: retry, at: '+1s' }
        - { outcome: success }
      state: succeeded
  - name: exact time against jitter
    flow: f
    step: two
    responses: [{ status: 503 }, { status: 503 }]
    expect:
      attempts:
        - { delay: 2s }
        - { at: '+2s' }
";
    let (dir, suite) = suite(&[("p.yaml", POLICY), ("p.test.yaml", cases)], &["."]);
    assert!(!suite.ok());
    assert_eq!((suite.passed(), suite.failed()), (0, 2));
    let report = relative(&dir, &text(&suite));
    let expected = "\
FAIL  ./p.test.yaml:2:5  wrong
      ./p.test.yaml:7:22: attempt 1: outcome: expected retry, got fail (rule builtin[4])
      ./p.test.yaml:7:33: attempt 1: at: expected +1s, got +0s
      ./p.test.yaml:6:7: attempts: expected 2, got 1
      ./p.test.yaml:9:14: state: expected succeeded, got dead (permanent)
      what ran (flow f, from step one, start 2026-01-05T09:00:00Z):
           #  step  channel  answer  outcome  rule        decision  at   delay
        !  1  one   a        400     fail     builtin[4]  dead      +0s  -
        then: dead (permanent)
FAIL  ./p.test.yaml:10:5  exact time against jitter
      ./p.test.yaml:16:20: attempt 1: delay: expected 2s, got 1s600ms..2s400ms (the template jitters: write bounds such as `±20%`, or a range)
      ./p.test.yaml:17:17: attempt 2: at: expected +2s, got +1s600ms..+2s400ms (the template jitters: write bounds such as `±20%`, or a range)
";
    assert!(report.starts_with(expected), "{report}");
    assert!(report.ends_with("result: 0 passed, 2 failed\n"), "{report}");

    let xml = relative(&dir, &junit(&suite));
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"steadfast test\" tests=\"2\" failures=\"2\" errors=\"0\">\n"), "{xml}");
    assert!(xml.contains("<testcase name=\"wrong\" classname=\"./p.test.yaml\" file=\"./p.test.yaml\" line=\"2\">\n      <failure message=\"attempt 1: outcome: expected retry, got fail (rule builtin[4])\">"), "{xml}");

    let j = json(&suite);
    assert_eq!(j["ok"], false);
    assert_eq!(j["cases"][0]["mismatches"][0]["line"], 7);
    assert_eq!(j["cases"][0]["end"]["reason"], "permanent");
    assert_eq!(j["cases"][1]["attempts"][1]["at_ms"]["min"], 1600);
}

#[test]
fn bad_cases_are_reported_where_written_and_do_not_run() {
    let cases = "\
tests:
  - name: unknown flow
    flow: nope
    expect: {}
  - name: bad parts
    flow: f
    step: three
    start: yesterday
    responses:
      - { status: 999 }
      - { status: 200, error: dns }
      - { error: dns, body: x }
      - {}
      - { status: 500, times: 0 }
    expect:
      channel: c
      attempts:
        - { at: '2s', delay: '+2s', step: zero }
  - name: typo
    flow: f
    expect: { stat: dead }
  - name: fine
    flow: f
    responses: [{ status: 200 }, { status: 200 }]
    expect: { state: succeeded }
";
    let (dir, suite) = suite(&[("p.yaml", POLICY), ("p.test.yaml", cases)], &["."]);
    let shown: Vec<String> = suite
        .diagnostics
        .iter()
        .map(|d| relative(&dir, &d.to_string()))
        .collect();
    assert_eq!(
        shown,
        [
            "./p.test.yaml:21:15: error: tests[2].expect.stat: unknown field `stat`, expected one of `attempts`, `state`, `reason`, `step`, `channel`",
            "./p.test.yaml:3:11: error: tests[0].flow: unknown flow `nope`; defined flows: f",
            "./p.test.yaml:7:11: error: tests[1].step: flow `f` has no step `three`; its steps: one, two",
            "./p.test.yaml:8:12: error: tests[1].start: bad start `yesterday`: write an RFC 3339 time such as `2026-05-04T10:00:00Z`",
            "./p.test.yaml:10:19: error: tests[1].responses[0].status: bad status 999: write a code from 100 to 599",
            "./p.test.yaml:11:9: error: tests[1].responses[1]: write either `status` (an answer) or `error` (no answer), not both",
            "./p.test.yaml:12:9: error: tests[1].responses[2]: a transport error has no `body` or `headers`: write `status` for an answer, or `error` (and `message`) for no answer",
            "./p.test.yaml:13:9: error: tests[1].responses[3]: an answer needs `status` (e.g. `status: 503`), `error` (e.g. `error: timeout`) or `breaker: open`",
            "./p.test.yaml:14:31: error: tests[1].responses[4].times: `times` must be at least 1 (leave the answer out instead)",
        ],
    );
    assert_eq!(suite.passed(), 1);
    assert!(!suite.ok(), "problems in cases fail the run");
    let report = text(&suite);
    assert!(
        report.ends_with(
            "result: 1 passed, 0 failed; 9 problems in test cases (those cases did not run)\n"
        ),
        "{report}"
    );
}

#[test]
fn expectations_of_unknown_names_are_reported_once_the_start_is_sound() {
    let cases = "\
tests:
  - name: names
    flow: f
    expect:
      channel: c
      step: zero
      attempts:
        - { at: '2s', delay: '+2s', step: zero, channel: c }
";
    let (dir, suite) = suite(&[("p.yaml", POLICY), ("p.test.yaml", cases)], &["."]);
    let shown: Vec<String> = suite
        .diagnostics
        .iter()
        .map(|d| relative(&dir, &d.to_string()))
        .collect();
    assert_eq!(
        shown,
        [
            "./p.test.yaml:6:13: error: tests[0].expect.step: flow `f` has no step `zero`; its steps: one, two",
            "./p.test.yaml:5:16: error: tests[0].expect.channel: flow `f` uses no channel `c`; its channels: a, b",
            "./p.test.yaml:8:43: error: tests[0].expect.attempts[0].step: flow `f` has no step `zero`; its steps: one, two",
            "./p.test.yaml:8:58: error: tests[0].expect.attempts[0].channel: flow `f` uses no channel `c`; its channels: a, b",
            "./p.test.yaml:8:17: error: tests[0].expect.attempts[0].at: bad time `2s`: write a time after the first attempt such as `+2s`, `+2s±20%`, `+1s..+3s`, or an RFC 3339 time",
            "./p.test.yaml:8:30: error: tests[0].expect.attempts[0].delay: bad delay `+2s`: write a duration such as `2s`, `2s±20%`, `2s±500ms` or `1s..3s`",
        ],
    );
}

#[test]
fn test_files_hold_only_tests_and_report_syntax_errors() {
    let (dir, suite) = suite(
        &[
            ("p.yaml", POLICY),
            ("a.test.yaml", "flows: {}\ntests: []\n"),
            ("b.test.toml", "tests = [\n"),
            ("c.test.yaml", "other: 1\n"),
        ],
        &["."],
    );
    let shown: Vec<String> = suite
        .diagnostics
        .iter()
        .map(|d| relative(&dir, &d.to_string()))
        .collect();
    assert_eq!(
        shown,
        [
            "./a.test.yaml:1:1: error: flows: a test file holds only `tests`; `flows` belongs in a policy file (files named *.test.yaml, *.test.yml or *.test.toml are not loaded as policy)",
            "./b.test.toml:1:10: error: unclosed array, expected `]`",
            "./c.test.yaml:1:1: error: other: a test file holds only `tests`; `other` belongs in a policy file (files named *.test.yaml, *.test.yml or *.test.toml are not loaded as policy)",
            "./c.test.yaml:1:1: error: a test file needs a `tests` list of test cases",
        ]
    );
}

#[test]
fn a_broken_policy_runs_no_case() {
    let (_dir, suite) = suite(
        &[
            ("p.yaml", "flows: { f: { steps: [] } }\n"),
            ("p.test.yaml", "tests: []\n"),
        ],
        &["."],
    );
    assert!(has_errors(&suite.policy_diagnostics));
    assert!(suite.results.is_empty());
    assert!(text(&suite).contains("the policy has errors: no test case ran"));
}

#[test]
fn targets_sort_paths_into_policy_and_tests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in [
        "a.yaml",
        "a.test.yaml",
        "b.test.toml",
        ".hidden.test.yaml",
        "notes.md",
    ] {
        fs::write(d.join(name), "").unwrap();
    }
    let t = targets(&[d.to_path_buf()]);
    assert_eq!(t.policy, vec![d.to_path_buf()]);
    assert_eq!(
        t.test_files,
        vec![d.join("a.test.yaml"), d.join("b.test.toml")]
    );
    // A test file alone runs against its directory's policy.
    let t = targets(&[d.join("b.test.toml")]);
    assert_eq!(t.policy, vec![d.to_path_buf()]);
    assert_eq!(t.test_files, vec![d.join("b.test.toml")]);
    let t = targets(&[PathBuf::from("x.test.yaml")]);
    assert_eq!(t.policy, vec![PathBuf::from(".")]);
    // With a policy given, that is the policy.
    let t = targets(&[d.join("a.yaml"), d.join("a.test.yaml")]);
    assert_eq!(t.policy, vec![d.join("a.yaml")]);
}

#[test]
fn no_case_at_all_is_a_failure_that_says_where_to_write_them() {
    let (_dir, suite) = suite(&[("p.yaml", POLICY)], &["."]);
    assert!(!suite.ok());
    assert!(text(&suite).contains("no test cases found"));
}

const MAPPING_POLICY: &str = "\
templates:
  two: { retries: 1, initial: 1s, jitter: none }
  five: { retries: 4, initial: 1s, jitter: none }
channels:
  score: { http: { url: 'http://127.0.0.1:9/score' } }
  crm: { http: { url: 'http://127.0.0.1:9/crm' } }
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
        body:
          email: '{{ payload.email }}'
          score: '{{ steps.score.response.json.score }}'
";

#[test]
fn cases_give_a_payload_and_earlier_answers_and_expect_the_built_body() {
    let cases = "\
tests:
  - name: a scored lead is delivered with the mapped body
    flow: leads
    payload: { email: a@x, amount: 50 }
    responses:
      - { status: 200, body: { score: 72 } }
      - { status: 200 }
    expect:
      state: succeeded
      attempts:
        - { step: score, decision: next_step }
        - { step: deliver, body: { email: a@x, score: 72 }, decision: succeeded }
  - name: starting at the second step with the first step's answer given
    flow: leads
    step: deliver
    payload: { email: b@x }
    step_responses:
      score: { status: 200, body: { score: 10 } }
    expect:
      state: succeeded
      attempts:
        - { step: deliver, outcome: skipped, decision: succeeded }
  - name: a high-value lead is retried five times
    flow: leads
    payload: { amount: 25000 }
    responses: [{ status: 503, times: 5 }]
    expect: { state: dead, reason: exhausted }
  - name: a missing email fails as a mapping error
    flow: leads
    payload: { amount: 1 }
    responses: [{ status: 200, body: { score: 99 } }]
    expect:
      state: dead
      reason: permanent
      attempts:
        - { step: score }
        - { step: deliver, outcome: fail, rule: 'builtin[5]', body: { email: x } }
";
    let (dir, suite) = suite(
        &[("p.yaml", MAPPING_POLICY), ("p.test.yaml", cases)],
        &["."],
    );
    let results: Vec<(String, bool)> = suite
        .results
        .iter()
        .map(|r| (r.case.name.clone(), r.passed()))
        .collect();
    assert!(suite.diagnostics.is_empty(), "{:?}", suite.diagnostics);
    assert_eq!(
        results,
        [
            (
                "a scored lead is delivered with the mapped body".to_string(),
                true
            ),
            (
                "starting at the second step with the first step's answer given".to_string(),
                true
            ),
            ("a high-value lead is retried five times".to_string(), true),
            (
                "a missing email fails as a mapping error".to_string(),
                false
            ),
        ]
    );
    let failed = &suite.results[3].mismatches;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        relative(&dir, &failed[0].message).contains(
            "attempt 2: body: expected {\"email\":\"x\"}, got none: expression `payload.email` \
             failed (error kind `mapping`)"
        ),
        "{}",
        failed[0].message
    );
}
