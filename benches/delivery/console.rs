//! The console with a real backlog (`--only console`): a step log of
//! 1,000,000 jobs (100,000 with `--quick`): 94 % succeeded, 5 % dead with an
//! attempt each (half 503, half 422), 1 % pending; then each console page
//! an operator opens at 3 a.m., timed over HTTP from request to the last
//! byte (median of 5, the engine idle).

use super::*;

struct Load {
    label: &'static str,
    path: String,
}

pub(super) async fn console_phase(
    sizes: &Sizes,
    work: &Path,
    partner: &str,
    figures: &mut Vec<Figure>,
) -> Result<()> {
    let jobs: i64 = if sizes.quick { 100_000 } else { 1_000_000 };
    eprintln!("console: a step log of {jobs} jobs …");
    let dir = work.join("console");
    let engine = Engine::start(&dir, "normal", partner).await?;
    let pool = engine.pool.clone();
    let now = jiff::Timestamp::now().as_millisecond();
    let far = now + 86_400_000;
    let mut tx = pool.begin().await?;
    let mut ids = Vec::with_capacity(jobs as usize);
    for n in 0..jobs {
        // Ids as the engine makes them (UUIDv7: time-ordered).
        let id = uuid::Uuid::now_v7().to_string();
        let (state, next_at) = match n % 100 {
            0..=93 => ("succeeded", None),
            94..=98 => ("dead", None),
            _ => ("pending", Some(far)),
        };
        // Spread over the last 10 days, oldest first.
        let at = now - (jobs - n) * 864_000_000 / jobs;
        sqlx::query(
            "INSERT INTO jobs (id, flow, idempotency_key, payload, state, step_index, step, \
                 next_at, reason, policy_version, created_at, updated_at, attempts_total) \
             VALUES (?1, 'backlog', ?2, ?3, ?4, 0, 'deliver', ?5, ?6, 'v', ?7, ?7, 1)",
        )
        .bind(&id)
        .bind(format!("lead-{n:07}"))
        .bind(format!(r#"{{"n":{n},"email":"lead-{n}@example.com"}}"#))
        .bind(state)
        .bind(next_at)
        .bind((state == "dead").then_some("permanent"))
        .bind(at)
        .execute(&mut *tx)
        .await?;
        if state == "dead" {
            let status = if n % 2 == 0 { 503 } else { 422 };
            sqlx::query(
                "INSERT INTO attempts (job_id, step, channel, attempt, started_at, finished_at, \
                     status, outcome, rule, decision, policy_version) \
                 VALUES (?1, 'deliver', 'partner', 1, ?2, ?2, ?3, 'fail', 'builtin[2]', \
                     'dead', 'v')",
            )
            .bind(&id)
            .bind(at)
            .bind(status)
            .execute(&mut *tx)
            .await?;
        }
        ids.push(id);
    }
    tx.commit().await?;
    sqlx::query("ANALYZE").execute(&pool).await?;
    let middle = &ids[ids.len() / 2];
    let dead_middle = ids
        .iter()
        .enumerate()
        .skip(ids.len() / 2)
        .find(|(n, _)| (94..=98).contains(&(n % 100)))
        .map(|(_, id)| id.clone())
        .unwrap_or_default();
    let loads = [
        Load {
            label: "console: jobs, first page (any state)",
            path: "/ui/jobs".into(),
        },
        Load {
            label: "console: jobs, a page half-way down (cursor)",
            path: format!("/ui/jobs?cursor={middle}"),
        },
        Load {
            label: "console: dead letters, first page + bulk count",
            path: "/ui/jobs?state=dead".into(),
        },
        Load {
            label: "console: dead letters by flow and status 503",
            path: "/ui/jobs?state=dead&flow=backlog&status=503".into(),
        },
        Load {
            label: "console: dead letters of the last 2 hours",
            path: "/ui/jobs?state=dead&since=2h".into(),
        },
        Load {
            label: "console: jobs whose key contains a text (one match)",
            path: format!("/ui/jobs?key=lead-{:07}", jobs / 2),
        },
        Load {
            label: "console: a dead job's page",
            path: format!("/ui/jobs/{dead_middle}"),
        },
        Load {
            label: "console: overview (counts cached)",
            path: "/ui/".into(),
        },
    ];
    let client = reqwest::Client::new();
    let base = engine.node.url();
    // The overview's first count reads every job: timed alone.
    let started = Instant::now();
    let first = client.get(format!("{base}/ui/")).send().await?;
    anyhow::ensure!(first.status().is_success(), "overview: {}", first.status());
    let _ = first.bytes().await?;
    let cold = started.elapsed().as_secs_f64() * 1000.0;
    figures.push(Figure {
        name: "console: overview, counting afresh",
        value: cold,
        unit: "ms",
        note: format!("{jobs} jobs counted by flow and state (then cached 10 s)"),
    });
    for load in loads {
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let response = client.get(format!("{base}{}", load.path)).send().await?;
            let status = response.status();
            let body = response.text().await?;
            anyhow::ensure!(status.is_success(), "{}: {status}: {body}", load.path);
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        eprintln!("console: {} {median:.1} ms", load.label);
        figures.push(Figure {
            name: load.label,
            value: median,
            unit: "ms",
            note: format!("median of 5, {jobs} jobs in the step log"),
        });
    }
    engine.stop().await;
    Ok(())
}
