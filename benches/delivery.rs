//! The delivery benchmark: one run, one table, the same figures as JSON.
//!
//! ```sh
//! cargo bench --bench delivery              # the full run (2 to 4 minutes on 2 cores)
//! cargo bench --bench delivery -- --quick   # a smaller run to try changes
//! cargo bench --bench delivery -- --only full,backlog   # some phases only
//! cargo bench --bench delivery -- --only chaos          # 3 nodes, 30 kill -9 (minutes)
//! ```
//!
//! Phases: `bare`, `full`, `latency`, `normal`, `reload`, `backlog`, `pg`,
//! `ingest` and `mixed` (single submissions over HTTP, see `ingest.rs`),
//! `prune`, `mapping`, `console` (pages over 1,000,000 jobs, `console.rs`);
//! `chaos` and `pacing` run only when named.
//! The engine / bare ratio needs `bare` in the same run. The throughput
//! phases run in rounds (`--rounds N`, 3 by default, 1 with `--quick`):
//! bare, FULL, NORMAL, then again; each figure is the median over the
//! rounds, and each ratio the median of the rounds' own ratios, so that a
//! drift of the machine's speed between two phases does not make one.
//!
//! The partner is this same binary started again as a separate process
//! (`STEADFAST_BENCH_ROLE=partner`), so it never shares the engine's
//! runtime. It answers at once; every tenth job (`n % 10 == 0`) gets one 503
//! before its 200. See BENCHMARKS.md for what each figure means.
//!
//! The PostgreSQL phase starts a private server as the tests do
//! (tests/common/postgres.rs) and runs one, two and three `steadfast run`
//! processes on one database; without server binaries it is left out.

#[path = "delivery/chaos.rs"]
mod chaos;
#[path = "delivery/console.rs"]
mod console;
#[path = "delivery/ingest.rs"]
mod ingest;
#[path = "../tests/common/postgres.rs"]
mod pg;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use sqlx::Row;
use steadfast::clock::SystemClock;
use steadfast::compile::load_policy;
use steadfast::engine::{EngineConfig, SchedulerConfig};
use steadfast::node::{Node, NodeConfig, ReloadSource};
use steadfast::policy::{EnvMode, MapEnv};
use steadfast::reload::WatchConfig;
use steadfast::store::{JobState, NewJob, Retention};

const ROLE: &str = "STEADFAST_BENCH_ROLE";
const WORKERS: usize = 64;

const POLICY: &str = r#"
templates:
  bench:
    backoff: fixed
    retries: 3
    initial: 10ms
    jitter: none
channels:
  partner: { http: { url: "${PARTNER}/deliver", timeout: 10s } }
flows:
  bench:
    steps: [ { name: deliver, channel: partner, retry: bench } ]
  backlog:
    steps: [ { name: deliver, channel: partner, retry: bench } ]
  probes:
    steps: [ { name: deliver, channel: partner, retry: bench } ]
  # `bench` with a `when` and a `body` mapping (the `mapping` phase).
  mapped:
    steps:
      - name: deliver
        channel: partner
        retry: bench
        when: "payload.n >= 0"
        body:
          n: "{{ payload.n }}"
          email: "{{ payload.email }}"
          note: "lead {{ job.key }} for {{ payload.email }}"
"#;

struct Sizes {
    throughput_jobs: usize,
    latency_jobs: usize,
    backlog_jobs: usize,
    /// Rounds of the throughput phases (bare, FULL, NORMAL).
    rounds: usize,
    /// The phases to run (`--only a,b`); all when empty (`chaos` only
    /// when named).
    only: Vec<String>,
    quick: bool,
}

impl Sizes {
    fn runs(&self, phase: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == phase)
    }

    /// Whether a phase that runs only when named (`--only chaos`) runs.
    fn asked(&self, phase: &str) -> bool {
        self.only.iter().any(|p| p == phase)
    }
}

fn main() -> Result<()> {
    if std::env::var(ROLE).as_deref() == Ok("partner") {
        return partner::main();
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|arg| arg == "--quick");
    let only: Vec<String> = args
        .iter()
        .position(|arg| arg == "--only")
        .and_then(|at| args.get(at + 1))
        .map(|list| list.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    const PHASES: [&str; 14] = [
        "bare", "full", "latency", "normal", "reload", "backlog", "pg", "ingest", "mixed", "prune",
        "mapping", "console", "chaos", "pacing",
    ];
    if let Some(unknown) = only.iter().find(|p| !PHASES.contains(&p.as_str())) {
        bail!(
            "--only: unknown phase `{unknown}`; the phases are {}",
            PHASES.join(", ")
        );
    }
    let rounds = match args.iter().position(|arg| arg == "--rounds") {
        Some(at) => args
            .get(at + 1)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .context("--rounds takes a number of rounds, 1 or more")?,
        None if quick => 1,
        None => 3,
    };
    let sizes = if quick {
        Sizes {
            throughput_jobs: 5_000,
            latency_jobs: 500,
            backlog_jobs: 50_000,
            rounds,
            only,
            quick,
        }
    } else {
        Sizes {
            throughput_jobs: 50_000,
            latency_jobs: 2_000,
            backlog_jobs: 1_000_000,
            rounds,
            only,
            quick,
        }
    };
    steadfast::install_tls_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(sizes))
}

