//! The console (`/ui/`) over plain HTTP against a real node, a real SQLite
//! file and a real partner on loopback: sessions and their cookie, login by
//! token, read-only viewers, CSRF and cross-site refusals, escaping, payload
//! edits byte for byte, keyset paging, bulk retry of a whole filter, pause
//! and resume. The browser's view of the same is tests/console_browser.rs.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
  orders:
    steps:
      - { name: deliver, channel: partner, retry: once }
"#;

const ADMIN: &str = "admin-secret-0123456789";
const READER: &str = "reader-secret-0123456789";

struct Console {
    node: TestNode,
    /// While false the partner answers 400 with a body holding a script.
    healthy: Arc<AtomicBool>,
    _partner: Partner,
    _policies: tempfile::TempDir,
}

async fn start(with_tokens: bool) -> Console {
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let partner = Partner::start(move |_| {
        if flag.load(Ordering::SeqCst) {
            status(200)
        } else {
            status_body(400, r#"{"error": "<script>alert('partner')</script>"}"#)
        }
    })
    .await;
    let policies = policy_dir(&[("console.yaml", POLICY)]);
    let env = [("PARTNER", partner.url.as_str())];
    let node = if with_tokens {
        let tokens = vec![
            Token {
                name: "ops-admin".into(),
                secret: ADMIN.into(),
                scope: Scope::Admin,
            },
            Token {
                name: "ops-reader".into(),
                secret: READER.into(),
                scope: Scope::Submit,
            },
        ];
        TestNode::start_with_tokens(policies.path(), &env, tokens).await
    } else {
        TestNode::start(policies.path(), &env).await
    };
    Console {
        node,
        healthy,
        _partner: partner,
        _policies: policies,
    }
}

/// A browser in miniature: keeps the session cookie, follows nothing.
struct Visitor {
    client: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    /// The session's CSRF token, from the first form that carries it.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        let rest = &self.body[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Visitor {
    fn new(console: &Console) -> Visitor {
        steadfast::install_tls_provider();
        Visitor {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: console.node.node.url(),
            cookie: None,
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = match &self.cookie {
            Some(cookie) => request.header("cookie", cookie.clone()),
            None => request,
        };
        let response = request.send().await.unwrap();
        let headers = response.headers().clone();
        let set_cookie = headers
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_string());
        if let Some(set) = &set_cookie {
            let pair = set.split(';').next().unwrap().to_string();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
        Page {
            status: response.status().as_u16(),
            location: headers
                .get("location")
                .map(|v| v.to_str().unwrap().to_string()),
            set_cookie,
            headers,
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded::to_string(form).unwrap();
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(request).await
    }

    async fn post_with(&mut self, path: &str, form: &[(&str, &str)], header: (&str, &str)) -> Page {
        let body = serde_urlencoded::to_string(form).unwrap();
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(header.0, header.1)
            .body(body);
        self.send(request).await
    }

    async fn log_in(&mut self, secret: &str) -> Page {
        self.post("/ui/login", &[("token", secret), ("next", "/ui/")])
            .await
    }
}

impl Console {
    async fn api(&self, path: &str) -> Value {
        self.node.get_as(ADMIN, path).await
    }

    async fn submit(&self, flow: &str, payload: Value, key: &str) -> String {
        self.node.submit_as(ADMIN, flow, payload, key).await
    }

    async fn dead(&self, flow: &str, count: usize, key_prefix: &str) -> Vec<String> {
        let mut ids = Vec::new();
        for n in 0..count {
            ids.push(
                self.submit(flow, json!({ "n": n }), &format!("{key_prefix}{n}"))
                    .await,
            );
        }
        let last = ids.last().cloned().unwrap_or_default();
        let job = self.wait_state(&last, "dead").await;
        assert_eq!(job["state"], "dead");
        for id in &ids {
            self.wait_state(id, "dead").await;
        }
        ids
    }

    async fn wait_state(&self, id: &str, state: &str) -> Value {
        let path = format!("/v1/jobs/{id}");
        wait_for(
            Duration::from_secs(30),
            format!("job {id} never {state}"),
            || self.api(&path),
            |job| job["state"] == state,
        )
        .await
    }
}

#[tokio::test]
async fn without_tokens_the_console_opens_a_local_admin_session_with_a_strict_cookie() {
    let console = start(false).await;
    let mut visitor = Visitor::new(&console);
    let page = visitor.get("/ui/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let cookie = page.set_cookie.expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(page.body.contains("leads") && page.body.contains("orders"));
    assert!(page.body.contains(">admin<"), "local sessions may act");
    // The same session on the next page: no new cookie.
    let again = visitor.get("/ui/jobs").await;
    assert_eq!(again.status, 200);
    assert!(again.set_cookie.is_none());
    // The stylesheet is inside the binary.
    let css = visitor.get("/ui/assets/console.css").await;
    assert_eq!(css.status, 200);
    assert!(css.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    console.node.shutdown().await;
}

#[tokio::test]
async fn with_tokens_visitors_log_in_and_a_submit_token_reads_only() {
    let console = start(true).await;
    let mut stranger = Visitor::new(&console);
    let page = stranger.get("/ui/jobs?state=dead").await;
    assert_eq!(page.status, 303);
    assert_eq!(
        page.location.as_deref(),
        Some("/ui/login?next=%2Fui%2Fjobs%3Fstate%3Ddead")
    );
    assert!(page.set_cookie.is_none(), "no session without a token");
    let refused = stranger.log_in("not-a-token").await;
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("Unknown token"), "{}", refused.body);
    // A login form cannot send anyone elsewhere afterwards.
    let elsewhere = stranger
        .post(
            "/ui/login",
            &[("token", READER), ("next", "https://evil.example/")],
        )
        .await;
    assert_eq!(elsewhere.location.as_deref(), Some("/ui/"));

    let mut reader = Visitor::new(&console);
    let page = reader.log_in(READER).await;
    assert_eq!(page.status, 303);
    assert!(page.set_cookie.unwrap().contains("HttpOnly"));
    let overview = reader.get("/ui/").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("read-only"), "{}", overview.body);
    assert!(!overview.body.contains(">Pause<"), "no actions offered");
    let refused = reader
        .post("/ui/flows/leads/pause", &[("csrf", &overview.csrf())])
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("reads only"));
    assert_eq!(console.api("/v1/flows").await["flows"][0]["paused"], false);

    let mut admin = Visitor::new(&console);
    admin.log_in(ADMIN).await;
    let overview = admin.get("/ui/").await;
    assert!(overview.body.contains(">Pause<"));
    let paused = admin
        .post("/ui/flows/leads/pause", &[("csrf", &overview.csrf())])
        .await;
    assert_eq!(paused.status, 303, "{}", paused.body);
    let flows = console.api("/v1/flows").await;
    assert_eq!(flows["flows"][0]["name"], "leads");
    assert_eq!(flows["flows"][0]["paused"], true);
    assert_eq!(flows["flows"][0]["paused_by"], "ops-admin");
    let shown = admin.get(paused.location.as_deref().unwrap()).await;
    assert!(shown.body.contains("Flow leads paused"), "{}", shown.body);
    let resumed = admin
        .post("/ui/flows/leads/resume", &[("csrf", &overview.csrf())])
        .await;
    assert_eq!(resumed.status, 303);
    assert_eq!(console.api("/v1/flows").await["flows"][0]["paused"], false);

    // Logged out, the cookie opens nothing.
    let out = admin
        .post("/ui/logout", &[("csrf", &overview.csrf())])
        .await;
    assert_eq!(out.status, 303);
    assert_eq!(admin.get("/ui/").await.status, 303);
    console.node.shutdown().await;
}

#[tokio::test]
async fn every_change_needs_the_sessions_csrf_token_and_the_consoles_own_origin() {
    let console = start(false).await;
    let mut visitor = Visitor::new(&console);
    let csrf = visitor.get("/ui/").await.csrf();
    let pause = "/ui/flows/orders/pause";
    let no_token = visitor.post(pause, &[]).await;
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    let wrong = visitor.post(pause, &[("csrf", "0000")]).await;
    assert_eq!(wrong.status, 403);
    let from_elsewhere = visitor
        .post_with(pause, &[("csrf", &csrf)], ("origin", "http://evil.example"))
        .await;
    assert_eq!(from_elsewhere.status, 403);
    assert!(from_elsewhere.body.contains("another site"));
    let cross = visitor
        .post_with(pause, &[("csrf", &csrf)], ("sec-fetch-site", "cross-site"))
        .await;
    assert_eq!(cross.status, 403);
    // Another visitor's token is not this session's.
    let mut other = Visitor::new(&console);
    let theirs = other.get("/ui/").await.csrf();
    assert_ne!(theirs, csrf);
    assert_eq!(visitor.post(pause, &[("csrf", &theirs)]).await.status, 403);
    assert_eq!(console.api("/v1/flows").await["flows"][1]["paused"], false);
    // The right one, from the console's own page, works.
    let own_origin = console.node.node.url();
    let done = visitor
        .post_with(pause, &[("csrf", &csrf)], ("origin", &own_origin))
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(console.api("/v1/flows").await["flows"][1]["paused"], true);
    console.node.shutdown().await;
}

#[tokio::test]
async fn payloads_and_partner_answers_render_as_text() {
    let console = start(false).await;
    let id = console
        .submit(
            "leads",
            json!({ "name": "<script>alert('payload')</script>", "q": "\"&'<>" }),
            "<img src=x onerror=alert(1)>",
        )
        .await;
    console.wait_state(&id, "dead").await;
    let mut visitor = Visitor::new(&console);
    for path in [
        format!("/ui/jobs/{id}"),
        "/ui/jobs?state=dead".to_string(),
        "/ui/jobs?key=%3Cimg".to_string(),
    ] {
        let page = visitor.get(&path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(
            !page.body.contains("<script>alert"),
            "{path}: {}",
            page.body
        );
        assert!(!page.body.contains("<img src=x"), "{path}");
    }
    let page = visitor.get(&format!("/ui/jobs/{id}")).await;
    assert!(page
        .body
        .contains("&lt;script&gt;alert('payload')&lt;/script&gt;"));
    assert!(page.body.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(
        page.body.contains("HTTP 400"),
        "the timeline: {}",
        page.body
    );
    assert!(
        page.body
            .contains("&lt;script&gt;alert('partner')&lt;/script&gt;"),
        "the partner's refusal, as text: {}",
        page.body
    );
    console.node.shutdown().await;
}

#[tokio::test]
async fn a_payload_edit_is_checked_then_kept_byte_for_byte_and_audited() {
    let console = start(true).await;
    let id = console.dead("leads", 1, "edit-").await.remove(0);
    let mut admin = Visitor::new(&console);
    admin.log_in(ADMIN).await;
    let page = admin.get(&format!("/ui/jobs/{id}")).await;
    let csrf = page.csrf();
    let path = format!("/ui/jobs/{id}/payload");
    // Not JSON: refused with the text kept for fixing, nothing changed.
    let broken = "{\"n\": 1,\r\n \"name\": \"Zoë\"";
    let refused = admin
        .post(&path, &[("csrf", &csrf), ("payload", broken)])
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains("Not saved"), "{}", refused.body);
    assert!(refused.body.contains("Zoë"), "the text as typed stays");
    let job = console.api(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["payload"], json!({ "n": 0 }));
    // Valid: stored exactly as typed (the browser's CRLF read as LF).
    let typed = "{\"n\":   1,\r\n  \"name\": \"Zoë \\u00e9\",\r\n  \"big\": 12345678901234567890}";
    let saved = admin
        .post(&path, &[("csrf", &csrf), ("payload", typed)])
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let raw = console
        .node
        .client
        .get(console.node.url(&format!("/v1/jobs/{id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let expected = typed.replace("\r\n", "\n");
    let embedded =
        serde_json::to_string(&serde_json::from_str::<Value>(&raw).unwrap()["payload"]).unwrap();
    assert!(
        raw.contains(&expected),
        "the payload's bytes: {raw} (parsed: {embedded})"
    );
    let job = console.api(&format!("/v1/jobs/{id}")).await;
    let edits = job["payload_edits"].as_array().unwrap();
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0]["editor"], "ops-admin");
    let shown = admin.get(saved.location.as_deref().unwrap()).await;
    assert!(shown.body.contains("Payload saved"));
    assert!(shown.body.contains("ops-admin"), "the edit, with who");
    // A large payload goes under the API's own body limit (10 MiB), not a
    // smaller default of the console's.
    let large = format!("{{\"blob\": \"{}\"}}", "x".repeat(3 << 20));
    let saved_large = admin
        .post(&path, &[("csrf", &csrf), ("payload", &large)])
        .await;
    assert_eq!(
        saved_large.status,
        303,
        "{}",
        &saved_large.body[..200.min(saved_large.body.len())]
    );
    let typed = "{\"n\": 0, \"name\": \"Zoë\"}";
    admin
        .post(&path, &[("csrf", &csrf), ("payload", typed)])
        .await;
    // Retry after the fix: the partner is well again.
    console.healthy.store(true, Ordering::SeqCst);
    let retried = admin
        .post(&format!("/ui/jobs/{id}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(retried.status, 303, "{}", retried.body);
    console.wait_state(&id, "succeeded").await;
    // Retrying it again is a conflict, said as such.
    let again = admin
        .post(&format!("/ui/jobs/{id}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(again.status, 409);
    assert!(again.body.contains("only dead jobs"), "{}", again.body);
    console.node.shutdown().await;
}

#[tokio::test]
async fn the_job_list_pages_through_every_match_by_keyset() {
    let console = start(false).await;
    let ids: HashSet<String> = console
        .dead("leads", 120, "page-")
        .await
        .into_iter()
        .collect();
    console.dead("orders", 3, "other-").await;
    let mut visitor = Visitor::new(&console);
    let mut seen = HashSet::new();
    let mut path = "/ui/jobs?flow=leads&state=dead".to_string();
    let mut pages = 0;
    loop {
        let page = visitor.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        pages += 1;
        for id in &ids {
            if page.body.contains(&format!("/ui/jobs/{id}\"")) {
                assert!(seen.insert(id.clone()), "{id} twice");
            }
        }
        let Some(at) = page.body.find("rel=\"next\"") else {
            break;
        };
        let start = page.body[..at].rfind("href=\"").unwrap() + 6;
        let end = start + page.body[start..].find('"').unwrap();
        path = page.body[start..end].replace("&amp;", "&");
    }
    assert_eq!(pages, 3, "50 a page");
    assert_eq!(seen, ids);
    // A filter the form cannot mean is said, not a 500.
    let bad = visitor.get("/ui/jobs?since=yesterday-ish").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("since"), "{}", bad.body);
    console.node.shutdown().await;
}

#[tokio::test]
async fn a_bulk_retry_takes_everything_the_filter_matches_at_the_rate_given() {
    let console = start(false).await;
    console.dead("leads", 70, "bulk-").await;
    let others = console.dead("leads", 2, "keep-").await;
    let mut visitor = Visitor::new(&console);
    let page = visitor.get("/ui/jobs?state=dead&key=bulk-").await;
    assert!(
        page.body.contains("<strong>70</strong> dead jobs match"),
        "{}",
        page.body
    );
    console.healthy.store(true, Ordering::SeqCst);
    let started = visitor
        .post(
            "/ui/retry",
            &[
                ("csrf", &page.csrf()),
                ("key", "bulk-"),
                ("flow", "leads"),
                ("rate", "200/s"),
            ],
        )
        .await;
    assert_eq!(started.status, 303, "{}", started.body);
    let progress_path = started.location.unwrap();
    assert!(progress_path.starts_with("/ui/operations/"));
    let mut last = String::new();
    for _ in 0..100 {
        let progress = visitor.get(&progress_path).await;
        assert!(progress.body.contains("<progress"), "{}", progress.body);
        last = progress.body;
        let refreshing = last.contains("http-equiv=\"refresh\"");
        if last.contains(">done<") && !refreshing {
            break;
        }
        assert!(refreshing, "refreshes until done and due: {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.contains("<strong>70</strong> of 70 retried"), "{last}");
    assert!(last.contains("<strong>70</strong> of 70 due"), "{last}");
    wait_for(
        Duration::from_secs(30),
        "the retried jobs delivered".to_string(),
        || console.api("/v1/jobs?state=succeeded&limit=1000"),
        |page| page["jobs"].as_array().map_or(0, Vec::len) == 70,
    )
    .await;
    for id in others {
        assert_eq!(
            console.api(&format!("/v1/jobs/{id}")).await["state"],
            "dead"
        );
    }
    // The overview counts each flow's deliveries and deaths of the hour.
    let overview = visitor.get("/ui/").await;
    assert!(
        overview
            .body
            .contains(r#"<td class="num delivered">70</td>"#),
        "{}",
        overview.body
    );
    assert!(
        overview.body.contains(r#"<span class="dead">72</span>"#),
        "{}",
        overview.body
    );
    // A bad rate is said on a page, nothing started.
    let bad = visitor
        .post("/ui/retry", &[("csrf", &page.csrf()), ("rate", "fast")])
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains("500/s"), "{}", bad.body);
    console.node.shutdown().await;
}

#[tokio::test]
async fn a_cancel_from_the_console_is_final_and_pages_of_channels_and_policy_answer() {
    let console = start(false).await;
    let id = console.dead("orders", 1, "cancel-").await.remove(0);
    let mut visitor = Visitor::new(&console);
    let page = visitor.get(&format!("/ui/jobs/{id}")).await;
    let cancelled = visitor
        .post(&format!("/ui/jobs/{id}/cancel"), &[("csrf", &page.csrf())])
        .await;
    assert_eq!(cancelled.status, 303);
    assert_eq!(
        console.api(&format!("/v1/jobs/{id}")).await["state"],
        "cancelled"
    );
    let channels = visitor.get("/ui/channels").await;
    assert_eq!(channels.status, 200);
    assert!(channels.body.contains("partner"));
    assert!(channels.body.contains("status:400"), "{}", channels.body);
    let policy = visitor.get("/ui/policy").await;
    assert_eq!(policy.status, 200);
    assert!(policy.body.contains("console.yaml"));
    assert!(policy.body.contains("The last reload succeeded"));
    let missing = visitor
        .get("/ui/jobs/01a00000-0000-7000-8000-000000000000")
        .await;
    assert_eq!(missing.status, 404);
    console.node.shutdown().await;
}

#[tokio::test]
async fn a_failed_reload_shows_on_the_overview_and_the_policy_page_with_its_place() {
    let partner = Partner::start(|_| status(200)).await;
    let policies = policy_dir(&[("console.yaml", POLICY)]);
    let node =
        TestNode::start_watching(policies.path(), &[("PARTNER", partner.url.as_str())]).await;
    std::fs::write(
        policies.path().join("console.yaml"),
        POLICY.replace("retries: 0", "retries: lots"),
    )
    .unwrap();
    wait_for(
        Duration::from_secs(20),
        "the reload refused".to_string(),
        || async {
            node.client
                .get(node.url("/v1/policies"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        },
        |status| status["failed_reloads"] == 1,
    )
    .await;
    let console = Console {
        node,
        healthy: Arc::new(AtomicBool::new(true)),
        _partner: partner,
        _policies: policies,
    };
    let mut visitor = Visitor::new(&console);
    for path in ["/ui/", "/ui/policy"] {
        let page = visitor.get(path).await;
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains("The last reload failed"),
            "{path}: {}",
            page.body
        );
        assert!(
            page.body.contains("console.yaml:3:"),
            "{path}: the place: {}",
            page.body
        );
    }
    console.node.shutdown().await;
}
