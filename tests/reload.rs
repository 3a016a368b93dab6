//! Hot reload against a real node: every way a policy directory changes in
//! practice, a bad edit that leaves deliveries running, and jobs whose flow
//! disappears and comes back.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn flow_file(flow: &str) -> String {
    format!(
        r#"
flows:
  {flow}:
    steps:
      - {{ name: deliver, channel: partner }}
"#
    )
}

const CHANNELS: &str = r#"
channels:
  partner: { http: { url: "${PARTNER}/in" } }
"#;

struct Setup {
    node: TestNode,
    partner: Partner,
    root: tempfile::TempDir,
}

impl Setup {
    /// A node watching `root/policies`, which holds the channels and a flow
    /// `leads`.
    async fn start() -> Setup {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("policies");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("channels.yaml"), CHANNELS).unwrap();
        std::fs::write(dir.join("leads.yaml"), flow_file("leads")).unwrap();
        Setup::on(root, &dir).await
    }

    async fn on(root: tempfile::TempDir, dir: &Path) -> Setup {
        Setup::with_partner(root, dir, Partner::start(|_| status(200)).await).await
    }

    /// The usual layout, with the partner given.
    async fn start_with(partner: Partner) -> Setup {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("policies");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("channels.yaml"), CHANNELS).unwrap();
        std::fs::write(dir.join("leads.yaml"), flow_file("leads")).unwrap();
        Setup::with_partner(root, &dir, partner).await
    }

    async fn with_partner(root: tempfile::TempDir, dir: &Path, partner: Partner) -> Setup {
        let node = TestNode::start_watching(dir, &[("PARTNER", partner.url.as_str())]).await;
        Setup {
            node,
            partner,
            root,
        }
    }

    fn dir(&self) -> std::path::PathBuf {
        self.root.path().join("policies")
    }

    async fn policies(&self) -> Value {
        get_json(&self.node.client, self.node.url("/v1/policies")).await
    }

    /// Polls `/v1/policies` until `check` holds.
    async fn wait_policies(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let what = format!("never {what}");
        wait_for(Duration::from_secs(15), what, || self.policies(), check).await
    }

    async fn wait_flows(&self, flows: &[&str]) -> Value {
        let expected = json!(flows);
        self.wait_policies(&format!("flows {flows:?}"), |p| p["flows"] == expected)
            .await
    }

    async fn delivers(&self, flow: &str) {
        let id = self.node.submit_ok(flow, json!({ "to": flow }), None).await;
        let job = self.node.wait_final(&id).await;
        assert_eq!(job["state"], "succeeded", "{job:#}");
    }
}