/// The cost of a `when` and a `body` mapping per attempt: the same jobs
/// (same payloads, the same partner answers) through a plain flow and
/// through one whose step evaluates both, alternated round after round in
/// one engine, so each ratio compares runs seconds apart.
async fn mapping_phase(
    sizes: &Sizes,
    work: &Path,
    partner: &str,
    figures: &mut Vec<Figure>,
) -> Result<()> {
    let (scope_ns, prepare_ns) = prepare_cost()?;
    figures.push(Figure {
        name: "one attempt's scope (payload parsed, job, responses)",
        value: scope_ns,
        unit: "ns",
        note: "the step of the `mapped` flow, 100,000 times, on one core".into(),
    });
    figures.push(Figure {
        name: "one attempt's `when` + `body` (scope included)",
        value: prepare_ns,
        unit: "ns",
        note: "what the executor adds to an attempt of a step that reads the job".into(),
    });
    // Each run gets an engine and a step log of its own, and the flow the
    // same name (`bench`): in one engine, flows compared side by side
    // differed by 5 % when identical, from their names alone. The order
    // alternates round by round.
    let mapped_policy = POLICY
        .replace(
            "  bench:\n    steps: [ { name: deliver, channel: partner, retry: bench } ]\n",
            "",
        )
        .replace("  mapped:\n", "  bench:\n");
    let payload = |n: usize| json!({ "n": n, "email": format!("lead-{n}@example.com") });
    let (mut plain, mut mapped) = (Vec::new(), Vec::new());
    for round in 1..=sizes.rounds {
        let mapped_first = round % 2 == 0;
        eprintln!(
            "mapping: round {round}/{}, {} jobs plain and mapped ({} first) …",
            sizes.rounds,
            sizes.throughput_jobs,
            if mapped_first { "mapped" } else { "plain" }
        );
        let order = if mapped_first {
            [true, false]
        } else {
            [false, true]
        };
        for is_mapped in order {
            let label = if is_mapped { "mapped" } else { "plain" };
            let engine = Engine::start_on(
                &work.join(format!("mapping-{label}-{round}")),
                "full",
                partner,
                Retention::default(),
                if is_mapped { &mapped_policy } else { POLICY },
            )
            .await?;
            let rate = engine
                .throughput_of("bench", label, sizes.throughput_jobs, payload)
                .await?;
            engine.stop().await;
            if is_mapped {
                mapped.push(rate);
            } else {
                plain.push(rate);
            }
        }
    }
    let ratios: Vec<f64> = mapped.iter().zip(&plain).map(|(m, p)| m / p).collect();
    figures.push(Figure {
        name: "engine, plain flow (mapping phase)",
        value: median(&plain),
        unit: "jobs/s",
        note: per_round(&plain, 0),
    });
    figures.push(Figure {
        name: "engine, `when` + `body` mapping",
        value: median(&mapped),
        unit: "jobs/s",
        note: format!(
            "{:.2} × the plain flow (target ≥ 0.90); ratios {}",
            median(&ratios),
            per_round(&ratios, 2)
        ),
    });
    Ok(())
}

/// What the `mapped` flow's expressions cost per attempt, measured alone:
/// nanoseconds for the scope, and for the scope with `when` and `body`.
fn prepare_cost() -> Result<(f64, f64)> {
    use steadfast::engine::prepare::{prepare, Prepared};
    use steadfast::expr::{JobFacts, Responses, Scope};
    let policies = tempfile::tempdir()?;
    std::fs::write(policies.path().join("bench.yaml"), POLICY)?;
    let env = EnvMode::from_source(MapEnv::new().with("PARTNER", "http://127.0.0.1:9"));
    let compilation = load_policy(&[policies.path().to_path_buf()], &env);
    let policy = compilation
        .policy
        .context("the bench policy does not compile")?;
    let step = &policy.flow("mapped").context("the mapped flow")?.steps[0];
    let responses = Responses::default();
    let facts = JobFacts {
        id: "019a0000-0000-7000-8000-000000000000",
        key: "mapped-1-12345",
        flow: "mapped",
        priority: 0,
        created_at: jiff::Timestamp::now(),
    };
    let payload = r#"{"n":12345,"email":"lead-12345@example.com"}"#;
    const RUNS: u32 = 100_000;
    let started = Instant::now();
    for _ in 0..RUNS {
        std::hint::black_box(Scope::new(payload, facts, &responses));
    }
    let scope_ns = started.elapsed().as_nanos() as f64 / f64::from(RUNS);
    let started = Instant::now();
    for _ in 0..RUNS {
        let scope = Scope::new(payload, facts, &responses);
        let prepared = prepare(step, 0, true, &scope);
        if !matches!(prepared, Prepared::Send { body: Some(_), .. }) {
            bail!("the mapped step did not build a body: {prepared:?}");
        }
        std::hint::black_box(prepared);
    }
    let prepare_ns = started.elapsed().as_nanos() as f64 / f64::from(RUNS);
    Ok((scope_ns, prepare_ns))
}

/// One figure of the table.
struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    note: String,
}

