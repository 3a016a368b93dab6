//! `steadfast test` on the built binary: exit codes, the report, `--json`
//! and `--junit`.

use std::path::Path;
use std::process::{Command, Output};

fn steadfast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("steadfast runs")
}

const POLICY: &str = "\
channels:
  api: { http: { url: 'https://api.example/x' } }
flows:
  f:
    steps:
      - { name: deliver, channel: api }
";

const CASES: &str = "\
tests:
  - name: good
    flow: f
    responses: [{ status: 200 }]
    expect: { state: succeeded }
  - name: bad <&>
    flow: f
    responses: [{ status: 400 }]
    expect: { state: succeeded }
";

#[test]
fn the_shipped_policies_pass() {
    let out = steadfast(&["test", "--no-env", "policies"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("ok    policies/acme.test.yaml:"),
        "{stdout}"
    );
    assert!(stdout.ends_with(" passed, 0 failed\n"), "{stdout}");
}

#[test]
fn a_failing_case_exits_1_and_junit_and_json_report_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), POLICY).unwrap();
    std::fs::write(dir.path().join("p.test.yaml"), CASES).unwrap();
    let junit = dir.path().join("report.xml");
    let path = dir.path().to_str().unwrap();
    let out = steadfast(&["test", path, "--junit", junit.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("FAIL  "), "{stdout}");
    assert!(
        stdout.contains("p.test.yaml:9:22: state: expected succeeded, got dead (permanent)"),
        "{stdout}"
    );
    assert!(stdout.ends_with("result: 1 passed, 1 failed\n"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"2\" failures=\"1\" errors=\"0\""),
        "{xml}"
    );
    assert!(
        xml.contains("<testcase name=\"bad &lt;&amp;&gt;\""),
        "{xml}"
    );

    let out = steadfast(&["test", path, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (json["passed"].as_u64(), json["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(json["cases"][1]["end"]["state"], "dead");
}

#[test]
fn an_unwritable_junit_file_is_bad_input() {
    let out = steadfast(&[
        "test",
        "--no-env",
        "policies",
        "--junit",
        "/nonexistent-dir/report.xml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("error: cannot write the JUnit report to /nonexistent-dir/report.xml"),
        "{stderr}"
    );
}
