//! The ingest phases: single submissions over HTTP, as webhooks and leads
//! arrive, from this process to a `steadfast run` process.
//!
//! - `ingest`: 8 and 64 connections, each sending one `POST
//!   /v1/flows/ingest/jobs` after the other for a fixed time, on SQLite
//!   `synchronous=FULL` and `NORMAL` and on PostgreSQL (when its binaries
//!   are there). The jobs are due in a day, so that nothing is delivered
//!   meanwhile: submissions alone are measured. Reported: submissions per
//!   second and the p50 / p99 of each request, and FULL / NORMAL in the
//!   same run.
//! - `mixed`: the same 64 connections while the engine delivers a backlog
//!   at full speed: both rates.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;

const INGEST_POLICY: &str = r#"
channels:
  partner: { http: { url: "${PARTNER}/deliver", timeout: 10s } }
flows:
  ingest:
    steps: [ { name: deliver, channel: partner, retry: standard } ]
  bench:
    steps: [ { name: deliver, channel: partner, retry: standard } ]
"#;

/// What one load run measured.
struct Load {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `steadfast run` on `db`, answering on a free port.
pub(super) async fn spawn_engine(
    policy: &str,
    db: &str,
    partner: &str,
) -> Result<(EngineProcess, tempfile::TempDir)> {
    let policies = tempfile::tempdir()?;
    std::fs::write(policies.path().join("bench.yaml"), policy)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["run", "--workers", &WORKERS.to_string()])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--policies")
        .arg(policies.path())
        .arg("--db")
        .arg(db)
        .env("PARTNER", partner)
        // Several nodes on this one host: each its own id.
        .env("STEADFAST_NODE_ID", format!("bench-{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("start steadfast run")?;
    let engine = EngineProcess {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{}/healthz", engine.base))
        .send()
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("the engine on {db} never became healthy");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((engine, policies))
}

/// `connections` clients, each on its own connection, submitting one job
/// after another to `base` for `warmup` (not counted) then `measure`.
async fn load(base: &str, connections: usize, warmup: Duration, measure: Duration) -> Result<Load> {
    let run_at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24))?
        .to_string();
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..connections {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let url = format!("{base}/v1/flows/ingest/jobs");
        let (counting, stop, failures, run_at) = (
            counting.clone(),
            stop.clone(),
            failures.clone(),
            run_at.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies_us: Vec<u64> = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = format!(
                    r#"{{"payload": {{"task": {task}, "n": {n}, "event": "lead.created"}}, "run_at": "{run_at}"}}"#
                );
                let sent = Instant::now();
                let answer = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let ok = matches!(&answer, Ok(r) if r.status().as_u16() == 201);
                if let Ok(response) = answer {
                    let _ = response.bytes().await;
                }
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                if counting.load(Ordering::Relaxed) {
                    latencies_us.push(sent.elapsed().as_micros() as u64);
                }
            }
            latencies_us
        }));
    }
    tokio::time::sleep(warmup).await;
    counting.store(true, Ordering::Relaxed);
    tokio::time::sleep(measure).await;
    counting.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<f64> = Vec::new();
    for task in tasks {
        latencies.extend(task.await?.into_iter().map(|us| us as f64 / 1000.0));
    }
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} submissions were not answered 201");
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Load {
        per_second: latencies.len() as f64 / measure.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    })
}

fn push_load(figures: &mut Vec<Figure>, name: &'static str, load: &Load, note: String) {
    figures.push(Figure {
        name,
        value: load.per_second,
        unit: "submissions/s",
        note: format!(
            "p50 {:.1} ms, p99 {:.1} ms{}",
            load.p50_ms,
            load.p99_ms,
            if note.is_empty() {
                String::new()
            } else {
                format!("; {note}")
            }
        ),
    });
}

