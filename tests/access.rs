//! API tokens: each scope allowed where it belongs and refused elsewhere,
//! the editor of a payload named by its token, the CLI's --token, and the
//! engine refusing to listen beyond loopback without tokens.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};
use steadfast::api::{Scope, Token};

const POLICY: &str = r#"
templates:
  once: { retries: 0 }
channels:
  partner: { http: { url: "${PARTNER}/in" } }
flows:
  leads:
    steps:
      - { name: deliver, channel: partner, retry: once }
"#;

const SUBMIT: &str = "submit-secret-0123456789";
const ADMIN: &str = "admin-secret-0123456789";

async fn start() -> (TestNode, Partner, tempfile::TempDir) {
    let partner = Partner::start(|_| status(400)).await;
    let policies = policy_dir(&[("access.yaml", POLICY)]);
    let tokens = vec![
        Token {
            name: "ci".into(),
            secret: SUBMIT.into(),
            scope: Scope::Submit,
        },
        Token {
            name: "alice".into(),
            secret: ADMIN.into(),
            scope: Scope::Admin,
        },
    ];
    let node = TestNode::start_with_tokens(
        policies.path(),
        &[("PARTNER", partner.url.as_str())],
        tokens,
    )
    .await;
    (node, partner, policies)
}

async fn call(
    node: &TestNode,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = node.client.request(method, node.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scope_is_allowed_where_it_belongs_and_refused_elsewhere() {
    use reqwest::Method;
    let (node, _partner, _policies) = start().await;
    let submit = Some(SUBMIT);
    let admin = Some(ADMIN);
    let job = json!({ "payload": { "n": 1 } });

    // Without a token, or with an unknown one: 401 that says what to send.
    let (status, body) = call(&node, Method::GET, "/v1/jobs", None, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let (status, body) = call(&node, Method::GET, "/v1/jobs", Some("guess"), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown token"));
    let (status, _) = call(
        &node,
        Method::POST,
        "/v1/flows/leads/jobs",
        None,
        Some(job.clone()),
    )
    .await;
    assert_eq!(status, 401);

    // Open: health, and metrics on a loopback listener.
    assert_eq!(
        call(&node, Method::GET, "/healthz", None, None).await.0,
        200
    );
    assert_eq!(
        call(&node, Method::GET, "/metrics", None, None).await.0,
        200
    );

    // submit: create jobs and read; nothing else.
    let (status, created) = call(
        &node,
        Method::POST,
        "/v1/flows/leads/jobs",
        submit,
        Some(job.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let batch = json!([{ "payload": { "n": 2 } }]);
    assert_eq!(
        call(
            &node,
            Method::POST,
            "/v1/flows/leads/jobs:batch",
            submit,
            Some(batch)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(&node, Method::GET, "/v1/jobs", submit, None).await.0,
        200
    );
    let path = format!("/v1/jobs/{id}");
    let fetch = async || call(&node, Method::GET, &path, submit, None).await.1;
    let within = std::time::Duration::from_secs(30);
    let dead = wait_for(within, "never dead", fetch, |job| job["state"] == "dead").await;
    assert_eq!(dead["id"], json!(id));
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/dlq/retry".to_string(),
            json!({ "ids": [id] }),
        ),
        (Method::POST, format!("/v1/jobs/{id}/retry"), json!(null)),
        (Method::POST, format!("/v1/jobs/{id}/cancel"), json!(null)),
        (
            Method::PATCH,
            format!("/v1/jobs/{id}"),
            json!({ "payload": {} }),
        ),
    ] {
        let (status, answer) = call(&node, method.clone(), &path, submit, Some(body)).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(
            message.contains("scope `submit`") && message.contains("needs scope `admin`"),
            "{message}"
        );
    }

    // admin: everything; the edit is recorded under the token's name.
    let (status, edited) = call(
        &node,
        Method::PATCH,
        &format!("/v1/jobs/{id}"),
        admin,
        Some(json!({ "payload": { "n": 10 } })),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    let (_, shown) = call(&node, Method::GET, &format!("/v1/jobs/{id}"), admin, None).await;
    assert_eq!(shown["payload_edits"][0]["editor"], "alice");
    let (status, op) = call(
        &node,
        Method::POST,
        "/v1/dlq/retry",
        admin,
        Some(json!({ "ids": [id] })),
    )
    .await;
    assert_eq!(status, 202, "{op}");
    let op_path = format!("/v1/operations/{}", op["operation"].as_str().unwrap());
    assert_eq!(
        call(&node, Method::GET, &op_path, submit, None).await.0,
        200
    );
    assert_eq!(
        call(
            &node,
            Method::POST,
            "/v1/flows/leads/jobs",
            admin,
            Some(job)
        )
        .await
        .0,
        201
    );

    // The CLI sends --token or STEADFAST_TOKEN; without, it exits 2 with the 401.
    let server = node.node.url();
    let cli = |args: Vec<String>, token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_steadfast"));
        command.args(args).env("STEADFAST_SERVER", &server);
        match token {
            Some(token) => command.env("STEADFAST_TOKEN", token),
            None => command.env_remove("STEADFAST_TOKEN"),
        };
        command
    };
    let output = |mut command: Command| async move {
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap()
    };
    let list = vec!["dlq".to_string(), "list".to_string()];
    let out = output(cli(list.clone(), None)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = output(cli(list.clone(), Some(SUBMIT))).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut with_flag = list.clone();
    with_flag.extend(["--token".to_string(), ADMIN.to_string()]);
    assert_eq!(output(cli(with_flag, None)).await.status.code(), Some(0));
    let cancel = vec!["dlq".into(), "cancel".into(), id.clone()];
    let out = output(cli(cancel.clone(), Some(SUBMIT))).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    let out = output(cli(cancel, Some(ADMIN))).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.node.shutdown().await;
}

#[test]
fn the_engine_refuses_a_public_listen_address_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let policies = policy_dir(&[("p.yaml", "flows: {}\n")]);
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .current_dir(dir.path())
            .args(["run", "--listen", "0.0.0.0:0", "--db", "sqlite::memory:"])
            .arg("--policies")
            .arg(policies.path())
            .args(extra)
            .env_remove("STEADFAST_LISTEN")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without API tokens"),
        "{stderr}"
    );

    // A token whose ${VAR} is not set is bad input too, and the secret's
    // variable is named, never a value.
    let config = dir.path().join("steadfast.toml");
    std::fs::write(
        &config,
        "[[tokens]]\nname = \"ci\"\nsecret = \"${STEADFAST_TEST_UNSET_SECRET}\"\nscope = \"submit\"\n",
    )
    .unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("token `ci`: environment variable `STEADFAST_TEST_UNSET_SECRET` is not set"),
        "{stderr}"
    );
    // An unknown key in steadfast.toml names it.
    std::fs::write(&config, "listn = \"0.0.0.0:1\"\n").unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listn"));
}

#[tokio::test]
async fn an_address_guessing_tokens_is_refused_for_the_rest_of_the_minute() {
    let (node, _partner, _policies) = start().await;
    for n in 0..20 {
        let (code, _) = call(
            &node,
            reqwest::Method::GET,
            "/v1/jobs",
            Some(&format!("guess-{n}")),
            None,
        )
        .await;
        assert_eq!(code, 401, "guess {n}");
    }
    // Past 20 unknown tokens a minute, nothing this address sends is
    // compared, the right secret included.
    let response = node
        .client
        .get(node.url("/v1/jobs"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many unknown tokens"),
        "{body}"
    );
    // The console's login counts the same way.
    let login = node
        .client
        .post(node.url("/ui/login"))
        .form(&[("token", ADMIN), ("next", "/ui/")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 429);
    assert!(login
        .text()
        .await
        .unwrap()
        .contains("Too many unknown tokens"));
    // Liveness needs no token and stays open.
    let (code, _) = call(&node, reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(code, 200);
    node.shutdown().await;
}
