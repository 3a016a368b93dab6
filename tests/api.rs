//! The HTTP API of a real node: what a client gets for good and bad input.

mod common;

use common::*;
use serde_json::{json, Value};

const POLICY: &str = r#"
channels:
  partner: { http: { url: "${PARTNER}/in" } }
flows:
  leads:
    steps:
      - { name: deliver, channel: partner }
  orders:
    steps:
      - { name: deliver, channel: partner }
"#;

struct Api {
    node: TestNode,
    partner: Partner,
    _policies: tempfile::TempDir,
}

async fn start() -> Api {
    let partner = Partner::start(|_| status(200)).await;
    let policies = policy_dir(&[("api.yaml", POLICY)]);
    let node = TestNode::start(policies.path(), &[("PARTNER", partner.url.as_str())]).await;
    Api {
        node,
        partner,
        _policies: policies,
    }
}

impl Api {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.node.client.get(self.node.url(path))).await
    }

    async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.send(
            self.node
                .client
                .post(self.node.url(path))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.node.client.post(self.node.url(path)).json(&body))
            .await
    }

    async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.node.client.patch(self.node.url(path)).json(&body))
            .await
    }
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
}

#[tokio::test]
async fn submit_answers_201_then_200_for_the_same_key_and_409_for_another_payload() {
    let api = start().await;
    let body = json!({ "payload": { "lead": 1 }, "idempotency_key": "lead-1" });
    let (status, first) = api.post("/v1/flows/leads/jobs", body.clone()).await;
    assert_eq!(status, 201, "{first}");
    let id = first["id"].as_str().unwrap();

    let (status, again) = api.post("/v1/flows/leads/jobs", body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], id);

    let (status, conflict) = api
        .post(
            "/v1/flows/leads/jobs",
            json!({ "payload": { "lead": 2 }, "idempotency_key": "lead-1" }),
        )
        .await;
    assert_eq!(status, 409);
    assert!(error_of(&conflict).contains(id), "{conflict}");

    // Keys are unique per flow: the same key in another flow is a new job.
    let (status, _) = api
        .post(
            "/v1/flows/orders/jobs",
            json!({ "payload": { "lead": 2 }, "idempotency_key": "lead-1" }),
        )
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn bad_submissions_say_what_to_fix() {
    let api = start().await;
    let cases: [(&str, &str, u16, &str); 7] = [
        ("/v1/flows/leads/jobs", "{not json", 400, "not valid JSON"),
        ("/v1/flows/leads/jobs", "{}", 422, "`payload` is missing"),
        (
            "/v1/flows/leads/jobs",
            r#"{"payload": 1, "priority": 500}"#,
            422,
            "body field `priority` is 500; write a whole number from -100 to 100",
        ),
        (
            "/v1/flows/leads/jobs",
            r#"{"payload": 1, "prio": 5}"#,
            422,
            "unknown field `prio`",
        ),
        (
            "/v1/flows/leads/jobs",
            r#"{"payload": 1, "run_at": "tomorrow"}"#,
            422,
            "run_at",
        ),
        (
            "/v1/flows/nope/jobs",
            r#"{"payload": 1}"#,
            404,
            "flows in force: leads, orders",
        ),
        ("/v1/nothing-here", "{}", 404, "no such endpoint"),
    ];
    for (path, body, expected, hint) in cases {
        let (status, answer) = api.post_raw(path, body).await;
        assert_eq!(status, expected, "{path} {body}: {answer}");
        assert!(
            error_of(&answer).contains(hint),
            "{path} {body}: `{}` lacks `{hint}`",
            error_of(&answer)
        );
    }
    let oversized = format!(r#"{{"payload": "{}"}}"#, "x".repeat(11 * 1024 * 1024));
    let (status, answer) = api.post_raw("/v1/flows/leads/jobs", oversized).await;
    assert_eq!(status, 413, "{answer}");
    assert!(error_of(&answer).contains("too large"));
    // Nothing was stored by any of them.
    let (_, page) = api.get("/v1/jobs").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 0, "{page}");
}

