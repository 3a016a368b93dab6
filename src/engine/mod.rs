//! Runs jobs: the [`interpreter`] decides, the [`executor`] runs one attempt,
//! the [`writer`] queues its result, and the [`scheduler`] commits the
//! queued results and claims due jobs for the free worker slots in one
//! transaction per cycle.

pub mod branches;
pub mod executor;
pub(crate) mod gate;
mod live;
mod membership;
mod paused;
pub mod prepare;
mod pruner;
pub(crate) mod scheduler;
#[cfg(test)]
mod testing;
mod workers;
pub(crate) mod writer;

use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub use live::{LivePolicy, ReloadStatus};
pub use membership::HEARTBEAT;
pub use paused::PausedFlows;
pub use pruner::BATCH as PRUNE_BATCH;
pub use scheduler::SchedulerConfig;

use crate::channels::SharedChannels;
use crate::clock::SharedClock;
use crate::store::{SharedStepLog, StoreError};

/// How an engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub scheduler: SchedulerConfig,
    /// This node's id: the owner of its leases, unique among the nodes
    /// sharing the step log.
    pub owner: String,
    /// Silent this long, a node is dead and its running jobs go back to
    /// `pending`.
    pub node_timeout: std::time::Duration,
    /// The step log belongs to this process alone (SQLite): at start, every
    /// job left `running` by a previous run is returned to `pending` at once
    /// instead of waiting for its lease to expire. Ignored (false) for a log
    /// other processes share.
    pub exclusive_store: bool,
    /// Retry quotas per hour, counted on this node.
    pub quotas: crate::retry::quota::QuotaConfig,
    /// How long finished jobs are kept.
    pub retention: crate::store::Retention,
    /// A span per attempt (`[telemetry] otlp_endpoint`); `None`: no tracer.
    pub traces: Option<Arc<crate::telemetry::traces::Traces>>,
    /// The lags past which the engine is yellow, then red (`[pacing]`).
    pub health: crate::pacing::health::Thresholds,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            scheduler: SchedulerConfig::default(),
            owner: format!("node-{}", uuid::Uuid::now_v7().simple()),
            exclusive_store: true,
            node_timeout: std::time::Duration::from_secs(15),
            quotas: crate::retry::quota::QuotaConfig::default(),
            retention: crate::store::Retention::default(),
            traces: None,
            health: crate::pacing::health::Thresholds::default(),
        }
    }
}

/// What the engine is built from.
#[derive(Clone)]
pub struct EngineParts {
    pub store: SharedStepLog,
    pub policy: Arc<LivePolicy>,
    pub channels: SharedChannels,
    pub clock: SharedClock,
    /// Told of every attempt (the alerts count them per flow and minute).
    pub stats: Arc<dyn AttemptObserver>,
}

/// Something told of each attempt the engine makes, without the engine
/// knowing what it is: the alerts' counts implement it.
pub trait AttemptObserver: Send + Sync {
    /// An attempt of `flow` finished at `at`; `retry` when it was not the
    /// first attempt on its channel.
    fn attempted(&self, flow: &str, at: jiff::Timestamp, retry: bool);
}

/// A running engine: scheduler, executors and result writer.
pub struct Engine {
    wake: Arc<Notify>,
    shutdown: watch::Sender<bool>,
    scheduler: JoinHandle<()>,
    store: SharedStepLog,
    owner: String,
    /// Wakes the scheduler on other processes' inserts (shared logs).
    inserts_watch: Option<JoinHandle<()>>,
    node: crate::store::Membership,
    heart: JoinHandle<()>,
    pruner: JoinHandle<()>,
    insights: Arc<crate::pacing::Recorder>,
    insights_flusher: JoinHandle<()>,
    errors: Arc<crate::pacing::ErrorWindows>,
    error_windows: JoinHandle<()>,
    pool_health: JoinHandle<()>,
    health: Arc<crate::pacing::health::EngineHealth>,
    health_gauge: JoinHandle<()>,
    paused: Arc<PausedFlows>,
    traces: Option<Arc<crate::telemetry::traces::Traces>>,
}

