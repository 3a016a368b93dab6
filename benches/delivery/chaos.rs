//! `--only chaos`: three `steadfast run` nodes on one PostgreSQL database
//! deliver jobs submitted across them while random nodes are killed with
//! `kill -9` and restarted under their id, again and again. Every job
//! acknowledged must be delivered; what the kills cost is counted: keys the
//! partner received more than once (at least once delivery: an attempt
//! sent but not yet recorded when its node died is sent again).
//!
//! The partner runs in this process and counts each `Idempotency-Key`.
//! Only run when asked (`--only chaos`): it takes minutes.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::json;

use super::{pg, Figure};

/// The chaos phase's size.
pub(super) struct Chaos {
    pub jobs: usize,
    pub kills: usize,
}

const NODES: usize = 3;

/// Short, so that a killed node's jobs come back in seconds.
const NODE_TIMEOUT: &str = "3s";

const POLICY: &str = r#"
templates:
  chaos: { backoff: fixed, initial: 200ms, retries: 50, jitter: none }
channels:
  partner: { http: { url: "${PARTNER}/in", timeout: 5s } }
flows:
  chaos:
    steps: [ { name: deliver, channel: partner, retry: chaos } ]
"#;

/// Counts of each key the partner received.
type Seen = Arc<Mutex<HashMap<String, u32>>>;

/// A partner on loopback that answers 200 after a millisecond (so that
/// kills land on attempts in flight) and counts every key.
async fn start_partner() -> Result<(String, Seen)> {
    let seen: Seen = Arc::default();
    let counts = seen.clone();
    let app = axum::Router::new().route(
        "/in",
        post(move |headers: HeaderMap| {
            let counts = counts.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
                    let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
                    *counts.entry(key.to_string()).or_insert(0) += 1;
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, seen))
}

/// One node: its id, and the process running as it (if any).
struct ChaosNode {
    id: String,
    child: Option<Child>,
    base: String,
}

impl ChaosNode {
    fn start(id: &str, policies: &std::path::Path, db: &str, partner: &str) -> Result<Self> {
        let mut node = ChaosNode {
            id: id.to_string(),
            child: None,
            base: String::new(),
        };
        node.restart(policies, db, partner)?;
        Ok(node)
    }

    fn restart(&mut self, policies: &std::path::Path, db: &str, partner: &str) -> Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .args(["run", "--workers", "32", "--node-timeout", NODE_TIMEOUT])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--policies")
            .arg(policies)
            .arg("--db")
            .arg(db)
            .env("PARTNER", partner)
            .env("STEADFAST_NODE_ID", &self.id)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start steadfast run")?;
        self.child = Some(child);
        self.base = format!("http://127.0.0.1:{port}");
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }
}

impl Drop for ChaosNode {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(super) async fn chaos_phase(size: &Chaos, figures: &mut Vec<Figure>) -> Result<()> {
    let Some(server) = pg::server() else {
        eprintln!("chaos phase left out: no PostgreSQL server binaries");
        return Ok(());
    };
    eprintln!(
        "chaos: {} jobs on {NODES} nodes, {} kill -9 and restarts …",
        size.jobs, size.kills
    );
    let db = server.fresh_database().await;
    let (partner, seen) = start_partner().await?;
    let policies = tempfile::tempdir()?;
    std::fs::write(policies.path().join("chaos.yaml"), POLICY)?;
    let nodes: Vec<ChaosNode> = (0..NODES)
        .map(|n| ChaosNode::start(&format!("chaos-{n}"), policies.path(), &db, &partner))
        .collect::<Result<_>>()?;
    let nodes = Arc::new(Mutex::new(nodes));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let started = Instant::now();

    // Chaos: a random node killed and restarted, `kills` times.
    let chaos = {
        let nodes = nodes.clone();
        let (db, partner) = (db.clone(), partner.clone());
        let policies = policies.path().to_path_buf();
        let kills = size.kills;
        tokio::spawn(async move {
            for _ in 0..kills {
                tokio::time::sleep(Duration::from_millis(300 + fastrand::u64(0..1200))).await;
                let victim = fastrand::usize(0..NODES);
                nodes.lock().unwrap_or_else(|e| e.into_inner())[victim].kill();
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..2000))).await;
                let mut all = nodes.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(error) = all[victim].restart(&policies, &db, &partner) {
                    eprintln!("restarting {}: {error}", all[victim].id);
                }
            }
        })
    };

    // Submissions, 200 a batch, each to a random node, again (same keys)
    // until some node acknowledges it; spread over the time the kills take
    // (1.9 s each on average), so that the kills land while jobs flow.
    let mut acknowledged = 0usize;
    let mut refused = 0usize;
    let batches = size.jobs.div_ceil(200).max(1);
    let pace = Duration::from_millis(1_900 * size.kills as u64 / batches as u64);
    for chunk_start in (0..size.jobs).step_by(200) {
        tokio::time::sleep(pace).await;
        let batch: Vec<serde_json::Value> = (chunk_start..(chunk_start + 200).min(size.jobs))
            .map(|n| json!({ "payload": { "n": n }, "idempotency_key": format!("chaos-{n}") }))
            .collect();
        loop {
            let base = {
                let all = nodes.lock().unwrap_or_else(|e| e.into_inner());
                all[fastrand::usize(0..NODES)].base.clone()
            };
            let answer = client
                .post(format!("{base}/v1/flows/chaos/jobs:batch"))
                .json(&batch)
                .send()
                .await;
            match answer {
                Ok(answer) if answer.status().is_success() => {
                    let body: serde_json::Value = answer.json().await?;
                    let failed = body["failed"].as_u64().unwrap_or(0);
                    if failed == 0 {
                        acknowledged += batch.len();
                        break;
                    }
                    refused += 1;
                }
                _ => refused += 1,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    chaos.await?;

    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db)
        .await?;
    loop {
        let done: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'")
            .fetch_one(&pool)
            .await?;
        if done as usize >= acknowledged {
            break;
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("only {done} of {acknowledged} acknowledged jobs succeeded in 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    pool.close().await;
    let counts = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let lost = (0..size.jobs)
        .filter(|n| !counts.contains_key(&format!("chaos-{n}")))
        .count();
    let duplicated = counts.values().filter(|&&c| c > 1).count();
    let deliveries: u64 = counts.values().map(|&c| u64::from(c)).sum();
    drop(nodes);
    if lost > 0 {
        bail!("{lost} acknowledged jobs never reached the partner");
    }
    figures.push(Figure {
        name: "chaos: acknowledged jobs lost",
        value: lost as f64,
        unit: "jobs",
        note: format!(
            "{acknowledged} acknowledged on {NODES} nodes, {} kill -9 and restarts, all \
             delivered in {:.0} s ({refused} batches refused by a dead node and sent again)",
            size.kills,
            took.as_secs_f64()
        ),
    });
    figures.push(Figure {
        name: "chaos: keys delivered more than once",
        value: duplicated as f64,
        unit: "keys",
        note: format!(
            "{:.2} % of {acknowledged}; {deliveries} requests in all (same Idempotency-Key)",
            duplicated as f64 * 100.0 / acknowledged.max(1) as f64
        ),
    });
    Ok(())
}
