//! `steadfast test [PATH…]`: runs the policy test cases beside the
//! policies (see [`crate::policytest`]); exit 1 when one fails or cannot
//! run, 2 when a path or the `--junit` file cannot be used.

use std::path::PathBuf;

use anyhow::Context as _;

use super::{CliResult, Failure, OutputArgs};
use crate::policy::EnvMode;
use crate::policytest::{json, junit, run_suite, text};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Policy directories or files, and test files (`*.test.yaml`); a
    /// directory means its policy files and the test files in it.
    #[arg(default_value = "./policies")]
    paths: Vec<PathBuf>,
    /// Treat `${VAR}` as placeholders, so CI needs no production secrets.
    #[arg(long)]
    no_env: bool,
    /// Also write the results as JUnit XML to FILE, for CI systems.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn run(args: TestArgs) -> CliResult {
    let env = if args.no_env {
        EnvMode::Placeholders
    } else {
        EnvMode::process()
    };
    let suite = run_suite(&args.paths, &env);
    if let Some(path) = &args.junit {
        std::fs::write(path, junit(&suite))
            .with_context(|| format!("cannot write the JUnit report to {}", path.display()))
            .map_err(Failure::BadInput)?;
    }
    if args.output.json() {
        println!("{}", json(&suite));
    } else {
        print!("{}", text(&suite));
    }
    if suite.ok() {
        Ok(())
    } else {
        Err(Failure::CheckFailed)
    }
}
