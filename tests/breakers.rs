//! End to end, the channel's own state: circuit breakers, rate and
//! concurrency limits, and `refresh_auth`, with the real engine on a real
//! SQLite file against a real HTTP partner on loopback.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::{json, Value};

const POLICY: &str = r#"
templates:
  once: { retries: 0 }
  fast: { retries: 3, initial: 50ms, multiplier: 2, jitter: none }
classifiers:
  auth:
    rules:
      - { match: { status: 401 }, outcome: refresh_auth, name: expired }
channels:
  primary:
    http: { url: "${PARTNER}/primary" }
    circuit_breaker: { failures: 3, window: 60s, cooldown: 1s }
  backup: { http: { url: "${PARTNER}/backup" } }
  solo: { http: { url: "${PARTNER}/solo" } }
  paced:
    http: { url: "${PARTNER}/paced" }
    rate: 5/s
  narrow:
    http: { url: "${PARTNER}/narrow" }
    concurrency: 2
  authed:
    http:
      url: "${PARTNER}/api"
      headers: { Authorization: "Bearer stale" }
    refresh_auth:
      url: "${PARTNER}/token"
      body: { client_id: steadfast, client_secret: "${CLIENT_SECRET}" }
      token: $.data.access_token
  locked:
    http: { url: "${PARTNER}/locked" }
    refresh_auth:
      url: "${PARTNER}/token"
      token: $.data.access_token
  downauth:
    http: { url: "${PARTNER}/locked" }
    refresh_auth: { url: "${PARTNER}/token-down", token: access_token }
  emptyauth:
    http: { url: "${PARTNER}/locked" }
    refresh_auth: { url: "${PARTNER}/token-empty", token: $.data.access_token }
flows:
  guarded:
    steps:
      - { name: deliver, channel: primary, retry: once, fallback: [backup] }
  alone:
    steps:
      - name: deliver
        channel: solo
        retry: fast
        circuit_breaker: { failures: 2, cooldown: 1s }
  paced:
    steps:
      - { name: deliver, channel: paced, retry: once }
  narrow:
    steps:
      - { name: deliver, channel: narrow, retry: once }
  authed:
    steps:
      - { name: deliver, channel: authed, retry: fast, classify: auth }
  locked:
    steps:
      - { name: deliver, channel: locked, retry: fast, classify: auth }
  downauth:
    steps:
      - { name: deliver, channel: downauth, retry: fast, classify: auth }
  emptyauth:
    steps:
      - { name: deliver, channel: emptyauth, retry: fast, classify: auth }
"#;

const FRESH_TOKEN: &str = "fresh-token-7f3a";
const CLIENT_SECRET: &str = "client-secret-91c2";

/// One request the partner received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: String,
    at: Instant,
}

/// A partner on loopback that records headers and how many requests are
/// in flight at once, and answers as the test says.
#[derive(Clone)]
struct Partner {
    url: String,
    state: PartnerState,
}

#[derive(Clone)]
struct PartnerState {
    seen: Arc<Mutex<Vec<Seen>>>,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    max_in_flight: Arc<Mutex<HashMap<String, usize>>>,
    /// `/primary` and `/solo` answer 503 until this is set.
    healthy: Arc<AtomicBool>,
    token_requests: Arc<AtomicUsize>,
}

impl Partner {
    async fn start() -> Partner {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = PartnerState {
            seen: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            healthy: Arc::default(),
            token_requests: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Partner { url, state }
    }

    fn to(&self, path: &str) -> Vec<Seen> {
        let seen = self.state.seen.lock().unwrap();
        seen.iter().filter(|s| s.path == path).cloned().collect()
    }

    fn max_in_flight(&self, path: &str) -> usize {
        let max = self.state.max_in_flight.lock().unwrap();
        max.get(path).copied().unwrap_or(0)
    }

    fn set_healthy(&self) {
        self.state.healthy.store(true, Ordering::SeqCst);
    }
}

async fn answer(
    State(state): State<PartnerState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        authorization: authorization.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    });
    {
        let mut in_flight = state.in_flight.lock().unwrap();
        let now = in_flight.entry(path.clone()).or_default();
        *now += 1;
        let mut max = state.max_in_flight.lock().unwrap();
        let top = max.entry(path.clone()).or_default();
        *top = (*top).max(*now);
    }
    let healthy = state.healthy.load(Ordering::SeqCst);
    let response = match path.as_str() {
        "/primary" | "/solo" if !healthy => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "/narrow" => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            StatusCode::OK.into_response()
        }
        "/token" => {
            state.token_requests.fetch_add(1, Ordering::SeqCst);
            axum::Json(json!({ "data": { "access_token": FRESH_TOKEN } })).into_response()
        }
        "/api" if authorization.as_deref() != Some(&format!("Bearer {FRESH_TOKEN}")) => {
            StatusCode::UNAUTHORIZED.into_response()
        }
        "/locked" => StatusCode::UNAUTHORIZED.into_response(),
        "/token-down" => StatusCode::BAD_GATEWAY.into_response(),
        "/token-empty" => axum::Json(json!({ "data": {} })).into_response(),
        _ => StatusCode::OK.into_response(),
    };
    *state.in_flight.lock().unwrap().entry(path).or_default() -= 1;
    response
}

