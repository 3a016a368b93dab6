//! The console end to end in a real browser: Debian's headless Chromium,
//! driven through chromedriver (WebDriver), against a real node on a real
//! SQLite file and a flaky partner on loopback. An operator logs in, filters
//! the dead letters, opens a job, edits its payload, retries it,
//! bulk-retries a filter and watches it finish, pauses and resumes a flow.
//!
//! Without `chromedriver` on the PATH the test says so and passes, except
//! under `CI=true` (`.ci/run` installs `chromium` and `chromium-driver`).
//! With `STEADFAST_SCREENSHOTS=DIR` it saves the main pages there as PNG
//! (the README's screenshots come from `docs/screenshots`).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use steadfast::api::{Scope, Token};

const POLICY: &str = r#"
templates:
  once: { retries: 0 }
channels:
  crm: { http: { url: "${PARTNER}/leads" }, circuit_breaker: { failures: 50, cooldown: 30s } }
  erp: { http: { url: "${PARTNER}/orders" } }
flows:
  leads:
    steps:
      - { name: deliver, channel: crm, retry: once }
  orders:
    steps:
      - { name: deliver, channel: erp, retry: once }
"#;

const ADMIN: &str = "browser-admin-0123456789";

/// chromedriver on a free port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

async fn driver() -> Option<Driver> {
    let Some(chromedriver) = find_on_path("chromedriver") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromedriver is not installed: .ci/run installs chromium and chromium-driver"
        );
        eprintln!("skipped: no chromedriver on the PATH (apt install chromium chromium-driver)");
        return None;
    };
    let port = free_port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { child, url };
    let client = http_client();
    for _ in 0..100 {
        if client
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .is_ok()
        {
            return Some(driver);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on {}", driver.url);
}

async fn browser(driver: &Driver) -> Client {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(find_on_path)
        .expect("a Chromium next to chromedriver");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            // --no-sandbox: CI runs as root, where Chromium's sandbox cannot.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

struct Screens(Option<std::path::PathBuf>);

impl Screens {
    async fn take(&self, browser: &Client, name: &str) {
        if let Some(dir) = &self.0 {
            std::fs::create_dir_all(dir).unwrap();
            let png = browser.screenshot().await.unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
        .click()
        .await
        .unwrap();
}

async fn type_into(browser: &Client, css: &str, text: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
        .send_keys(text)
        .await
        .unwrap();
}

/// Waits until the page's source contains `text`, reloading it meanwhile
/// when `reload`.
async fn wait_for_text(browser: &Client, text: &str, reload: bool) -> String {
    let mut source = String::new();
    for _ in 0..150 {
        source = browser.source().await.unwrap();
        if source.contains(text) {
            return source;
        }
        if reload {
            browser.refresh().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("never saw `{text}` in {source}");
}

async fn api(node: &TestNode, path: &str) -> Value {
    node.get_as(ADMIN, path).await
}

async fn submit(node: &TestNode, flow: &str, payload: Value, key: &str) -> String {
    node.submit_as(ADMIN, flow, payload, key).await
}

async fn count_dead(node: &TestNode, flow: &str) -> usize {
    api(node, &format!("/v1/jobs?state=dead&flow={flow}&limit=1000")).await["jobs"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test]
async fn an_operator_fixes_and_replays_failed_deliveries_in_the_browser() {
    let Some(driver) = driver().await else {
        return;
    };
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    // Flaky: while unwell, every other answer is a 422 (dead at once) or a
    // 503 (dead too: no retries in this policy).
    let partner = Partner::start(move |request| {
        if flag.load(Ordering::SeqCst) && request.body["bad"] != json!(true) {
            status(200)
        } else if request.body["n"].as_u64().unwrap_or(0) % 2 == 0 {
            status_body(422, r#"{"error": "field `email` is <b>required</b>"}"#)
        } else {
            status_body(503, "busy")
        }
    })
    .await;
    let policies = policy_dir(&[("console.yaml", POLICY)]);
    let tokens = vec![Token {
        name: "night-shift".into(),
        secret: ADMIN.into(),
        scope: Scope::Admin,
    }];
    let node = TestNode::start_with_tokens(
        policies.path(),
        &[("PARTNER", partner.url.as_str())],
        tokens,
    )
    .await;
    let mut leads = Vec::new();
    for n in 0..24 {
        let payload =
            json!({ "n": n, "email": null, "name": format!("<script>alert({n})</script>") });
        leads.push(submit(&node, "leads", payload, &format!("lead-{n}")).await);
    }
    for n in 0..6 {
        submit(&node, "orders", json!({ "n": n }), &format!("order-{n}")).await;
    }
    wait_for(
        Duration::from_secs(30),
        "every job dead".to_string(),
        || async { count_dead(&node, "leads").await + count_dead(&node, "orders").await },
        |dead| *dead == 30,
    )
    .await;

    let screens = Screens(std::env::var_os("STEADFAST_SCREENSHOTS").map(Into::into));
    let browser = browser(&driver).await;
    let base = node.node.url();

    // Log in: the console sends a visitor without a session to the login
    // page, then back where they were going.
    browser
        .goto(&format!("{base}/ui/jobs?state=dead"))
        .await
        .unwrap();
    assert!(browser.current_url().await.unwrap().path() == "/ui/login");
    screens.take(&browser, "login").await;
    type_into(&browser, "#token", ADMIN).await;
    click(&browser, "form button[type=submit]").await;
    let source = wait_for_text(&browser, "night-shift", false).await;
    let url = browser.current_url().await.unwrap();
    assert_eq!(url.path(), "/ui/jobs");
    assert_eq!(url.query(), Some("state=dead"));
    assert!(source.contains("order-"), "every flow's dead letters");

    // Filter the dead letters: flow leads, the 422s.
    browser
        .find(Locator::Css("select[name=flow]"))
        .await
        .unwrap()
        .select_by_value("leads")
        .await
        .unwrap();
    type_into(&browser, "input[name=status]", "422").await;
    click(&browser, "form.filters button[type=submit]").await;
    let source = wait_for_text(&browser, "12</strong> dead jobs match", false).await;
    assert!(!source.contains("order-"), "filtered by flow");
    let rows = browser
        .find_all(Locator::Css("table.jobs tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 12, "the even leads answered 422");
    // No script from a payload made it into the page as a script.
    let scripts = browser
        .execute("return document.querySelectorAll('script').length", vec![])
        .await
        .unwrap();
    assert_eq!(scripts, json!(0));
    screens.take(&browser, "dead-letters").await;

    // Open a job: its timeline shows the partner's answer, as text.
    click(&browser, "table.jobs tbody tr td a").await;
    let source = wait_for_text(&browser, "HTTP 422", false).await;
    assert!(source.contains("&lt;script&gt;alert("), "payload as text");
    assert!(
        source.contains("field `email` is &lt;b&gt;required&lt;/b&gt;"),
        "what the partner said, as text"
    );
    let job_id = browser
        .current_url()
        .await
        .unwrap()
        .path()
        .trim_start_matches("/ui/jobs/")
        .to_string();
    assert!(leads.contains(&job_id));
    screens.take(&browser, "job").await;

    // Edit its payload: a broken edit is refused and kept for fixing.
    let textarea = browser
        .find(Locator::Css("textarea[name=payload]"))
        .await
        .unwrap();
    textarea.clear().await.unwrap();
    textarea.send_keys("{\"n\": 0, \"email\": ").await.unwrap();
    click(&browser, "form.payload button[type=submit]").await;
    wait_for_text(&browser, "Not saved", false).await;
    type_into(&browser, "textarea[name=payload]", "\"ops@example.com\"}").await;
    click(&browser, "form.payload button[type=submit]").await;
    wait_for_text(&browser, "Payload saved", false).await;
    let job = api(&node, &format!("/v1/jobs/{job_id}")).await;
    assert_eq!(
        job["payload"],
        json!({ "n": 0, "email": "ops@example.com" })
    );
    assert_eq!(job["payload_edits"][0]["editor"], "night-shift");

    // The partner is fixed: retry this one job.
    healthy.store(true, Ordering::SeqCst);
    click(&browser, "div.actions form button[type=submit]").await;
    wait_for_text(&browser, "Retried", false).await;
    wait_for_text(&browser, "state succeeded", true).await;

    // Bulk-retry everything the filter matches (all pages), paced, and
    // watch the progress page finish.
    browser
        .goto(&format!("{base}/ui/jobs?state=dead&flow=leads"))
        .await
        .unwrap();
    wait_for_text(&browser, "23</strong> dead jobs match", false).await;
    let rate = browser
        .find(Locator::Css("input[name=rate]"))
        .await
        .unwrap();
    rate.clear().await.unwrap();
    rate.send_keys("50/s").await.unwrap();
    click(&browser, "section.bulk button[type=submit]").await;
    // The progress page refreshes itself until the operation is done.
    let source = wait_for_text(&browser, "<strong>23</strong> of 23 due", false).await;
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/ui/operations/"));
    assert!(
        source.contains("<strong>23</strong> of 23 retried"),
        "{source}"
    );
    screens.take(&browser, "bulk-retry").await;
    wait_for(
        Duration::from_secs(30),
        "the bulk-retried leads delivered".to_string(),
        || count_dead(&node, "leads"),
        |dead| *dead == 0,
    )
    .await;
    assert_eq!(
        count_dead(&node, "orders").await,
        6,
        "another flow untouched"
    );

    // Pause a flow from the overview, then resume it.
    browser.goto(&format!("{base}/ui/")).await.unwrap();
    click(&browser, "form[action='/ui/flows/orders/pause'] button").await;
    wait_for_text(&browser, "Flow orders paused", false).await;
    let flows = api(&node, "/v1/flows").await;
    let orders = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "orders")
        .unwrap()
        .clone();
    assert_eq!(orders["paused"], true);
    assert_eq!(orders["paused_by"], "night-shift");
    screens.take(&browser, "overview").await;
    click(&browser, "form[action='/ui/flows/orders/resume'] button").await;
    wait_for_text(&browser, "Flow orders resumed", false).await;
    let flows = api(&node, "/v1/flows").await;
    assert!(flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["paused"] == false));

    browser.goto(&format!("{base}/ui/channels")).await.unwrap();
    wait_for_text(&browser, "status:422", false).await;
    screens.take(&browser, "channels").await;

    browser.close().await.unwrap();
    node.shutdown().await;
}