async fn run(sizes: Sizes) -> Result<()> {
    let partner = PartnerProcess::start()?;
    let work = tempfile::tempdir()?;
    let mut figures = Vec::new();

    // Bare, FULL and NORMAL in turn, round after round: each ratio is taken
    // between phases minutes apart at most. NaN when `bare` is left out:
    // the ratios print as NaN.
    let mut bare_rates = Vec::new();
    let mut engine_rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=sizes.rounds {
        if !["bare", "full", "normal"].iter().any(|p| sizes.runs(p)) {
            break;
        }
        let bare = if sizes.runs("bare") {
            eprintln!(
                "round {round}/{}: bare reqwest loop, {} jobs …",
                sizes.rounds, sizes.throughput_jobs
            );
            bare_loop(&partner.url, sizes.throughput_jobs).await?
        } else {
            f64::NAN
        };
        bare_rates.push(bare);
        for (rates, label) in engine_rates.iter_mut().zip(["full", "normal"]) {
            if !sizes.runs(label) {
                continue;
            }
            eprintln!(
                "round {round}/{}: engine, synchronous={label}, {} jobs …",
                sizes.rounds, sizes.throughput_jobs
            );
            let dir = work.path().join(format!("{label}-{round}"));
            let engine = Engine::start(&dir, label, &partner.url).await?;
            rates.push(
                engine
                    .throughput(&format!("tp-{label}"), sizes.throughput_jobs)
                    .await?,
            );
            engine.stop().await;
        }
    }
    let bare = median(&bare_rates);
    if sizes.runs("bare") {
        figures.push(Figure {
            name: "bare reqwest loop",
            value: bare,
            unit: "jobs/s",
            note: format!(
                "{WORKERS} concurrent, 503 retried at once; {}",
                per_round(&bare_rates, 0)
            ),
        });
    }
    for (rates, name) in engine_rates.iter().zip([
        "engine, SQLite synchronous=FULL",
        "engine, SQLite synchronous=NORMAL",
    ]) {
        if rates.is_empty() {
            continue;
        }
        let ratios: Vec<f64> = rates.iter().zip(&bare_rates).map(|(e, b)| e / b).collect();
        figures.push(Figure {
            name,
            value: median(rates),
            unit: "jobs/s",
            note: format!(
                "{:.2} × bare; {}; ratios {}",
                median(&ratios),
                per_round(rates, 0),
                per_round(&ratios, 2)
            ),
        });
    }

    if sizes.runs("mapping") {
        mapping_phase(&sizes, work.path(), &partner.url, &mut figures).await?;
    }
    if sizes.asked("pacing") {
        pacing_phase(&sizes, work.path(), &partner.url, &mut figures).await?;
    }

    if sizes.runs("latency") {
        eprintln!("latency: {} jobs at 200/s …", sizes.latency_jobs);
        let engine = Engine::start(&work.path().join("latency"), "full", &partner.url).await?;
        let (p50, p99) = engine.latency(sizes.latency_jobs).await?;
        engine.stop().await;
        figures.push(Figure {
            name: "submit → first attempt p50",
            value: p50,
            unit: "ms",
            note: "200 jobs/s, one at a time through the API".into(),
        });
        figures.push(Figure {
            name: "submit → first attempt p99",
            value: p99,
            unit: "ms",
            note: String::new(),
        });
    }

    if sizes.runs("reload") {
        eprintln!("reload: file write → policy in force …");
        let reload = reload_latency(&work.path().join("reload"), &partner.url).await?;
        figures.push(Figure {
            name: "reload: write → in force (median of 5)",
            value: reload,
            unit: "ms",
            note: "default 250 ms debounce included".into(),
        });
    }

    if sizes.runs("backlog") {
        backlog_phase(&sizes, work.path(), &partner.url, &mut figures).await?;
    }

    if sizes.runs("pg") {
        postgres_phase(&sizes, &partner.url, bare, &mut figures).await?;
    }

    if sizes.runs("ingest") {
        ingest::ingest_phase(&sizes, work.path(), &partner.url, &mut figures).await?;
    }

    if sizes.runs("mixed") {
        ingest::mixed_phase(&sizes, work.path(), &partner.url, &mut figures).await?;
    }

    if sizes.runs("prune") {
        prune_phase(&sizes, work.path(), &partner.url, &mut figures).await?;
    }

    if sizes.runs("console") {
        console::console_phase(&sizes, work.path(), &partner.url, &mut figures).await?;
    }

    if sizes.asked("chaos") {
        let size = chaos::Chaos {
            jobs: if sizes.quick { 1_000 } else { 10_000 },
            kills: if sizes.quick { 5 } else { 30 },
        };
        chaos::chaos_phase(&size, &mut figures).await?;
    }

    print_table(&figures);
    write_json(&figures)?;
    drop(partner);
    Ok(())
}

