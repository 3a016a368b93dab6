//! Logs (tracing) and Prometheus metrics.
//!
//! Metric names, all prefixed `steadfast_`:
//! - `jobs{state}`: jobs by state, read from the step log at each scrape;
//! - `attempts_total{flow,step,channel,outcome}`;
//! - `attempt_duration_seconds{flow,channel}`: histogram;
//! - `claim_lag_seconds`: histogram of start time minus due time;
//! - `policy_reloads_total{result}`;
//! - `notifications_total{flow,result}`;
//! - `holds_total{flow,step,reason}`: jobs held by a step's calendar
//!   (`maintenance`, `off_hours`), before an attempt or instead of a retry.
//! - `breaker_state{channel}` (0 closed, 1 half-open, 2 open) and
//!   `breaker_transitions_total{channel,to}`, `breaker_rejections_total
//!   {channel,action}` (see [`crate::channels::breaker`]);
//! - `channel_waits_total{channel,limit}`: attempts sent back to wait for a
//!   rate or concurrency slot;
//! - `auth_refreshes_total{channel,result}`;
//! - `retries_total{flow,reason}`: retries decided, by the answer that
//!   caused them (`http_503`, `timeout`, …);
//! - `manual_retries_total`: dead jobs an operator sent again;
//! - `quota_rejections_total{flow,scope}`: retries held for the next hour
//!   by the node's (`node`) or the flow's (`flow`) quota;
//! - `dead_letters_total{flow,reason}`: jobs that went to the dead-letter
//!   queue (the growth of `jobs{state="dead"}`);
//! - `attempts_until_success{flow}`: histogram of attempts a job took.
//!
//! `jobs{state}` is refreshed at each scrape and every
//! [`JOB_GAUGES_EVERY`] by the node, so the gauges stay current for
//! exporters that push rather than scrape.

mod attempts;
pub mod traces;

use std::sync::OnceLock;

pub use attempts::AttemptMetrics;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::StateCounts;

/// How often a node refreshes the `jobs{state}` gauges.
pub const JOB_GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 50.0];

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the process-wide metrics recorder once and returns the handle
/// that renders `/metrics`.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("steadfast_attempts_until_success".to_string()),
                        ATTEMPT_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is installed (an embedding
            // program's); ours still renders what it records.
            let _ = metrics::set_global_recorder(recorder);
            start_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds the histograms' recorded samples into their buckets every
/// [`UPKEEP_EVERY`]. A recorder we serve ourselves (rather than through the
/// exporter's own listener) keeps every sample until a scrape or an upkeep
/// folds it: an engine nobody scrapes would hold two samples per attempt for
/// as long as it runs. A thread, because the handle is made before (and
/// outside of) any runtime.
fn start_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(error) = started {
        tracing::error!(%error, "cannot start the metrics upkeep thread; histograms are folded only when /metrics is read");
    }
}

/// Sets the `steadfast_jobs{state}` gauges from fresh counts.
pub fn record_job_counts(counts: &StateCounts) {
    for (state, count) in counts {
        metrics::gauge!("steadfast_jobs", "state" => state.as_str()).set(*count as f64);
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Starts logging to stderr, filtered by `RUST_LOG` (default `info`, or
/// `default_level`). Safe to call more than once.
pub fn init_logs(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
