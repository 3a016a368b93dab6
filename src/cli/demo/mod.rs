//! `steadfast demo`: the whole engine end to end in one process, with
//! nothing to set up. The bundled policies (this repository's `policies/`)
//! run against flaky partners on loopback; a live view shows jobs retrying,
//! falling back and dead-lettering; a summary per flow closes it.

mod partner;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use super::output::print_table;
use super::{CliResult, Failure};
use crate::clock::SystemClock;
use crate::compile::load_policy;
use crate::engine::EngineConfig;
use crate::node::{Node, NodeConfig};
use crate::policy::{EnvMode, MapEnv};
use crate::store::{
    AttemptRecord, Decision, JobFilter, JobRecord, JobState, Reason, SharedStepLog,
};
use partner::{closed_port_url, Partner, ACME_SCENARIOS};

/// The repository's `policies/`, embedded so the demo needs no files.
const POLICY_FILES: [(&str, &str); 3] = [
    (
        "templates.yaml",
        include_str!("../../../policies/templates.yaml"),
    ),
    ("acme.yaml", include_str!("../../../policies/acme.yaml")),
    ("orders.toml", include_str!("../../../policies/orders.toml")),
];

/// The demo gives up waiting after this long (it normally takes seconds).
const DEADLINE: Duration = Duration::from_secs(50);

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many leads to send to ACME.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    leads: u32,
    /// How many orders to send while the orders API is down.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    orders: u32,
    /// Keep the engine and its API running after the summary, to explore
    /// with `steadfast jobs …` (ctrl-c stops it).
    #[arg(long)]
    keep: bool,
    /// Where the demo's API listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
}

pub async fn run(args: DemoArgs) -> CliResult {
    crate::telemetry::init_logs(crate::telemetry::LogFormat::Text, "warn");
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let policy_dir = work.path().join("policies");
    std::fs::create_dir_all(&policy_dir).context("writing the demo policies")?;
    for (name, text) in POLICY_FILES {
        std::fs::write(policy_dir.join(name), text).context("writing the demo policies")?;
    }

    let partner = Partner::default();
    let partner_url = partner
        .clone()
        .serve()
        .await
        .context("starting the demo partner")?;
    let spool = work.path().join("spool");
    let env = [
        ("ACME_URL", format!("{partner_url}/acme")),
        ("ACME_TOKEN", "demo-token".to_string()),
        ("CRM_URL", format!("{partner_url}/crm")),
        ("OPS_URL", format!("{partner_url}/ops")),
        (
            "ORDERS_URL",
            closed_port_url().await.context("finding a closed port")?,
        ),
        ("ORDERS_BACKUP_URL", format!("{partner_url}/backup")),
        ("SPOOL_DIR", spool.display().to_string()),
    ]
    .into_iter()
    .fold(MapEnv::overlaying_process(), |env, (name, value)| {
        env.with(name, value)
    });
    let compilation = load_policy(
        std::slice::from_ref(&policy_dir),
        &EnvMode::from_source(env),
    );
    let Some(policy) = compilation.policy else {
        for diagnostic in &compilation.diagnostics {
            eprintln!("{diagnostic}");
        }
        return Err(Failure::Operation(anyhow!(
            "the bundled demo policies do not compile"
        )));
    };

    let db = work.path().join("steadfast.db");
    let node = Node::start(NodeConfig {
        policy,
        db_url: format!("sqlite://{}", db.display()),
        listen: args.listen.clone(),
        engine: EngineConfig::default(),
        clock: Arc::new(SystemClock),
        tokens: Vec::new(),
        alerts: Default::default(),
        reload: None,
        serve: Default::default(),
    })
    .await
    .map_err(|e| Failure::Operation(anyhow!(e)))?;

    println!("steadfast demo: the engine with a durable SQLite step log, against flaky partners on loopback\n");
    println!("  flow acme-leads  deliver to ACME (classifier `acme`), then confirm to the CRM with ACME's lead id");
    println!("                   mapped from its answer, to two CRM instances in turn (a pool); dead jobs notify ops");
    println!(
        "                   ACME's answers by lead number: {}",
        ACME_SCENARIOS.join("; ")
    );
    println!(
        "  flow orders      the orders API is down: the backup endpoint takes over, and when it"
    );
    println!(
        "                   refuses (every 4th order) the file spool does; after five failures"
    );
    println!("                   the API's breaker opens and orders skip straight to the backup\n");

    let started = Instant::now();
    submit_jobs(&node.url(), args.leads, args.orders).await?;
    let outcome = watch(&node.store, args.leads as u64, args.orders as u64).await;
    let elapsed = started.elapsed();

    let jobs = all_jobs(&node.store).await?;
    print_summary(&node.store, &jobs).await?;
    let spooled = std::fs::read_dir(spool.join("orders"))
        .map(|d| d.count())
        .unwrap_or(0);
    println!(
        "\n{} jobs in {:.1}s; {} orders in the spool ({}); {} dead-job alerts received by ops",
        jobs.len(),
        elapsed.as_secs_f64(),
        spooled,
        spool.join("orders").display(),
        partner.alerts(),
    );
    print_next_steps(&node.url(), args.keep);

    if args.keep {
        println!(
            "\nthe engine keeps running at {} (ctrl-c stops it)",
            node.url()
        );
        super::run::shutdown_signal().await;
    }
    node.shutdown().await;
    drop(work);
    outcome
}

