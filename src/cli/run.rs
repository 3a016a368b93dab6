//! `steadfast run`: the engine with its API until SIGTERM or ctrl-c.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;

use super::{CliResult, Failure, LogArgs};
use crate::clock::SystemClock;
use crate::engine::{EngineConfig, SchedulerConfig};
use crate::model::CompiledPolicy;
use crate::node::{Node, NodeConfig};
use crate::reload::{Reloader, WatchConfig};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The policy directory.
    #[arg(long, default_value = "./policies", env = "STEADFAST_POLICIES")]
    policies: PathBuf,
    /// The step log: sqlite://PATH.
    #[arg(long, default_value = "sqlite://steadfast.db", env = "STEADFAST_DB")]
    db: String,
    /// The API's address.
    #[arg(long, default_value = "127.0.0.1:8787", env = "STEADFAST_LISTEN")]
    listen: String,
    /// Attempts in flight at once.
    #[arg(long, default_value_t = 64, env = "STEADFAST_WORKERS")]
    workers: usize,
    /// How long policy file changes must settle before a reload.
    #[arg(long, default_value = "300ms", value_parser = parse_duration,
        env = "STEADFAST_RELOAD_DEBOUNCE")]
    reload_debounce: Duration,
    /// How often the policy files are also read and hashed, in case a file
    /// event was missed; `0s` turns this off.
    #[arg(long, default_value = "30s", value_parser = parse_duration,
        env = "STEADFAST_RELOAD_RESCAN")]
    reload_rescan: Duration,
    #[command(flatten)]
    log: LogArgs,
}

pub async fn run(args: RunArgs) -> CliResult {
    crate::telemetry::init_logs(args.log.log_format, "info");
    // Listening from the start: a SIGHUP that arrives while the engine
    // starts must not end the process (the signal's default action).
    let hangups = Hangups::listen();
    let policy = load_policies(&args.policies)?;
    tracing::info!(version = %policy.version, files = policy.files.len(), flows = policy.flows.len(),
        "policies loaded");
    let config = NodeConfig {
        policy,
        db_url: args.db.clone(),
        listen: args.listen.clone(),
        engine: EngineConfig {
            scheduler: SchedulerConfig {
                workers: args.workers.max(1),
                ..SchedulerConfig::default()
            },
            ..EngineConfig::default()
        },
        clock: Arc::new(SystemClock),
    };
    let mut node = Node::start(config)
        .await
        .map_err(|e| Failure::BadInput(anyhow!(e)))?;
    let reloader = node
        .watch_policies(
            vec![args.policies.clone()],
            crate::policy::EnvMode::process(),
            WatchConfig {
                debounce: args.reload_debounce,
                rescan: args.reload_rescan,
            },
        )
        .await;
    tracing::info!(api = %node.url(), db = %crate::store::redact_url(&args.db),
        policies = %args.policies.display(), "engine running; watching the policies");
    let hangup = tokio::spawn(hangups.reload(reloader));
    shutdown_signal().await;
    hangup.abort();
    tracing::info!("shutting down: no new claims; finishing attempts in flight");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Loads and compiles a policy directory; prints every problem and refuses
/// (exit 2) when there is an error.
pub fn load_policies(dir: &std::path::Path) -> Result<CompiledPolicy, Failure> {
    let compilation =
        crate::compile::load_policy(&[dir.to_path_buf()], &crate::policy::EnvMode::process());
    for diagnostic in &compilation.diagnostics {
        eprintln!("{diagnostic}");
    }
    compilation.policy.ok_or_else(|| {
        Failure::BadInput(anyhow!(
            "the policies in {} have errors (above); fix them, or check with `steadfast validate {}`",
            dir.display(),
            dir.display()
        ))
    })
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::compile::parse_duration(text).map_err(|e| e.to_string())
}

/// `SIGHUP`s, each of which forces a reload of the policies.
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = signal(SignalKind::hangup())
                .map_err(|error| {
                    tracing::warn!(%error, "cannot listen for SIGHUP; reloads follow file changes only");
                })
                .ok();
            Hangups { signal }
        }
        #[cfg(not(unix))]
        Hangups {}
    }

    /// Reloads on every `SIGHUP` until aborted.
    async fn reload(self, reloader: Arc<Reloader>) {
        #[cfg(unix)]
        if let Some(mut signal) = self.signal {
            while signal.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the policies");
                let outcome = reloader.reload_on_signal().await;
                if let crate::reload::ReloadOutcome::Unchanged { version } = outcome {
                    tracing::info!(%version, "policies unchanged");
                }
            }
        }
        #[cfg(not(unix))]
        let _ = reloader;
    }
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
