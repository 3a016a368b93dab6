//! End to end: the real engine on a real SQLite file against a real HTTP
//! partner on loopback, one behaviour per test.

mod common;

use std::time::Duration;

use axum::response::IntoResponse;
use common::*;
use serde_json::json;

const POLICY: &str = r#"
templates:
  fast:
    retries: 3
    initial: 50ms
    multiplier: 2
    jitter: none
classifiers:
  partner:
    rules:
      - name: busy
        match: { status: 200, body: '"status"\s*:\s*"busy"' }
        outcome: retry
channels:
  primary: { http: { url: "${PARTNER}/primary", timeout: 300ms } }
  backup: { http: { url: "${PARTNER}/backup" } }
  spool: { file: { dir: "${SPOOL}" } }
  crm: { http: { url: "${PARTNER}/crm" } }
  ops: { http: { url: "${PARTNER}/ops" } }
flows:
  single:
    steps:
      - { name: deliver, channel: primary, retry: fast, classify: partner }
    on_dead: { notify: ops }
  with-fallback:
    steps:
      - { name: deliver, channel: primary, retry: fast, fallback: [backup, spool] }
  two-step:
    steps:
      - { name: deliver, channel: primary, retry: fast }
      - { name: confirm, channel: crm, retry: fast }
"#;

async fn setup(
    script: impl Fn(&Received) -> axum::response::Response + Send + Sync + 'static,
) -> Setup {
    Setup::start(POLICY, script).await
}

#[tokio::test]
async fn transient_503s_are_retried_until_success() {
    let s = setup(|r| {
        if r.attempt <= 2 {
            status(503)
        } else {
            status(200)
        }
    })
    .await;
    let id = s.node.submit_ok("single", json!({"lead": 1}), None).await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded");
    let answers: Vec<String> = attempt_summary(&job).into_iter().map(|a| a.2).collect();
    assert_eq!(answers, ["503", "503", "200"]);
    assert_eq!(s.partner.requests_to("/primary").len(), 3);
    s.node.shutdown().await;
}

