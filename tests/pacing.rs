//! Pacing that adapts, end to end: the real engine on a real SQLite file
//! against partners on loopback. `quick_retry` tries again within one
//! attempt when a connection drops, and records how many times.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A partner that drops (resets) its first `drops` connections after
/// reading the request, then answers `200` to every request; counts the
/// connections it saw.
struct Dropping {
    url: String,
    connections: Arc<AtomicUsize>,
}

impl Dropping {
    async fn start(drops: usize) -> Dropping {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let n = seen.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    let _ = socket.read(&mut buffer).await;
                    if n < drops {
                        // An RST, as a crashed or overloaded server sends.
                        let _ = socket.set_zero_linger();
                        drop(socket);
                        return;
                    }
                    let answer =
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Dropping { url, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn policy(quick: &str) -> String {
    format!(
        r#"
templates:
  two: {{ retries: 1, initial: 10ms, jitter: none }}
channels:
  partner:
    http: {{ url: "${{PARTNER}}/in" }}
    {quick}
flows:
  send:
    steps: [ {{ name: deliver, channel: partner, retry: two }} ]
"#
    )
}

async fn run(quick: &str, drops: usize) -> (Value, Dropping) {
    let partner = Dropping::start(drops).await;
    let policies = policy_dir(&[("p.yaml", &policy(quick))]);
    let node = TestNode::start(policies.path(), &[("PARTNER", partner.url.as_str())]).await;
    let id = node.submit_ok("send", json!({"n": 1}), None).await;
    let job = node.wait_final(&id).await;
    node.shutdown().await;
    (job, partner)
}

#[tokio::test]
async fn a_dropped_connection_is_tried_again_within_the_attempt() {
    let (job, partner) = run(
        "quick_retry: { attempts: 2, delay: 10ms, on: [connect, reset] }",
        2,
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "no durable retry spent: {job:#}");
    assert_eq!(attempts[0]["status"], 200);
    assert_eq!(attempts[0]["quick_tries"], 2);
    assert_eq!(partner.connections(), 3);
}

#[tokio::test]
async fn quick_tries_run_out_and_the_durable_retry_takes_over() {
    let (job, partner) = run("quick_retry: { attempts: 1, delay: 10ms, on: reset }", 3).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job:#}");
    assert_eq!(attempts[0]["error"], "reset");
    assert_eq!(attempts[0]["quick_tries"], 1);
    assert_eq!(attempts[0]["outcome"], "retry");
    // The second attempt: one more drop, then the answer.
    assert_eq!(attempts[1]["status"], 200);
    assert_eq!(attempts[1]["quick_tries"], 1);
    assert_eq!(partner.connections(), 4);
}

#[tokio::test]
async fn kinds_not_named_and_channels_without_quick_retry_get_no_quick_try() {
    // `on: [connect]` does not cover a reset.
    let (job, partner) = run("quick_retry: { attempts: 3, on: [connect] }", 1).await;
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["error"], "reset", "{job:#}");
    assert_eq!(attempts[0]["quick_tries"], 0);
    assert_eq!(partner.connections(), 2, "one per durable attempt");

    let (job, _) = run("", 1).await;
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job:#}");
    assert_eq!(attempts[0]["quick_tries"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insights_count_success_by_attempt_number_across_restarts() {
    // Every job's first try gets a 503, its second a 200.
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let partner = Partner::start(move |request| {
        let first = seen.lock().unwrap().insert(request.body["n"].to_string());
        if first {
            status(503)
        } else {
            status(200)
        }
    })
    .await;
    let policies = policy_dir(&[("p.yaml", &policy(""))]);
    let env = [("PARTNER", partner.url.as_str())];
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("steadfast.db");
    let node = start_node(policies.path(), &env, &db).await;
    let client = http_client();
    let base = node.url();
    for n in 0..5 {
        let answer: Value = client
            .post(format!("{base}/v1/flows/send/jobs"))
            .json(&json!({ "payload": { "n": n } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = answer["id"].as_str().unwrap().to_string();
        let final_state = wait_for(
            std::time::Duration::from_secs(30),
            "job never finished",
            || async {
                let job: Value = client
                    .get(format!("{base}/v1/jobs/{id}"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                job["state"].as_str().unwrap_or_default().to_string()
            },
            |state| state == "succeeded" || state == "dead",
        )
        .await;
        assert_eq!(final_state, "succeeded");
    }
    // Read at once: the node flushes its latest counts before answering.
    let insights: Value = client
        .get(format!("{base}/v1/channels/partner/insights"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(insights["attempts"], 10, "{insights:#}");
    assert_eq!(insights["successes"], 5);
    assert_eq!(insights["by_attempt"]["1"]["success_rate"], 0.0);
    assert_eq!(insights["by_attempt"]["2"]["success_rate"], 1.0);
    assert_eq!(insights["errors"]["status:503"], 5);
    assert!(insights["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    node.shutdown().await;

    // Another node on the same step log reads the same history.
    let node = start_node(policies.path(), &env, &db).await;
    let server = node.url();
    let (code, out, err) = cli(&server, &["insights", "partner", "--window", "24h"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("partner: 10 attempts"), "{out}");
    assert!(out.contains("status:503 5"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("2 "))
        .unwrap_or_default()
        .to_string();
    assert!(row.contains("100.0%"), "{out}");

    let (code, _, err) = cli(&server, &["insights", "nobody"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("no channel `nobody`"), "{err}");
    let (code, _, err) = cli(&server, &["insights", "partner", "--window", "forever"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--window `forever`"), "{err}");
    node.shutdown().await;
}

/// A history in which attempts past the third never succeed: 300 first
/// tries (200 succeed), 100 second and 60 third tries (some succeed), 100
/// fourth and 100 fifth tries (none do), all in the current hour.
fn history_past_the_third_never_succeeds(channel: &str) -> Vec<steadfast::store::InsightCount> {
    let hour = steadfast::pacing::insights::hour_of(jiff::Timestamp::now());
    let count = |metric: &str, key: u32, n: i64| steadfast::store::InsightCount {
        channel: channel.into(),
        hour,
        metric: metric.into(),
        key: key.to_string(),
        count: n,
    };
    vec![
        count("attempts", 1, 300),
        count("successes", 1, 200),
        count("attempts", 2, 100),
        count("successes", 2, 40),
        count("attempts", 3, 60),
        count("successes", 3, 12),
        count("attempts", 4, 100),
        count("attempts", 5, 100),
    ]
}

const ADAPT_POLICY: &str = r#"
templates:
  learned:
    retries: 6
    backoff: fixed
    initial: 10ms
    jitter: none
    adapt: { window: 7d, min_samples: 150, stop_below: 1% }
channels:
  partner: { http: { url: "${PARTNER}/in" } }
  backup: { http: { url: "${PARTNER}/backup" } }
flows:
  send:
    steps: [ { name: deliver, channel: partner, retry: learned } ]
  safe:
    steps: [ { name: deliver, channel: partner, retry: learned, fallback: [backup] } ]
  fanout:
    steps:
      - name: deliver
        parallel: [partner, backup]
        retry: learned
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_cuts_retries_that_never_succeed_and_says_why() {
    // The partner's `/in` always fails; `/backup` answers.
    let partner = Partner::start(|request| match request.path.as_str() {
        "/backup" => status(200),
        _ => status(503),
    })
    .await;
    let policies = policy_dir(&[("p.yaml", ADAPT_POLICY)]);
    let node = TestNode::start(policies.path(), &[("PARTNER", partner.url.as_str())]).await;
    node.node
        .store
        .insights_add(&history_past_the_third_never_succeeds("partner"))
        .await
        .unwrap();

    // Six retries written; history stops them after the third attempt.
    let id = node.submit_ok("send", json!({"n": 1}), None).await;
    let job = node.wait_final(&id).await;
    assert_eq!(job["state"], "dead", "{job:#}");
    assert_eq!(job["reason"], "adapted", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{job:#}");
    let note = attempts[2]["error_message"].as_str().unwrap_or_default();
    assert!(
        note.contains("adapted: attempts from #4 on `partner` succeeded 0 of 200"),
        "{note}"
    );
    assert!(
        attempts[1]["error_message"].is_null(),
        "only the cut attempt says so"
    );

    // With a fallback, the cut sends the job there sooner.
    let id = node.submit_ok("safe", json!({"n": 2}), None).await;
    let job = node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4, "{job:#}");
    assert_eq!(attempts[2]["decision"], "fallback");
    assert_eq!(attempts[3]["channel"], "backup");

    // A parallel step's branch on that channel is cut the same way.
    let id = node.submit_ok("fanout", json!({"n": 3}), None).await;
    let job = node.wait_final(&id).await;
    assert_eq!(job["state"], "dead", "{job:#}");
    assert_eq!(job["reason"], "adapted", "{job:#}");
    let on_partner: Vec<&Value> = job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["channel"] == "partner")
        .collect();
    assert_eq!(on_partner.len(), 3, "{job:#}");
    let note = on_partner[2]["error_message"].as_str().unwrap_or_default();
    assert!(note.contains("adapted: attempts from #4"), "{note}");

    // `explain --history` reads the same history and cuts the timeline
    // where the engine does.
    let server = node.node.url();
    let dir = policies.path().display().to_string();
    let (code, out, err) = cli(
        &server,
        &[
            "explain",
            "send",
            "--policies",
            &dir,
            "--no-env",
            "--history",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let explained: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        explained["attempts"].as_array().unwrap().len(),
        3,
        "{explained:#}"
    );
    assert_eq!(explained["end"]["reason"], "adapted");
    assert_eq!(explained["history"][0]["channel"], "partner");
    assert_eq!(explained["history"][0]["cut_from_attempt"], 4);
    // Without history the template's seven attempts.
    let server = node.node.url();
    let dir = policies.path().display().to_string();
    let (_, out, _) = cli(
        &server,
        &["explain", "send", "--policies", &dir, "--no-env", "--json"],
    )
    .await;
    let explained: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(explained["attempts"].as_array().unwrap().len(), 7);
    node.shutdown().await;
}

const SLOW_POLICY: &str = r#"
templates:
  once: { retries: 0 }
channels:
  partner:
    http: { url: "${PARTNER}/in" }
    slow_down: { errors: 3, per: 3s, delay: 1s..1500ms, max_delays: 10 }
  tight:
    http: { url: "${PARTNER}/tight" }
    slow_down: { errors: 3, per: 1m, delay: 1s, max_delays: 1 }
  spare: { http: { url: "${PARTNER}/spare" } }
flows:
  send:
    steps: [ { name: deliver, channel: partner, retry: once } ]
  tight:
    steps: [ { name: deliver, channel: tight, retry: once } ]
  fanout:
    steps:
      - name: deliver
        parallel: [partner, spare]
        retry: once
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_burst_slows_new_attempts_down_until_it_ends() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = failing.clone();
    let partner = Partner::start(move |_| {
        if flag.load(Ordering::SeqCst) {
            status(503)
        } else {
            status(200)
        }
    })
    .await;
    let policies = policy_dir(&[("p.yaml", SLOW_POLICY)]);
    let node = TestNode::start(policies.path(), &[("PARTNER", partner.url.as_str())]).await;
    // The burst: four failures on each channel, past their threshold of 3.
    for flow in ["send", "tight"] {
        for n in 0..4 {
            let id = node.submit_ok(flow, json!({ "burst": n }), None).await;
            assert_eq!(node.wait_final(&id).await["state"], "dead");
        }
    }
    failing.store(false, Ordering::SeqCst);
    let sent_after_burst = partner.requests().len();
    // The node sees it within its refresh (a second): GET /v1/channels says.
    for channel in ["partner", "tight"] {
        wait_for(
            std::time::Duration::from_secs(5),
            "the channel never said it was slowing down",
            || async {
                let view: Value = node
                    .client
                    .get(node.url(&format!("/v1/channels/{channel}")))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                view
            },
            |view| view["slow_down"]["slowing"] == true,
        )
        .await;
    }

    // A new job waits, suspended `slowed`, with nothing attempted.
    let id = node.submit_ok("send", json!({ "n": 1 }), None).await;
    let held = wait_for(
        std::time::Duration::from_secs(10),
        "the new job was never slowed",
        || node.job(&id),
        |job| job["reason"] == "slowed" || job["state"] == "succeeded",
    )
    .await;
    assert_eq!(held["state"], "suspended", "{held:#}");
    assert_eq!(held["attempts"], json!([]), "no attempt burnt");
    assert!(held["slowed"].as_u64().unwrap() >= 1);

    // A parallel step's branch on that channel waits too; the other
    // branch goes at once.
    let fan = node.submit_ok("fanout", json!({ "n": 9 }), None).await;
    let waiting = wait_for(
        std::time::Duration::from_secs(10),
        "the branch was never slowed",
        || node.job(&fan),
        |job| job["slowed"].as_u64().unwrap_or(0) >= 1 || job["state"] == "succeeded",
    )
    .await;
    assert!(waiting["slowed"].as_u64().unwrap() >= 1, "{waiting:#}");
    assert!(
        waiting["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["channel"] == "spare"),
        "only the other branch attempted: {waiting:#}"
    );

    // Once the burst is more than `per` ago, it goes, and it succeeds.
    let done = node.wait_final(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["attempts"].as_array().unwrap().len(), 1);
    let first = partner.requests()[sent_after_burst..]
        .iter()
        .filter(|r| r.path == "/in" && r.body["n"] == json!(1))
        .count();
    assert_eq!(first, 1, "one request for the held job");
    let fanned = node.wait_final(&fan).await;
    assert_eq!(fanned["state"], "succeeded", "{fanned:#}");
    // After the burst, new jobs go at once.
    let id = node.submit_ok("send", json!({ "n": 2 }), None).await;
    let done = node.wait_final(&id).await;
    assert_eq!(
        (done["state"].as_str(), done["slowed"].as_u64()),
        (Some("succeeded"), Some(0))
    );

    // `max_delays: 1`: slowed once, then attempted though still past the
    // threshold.
    let id = node.submit_ok("tight", json!({ "n": 3 }), None).await;
    let done = node.wait_final(&id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["slowed"], 1, "{done:#}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_insights_are_its_members_together() {
    let partner = Partner::start(|_| status(200)).await;
    let policy = r#"
channels:
  a: { http: { url: "${PARTNER}/a" } }
  b: { http: { url: "${PARTNER}/b" } }
  both: { pool: { members: [a, b] } }
flows:
  send:
    steps: [ { name: deliver, channel: both } ]
"#;
    let policies = policy_dir(&[("p.yaml", policy)]);
    let node = TestNode::start(policies.path(), &[("PARTNER", partner.url.as_str())]).await;
    for n in 0..4 {
        let id = node.submit_ok("send", json!({ "n": n }), None).await;
        assert_eq!(node.wait_final(&id).await["state"], "succeeded");
    }
    let get = |name: &str| {
        let url = node.url(&format!("/v1/channels/{name}/insights"));
        let client = node.client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(get("a").await["attempts"], 2);
    assert_eq!(get("b").await["attempts"], 2);
    assert_eq!(get("both").await["attempts"], 4);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_reports_its_health_with_the_thresholds_of_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/p.yaml"),
        "channels:\n  c: { file: { dir: spool } }\nflows:\n  f:\n    steps: [ { name: s, channel: c } ]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("steadfast.toml"),
        "[pacing]\nyellow_lag = \"500ms\"\nred_lag = \"5s\"\n",
    )
    .unwrap();
    let engine = common::EngineProcess::start(dir.path(), &[], &[]).await;
    let client = http_client();
    let id = client
        .post(engine.url("/v1/flows/f/jobs"))
        .json(&json!({ "payload": { "n": 1 } }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(
        std::time::Duration::from_secs(10),
        "the job never succeeded",
        || async {
            let job: Value = client
                .get(engine.url(&format!("/v1/jobs/{id}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            job["state"].as_str().unwrap_or_default().to_string()
        },
        |state| state == "succeeded",
    )
    .await;
    let health: Value = client
        .get(engine.url("/v1/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["health"], "green", "{health}");
    assert_eq!(
        (
            health["yellow_lag_ms"].as_u64(),
            health["red_lag_ms"].as_u64()
        ),
        (Some(500), Some(5000))
    );
    let metrics = client
        .get(engine.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("steadfast_engine_health 0"), "{metrics}");
    drop(engine);

    // A bad threshold stops `run` at once, saying which key to fix.
    std::fs::write(
        dir.path().join("steadfast.toml"),
        "[pacing]\nyellow_lag = \"5s\"\nred_lag = \"1s\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .current_dir(dir.path())
        .args(["run", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("[pacing] red_lag"), "{err}");
}
