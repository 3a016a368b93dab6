//! `auth.oauth2` on an `http` channel, end to end: the real engine against
//! a loopback token server (client credentials, `expires_in`) and a
//! partner that accepts only the token in force.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use common::*;
use serde_json::{json, Value};

const CLIENT_SECRET: &str = "client-secret-5be1";

const POLICY: &str = r#"
templates:
  fast: { retries: 2, initial: 50ms, jitter: none }
channels:
  partner:
    http:
      url: "${PARTNER}/api"
      auth:
        oauth2:
          token_url: "${PARTNER}/token"
          client_id: steadfast
          client_secret: "${CLIENT_SECRET}"
          scope: "leads:write"
  no-token:
    http:
      url: "${PARTNER}/api"
      auth: { oauth2: { token_url: "${PARTNER}/token-down", client_id: a, client_secret: b } }
flows:
  leads:
    steps: [ { name: deliver, channel: partner, retry: fast } ]
  stuck:
    steps: [ { name: deliver, channel: no-token, retry: fast } ]
"#;

/// The token server's state: the number of the last token issued, the
/// oldest one the partner still accepts, and the life it gives tokens.
#[derive(Default)]
struct Tokens {
    issued: AtomicU64,
    accepted_from: AtomicU64,
    life_s: AtomicU64,
}

fn script(tokens: Arc<Tokens>) -> impl Fn(&Received) -> axum::response::Response {
    move |r| match r.path.as_str() {
        "/token" => {
            let n = tokens.issued.fetch_add(1, Ordering::SeqCst) + 1;
            let body = json!({
                "access_token": format!("tok-{n}"),
                "token_type": "Bearer",
                "expires_in": tokens.life_s.load(Ordering::SeqCst),
            });
            (axum::http::StatusCode::OK, axum::Json(body)).into_response()
        }
        "/token-down" => status(503),
        _ => {
            let sent = r
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer tok-"))
                .and_then(|n| n.parse::<u64>().ok());
            let ok = sent.is_some_and(|n| n >= tokens.accepted_from.load(Ordering::SeqCst));
            status(if ok { 200 } else { 401 })
        }
    }
}

/// The token server and partner, and a node on [`POLICY`].
async fn start(tokens: &Arc<Tokens>) -> (Partner, TestNode, tempfile::TempDir) {
    let partner = Partner::start(script(tokens.clone())).await;
    let policies = policy_dir(&[("oauth.yaml", POLICY)]);
    let node = TestNode::start(
        policies.path(),
        &[
            ("PARTNER", partner.url.as_str()),
            ("CLIENT_SECRET", CLIENT_SECRET),
        ],
    )
    .await;
    (partner, node, policies)
}

fn authorizations(partner: &Partner) -> Vec<String> {
    partner
        .requests_to("/api")
        .iter()
        .map(|r| {
            r.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_client_credentials_token_is_fetched_first_kept_renewed_on_401_and_on_expiry() {
    let tokens = Arc::new(Tokens::default());
    tokens.life_s.store(3600, Ordering::SeqCst);
    let (partner, node, _policies) = start(&tokens).await;

    // Fetched before the first request: the partner never sees one without.
    let id = node.submit_ok("leads", json!({"n": 1}), None).await;
    let job = node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["attempts_total"], 1);
    assert_eq!(authorizations(&partner), ["Bearer tok-1"]);
    let token_requests = partner.requests_to("/token");
    assert_eq!(token_requests.len(), 1);
    let form = &token_requests[0].raw_body;
    for pair in [
        "grant_type=client_credentials",
        "client_id=steadfast",
        "client_secret=client-secret-5be1",
        "scope=leads%3Awrite",
    ] {
        assert!(form.contains(pair), "{form}");
    }

    // Kept for the next job.
    let id = node.submit_ok("leads", json!({"n": 2}), None).await;
    assert_eq!(node.wait_final(&id).await["state"], "succeeded");
    assert_eq!(partner.requests_to("/token").len(), 1);

    // Revoked by the partner: the 401 fetches a new one, within the attempt.
    tokens.accepted_from.store(2, Ordering::SeqCst);
    let id = node.submit_ok("leads", json!({"n": 3}), None).await;
    let job = node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(
        job["attempts_total"], 1,
        "the refresh is part of the attempt"
    );
    let note = job["attempts"][0]["error_message"]
        .as_str()
        .unwrap_or_default();
    assert!(note.contains("token refreshed after a 401"), "{note}");
    assert_eq!(
        authorizations(&partner)[2..],
        ["Bearer tok-1", "Bearer tok-2"]
    );

    // A token given a short life is fetched again once it lapses, before
    // sending: no 401 on the way.
    tokens.life_s.store(1, Ordering::SeqCst);
    tokens.accepted_from.store(3, Ordering::SeqCst);
    let id = node.submit_ok("leads", json!({"n": 4}), None).await;
    assert_eq!(node.wait_final(&id).await["state"], "succeeded");
    let before = partner.requests_to("/token").len();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let id = node.submit_ok("leads", json!({"n": 5}), None).await;
    let job = node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["attempts"][0]["error_message"], Value::Null);
    assert_eq!(partner.requests_to("/token").len(), before + 1);
    // Job 4 met a 401 (tok-2 revoked) and got tok-3, of a 1 s life; job 5,
    // after it lapsed, went out once, with tok-4.
    assert_eq!(
        authorizations(&partner)[5..],
        ["Bearer tok-3", "Bearer tok-4"]
    );

    // Never shown: neither the secret nor a token.
    for path in ["/v1/channels", &format!("/v1/jobs/{id}")] {
        let text = node
            .client
            .get(node.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains(CLIENT_SECRET), "{text}");
        assert!(!text.contains("tok-"), "{text}");
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_token_server_that_does_not_answer_makes_retries_and_nothing_is_sent() {
    let tokens = Arc::new(Tokens::default());
    let (partner, node, _policies) = start(&tokens).await;
    let id = node.submit_ok("stuck", json!({"n": 1}), None).await;
    let job = node.wait_final(&id).await;
    assert_eq!(job["state"], "dead");
    assert_eq!(job["reason"], "exhausted");
    let outcomes: Vec<String> = attempt_summary(&job).into_iter().map(|a| a.3).collect();
    assert_eq!(outcomes, ["retry", "retry", "retry"]);
    let note = job["attempts"][0]["error_message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        note.contains(
            "the token request before sending failed: the token request was answered 503"
        ),
        "{note}"
    );
    assert!(
        partner.requests_to("/api").is_empty(),
        "never sent without a token"
    );
    node.shutdown().await;
}