#[tokio::test]
async fn a_batch_answers_each_item_and_accepts_ndjson() {
    let api = start().await;
    let (status, answer) = api
        .post(
            "/v1/flows/leads/jobs:batch",
            json!([
                { "payload": { "n": 1 }, "idempotency_key": "b-1" },
                { "idempotency_key": "b-2" },
                { "payload": { "n": 1 }, "idempotency_key": "b-1" },
            ]),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["created"], 1);
    assert_eq!(answer["failed"], 1);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], 201);
    assert_eq!(results[1]["status"], 422);
    assert!(error_of(&results[1]).contains("payload"));
    assert_eq!(results[2]["status"], 200);
    assert_eq!(results[2]["id"], results[0]["id"]);

    let ndjson = "{\"payload\": {\"n\": 3}}\n\n{\"payload\": {\"n\": 4}}\n";
    let (status, answer) = api.post_raw("/v1/flows/leads/jobs:batch", ndjson).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["created"], 2);

    let (status, answer) = api.post_raw("/v1/flows/leads/jobs:batch", "[]").await;
    assert_eq!(status, 422, "{answer}");
}

#[tokio::test]
async fn a_job_shows_its_attempts_and_the_list_pages_with_a_cursor() {
    let api = start().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            api.node
                .submit_ok("leads", json!({ "n": n }), Some(&format!("k-{n}")))
                .await,
        );
    }
    let order = api.node.submit_ok("orders", json!({ "o": 1 }), None).await;
    // The orders job is counted below too: wait for it, not just the leads.
    assert_eq!(api.node.wait_final(&order).await["state"], "succeeded");
    for id in &ids {
        let job = api.node.wait_final(id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let attempt = &job["attempts"][0];
        for field in [
            "step",
            "channel",
            "attempt",
            "started_at",
            "finished_at",
            "status",
            "outcome",
            "rule",
            "next_at",
        ] {
            assert!(attempt.get(field).is_some(), "attempt lacks {field}: {job}");
        }
        assert_eq!(attempt["status"], 200);
    }
    assert_eq!(api.partner.requests().len(), 6);

    let mut seen = Vec::new();
    let mut path = "/v1/jobs?flow=leads&limit=2".to_string();
    loop {
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        for job in page["jobs"].as_array().unwrap() {
            assert_eq!(job["flow"], "leads");
            seen.push(job["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/jobs?flow=leads&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");

    let (_, page) = api.get("/v1/jobs?state=succeeded&flow=orders").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);

    // Empty parameters, as a form sends them, are no filter (schemathesis
    // found them refused with 400).
    let (status, page) = api
        .get("/v1/jobs?state=&flow=orders&step=&status=&error=&rule=&since=&until=&limit=&cursor=")
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);

    for (path, hint) in [
        ("/v1/jobs?state=lost", "expected one of pending"),
        ("/v1/jobs?limit=0", "between 1 and 1000"),
        ("/v1/jobs?colour=red", "parameters are state, flow"),
        ("/v1/jobs/no-such-id", "no job `no-such-id`"),
    ] {
        let (status, answer) = api.get(path).await;
        assert!(status == 400 || status == 404, "{path}: {status}");
        assert!(error_of(&answer).contains(hint), "{path}: {answer}");
    }
}

#[tokio::test]
async fn operators_edit_cancel_and_retry_only_from_allowed_states() {
    let api = start().await;
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let (status, created) = api
        .post(
            "/v1/flows/leads/jobs",
            json!({ "payload": { "phone": "bad" }, "run_at": later.to_string() }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();

    let (status, edited) = api
        .patch(
            &format!("/v1/jobs/{id}"),
            json!({ "payload": { "phone": "+1-555-0100" } }),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["payload"]["phone"], "+1-555-0100");

    let (status, answer) = api.post(&format!("/v1/jobs/{id}/retry"), json!({})).await;
    assert_eq!(status, 409, "{answer}");
    assert!(error_of(&answer).contains("only dead jobs"), "{answer}");

    let (status, cancelled) = api.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");

    let (status, answer) = api
        .patch(&format!("/v1/jobs/{id}"), json!({ "payload": {} }))
        .await;
    assert_eq!(status, 409, "{answer}");
    let (status, answer) = api.patch(&format!("/v1/jobs/{id}"), json!({})).await;
    assert_eq!(status, 422, "{answer}");
    let (status, _) = api.post("/v1/jobs/missing/cancel", json!({})).await;
    assert_eq!(status, 404);
    assert!(
        api.partner.requests().is_empty(),
        "a cancelled job was sent"
    );
}

#[tokio::test]
async fn health_policies_and_metrics_describe_the_node() {
    let api = start().await;
    let (status, health) = api.get("/healthz").await;
    assert_eq!((status, health), (200, json!({ "status": "ok" })));

    // The API describes itself: the committed document, served.
    let (status, document) = api.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(document, committed);

    let (status, policies) = api.get("/v1/policies").await;
    assert_eq!(status, 200);
    assert_eq!(policies["flows"], json!(["leads", "orders"]));
    assert_eq!(policies["version"].as_str().unwrap().len(), 12);
    assert!(policies["files"][0].as_str().unwrap().ends_with("api.yaml"));
    assert!(
        !policies.to_string().contains(&api.partner.url),
        "a resolved ${{PARTNER}} value leaked: {policies}"
    );

    let id = api.node.submit_ok("leads", json!({ "n": 1 }), None).await;
    api.node.wait_final(&id).await;
    let metrics = api
        .node
        .client
        .get(api.node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "steadfast_jobs{state=\"succeeded\"}",
        "steadfast_attempts_total{flow=\"leads\",step=\"deliver\",channel=\"partner\",outcome=\"success\"}",
        "steadfast_attempt_duration_seconds_bucket{flow=\"leads\",channel=\"partner\"",
    ] {
        assert!(metrics.contains(expected), "no {expected} in\n{metrics}");
    }
}

/// A paused flow's jobs wait `suspended` with reason `paused`, sending
/// nothing and burning no attempt, while other flows go on; `GET
/// /v1/flows` shows it; a resume delivers them at once.
#[tokio::test]
async fn a_paused_flow_holds_its_jobs_until_resumed() {
    let api = start().await;
    let (status, body) = api.post("/v1/flows/leads/pause", json!(null)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "flow": "leads", "paused": true, "changed": true })
    );
    let (_, again) = api.post("/v1/flows/leads/pause", json!(null)).await;
    assert_eq!(again["changed"], false);
    let (status, unknown) = api.post("/v1/flows/nope/pause", json!(null)).await;
    assert_eq!(status, 404);
    assert!(unknown["error"]
        .as_str()
        .unwrap()
        .contains("its flows: leads, orders"));

    let held = api.node.submit_ok("leads", json!({ "n": 1 }), None).await;
    let other = api.node.submit_ok("orders", json!({ "n": 2 }), None).await;
    assert_eq!(api.node.wait_final(&other).await["state"], "succeeded");
    let job = wait_for(
        std::time::Duration::from_secs(10),
        "the job held",
        async || api.node.job(&held).await,
        |job| job["state"] == "suspended",
    )
    .await;
    assert_eq!(job["reason"], "paused");
    assert_eq!(job["attempts_total"], 0);
    assert!(
        api.partner.requests().iter().all(|r| r.body["n"] != 1),
        "nothing sent"
    );

    let (_, flows) = api.get("/v1/flows").await;
    let leads = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "leads")
        .unwrap()
        .clone();
    assert_eq!(leads["paused"], true);
    assert_eq!(leads["paused_by"], "local");
    assert_eq!(leads["jobs"]["suspended"], 1);

    let (status, resumed) = api.post("/v1/flows/leads/resume", json!(null)).await;
    assert_eq!(status, 200);
    assert_eq!(resumed["resumed"], 1);
    let done = api.node.wait_final(&held).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["attempts_total"], 1);
    let (_, not_paused) = api.post("/v1/flows/leads/resume", json!(null)).await;
    assert_eq!(not_paused["changed"], false);
}