async fn submit_jobs(api: &str, leads: u32, orders: u32) -> CliResult {
    let client = reqwest::Client::new();
    let submit = |flow: &str, key: String, payload: serde_json::Value| {
        let request = client
            .post(format!("{api}/v1/flows/{flow}/jobs"))
            .json(&json!({ "payload": payload, "idempotency_key": key }));
        async move {
            let response = request.send().await.context("submitting a demo job")?;
            if !response.status().is_success() {
                return Err(anyhow!(
                    "the API refused a demo job: HTTP {}",
                    response.status()
                ));
            }
            Ok::<u16, anyhow::Error>(response.status().as_u16())
        }
    };
    for n in 0..leads {
        // Every tenth lead, from the fifth, is worth 25,000: a `retry` entry
        // gives it the aggressive template.
        let amount = if n % 10 == 4 { 25_000 } else { 100 + n };
        let payload = json!({
            "n": n,
            "name": format!("Lead {n}"),
            "phone": format!("+1-555-01{n:02}"),
            "amount": amount,
        });
        submit("acme-leads", format!("lead-{n}"), payload).await?;
    }
    for n in 0..orders {
        let payload =
            json!({ "n": n, "order": format!("SO-{:05}", 1000 + n), "total": 10 * (n + 1) });
        submit("orders", format!("order-{n}"), payload).await?;
    }
    // The same key again is the same job: no second delivery.
    let again = submit(
        "acme-leads",
        "lead-0".to_string(),
        json!({ "n": 0, "name": "Lead 0", "phone": "+1-555-0100", "amount": 100 }),
    )
    .await?;
    println!("submitted {leads} leads and {orders} orders through the API; lead-0 sent twice → HTTP {again}: the same job\n");
    Ok(())
}