struct Setup {
    partner: Partner,
    node: TestNode,
    _policies: tempfile::TempDir,
}

async fn setup() -> Setup {
    let partner = Partner::start().await;
    let policies = policy_dir(&[("test.yaml", POLICY)]);
    let node = TestNode::start(
        policies.path(),
        &[
            ("PARTNER", partner.url.as_str()),
            ("CLIENT_SECRET", CLIENT_SECRET),
        ],
    )
    .await;
    Setup {
        partner,
        node,
        _policies: policies,
    }
}

impl Setup {
    async fn get(&self, path: &str) -> Value {
        get_json(&self.node.client, self.node.url(path)).await
    }

    async fn text(&self, path: &str) -> String {
        self.node
            .client
            .get(self.node.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn breaker(&self, channel: &str) -> Value {
        self.get(&format!("/v1/channels/{channel}")).await["breaker"].clone()
    }

    /// Polls until `check` holds for the job, or fails after 10s.
    async fn wait_job(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let what = format!("job {id} never {what}");
        wait_for(Duration::from_secs(10), what, || self.node.job(id), check).await
    }

    /// Polls until `channel`'s breaker is in `state`, or fails after 10s.
    async fn wait_breaker(&self, channel: &str, state: &str) -> Value {
        let what = format!("breaker of {channel} never {state}");
        let fetch = || self.breaker(channel);
        wait_for(Duration::from_secs(10), what, fetch, |b| {
            b["state"] == state
        })
        .await
    }
}

fn row(step: &str, channel: &str, answer: &str, outcome: &str, decision: &str) -> Summary {
    (
        step.to_string(),
        channel.to_string(),
        answer.to_string(),
        outcome.to_string(),
        decision.to_string(),
    )
}

type Summary = (String, String, String, String, String);

#[tokio::test]
async fn an_open_breaker_routes_to_the_fallback_without_touching_the_primary_until_a_probe_closes_it(
) {
    let s = setup().await;
    // Three jobs fail on the primary (no retries) and fall back: three
    // failures in a row open the breaker.
    for n in 0..3 {
        let id = s.node.submit_ok("guarded", json!({ "n": n }), None).await;
        let job = s.node.wait_final(&id).await;
        assert_eq!(job["state"], "succeeded");
        assert_eq!(
            attempt_summary(&job),
            vec![
                row("deliver", "primary", "503", "retry", "fallback"),
                row("deliver", "backup", "200", "success", "succeeded"),
            ]
        );
    }
    let breaker = s.breaker("primary").await;
    assert_eq!(breaker["state"], "open", "{breaker:#}");
    assert_eq!(breaker["consecutive_failures"], 3);
    assert_eq!(breaker["reason"], "3 failures in a row within 60s");
    assert_eq!(breaker["config"]["cooldown"], "1s");
    assert_eq!(breaker["recent"].as_array().unwrap().len(), 3);
    assert_eq!(breaker["recent"][0]["answer"], "503");
    assert!(breaker["probe_at"].is_string(), "{breaker:#}");
    assert_eq!(s.partner.to("/primary").len(), 3);

    // While open: straight to the fallback, the primary untouched, and the
    // history says why.
    for n in 3..5 {
        let id = s.node.submit_ok("guarded", json!({ "n": n }), None).await;
        let job = s.node.wait_final(&id).await;
        assert_eq!(job["state"], "succeeded");
        assert_eq!(
            attempt_summary(&job),
            vec![
                row("deliver", "primary", "breaker_open", "skipped", "fallback"),
                row("deliver", "backup", "200", "success", "succeeded"),
            ]
        );
        assert_eq!(job["attempts"][0]["attempt"], 0);
        assert_eq!(job["attempts_total"], 1, "a skip is not an attempt");
    }
    assert_eq!(s.partner.to("/primary").len(), 3, "primary not touched");
    let metrics = s.text("/metrics").await;
    assert!(
        metrics.contains(r#"steadfast_breaker_state{channel="primary"} 2"#),
        "{metrics}"
    );

    // The partner recovers; after the cooldown the next job is the probe,
    // and its success closes the breaker.
    s.partner.set_healthy();
    s.wait_breaker("primary", "half_open").await;
    let id = s.node.submit_ok("guarded", json!({ "n": 5 }), None).await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(
        attempt_summary(&job),
        vec![row("deliver", "primary", "200", "success", "succeeded")]
    );
    let breaker = s.breaker("primary").await;
    assert_eq!(breaker["state"], "closed", "{breaker:#}");
    assert_eq!(breaker["opened_total"], 1);
    assert_eq!(s.partner.to("/primary").len(), 4);

    let metrics = s.text("/metrics").await;
    for line in [
        r#"steadfast_breaker_state{channel="primary"} 0"#,
        r#"steadfast_breaker_transitions_total{channel="primary",to="open"} 1"#,
        r#"steadfast_breaker_transitions_total{channel="primary",to="half_open"} 1"#,
        r#"steadfast_breaker_transitions_total{channel="primary",to="closed"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    s.node.shutdown().await;
}

#[tokio::test]
async fn without_a_fallback_an_open_breaker_suspends_the_job_without_burning_attempts() {
    let s = setup().await;
    // The step's own `circuit_breaker` configures its channel's breaker.
    let id = s.node.submit_ok("alone", json!({ "lead": 1 }), None).await;
    let job = s
        .wait_job(&id, "suspended by the breaker", |job| {
            job["state"] == "suspended" && job["reason"] == "breaker_open"
        })
        .await;
    assert_eq!(
        attempt_summary(&job),
        vec![
            row("deliver", "solo", "503", "retry", "retry"),
            row("deliver", "solo", "503", "retry", "retry"),
        ]
    );
    let breaker = s.breaker("solo").await;
    assert_eq!(breaker["config"]["failures"], 2, "{breaker:#}");
    assert!(job["next_at"].is_string());

    s.partner.set_healthy();
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(
        attempt_summary(&job),
        vec![
            row("deliver", "solo", "503", "retry", "retry"),
            row("deliver", "solo", "503", "retry", "retry"),
            row("deliver", "solo", "200", "success", "succeeded"),
        ],
        "the third attempt is the probe; no attempt was spent waiting"
    );
    assert_eq!(job["attempts"][2]["attempt"], 3);
    assert_eq!(s.partner.to("/solo").len(), 3);
    assert_eq!(s.breaker("solo").await["state"], "closed");
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_rate_limit_paces_attempts_and_never_fails_them() {
    let s = setup().await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for n in 0..15 {
            ids.push(s.node.submit_ok("paced", json!({ "n": n }), None).await);
        }
        ids
    };
    for id in &ids {
        let job = s.node.wait_final(id).await;
        assert_eq!(job["state"], "succeeded");
        assert_eq!(
            attempt_summary(&job),
            vec![row("deliver", "paced", "200", "success", "succeeded")],
            "waiting for a slot is neither an attempt nor a failure"
        );
    }
    let times: Vec<Instant> = s.partner.to("/paced").iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 15);
    // 5/s: a burst of 5, then one every 200ms; 10 after the burst take at
    // least 2s (a little less for timer and network slack).
    let span = times[14].duration_since(times[0]);
    assert!(
        span >= Duration::from_millis(1_800),
        "15 requests in {span:?}"
    );
    for (i, start) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .filter(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        assert!(within <= 10, "{within} requests within 1s");
    }
    let channel = s.get("/v1/channels/paced").await;
    assert_eq!(channel["rate"]["limit"], "5/s");
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_concurrency_limit_bounds_attempts_in_flight() {
    let s = setup().await;
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(s.node.submit_ok("narrow", json!({ "n": n }), None).await);
    }
    for id in &ids {
        let job = s.node.wait_final(id).await;
        assert_eq!(job["state"], "succeeded");
        assert_eq!(job["attempts_total"], 1);
    }
    assert_eq!(s.partner.to("/narrow").len(), 8);
    assert!(s.partner.max_in_flight("/narrow") <= 2);
    let channel = s.get("/v1/channels/narrow").await;
    assert_eq!(
        channel["concurrency"],
        json!({ "limit": 2, "nodes": 1, "node_limit": 2, "in_use": 0 })
    );
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_the_retry_succeeds() {
    let s = setup().await;
    let id = s.node.submit_ok("authed", json!({ "lead": 1 }), None).await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(
        attempt_summary(&job),
        vec![row("deliver", "authed", "200", "success", "succeeded")],
        "the refresh and the second request are part of one attempt"
    );
    let note = job["attempts"][0]["error_message"].as_str().unwrap();
    assert!(
        note.contains("token refreshed after rule `expired`"),
        "{note}"
    );

    let api = s.partner.to("/api");
    let sent: Vec<Option<&str>> = api.iter().map(|r| r.authorization.as_deref()).collect();
    let fresh = format!("Bearer {FRESH_TOKEN}");
    assert_eq!(sent, vec![Some("Bearer stale"), Some(fresh.as_str())]);
    let token_requests = s.partner.to("/token");
    assert_eq!(token_requests.len(), 1);
    let body: Value = serde_json::from_str(&token_requests[0].body).unwrap();
    assert_eq!(body["client_secret"], CLIENT_SECRET);

    // The token is kept for the next jobs: no second refresh.
    let id = s.node.submit_ok("authed", json!({ "lead": 2 }), None).await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["attempts"][0]["error_message"], Value::Null);
    assert_eq!(s.partner.to("/api").len(), 3);
    assert_eq!(s.partner.state.token_requests.load(Ordering::SeqCst), 1);

    // Neither the step log nor the API ever shows the token.
    let channel = s.get("/v1/channels/authed").await;
    assert_eq!(channel["refresh_auth"]["has_token"], true);
    assert_eq!(channel["refresh_auth"]["refreshes"], 1);
    for text in [
        s.text(&format!("/v1/jobs/{id}")).await,
        s.text("/v1/channels").await,
    ] {
        assert!(!text.contains(FRESH_TOKEN), "{text}");
        assert!(!text.contains(CLIENT_SECRET), "{text}");
    }
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_second_401_after_a_refresh_is_a_failure() {
    let s = setup().await;
    let id = s.node.submit_ok("locked", json!({ "lead": 1 }), None).await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "dead");
    assert_eq!(job["reason"], "permanent");
    assert_eq!(
        attempt_summary(&job),
        vec![row("deliver", "locked", "401", "fail", "dead")]
    );
    let note = job["attempts"][0]["error_message"].as_str().unwrap();
    assert!(note.contains("again"), "{note}");
    assert_eq!(
        s.partner.to("/locked").len(),
        2,
        "sent once more, only once"
    );
    assert_eq!(s.partner.to("/token").len(), 1);
    s.node.shutdown().await;
}

#[tokio::test]
async fn a_refresh_that_gets_no_token_retries_when_transient_and_fails_when_refused() {
    let s = setup().await;
    // The token endpoint answers 502: each attempt is a retry, until the
    // retries run out.
    let id = s
        .node
        .submit_ok("downauth", json!({ "lead": 1 }), None)
        .await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "dead");
    assert_eq!(job["reason"], "exhausted");
    let outcomes: Vec<String> = attempt_summary(&job).into_iter().map(|a| a.3).collect();
    assert_eq!(outcomes, ["retry", "retry", "retry", "retry"]);
    let note = job["attempts"][0]["error_message"].as_str().unwrap();
    assert!(
        note.contains("the refresh failed: the token request was answered 502"),
        "{note}"
    );
    assert_eq!(
        s.partner.to("/locked").len(),
        4,
        "never sent again unrefreshed"
    );
    let channel = s.get("/v1/channels/downauth").await;
    assert_eq!(channel["refresh_auth"]["has_token"], false);
    assert_eq!(channel["refresh_auth"]["failures"], 4);

    // The answer holds no token where the policy says: refused, for good.
    let id = s
        .node
        .submit_ok("emptyauth", json!({ "lead": 2 }), None)
        .await;
    let job = s.node.wait_final(&id).await;
    assert_eq!(job["state"], "dead");
    assert_eq!(job["reason"], "permanent");
    let note = job["attempts"][0]["error_message"].as_str().unwrap();
    assert!(
        note.contains("the token answer has no token at `$.data.access_token`"),
        "{note}"
    );
    s.node.shutdown().await;
}

#[tokio::test]
async fn channels_are_listed_with_their_limits() {
    let s = setup().await;
    let all = s.get("/v1/channels").await;
    let names: Vec<&str> = all["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "authed",
            "backup",
            "downauth",
            "emptyauth",
            "locked",
            "narrow",
            "paced",
            "primary",
            "solo"
        ]
    );
    let primary = s.get("/v1/channels/primary").await;
    assert_eq!(primary["kind"], "http");
    assert_eq!(primary["breaker"]["state"], "closed");
    assert_eq!(
        primary["breaker"]["config"],
        json!({ "failures": 3, "failure_ratio": null, "min_requests": null,
                "window": "60s", "cooldown": "1s", "half_open_probes": 1 })
    );
    assert_eq!(primary["rate"], Value::Null);
    let backup = s.get("/v1/channels/backup").await;
    assert_eq!(backup["breaker"], Value::Null);
    let missing = s
        .node
        .client
        .get(s.node.url("/v1/channels/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    s.node.shutdown().await;
}
