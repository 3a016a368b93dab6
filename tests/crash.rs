//! `kill -9` in the middle of a few hundred jobs: after a restart every job
//! succeeds. The engine runs as a real process (the `steadfast` binary) on a
//! real SQLite file; the partner is in the test.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const JOBS: usize = 300;

const POLICY: &str = r#"
templates:
  fast: { retries: 5, initial: 20ms, jitter: none }
channels:
  partner: { http: { url: "${PARTNER}/in" } }
flows:
  crashy:
    steps: [{ name: deliver, channel: partner, retry: fast }]
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_engine(
    policies: &std::path::Path,
    db: &std::path::Path,
    port: u16,
    partner: &str,
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["run", "--workers", "4", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--policies")
        .arg(policies)
        .arg("--db")
        .arg(format!("sqlite://{}", db.display()))
        .env("PARTNER", partner)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the steadfast binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_restart_delivers_every_job() {
    // Slow enough answers that the kill lands in the middle of the run.
    let partner = Partner::start(|_| delayed(Duration::from_millis(15), status(200))).await;
    let policies = policy_dir(&[("crash.yaml", POLICY)]);
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("steadfast.db");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = common::http_client();

    let mut engine = spawn_engine(policies.path(), &db, port, &partner.url);
    wait_healthy(&client, &base, Duration::from_secs(20)).await;
    let batch: Vec<Value> = (0..JOBS)
        .map(|n| json!({ "payload": { "n": n }, "idempotency_key": format!("job-{n}") }))
        .collect();
    let answer: Value = client
        .post(format!("{base}/v1/flows/crashy/jobs:batch"))
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["created"], JOBS, "{answer}");

    // Polled often: the kill must come while most jobs are still waiting.
    let every = Duration::from_millis(5);
    let what = "deliveries never started; requests so far";
    eventually(Duration::from_secs(30), every, what, async || {
        let sent = partner.requests().len();
        if sent < JOBS / 4 {
            Err(sent)
        } else {
            Ok(())
        }
    })
    .await;
    engine.kill().unwrap(); // SIGKILL: no shutdown, no lease release
    engine.wait().unwrap();
    let delivered_before = partner.requests().len();
    assert!(
        delivered_before < JOBS,
        "the kill came too late to test anything"
    );

    let mut engine = spawn_engine(policies.path(), &db, port, &partner.url);
    wait_healthy(&client, &base, Duration::from_secs(20)).await;
    let what = format!("not all {JOBS} jobs succeeded after restart; succeeded");
    let succeeded = async || count_in_state(&client, &base, "succeeded").await;
    let every = Duration::from_millis(100);
    eventually(Duration::from_secs(60), every, what, async || {
        let n = succeeded().await;
        if n == JOBS {
            Ok(())
        } else {
            Err(n)
        }
    })
    .await;
    for state in ["pending", "running", "suspended", "dead"] {
        assert_eq!(count_in_state(&client, &base, state).await, 0, "{state}");
    }
    // At least once: every job reached the partner, always under its key.
    let mut keys: Vec<String> = partner
        .requests()
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), JOBS);
    engine.kill().unwrap();
    engine.wait().unwrap();
}
