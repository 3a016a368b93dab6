//! Hot reload end to end: a real node watching a real policy directory,
//! delivering to a real partner on loopback, while the files change the
//! ways editors, deploys, git-sync and Kubernetes change them.
//!
//! The nodes here watch with a 50 ms debounce and no periodic rescan, so
//! every reload seen is a file event's. Waits poll with deadlines.

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use steadfast::clock::SystemClock;
use steadfast::compile::policy_version;
use steadfast::policy::{Format, SourceFile};
use steadfast::reload::{LivePolicy, ReloadOutcome, Reloader};

/// Long enough for a loaded machine; every wait returns as soon as it can.
const WITHIN: Duration = Duration::from_secs(15);

/// A flow `name` delivering to `${PARTNER}/{path}`, retried every 100 ms.
fn flow_file(name: &str, path: &str) -> String {
    format!(
        r#"
templates:
  quick-{name}: {{ retries: 50, backoff: fixed, initial: 100ms, jitter: none }}
channels:
  to-{name}: {{ http: {{ url: "${{PARTNER}}/{path}" }} }}
flows:
  {name}:
    steps:
      - {{ name: deliver, channel: to-{name}, retry: quick-{name} }}
"#
    )
}

/// Saves the way editors do: write a hidden temporary file beside the
/// target, then rename it over the target.
fn editor_save(path: &Path, text: &str) {
    let name = path.file_name().unwrap().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.swp"));
    fs::write(&temp, text).unwrap();
    fs::rename(&temp, path).unwrap();
}

async fn policies(node: &TestNode) -> Value {
    node.get_json("/v1/policies").await
}

/// The version of a directory holding exactly `files` (name, text): what
/// `/v1/policies` shows once those files are in force. Waiting for it, not
/// for any new version, keeps a half-written file seen on the way (a plain
/// `fs::write` is not atomic) from ending a wait early.
fn version_of(files: &[(&str, &str)]) -> String {
    let sources: Vec<SourceFile> = files
        .iter()
        .map(|(name, text)| SourceFile::new(*name, *text, Format::Yaml))
        .collect();
    policy_version(&sources).to_string()
}

/// Waits until `/v1/policies` shows `version` in force.
async fn in_force(node: &TestNode, version: &str) -> Value {
    eventually(
        &format!("policy version {version} in force"),
        WITHIN,
        || async {
            let shown = policies(node).await;
            (shown["version"] == version).then_some(shown)
        },
    )
    .await
}

