//! The guarantees at the edges (PRODUCT.md, "Guarantees at the edges"):
//! what a new user or an attacker meets first. Payload bytes through every
//! channel, spool names, policy limits reloaded into a running engine,
//! relative policy paths, quotas off by default.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A payload no `serde_json::Value` round trip survives: a big integer,
/// a float that rounds, keys out of order, escapes and odd spacing.
const EXACT: &str = r#"{"z": 123456789012345678901234567890, "a":0.30000000000000001,"s":"\u00e9\ud83d\ude00\/","n":[1.0E+2 ,-0.0]}"#;

const POLICY: &str = r#"
templates:
  fast: { retries: 3, initial: 20ms, jitter: none }
channels:
  partner: { http: { url: "${PARTNER}/in" } }
  spool: { file: { dir: "${SPOOL}" } }
flows:
  http:
    steps: [{ name: deliver, channel: partner, retry: fast }]
  spooled:
    steps: [{ name: deliver, channel: spool, retry: fast }]
"#;

struct Setup {
    partner: Partner,
    node: TestNode,
    spool: tempfile::TempDir,
    _policies: tempfile::TempDir,
}

async fn setup(
    script: impl Fn(&Received) -> axum::response::Response + Send + Sync + 'static,
) -> Setup {
    let partner = Partner::start(script).await;
    let policies = policy_dir(&[("edges.yaml", POLICY)]);
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().display().to_string();
    let node = TestNode::start(
        policies.path(),
        &[
            ("PARTNER", partner.url.as_str()),
            ("SPOOL", spool_dir.as_str()),
        ],
    )
    .await;
    Setup {
        partner,
        node,
        spool,
        _policies: policies,
    }
}

