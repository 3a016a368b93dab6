//! The guarantees at the edges (PRODUCT.md, "Guarantees at the edges"):
//! what a new user or an attacker meets first. Payload bytes through every
//! channel, spool names, policy limits reloaded into a running engine,
//! relative policy paths, quotas off by default.

mod common;

use std::time::Duration;

use common::postgres as pg;
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

/// A partner that answers `code` to a job's first request, 200 after.
fn fails_first(code: u16) -> impl Fn(&Received) -> axum::response::Response + Send + Sync {
    move |r| {
        if r.attempt == 1 {
            status(code)
        } else {
            status(200)
        }
    }
}

async fn setup(
    script: impl Fn(&Received) -> axum::response::Response + Send + Sync + 'static,
) -> Setup {
    Setup::start(POLICY, script).await
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

    /// `PATCH /v1/jobs/{id}` with a raw body; returns (status, body text).
    async fn patch_raw(&self, id: &str, body: String) -> (u16, String) {
        let response = self
            .node
            .client
            .patch(self.node.url(&format!("/v1/jobs/{id}")))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
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
    // A key with a control character (NUL, a line break) is refused too.
    let (status, _, answer) = s
        .post_raw(
            "/v1/flows/spooled/jobs",
            r#"{"payload": 1, "idempotency_key": "a\u0000b"}"#.to_string(),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
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
    let s = setup(fails_first(400)).await;
    let id = s.submit_raw("http", r#"{"first": 1}"#, "edit-1").await;
    assert_eq!(s.node.wait_final(&id).await["state"], "dead");
    let (status, text) = s.patch_raw(&id, format!(r#"{{"payload": {EXACT}}}"#)).await;
    assert_eq!(status, 200);
    assert!(text.contains(EXACT));
    // A lone surrogate is refused here too.
    let (status, _) = s.patch_raw(&id, r#"{"payload": "\ud800"}"#.into()).await;
    assert_eq!(status, 422);
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
    let s = setup(fails_first(503)).await;
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
    get_json(&http_client(), engine.url("/v1/policies")).await
}

/// Waits until `/readyz` (at `url`) answers 200: the step log takes writes
/// again.
async fn wait_ready(client: &reqwest::Client, url: &str, within: Duration) {
    wait_for(
        within,
        "the step log never took writes again; /readyz answered",
        async || {
            client
                .get(url)
                .send()
                .await
                .map_or(0, |r| r.status().as_u16())
        },
        |status| *status == 200,
    )
    .await;
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

/// Every error answer is JSON `{"error": …}`, the framework's own included.
#[tokio::test]
async fn every_error_answer_is_json() {
    let s = setup(|_| status(200)).await;
    let client = &s.node.client;
    let big = format!("[{}]", "1,".repeat(6 * 1024 * 1024));
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            client.get(s.node.url("/v1/flows/http/jobs")),
            405,
            "method not allowed",
        ),
        (
            client.delete(s.node.url("/v1/jobs")),
            405,
            "method not allowed",
        ),
        (
            client.get(s.node.url("/v2/nothing")),
            404,
            "no such endpoint",
        ),
        (
            client
                .post(s.node.url("/v1/flows/http/jobs:batch"))
                .header("content-type", "application/json")
                .body(big),
            413,
            "the limit is 10485760 bytes",
        ),
        (client.get(s.node.url("/v1/jobs/%FF%FE")), 400, ""),
        (
            client.get(s.node.url("/v1/jobs?cursor=nonsense")),
            400,
            "cursor `nonsense`",
        ),
        (client.get(s.node.url("/v1/jobs?limit=x")), 400, "bad query"),
    ];
    for (request, expected, says) in cases {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let text = response.text().await.unwrap();
        assert_eq!(status, expected, "{text}");
        assert_eq!(content_type.as_deref(), Some("application/json"), "{text}");
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text:?}"));
        let error = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
        assert!(
            !error.is_empty() && error.contains(says),
            "{status}: {error}"
        );
    }
    s.node.shutdown().await;
}

/// The step log locked by another process: submissions answer 503 with
/// `Retry-After` within seconds, `/readyz` says so while `/healthz` stays
/// up, attempts in flight keep their results, and everything resumes by
/// itself once the lock is gone, with nothing lost and nothing sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_step_log_answers_503_then_recovers_with_nothing_lost() {
    let s = setup(|_| delayed(Duration::from_millis(300), status(200))).await;
    let client = s.node.client.clone();
    let jobs = 20;
    let mut ids = Vec::new();
    for n in 0..jobs {
        ids.push(
            s.node
                .submit_ok("http", json!({ "n": n }), Some(&format!("in-flight-{n}")))
                .await,
        );
    }
    // Every attempt is under way (the partner answers in 300 ms) when the
    // file is locked.
    wait_for(
        Duration::from_secs(10),
        "the attempts never started",
        async || s.partner.requests().len(),
        |n| *n == jobs,
    )
    .await;
    let db = s.node.db_dir.path().join("steadfast.db");
    let locker = std::thread::spawn({
        let db = db.clone();
        move || {
            let connection = rusqlite::Connection::open(&db).unwrap();
            connection.execute_batch("BEGIN EXCLUSIVE").unwrap();
            std::thread::sleep(Duration::from_secs(8));
            connection.execute_batch("ROLLBACK").unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    let body = r#"{"payload": {"late": 1}, "idempotency_key": "during"}"#.to_string();
    let (status, headers, answer) = s.post_raw("/v1/flows/http/jobs", body.clone()).await;
    let waited = started.elapsed();
    assert_eq!(status, 503, "{answer}");
    assert!(waited < Duration::from_secs(7), "answered after {waited:?}");
    assert_eq!(headers.get("retry-after").unwrap(), "5");
    let error = answer["error"].as_str().unwrap();
    assert!(error.starts_with("step log unavailable: "), "{error}");
    let ready = client.get(s.node.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let health = client.get(s.node.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    locker.join().unwrap();
    wait_ready(&client, &s.node.url("/readyz"), Duration::from_secs(10)).await;
    // The refused submission wrote nothing: sent again, it is created.
    let (status, _, answer) = s.post_raw("/v1/flows/http/jobs", body).await;
    assert_eq!(status, 201, "{answer}");
    for id in &ids {
        assert_eq!(s.node.wait_final(id).await["state"], "succeeded");
    }
    // The results made while the log was locked were kept and written, not
    // attempted again.
    let mut keys: Vec<String> = s
        .partner
        .requests()
        .into_iter()
        .map(|r| r.idempotency_key)
        .filter(|k| k.starts_with("in-flight-"))
        .collect();
    keys.sort();
    assert_eq!(keys.len(), jobs, "{keys:?}");
    s.node.shutdown().await;
}

/// Connections that never finish their request headers, more than the
/// process has file descriptors for: they are closed after 10 s, the
/// engine never runs out of descriptors for its own files, a submission
/// still succeeds, and a policy edit made meanwhile is reloaded.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_half_open_connections_cannot_exhaust_the_engine() {
    use std::io::Write;
    use std::os::unix::process::CommandExt;

    let partner = Partner::start(|_| status(200)).await;
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("policies")).unwrap();
    std::fs::write(work.path().join("policies/leads.yaml"), RELOAD_POLICY).unwrap();
    let engine = EngineProcess::start_with(
        work.path(),
        &["--reload-debounce", "50ms"],
        &[("PARTNER", &partner.url)],
        |command| {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    let limit = libc::rlimit {
                        rlim_cur: 256,
                        rlim_max: 256,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    )
    .await;
    let address = engine.base.trim_start_matches("http://").to_string();
    let idle: Vec<std::net::TcpStream> = (0..300)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&address).unwrap();
            stream
                .write_all(b"POST /v1/flows/leads/jobs HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            stream
        })
        .collect();
    let opened = std::time::Instant::now();
    // A policy edit while the connections are held: it must load.
    let orders = "flows:\n  orders:\n    steps: [{ name: deliver, channel: partner }]\n";
    std::fs::write(work.path().join("policies/orders.yaml"), orders).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let answer = client
        .post(engine.url("/v1/flows/leads/jobs"))
        .json(&json!({ "payload": { "during": "the flood" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    assert!(
        opened.elapsed() < Duration::from_secs(25),
        "{:?}",
        opened.elapsed()
    );
    let shown = wait_for(
        Duration::from_secs(30),
        "the edit made during the flood was never loaded",
        async || policies_shown(&engine).await,
        |shown| shown["flows"] == json!(["leads", "orders"]),
    )
    .await;
    assert_eq!(shown["failed_reloads"], 0, "{shown:#}");
    // The idle connections were closed by the engine.
    for mut stream in idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut buffer = [0u8; 512];
        // Closed (end of file or reset) or answered (408), not left open.
        match std::io::Read::read(&mut stream, &mut buffer) {
            Ok(_) => {}
            Err(error) => assert!(
                !matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "an idle connection was still open: {error}"
            ),
        }
    }
    still_delivers(&engine, "after-the-flood").await;
}

/// Transport errors are named by what failed: a TLS protocol error (a
/// plain-HTTP server answering a TLS hello) is `tls`, a name that cannot
/// be resolved is `dns`. The name is refused by the local resolver (a
/// 70-byte label), so no query leaves the machine.
#[tokio::test]
async fn tls_and_dns_failures_are_classified_by_kind() {
    let partner = Partner::start(|_| status(200)).await;
    let port = partner.url.rsplit(':').next().unwrap().to_string();
    let long_label = "a".repeat(70);
    let policy = format!(
        r#"
templates:
  once: {{ retries: 0 }}
channels:
  tls: {{ http: {{ url: "https://127.0.0.1:{port}/in", timeout: 5s }} }}
  dns: {{ http: {{ url: "http://{long_label}.invalid/in", timeout: 5s }} }}
flows:
  tls:
    steps: [{{ name: deliver, channel: tls, retry: once }}]
  dns:
    steps: [{{ name: deliver, channel: dns, retry: once }}]
"#
    );
    let policies = policy_dir(&[("kinds.yaml", &policy)]);
    let node = TestNode::start(policies.path(), &[]).await;
    for kind in ["tls", "dns"] {
        let id = node.submit_ok(kind, json!({ "k": kind }), None).await;
        let job = node.wait_final(&id).await;
        assert_eq!(job["state"], "dead", "{job:#}");
        assert_eq!(job["attempts"][0]["error"], kind, "{job:#}");
    }
    assert!(partner.requests().is_empty());
    node.shutdown().await;
}

/// `dlq retry --rate` slower than one an hour would schedule retries past
/// any horizon (`1e-300` retried everything at once): refused, exit 2.
#[test]
fn a_bulk_retry_rate_too_slow_to_mean_anything_is_refused() {
    for rate in ["1e-300", "0.5/h", "0/s", "fast"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .args(["dlq", "retry", "--all", "--rate", rate])
            .args(["--server", "http://127.0.0.1:9"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{rate}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--rate"), "{rate}: {stderr}");
    }
}

/// URLs a parser refuses are refused by `validate`, at the line of each.
#[test]
fn validate_refuses_urls_no_client_could_send_to() {
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("policies")).unwrap();
    std::fs::write(
        work.path().join("policies/urls.yaml"),
        "channels:\n  a: { http: { url: \"http://[::1\" } }\n  b: { http: { url: \"http://x.example:99999/in\" } }\n",
    )
    .unwrap();
    let (code, output) = validate(work.path());
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("policies/urls.yaml:2:"), "{output}");
    assert!(output.contains("policies/urls.yaml:3:"), "{output}");
    assert!(
        output.contains("is not an absolute http(s) URL"),
        "{output}"
    );
}

/// PostgreSQL stopped under a running engine: submissions answer 503 with
/// `Retry-After` within seconds, `/readyz` says so, and once the server is
/// back the engine reconnects by itself; the job accepted before the
/// outage is delivered, the refused one was never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_answers_503_then_recovers() {
    let Some(server) = pg::start_private() else {
        return;
    };
    let db = server.fresh_database().await;
    let partner = Partner::start(|_| status(200)).await;
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("policies")).unwrap();
    std::fs::write(work.path().join("policies/leads.yaml"), RELOAD_POLICY).unwrap();
    let engine =
        EngineProcess::start(work.path(), &["--db", &db], &[("PARTNER", &partner.url)]).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let submit = |key: &'static str| {
        client
            .post(engine.url("/v1/flows/leads/jobs"))
            .json(&json!({ "payload": { "key": key }, "idempotency_key": key, "run_at": "2099-01-01T00:00:00Z" }))
            .send()
    };
    assert_eq!(submit("before").await.unwrap().status(), 201);

    server.halt();
    let started = std::time::Instant::now();
    let refused = submit("during").await.unwrap();
    assert_eq!(refused.status(), 503, "{:?}", refused.text().await);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(refused.headers().get("retry-after").unwrap(), "5");
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("step log unavailable: "),
        "{body}"
    );
    let ready = client.get(engine.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let health = client.get(engine.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    server.resume().unwrap();
    wait_ready(&client, &engine.url("/readyz"), Duration::from_secs(30)).await;
    let page: Value = client
        .get(engine.url("/v1/jobs?flow=leads"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|j| j["idempotency_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["before"], "{page}");
    assert_eq!(submit("during").await.unwrap().status(), 201);
    still_delivers(&engine, "after-the-outage").await;
}

/// An attempt that panics anyway (a bug) is recorded with error kind
/// `internal` and decided by the job's policy, like any transport error:
/// here a retry by the `fast` template, then the fallback when it runs out.
#[tokio::test]
async fn a_panicked_attempt_is_recorded_as_internal_and_goes_on_by_its_policy() {
    use steadfast::store::{InsertOutcome, JobState, NewJob};

    struct NoStats;
    impl steadfast::engine::AttemptObserver for NoStats {
        fn attempted(&self, _: &str, _: jiff::Timestamp, _: bool) {}
    }

    let policy_text = r#"
templates:
  fast: { retries: 1, initial: 1s, jitter: none }
channels:
  partner: { http: { url: "http://127.0.0.1:9/in" } }
  spool: { file: { dir: "/tmp" } }
flows:
  leads:
    steps: [{ name: deliver, channel: partner, retry: fast, fallback: [spool] }]
"#;
    let policies = policy_dir(&[("p.yaml", policy_text)]);
    let compiled = steadfast::compile::load_policy(
        &[policies.path().to_path_buf()],
        &steadfast::policy::EnvMode::process(),
    );
    let policy = compiled.policy.expect("compiles");
    let dir = tempfile::tempdir().unwrap();
    let store = steadfast::store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    let now: jiff::Timestamp = "2026-12-05T10:00:00Z".parse().unwrap();
    let clock = steadfast::clock::ManualClock::new(now);
    let executor = steadfast::engine::executor::Executor {
        policy: std::sync::Arc::new(steadfast::engine::LivePolicy::new(policy, now)),
        channels: std::sync::Arc::new(steadfast::channels::Channels::new().unwrap()),
        clock: std::sync::Arc::new(clock.clone()),
        store: store.clone(),
        owner: "node".into(),
        quotas: std::sync::Arc::new(steadfast::retry::quota::RetryQuotas::new(Default::default())),
        paused: Default::default(),
        stats: std::sync::Arc::new(NoStats),
        metrics: Default::default(),
        traces: None,
        insights: Default::default(),
        cuts: Default::default(),
        errors: Default::default(),
        health: Default::default(),
    };
    let InsertOutcome::Created(mut job) = store
        .job_insert(NewJob {
            id: "j1".into(),
            flow: "leads".into(),
            idempotency_key: "k1".into(),
            payload: "{}".into(),
            step: "deliver".into(),
            created_at: now,
            next_at: now,
            policy_version: "v".into(),
            traceparent: None,
            priority: 0,
        })
        .await
        .unwrap()
    else {
        panic!("not created");
    };

    let first = executor.after_panic(&job, "index out of bounds");
    let attempt = first.attempt.as_ref().expect("recorded");
    assert_eq!(attempt.error.as_deref(), Some("internal"));
    assert!(attempt
        .error_message
        .as_deref()
        .is_some_and(|m| m.contains("index out of bounds")));
    assert_eq!(attempt.decision, "retry");
    assert_eq!(first.to, JobState::Pending);
    assert_eq!(
        first.next_at,
        Some(now + jiff::SignedDuration::from_secs(1))
    );

    // Its one retry spent, the next panic sends the job to the fallback.
    job.attempt = 1;
    job.series_started_at = Some(now);
    let second = executor.after_panic(&job, "again");
    assert_eq!(second.attempt.as_ref().unwrap().decision, "fallback");
    assert_eq!(second.channel_index, 1);
}

/// The step log's disk full (the engine's file size limit reached, as a
/// full disk looks to SQLite): submissions answer 503 with `Retry-After`,
/// nothing half-written, and once there is room again the engine takes
/// submissions by itself; what was acknowledged before is all there.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_then_recovers() {
    use std::os::unix::process::CommandExt;

    const LIMIT: u64 = 4 * 1024 * 1024;
    let partner = Partner::start(|_| status(200)).await;
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("policies")).unwrap();
    std::fs::write(work.path().join("policies/leads.yaml"), RELOAD_POLICY).unwrap();
    let engine =
        EngineProcess::start_with(work.path(), &[], &[("PARTNER", &partner.url)], |command| {
            // SAFETY: signal and setrlimit are async-signal-safe; nothing
            // else runs between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    // A write past the limit then fails with EFBIG instead
                    // of killing the process.
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let limit = libc::rlimit {
                        rlim_cur: LIMIT,
                        rlim_max: libc::RLIM_INFINITY,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
        .await;
    let client = http_client();
    let filler = "x".repeat(64 * 1024);
    let mut accepted = Vec::new();
    let mut refused = None;
    for n in 0..400 {
        let response = client
            .post(engine.url("/v1/flows/leads/jobs"))
            .json(&json!({
                "payload": { "n": n, "filler": filler },
                "idempotency_key": format!("fill-{n}"),
                "run_at": "2099-01-01T00:00:00Z",
            }))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            201 => accepted.push(format!("fill-{n}")),
            503 => {
                refused = Some(response);
                break;
            }
            other => panic!("{other}: {}", response.text().await.unwrap()),
        }
    }
    let refused = refused.expect("the file size limit was never reached");
    assert_eq!(refused.headers().get("retry-after").unwrap(), "5");
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("step log unavailable: "),
        "{body}"
    );
    assert!(!accepted.is_empty());

    // Room again: the limit lifted, as when the disk is cleaned up.
    let pid = engine.child.id() as libc::pid_t;
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit only reads the struct given (the old limit is not
    // asked for).
    let lifted =
        unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &unlimited, std::ptr::null_mut()) };
    assert_eq!(lifted, 0, "{}", std::io::Error::last_os_error());
    wait_ready(&client, &engine.url("/readyz"), Duration::from_secs(30)).await;
    still_delivers(&engine, "after-the-disk-full").await;
    let total = count_in_state(&client, &engine.base, "pending").await;
    assert_eq!(total, accepted.len(), "every acknowledged job is there");
}
