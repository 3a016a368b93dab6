//! The policy in force, swapped whole: load → compile → swap the `Arc`; on
//! failure the last good set stays and the error is kept for the API.
//!
//! - [`LivePolicy`]: the compiled policy every attempt reads (lock-free) and
//!   how reloads went ([`ReloadStatus`]), counted in `/metrics`.
//! - [`Reloader`]: reads the policy paths again, compiles, swaps on success
//!   and records the error on failure; `SIGHUP` and the tests call
//!   [`Reloader::reload_now`].
//! - [`PolicyWatcher`]: a debounced file watcher (plus a cheap periodic
//!   rescan) that calls the reloader when the files change.

mod reloader;
mod watcher;

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use jiff::Timestamp;
use serde::Serialize;

pub use reloader::{ReloadCause, ReloadOutcome, Reloader};
pub use watcher::{PolicyWatcher, WatchConfig};

use crate::model::CompiledPolicy;

/// The compiled policy every attempt reads, and how the last reload went.
pub struct LivePolicy {
    current: ArcSwap<CompiledPolicy>,
    status: Mutex<ReloadStatus>,
}

/// What `GET /v1/policies` shows besides the policy itself.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// When the policy in force was put in force.
    pub loaded_at: Timestamp,
    /// The problems of the last reload when it failed, `file:line:col:
    /// error: message` each: the files on disk are then not the set in
    /// force. Empty once a reload succeeds (or finds nothing new).
    pub last_error: Vec<String>,
    pub last_error_at: Option<Timestamp>,
    /// When the files were last read because of a change, a signal or a
    /// rescan that found something new; `None` before the first reload.
    pub last_reload_at: Option<Timestamp>,
    pub reloads: ReloadCounts,
}

/// Reloads since start, by result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReloadCounts {
    /// A new version was put in force.
    pub ok: u64,
    /// The files had errors; the last good set stayed in force.
    pub error: u64,
    /// The files were read again and were the set in force.
    pub unchanged: u64,
}

/// `steadfast_policy_reloads_total{result}`.
const RELOADS_METRIC: &str = "steadfast_policy_reloads_total";
/// `steadfast_policy_loaded_timestamp_seconds`: when the version in force
/// was loaded, as Unix seconds.
const LOADED_METRIC: &str = "steadfast_policy_loaded_timestamp_seconds";

impl LivePolicy {
    pub fn new(policy: CompiledPolicy, now: Timestamp) -> Self {
        // Every result shows in `/metrics` from the start, at 0.
        for result in ["ok", "error", "unchanged"] {
            metrics::counter!(RELOADS_METRIC, "result" => result).increment(0);
        }
        metrics::gauge!(LOADED_METRIC).set(unix_seconds(now));
        Self {
            current: ArcSwap::from_pointee(policy),
            status: Mutex::new(ReloadStatus {
                loaded_at: now,
                last_error: Vec::new(),
                last_error_at: None,
                last_reload_at: None,
                reloads: ReloadCounts::default(),
            }),
        }
    }

    /// The policy in force now; cheap, lock-free.
    pub fn current(&self) -> Arc<CompiledPolicy> {
        self.current.load_full()
    }

    /// Puts a new policy in force; returns the one it replaces.
    pub fn swap(&self, policy: CompiledPolicy, now: Timestamp) -> Arc<CompiledPolicy> {
        let old = self.current.swap(Arc::new(policy));
        let mut status = self.lock();
        status.loaded_at = now;
        status.last_error.clear();
        status.last_error_at = None;
        status.last_reload_at = Some(now);
        status.reloads.ok += 1;
        metrics::counter!(RELOADS_METRIC, "result" => "ok").increment(1);
        metrics::gauge!(LOADED_METRIC).set(unix_seconds(now));
        old
    }

    /// Records a failed reload; the policy in force does not change.
    pub fn reject(&self, errors: Vec<String>, now: Timestamp) {
        let mut status = self.lock();
        status.last_error = errors;
        status.last_error_at = Some(now);
        status.last_reload_at = Some(now);
        status.reloads.error += 1;
        metrics::counter!(RELOADS_METRIC, "result" => "error").increment(1);
    }

    /// Records a reload that found the files to be the set in force: a
    /// change undone, or an edit that changed nothing. Clears the last
    /// error, since what is on disk is what runs.
    pub fn unchanged(&self, now: Timestamp) {
        let mut status = self.lock();
        status.last_error.clear();
        status.last_error_at = None;
        status.last_reload_at = Some(now);
        status.reloads.unchanged += 1;
        metrics::counter!(RELOADS_METRIC, "result" => "unchanged").increment(1);
    }

    pub fn status(&self) -> ReloadStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReloadStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn unix_seconds(at: Timestamp) -> f64 {
    at.as_millisecond() as f64 / 1000.0
}