fn flows(shown: &Value) -> Vec<String> {
    shown["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

async fn delivered_to(node: &TestNode, flow: &str, payload: Value) -> Value {
    let id = node.submit_ok(flow, payload, None).await;
    let job = node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    job
}

fn ok_partner() -> impl Fn(&Received) -> axum::response::Response + Send + Sync + 'static {
    |_| status(200)
}

#[tokio::test]
async fn an_editor_save_by_temp_and_rename_is_in_force_for_the_next_job() {
    let partner = Partner::start(ok_partner()).await;
    let dir = policy_dir(&[("leads.yaml", &flow_file("leads", "v1"))]);
    let node = TestNode::start_watching(dir.path(), &[("PARTNER", &partner.url)]).await;
    let before = policies(&node).await;
    delivered_to(&node, "leads", json!({"n": 1})).await;

    let v2 = flow_file("leads", "v2");
    editor_save(&dir.path().join("leads.yaml"), &v2);
    let after = in_force(&node, &version_of(&[("leads.yaml", &v2)])).await;
    assert_ne!(after["version"], before["version"]);
    assert_eq!(after["reloads"]["ok"], 1, "{after:#}");
    assert_eq!(after["last_error"], json!([]));
    assert!(after["last_reload_at"].is_string(), "{after:#}");

    let job = delivered_to(&node, "leads", json!({"n": 2})).await;
    assert_eq!(job["attempts"][0]["policy_version"], after["version"]);
    assert_eq!(partner.requests_to("/v1").len(), 1);
    assert_eq!(partner.requests_to("/v2").len(), 1);
    node.shutdown().await;
}

#[tokio::test]
async fn a_file_added_brings_a_flow_that_accepts_jobs_at_once() {
    let partner = Partner::start(ok_partner()).await;
    let dir = policy_dir(&[("a.yaml", &flow_file("a", "a"))]);
    let node = TestNode::start_watching(dir.path(), &[("PARTNER", &partner.url)]).await;
    let (status, _) = node.submit("b", json!({"payload": {}})).await;
    assert_eq!(status, 404);

    fs::write(dir.path().join("b.yaml"), flow_file("b", "b")).unwrap();
    let after = in_force(
        &node,
        &version_of(&[
            ("a.yaml", &flow_file("a", "a")),
            ("b.yaml", &flow_file("b", "b")),
        ]),
    )
    .await;
    assert_eq!(flows(&after), ["a", "b"]);
    let files: Vec<&str> = after["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 2);
    assert!(files[1].ends_with("b.yaml"), "{files:?}");

    delivered_to(&node, "b", json!({"n": 1})).await;
    assert_eq!(partner.requests_to("/b").len(), 1);
    node.shutdown().await;
}

#[tokio::test]
async fn a_job_whose_flow_file_is_removed_is_suspended_and_resumes_when_it_returns() {
    let healthy = Arc::new(AtomicBool::new(false));
    let partner = {
        let healthy = healthy.clone();
        Partner::start(move |_| {
            if healthy.load(Ordering::SeqCst) {
                status(200)
            } else {
                status(503)
            }
        })
        .await
    };
    let dir = policy_dir(&[
        ("a.yaml", &flow_file("a", "a")),
        ("b.yaml", &flow_file("b", "b")),
    ]);
    let node = TestNode::start_watching(dir.path(), &[("PARTNER", &partner.url)]).await;
    let id = node.submit_ok("b", json!({"lead": 7}), None).await;
    eventually("a first attempt that is retried", WITHIN, || async {
        (node.job(&id).await["attempts_total"].as_u64() >= Some(1)).then_some(())
    })
    .await;

    let b = fs::read_to_string(dir.path().join("b.yaml")).unwrap();
    fs::remove_file(dir.path().join("b.yaml")).unwrap();
    let after = in_force(&node, &version_of(&[("a.yaml", &flow_file("a", "a"))])).await;
    assert_eq!(flows(&after), ["a"]);
    let (status, _) = node.submit("b", json!({"payload": {}})).await;
    assert_eq!(status, 404, "a removed flow takes no new jobs");

    // Its next retry finds no flow: suspended, kept, with the reason.
    let job = eventually("the job suspended as flow_removed", WITHIN, || async {
        let job = node.job(&id).await;
        (job["state"] == "suspended").then_some(job)
    })
    .await;
    assert_eq!(job["reason"], "flow_removed", "{job:#}");
    let attempts_then = job["attempts_total"].clone();

    // The flow comes back (and the partner recovers): the job resumes at
    // once, not at its next recheck, and is delivered.
    healthy.store(true, Ordering::SeqCst);
    fs::write(dir.path().join("b.yaml"), b).unwrap();
    let job = node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["reason"], Value::Null);
    assert!(job["attempts_total"].as_u64() > attempts_then.as_u64());
    node.shutdown().await;
}

#[tokio::test]
async fn a_step_renamed_away_suspends_the_job_until_it_is_back() {
    let healthy = Arc::new(AtomicBool::new(false));
    let partner = {
        let healthy = healthy.clone();
        Partner::start(move |_| {
            if healthy.load(Ordering::SeqCst) {
                status(200)
            } else {
                status(503)
            }
        })
        .await
    };
    let dir = policy_dir(&[("a.yaml", &flow_file("a", "a"))]);
    let file = dir.path().join("a.yaml");
    let node = TestNode::start_watching(dir.path(), &[("PARTNER", &partner.url)]).await;
    let id = node.submit_ok("a", json!({"lead": 8}), None).await;
    eventually("a first attempt", WITHIN, || async {
        (node.job(&id).await["attempts_total"].as_u64() >= Some(1)).then_some(())
    })
    .await;

    let original = fs::read_to_string(&file).unwrap();
    editor_save(&file, &original.replace("name: deliver", "name: send"));
    let job = eventually("the job suspended as flow_removed", WITHIN, || async {
        let job = node.job(&id).await;
        (job["state"] == "suspended").then_some(job)
    })
    .await;
    assert_eq!(job["reason"], "flow_removed");
    assert_eq!(job["step"], "deliver");

    healthy.store(true, Ordering::SeqCst);
    editor_save(&file, &original);
    let job = node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    node.shutdown().await;
}

#[tokio::test]
async fn a_replaced_directory_is_reloaded_and_watched_from_then_on() {
    let partner = Partner::start(ok_partner()).await;
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("policies");
    fs::create_dir(&live).unwrap();
    fs::write(live.join("p.yaml"), flow_file("p", "one")).unwrap();
    let node = TestNode::start_watching(&live, &[("PARTNER", &partner.url)]).await;

    // A deploy: build the new directory beside it, then swap it in.
    let next = root.path().join("policies.next");
    fs::create_dir(&next).unwrap();
    fs::write(next.join("p.yaml"), flow_file("p", "two")).unwrap();
    fs::rename(&live, root.path().join("policies.old")).unwrap();
    fs::rename(&next, &live).unwrap();
    in_force(&node, &version_of(&[("p.yaml", &flow_file("p", "two"))])).await;
    delivered_to(&node, "p", json!({"n": 1})).await;
    assert_eq!(partner.requests_to("/two").len(), 1);

    // The new directory is watched: an edit inside it is seen.
    editor_save(&live.join("p.yaml"), &flow_file("p", "three"));
    let third = in_force(&node, &version_of(&[("p.yaml", &flow_file("p", "three"))])).await;

    // Removed: an error, and the last good set stays.
    fs::remove_dir_all(&live).unwrap();
    let gone = eventually("the removed directory reported", WITHIN, || async {
        let shown = policies(&node).await;
        (shown["last_error"] != json!([])).then_some(shown)
    })
    .await;
    assert_eq!(gone["version"], third["version"]);
    assert!(
        gone["last_error"][0]
            .as_str()
            .unwrap()
            .contains("no such file or directory"),
        "{gone:#}"
    );
    // Made again: only the parent's watch can see it appear.
    fs::create_dir(&live).unwrap();
    fs::write(live.join("p.yaml"), flow_file("p", "four")).unwrap();
    let fourth = in_force(&node, &version_of(&[("p.yaml", &flow_file("p", "four"))])).await;
    assert_eq!(fourth["last_error"], json!([]), "{fourth:#}");
    delivered_to(&node, "p", json!({"n": 2})).await;
    assert_eq!(partner.requests_to("/four").len(), 1);
    node.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_git_sync_symlink_swap_is_reloaded() {
    use std::os::unix::fs::symlink;
    let partner = Partner::start(ok_partner()).await;
    let root = tempfile::tempdir().unwrap();
    for (rev, path) in [("rev1", "one"), ("rev2", "two")] {
        fs::create_dir(root.path().join(rev)).unwrap();
        fs::write(root.path().join(rev).join("p.yaml"), flow_file("p", path)).unwrap();
    }
    // git-sync's --link: `current` points at the checked-out revision and
    // is replaced atomically by renaming a new link over it.
    let current = root.path().join("current");
    symlink(root.path().join("rev1"), &current).unwrap();
    let swap_to = |rev: &str| {
        let temp = root.path().join("current.tmp");
        symlink(root.path().join(rev), &temp).unwrap();
        fs::rename(&temp, &current).unwrap();
    };
    let node = TestNode::start_watching(&current, &[("PARTNER", &partner.url)]).await;
    let first = policies(&node).await;

    swap_to("rev2");
    in_force(&node, &version_of(&[("p.yaml", &flow_file("p", "two"))])).await;
    delivered_to(&node, "p", json!({"n": 1})).await;
    assert_eq!(partner.requests_to("/two").len(), 1);

    // The new target is watched.
    editor_save(
        &root.path().join("rev2").join("p.yaml"),
        &flow_file("p", "three"),
    );
    in_force(&node, &version_of(&[("p.yaml", &flow_file("p", "three"))])).await;

    // And back: the old revision is in force again.
    fs::remove_dir_all(root.path().join("rev1")).unwrap();
    fs::create_dir(root.path().join("rev1")).unwrap();
    fs::write(root.path().join("rev1/p.yaml"), flow_file("p", "one")).unwrap();
    swap_to("rev1");
    in_force(&node, first["version"].as_str().unwrap()).await;
    delivered_to(&node, "p", json!({"n": 2})).await;
    assert_eq!(partner.requests_to("/one").len(), 1);
    node.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_configmap_data_symlink_swap_is_reloaded() {
    use std::os::unix::fs::symlink;
    let partner = Partner::start(ok_partner()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Kubernetes' layout: files link through `..data`, which links to a
    // timestamped directory; an update writes a new one and renames a new
    // `..data` link over the old.
    fs::create_dir(d.join("..2026_01_01_v1")).unwrap();
    fs::write(d.join("..2026_01_01_v1/p.yaml"), flow_file("p", "one")).unwrap();
    symlink("..2026_01_01_v1", d.join("..data")).unwrap();
    symlink("..data/p.yaml", d.join("p.yaml")).unwrap();
    let node = TestNode::start_watching(d, &[("PARTNER", &partner.url)]).await;
    let first = policies(&node).await;
    assert_eq!(first["files"].as_array().unwrap().len(), 1, "{first:#}");

    fs::create_dir(d.join("..2026_01_02_v2")).unwrap();
    fs::write(d.join("..2026_01_02_v2/p.yaml"), flow_file("p", "two")).unwrap();
    symlink("..2026_01_02_v2", d.join("..data_tmp")).unwrap();
    fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    fs::remove_dir_all(d.join("..2026_01_01_v1")).unwrap();
    let second = in_force(&node, &version_of(&[("p.yaml", &flow_file("p", "two"))])).await;
    assert_ne!(second["version"], first["version"]);
    delivered_to(&node, "p", json!({"n": 1})).await;
    assert_eq!(partner.requests_to("/two").len(), 1);
    assert!(partner.requests_to("/one").is_empty());
    node.shutdown().await;
}

#[tokio::test]
async fn a_bad_edit_keeps_deliveries_running_and_a_good_edit_recovers() {
    let partner = Partner::start(ok_partner()).await;
    let dir = policy_dir(&[("leads.yaml", &flow_file("leads", "v1"))]);
    let file = dir.path().join("leads.yaml");
    let node = TestNode::start_watching(dir.path(), &[("PARTNER", &partner.url)]).await;
    let good = policies(&node).await;

    // A step that names a channel nobody defined, on line 9 of the file.
    let bad = flow_file("leads", "v1").replace("channel: to-leads", "channel: to-nowhere");
    editor_save(&file, &bad);
    let shown = eventually("the reload error", WITHIN, || async {
        let shown = policies(&node).await;
        (shown["last_error"] != json!([])).then_some(shown)
    })
    .await;
    assert_eq!(shown["version"], good["version"], "the last good set stays");
    assert_eq!(shown["loaded_at"], good["loaded_at"]);
    assert!(shown["reloads"]["error"].as_u64() >= Some(1), "{shown:#}");
    assert!(shown["last_error_at"].is_string());
    let error = shown["last_error"][0].as_str().unwrap();
    let expected = format!("{}:9:", file.display());
    assert!(error.starts_with(&expected), "{error}");
    assert!(error.contains("to-nowhere"), "{error}");

    // Deliveries go on under the last good set, and say so.
    let job = delivered_to(&node, "leads", json!({"n": 1})).await;
    assert_eq!(job["attempts"][0]["policy_version"], good["version"]);
    assert_eq!(partner.requests_to("/v1").len(), 1);

    let metrics = node.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"steadfast_policy_reloads_total{result="error"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("steadfast_policy_loaded_timestamp_seconds"));

    // A good edit recovers: new version, error cleared.
    let v2 = flow_file("leads", "v2");
    editor_save(&file, &v2);
    let fixed = in_force(&node, &version_of(&[("leads.yaml", &v2)])).await;
    assert_eq!(fixed["last_error"], json!([]), "{fixed:#}");
    assert_eq!(fixed["last_error_at"], Value::Null);
    assert_eq!(fixed["reloads"]["ok"], 1);
    assert_ne!(fixed["loaded_at"], good["loaded_at"]);
    delivered_to(&node, "leads", json!({"n": 2})).await;
    assert_eq!(partner.requests_to("/v2").len(), 1);
    node.shutdown().await;
}

#[tokio::test]
async fn a_job_waiting_for_its_retry_follows_the_new_policy() {
    // The old URL fails; the fix points the channel at one that works.
    let partner = Partner::start(|r| {
        if r.path == "/broken" {
            status(503)
        } else {
            status(200)
        }
    })
    .await;
    let dir = policy_dir(&[("leads.yaml", &flow_file("leads", "broken"))]);
    let node = TestNode::start_watching(dir.path(), &[("PARTNER", &partner.url)]).await;
    let old = policies(&node).await;
    let id = node
        .submit_ok("leads", json!({"lead": 9}), Some("k-9"))
        .await;
    eventually("a failed first attempt", WITHIN, || async {
        (!partner.requests_to("/broken").is_empty()).then_some(())
    })
    .await;

    let fixed = flow_file("leads", "fixed");
    editor_save(&dir.path().join("leads.yaml"), &fixed);
    let new = in_force(&node, &version_of(&[("leads.yaml", &fixed)])).await;
    let job = node.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    let last = attempts.last().unwrap();
    assert_eq!(last["status"], 200);
    assert_eq!(last["policy_version"], new["version"]);
    assert_eq!(attempts[0]["policy_version"], old["version"]);
    // The same job, the same key, whichever policy sent it.
    let fixed = partner.requests_to("/fixed");
    assert_eq!(fixed.len(), 1);
    assert_eq!(fixed[0].idempotency_key, "k-9");
    node.shutdown().await;
}

/// The reloader without a watcher: a rescan reloads only what it has not
/// seen, a forced reload always reports, an undone bad edit clears the
/// error.
#[tokio::test]
async fn rescans_report_each_change_once_and_forced_reloads_always() {
    let dir = policy_dir(&[("a.yaml", &flow_file("a", "a"))]);
    let env = env_mode(&[("PARTNER", "http://127.0.0.1:9")]);
    let compiled = steadfast::compile::load_policy(&[dir.path().to_path_buf()], &env)
        .policy
        .unwrap();
    let v1 = compiled.version.clone();
    let live = Arc::new(LivePolicy::new(compiled, jiff::Timestamp::now()));
    let reloader = Reloader::new(
        vec![dir.path().to_path_buf()],
        env,
        live.clone(),
        Arc::new(SystemClock),
    );
    assert_eq!(reloader.rescan().await, None);
    assert!(matches!(
        reloader.reload_now().await,
        ReloadOutcome::Unchanged { .. }
    ));

    fs::write(dir.path().join("b.yaml"), flow_file("b", "b")).unwrap();
    let Some(ReloadOutcome::Swapped { from, to }) = reloader.rescan().await else {
        panic!("a new file is a new version");
    };
    assert_eq!(from, v1);
    assert_eq!(live.current().version, to);
    assert_eq!(reloader.rescan().await, None);

    let good_b = fs::read_to_string(dir.path().join("b.yaml")).unwrap();
    fs::write(dir.path().join("b.yaml"), "flows: [not, a, map]\n").unwrap();
    let Some(ReloadOutcome::Rejected { errors, .. }) = reloader.rescan().await else {
        panic!("a broken file is rejected");
    };
    assert!(!errors.is_empty());
    assert_eq!(live.current().version, to, "the last good set stays");
    assert_eq!(reloader.rescan().await, None, "reported once");
    assert!(matches!(
        reloader.reload_now().await,
        ReloadOutcome::Rejected { .. }
    ));
    assert_eq!(live.status().reloads.error, 2);

    fs::write(dir.path().join("b.yaml"), &good_b).unwrap();
    assert!(matches!(
        reloader.rescan().await,
        Some(ReloadOutcome::Unchanged { .. })
    ));
    let status = live.status();
    assert!(status.last_error.is_empty());
    assert_eq!(status.reloads.ok, 1);
    assert_eq!(status.reloads.unchanged, 2);

    // An emptied directory is a mistake or a moment, never a set to run.
    let a = fs::read_to_string(dir.path().join("a.yaml")).unwrap();
    fs::remove_file(dir.path().join("a.yaml")).unwrap();
    fs::remove_file(dir.path().join("b.yaml")).unwrap();
    let Some(ReloadOutcome::Rejected { errors, .. }) = reloader.rescan().await else {
        panic!("an empty directory is rejected");
    };
    assert!(errors[0].contains("no policy files"), "{errors:?}");
    assert_eq!(live.current().version, to);
    fs::write(dir.path().join("a.yaml"), a).unwrap();
    fs::write(dir.path().join("b.yaml"), good_b).unwrap();
    assert!(matches!(
        reloader.reload_now().await,
        ReloadOutcome::Unchanged { .. }
    ));
    assert!(live.status().last_error.is_empty());
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
fn run_refuses_to_start_on_invalid_policies_with_no_last_good_set() {
    let bad = flow_file("leads", "v1").replace("channel: to-leads", "channel: to-nowhere");
    let dir = policy_dir(&[("leads.yaml", &bad)]);
    let db = tempfile::tempdir().unwrap();
    let output = spawn_run(dir.path(), &db.path().join("s.db"), free_port(), &[])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("{}:9:", dir.path().join("leads.yaml").display());
    assert!(stderr.contains(&expected), "{stderr}");
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_a_running_engine() {
    let dir = policy_dir(&[("leads.yaml", &flow_file("leads", "v1"))]);
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
    let base = format!("http://127.0.0.1:{port}");
    let first: Value = eventually("the engine up", WITHIN, || async {
        let response = client
            .get(format!("{base}/v1/policies"))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    })
    .await;
    let v2 = flow_file("leads", "v2");
    editor_save(&dir.path().join("leads.yaml"), &v2);
    let expected = version_of(&[("leads.yaml", &v2)]);
    assert_ne!(first["version"], expected);

    let hup = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let shown: Value = eventually("the new version after SIGHUP", WITHIN, || async {
        let shown: Value = client
            .get(format!("{base}/v1/policies"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (shown["version"] == expected).then_some(shown)
    })
    .await;
    assert_eq!(shown["reloads"]["ok"], 1, "{shown:#}");

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
