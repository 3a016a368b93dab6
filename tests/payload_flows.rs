//! Flows that read the payload, end to end: the real engine on a real
//! SQLite file against a real HTTP partner on loopback. A second step's
//! body mapped from the first step's answer, a step skipped by its `when`,
//! a template chosen by the payload's value, a body kept on failover, a
//! mapping that fails as an attempt (never a panic), and priorities at
//! submission.

mod common;

use axum::response::IntoResponse;
use common::*;
use serde_json::{json, Value};

const POLICY: &str = r#"
templates:
  two: { retries: 1, initial: 10ms, jitter: none }
  five: { retries: 4, initial: 10ms, jitter: none }
channels:
  score: { http: { url: "${PARTNER}/score" } }
  crm: { http: { url: "${PARTNER}/crm" } }
  backup: { http: { url: "${PARTNER}/backup" } }
  spool: { file: { dir: "${SPOOL}" } }
flows:
  leads:
    priority: 3
    steps:
      - name: score
        channel: score
        retry:
          - { when: "payload.amount >= 10000", use: five }
          - { use: two }
      - name: deliver
        channel: crm
        when: "steps.score.response.json.score > 50"
        retry: two
        body:
          email: "{{ payload.email }}"
          score: "{{ steps.score.response.json.score }}"
          note: "lead {{ job.key }} scored {{ steps.score.response.json.score }}"
          trace: "{{ steps.score.response.headers['x-trace'] | default('none') }}"
        fallback: [backup, { channel: spool, body: "{{ payload }}" }]
"#;

fn score_answer(r: &Received) -> axum::response::Response {
    match r.path.as_str() {
        "/score" => {
            let score = r.body["lead_score"].as_i64().unwrap_or(0);
            (
                [("x-trace", "t-42"), ("content-type", "application/json")],
                json!({ "score": score }).to_string(),
            )
                .into_response()
        }
        _ => status(200),
    }
}

async fn attempts(s: &Setup, id: &str) -> (Value, Vec<Value>) {
    let job = s.node.wait_final(id).await;
    let attempts = job["attempts"].as_array().cloned().unwrap_or_default();
    (job, attempts)
}