/// Writes like an editor: a temporary file beside the target, renamed over
/// it.
fn save_like_an_editor(path: &Path, text: &str) {
    let temp = path.with_file_name(format!(
        ".{}.swp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[tokio::test]
async fn an_added_file_brings_a_flow_that_accepts_jobs_at_once() {
    let setup = Setup::start().await;
    setup.wait_flows(&["leads"]).await;
    std::fs::write(setup.dir().join("orders.yaml"), flow_file("orders")).unwrap();
    let policies = setup.wait_flows(&["leads", "orders"]).await;
    assert_eq!(policies["reloads"], 1);
    setup.delivers("orders").await;
}

#[tokio::test]
async fn an_editors_rename_over_the_file_is_picked_up() {
    let setup = Setup::start().await;
    let before = setup.policies().await["version"].clone();
    let renamed = flow_file("leads").replace("leads", "prospects");
    save_like_an_editor(&setup.dir().join("leads.yaml"), &renamed);
    let after = setup.wait_flows(&["prospects"]).await;
    assert_ne!(after["version"], before);
    setup.delivers("prospects").await;
}

#[tokio::test]
async fn a_bad_edit_keeps_the_last_good_policy_and_a_good_one_recovers() {
    let setup = Setup::start().await;
    let good = setup.policies().await["version"].clone();
    std::fs::write(
        setup.dir().join("leads.yaml"),
        "flows:\n  leads:\n    steps:\n      - { name: deliver, channel: nowhere }\n",
    )
    .unwrap();
    let broken = setup
        .wait_policies("showing the error", |p| {
            p["last_error"].as_array().is_some_and(|e| !e.is_empty())
        })
        .await;
    let error = broken["last_error"][0].as_str().unwrap();
    assert!(
        error.contains("leads.yaml:4:") && error.contains("unknown channel `nowhere`"),
        "{error}"
    );
    assert_eq!(broken["version"], good, "the bad edit must not be in force");
    // Deliveries go on under the last good policy.
    setup.delivers("leads").await;

    std::fs::write(setup.dir().join("leads.yaml"), flow_file("leads")).unwrap();
    let recovered = setup
        .wait_policies("clearing the error", |p| {
            p["last_error"].as_array().is_some_and(Vec::is_empty)
        })
        .await;
    assert_eq!(recovered["version"], good);
    setup.delivers("leads").await;
    let metrics = setup
        .node
        .client
        .get(setup.node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("steadfast_policy_reloads_total{result=\"error\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("steadfast_policy_loaded_timestamp_seconds"));
}

#[tokio::test]
async fn a_replaced_directory_is_watched_again() {
    let setup = Setup::start().await;
    let fresh = setup.root.path().join("policies.new");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::write(fresh.join("channels.yaml"), CHANNELS).unwrap();
    std::fs::write(fresh.join("orders.yaml"), flow_file("orders")).unwrap();
    std::fs::remove_dir_all(setup.dir()).unwrap();
    std::fs::rename(&fresh, setup.dir()).unwrap();
    setup.wait_flows(&["orders"]).await;
    setup.delivers("orders").await;

    // And changes inside the new directory are seen too.
    std::fs::write(setup.dir().join("leads.yaml"), flow_file("leads")).unwrap();
    setup.wait_flows(&["leads", "orders"]).await;
}

#[tokio::test]
async fn a_git_sync_symlink_swap_is_picked_up() {
    // The layout git-sync and Kubernetes config maps use: files are links
    // through `..data`, which is swapped atomically to a new directory.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("policies");
    let v1 = dir.join("..v1");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::write(v1.join("channels.yaml"), CHANNELS).unwrap();
    std::fs::write(v1.join("flows.yaml"), flow_file("leads")).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    for file in ["channels.yaml", "flows.yaml"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file)).unwrap();
    }
    let setup = Setup::on(root, &dir).await;
    setup.wait_flows(&["leads"]).await;

    let v2 = dir.join("..v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("channels.yaml"), CHANNELS).unwrap();
    std::fs::write(v2.join("flows.yaml"), flow_file("orders")).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();

    setup.wait_flows(&["orders"]).await;
    setup.delivers("orders").await;
}

#[tokio::test]
async fn a_job_whose_flow_vanishes_is_suspended_and_resumes_when_it_returns() {
    let setup = Setup::start().await;
    std::fs::write(setup.dir().join("orders.yaml"), flow_file("orders")).unwrap();
    setup.wait_flows(&["leads", "orders"]).await;
    // Due in a second: still waiting when its flow goes.
    let due = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(1500);
    let (status, created) = setup
        .node
        .submit(
            "orders",
            json!({ "payload": { "o": 1 }, "run_at": due.to_string() }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();

    std::fs::remove_file(setup.dir().join("orders.yaml")).unwrap();
    setup.wait_flows(&["leads"]).await;
    let suspended = wait_for(
        Duration::from_secs(15),
        "never suspended",
        || setup.node.job(&id),
        |job| job["state"] == "suspended",
    )
    .await;
    assert_eq!(suspended["reason"], "flow_removed", "{suspended:#}");
    assert!(setup.partner.requests().is_empty());

    std::fs::write(setup.dir().join("orders.yaml"), flow_file("orders")).unwrap();
    setup.wait_flows(&["leads", "orders"]).await;
    // Back at once, not at the next 30-second recheck.
    let started = Instant::now();
    let job = setup.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(setup.partner.requests().len(), 1);
}

#[tokio::test]
async fn sighup_style_forced_reload_reports_unchanged_files_quietly() {
    let setup = Setup::start().await;
    let reloader = setup.node.node.reloader().unwrap().clone();
    let outcome = tokio::task::spawn_blocking(move || reloader.reload_now())
        .await
        .unwrap();
    assert_eq!(outcome, steadfast::reload::ReloadOutcome::Unchanged);
    assert_eq!(setup.policies().await["reloads"], 0);
}

/// Polls until `check` gives a value.
async fn until_some<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let what = format!("never {what}");
    eventually(Duration::from_secs(15), POLL, what, async || {
        check().await.ok_or("still waiting")
    })
    .await
}

#[tokio::test]
async fn a_step_renamed_away_suspends_the_job_until_it_is_back() {
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let partner = {
        let healthy = healthy.clone();
        Partner::start(move |_| {
            status(if healthy.load(std::sync::atomic::Ordering::SeqCst) {
                200
            } else {
                503
            })
        })
        .await
    };
    let setup = Setup::start_with(partner).await;
    let id = setup.node.submit_ok("leads", json!({ "n": 1 }), None).await;
    until_some("a first attempt", || async {
        (setup.node.job(&id).await["attempts_total"].as_u64() >= Some(1)).then_some(())
    })
    .await;

    let file = setup.dir().join("leads.yaml");
    save_like_an_editor(
        &file,
        &flow_file("leads").replace("name: deliver", "name: send"),
    );
    let job = until_some("the job suspended", || async {
        let job = setup.node.job(&id).await;
        (job["state"] == "suspended").then_some(job)
    })
    .await;
    assert_eq!(job["reason"], "flow_removed", "{job:#}");
    assert_eq!(job["step"], "deliver");

    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    save_like_an_editor(&file, &flow_file("leads"));
    let job = setup.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
}

#[tokio::test]
async fn a_job_waiting_for_its_retry_follows_the_new_policy() {
    // The old path fails; the edit points the channel at one that works.
    let partner = Partner::start(|r| status(if r.path == "/in" { 503 } else { 200 })).await;
    let setup = Setup::start_with(partner).await;
    let old = setup.policies().await["version"].clone();
    let id = setup
        .node
        .submit_ok("leads", json!({ "n": 9 }), Some("k-9"))
        .await;
    until_some("a failed first attempt", || async {
        (!setup.partner.requests_to("/in").is_empty()).then_some(())
    })
    .await;

    save_like_an_editor(
        &setup.dir().join("channels.yaml"),
        &CHANNELS.replace("/in", "/fixed"),
    );
    let new = setup
        .wait_policies("the fix in force", |p| p["version"] != old)
        .await;
    let job = setup.node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["policy_version"], old);
    let last = attempts.last().unwrap();
    assert_eq!(last["status"], 200);
    assert_eq!(last["policy_version"], new["version"]);
    // The same job and key, whichever policy sent it.
    let fixed = setup.partner.requests_to("/fixed");
    assert_eq!(fixed.len(), 1);
    assert_eq!(fixed[0].idempotency_key, "k-9");
}

#[tokio::test]
async fn a_directory_emptied_during_a_deploy_keeps_the_last_good_set() {
    let setup = Setup::start().await;
    let good = setup.policies().await["version"].clone();
    std::fs::remove_file(setup.dir().join("leads.yaml")).unwrap();
    std::fs::remove_file(setup.dir().join("channels.yaml")).unwrap();
    let shown = setup
        .wait_policies("refusing the empty set", |p| {
            p["last_error"].as_array().is_some_and(|e| !e.is_empty())
        })
        .await;
    assert_eq!(shown["version"], good);
    assert!(
        shown["last_error"][0]
            .as_str()
            .is_some_and(|e| e.contains("no policy files")),
        "{shown:#}"
    );
    setup.delivers("leads").await;
}

/// The `steadfast` binary on `policies`, listening on a free port.
fn spawn_run(policies: &Path, db: &Path, port: u16, extra: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"));
    command
        .args(["run", "--workers", "2", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--policies")
        .arg(policies)
        .arg("--db")
        .arg(format!("sqlite://{}", db.display()))
        .args(extra)
        .env("PARTNER", "http://127.0.0.1:9")
        .env("RUST_LOG", "warn");
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn run_refuses_to_start_on_invalid_policies() {
    let dir = policy_dir(&[(
        "leads.yaml",
        "flows:\n  leads:\n    steps:\n      - { name: deliver, channel: nowhere }\n",
    )]);
    let db = tempfile::tempdir().unwrap();
    let output = spawn_run(dir.path(), &db.path().join("s.db"), free_port(), &[])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("{}:4:", dir.path().join("leads.yaml").display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("unknown channel `nowhere`"), "{stderr}");
}

#[tokio::test]
async fn sighup_reloads_a_running_engine() {
    let dir = policy_dir(&[
        ("channels.yaml", CHANNELS),
        ("leads.yaml", &flow_file("leads")),
    ]);
    let db = tempfile::tempdir().unwrap();
    let port = free_port();
    // File events would take an hour to settle and there is no rescan:
    // only the signal can reload.
    let mut child = spawn_run(
        dir.path(),
        &db.path().join("s.db"),
        port,
        &["--reload-debounce", "1h", "--reload-rescan", "0s"],
    )
    .stdout(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let client = http_client();
    let url = format!("http://127.0.0.1:{port}/v1/policies");
    let get = || async {
        client
            .get(&url)
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()
    };
    let first = until_some("the engine up", get).await;
    assert_eq!(first["flows"], json!(["leads"]));
    save_like_an_editor(&dir.path().join("orders.yaml"), &flow_file("orders"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get().await.unwrap()["flows"],
        json!(["leads"]),
        "no reload yet"
    );

    let hup = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let shown = until_some("the new flow after SIGHUP", || async {
        let shown = get().await?;
        (shown["flows"] == json!(["leads", "orders"])).then_some(shown)
    })
    .await;
    assert_eq!(shown["reloads"], 1, "{shown:#}");

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
