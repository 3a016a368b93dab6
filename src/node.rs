//! One engine node: the step log, the engine and the HTTP API, started and
//! stopped together. `run`, `demo` and the integration tests all start one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::channels::Channels;
use crate::clock::SharedClock;
use crate::engine::LivePolicy;
use crate::engine::{Engine, EngineConfig, EngineParts};
use crate::model::CompiledPolicy;
use crate::policy::EnvMode;
use crate::reload::{Reloader, WatchConfig, Watcher};
use crate::store::{self, SharedStepLog, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("step log: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP channels: {0}")]
    Channels(String),
    #[error("cannot watch the policy files: {0}")]
    Watch(#[from] notify::Error),
}

/// Where the policy came from, to reload it when the files change.
pub struct ReloadSource {
    pub paths: Vec<PathBuf>,
    pub env: EnvMode,
    pub watch: WatchConfig,
}

pub struct NodeConfig {
    pub policy: CompiledPolicy,
    /// `sqlite://PATH`.
    pub db_url: String,
    /// `127.0.0.1:8787`; port 0 picks a free one.
    pub listen: String,
    pub engine: EngineConfig,
    pub clock: SharedClock,
    /// Watch the policy files and reload on change; `None`: the policy is
    /// fixed for the node's life.
    pub reload: Option<ReloadSource>,
    /// The API's tokens; none: the API is open (loopback only, which
    /// `steadfast run` enforces).
    pub tokens: Vec<api::Token>,
    /// Alert rules, checked on this node.
    pub alerts: crate::alerts::AlertsConfig,
    /// The API listener's bounds.
    pub serve: api::ServeConfig,
}

/// A running node.
pub struct Node {
    /// Where the API listens.
    pub addr: SocketAddr,
    pub store: SharedStepLog,
    pub policy: Arc<LivePolicy>,
    engine: Engine,
    api: JoinHandle<std::io::Result<()>>,
    stop_api: oneshot::Sender<()>,
    reloader: Option<Arc<Reloader>>,
    watcher: Option<Watcher>,
    gauges: JoinHandle<()>,
    alerter: Option<JoinHandle<()>>,
    /// Held until the node is dropped, after its shutdown.
    _lock: Option<store::sqlite::lock::EngineLock>,
}

impl Node {
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        // Before the file is opened at all: a second engine must not even
        // run migrations on a file a live engine writes.
        let mut lock = store::engine_lock(&config.db_url)?;
        let store = store::open(&config.db_url).await?;
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| NodeError::Listen {
                    addr: config.listen.clone(),
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| NodeError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
        if let Some(lock) = &mut lock {
            let pid = std::process::id().to_string();
            lock.record(&[("pid", &pid), ("api", &format!("http://{addr}"))]);
        }
        let channels = Arc::new(Channels::new().map_err(|e| NodeError::Channels(e.message))?);
        let policy = Arc::new(LivePolicy::new(config.policy, config.clock.now()));
        let stats = Arc::new(crate::alerts::AttemptStats::default());
        let alerter = (!config.alerts.rules.is_empty()).then(|| {
            let alerter = crate::alerts::Alerter::new(
                config.alerts.rules.clone(),
                store.clone(),
                policy.clone(),
                channels.clone(),
                config.clock.clone(),
                stats.clone(),
            );
            tokio::spawn(alerter.run(config.alerts.check_every))
        });
        let node_timeout = config.engine.node_timeout;
        // The recorder first: the engine's tasks set gauges from their
        // first turn.
        let metrics = crate::telemetry::metrics_handle();
        let engine = Engine::start(
            EngineParts {
                store: store.clone(),
                policy: policy.clone(),
                channels: channels.clone(),
                clock: config.clock.clone(),
                stats: stats.clone(),
            },
            config.engine,
        )
        .await?;
        let (reloader, watcher) = match config.reload {
            Some(source) => {
                let reloader = Arc::new(Reloader::new(
                    source.paths,
                    source.env,
                    policy.clone(),
                    config.clock.clone(),
                ));
                let watcher = Watcher::start(
                    reloader.clone(),
                    source.watch,
                    resume_after_reload(store.clone(), config.clock.clone(), engine.waker()),
                )?;
                (Some(reloader), Some(watcher))
            }
            None => (None, None),
        };
        let state = AppState {
            store: store.clone(),
            policy: policy.clone(),
            clock: config.clock,
            wake: engine.waker(),
            metrics,
            channels,
            access: api::Access::new(&config.tokens, addr.ip().is_loopback()),
            operations: Arc::new(api::dlq::Operations::default()),
            insights: engine.insights(),
            errors: engine.errors(),
            health: engine.health(),
            node_timeout,
            paused: engine.paused(),
            console: Arc::default(),
        };
        let (stop_api, stopped) = oneshot::channel::<()>();
        let api = tokio::spawn(api::serve(listener, state, config.serve, async {
            let _ = stopped.await;
        }));
        let gauges = tokio::spawn(refresh_job_gauges(store.clone()));
        Ok(Node {
            _lock: lock,
            gauges,
            alerter,
            addr,
            store,
            policy,
            engine,
            api,
            stop_api,
            reloader,
            watcher,
        })
    }

    /// Reloads the policy files now (SIGHUP); a node without a reload
    /// source keeps its policy.
    pub fn reload(&self) {
        if let Some(watcher) = &self.watcher {
            watcher.reload();
        }
    }

    /// The reloader, to reload synchronously (tests, benchmarks).
    pub fn reloader(&self) -> Option<&Arc<Reloader>> {
        self.reloader.as_ref()
    }

    /// The API's base URL, e.g. `http://127.0.0.1:8787`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops taking requests, then stops the engine: no new claims, attempts
    /// in flight finish and commit, leases are released.
    pub async fn shutdown(self) {
        self.gauges.abort();
        if let Some(alerter) = &self.alerter {
            alerter.abort();
        }
        if let Some(watcher) = self.watcher {
            watcher.stop().await;
        }
        let _ = self.stop_api.send(());
        match self.api.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "API server failed"),
            Err(error) => tracing::error!(%error, "API task failed"),
        }
        self.engine.shutdown().await;
    }
}

/// Keeps the `jobs{state}` gauges current between scrapes.
async fn refresh_job_gauges(store: SharedStepLog) {
    loop {
        match store.jobs_count_by_state().await {
            Ok(counts) => crate::telemetry::record_job_counts(&counts),
            Err(error) => tracing::warn!(%error, "counting jobs by state failed"),
        }
        tokio::time::sleep(crate::telemetry::JOB_GAUGES_EVERY).await;
    }
}

/// After a new policy is in force, jobs suspended because their flow was
/// missing are looked at again at once instead of at their next recheck.
fn resume_after_reload(
    store: SharedStepLog,
    clock: SharedClock,
    wake: Arc<tokio::sync::Notify>,
) -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(move || {
        let (store, now, wake) = (store.clone(), clock.now(), wake.clone());
        tokio::spawn(async move {
            match store
                .jobs_resume(crate::lifecycle::Reason::FlowRemoved, now)
                .await
            {
                Ok(0) => {}
                Ok(count) => {
                    tracing::info!(count, "jobs whose flow was missing are looked at again");
                    wake.notify_one();
                }
                Err(error) => tracing::error!(%error, "resuming jobs after a reload failed"),
            }
        });
    })
}
