//! Dead-letter work against a real node, a real SQLite file and a real
//! partner on loopback: listing by filter, retrying one, many and thousands,
//! editing payloads with an audit trail, cancelling, and the CLI for each.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const POLICY: &str = r#"
templates:
  once: { retries: 0 }
channels:
  partner: { http: { url: "${PARTNER}/in" } }
  down: { http: { url: "http://127.0.0.1:9/nobody", timeout: 2s } }
flows:
  leads:
    steps:
      - { name: deliver, channel: partner, retry: once }
  orders:
    steps:
      - { name: deliver, channel: partner, retry: once }
  lost:
    steps:
      - { name: send, channel: down, retry: once }
"#;

struct Dlq {
    node: TestNode,
    partner: Partner,
    /// While false the partner answers 400 (a permanent failure).
    healthy: Arc<AtomicBool>,
    _policies: tempfile::TempDir,
}

async fn start() -> Dlq {
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let partner = Partner::start(move |request| {
        if request.body["slow"] == json!(true) {
            return delayed(Duration::from_secs(3), status(200));
        }
        if flag.load(Ordering::SeqCst) {
            status(200)
        } else {
            status(400)
        }
    })
    .await;
    let policies = policy_dir(&[("dlq.yaml", POLICY)]);
    let node = TestNode::start(policies.path(), &[("PARTNER", partner.url.as_str())]).await;
    Dlq {
        node,
        partner,
        healthy,
        _policies: policies,
    }
}

