//! Shared pieces of the integration tests: a scriptable partner (a real HTTP
//! server on loopback that records every request) and a real engine node on
//! a real SQLite file.

#![allow(dead_code)]

pub mod postgres;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use steadfast::clock::{ManualClock, SystemClock};
use steadfast::compile::load_policy;
use steadfast::engine::{EngineConfig, SchedulerConfig};
use steadfast::node::{Node, NodeConfig, ReloadSource};
use steadfast::policy::{EnvMode, MapEnv};
use steadfast::reload::WatchConfig;

/// One request the partner received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub idempotency_key: String,
    pub body: Value,
    /// The body's bytes as they came, as text.
    pub raw_body: String,
    pub at: Instant,
    /// 1-based count of requests with this key on this path.
    pub attempt: u32,
    /// The `X-Node` header: which engine sent it, when its policy says.
    pub node: String,
    pub headers: HeaderMap,
}

/// How often the tests look again at what they wait for.
pub const POLL: Duration = Duration::from_millis(20);

type Script = dyn Fn(&Received) -> Response + Send + Sync;

/// A partner whose answers a test scripts per request.
#[derive(Clone)]
pub struct Partner {
    pub url: String,
    log: Arc<Mutex<Vec<Received>>>,
}

#[derive(Clone)]
struct PartnerState {
    log: Arc<Mutex<Vec<Received>>>,
    script: Arc<Script>,
}

