//! `steadfast prune [--dry-run]`: the retention of `steadfast.toml`
//! (`[retention]`) applied now, or, with `--dry-run`, what it would delete.
//! A running engine prunes by itself once a minute; on SQLite, pruning
//! (not the dry run) waits for the engine to be stopped.

use std::path::PathBuf;

use anyhow::anyhow;
use jiff::Timestamp;

use super::{CliResult, Failure, OutputArgs};
use crate::lifecycle::signed;
use crate::settings::FlagSettings;

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// The settings file [default: ./steadfast.toml when present].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The step log [default: from the settings, sqlite://steadfast.db].
    #[arg(long)]
    db: Option<String>,
    /// Count what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(args: PruneArgs) -> CliResult {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let flags = FlagSettings {
        db: args.db.clone(),
        ..FlagSettings::default()
    };
    let bad = |e: crate::settings::SettingsError| Failure::BadInput(anyhow!(e));
    let settings = crate::settings::load(args.config.as_deref(), &env, &flags).map_err(bad)?;
    let retention = settings
        .retention
        .ages()
        .map_err(|e| Failure::BadInput(anyhow!("steadfast.toml: {e}")))?;
    let _lock = if args.dry_run {
        None
    } else {
        crate::store::engine_lock(&settings.db).map_err(|e| {
            Failure::BadInput(anyhow!(
                "{e}\nA running engine prunes by itself once a minute; `steadfast prune \
                 --dry-run` shows what it would delete"
            ))
        })?
    };
    let store = crate::store::open(&settings.db)
        .await
        .map_err(|e| Failure::Operation(e.into()))?;
    let now = Timestamp::now();
    let mut report = Vec::new();
    for (state, age) in retention.ages() {
        let before = now - signed(age);
        let count = if args.dry_run {
            store.jobs_prunable(state, before).await
        } else {
            let mut total = 0;
            loop {
                let deleted = store
                    .jobs_prune(state, before, crate::engine::PRUNE_BATCH)
                    .await;
                match deleted {
                    Ok(n) => {
                        total += n;
                        if n < u64::from(crate::engine::PRUNE_BATCH) {
                            break Ok(total);
                        }
                    }
                    Err(error) => break Err(error),
                }
            }
        }
        .map_err(|e| Failure::Operation(e.into()))?;
        report.push((state, before, count));
    }
    if args.output.json() {
        let entries: Vec<serde_json::Value> = report
            .iter()
            .map(|(state, before, count)| {
                serde_json::json!({ "state": state, "before": before, "jobs": count })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "dry_run": args.dry_run, "pruned": entries })
        );
    } else if report.is_empty() {
        println!("[retention] keeps every job for ever: nothing to prune");
    } else {
        for (state, before, count) in &report {
            let verb = if args.dry_run {
                "would delete"
            } else {
                "deleted"
            };
            println!(
                "{state}: {verb} {count} jobs last changed before {before}, with their attempts"
            );
        }
    }
    Ok(())
}
