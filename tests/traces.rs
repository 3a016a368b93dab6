//! `[telemetry] otlp_endpoint`: the engine binary exports a span per
//! attempt over OTLP/HTTP to a loopback receiver, continues the trace of
//! the submission's `traceparent`, and sends each attempt's own
//! `traceparent` to the partner.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use common::*;
use serde_json::{json, Value};

const POLICY: &str = r#"
templates:
  quick: { retries: 2, initial: 20ms, jitter: none }
channels:
  partner: { http: { url: "${PARTNER}/hook" } }
flows:
  traced:
    steps: [ { name: deliver, channel: partner, retry: quick } ]
"#;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver: every JSON body posted to `/v1/traces`.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                    kept.lock().unwrap().push(value);
                }
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, bodies)
}

/// Every span received, flattened.
fn spans(bodies: &[Value]) -> Vec<Value> {
    let mut spans = Vec::new();
    for body in bodies {
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                spans.extend(scope["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    spans
}

fn attribute(span: &Value, key: &str) -> Value {
    span["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["key"] == key)
        .map(|a| {
            let value = &a["value"];
            value
                .get("stringValue")
                .or_else(|| value.get("intValue"))
                .cloned()
                .unwrap_or(Value::Null)
        })
        .unwrap_or(Value::Null)
}

/// Submits a job to the `traced` flow, with `traceparent` when given,
/// and waits until it has succeeded; returns its id.
async fn deliver(engine: &EngineProcess, n: u32, traceparent: Option<&str>) -> String {
    let client = http_client();
    let mut request = client
        .post(engine.url("/v1/flows/traced/jobs"))
        .json(&json!({ "payload": { "n": n } }));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let submitted: Value = request.send().await.unwrap().json().await.unwrap();
    let id = submitted["id"].as_str().expect("an id").to_string();
    wait_for(
        Duration::from_secs(10),
        format!("job {id} never succeeded"),
        async || -> Value { get_json(&client, engine.url(&format!("/v1/jobs/{id}"))).await },
        |job| job["state"] == "succeeded",
    )
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attempt_is_a_span_of_the_submissions_trace_and_the_partner_gets_it() {
    let (otlp, bodies) = receiver().await;
    let partner = Partner::start(|r| {
        if r.attempt == 1 {
            status(503)
        } else {
            status(200)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/traced.yaml"), POLICY).unwrap();
    std::fs::write(
        dir.path().join("steadfast.toml"),
        format!("[telemetry]\notlp_endpoint = \"{otlp}\"\n"),
    )
    .unwrap();
    let engine = EngineProcess::start(
        dir.path(),
        &["--policies", "policies", "--db", "sqlite://steadfast.db"],
        &[("PARTNER", partner.url.as_str())],
    )
    .await;
    let first = deliver(&engine, 1, Some(&format!("00-{TRACE}-{PARENT}-01"))).await;
    let second = deliver(&engine, 2, None).await;
    // A clean stop sends the spans still waiting for their batch (the
    // receiver runs on this runtime: wait for the process elsewhere).
    let code = tokio::task::spawn_blocking(move || engine.stop())
        .await
        .unwrap();
    assert_eq!(code, Some(0));

    let spans = spans(&bodies.lock().unwrap());
    let of_job = |id: &str| -> Vec<Value> {
        let mut spans: Vec<Value> = spans
            .iter()
            .filter(|s| attribute(s, "steadfast.job_id") == id)
            .cloned()
            .collect();
        spans.sort_by_key(|s| {
            attribute(s, "steadfast.attempt")
                .as_str()
                .unwrap_or("")
                .to_string()
        });
        spans
    };
    let traced = of_job(&first);
    assert_eq!(traced.len(), 2, "a span per attempt: {spans:#?}");
    for (span, (outcome, status)) in traced.iter().zip([("retry", "503"), ("success", "200")]) {
        assert_eq!(span["traceId"], TRACE, "{span:#}");
        assert_eq!(span["parentSpanId"], PARENT, "{span:#}");
        assert_eq!(attribute(span, "steadfast.flow"), "traced");
        assert_eq!(attribute(span, "steadfast.step"), "deliver");
        assert_eq!(attribute(span, "steadfast.channel"), "partner");
        assert_eq!(attribute(span, "steadfast.outcome"), outcome);
        assert_eq!(attribute(span, "http.response.status_code"), status);
        assert!(attribute(span, "steadfast.rule").is_string(), "{span:#}");
        assert_eq!(
            attribute(span, "steadfast.policy_version")
                .as_str()
                .map(str::len),
            Some(12)
        );
    }
    assert_eq!(attribute(&traced[0], "steadfast.attempt"), "1");
    assert_eq!(attribute(&traced[1], "steadfast.attempt"), "2");

    // The partner got each attempt's own span as the parent.
    let sent: Vec<String> = partner
        .requests_to("/hook")
        .iter()
        .filter(|r| r.body["n"] == 1)
        .map(|r| {
            r.headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let expected: Vec<String> = traced
        .iter()
        .map(|s| format!("00-{TRACE}-{}-01", s["spanId"].as_str().unwrap()))
        .collect();
    assert_eq!(sent, expected);

    // Without a traceparent, the job's attempts are a trace named by its id.
    let untraced = of_job(&second);
    assert_eq!(untraced.len(), 2);
    let trace = second.replace('-', "");
    assert!(
        untraced.iter().all(|s| s["traceId"] == trace.as_str()),
        "{untraced:#?}"
    );
}

/// A bad endpoint is refused at start, naming the key.
#[tokio::test]
async fn an_endpoint_that_is_no_url_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/traced.yaml"), POLICY).unwrap();
    std::fs::write(
        dir.path().join("steadfast.toml"),
        "[telemetry]\notlp_endpoint = \"collector:4318\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .current_dir(dir.path())
        .args(["run", "--policies", "policies", "--listen", "127.0.0.1:0"])
        .env("PARTNER", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[telemetry] otlp_endpoint"), "{stderr}");
}