impl Engine {
    /// Starts the engine on a tokio runtime.
    pub async fn start(parts: EngineParts, config: EngineConfig) -> Result<Engine, StoreError> {
        let node = crate::store::Membership {
            id: config.owner.clone(),
            instance: uuid::Uuid::now_v7().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        parts.store.node_join(&node, parts.clock.now()).await?;
        // Jobs left running by this node's last run (or, on a log of its
        // own, by anyone) go back to `pending` at once.
        let resumed = if config.exclusive_store && !parts.store.is_shared() {
            parts
                .store
                .leases_rescue(Timestamp::MAX, Timestamp::MAX)
                .await?
        } else {
            parts.store.leases_release(&config.owner).await?
        };
        if resumed > 0 {
            tracing::info!(
                resumed,
                "resuming jobs that were running when this node last stopped"
            );
        }
        let wake = Arc::new(Notify::new());
        let (writer, results) = writer::channel();
        let paused = Arc::new(PausedFlows::default());
        paused.replace(
            parts
                .store
                .flows_paused()
                .await?
                .into_iter()
                .map(|p| p.flow),
        );
        let quotas = Arc::new(crate::retry::quota::RetryQuotas::new(config.quotas.clone()));
        let insights = Arc::new(crate::pacing::Recorder::default());
        let errors = Arc::new(crate::pacing::ErrorWindows::default());
        let health = Arc::new(crate::pacing::health::EngineHealth::new(config.health));
        let executor = executor::Executor {
            policy: parts.policy,
            channels: parts.channels,
            clock: parts.clock,
            store: parts.store.clone(),
            owner: Arc::from(config.owner.as_str()),
            quotas: quotas.clone(),
            paused: paused.clone(),
            stats: parts.stats,
            metrics: Arc::default(),
            traces: config.traces.clone(),
            insights: insights.clone(),
            cuts: Arc::default(),
            errors: errors.clone(),
            health: health.clone(),
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let heart = membership::Heart {
            store: parts.store.clone(),
            clock: executor.clock.clone(),
            node: node.clone(),
            timeout: config.node_timeout,
            wake: wake.clone(),
            channels: executor.channels.clone(),
            quotas,
            policy: executor.policy.clone(),
            paused: paused.clone(),
        };
        let heart = tokio::spawn(heart.run(shutdown_rx.clone()));
        let pruner = pruner::Pruner {
            store: parts.store.clone(),
            clock: executor.clock.clone(),
            retention: config.retention,
        };
        let pruner = tokio::spawn(pruner.run(shutdown_rx.clone()));
        let insights_flusher = tokio::spawn(insights.clone().run(
            parts.store.clone(),
            executor.clock.clone(),
            shutdown_rx.clone(),
        ));
        let watched_policy = executor.policy.clone();
        let slow_channels = move || {
            watched_policy
                .current()
                .channels
                .values()
                .filter_map(|c| c.slow_down.clone().map(|s| (c.name.clone(), s)))
                .collect()
        };
        let healthiest_policy = executor.policy.clone();
        let healthiest_members = move || {
            healthiest_policy
                .current()
                .channels
                .values()
                .filter_map(|c| match &c.kind {
                    crate::model::ChannelKind::Pool(pool)
                        if pool.strategy == crate::model::PoolStrategy::Healthiest =>
                    {
                        Some(pool.members.iter().map(|m| m.name.clone()))
                    }
                    _ => None,
                })
                .flatten()
                .collect()
        };
        let health_gauge = tokio::spawn(crate::pacing::health::publish(
            health.clone(),
            parts.store.clone(),
            executor.clock.clone(),
            shutdown_rx.clone(),
        ));
        let pool_health = tokio::spawn(crate::pacing::pool_health::run(
            parts.store.clone(),
            executor.clock.clone(),
            executor.channels.clone(),
            healthiest_members,
            shutdown_rx.clone(),
        ));
        let error_windows = tokio::spawn(errors.clone().run(
            parts.store.clone(),
            executor.clock.clone(),
            slow_channels,
            shutdown_rx.clone(),
        ));
        let scheduler = scheduler::Scheduler {
            executor,
            writer,
            results,
            config: config.scheduler,
            wake: wake.clone(),
        };
        let scheduler = tokio::spawn(scheduler.run(shutdown_rx));
        let inserts_watch = parts.store.inserts_watch(wake.clone());
        Ok(Engine {
            inserts_watch,
            wake,
            shutdown,
            scheduler,
            store: parts.store,
            owner: config.owner,
            node,
            heart,
            pruner,
            insights,
            insights_flusher,
            errors,
            error_windows,
            pool_health,
            health,
            health_gauge,
            paused,
            traces: config.traces,
        })
    }

    /// The flows paused, as this node knows them.
    pub fn paused(&self) -> Arc<PausedFlows> {
        self.paused.clone()
    }

    /// The engine's health from the lag of due jobs.
    pub fn health(&self) -> Arc<crate::pacing::health::EngineHealth> {
        self.health.clone()
    }

    /// Which channels are past their `slow_down` threshold.
    pub fn errors(&self) -> Arc<crate::pacing::ErrorWindows> {
        self.errors.clone()
    }

    /// This node's channel insights on their way to the step log.
    pub fn insights(&self) -> Arc<crate::pacing::Recorder> {
        self.insights.clone()
    }

    /// A handle that wakes the scheduler (a job was submitted or retried).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Stops claiming, lets attempts in flight finish and commit, then
    /// releases the leases still held.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Some(watch) = &self.inserts_watch {
            watch.abort();
        }
        if let Err(error) = self.scheduler.await {
            tracing::error!(%error, "scheduler task failed");
        }
        match self.store.leases_release(&self.owner).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "released leases at shutdown"),
            Err(error) => tracing::error!(%error, "releasing leases at shutdown failed"),
        }
        let _ = self.heart.await;
        let _ = self.pruner.await;
        let _ = self.insights_flusher.await;
        let _ = self.error_windows.await;
        let _ = self.pool_health.await;
        let _ = self.health_gauge.await;
        // The attempts that finished since the flusher's last turn.
        if let Err(error) = self.insights.flush(&self.store).await {
            tracing::error!(%error, "adding channel insights at shutdown failed");
        }
        if let Err(error) = self.store.node_leave(&self.node).await {
            tracing::error!(%error, "leaving the nodes at shutdown failed");
        }
        if let Some(traces) = self.traces {
            // Waits for the last batch of spans to be sent (off the runtime).
            let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        }
    }
}