#[tokio::test]
async fn the_payload_is_delivered_byte_for_byte() {
    let s = setup(|_| status(200)).await;
    // Key order, a number no float holds, an escape and spacing: as sent.
    let payload = r#"{"z": 1, "a": [12345678901234567890123, 1.50], "s": "caf\u00e9 \"x\""}"#;
    for (path, body) in [
        (
            "jobs",
            format!(r#"{{"payload": {payload}, "idempotency_key": "one"}}"#),
        ),
        (
            "jobs:batch",
            format!("{{\"payload\": {payload}, \"idempotency_key\": \"two\"}}\n"),
        ),
    ] {
        let response = s
            .node
            .client
            .post(s.node.url(&format!("/v1/flows/single/{path}")))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }
    let delivered = || async { s.partner.requests_to("/primary").len() };
    let what = "the two jobs never both reached /primary; requests";
    wait_for(Duration::from_secs(30), what, delivered, |n| *n >= 2).await;
    for request in s.partner.requests_to("/primary") {
        assert_eq!(request.raw_body, payload, "{}", request.idempotency_key);
    }
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_400_goes_dead_after_exactly_one_request() {
    let s = setup(|r| {
        if r.path == "/ops" {
            status(200)
        } else {
            status(400)
        }
    })
    .await;
    let id = s.node.submit_ok("single", json!({"lead": 2}), None).await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "dead");
    assert_eq!(job["reason"], "permanent");
    assert_eq!(s.partner.requests_to("/primary").len(), 1);
    let first = &job["attempts"][0];
    assert_eq!(first["outcome"], "fail");
    assert_eq!(first["rule"], "builtin[4]");
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_busy_body_under_a_200_is_retried_by_the_regex_rule() {
    let s = setup(|r| {
        if r.attempt == 1 {
            status_body(200, r#"{"status": "busy"}"#)
        } else {
            status_body(200, r#"{"status": "ok"}"#)
        }
    })
    .await;
    let id = s.node.submit_ok("single", json!({"lead": 3}), None).await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["attempts"][0]["rule"], "busy");
    assert_eq!(job["attempts"][0]["outcome"], "retry");
    assert_eq!(job["attempts"][1]["rule"], "builtin[0]");
    s.node.shutdown().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let s = setup(|r| {
        if r.attempt == 1 {
            (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
            )
                .into_response()
        } else {
            status(200)
        }
    })
    .await;
    let id = s.node.submit_ok("single", json!({"lead": 4}), None).await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(
        job["attempts"][0]["delay_ms"], 1000,
        "the header, not the 50ms backoff"
    );
    let requests = s.partner.requests_to("/primary");
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "second attempt came after {gap:?}"
    );
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let s = setup(|r| {
        if r.attempt == 1 {
            delayed(Duration::from_millis(1500), status(200))
        } else {
            status(200)
        }
    })
    .await;
    let id = s.node.submit_ok("single", json!({"lead": 5}), None).await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded");
    let first = &job["attempts"][0];
    assert_eq!(first["error"], "timeout");
    assert_eq!(first["outcome"], "retry");
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_down_primary_falls_back_to_the_backup_endpoint() {
    let s = setup(|r| {
        if r.path == "/primary" {
            status(503)
        } else {
            status(201)
        }
    })
    .await;
    let id = s
        .node
        .submit_ok("with-fallback", json!({"order": 1}), Some("order-1"))
        .await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded");
    let channels: Vec<String> = attempt_summary(&job).into_iter().map(|a| a.1).collect();
    assert_eq!(
        channels,
        ["primary", "primary", "primary", "primary", "backup"]
    );
    assert_eq!(job["attempts"][3]["decision"], "fallback");
    assert!(
        s.spool.path().read_dir().unwrap().next().is_none(),
        "spool untouched"
    );
    s.node.shutdown().await;
}

#[tokio::test]
async fn when_the_backup_fails_too_the_file_spool_takes_the_job() {
    let s = setup(|_| status(503)).await;
    let id = s
        .node
        .submit_ok("with-fallback", json!({"order": 2}), Some("order-2"))
        .await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded");
    let last = job["attempts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["channel"], "spool");
    assert_eq!(s.partner.requests_to("/backup").len(), 4);
    let file = steadfast::channels::file::spool_file_name("order-2");
    assert!(file.starts_with("order-2-"), "{file}");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.spool.path().join(file)).unwrap()).unwrap();
    assert_eq!(written["payload"], json!({"order": 2}));
    assert_eq!(written["id"], id.as_str());
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_dead_job_reaches_the_notify_channel() {
    let s = setup(|r| {
        if r.path == "/ops" {
            status(200)
        } else {
            status(503)
        }
    })
    .await;
    let id = s
        .node
        .submit_ok("single", json!({"lead": 6}), Some("lead-6"))
        .await;
    s.node.wait_final(&id).await;
    let notified = || async { s.partner.requests_to("/ops").len() };
    wait_for(Duration::from_secs(10), "no notification", notified, |n| {
        *n > 0
    })
    .await;
    let alert = &s.partner.requests_to("/ops")[0];
    assert_eq!(alert.body["id"], id.as_str());
    assert_eq!(alert.body["state"], "dead");
    assert_eq!(alert.body["reason"], "exhausted");
    assert_eq!(alert.body["payload"], json!({"lead": 6}));
    assert_eq!(alert.body["attempts"].as_array().unwrap().len(), 4);
    assert_eq!(alert.idempotency_key, "lead-6:on_dead");
    // The notification is recorded as an attempt of step `on_dead`.
    let last_attempt =
        |job: &serde_json::Value| job["attempts"].as_array().and_then(|a| a.last()).cloned();
    let job = wait_for(
        Duration::from_secs(10),
        "notification never recorded",
        || s.node.job(&id),
        |job| last_attempt(job).is_some_and(|last| last["step"] == "on_dead"),
    )
    .await;
    let last = last_attempt(&job).unwrap();
    assert_eq!(last["decision"], "notified");
    assert_eq!(last["channel"], "ops");
    s.node.shutdown().await;
}

#[tokio::test]
async fn every_attempt_and_fallback_of_a_step_carries_one_idempotency_key() {
    let s = setup(|r| {
        if r.path == "/backup" && r.attempt >= 2 {
            status(200)
        } else {
            status(503)
        }
    })
    .await;
    let id = s
        .node
        .submit_ok("with-fallback", json!({"n": 7}), None)
        .await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded");
    let keys: Vec<String> = s
        .partner
        .requests()
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 6);
    // No key given: the engine generated one, unique to the job.
    assert!(keys.iter().all(|k| *k == id), "{keys:?}");
    assert_eq!(job["idempotency_key"], id.as_str());
    s.node.shutdown().await;
}

#[tokio::test]
async fn submit_is_idempotent_on_the_key() {
    let s = setup(|_| status(200)).await;
    let body = json!({"payload": {"lead": 8}, "idempotency_key": "lead-8"});
    let (first, created) = s.node.submit("single", body.clone()).await;
    let (second, existing) = s.node.submit("single", body).await;
    assert_eq!((first, second), (201, 200));
    assert_eq!(created["id"], existing["id"]);
    let (conflict, error) = s
        .node
        .submit(
            "single",
            json!({"payload": {"lead": 9}, "idempotency_key": "lead-8"}),
        )
        .await;
    assert_eq!(conflict, 409);
    assert!(
        error["error"].as_str().unwrap().contains("lead-8"),
        "{error}"
    );
    s.node.wait_final(created["id"].as_str().unwrap()).await;
    assert_eq!(s.partner.requests_to("/primary").len(), 1, "delivered once");
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_two_step_flow_runs_its_steps_in_order_with_step_keys() {
    let s = setup(|r| {
        if r.path == "/crm" && r.attempt == 1 {
            status(502)
        } else {
            status(200)
        }
    })
    .await;
    let id = s
        .node
        .submit_ok("two-step", json!({"lead": 10}), Some("lead-10"))
        .await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded");
    let steps: Vec<(String, String)> = attempt_summary(&job)
        .into_iter()
        .map(|a| (a.0, a.4))
        .collect();
    assert_eq!(
        steps,
        [
            ("deliver".to_string(), "next_step".to_string()),
            ("confirm".to_string(), "retry".to_string()),
            ("confirm".to_string(), "succeeded".to_string()),
        ]
    );
    let keys: Vec<(String, String)> = s
        .partner
        .requests()
        .into_iter()
        .map(|r| (r.path, r.idempotency_key))
        .collect();
    assert_eq!(
        keys,
        [
            ("/primary".to_string(), "lead-10".to_string()),
            ("/crm".to_string(), "lead-10:confirm".to_string()),
            ("/crm".to_string(), "lead-10:confirm".to_string()),
        ]
    );
    s.node.shutdown().await;
}
