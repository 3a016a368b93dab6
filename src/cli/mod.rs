//! The command line: one module per subcommand. Errors get their context
//! here, at the edge; exit codes are 0 success, 1 a check or an operation
//! failed, 2 bad usage or bad input.

mod client;
mod demo;
mod dlq;
mod explain;
mod flows;
mod insights;
mod jobs;
mod nodes;
mod output;
mod prune;
mod run;
mod schema;
mod submit;
mod test;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "steadfast",
    version,
    about = "A declarative delivery engine: policy files in git, a durable step log, retries that respect your partners."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole engine end to end against a flaky partner on loopback.
    Demo(demo::DemoArgs),
    /// Runs the engine: workers, scheduler and HTTP API.
    Run(run::RunArgs),
    /// Checks policy files; prints `path:line:col: message` per problem.
    Validate(validate::ValidateArgs),
    /// Prints the attempt timeline the policy gives a partner that keeps failing.
    Explain(explain::ExplainArgs),
    /// Runs the policy test cases beside the policies; exit 1 on a failure.
    Test(test::TestArgs),
    /// Enqueues a job through a running engine's API.
    Submit(submit::SubmitArgs),
    /// Inspects jobs of a running engine.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Dead-letter work: list, retry (one, many, or all matching), edit, cancel.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// The nodes sharing the step log: live or dead, jobs running, heartbeat.
    Nodes(nodes::NodesArgs),
    /// A channel's history from every node: success by attempt number, errors, latency.
    Insights(insights::InsightsArgs),
    /// Flows: list them with their jobs by state; pause and resume one.
    #[command(subcommand)]
    Flows(flows::FlowsCommand),
    /// Deletes finished jobs older than `[retention]` says (`--dry-run`: counts them).
    Prune(prune::PruneArgs),
    /// Prints the JSON Schema of policy files, for editors and CI
    /// (`--openapi`: the HTTP API's OpenAPI document).
    Schema(schema::SchemaArgs),
}

/// How a command ended.
#[derive(Debug)]
pub enum Failure {
    /// A check failed (exit 1), already reported.
    CheckFailed,
    /// The operation failed (exit 1).
    Operation(anyhow::Error),
    /// Bad usage or bad input (exit 2).
    BadInput(anyhow::Error),
}

pub type CliResult = Result<(), Failure>;

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Operation(error)
    }
}

/// Parses the command line, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_) | Command::Demo(_)) {
        exit_quietly_on_closed_pipe();
    }
    let outcome = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(dispatch(cli.command)),
        Err(e) => Err(Failure::Operation(anyhow::anyhow!(
            "cannot start the runtime: {e}"
        ))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::CheckFailed) => ExitCode::from(1),
        Err(Failure::Operation(error)) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::from(1)
        }
        Err(Failure::BadInput(error)) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, each said once: many of the
/// library's errors already end with their source's message (`step log:
/// {0}`), which `{:#}` would print a second time.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A short-lived command whose output goes to a closed pipe (`steadfast jobs
/// list | head`) ends quietly, as Unix tools do, instead of panicking in
/// `println!`. The engine keeps Rust's default (a write error, never a
/// signal), so a closed log pipe cannot kill it mid-attempt.
fn exit_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called once at start, before any thread is spawned; restoring
    // the default disposition of a signal has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

async fn dispatch(command: Command) -> CliResult {
    match command {
        Command::Demo(args) => demo::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Submit(args) => submit::run(args).await,
        Command::Jobs(command) => jobs::run(command).await,
        Command::Dlq(command) => dlq::run(command).await,
        Command::Nodes(args) => nodes::run(args).await,
        Command::Insights(args) => insights::run(args).await,
        Command::Flows(command) => flows::run(command).await,
        Command::Prune(args) => prune::run(args).await,
        Command::Validate(args) => validate::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Test(args) => test::run(args),
        Command::Explain(args) => explain::run(args).await,
    }
}

/// `--json`, and its synonym `--format json`, on every read command.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Print JSON for scripts.
    #[arg(long, global = true)]
    json: bool,
    /// `text` or `json` (same as --json).
    #[arg(long, value_name = "FORMAT", global = true)]
    format: Option<OutputFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

impl OutputArgs {
    pub fn json(&self) -> bool {
        self.json || self.format == Some(OutputFormat::Json)
    }
}

/// Logging flags for commands that run the engine.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format on stderr; `RUST_LOG` sets the level.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug, thiserror::Error)]
    #[error("step log: {0}")]
    struct Wrapping(#[from] std::io::Error);

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let error = anyhow::Error::new(Wrapping(std::io::Error::other("disk full")))
            .context("cannot start");
        assert_eq!(one_line(&error), "cannot start: step log: disk full");
        let plain = anyhow::anyhow!("no job `x`").context("jobs show");
        assert_eq!(one_line(&plain), "jobs show: no job `x`");
    }
}