/// Shows progress bars per flow and a line per attempt until every job is
/// final and every notification sent.
async fn watch(store: &SharedStepLog, leads: u64, orders: u64) -> CliResult {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("  {prefix:<11} {bar:30} {pos:>3}/{len:<3} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let flows: BTreeMap<&str, ProgressBar> = [("acme-leads", leads), ("orders", orders)]
        .into_iter()
        .map(|(flow, total)| {
            let bar = bars.add(ProgressBar::new(total));
            bar.set_style(style.clone());
            bar.set_prefix(flow);
            (flow, bar)
        })
        .collect();
    let mut printed: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let jobs = all_jobs(store).await?;
        for job in &jobs {
            let seen = printed.entry(job.id.clone()).or_default();
            let attempts = if (job.attempts_total + job.notify_attempts) as usize > *seen {
                store
                    .attempts_list(&job.id)
                    .await
                    .map_err(|e| Failure::Operation(e.into()))?
            } else {
                Vec::new()
            };
            for attempt in attempts.iter().skip(*seen) {
                let _ = bars.println(describe(job, attempt));
            }
            *seen = (*seen).max(attempts.len());
        }
        let mut done = true;
        for (flow, bar) in &flows {
            let of_flow: Vec<&JobRecord> = jobs.iter().filter(|j| j.flow == *flow).collect();
            let count = |state| of_flow.iter().filter(|j| j.state == state).count();
            let finished = of_flow.iter().filter(|j| j.state.is_final()).count();
            bar.set_position(finished as u64);
            bar.set_message(format!(
                "{} delivered, {} dead, {} waiting",
                count(JobState::Succeeded),
                count(JobState::Dead),
                of_flow.len() - finished
            ));
            done &= finished == of_flow.len() && of_flow.iter().all(|j| j.notify_at.is_none());
        }
        if done {
            break;
        }
        if Instant::now() > deadline {
            for bar in flows.values() {
                bar.abandon();
            }
            return Err(Failure::Operation(anyhow!(
                "the demo did not finish within {}s",
                DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for bar in flows.values() {
        bar.finish();
    }
    println!();
    Ok(())
}

fn describe(job: &JobRecord, attempt: &AttemptRecord) -> String {
    let answer = match (&attempt.status, &attempt.error) {
        (Some(status), _) => status.to_string(),
        (None, Some(error)) => error.clone(),
        _ => "-".to_string(),
    };
    let next = match attempt.decision {
        Decision::Retry => format!(
            "retry in {:.1}s",
            attempt.delay_ms.unwrap_or_default() as f64 / 1000.0
        ),
        Decision::Fallback => "retries spent: next fallback".to_string(),
        Decision::NextStep => "next step".to_string(),
        Decision::Dead => format!("DEAD ({})", job.reason.map_or("-", Reason::as_str)),
        other => other.to_string(),
    };
    format!(
        "  {:<9} {:<19} {:<14} #{}  {:<8} {:<21} → {next}",
        job.idempotency_key,
        format!("{}/{}", job.flow, attempt.step),
        attempt.member.as_deref().unwrap_or(&attempt.channel),
        attempt.attempt,
        answer,
        attempt.rule.as_deref().unwrap_or("-"),
    )
}

async fn all_jobs(store: &SharedStepLog) -> Result<Vec<JobRecord>, Failure> {
    let mut jobs = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .jobs_list(&JobFilter {
                limit: 1000,
                cursor,
                ..JobFilter::default()
            })
            .await
            .map_err(|e| Failure::Operation(e.into()))?;
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(jobs),
        }
    }
}

async fn print_summary(store: &SharedStepLog, jobs: &[JobRecord]) -> CliResult {
    #[derive(Default)]
    struct Tally {
        first_try: u32,
        after_retries: u32,
        via_fallback: u32,
        dead: u32,
        other: u32,
    }
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    for job in jobs {
        let attempts = store
            .attempts_list(&job.id)
            .await
            .map_err(|e| Failure::Operation(e.into()))?;
        let decided = |decision: Decision| attempts.iter().any(|a| a.decision == decision);
        let tally = tallies.entry(job.flow.as_str()).or_default();
        match job.state {
            JobState::Dead => tally.dead += 1,
            JobState::Succeeded if decided(Decision::Fallback) => tally.via_fallback += 1,
            JobState::Succeeded if decided(Decision::Retry) => tally.after_retries += 1,
            JobState::Succeeded => tally.first_try += 1,
            _ => tally.other += 1,
        }
    }
    let rows: Vec<Vec<String>> = tallies
        .iter()
        .map(|(flow, t)| {
            vec![
                flow.to_string(),
                t.first_try.to_string(),
                t.after_retries.to_string(),
                t.via_fallback.to_string(),
                t.dead.to_string(),
                t.other.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "FLOW",
            "FIRST TRY",
            "AFTER RETRIES",
            "VIA FALLBACK",
            "DEAD",
            "UNFINISHED",
        ],
        &rows,
    );
    Ok(())
}

fn print_next_steps(api: &str, keep: bool) {
    if keep {
        println!("\nexplore the engine while it runs:");
        println!("  {api}/ui/                          the console, in a browser");
        println!("  steadfast jobs list --state dead --server {api}");
        println!("  steadfast jobs show ID --server {api}");
        println!("  curl {api}/v1/jobs?state=dead");
        println!("  curl {api}/metrics");
    } else {
        println!("\nwhere to look next:");
        println!(
            "  steadfast demo --keep                 keep this engine running and explore it with"
        );
        println!("                                        `steadfast jobs list --state dead`, `jobs show ID`,");
        println!("                                        GET /v1/jobs, GET /metrics, or the console at /ui/");
        println!("  steadfast validate --no-env policies/ check the policies this demo ran");
        println!(
            "  steadfast run --policies policies/    the engine on your own partners (see README)"
        );
    }
}