#[tokio::test]
async fn the_second_step_sends_a_body_mapped_from_the_first_steps_answer() {
    let s = Setup::start(POLICY, score_answer).await;
    let id = s
        .node
        .submit_ok(
            "leads",
            json!({"email": "ann@example.com", "amount": 50, "lead_score": 72}),
            Some("lead-1"),
        )
        .await;
    let (job, attempts) = attempts(&s, &id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["priority"], 3, "the flow's priority by default");
    let crm = s.partner.requests_to("/crm");
    assert_eq!(crm.len(), 1);
    // One expression alone keeps its JSON type; text renders.
    assert_eq!(
        crm[0].body,
        json!({
            "email": "ann@example.com",
            "score": 72,
            "note": "lead lead-1 scored 72",
            "trace": "t-42",
        })
    );
    // In the order the policy writes the keys, as a partner reading the
    // text sees them.
    let keys: Vec<&String> = crm[0].body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["email", "score", "note", "trace"]);
    assert_eq!(attempts.len(), 2);
    // The first step got the payload as submitted.
    assert_eq!(s.partner.requests_to("/score")[0].body["lead_score"], 72);
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_step_whose_when_does_not_hold_is_skipped_and_recorded() {
    let s = Setup::start(POLICY, score_answer).await;
    let id = s
        .node
        .submit_ok(
            "leads",
            json!({"email": "bob@example.com", "amount": 50, "lead_score": 10}),
            None,
        )
        .await;
    let (job, attempts) = attempts(&s, &id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert!(s.partner.requests_to("/crm").is_empty());
    assert_eq!(job["attempts_total"], 1, "a skipped step is no attempt");
    let skipped = &attempts[1];
    assert_eq!(
        (&skipped["step"], &skipped["outcome"], &skipped["decision"]),
        (&json!("deliver"), &json!("skipped"), &json!("succeeded"))
    );
    assert!(
        skipped["error_message"]
            .as_str()
            .unwrap()
            .contains("steps.score.response.json.score > 50"),
        "{skipped:#}"
    );
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_high_value_payload_gets_the_template_its_entry_names() {
    let s = Setup::start(POLICY, |r| match r.path.as_str() {
        "/score" => status(503),
        _ => status(200),
    })
    .await;
    let small = s
        .node
        .submit_ok("leads", json!({"email": "a@x", "amount": 50}), None)
        .await;
    let large = s
        .node
        .submit_ok("leads", json!({"email": "b@x", "amount": 25000}), None)
        .await;
    let (small, _) = attempts(&s, &small).await;
    let (large, _) = attempts(&s, &large).await;
    assert_eq!(
        (&small["state"], &large["state"]),
        (&json!("dead"), &json!("dead"))
    );
    // `two`: 1 attempt and 1 retry; `five`: 1 attempt and 4 retries.
    assert_eq!(
        (
            small["attempts_total"].as_u64(),
            large["attempts_total"].as_u64()
        ),
        (Some(2), Some(5))
    );
    s.node.shutdown().await;
}

#[tokio::test]
async fn the_body_follows_the_job_to_its_fallbacks_unless_one_gives_its_own() {
    let s = Setup::start(POLICY, |r| match r.path.as_str() {
        "/score" => (
            [("content-type", "application/json")],
            r#"{"score": 90}"#.to_string(),
        )
            .into_response(),
        _ => status(503),
    })
    .await;
    let id = s
        .node
        .submit_ok("leads", json!({"email": "c@x", "amount": 1}), Some("k-c"))
        .await;
    let (job, _) = attempts(&s, &id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let crm = s.partner.requests_to("/crm");
    assert_eq!(
        crm[0].body["trace"], "none",
        "a default for a missing header"
    );
    let backup = s.partner.requests_to("/backup");
    assert_eq!((crm.len(), backup.len()), (2, 2));
    assert_eq!(backup[0].body, crm[0].body, "the same mapping on failover");
    assert_eq!(backup[0].body["score"], 90);
    // The spool's own body: the payload itself.
    let files: Vec<_> = std::fs::read_dir(s.spool.path())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(files.len(), 1);
    let spooled: Value = serde_json::from_str(&files[0]).unwrap();
    assert!(
        spooled
            .to_string()
            .contains(r#"{"amount":1,"email":"c@x"}"#)
            || spooled
                .to_string()
                .contains(r#"{"email":"c@x","amount":1}"#),
        "{spooled:#}"
    );
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_mapping_that_fails_is_a_recorded_attempt_and_the_job_waits_for_an_edit() {
    let s = Setup::start(POLICY, score_answer).await;
    // No `email`: the body of `deliver` cannot be built.
    let id = s
        .node
        .submit_ok("leads", json!({"amount": 1, "lead_score": 99}), None)
        .await;
    let (job, attempts) = attempts(&s, &id).await;
    assert_eq!(
        (&job["state"], &job["reason"]),
        (&json!("dead"), &json!("permanent"))
    );
    assert!(s.partner.requests_to("/crm").is_empty(), "nothing sent");
    let failed = attempts.last().unwrap();
    assert_eq!(
        (&failed["step"], &failed["error"], &failed["outcome"]),
        (&json!("deliver"), &json!("mapping"), &json!("fail"))
    );
    let message = failed["error_message"].as_str().unwrap();
    assert!(message.contains("payload.email"), "{message}");
    // `jobs show` says it in words under the attempts.
    let shown = {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"));
        command
            .args(["jobs", "show", &id])
            .env("STEADFAST_SERVER", s.node.url(""))
            .env_remove("STEADFAST_TOKEN");
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    };
    let out = String::from_utf8_lossy(&shown.stdout);
    assert!(
        out.contains("last attempt: expression `payload.email` failed"),
        "{out}"
    );

    // Edited and retried from the dead-letter queue, it goes through, its
    // first step's answer still at hand.
    let client = http_client();
    let edited = client
        .patch(s.node.url(&format!("/v1/jobs/{id}")))
        .json(&json!({"payload": {"amount": 1, "lead_score": 99, "email": "d@x"}}))
        .send()
        .await
        .unwrap();
    assert!(edited.status().is_success(), "{}", edited.status());
    let retried = client
        .post(s.node.url(&format!("/v1/jobs/{id}/retry")))
        .send()
        .await
        .unwrap();
    assert!(retried.status().is_success(), "{}", retried.status());
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let crm = s.partner.requests_to("/crm");
    assert_eq!(crm[0].body["email"], "d@x");
    assert_eq!(crm[0].body["score"], 99);
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_submission_may_set_a_priority_within_range() {
    let s = Setup::start(POLICY, score_answer).await;
    let (code, body) = s
        .node
        .submit(
            "leads",
            json!({"payload": {"lead_score": 1}, "priority": 10}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let job = s.node.job(body["id"].as_str().unwrap()).await;
    assert_eq!(job["priority"], 10);
    for bad in [json!(101), json!(-101)] {
        let (code, body) = s
            .node
            .submit("leads", json!({"payload": {}, "priority": bad}))
            .await;
        assert_eq!(code, 422, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("from -100 to 100"),
            "{body}"
        );
    }
    let (code, _) = s
        .node
        .submit("leads", json!({"payload": {}, "priority": "high"}))
        .await;
    assert!(code == 400 || code == 422, "{code}");

    // The CLI passes it on (a negative number is a value, not a flag).
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"));
    command
        .args([
            "submit",
            "leads",
            "--payload",
            r#"{"lead_score": 1}"#,
            "--priority",
            "-5",
        ])
        .env("STEADFAST_SERVER", s.node.url(""))
        .env_remove("STEADFAST_TOKEN");
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(s.node.job(&id).await["priority"], -5);
    s.node.shutdown().await;
}

const POOLS: &str = r#"
templates:
  once: { retries: 0 }
  quick: { retries: 3, initial: 10ms, jitter: none }
channels:
  crm-a:
    http: { url: "${PARTNER}/a" }
    circuit_breaker: { failures: 2, cooldown: 10m }
  crm-b: { http: { url: "${PARTNER}/b" } }
  crm-c: { http: { url: "${PARTNER}/c" } }
  turns: { pool: { members: [crm-a, crm-b] } }
  shares: { pool: { weighted: { crm-b: 3, crm-c: 1 } } }
  best: { pool: { members: [crm-b, crm-c], strategy: healthiest } }
  spool: { file: { dir: "${SPOOL}" } }
flows:
  rr:
    steps:
      - { name: deliver, channel: turns, retry: quick, fallback: [spool] }
  weighted:
    steps:
      - { name: deliver, channel: shares, retry: once }
  healthiest:
    steps:
      - { name: deliver, channel: best, retry: quick }
"#;

fn members(job: &Value) -> Vec<String> {
    job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["member"].as_str().unwrap_or("-").to_string())
        .collect()
}

#[tokio::test]
async fn a_pool_takes_turns_skips_a_member_whose_breaker_is_open_and_records_each_member() {
    let s = Setup::start(POOLS, |r| match r.path.as_str() {
        "/a" => status(503),
        _ => status(200),
    })
    .await;
    // One job at a time, so that the turns are plain to see.
    let mut seen = Vec::new();
    for n in 0..4 {
        let id = s.node.submit_ok("rr", json!({ "n": n }), None).await;
        let job = s.node.wait_final(&id).await;
        assert_eq!(job["state"], "succeeded", "{job:#}");
        assert!(job["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["channel"] == "turns"));
        seen.extend(members(&job));
    }
    // a (503) then b; a (503, its breaker opens) then b; then only b.
    assert_eq!(seen, ["crm-a", "crm-b", "crm-a", "crm-b", "crm-b", "crm-b"]);
    assert_eq!(s.partner.requests_to("/a").len(), 2);

    let (code, view) = {
        let response = http_client()
            .get(s.node.url("/v1/channels/turns"))
            .send()
            .await
            .unwrap();
        let code = response.status().as_u16();
        (code, response.json::<Value>().await.unwrap())
    };
    assert_eq!(code, 200);
    assert_eq!(view["kind"], "pool");
    assert_eq!(view["target"]["strategy"], "round_robin");
    assert!(
        !view["target"]["members"][0]["breaker_open_until"].is_null(),
        "{view:#}"
    );
    s.node.shutdown().await;
}

#[tokio::test]
async fn every_member_open_sends_the_job_to_the_steps_fallback() {
    // Both members fail and open their breakers at once: crm-a after two
    // failures, crm-b (given a breaker here) after one.
    let policy = POOLS.replace(
        "crm-b: { http: { url: \"${PARTNER}/b\" } }",
        "crm-b:\n    http: { url: \"${PARTNER}/b\" }\n    circuit_breaker: { failures: 1, cooldown: 10m }",
    );
    let s = Setup::start(&policy, |_| status(503)).await;
    let id = s.node.submit_ok("rr", json!({ "n": 1 }), None).await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    let last = attempts.last().unwrap();
    assert_eq!(last["channel"], "spool", "{job:#}");
    // Before the spool: a skip row saying the pool's members are all open.
    let skipped: Vec<&Value> = attempts
        .iter()
        .filter(|a| a["outcome"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{job:#}");
    assert_eq!(skipped[0]["channel"], "turns");
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_weighted_pool_shares_attempts_by_weight() {
    let s = Setup::start(POOLS, |_| status(200)).await;
    let mut seen = Vec::new();
    for n in 0..8 {
        let id = s.node.submit_ok("weighted", json!({ "n": n }), None).await;
        seen.extend(members(&s.node.wait_final(&id).await));
    }
    let count = |m: &str| seen.iter().filter(|x| *x == m).count();
    assert_eq!((count("crm-b"), count("crm-c")), (6, 2), "{seen:?}");
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_healthiest_pool_moves_to_the_member_that_succeeds() {
    let s = Setup::start(POOLS, |r| match r.path.as_str() {
        "/b" => status(500),
        _ => status(200),
    })
    .await;
    let mut seen = Vec::new();
    for n in 0..6 {
        let id = s
            .node
            .submit_ok("healthiest", json!({ "n": n }), None)
            .await;
        let job = s.node.wait_final(&id).await;
        assert_eq!(job["state"], "succeeded", "{job:#}");
        seen.extend(members(&job));
    }
    // b is tried while it looks as good as c (untried), then c only.
    let after_b_failed = seen.iter().position(|m| m == "crm-b").map_or(0, |i| i + 1);
    assert!(
        seen[after_b_failed..].iter().all(|m| m == "crm-c"),
        "{seen:?}"
    );
    assert!(
        seen.iter().filter(|m| *m == "crm-b").count() <= 1,
        "{seen:?}"
    );
    s.node.shutdown().await;
}

const PARALLEL: &str = r#"
templates:
  quick: { retries: 3, initial: 10ms, jitter: none }
channels:
  warehouse: { http: { url: "${PARTNER}/warehouse" } }
  analytics: { http: { url: "${PARTNER}/analytics" } }
  crm: { http: { url: "${PARTNER}/crm" } }
flows:
  orders:
    steps:
      - name: announce
        parallel: [warehouse, analytics]
        retry: quick
        body: { order: "{{ payload.order }}" }
      - name: confirm
        channel: crm
        retry: quick
"#;

fn paths(s: &Setup) -> Vec<String> {
    s.partner
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect()
}

#[tokio::test]
async fn each_branch_of_a_parallel_step_retries_on_its_own_and_the_step_waits_for_all() {
    let s = Setup::start(PARALLEL, |r| match r.path.as_str() {
        "/warehouse" if r.attempt <= 2 => status(503),
        _ => status(200),
    })
    .await;
    let id = s
        .node
        .submit_ok("orders", json!({ "order": "SO-1" }), None)
        .await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let count = |p: &str| paths(&s).iter().filter(|x| *x == p).count();
    // The warehouse is retried twice; analytics, answered at once, is not
    // sent again; the next step runs once both have succeeded.
    assert_eq!(
        (count("/warehouse"), count("/analytics"), count("/crm")),
        (3, 1, 1)
    );
    let crm_at = s.partner.requests_to("/crm")[0].at;
    assert!(s
        .partner
        .requests_to("/warehouse")
        .iter()
        .all(|r| r.at < crm_at));
    // Both got the step's body, each under a key of its own.
    let warehouse = s.partner.requests_to("/warehouse");
    let analytics = s.partner.requests_to("/analytics");
    assert_eq!(warehouse[0].body, json!({ "order": "SO-1" }));
    assert_eq!(analytics[0].body, json!({ "order": "SO-1" }));
    assert_ne!(warehouse[0].idempotency_key, analytics[0].idempotency_key);
    let rows: Vec<(String, String)> = job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["channel"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows.iter().filter(|(c, _)| c == "warehouse").count(),
        3,
        "{rows:?}"
    );
    assert_eq!(job["attempts_total"], 5, "{job:#}");
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_dead_branch_kills_the_job_and_a_retry_resends_only_the_failed_branch() {
    let fixed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let warehouse_fixed = fixed.clone();
    let s = Setup::start(PARALLEL, move |r| match r.path.as_str() {
        "/warehouse" if !warehouse_fixed.load(std::sync::atomic::Ordering::SeqCst) => status(422),
        _ => status(200),
    })
    .await;
    let id = s
        .node
        .submit_ok("orders", json!({ "order": "SO-2" }), None)
        .await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(
        (&job["state"], &job["reason"]),
        (&json!("dead"), &json!("permanent")),
        "{job:#}"
    );
    let channels: Vec<&str> = job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["channel"].as_str().unwrap())
        .collect();
    assert!(
        channels.contains(&"warehouse") && channels.contains(&"analytics"),
        "the history has both branches: {channels:?}"
    );
    assert_eq!(s.partner.requests_to("/analytics").len(), 1);
    let branches = &job["branches"]["announce"];
    assert_eq!(
        (
            &branches["warehouse"]["state"],
            &branches["warehouse"]["reason"]
        ),
        (&json!("dead"), &json!("permanent")),
        "{job:#}"
    );
    assert_eq!(branches["analytics"]["state"], "succeeded");

    // The warehouse is fixed; the retry sends it alone, then the next step.
    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let retried = http_client()
        .post(s.node.url(&format!("/v1/jobs/{id}/retry")))
        .send()
        .await
        .unwrap();
    assert!(retried.status().is_success(), "{}", retried.status());
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(s.partner.requests_to("/warehouse").len(), 2);
    assert_eq!(
        s.partner.requests_to("/analytics").len(),
        1,
        "the branch that had succeeded is not sent again"
    );
    assert_eq!(s.partner.requests_to("/crm").len(), 1);
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_slow_branch_times_out_on_its_own_while_the_other_answers() {
    // The warehouse's first answer comes after 1.5 s, past its 200 ms
    // timeout; analytics answers at once. Each branch's attempt is timed on
    // its own: the warehouse's first attempt is a timeout, not a late 200.
    let policy = PARALLEL.replace(
        "warehouse: { http: { url: \"${PARTNER}/warehouse\" } }",
        "warehouse: { http: { url: \"${PARTNER}/warehouse\", timeout: 200ms } }",
    );
    let s = Setup::start(&policy, |r| match r.path.as_str() {
        "/warehouse" if r.attempt == 1 => {
            delayed(std::time::Duration::from_millis(1500), status(200))
        }
        _ => status(200),
    })
    .await;
    let id = s
        .node
        .submit_ok("orders", json!({ "order": "SO-3" }), None)
        .await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let warehouse: Vec<&Value> = job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["channel"] == "warehouse")
        .collect();
    assert_eq!(warehouse[0]["error"], "timeout", "{job:#}");
    assert_eq!(warehouse[1]["status"], 200, "{job:#}");
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_pool_as_a_branch_of_a_parallel_step_picks_a_member_per_attempt() {
    let policy = r#"
templates:
  quick: { retries: 3, initial: 10ms, jitter: none }
channels:
  warehouse: { http: { url: "${PARTNER}/warehouse" } }
  crm-a: { http: { url: "${PARTNER}/a" } }
  crm-b: { http: { url: "${PARTNER}/b" } }
  crms: { pool: { members: [crm-a, crm-b] } }
flows:
  orders:
    steps:
      - name: announce
        parallel: [warehouse, crms]
        retry: quick
        body: { order: "{{ payload.order }}" }
"#;
    let s = Setup::start(policy, |r| match r.path.as_str() {
        "/a" => status(503),
        _ => status(200),
    })
    .await;
    let id = s
        .node
        .submit_ok("orders", json!({ "order": "SO-9", "extra": 1 }), None)
        .await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    // The pool's branch went to crm-a (503), then to crm-b; each row names
    // the pool as its channel and the member it went to.
    let rows: Vec<(String, String)> = job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["channel"].as_str().unwrap().to_string(),
                a["member"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows.iter()
            .filter(|(c, _)| c == "crms")
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>(),
        ["crm-a", "crm-b"],
        "{rows:?}"
    );
    assert!(rows.contains(&("warehouse".to_string(), "-".to_string())));
    assert_eq!(job["branches"]["announce"]["crms"]["state"], "succeeded");
    // Every member got the step's body, under the branch's one key.
    let (a, b) = (s.partner.requests_to("/a"), s.partner.requests_to("/b"));
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(b[0].body, json!({ "order": "SO-9" }));
    assert_eq!(a[0].idempotency_key, b[0].idempotency_key);
    s.node.shutdown().await;
}