impl Dlq {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.node.client.get(self.node.url(path))).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.node.client.post(self.node.url(path)).json(&body))
            .await
    }

    async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.node.client.patch(self.node.url(path)).json(&body))
            .await
    }

    /// Submits a job and waits until it is dead.
    async fn dead_job(&self, flow: &str, payload: Value) -> String {
        let id = self.node.submit_ok(flow, payload, None).await;
        let job = self.node.wait_final(&id).await;
        assert_eq!(job["state"], "dead", "{job:#}");
        id
    }

    async fn ids(&self, query: &str) -> Vec<String> {
        let (status, page) = self.get(&format!("/v1/jobs?{query}")).await;
        assert_eq!(status, 200, "{page}");
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Polls the operation until done.
    async fn operation(&self, id: &str) -> Value {
        let path = format!("/v1/operations/{id}");
        let fetch = || async {
            let (status, op) = self.get(&path).await;
            assert_eq!(status, 200, "{op}");
            op
        };
        let what = "operation never finished";
        wait_for(Duration::from_secs(60), what, fetch, |op| {
            op["done"] == json!(true)
        })
        .await
    }

    async fn count(&self, state: &str, flow: &str) -> u64 {
        let filter = steadfast::store::JobFilter {
            state: Some(state.parse().unwrap()),
            flow: Some(flow.to_string()),
            ..Default::default()
        };
        self.node.node.store.jobs_count(&filter).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_jobs_are_listed_by_flow_step_last_answer_rule_and_time() {
    let dlq = start().await;
    let before = jiff::Timestamp::now();
    let lead = dlq.dead_job("leads", json!({ "n": 1 })).await;
    let order = dlq.dead_job("orders", json!({ "n": 2 })).await;
    let lost = dlq.dead_job("lost", json!({ "n": 3 })).await;

    assert_eq!(dlq.ids("state=dead&flow=leads").await, vec![lead.clone()]);
    assert_eq!(dlq.ids("state=dead&step=send").await, vec![lost.clone()]);
    let by_status = dlq.ids("state=dead&status=400").await;
    assert_eq!(by_status, vec![order.clone(), lead.clone()]);
    assert_eq!(
        dlq.ids("state=dead&error=connect").await,
        vec![lost.clone()]
    );
    let job = dlq.node.job(&lead).await;
    let rule = job["attempts"][0]["rule"].as_str().unwrap().to_string();
    let by_rule = dlq
        .ids(&format!(
            "state=dead&rule={}",
            rule.replace('[', "%5B").replace(']', "%5D")
        ))
        .await;
    assert!(
        by_rule.contains(&lead) && by_rule.contains(&order),
        "{by_rule:?}"
    );
    assert!(!by_rule.contains(&lost));
    assert_eq!(dlq.ids("state=dead&since=1h").await.len(), 3);
    assert_eq!(
        dlq.ids(&format!("state=dead&until={before}")).await.len(),
        0
    );
    let future = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    assert_eq!(
        dlq.ids(&format!("state=dead&since={future}")).await.len(),
        0
    );

    // Bad filters say what to fix.
    let (status, body) = dlq.get("/v1/jobs?state=dead&since=yesterday").await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("RFC 3339"),
        "{body}"
    );
    let (status, body) = dlq.get("/v1/jobs?state=dead&colour=red").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("since"), "{body}");

    // The CLI: dlq list with filters, as a table and as JSON.
    let server = dlq.node.node.url();
    let (code, out, err) = cli(&server, &["dlq", "list", "--flow", "leads"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&lead) && !out.contains(&order), "{out}");
    let (code, out, err) = cli(&server, &["dlq", "list", "--error", "connect", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["jobs"][0]["id"], json!(lost));
    let (code, _, err) = cli(&server, &["dlq", "list", "--since", "soon"]).await;
    assert_eq!(code, 2, "{err}");

    // jobs show: the attempt history as a table, whole in --json.
    let (code, out, err) = cli(&server, &["jobs", "show", &lead]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("STARTED") && out.contains("400") && out.contains(&rule),
        "{out}"
    );
    let (code, out, _) = cli(&server, &["jobs", "show", &lead, "--json"]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["attempts"][0]["status"], 400);
    assert_eq!(shown["attempts"][0]["decision"], "dead");
    dlq.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_ids_starts_the_failed_step_afresh_and_keeps_the_history() {
    let dlq = start().await;
    let a = dlq.dead_job("leads", json!({ "n": 1 })).await;
    let b = dlq.dead_job("leads", json!({ "n": 2 })).await;
    let c = dlq.dead_job("orders", json!({ "n": 3 })).await;
    dlq.healthy.store(true, Ordering::SeqCst);

    let (status, body) = dlq
        .post("/v1/dlq/retry", json!({ "ids": [a, b, "no-such-job"] }))
        .await;
    assert_eq!(status, 202, "{body}");
    let op = dlq.operation(body["operation"].as_str().unwrap()).await;
    assert_eq!(
        (
            op["matched"].clone(),
            op["retried"].clone(),
            op["skipped"].clone()
        ),
        (json!(3), json!(2), json!(1)),
        "{op}"
    );
    assert_eq!(op["skipped_ids"], json!(["no-such-job"]));
    for id in [&a, &b] {
        let job = dlq.node.wait_final(id).await;
        assert_eq!(job["state"], "succeeded", "{job:#}");
        let attempts = job["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "history kept: {job:#}");
        assert_eq!(attempts[0]["status"], 400);
        assert_eq!(attempts[1]["status"], 200);
        assert_eq!(attempts[1]["attempt"], 1, "the step starts afresh");
    }
    let (_, metrics) = dlq.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    for series in [
        "steadfast_dead_letters_total{flow=\"leads\",reason=\"permanent\"}",
        "steadfast_attempts_until_success_bucket{flow=\"leads\",le=\"2\"}",
        "steadfast_manual_retries_total",
        "steadfast_jobs{state=\"dead\"}",
        "steadfast_claim_lag_seconds_bucket",
        "steadfast_attempt_duration_seconds_bucket",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
    // Retrying a job that is not dead is skipped, not an error.
    let (_, body) = dlq.post("/v1/dlq/retry", json!({ "ids": [a] })).await;
    let op = dlq.operation(body["operation"].as_str().unwrap()).await;
    assert_eq!(op["skipped"], 1);

    // The CLI: one id.
    let server = dlq.node.node.url();
    let (code, out, err) = cli(&server, &["dlq", "retry", &c]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 retried"), "{out}");
    assert_eq!(dlq.node.wait_final(&c).await["state"], "succeeded");

    // Bad requests say what to fix.
    for (body, needle) in [
        (json!({}), "say which dead jobs"),
        (json!({ "ids": [] }), "empty"),
        (json!({ "ids": ["x"], "filter": {} }), "not several"),
        (json!({ "filter": {}, "rate": "fast" }), "500/s"),
        (json!({ "filter": { "since": "later" } }), "RFC 3339"),
        (json!({ "filter": { "colour": "red" } }), "colour"),
    ] {
        let (status, answer) = dlq.post("/v1/dlq/retry", body.clone()).await;
        assert!(status == 422 || status == 400, "{body}: {status} {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{body}: {answer}"
        );
    }
    let (status, _) = dlq.get("/v1/operations/nope").await;
    assert_eq!(status, 404);
    let (code, _, err) = cli(&server, &["dlq", "retry", "--flow", "leads", &a]).await;
    assert_eq!(code, 2, "filters without --all are refused: {err}");
    dlq.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_retry_of_thousands_goes_in_batches_at_the_rate_asked() {
    let dlq = start().await;
    const JOBS: usize = 3000;
    let lines: Vec<String> = (0..JOBS)
        .map(|n| json!({ "payload": { "n": n } }).to_string())
        .collect();
    for chunk in lines.chunks(1000) {
        let (status, answer) = dlq
            .send(
                dlq.node
                    .client
                    .post(dlq.node.url("/v1/flows/leads/jobs:batch"))
                    .header("content-type", "application/x-ndjson")
                    .body(chunk.join("\n")),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    // One dead job of another flow, which the filter must leave alone.
    let other = dlq.dead_job("orders", json!({ "other": true })).await;
    let within = Duration::from_secs(120);
    let all = |count: &u64| *count >= JOBS as u64;
    let dead = async || dlq.count("dead", "leads").await;
    wait_for(within, "not every job died; dead", dead, all).await;
    dlq.healthy.store(true, Ordering::SeqCst);
    let sent_before = dlq.partner.requests().len();

    // The CLI asks; 2000/s spreads 3000 jobs over 1.5 s.
    let server = dlq.node.node.url();
    let (code, out, err) = cli(
        &server,
        &[
            "dlq", "retry", "--all", "--flow", "leads", "--since", "1h", "--rate", "2000/s",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let op: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(op["matched"], JOBS, "{op}");
    assert_eq!(op["retried"], JOBS, "{op}");
    assert_eq!(op["skipped"], 0, "{op}");
    assert_eq!(op["rate_per_second"], 2000.0);

    let succeeded = async || dlq.count("succeeded", "leads").await;
    wait_for(
        within,
        "not every retried job succeeded; succeeded",
        succeeded,
        all,
    )
    .await;
    let retried = &dlq.partner.requests()[sent_before..];
    assert_eq!(retried.len(), JOBS);
    let first = retried.iter().map(|r| r.at).min().unwrap();
    let last = retried.iter().map(|r| r.at).max().unwrap();
    assert!(
        last - first >= Duration::from_millis(1200),
        "paced: 3000 jobs at 2000/s take about 1.5 s, took {:?}",
        last - first
    );
    assert_eq!(dlq.node.job(&other).await["state"], "dead");
    dlq.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_keeps_the_old_payload_with_who_and_when_and_running_jobs_refuse() {
    let dlq = start().await;
    let id = dlq.dead_job("leads", json!({ "email": "typo@" })).await;
    let (status, job) = dlq
        .patch(
            &format!("/v1/jobs/{id}"),
            json!({ "payload": { "email": "fixed@example.com" } }),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["payload"]["email"], "fixed@example.com");

    // The CLI edits again; `jobs show` lists both edits, oldest first.
    let server = dlq.node.node.url();
    let (code, out, err) = cli(
        &server,
        &[
            "dlq",
            "edit",
            &id,
            "--payload",
            r#"{"email": "final@example.com"}"#,
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("payload replaced"), "{out}");
    let job = dlq.node.job(&id).await;
    let edits = job["payload_edits"].as_array().unwrap();
    assert_eq!(edits.len(), 2, "{job:#}");
    assert_eq!(edits[0]["old_payload"], json!({ "email": "typo@" }));
    assert_eq!(
        edits[0]["new_payload"],
        json!({ "email": "fixed@example.com" })
    );
    assert_eq!(
        edits[1]["new_payload"],
        json!({ "email": "final@example.com" })
    );
    assert_eq!(edits[0]["editor"], "local");
    assert!(edits[0]["edited_at"].as_str().is_some());
    let (code, out, _) = cli(&server, &["jobs", "show", &id]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("payload edits:") && out.contains("typo@"),
        "{out}"
    );
    let (code, _, err) = cli(&server, &["dlq", "edit", &id, "--payload", "{oops"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not valid JSON"), "{err}");

    // Retried, the partner gets the edited payload.
    dlq.healthy.store(true, Ordering::SeqCst);
    let (_, body) = dlq.post("/v1/dlq/retry", json!({ "ids": [id] })).await;
    dlq.operation(body["operation"].as_str().unwrap()).await;
    assert_eq!(dlq.node.wait_final(&id).await["state"], "succeeded");
    let last = dlq.partner.requests().last().unwrap().clone();
    assert_eq!(last.body, json!({ "email": "final@example.com" }));

    // A running job refuses edits with 409 and says why.
    let slow = dlq
        .node
        .submit_ok("leads", json!({ "slow": true }), None)
        .await;
    let what = "the slow job never ran";
    let fetch = || dlq.node.job(&slow);
    wait_for(Duration::from_secs(10), what, fetch, |job| {
        job["state"] == "running"
    })
    .await;
    let (status, body) = dlq
        .patch(
            &format!("/v1/jobs/{slow}"),
            json!({ "payload": { "x": 1 } }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("it is running"),
        "{body}"
    );
    let (code, _, err) = cli(&server, &["dlq", "edit", &slow, "--payload", "{}"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("running"), "{err}");
    dlq.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_a_dead_job_on_purpose() {
    let dlq = start().await;
    let id = dlq.dead_job("leads", json!({ "n": 1 })).await;
    let server = dlq.node.node.url();
    let (code, out, err) = cli(&server, &["dlq", "cancel", &id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cancelled"), "{out}");
    let (status, body) = dlq
        .post(&format!("/v1/jobs/{id}/cancel"), json!(null))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("cancelled"),
        "{body}"
    );
    // A cancelled job is no longer dead: a bulk retry leaves it.
    let (_, body) = dlq
        .post("/v1/dlq/retry", json!({ "filter": { "flow": "leads" } }))
        .await;
    let op = dlq.operation(body["operation"].as_str().unwrap()).await;
    assert_eq!(op["retried"], 0, "{op}");
    assert_eq!(dlq.node.job(&id).await["state"], "cancelled");
    dlq.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_over_its_flows_hourly_quota_waits_for_the_next_hour() {
    let partner = Partner::start(|_| status(503)).await;
    let policies = policy_dir(&[(
        "q.yaml",
        r#"
templates:
  quick: { backoff: fixed, initial: 10ms, retries: 5, jitter: none }
channels:
  partner: { http: { url: "${PARTNER}/in" } }
flows:
  capped:
    steps:
      - { name: deliver, channel: partner, retry: quick }
"#,
    )]);
    let node = TestNode::start_with_quotas(
        policies.path(),
        &[("PARTNER", partner.url.as_str())],
        steadfast::retry::quota::QuotaConfig {
            per_flow_per_hour: Some(2),
            ..Default::default()
        },
    )
    .await;
    let id = node.submit_ok("capped", json!({ "n": 1 }), None).await;
    let what = "never held by the quota";
    let fetch = || node.job(&id);
    let job = wait_for(Duration::from_secs(20), what, fetch, |job| {
        job["state"] == "suspended"
    })
    .await;
    assert_eq!(job["reason"], "quota", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.len(),
        3,
        "two retries allowed, the third held: {job:#}"
    );
    assert_eq!(attempts[2]["decision"], "suspend");
    let next: jiff::Timestamp = job["next_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        next.as_millisecond() % 3_600_000,
        0,
        "the next hour: {next}"
    );
    let metrics = node
        .client
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("steadfast_quota_rejections_total{flow=\"capped\",scope=\"flow\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("steadfast_retries_total{flow=\"capped\",reason=\"http_503\"}"));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_say_which_flow_how_many_since_when_and_what_to_run_next_once_per_period() {
    use steadfast::alerts::{compile, AlertKind, AlertRule, AlertsConfig};
    let partner = Partner::start(|request| match request.path.as_str() {
        "/ops" => status(200),
        "/in" => status(400),
        _ => status(503),
    })
    .await;
    let policies = policy_dir(&[(
        "alerts.yaml",
        r#"
templates:
  once: { retries: 0 }
  quick: { backoff: fixed, initial: 10ms, retries: 5, jitter: none }
channels:
  partner: { http: { url: "${PARTNER}/in" } }
  flaky: { http: { url: "${PARTNER}/flaky" } }
  fragile: { http: { url: "${PARTNER}/fragile" } }
  ops: { http: { url: "${PARTNER}/ops" } }
flows:
  leads:
    steps:
      - { name: deliver, channel: partner, retry: once }
  shaky:
    steps:
      - { name: deliver, channel: flaky, retry: quick }
  brittle:
    steps:
      - name: deliver
        channel: fragile
        retry: quick
        circuit_breaker: { failures: 2, window: 60s, cooldown: 1h }
"#,
    )]);
    let rule = |kind, flow: Option<&str>, over| AlertRule {
        kind,
        flow: flow.map(str::to_string),
        channel: None,
        over,
        window: None,
        notify: "ops".into(),
        every: Some("1h".into()),
    };
    let rules = compile(&[
        rule(AlertKind::DeadLetters, Some("leads"), Some(1.0)),
        rule(AlertKind::RetryShare, Some("shaky"), Some(0.5)),
        rule(AlertKind::BreakerOpen, None, None),
    ])
    .unwrap();
    let node = TestNode::start_with_alerts(
        policies.path(),
        &[("PARTNER", partner.url.as_str())],
        AlertsConfig {
            rules,
            check_every: Duration::from_millis(100),
        },
    )
    .await;
    for n in 0..2 {
        node.submit_ok("leads", json!({ "n": n }), None).await;
    }
    for n in 0..3 {
        node.submit_ok("shaky", json!({ "n": n }), None).await;
    }
    node.submit_ok("brittle", json!({ "n": 0 }), None).await;

    let sent = || async {
        let alerts = partner.requests_to("/ops").into_iter().map(|r| r.body);
        Value::Array(alerts.collect())
    };
    let all_three = |alerts: &Value| {
        let kinds: Vec<&str> = alerts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["alert"].as_str())
            .collect();
        ["dead_letters", "retry_share", "breaker_open"]
            .iter()
            .all(|k| kinds.contains(k))
    };
    let alerts = wait_for(
        Duration::from_secs(20),
        "not every alert came",
        sent,
        all_three,
    )
    .await;
    let alerts = alerts.as_array().unwrap();
    let of = |kind: &str| alerts.iter().find(|a| a["alert"] == kind).unwrap().clone();
    let dead = of("dead_letters");
    assert_eq!(dead["flow"], "leads");
    assert_eq!(dead["count"], 2);
    assert!(dead["since"].as_str().is_some());
    assert!(
        dead["next"]
            .as_str()
            .unwrap()
            .contains("steadfast dlq list --flow leads"),
        "{dead}"
    );
    let share = of("retry_share");
    assert_eq!(share["flow"], "shaky");
    assert!(share["share"].as_f64().unwrap() > 0.5, "{share}");
    // Judged from 10 attempts up; `count` is the retries among them.
    assert!(share["attempts"].as_u64().unwrap() >= 10, "{share}");
    assert!(share["count"].as_u64().unwrap() > share["attempts"].as_u64().unwrap() / 2);
    let breaker = of("breaker_open");
    assert_eq!(breaker["channel"], "fragile");
    assert_eq!(breaker["flows"], json!(["brittle"]));
    assert!(breaker["next"]
        .as_str()
        .unwrap()
        .contains("/v1/channels/fragile"));

    // Rate-limited: the conditions hold, but each alert went out once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = partner.requests_to("/ops");
    for kind in ["dead_letters", "retry_share", "breaker_open"] {
        let count = sent.iter().filter(|r| r.body["alert"] == kind).count();
        assert_eq!(count, 1, "{kind} sent {count} times");
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_retry_scheduled_off_peak_waits_pending_until_its_time() {
    let dlq = start().await;
    let ids = [
        dlq.dead_job("leads", json!({ "n": 1 })).await,
        dlq.dead_job("leads", json!({ "n": 2 })).await,
    ];
    dlq.healthy.store(true, Ordering::SeqCst);
    let sent_before = dlq.partner.requests().len();
    let in_3s = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    // The step log keeps milliseconds.
    let at = jiff::Timestamp::from_millisecond(in_3s.as_millisecond()).unwrap();

    let server = dlq.node.node.url();
    let (code, out, err) = cli(
        &server,
        &[
            "dlq",
            "retry",
            "--all",
            "--flow",
            "leads",
            "--at",
            &at.to_string(),
            "--rate",
            "10/s",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let op: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(op["retried"], 2, "{op}");
    assert_eq!(op["scheduled"], true, "{op}");
    assert_eq!(op["runs_at"], at.to_string(), "{op}");

    // Until then: pending, due at `at` and 100 ms apart (10/s), nothing sent.
    let mut due: Vec<String> = Vec::new();
    for id in &ids {
        let job = dlq.node.job(id).await;
        assert_eq!(job["state"], "pending", "{job:#}");
        due.push(job["next_at"].as_str().unwrap().to_string());
    }
    due.sort();
    let first: jiff::Timestamp = due[0].parse().unwrap();
    let second: jiff::Timestamp = due[1].parse().unwrap();
    assert_eq!(first, at);
    assert_eq!(second.duration_since(first).as_millis(), 100);
    let (status, listed) = dlq.get("/v1/operations").await;
    assert_eq!(status, 200);
    assert_eq!(listed["operations"][0]["id"], op["id"], "{listed}");
    assert_eq!(listed["operations"][0]["scheduled"], true);
    assert_eq!(
        dlq.partner.requests().len(),
        sent_before,
        "nothing sent early"
    );

    // Then they go, and the operation no longer says scheduled.
    for id in &ids {
        let job = dlq.node.wait_final(id).await;
        assert_eq!(job["state"], "succeeded", "{job:#}");
        let last = job["attempts"].as_array().unwrap().last().unwrap().clone();
        let started: jiff::Timestamp = last["started_at"].as_str().unwrap().parse().unwrap();
        assert!(started >= at, "sent at {started}, before {at}");
    }
    let (_, report) = dlq
        .get(&format!("/v1/operations/{}", op["id"].as_str().unwrap()))
        .await;
    assert_eq!(report["scheduled"], false, "{report}");

    // A time gone by, or unreadable, is refused with what to write.
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);
    let (status, answer) = dlq
        .post(
            "/v1/dlq/retry",
            json!({ "filter": {}, "at": past.to_string() }),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("in the past"),
        "{answer}"
    );
    let (code, _, err) = cli(&server, &["dlq", "retry", "--all", "--at", "tonight"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--at `tonight`"), "{err}");
    dlq.node.shutdown().await;
}