/// Single submissions at 8 and 64 connections on each step log.
pub(super) async fn ingest_phase(
    sizes: &Sizes,
    work: &Path,
    partner: &str,
    figures: &mut Vec<Figure>,
) -> Result<()> {
    let (warmup, measure) = if sizes.throughput_jobs < 20_000 {
        (Duration::from_secs(1), Duration::from_secs(3))
    } else {
        (Duration::from_secs(2), Duration::from_secs(10))
    };
    let mut at_64 = [f64::NAN, f64::NAN];
    let names: [[&'static str; 2]; 2] = [
        [
            "ingest, SQLite FULL, 8 connections",
            "ingest, SQLite FULL, 64 connections",
        ],
        [
            "ingest, SQLite NORMAL, 8 connections",
            "ingest, SQLite NORMAL, 64 connections",
        ],
    ];
    for (mode, synchronous) in ["full", "normal"].into_iter().enumerate() {
        for (index, connections) in [8, 64].into_iter().enumerate() {
            eprintln!("ingest: SQLite {synchronous}, {connections} connections …");
            let db = work.join(format!("ingest-{synchronous}-{connections}.db"));
            let url = format!("sqlite://{}?synchronous={synchronous}", db.display());
            let (engine, _policies) = spawn_engine(INGEST_POLICY, &url, partner).await?;
            let measured = load(&engine.base, connections, warmup, measure).await?;
            if connections == 64 {
                at_64[mode] = measured.per_second;
            }
            let note = if mode == 1 && connections == 64 {
                format!("FULL / NORMAL at 64: {:.2}", at_64[0] / at_64[1])
            } else {
                String::new()
            };
            push_load(figures, names[mode][index], &measured, note);
        }
    }
    match pg::server() {
        Some(server) => {
            for (connections, name) in [
                (8, "ingest, PostgreSQL, 8 connections"),
                (64, "ingest, PostgreSQL, 64 connections"),
            ] {
                eprintln!("ingest: PostgreSQL, {connections} connections …");
                let url = server.fresh_database().await;
                let (engine, _policies) = spawn_engine(INGEST_POLICY, &url, partner).await?;
                let measured = load(&engine.base, connections, warmup, measure).await?;
                push_load(figures, name, &measured, "synchronous_commit on".into());
            }
        }
        None => eprintln!("ingest on PostgreSQL left out: no server binaries"),
    }
    Ok(())
}

/// Single submissions while a backlog is delivered at full speed.
pub(super) async fn mixed_phase(
    sizes: &Sizes,
    work: &Path,
    partner: &str,
    figures: &mut Vec<Figure>,
) -> Result<()> {
    let backlog = sizes.throughput_jobs * 4;
    eprintln!("mixed: {backlog} deliveries and single submissions at 64 connections …");
    let db = work.join("mixed.db");
    let url = format!("sqlite://{}", db.display());
    let (engine, _policies) = spawn_engine(INGEST_POLICY, &url, partner).await?;
    let client = reqwest::Client::new();
    // The backlog goes in first, in batches, due now.
    for chunk_start in (0..backlog).step_by(1000) {
        let mut body = String::new();
        for n in chunk_start..(chunk_start + 1000).min(backlog) {
            // Odd numbers: the partner answers 200 at once.
            body.push_str(&json!({ "payload": { "n": 2 * n + 1 } }).to_string());
            body.push('\n');
        }
        let response = client
            .post(format!("{}/v1/flows/bench/jobs:batch", engine.base))
            .body(body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("batch submit failed: {}", response.text().await?);
        }
    }
    let succeeded = || succeeded_count(&client, &engine.base);
    let measure = Duration::from_secs(if sizes.throughput_jobs < 20_000 { 3 } else { 5 });
    let before = succeeded().await?;
    let measured = load(&engine.base, 64, Duration::ZERO, measure).await?;
    let after = succeeded().await?;
    let delivered = (after - before) / measure.as_secs_f64();
    push_load(
        figures,
        "mixed: single submissions, 64 connections",
        &measured,
        "SQLite FULL, while the backlog is delivered".into(),
    );
    figures.push(Figure {
        name: "mixed: deliveries meanwhile",
        value: delivered,
        unit: "jobs/s",
        note: format!("a backlog of {backlog} due at once"),
    });
    drop(engine);
    Ok(())
}

/// The engine's count of succeeded jobs, from its `/metrics`.
async fn succeeded_count(client: &reqwest::Client, base: &str) -> Result<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("steadfast_jobs{state=\"succeeded\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0))
}