impl Partner {
    /// Serves `script` on a free loopback port.
    pub async fn start(script: impl Fn(&Received) -> Response + Send + Sync + 'static) -> Partner {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = PartnerState {
            log: log.clone(),
            script: Arc::new(script),
        };
        let app = axum::Router::new().fallback(handle).with_state(state);
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Partner { url, log }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

async fn handle(
    State(state): State<PartnerState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let node = headers
        .get("x-node")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let path = uri.path().to_string();
    let received = {
        let mut log = state.log.lock().unwrap();
        let attempt = 1 + log
            .iter()
            .filter(|r| r.path == path && r.idempotency_key == idempotency_key)
            .count() as u32;
        let received = Received {
            path,
            idempotency_key,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            raw_body: String::from_utf8_lossy(&body).into_owned(),
            at: Instant::now(),
            attempt,
            node,
            headers: headers.clone(),
        };
        log.push(received.clone());
        received
    };
    let mut response = (state.script)(&received);
    if let Some(delay) = response.headers_mut().remove(DELAY_HEADER) {
        let ms = delay
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    response
}

/// A response header the partner strips and obeys: answer this late.
const DELAY_HEADER: &str = "x-test-delay-ms";

/// `response`, sent after `delay`.
pub fn delayed(delay: Duration, mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(DELAY_HEADER, delay.as_millis().to_string().parse().unwrap());
    response
}

pub fn status(code: u16) -> Response {
    StatusCode::from_u16(code).unwrap().into_response()
}

pub fn status_body(code: u16, body: &str) -> Response {
    (StatusCode::from_u16(code).unwrap(), body.to_string()).into_response()
}

/// Writes policy files into a fresh directory.
pub fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// A plain HTTP client for talking to the API under test.
pub fn http_client() -> reqwest::Client {
    steadfast::install_tls_provider();
    reqwest::Client::new()
}

/// A running node on a real SQLite file.
pub struct TestNode {
    pub node: Node,
    pub client: reqwest::Client,
    pub db_dir: tempfile::TempDir,
}

impl TestNode {
    /// Starts a node with `start`, given the path of a fresh SQLite file.
    async fn on_fresh_db(start: impl AsyncFnOnce(&Path) -> Node) -> TestNode {
        let db_dir = tempfile::tempdir().unwrap();
        let node = start(&db_dir.path().join("steadfast.db")).await;
        TestNode {
            node,
            client: http_client(),
            db_dir,
        }
    }

    /// Compiles `policies` (with `env`) and starts a node on a fresh SQLite
    /// file.
    pub async fn start(policies: &Path, env: &[(&str, &str)]) -> TestNode {
        Self::on_fresh_db(async |db| start_node(policies, env, db).await).await
    }

    /// Like [`TestNode::start`], with the policy files watched.
    pub async fn start_watching(policies: &Path, env: &[(&str, &str)]) -> TestNode {
        Self::on_fresh_db(async |db| start_watching_node(policies, env, db).await).await
    }

    /// Like [`TestNode::start`], on `clock` and with `scheduler`'s settings
    /// (see [`start_clocked_node`]).
    pub async fn start_clocked(
        policies: &Path,
        env: &[(&str, &str)],
        clock: ManualClock,
        scheduler: SchedulerConfig,
    ) -> TestNode {
        Self::on_fresh_db(async |db| start_clocked_node(policies, env, db, clock, scheduler).await)
            .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.node.url())
    }

    /// Submits a job; returns (HTTP status, body).
    pub async fn submit(&self, flow: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/v1/flows/{flow}/jobs")))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Submits a job that must be created; returns its id.
    pub async fn submit_ok(&self, flow: &str, payload: Value, key: Option<&str>) -> String {
        let mut body = json!({ "payload": payload });
        if let Some(key) = key {
            body["idempotency_key"] = json!(key);
        }
        let (status, answer) = self.submit(flow, body).await;
        assert_eq!(status, 201, "{answer}");
        answer["id"].as_str().unwrap().to_string()
    }

    /// `GET path` with a bearer token; the JSON answer.
    pub async fn get_as(&self, token: &str, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Submits a job with a bearer token; the new job's id.
    pub async fn submit_as(&self, token: &str, flow: &str, payload: Value, key: &str) -> String {
        let answer: Value = self
            .client
            .post(self.url(&format!("/v1/flows/{flow}/jobs")))
            .bearer_auth(token)
            .json(&json!({ "payload": payload, "idempotency_key": key }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["id"]
            .as_str()
            .unwrap_or_else(|| panic!("not created: {answer}"))
            .to_string()
    }

    pub async fn job(&self, id: &str) -> Value {
        self.client
            .get(self.url(&format!("/v1/jobs/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the job is in a final state (succeeded, dead, cancelled)
    /// and, when dead with a notification owed, until it is sent.
    pub async fn wait_final(&self, id: &str) -> Value {
        let what = format!("job {id} never finished");
        wait_for(
            Duration::from_secs(30),
            what,
            || self.job(id),
            |job| {
                let state = job["state"].as_str().unwrap_or_default();
                ["succeeded", "dead", "cancelled"].contains(&state)
            },
        )
        .await
    }

    pub async fn shutdown(self) {
        self.node.shutdown().await;
    }
}

pub async fn start_node(policies: &Path, env: &[(&str, &str)], db: &Path) -> Node {
    start_node_with(
        policies,
        env,
        db,
        false,
        Vec::new(),
        Default::default(),
        Default::default(),
    )
    .await
}

impl TestNode {
    /// Like [`TestNode::start`], with API tokens.
    pub async fn start_with_tokens(
        policies: &Path,
        env: &[(&str, &str)],
        tokens: Vec<steadfast::api::Token>,
    ) -> TestNode {
        Self::on_fresh_db(async |db| {
            start_node_with(
                policies,
                env,
                db,
                false,
                tokens,
                Default::default(),
                Default::default(),
            )
            .await
        })
        .await
    }

    /// Like [`TestNode::start`], with alert rules.
    pub async fn start_with_alerts(
        policies: &Path,
        env: &[(&str, &str)],
        alerts: steadfast::alerts::AlertsConfig,
    ) -> TestNode {
        Self::on_fresh_db(async |db| {
            start_node_with(
                policies,
                env,
                db,
                false,
                Vec::new(),
                Default::default(),
                alerts,
            )
            .await
        })
        .await
    }

    /// Like [`TestNode::start`], with retry quotas.
    pub async fn start_with_quotas(
        policies: &Path,
        env: &[(&str, &str)],
        quotas: steadfast::retry::quota::QuotaConfig,
    ) -> TestNode {
        Self::on_fresh_db(async |db| {
            start_node_with(
                policies,
                env,
                db,
                false,
                Vec::new(),
                quotas,
                Default::default(),
            )
            .await
        })
        .await
    }
}

/// A node whose policy files are watched and reloaded on change.
pub async fn start_watching_node(policies: &Path, env: &[(&str, &str)], db: &Path) -> Node {
    start_node_with(
        policies,
        env,
        db,
        true,
        Vec::new(),
        Default::default(),
        Default::default(),
    )
    .await
}

async fn start_node_with(
    policies: &Path,
    env: &[(&str, &str)],
    db: &Path,
    watch: bool,
    tokens: Vec<steadfast::api::Token>,
    quotas: steadfast::retry::quota::QuotaConfig,
    alerts: steadfast::alerts::AlertsConfig,
) -> Node {
    let env = env
        .iter()
        .fold(MapEnv::overlaying_process(), |env, (name, value)| {
            env.with(*name, *value)
        });
    let env = EnvMode::from_source(env);
    let compilation = load_policy(&[policies.to_path_buf()], &env);
    let policy = compilation.policy.unwrap_or_else(|| {
        panic!(
            "test policies do not compile:\n{}",
            compilation
                .diagnostics
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    Node::start(NodeConfig {
        policy,
        db_url: format!("sqlite://{}", db.display()),
        listen: "127.0.0.1:0".to_string(),
        engine: EngineConfig {
            scheduler: SchedulerConfig {
                workers: 16,
                ..SchedulerConfig::default()
            },
            quotas,
            ..EngineConfig::default()
        },
        clock: Arc::new(SystemClock),
        tokens,
        alerts,
        reload: watch.then(|| ReloadSource {
            paths: vec![policies.to_path_buf()],
            env,
            watch: WatchConfig {
                debounce: Duration::from_millis(100),
                rescan: Duration::from_secs(5),
            },
        }),
        serve: Default::default(),
    })
    .await
    .unwrap()
}

/// A node whose engine and API read `clock` (a [`ManualClock`] makes every
/// instant exact), with `scheduler`'s settings. The policies must compile
/// without a single diagnostic.
pub async fn start_clocked_node(
    policies: &Path,
    env: &[(&str, &str)],
    db: &Path,
    clock: ManualClock,
    scheduler: SchedulerConfig,
) -> Node {
    let env = env
        .iter()
        .fold(MapEnv::new(), |env, (name, value)| env.with(*name, *value));
    let compilation = load_policy(&[policies.to_path_buf()], &EnvMode::from_source(env));
    assert!(
        compilation.diagnostics.is_empty(),
        "{:#?}",
        compilation.diagnostics
    );
    Node::start(NodeConfig {
        policy: compilation.policy.expect("the test policy compiles"),
        db_url: format!("sqlite://{}", db.display()),
        listen: "127.0.0.1:0".to_string(),
        engine: EngineConfig {
            scheduler,
            ..EngineConfig::default()
        },
        clock: Arc::new(clock),
        tokens: Vec::new(),
        alerts: Default::default(),
        reload: None,
        serve: Default::default(),
    })
    .await
    .expect("node starts")
}

/// The attempts of a job's JSON, as (step, channel, status or error,
/// outcome, decision).
pub fn attempt_summary(job: &Value) -> Vec<(String, String, String, String, String)> {
    job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let answer = a["status"]
                .as_u64()
                .map(|s| s.to_string())
                .or_else(|| a["error"].as_str().map(str::to_owned))
                .unwrap_or_default();
            (
                a["step"].as_str().unwrap().to_string(),
                a["channel"].as_str().unwrap().to_string(),
                answer,
                a["outcome"].as_str().unwrap().to_string(),
                a["decision"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn path_of(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().to_path_buf()
}

/// Runs `probe` every `every` until it gives `Ok`, and returns that. After
/// `within`, fails with `what` and the last `Err`: what was seen instead.
pub async fn eventually<T, E: std::fmt::Display>(
    within: Duration,
    every: Duration,
    what: impl std::fmt::Display,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let seen = match probe().await {
            Ok(done) => return done,
            Err(seen) => seen,
        };
        assert!(Instant::now() < deadline, "{what}: {seen:#}");
        tokio::time::sleep(every).await;
    }
}

/// Fetches with `fetch` every [`POLL`] until `done` holds for what it
/// gives, and returns that; after `within`, fails with `what` and the last
/// value fetched.
pub async fn wait_for<T: std::fmt::Display>(
    within: Duration,
    what: impl std::fmt::Display,
    mut fetch: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    eventually(within, POLL, what, async || {
        let value = fetch().await;
        if done(&value) {
            Ok(value)
        } else {
            Err(value)
        }
    })
    .await
}

/// Polls `base`'s `/healthz` until the engine answers.
pub async fn wait_healthy(client: &reqwest::Client, base: &str, within: Duration) {
    let every = Duration::from_millis(50);
    eventually(within, every, "engine never became healthy", || async {
        client.get(format!("{base}/healthz")).send().await.map(drop)
    })
    .await
}

/// How many jobs are in `state`, every page of `GET /v1/jobs` counted.
/// The JSON answer of `GET url`.
pub async fn get_json(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The JSON answer of `POST url` with `body` as JSON.
pub async fn post_json(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    body: &impl serde::Serialize,
) -> Value {
    client
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The JSON answer of `POST url` without a body.
pub async fn post_empty(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    client.post(url).send().await.unwrap().json().await.unwrap()
}

pub async fn count_in_state(client: &reqwest::Client, base: &str, state: &str) -> usize {
    let mut total = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/jobs?state={state}&limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = get_json(client, url).await;
        total += page["jobs"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return total,
        }
    }
}

/// A free loopback port, for an engine started as a process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `steadfast` binary running as a child process; killed when dropped.
pub struct EngineProcess {
    pub child: std::process::Child,
    pub base: String,
}

impl EngineProcess {
    /// `steadfast run --listen 127.0.0.1:PORT` plus `args`, in `dir`, with
    /// `env`; waits until it answers `/healthz`.
    pub async fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> EngineProcess {
        Self::start_with(dir, args, env, |_| {}).await
    }

    /// Like [`EngineProcess::start`], with the command changed by
    /// `configure` before it is spawned.
    pub async fn start_with(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        configure: impl FnOnce(&mut std::process::Command),
    ) -> EngineProcess {
        let port = free_port();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"));
        command
            .current_dir(dir)
            .args(["run", "--workers", "4", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        configure(&mut command);
        let child = command.spawn().expect("start the steadfast binary");
        let engine = EngineProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        wait_healthy(&http_client(), &engine.base, Duration::from_secs(20)).await;
        engine
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scripted partner, a node on one policy file with `${PARTNER}` and
/// `${SPOOL}` set to the partner's URL and a fresh spool directory.
pub struct Setup {
    pub partner: Partner,
    pub node: TestNode,
    pub spool: tempfile::TempDir,
    _policies: tempfile::TempDir,
}

impl Setup {
    pub async fn start(
        policy: &str,
        script: impl Fn(&Received) -> Response + Send + Sync + 'static,
    ) -> Setup {
        let partner = Partner::start(script).await;
        let policies = policy_dir(&[("test.yaml", policy)]);
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
}

/// Runs the CLI against `server` (no token); (exit code, stdout, stderr).
pub async fn cli(server: &str, args: &[&str]) -> (i32, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"));
    command
        .args(args)
        .env("STEADFAST_SERVER", server)
        .env_remove("STEADFAST_TOKEN");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
