//! `steadfast run`: the engine with its API until SIGTERM or ctrl-c.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;

use super::{CliResult, Failure, LogArgs};
use crate::clock::SystemClock;
use crate::engine::{EngineConfig, SchedulerConfig};
use crate::model::CompiledPolicy;
use crate::node::{Node, NodeConfig, ReloadSource};
use crate::policy::EnvMode;
use crate::reload::WatchConfig;
use crate::settings::FlagSettings;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Engine settings (listen, db, policies, workers, [[tokens]], [quotas]);
    /// default ./steadfast.toml when present. STEADFAST_* variables override
    /// it, flags override both.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The policy directory [default: ./policies].
    #[arg(long)]
    policies: Option<PathBuf>,
    /// The step log: sqlite://PATH (one node), or postgres://USER:PASSWORD@HOST/DB
    /// (several nodes share it; `?pool_max=N` connections per node, default
    /// 10) [default: sqlite://steadfast.db].
    #[arg(long)]
    db: Option<String>,
    /// The API's address [default: 127.0.0.1:8787]; beyond loopback the
    /// engine needs [[tokens]] in steadfast.toml.
    #[arg(long)]
    listen: Option<String>,
    /// How long the policy files must be quiet before a change is loaded.
    #[arg(long, default_value = "250ms", value_parser = parse_duration_arg, env = "STEADFAST_RELOAD_DEBOUNCE")]
    reload_debounce: std::time::Duration,
    /// How often the policy files are compared anyway, in case a file-system
    /// event was missed (network file systems); 0s turns it off.
    #[arg(long, default_value = "5s", value_parser = parse_duration_arg, env = "STEADFAST_RELOAD_RESCAN")]
    reload_rescan: std::time::Duration,
    /// Attempts in flight at once [default: 64].
    #[arg(long)]
    workers: Option<usize>,
    /// How long a claim lasts without its node's heartbeat. A live node's
    /// heartbeat keeps its claims however long an attempt runs, and a dead
    /// node's go back after --node-timeout; the lease matters only for
    /// claims of a node that never wrote a heartbeat (an older version).
    #[arg(long, default_value = "300s", value_parser = parse_duration_arg, env = "STEADFAST_LEASE")]
    lease: std::time::Duration,
    /// This node's id among the nodes sharing a PostgreSQL step log (its
    /// leases and `steadfast nodes` show it); a second live node with the
    /// same id refuses to start. Default: the host name.
    #[arg(long, env = "STEADFAST_NODE_ID")]
    node_id: Option<String>,
    /// Silent this long (no heartbeat; one is written every 2 s), a node is
    /// dead: the others hand its running jobs back to `pending`.
    #[arg(long, default_value = "15s", value_parser = parse_duration_arg, env = "STEADFAST_NODE_TIMEOUT")]
    node_timeout: std::time::Duration,
    /// API connections open at once; more wait to be accepted. Lowered to
    /// fit the open file limit. A connection that sends no complete request
    /// headers within 10 s is closed.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..), env = "STEADFAST_MAX_CONNECTIONS")]
    max_connections: u32,
    #[command(flatten)]
    log: LogArgs,
}