impl Setup {
    /// Posts a raw body to `path`; returns (status, headers, body).
    async fn post_raw(&self, path: &str, body: String) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self
            .node
            .client
            .post(self.node.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("not a JSON answer ({status}): {text:?}"));
        (status, headers, body)
    }

    async fn submit_raw(&self, flow: &str, payload: &str, key: &str) -> String {
        let body = format!(r#"{{"payload": {payload}, "idempotency_key": "{key}"}}"#);
        let (status, _, answer) = self.post_raw(&format!("/v1/flows/{flow}/jobs"), body).await;
        assert_eq!(status, 201, "{answer}");
        answer["id"].as_str().unwrap().to_string()
    }

    fn spool_files(&self) -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(self.spool.path())
            .map(|dir| dir.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

#[tokio::test]
async fn the_http_body_is_the_submitted_bytes() {
    let s = setup(|_| status(200)).await;
    let id = s.submit_raw("http", EXACT, "exact-1").await;
    assert_eq!(s.node.wait_final(&id).await["state"], "succeeded");
    assert_eq!(s.partner.requests()[0].raw_body, EXACT);
    // The API shows the same bytes.
    let text = s
        .node
        .client
        .get(s.node.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(EXACT), "{text}");
    s.node.shutdown().await;
}

#[tokio::test]
async fn the_spool_embeds_the_payload_bytes_unchanged() {
    let s = setup(|_| status(200)).await;
    let id = s.submit_raw("spooled", EXACT, "exact-spool").await;
    assert_eq!(s.node.wait_final(&id).await["state"], "succeeded");
    let files = s.spool_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let written = std::fs::read_to_string(&files[0]).unwrap();
    assert!(written.contains(EXACT), "{written}");
    let envelope: Value = serde_json::from_str(&written).unwrap();
    assert_eq!(envelope["id"], id.as_str());
    assert_eq!(envelope["idempotency_key"], "exact-spool");
    s.node.shutdown().await;
}

#[tokio::test]
async fn keys_that_look_alike_or_are_long_each_get_their_own_spool_file() {
    let s = setup(|_| status(200)).await;
    let long = "k".repeat(256);
    let keys = ["a/b", "a_b", "a b", "../escape", long.as_str()];
    let mut ids = Vec::new();
    for (n, key) in keys.iter().enumerate() {
        let body = json!({ "payload": { "n": n }, "idempotency_key": key });
        let (status, answer) = s.node.submit("spooled", body).await;
        assert_eq!(status, 201, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let job = s.node.wait_final(id).await;
        assert_eq!(job["state"], "succeeded", "{job:#}");
    }
    let files = s.spool_files();
    assert_eq!(files.len(), keys.len(), "{files:?}");
    let mut found: Vec<String> = files
        .iter()
        .map(|f| {
            let envelope: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
            assert!(f.file_name().unwrap().len() <= 255);
            envelope["idempotency_key"].as_str().unwrap().to_string()
        })
        .collect();
    found.sort();
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(found, expected);
    s.node.shutdown().await;
}

#[tokio::test]
async fn what_a_strict_parser_refuses_is_refused_at_submission() {
    let s = setup(|_| status(200)).await;
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    for payload in [
        r#""\ud800""#.to_string(),
        r#"{"k": "\udc00"}"#.to_string(),
        deep(200),
    ] {
        let body = format!(r#"{{"payload": {payload}}}"#);
        let (status, _, answer) = s.post_raw("/v1/flows/spooled/jobs", body).await;
        assert_eq!(status, 422, "{payload}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("payload"),
            "{answer}"
        );
    }
    // In a batch, the item alone is refused.
    let batch = format!(r#"[{{"payload": "\ud800"}}, {{"payload": {}}}]"#, deep(128));
    let (status, _, answer) = s.post_raw("/v1/flows/spooled/jobs:batch", batch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["status"], 422, "{answer}");
    assert_eq!(answer["results"][1]["status"], 201, "{answer}");
    // 128 levels are accepted, and spooled whole. (Polled on the spool: a
    // job view holding it nests one level deeper than serde_json reads.)
    let files = wait_for(
        Duration::from_secs(20),
        "the deep payload was never spooled",
        async || s.spool_files().len(),
        |n| *n == 1,
    )
    .await;
    assert_eq!(files, 1);
    let written = std::fs::read_to_string(&s.spool_files()[0]).unwrap();
    assert!(written.contains(&deep(128)));
    s.node.shutdown().await;
}

#[tokio::test]
async fn an_edited_payload_is_stored_and_delivered_as_written() {
    let s = setup(|r| {
        if r.attempt == 1 {
            status(400)
        } else {
            status(200)
        }
    })
    .await;
    let id = s.submit_raw("http", r#"{"first": 1}"#, "edit-1").await;
    assert_eq!(s.node.wait_final(&id).await["state"], "dead");
    let response = s
        .node
        .client
        .patch(s.node.url(&format!("/v1/jobs/{id}")))
        .header("content-type", "application/json")
        .body(format!(r#"{{"payload": {EXACT}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains(EXACT));
    // A lone surrogate is refused here too.
    let refused = s
        .node
        .client
        .patch(s.node.url(&format!("/v1/jobs/{id}")))
        .header("content-type", "application/json")
        .body(r#"{"payload": "\ud800"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let retried = s
        .node
        .client
        .post(s.node.url(&format!("/v1/jobs/{id}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
    assert_eq!(s.node.wait_final(&id).await["state"], "succeeded");
    let requests = s.partner.requests();
    assert_eq!(requests.last().unwrap().raw_body, EXACT);
    s.node.shutdown().await;
}

/// Ordinary work must not be held by quotas nobody set: more retries in a
/// minute than the old default allowed a flow in an hour.
#[tokio::test]
async fn quotas_are_off_by_default() {
    let s = setup(|r| {
        if r.attempt == 1 {
            status(503)
        } else {
            status(200)
        }
    })
    .await;
    let jobs = 1_200;
    let batch: Vec<Value> = (0..jobs)
        .map(|n| json!({ "payload": { "n": n }, "idempotency_key": format!("q-{n}") }))
        .collect();
    let answer: Value = s
        .node
        .client
        .post(s.node.url("/v1/flows/http/jobs:batch"))
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["created"], jobs, "{answer}");
    let base = s.node.node.url();
    let client = s.node.client.clone();
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(200),
        "not every job succeeded; succeeded so far",
        async || {
            let done = count_in_state(&client, &base, "succeeded").await;
            if done == jobs {
                Ok(())
            } else {
                Err(done)
            }
        },
    )
    .await;
    assert_eq!(count_in_state(&client, &base, "suspended").await, 0);
    s.node.shutdown().await;
}

const RELOAD_POLICY: &str = r#"
channels:
  partner: { http: { url: "${PARTNER}/in" } }
flows:
  leads:
    steps: [{ name: deliver, channel: partner, retry: standard }]
"#;

async fn policies_shown(engine: &EngineProcess) -> Value {
    http_client()
        .get(engine.url("/v1/policies"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Submits to `leads` and waits for the delivery: the engine still works.
async fn still_delivers(engine: &EngineProcess, key: &str) {
    let client = http_client();
    let answer: Value = client
        .post(engine.url("/v1/flows/leads/jobs"))
        .json(&json!({ "payload": { "key": key }, "idempotency_key": key }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = answer["id"].as_str().unwrap_or_else(|| panic!("{answer}"));
    let url = engine.url(&format!("/v1/jobs/{id}"));
    wait_for(
        Duration::from_secs(20),
        "the job was not delivered",
        async || {
            let job: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
            job
        },
        |job| job["state"] == "succeeded",
    )
    .await;
}

/// The default `./policies` and a relative `--policies policies`, in the
/// engine's working directory, reload on change with no rescan at all.
#[tokio::test]
async fn relative_policy_paths_reload_on_change() {
    let partner = Partner::start(|_| status(200)).await;
    for flag in [None, Some("policies"), Some("./policies")] {
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir(work.path().join("policies")).unwrap();
        std::fs::write(work.path().join("policies/leads.yaml"), RELOAD_POLICY).unwrap();
        let mut args = vec!["--reload-rescan", "0s", "--reload-debounce", "50ms"];
        if let Some(path) = flag {
            args.extend(["--policies", path]);
        }
        let engine = EngineProcess::start(work.path(), &args, &[("PARTNER", &partner.url)]).await;
        let first = policies_shown(&engine).await;
        assert_eq!(first["flows"], json!(["leads"]), "{flag:?}: {first:#}");
        let orders = RELOAD_POLICY
            .replace("leads:", "orders:")
            .replace("partner:", "other:");
        let orders = orders.replace("channel: partner", "channel: other");
        std::fs::write(work.path().join("policies/orders.yaml"), orders).unwrap();
        let shown = wait_for(
            Duration::from_secs(10),
            format!("{flag:?}: the edit was never reloaded"),
            async || policies_shown(&engine).await,
            |shown| shown["flows"] == json!(["leads", "orders"]),
        )
        .await;
        assert_eq!(shown["reloads"], 1, "{shown:#}");
        assert_eq!(engine.stop(), Some(0));
    }
}

/// A policy line `validate` refuses, with `file:line:col`.
fn validate(dir: &std::path::Path) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .current_dir(dir)
        .args(["validate", "--no-env", "policies"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// 2,000 templates, each extending the next.
fn extends_chain(length: usize) -> String {
    let mut text = String::from("templates:\n");
    for n in 0..length {
        if n + 1 < length {
            text.push_str(&format!("  t{n}: {{ extends: t{} }}\n", n + 1));
        } else {
            text.push_str(&format!("  t{n}: {{ extends: standard }}\n"));
        }
    }
    text
}

/// Edits `validate` refuses, each reloaded into a running engine that goes
/// on delivering under the last good policy.
#[tokio::test]
async fn limits_validate_refuses_never_reach_a_running_engine() {
    let partner = Partner::start(|_| status(200)).await;
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("policies")).unwrap();
    std::fs::write(work.path().join("policies/leads.yaml"), RELOAD_POLICY).unwrap();
    let mut engine = EngineProcess::start(
        work.path(),
        &["--reload-debounce", "50ms"],
        &[("PARTNER", &partner.url)],
    )
    .await;
    let good = policies_shown(&engine).await["version"].clone();
    let edits: [(&str, String, &str); 5] = [
        ("chain.yaml", extends_chain(2_000), "deeper than 16"),
        (
            "huge.yaml",
            "templates:\n  huge: { initial: 4000000d }\n".into(),
            "365",
        ),
        (
            "huge.yaml",
            "templates:\n  huge: { backoff: fixed, initial: 18446744073709551615ms }\n".into(),
            "365",
        ),
        (
            "many.yaml",
            "templates:\n  many: { retries: 4294967295, total_timeout: 9999d }\n".into(),
            "more than 10000",
        ),
        (
            "long.yaml",
            format!(
                "templates:\n  long:\n    schedule: [{}]\n",
                vec!["1s"; 1001].join(", ")
            ),
            "more than 1000",
        ),
    ];
    for (n, (file, text, expected)) in edits.iter().enumerate() {
        let path = work.path().join("policies").join(file);
        std::fs::write(&path, text).unwrap();
        let (code, output) = validate(work.path());
        assert_eq!(code, 1, "{file}: {output}");
        assert!(output.contains(expected), "{file}: {output}");
        assert!(output.contains(&format!("policies/{file}:")), "{output}");
        let shown = wait_for(
            Duration::from_secs(10),
            format!("{file}: the bad edit was never looked at"),
            async || policies_shown(&engine).await,
            |shown| shown["failed_reloads"].as_u64() >= Some(n as u64 + 1),
        )
        .await;
        assert_eq!(shown["version"], good, "{shown:#}");
        assert!(engine.alive(), "{file} stopped the engine");
        still_delivers(&engine, &format!("after-{n}")).await;
        std::fs::remove_file(&path).unwrap();
    }
    assert_eq!(engine.stop(), Some(0));
}

/// A link to a file outside the policy directory is refused by its name;
/// what the file holds is never read, logged or shown by the API.
#[cfg(unix)]
#[tokio::test]
async fn a_symlink_out_of_the_policy_directory_is_refused_unread() {
    let partner = Partner::start(|_| status(200)).await;
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("policies")).unwrap();
    std::fs::write(work.path().join("policies/leads.yaml"), RELOAD_POLICY).unwrap();
    let secret = work.path().join("shadow");
    std::fs::write(&secret, "root:$6$SECRETHASH:19000:0:99999:7:::\n").unwrap();
    let engine = EngineProcess::start(
        work.path(),
        &["--reload-debounce", "50ms"],
        &[("PARTNER", &partner.url)],
    )
    .await;
    std::os::unix::fs::symlink(&secret, work.path().join("policies/shadow.yaml")).unwrap();
    let (code, output) = validate(work.path());
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("policies/shadow.yaml"), "{output}");
    assert!(output.contains("outside the policy directory"), "{output}");
    assert!(!output.contains("SECRETHASH"), "{output}");
    let shown = wait_for(
        Duration::from_secs(10),
        "the link was never looked at",
        async || policies_shown(&engine).await,
        |shown| shown["failed_reloads"].as_u64() >= Some(1),
    )
    .await;
    let text = shown.to_string();
    assert!(text.contains("shadow.yaml"), "{text}");
    assert!(!text.contains("SECRETHASH"), "{text}");
    still_delivers(&engine, "after-link").await;
}

/// One SQLite file belongs to one engine: a second `run` on it refuses to
/// start (exit 2), naming the file and the engine that holds it.
#[tokio::test]
async fn a_second_engine_on_the_same_sqlite_file_refuses_to_start() {
    let partner = Partner::start(|_| status(200)).await;
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("policies")).unwrap();
    std::fs::write(work.path().join("policies/leads.yaml"), RELOAD_POLICY).unwrap();
    let first = EngineProcess::start(work.path(), &[], &[("PARTNER", &partner.url)]).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .current_dir(work.path())
        .args(["run", "--listen", &format!("127.0.0.1:{}", free_port())])
        .env("PARTNER", &partner.url)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("steadfast.db is in use"), "{stderr}");
    assert!(stderr.contains(&first.base), "{stderr}");
    still_delivers(&first, "still-mine").await;
    assert_eq!(first.stop(), Some(0));
    // Once the first has stopped, the file is free again.
    let second = EngineProcess::start(work.path(), &[], &[("PARTNER", &partner.url)]).await;
    still_delivers(&second, "now-yours").await;
    assert_eq!(second.stop(), Some(0));
}
