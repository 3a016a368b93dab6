//! `steadfast validate [PATH…]`: every problem at once, `path:line:col:
//! message`; exit 1 on errors (or on warnings with `--deny-warnings`).
//!
//! Warnings are likely mistakes found by [`crate::compile`]: a rule no
//! answer can reach (after a catch-all, or covered by an earlier rule), a
//! template whose retries run past its `total_timeout`, an unused template,
//! classifier or channel, a fallback to the step's own channel, keys that
//! have no effect.

use std::path::PathBuf;

use super::{CliResult, Failure, OutputArgs};
use crate::compile::{load_policy, Severity};
use crate::policy::EnvMode;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Policy files or directories.
    #[arg(default_value = "./policies")]
    paths: Vec<PathBuf>,
    /// Treat `${VAR}` as placeholders, so CI needs no production secrets.
    #[arg(long)]
    no_env: bool,
    /// Fail on warnings too.
    #[arg(long)]
    deny_warnings: bool,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn run(args: ValidateArgs) -> CliResult {
    let env = if args.no_env {
        EnvMode::Placeholders
    } else {
        EnvMode::process()
    };
    let compilation = load_policy(&args.paths, &env);
    let errors = compilation
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = compilation.diagnostics.len() - errors;
    let failed = errors > 0 || (args.deny_warnings && warnings > 0);
    if args.output.json() {
        let report = serde_json::json!({
            "valid": !failed,
            "errors": errors,
            "warnings": warnings,
            "version": compilation.policy.as_ref().map(|p| p.version.to_string()),
            "diagnostics": compilation.diagnostics,
        });
        println!("{report}");
    } else {
        for diagnostic in &compilation.diagnostics {
            println!("{diagnostic}");
        }
        match &compilation.policy {
            Some(policy) if !failed => {
                println!(
                "ok: {} files, {} flows, {} channels, {} templates, {} classifiers (version {}){}",
                policy.files.len(),
                policy.flows.len(),
                policy.channels.len(),
                policy.templates.len(),
                policy.classifiers.len(),
                policy.version,
                if warnings > 0 { format!("; {}", counted(warnings, "warning")) } else { String::new() }
            )
            }
            _ => eprintln!(
                "{}, {}{}",
                counted(errors, "error"),
                counted(warnings, "warning"),
                if errors == 0 && failed {
                    " (--deny-warnings)"
                } else {
                    ""
                }
            ),
        }
    }
    if failed {
        Err(Failure::CheckFailed)
    } else {
        Ok(())
    }
}

/// `1 error`, `2 errors`.
fn counted(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