pub async fn run(args: RunArgs) -> CliResult {
    crate::telemetry::init_logs(args.log.log_format, "info");
    let env: Vec<(String, String)> = std::env::vars().collect();
    let flags = FlagSettings {
        policies: args.policies.clone(),
        db: args.db.clone(),
        listen: args.listen.clone(),
        workers: args.workers,
    };
    let bad = |e: crate::settings::SettingsError| Failure::BadInput(anyhow!(e));
    let settings = crate::settings::load(args.config.as_deref(), &env, &flags).map_err(bad)?;
    let tokens = crate::settings::resolve_tokens(&settings.tokens, &env).map_err(bad)?;
    if tokens.is_empty() && !crate::settings::is_loopback(&settings.listen).map_err(bad)? {
        return Err(Failure::BadInput(anyhow!(
            "refusing to listen on {} without API tokens: anyone who can reach it could \
             submit, retry and edit jobs. Add [[tokens]] (name, secret, scope = \"submit\" \
             or \"admin\") to steadfast.toml, or listen on 127.0.0.1",
            settings.listen
        )));
    }
    let alert_rules = crate::alerts::compile(&settings.alerts)
        .map_err(|e| Failure::BadInput(anyhow!("steadfast.toml: {e}")))?;
    let traces = match settings
        .telemetry
        .endpoint()
        .map_err(|e| Failure::BadInput(anyhow!("steadfast.toml: {e}")))?
    {
        Some(endpoint) => Some(Arc::new(
            crate::telemetry::traces::Traces::start(endpoint, std::time::Duration::from_secs(5))
                .map_err(|e| Failure::BadInput(anyhow!("steadfast.toml: [telemetry] {e}")))?,
        )),
        None => None,
    };
    let policy = load_policies(&settings.policies)?;
    tracing::info!(version = %policy.version, files = policy.files.len(), flows = policy.flows.len(),
        "policies loaded");
    let config = NodeConfig {
        policy,
        db_url: settings.db.clone(),
        listen: settings.listen.clone(),
        engine: EngineConfig {
            scheduler: SchedulerConfig {
                workers: settings.workers.max(1),
                lease: args.lease.max(std::time::Duration::from_secs(1)),
                ..SchedulerConfig::default()
            },
            owner: node_id(args.node_id.as_deref())?,
            retention: settings
                .retention
                .ages()
                .map_err(|e| Failure::BadInput(anyhow!("steadfast.toml: {e}")))?,
            node_timeout: args
                .node_timeout
                .max(crate::engine::HEARTBEAT.saturating_mul(2)),
            quotas: crate::retry::quota::QuotaConfig {
                per_hour: settings.quotas.retries_per_hour,
                per_flow_per_hour: settings.quotas.retries_per_hour_per_flow,
                flows: settings.quotas.flows.clone(),
            },
            traces,
            health: settings
                .pacing
                .thresholds()
                .map_err(|e| Failure::BadInput(anyhow!("steadfast.toml: {e}")))?,
            ..EngineConfig::default()
        },
        clock: Arc::new(SystemClock),
        reload: Some(ReloadSource {
            paths: vec![settings.policies.clone()],
            env: EnvMode::process(),
            watch: WatchConfig {
                debounce: args.reload_debounce,
                rescan: args.reload_rescan,
            },
        }),
        tokens,
        alerts: crate::alerts::AlertsConfig {
            rules: alert_rules,
            ..Default::default()
        },
        serve: crate::api::ServeConfig {
            max_connections: crate::api::connection_bound(args.max_connections as usize),
            ..crate::api::ServeConfig::default()
        },
    };
    let node = Node::start(config)
        .await
        .map_err(|e| Failure::BadInput(anyhow!(e)))?;
    tracing::info!(api = %node.url(), console = %format!("{}/ui/", node.url()),
        db = %crate::store::redact_url(&settings.db),
        policies = %settings.policies.display(), tokens = settings.tokens.len(),
        "engine running; policy files are watched");
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = reload_on_sighup(&node) => {}
    }
    tracing::info!("shutting down: no new claims; finishing attempts in flight");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Reloads the policy files on every SIGHUP; never completes.
async fn reload_on_sighup(node: &Node) {
    #[cfg(unix)]
    if let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the policy files");
            node.reload();
        }
    }
    std::future::pending::<()>().await
}

fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    crate::compile::parse_duration(text).map_err(|e| e.to_string())
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

/// The node id: as given, else the host name. An id is a name in logs,
/// leases and `steadfast nodes`: printable, at most 128 bytes.
fn node_id(given: Option<&str>) -> Result<String, Failure> {
    let id = match given {
        Some(id) => id.trim().to_string(),
        None => host_name().unwrap_or_else(|| "steadfast".to_string()),
    };
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(Failure::BadInput(anyhow!(
            "bad --node-id `{}`: write a name of 1 to 128 printable characters, unique \
             among the nodes sharing the step log",
            id.escape_debug()
        )));
    }
    Ok(id)
}

fn host_name() -> Option<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer it is
    // given, which lives for the call.
    let written = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if written != 0 {
        return None;
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let name = String::from_utf8_lossy(&buffer[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}