/// Deliveries while the pruner deletes old jobs: the same step log (old
/// succeeded jobs with an attempt each, last changed 60 days ago) copied
/// twice; the throughput of one with retention off, then of the other while
/// its pruner works through them (default retention, 30 days).
async fn prune_phase(
    sizes: &Sizes,
    work: &Path,
    partner: &str,
    figures: &mut Vec<Figure>,
) -> Result<()> {
    let old: i64 = if sizes.quick { 100_000 } else { 1_000_000 };
    eprintln!("prune: a step log with {old} old succeeded jobs …");
    let seed = work.join("prune-seed");
    let engine = Engine::start(&seed, "full", partner).await?;
    let pool = engine.pool.clone();
    engine.stop().await;
    let sixty_days_ago = jiff::Timestamp::now().as_millisecond() - 60 * 86_400_000;
    let mut tx = pool.begin().await?;
    for n in 0..old {
        let id = format!("old-{n:08}");
        sqlx::query(
            "INSERT INTO jobs (id, flow, idempotency_key, payload, state, step_index, step, \
                 policy_version, created_at, updated_at, attempts_total) \
             VALUES (?1, 'archive', ?1, '{}', 'succeeded', 0, 'deliver', 'v', ?2, ?2, 1)",
        )
        .bind(&id)
        .bind(sixty_days_ago)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO attempts (job_id, step, channel, attempt, started_at, finished_at, \
                 status, outcome, rule, decision, policy_version) \
             VALUES (?1, 'deliver', 'partner', 1, ?2, ?2, 200, 'success', 'builtin[0]', \
                 'succeeded', 'v')",
        )
        .bind(&id)
        .bind(sixty_days_ago)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    pool.close().await;
    let mut rates = Vec::new();
    for (label, retention) in [
        (
            "kept",
            Retention {
                succeeded: None,
                cancelled: None,
            },
        ),
        ("pruned", Retention::default()),
    ] {
        let dir = work.join(format!("prune-{label}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(seed.join("steadfast.db"), dir.join("steadfast.db"))?;
        eprintln!(
            "prune: {} jobs delivered, old jobs {label} …",
            sizes.throughput_jobs
        );
        let engine = Engine::start_with(&dir, "full", partner, retention).await?;
        let rate = engine
            .throughput(&format!("prune-{label}"), sizes.throughput_jobs)
            .await?;
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE id LIKE 'old-%'")
            .fetch_one(&engine.pool)
            .await?;
        engine.stop().await;
        eprintln!("prune: {label}: {rate:.0} jobs/s, {left} old jobs left");
        rates.push((rate, left));
    }
    let (kept, pruned) = (rates[0], rates[1]);
    figures.push(Figure {
        name: "deliveries while pruning old jobs",
        value: pruned.0,
        unit: "jobs/s",
        note: format!(
            "{:.2} × the same log with retention off ({:.0} jobs/s); {} of {old} old jobs \
             pruned meanwhile",
            pruned.0 / kept.0,
            kept.0,
            old - pruned.1
        ),
    });
    Ok(())
}

async fn backlog_phase(
    sizes: &Sizes,
    work: &Path,
    partner: &str,
    figures: &mut Vec<Figure>,
) -> Result<()> {
    eprintln!("backlog: {} waiting retries …", sizes.backlog_jobs);
    let engine = Engine::start(&work.join("backlog"), "full", partner).await?;
    let backlog = engine.backlog(sizes.backlog_jobs).await?;
    engine.stop().await;
    figures.push(Figure {
        name: "backlog: engine RSS while waiting",
        value: backlog.rss_waiting_mb,
        unit: "MB",
        note: format!("{} jobs due in an hour", sizes.backlog_jobs),
    });
    figures.push(Figure {
        name: "backlog: engine peak RSS",
        value: backlog.peak_rss_mb,
        unit: "MB",
        note: "inserting and draining included".into(),
    });
    figures.push(Figure {
        name: "backlog: drain rate",
        value: backlog.drain_rate,
        unit: "jobs/s",
        note: "all made due at once".into(),
    });
    figures.push(Figure {
        name: "backlog: probe due → start p50",
        value: backlog.probe_lag_p50,
        unit: "ms",
        note: format!("{} probe jobs in another flow", backlog.probes),
    });
    figures.push(Figure {
        name: "backlog: probe due → start p99",
        value: backlog.probe_lag_p99,
        unit: "ms",
        note: String::new(),
    });
    Ok(())
}

/// Engine health pacing: a backlog of retries made due at once in one
/// flow while fresh jobs of the same flow keep arriving (200 a second);
/// fresh jobs' submit-to-first-attempt latency with the retries' share of
/// claims cut in yellow and red, and without. Runs only when named.
async fn pacing_phase(
    sizes: &Sizes,
    work: &Path,
    partner: &str,
    figures: &mut Vec<Figure>,
) -> Result<()> {
    let retries = if sizes.quick { 50_000 } else { 500_000 };
    for cut in [true, false] {
        let label = if cut { "on" } else { "off" };
        eprintln!("pacing {label}: {retries} retries due at once, fresh jobs arriving …");
        let engine = Engine::start_on_with(
            &work.join(format!("pacing-{label}")),
            "full",
            partner,
            Retention::default(),
            POLICY,
            steadfast::pacing::health::Thresholds {
                cut_retries: cut,
                ..Default::default()
            },
        )
        .await?;
        let storm = engine.retry_storm(retries).await?;
        engine.stop().await;
        let name = |on: &'static str, off: &'static str| if cut { on } else { off };
        figures.push(Figure {
            name: name(
                "pacing on: fresh job submit → first attempt p99",
                "pacing off: fresh job submit → first attempt p99",
            ),
            value: storm.fresh_p99,
            unit: "ms",
            note: format!(
                "p50 {:.0} ms; {} fresh jobs while {retries} retries drained in {:.1} s",
                storm.fresh_p50, storm.fresh, storm.drain_seconds
            ),
        });
    }
    Ok(())
}

async fn postgres_phase(
    sizes: &Sizes,
    partner: &str,
    bare: f64,
    figures: &mut Vec<Figure>,
) -> Result<()> {
    // A server of its own with `synchronous_commit` on, as in production
    // (the tests' shared server has it off for speed); fsync stays off as
    // on every test server, so the figure is the engine's and the server's
    // work, not this machine's virtual disk.
    match pg::start_private() {
        Some(server) => {
            let server = &server;
            for nodes in 1..=3 {
                eprintln!(
                    "PostgreSQL, {nodes} node(s): {} jobs …",
                    sizes.throughput_jobs
                );
                let rate = postgres_nodes(server, partner, nodes, sizes.throughput_jobs).await?;
                figures.push(Figure {
                    name: [
                        "engine, PostgreSQL, 1 node",
                        "engine, PostgreSQL, 2 nodes",
                        "engine, PostgreSQL, 3 nodes",
                    ][nodes - 1],
                    value: rate,
                    unit: "jobs/s",
                    note: format!(
                        "{:.2} × bare; separate processes, {WORKERS} workers each",
                        rate / bare
                    ),
                });
            }
        }
        None => eprintln!("PostgreSQL phase left out: no server binaries"),
    }
    Ok(())
}

/// The middle value (the mean of the two middle ones for an even count);
/// NaN for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// "per round: a / b / c", for a figure's note.
fn per_round(values: &[f64], decimals: usize) -> String {
    let list: Vec<String> = values.iter().map(|v| format!("{v:.decimals$}")).collect();
    format!("per round: {}", list.join(" / "))
}

fn print_table(figures: &[Figure]) {
    let width = figures.iter().map(|f| f.name.len()).max().unwrap_or(0);
    println!();
    println!("{:width$}  {:>12}  {:6}  note", "figure", "value", "unit");
    for figure in figures {
        println!(
            "{:width$}  {:>12.1}  {:6}  {}",
            figure.name, figure.value, figure.unit, figure.note
        );
    }
}

fn write_json(figures: &[Figure]) -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("delivery.json");
    let body: Vec<_> = figures
        .iter()
        .map(|f| json!({ "figure": f.name, "value": f.value, "unit": f.unit, "note": f.note }))
        .collect();
    std::fs::write(&path, serde_json::to_vec_pretty(&body)?)?;
    println!("\nwritten to {}", path.display());
    Ok(())
}

/// The same work as the engine's, as a plain loop: `WORKERS` tasks, each
/// posting the next job and retrying a 503 at once.
async fn bare_loop(partner: &str, jobs: usize) -> Result<f64> {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{partner}/deliver");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let (client, next, url) = (client.clone(), next.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= jobs {
                    return Ok::<(), reqwest::Error>(());
                }
                loop {
                    let response = client
                        .post(&url)
                        .header("Idempotency-Key", format!("bare-{n}"))
                        .json(&json!({ "n": n }))
                        .send()
                        .await?;
                    if response.status().is_success() {
                        break;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

struct Engine {
    node: Node,
    /// A connection of the bench's own, to read figures from the step log.
    pool: sqlx::SqlitePool,
    client: reqwest::Client,
    _policies: tempfile::TempDir,
}

/// What a retry storm showed (see [`pacing_phase`]).
struct Storm {
    fresh_p50: f64,
    fresh_p99: f64,
    fresh: usize,
    drain_seconds: f64,
}

struct Backlog {
    rss_waiting_mb: f64,
    peak_rss_mb: f64,
    drain_rate: f64,
    probe_lag_p50: f64,
    probe_lag_p99: f64,
    probes: usize,
}

impl Engine {
    async fn start(dir: &Path, synchronous: &str, partner: &str) -> Result<Engine> {
        Self::start_with(dir, synchronous, partner, Retention::default()).await
    }

    async fn start_with(
        dir: &Path,
        synchronous: &str,
        partner: &str,
        retention: Retention,
    ) -> Result<Engine> {
        Self::start_on(dir, synchronous, partner, retention, POLICY).await
    }

    async fn start_on(
        dir: &Path,
        synchronous: &str,
        partner: &str,
        retention: Retention,
        policy_text: &str,
    ) -> Result<Engine> {
        Self::start_on_with(
            dir,
            synchronous,
            partner,
            retention,
            policy_text,
            Default::default(),
        )
        .await
    }

    async fn start_on_with(
        dir: &Path,
        synchronous: &str,
        partner: &str,
        retention: Retention,
        policy_text: &str,
        health: steadfast::pacing::health::Thresholds,
    ) -> Result<Engine> {
        std::fs::create_dir_all(dir)?;
        let policies = tempfile::tempdir()?;
        std::fs::write(policies.path().join("bench.yaml"), policy_text)?;
        let env = EnvMode::from_source(MapEnv::overlaying_process().with("PARTNER", partner));
        let compilation = load_policy(&[policies.path().to_path_buf()], &env);
        let Some(policy) = compilation.policy else {
            bail!(
                "the bench policy does not compile: {:?}",
                compilation.diagnostics
            );
        };
        let db = dir.join("steadfast.db");
        let node = Node::start(NodeConfig {
            policy,
            db_url: format!("sqlite://{}?synchronous={synchronous}", db.display()),
            listen: "127.0.0.1:0".into(),
            engine: EngineConfig {
                scheduler: SchedulerConfig {
                    workers: WORKERS,
                    ..SchedulerConfig::default()
                },
                retention,
                health,
                ..EngineConfig::default()
            },
            clock: Arc::new(SystemClock),
            tokens: Vec::new(),
            alerts: Default::default(),
            reload: None,
            serve: Default::default(),
        })
        .await?;
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&format!("sqlite://{}", db.display()))
            .await?;
        Ok(Engine {
            node,
            pool,
            client: reqwest::Client::new(),
            _policies: policies,
        })
    }

    async fn stop(self) {
        self.node.shutdown().await;
    }

    /// Submits `jobs` in batches of 1,000 through the API while the engine
    /// delivers; jobs per second from the first batch to the last success.
    async fn throughput(&self, prefix: &str, jobs: usize) -> Result<f64> {
        self.throughput_of("bench", prefix, jobs, |n| json!({ "n": n }))
            .await
    }

    /// [`Engine::throughput`] into `flow`, with `payload(n)` for job `n`.
    async fn throughput_of(
        &self,
        flow: &str,
        prefix: &str,
        jobs: usize,
        payload: impl Fn(usize) -> serde_json::Value,
    ) -> Result<f64> {
        let before = self.count(flow, Some(JobState::Succeeded)).await?;
        let started = Instant::now();
        for chunk_start in (0..jobs).step_by(1000) {
            let mut body = String::new();
            for n in chunk_start..(chunk_start + 1000).min(jobs) {
                body.push_str(
                    &json!({ "payload": payload(n), "idempotency_key": format!("{prefix}-{n}") })
                        .to_string(),
                );
                body.push('\n');
            }
            let response = self
                .client
                .post(format!("{}/v1/flows/{flow}/jobs:batch", self.node.url()))
                .body(body)
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("batch submit failed: {}", response.text().await?);
            }
        }
        self.wait_succeeded(flow, before + jobs).await?;
        Ok(jobs as f64 / started.elapsed().as_secs_f64())
    }

    /// One job every 5 ms through the API; the time from its creation to
    /// its first attempt, from the step log.
    async fn latency(&self, jobs: usize) -> Result<(f64, f64)> {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        for n in 0..jobs {
            tick.tick().await;
            // Odd numbers: no 503 on the way.
            let body =
                json!({ "payload": { "n": 2 * n + 1 }, "idempotency_key": format!("lat-{n}") });
            let response = self
                .client
                .post(format!("{}/v1/flows/bench/jobs", self.node.url()))
                .json(&body)
                .send()
                .await?;
            if response.status().as_u16() != 201 {
                bail!("submit failed: {}", response.text().await?);
            }
        }
        let total = self.count("bench", None).await?;
        self.wait_succeeded("bench", total).await?;
        let lags = self
            .query_lags(
                "SELECT a.started_at - j.created_at FROM attempts a JOIN jobs j ON j.id = a.job_id \
                 WHERE j.idempotency_key LIKE 'lat-%' AND a.attempt = 1",
            )
            .await?;
        Ok((percentile(&lags, 0.50), percentile(&lags, 0.99)))
    }

    async fn backlog(&self, jobs: usize) -> Result<Backlog> {
        let loaded = Instant::now();
        self.insert_waiting("backlog", "backlog", jobs, |n| n)
            .await?;
        eprintln!(
            "  inserted in {:.1}s; holding them …",
            loaded.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_waiting_mb = memory("VmRSS")?;

        // Make them all due, then keep probe jobs coming in another flow.
        let now_ms = jiff::Timestamp::now().as_millisecond();
        sqlx::query("UPDATE jobs SET next_at = ?1 WHERE flow = 'backlog' AND state = 'pending'")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        let drain_started = Instant::now();
        let mut probes = 0;
        loop {
            if !self.unfinished("backlog").await? {
                break;
            }
            for _ in 0..5 {
                let due = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(300);
                let body = json!({
                    "payload": { "n": 10 * probes + 1, "due_ms": due.as_millisecond() },
                    "run_at": due.to_string(),
                });
                self.client
                    .post(format!("{}/v1/flows/probes/jobs", self.node.url()))
                    .json(&body)
                    .send()
                    .await?
                    .error_for_status()?;
                probes += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
        let drain_rate = jobs as f64 / drain_started.elapsed().as_secs_f64();
        self.wait_succeeded("probes", probes).await?;
        let lags = self
            .query_lags(
                "SELECT a.started_at - json_extract(j.payload, '$.due_ms') FROM attempts a \
                 JOIN jobs j ON j.id = a.job_id WHERE j.flow = 'probes' AND a.attempt = 1",
            )
            .await?;
        Ok(Backlog {
            rss_waiting_mb,
            peak_rss_mb: memory("VmHWM")?,
            drain_rate,
            probe_lag_p50: percentile(&lags, 0.50),
            probe_lag_p99: percentile(&lags, 0.99),
            probes,
        })
    }

    /// Inserts `jobs` jobs of `flow` straight into the step log, in batches
    /// of 10,000, due in an hour: keys `{prefix}-{n}`, payloads
    /// `{"n": number(n)}`.
    async fn insert_waiting(
        &self,
        flow: &str,
        prefix: &str,
        jobs: usize,
        number: impl Fn(usize) -> usize,
    ) -> Result<()> {
        let far = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
        let version = self.node.policy.current().version.to_string();
        for chunk_start in (0..jobs).step_by(10_000) {
            let batch: Vec<NewJob> = (chunk_start..(chunk_start + 10_000).min(jobs))
                .map(|n| NewJob {
                    id: uuid::Uuid::now_v7().to_string(),
                    flow: flow.into(),
                    idempotency_key: format!("{prefix}-{n}"),
                    payload: format!(r#"{{"n":{}}}"#, number(n)),
                    step: "deliver".into(),
                    created_at: jiff::Timestamp::now(),
                    next_at: far,
                    policy_version: version.clone(),
                    traceparent: None,
                    priority: 0,
                })
                .collect();
            self.node.store.jobs_insert_batch(batch).await?;
        }
        Ok(())
    }

    /// `retries` jobs of flow `bench` made retries (one attempt behind them)
    /// and due at once, and a fresh job of the same flow every 5 ms until
    /// they are done; the fresh jobs' submit-to-first-attempt latencies.
    async fn retry_storm(&self, retries: usize) -> Result<Storm> {
        self.insert_waiting("bench", "retry", retries, |n| 2 * n + 1)
            .await?;
        let now_ms = jiff::Timestamp::now().as_millisecond();
        sqlx::query(
            "UPDATE jobs SET next_at = ?1, attempt = 1, attempts_total = 1, \
                 series_started_at = ?1 WHERE flow = 'bench' AND state = 'pending'",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut fresh = 0;
        loop {
            tick.tick().await;
            let body = json!({
                "payload": { "n": 2 * fresh + 1 },
                "idempotency_key": format!("fresh-{fresh}"),
            });
            self.client
                .post(format!("{}/v1/flows/bench/jobs", self.node.url()))
                .json(&body)
                .send()
                .await?
                .error_for_status()?;
            fresh += 1;
            if fresh % 40 == 0 && !self.unfinished_retries().await? {
                break;
            }
        }
        let drain_seconds = started.elapsed().as_secs_f64();
        let total = self.count("bench", None).await?;
        self.wait_succeeded("bench", total).await?;
        let lags = self
            .query_lags(
                "SELECT a.started_at - j.created_at FROM attempts a JOIN jobs j ON j.id = a.job_id \
                 WHERE j.idempotency_key LIKE 'fresh-%' AND a.attempt = 1",
            )
            .await?;
        Ok(Storm {
            fresh_p50: percentile(&lags, 0.50),
            fresh_p99: percentile(&lags, 0.99),
            fresh,
            drain_seconds,
        })
    }

    /// Whether a retry of the storm is left waiting (read from the claim
    /// index, where due retries come first).
    async fn unfinished_retries(&self) -> Result<bool> {
        let left: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_due_by_flow \
                 WHERE state IN ('pending', 'suspended') AND flow = 'bench' AND attempt > 0)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(left)
    }

    /// Whether a job of `flow` is left to do, read from the indexes the
    /// engine keeps anyway. `EXISTS` stops at the first entry: counting them
    /// instead walked up to a million index entries at every poll, and the
    /// polls took a few percent of the machine the engine was measured on.
    async fn unfinished(&self, flow: &str) -> Result<bool> {
        let left: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_due_by_flow \
                            WHERE state IN ('pending', 'suspended') AND flow = ?1) \
                 OR EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_leased \
                            WHERE state = 'running' AND flow = ?1)",
        )
        .bind(flow)
        .fetch_one(&self.pool)
        .await?;
        Ok(left)
    }

    async fn count(&self, flow: &str, state: Option<JobState>) -> Result<usize> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE flow = ?1 AND (?2 IS NULL OR state = ?2)",
        )
        .bind(flow)
        .bind(state.map(JobState::as_str))
        .fetch_one(&self.pool)
        .await?;
        Ok(usize::try_from(n)?)
    }

    /// Waits until no job of `flow` is left to do, then checks that all
    /// `jobs` succeeded.
    async fn wait_succeeded(&self, flow: &str, jobs: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(3600);
        while self.unfinished(flow).await? {
            if Instant::now() > deadline {
                bail!("{flow}: jobs still unfinished after an hour");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let succeeded = self.count(flow, Some(JobState::Succeeded)).await?;
        if succeeded != jobs {
            bail!("{flow}: {succeeded} of {jobs} jobs succeeded");
        }
        Ok(())
    }

    async fn query_lags(&self, sql: &'static str) -> Result<Vec<f64>> {
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        let mut lags: Vec<f64> = rows
            .iter()
            .map(|row| row.try_get::<i64, _>(0).map(|ms| ms as f64))
            .collect::<Result<_, _>>()?;
        if lags.is_empty() {
            bail!("no attempts to measure");
        }
        lags.sort_by(f64::total_cmp);
        Ok(lags)
    }
}

/// A node watching its policy directory: the time from writing a file that
/// adds a flow to that flow being in force, median of five.
async fn reload_latency(dir: &Path, partner: &str) -> Result<f64> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    std::fs::write(policies.join("bench.yaml"), POLICY)?;
    let env = EnvMode::from_source(MapEnv::overlaying_process().with("PARTNER", partner));
    let Some(policy) = load_policy(std::slice::from_ref(&policies), &env).policy else {
        bail!("the bench policy does not compile");
    };
    let node = Node::start(NodeConfig {
        policy,
        db_url: format!("sqlite://{}", dir.join("steadfast.db").display()),
        listen: "127.0.0.1:0".into(),
        engine: EngineConfig::default(),
        clock: Arc::new(SystemClock),
        tokens: Vec::new(),
        alerts: Default::default(),
        reload: Some(ReloadSource {
            paths: vec![policies.clone()],
            env,
            watch: WatchConfig::default(),
        }),
        serve: Default::default(),
    })
    .await?;
    let mut times = Vec::new();
    for round in 0..5 {
        let flow = format!("added-{round}");
        let text =
            format!("flows:\n  {flow}:\n    steps: [ {{ name: deliver, channel: partner }} ]\n");
        let written = Instant::now();
        std::fs::write(policies.join(format!("{flow}.yaml")), text)?;
        while node.policy.current().flow(&flow).is_none() {
            if written.elapsed() > Duration::from_secs(30) {
                bail!("flow {flow} never came into force");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(written.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    node.shutdown().await;
    Ok(median(&times))
}

/// `nodes` engine processes on a fresh database of `server`: jobs per
/// second from the first batch (spread over the nodes, as behind a load
/// balancer) to the last success, read from the database itself.
async fn postgres_nodes(
    server: &pg::PgServer,
    partner: &str,
    nodes: usize,
    jobs: usize,
) -> Result<f64> {
    let url = server.fresh_database().await;
    let mut engines = Vec::new();
    for _ in 0..nodes {
        engines.push(ingest::spawn_engine(POLICY, &url, partner).await?);
    }
    let client = reqwest::Client::new();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;

    let started = Instant::now();
    let started_at = jiff::Timestamp::now();
    for (batch, chunk_start) in (0..jobs).step_by(1000).enumerate() {
        let mut body = String::new();
        for n in chunk_start..(chunk_start + 1000).min(jobs) {
            body.push_str(
                &json!({ "payload": { "n": n }, "idempotency_key": format!("pg-{n}") }).to_string(),
            );
            body.push('\n');
        }
        let base = &engines[batch % engines.len()].0.base;
        let response = client
            .post(format!("{base}/v1/flows/bench/jobs:batch"))
            .body(body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("batch submit failed: {}", response.text().await?);
        }
    }
    // Whether any job is left to deliver: two probes of the engine's own
    // partial indexes, every 100 ms; the end is the last job's own time.
    // A `COUNT(*)` of succeeded jobs every 20 ms took 10 ms of the server's
    // time at 50,000 jobs: a seventh of a core taken from the engine being
    // measured.
    let unfinished = "SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('pending', 'suspended')) \
                      OR EXISTS (SELECT 1 FROM jobs WHERE state = 'running')";
    loop {
        let left: bool = sqlx::query_scalar(unfinished).fetch_one(&pool).await?;
        if !left {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("jobs still unfinished on PostgreSQL after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (done, last): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(MAX(updated_at), 0) FROM jobs WHERE state = 'succeeded'",
    )
    .fetch_one(&pool)
    .await?;
    if done as usize != jobs {
        bail!("{done} of {jobs} jobs succeeded on PostgreSQL");
    }
    let took_ms = last - started_at.as_millisecond();
    if took_ms <= 0 {
        bail!("the last success on PostgreSQL is dated before the first submission");
    }
    let rate = jobs as f64 / (took_ms as f64 / 1000.0);
    pool.close().await;
    drop(engines);
    Ok(rate)
}

/// A `steadfast run` process, stopped when dropped.
struct EngineProcess {
    child: Child,
    base: String,
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A line of /proc/self/status, in MB.
fn memory(field: &str) -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed /proc/self/status")?
        .parse()?;
    Ok(kb / 1024.0)
}

/// The partner, started as a child process; killed when dropped.
struct PartnerProcess {
    child: Child,
    url: String,
}

impl PartnerProcess {
    fn start() -> Result<PartnerProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .env(ROLE, "partner")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the partner process")?;
        let stdout = child.stdout.take().context("partner stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .with_context(|| format!("partner said `{line}`"))?;
        Ok(PartnerProcess {
            child,
            url: format!("http://{addr}"),
        })
    }
}

impl Drop for PartnerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod partner {
    use super::*;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};

    type Seen = Arc<Mutex<HashSet<String>>>;

    pub fn main() -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let mut stdout = std::io::stdout();
            writeln!(stdout, "listening {addr}")?;
            stdout.flush()?;
            let app = axum::Router::new()
                .fallback(answer)
                .with_state(Seen::default());
            axum::serve(listener, app).await?;
            Ok(())
        })
    }

    /// 200 at once, except the first request of every tenth job: 503.
    async fn answer(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let n = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["n"].as_u64())
            .unwrap_or(1);
        if !n.is_multiple_of(10) {
            return StatusCode::OK;
        }
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let first = seen
            .lock()
            .map(|mut seen| seen.insert(key))
            .unwrap_or(false);
        if first {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }
}
