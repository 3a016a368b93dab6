//! What the engine's unit tests build an executor from.

use std::sync::Arc;

use jiff::Timestamp;

use super::executor::Executor;
use super::{AttemptObserver, LivePolicy};
use crate::channels::Channels;
use crate::clock::ManualClock;
use crate::compile::compile;
use crate::policy::{EnvMode, Format, SourceFile};

/// Counts nothing.
pub struct NoStats;

impl AttemptObserver for NoStats {
    fn attempted(&self, _: &str, _: Timestamp, _: bool) {}
}

/// An executor of the policy `yaml` on a manual clock at `now`, over a
/// step log of its own (a temporary SQLite file).
pub async fn executor(yaml: &str, now: Timestamp) -> Executor {
    let compiled = compile(
        &[SourceFile::new("p.yaml", yaml, Format::Yaml)],
        &EnvMode::Placeholders,
    );
    assert!(!compiled.has_errors(), "{:#?}", compiled.diagnostics);
    let policy = compiled.policy.expect("the test policy compiles");
    Executor {
        policy: Arc::new(LivePolicy::new(policy, now)),
        channels: Arc::new(Channels::new().expect("channels")),
        clock: Arc::new(ManualClock::new(now)),
        store: crate::store::open("sqlite::memory:")
            .await
            .expect("a step log"),
        owner: "node".into(),
        quotas: Arc::new(crate::retry::quota::RetryQuotas::new(Default::default())),
        paused: Arc::default(),
        stats: Arc::new(NoStats),
        metrics: Default::default(),
        traces: None,
        insights: Arc::default(),
        cuts: Arc::default(),
        errors: Arc::default(),
        health: Arc::default(),
    }
}
