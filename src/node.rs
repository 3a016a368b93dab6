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
use crate::engine::{Engine, EngineConfig, EngineParts};
use crate::model::CompiledPolicy;
use crate::policy::EnvMode;
use crate::reload::{LivePolicy, PolicyWatcher, Reloader, WatchConfig};
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
}

pub struct NodeConfig {
    pub policy: CompiledPolicy,
    /// `sqlite://PATH`.
    pub db_url: String,
    /// `127.0.0.1:8787`; port 0 picks a free one.
    pub listen: String,
    pub engine: EngineConfig,
    pub clock: SharedClock,
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
    clock: SharedClock,
    reload: Option<(Arc<Reloader>, PolicyWatcher)>,
}

impl Node {
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
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
        let channels = Channels::new().map_err(|e| NodeError::Channels(e.message))?;
        // The recorder first, so that what LivePolicy records at once shows.
        let metrics = crate::telemetry::metrics_handle();
        let policy = Arc::new(LivePolicy::new(config.policy, config.clock.now()));
        let engine = Engine::start(
            EngineParts {
                store: store.clone(),
                policy: policy.clone(),
                channels: Arc::new(channels),
                clock: config.clock.clone(),
            },
            config.engine,
        )
        .await?;
        let state = AppState {
            store: store.clone(),
            policy: policy.clone(),
            clock: config.clock.clone(),
            wake: engine.waker(),
            metrics,
        };
        let (stop_api, stopped) = oneshot::channel::<()>();
        let api = tokio::spawn(api::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Ok(Node {
            addr,
            store,
            policy,
            engine,
            api,
            stop_api,
            clock: config.clock,
            reload: None,
        })
    }

    /// Keeps the policy in force in step with the files at `paths` (what
    /// the policy was first loaded from): a debounced watcher and a periodic
    /// rescan reload them on change, and a reload that brings a flow back
    /// resumes its jobs suspended with `flow_removed`. Returns the reloader,
    /// for `SIGHUP` or a test to force a reload. Calling it again replaces
    /// the previous watcher.
    pub async fn watch_policies(
        &mut self,
        paths: Vec<PathBuf>,
        env: EnvMode,
        config: WatchConfig,
    ) -> Arc<Reloader> {
        if let Some((_, watcher)) = self.reload.take() {
            watcher.stop().await;
        }
        let reloader = Arc::new(
            Reloader::new(paths, env, self.policy.clone(), self.clock.clone())
                .resuming_jobs_in(self.store.clone(), self.engine.waker()),
        );
        let watcher = PolicyWatcher::start(reloader.clone(), config, self.clock.clone());
        self.reload = Some((reloader.clone(), watcher));
        reloader
    }

    /// The reloader started by [`Node::watch_policies`], if any.
    pub fn reloader(&self) -> Option<Arc<Reloader>> {
        self.reload.as_ref().map(|(reloader, _)| reloader.clone())
    }

    /// The API's base URL, e.g. `http://127.0.0.1:8787`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops watching the policies and taking requests, then stops the
    /// engine: no new claims, attempts in flight finish and commit, leases
    /// are released.
    pub async fn shutdown(self) {
        if let Some((_, watcher)) = self.reload {
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
