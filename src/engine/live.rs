//! The policy in force, owned by the engine: every attempt reads the
//! current version; a reload swaps in a whole new one (or records why it
//! could not), and the API shows how the last reload went.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use jiff::Timestamp;
use serde::Serialize;

use crate::model::CompiledPolicy;

/// The compiled policy every attempt reads, and how the last reload went.
pub struct LivePolicy {
    current: ArcSwap<CompiledPolicy>,
    status: Mutex<ReloadStatus>,
}

/// What `GET /v1/policies` shows besides the policy itself.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    pub loaded_at: Timestamp,
    /// The problems of the last failed reload, `file:line:col: message`
    /// each; empty when the last reload succeeded.
    pub last_error: Vec<String>,
    pub last_error_at: Option<Timestamp>,
    /// Reloads that put a new version in force since the start.
    pub reloads: u64,
    /// Reloads refused because the files had errors.
    pub failed_reloads: u64,
}

impl LivePolicy {
    pub fn new(policy: CompiledPolicy, now: Timestamp) -> Self {
        record_loaded_at(now);
        Self {
            current: ArcSwap::from_pointee(policy),
            status: Mutex::new(ReloadStatus {
                loaded_at: now,
                last_error: Vec::new(),
                last_error_at: None,
                reloads: 0,
                failed_reloads: 0,
            }),
        }
    }

    /// The policy in force now; cheap, lock-free.
    pub fn current(&self) -> Arc<CompiledPolicy> {
        self.current.load_full()
    }

    /// Puts a new policy in force.
    pub fn swap(&self, policy: CompiledPolicy, now: Timestamp) {
        self.current.store(Arc::new(policy));
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.loaded_at = now;
        status.last_error.clear();
        status.last_error_at = None;
        status.reloads += 1;
        record_loaded_at(now);
        metrics::counter!("steadfast_policy_reloads_total", "result" => "success").increment(1);
    }

    /// Records a reload that found the version in force: a bad edit that was
    /// reverted clears its error.
    pub fn unchanged(&self) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if !status.last_error.is_empty() {
            status.last_error.clear();
            status.last_error_at = None;
        }
        metrics::counter!("steadfast_policy_reloads_total", "result" => "unchanged").increment(1);
    }

    /// Records a failed reload; the policy in force does not change.
    pub fn reject(&self, errors: Vec<String>, now: Timestamp) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.last_error = errors;
        status.last_error_at = Some(now);
        status.failed_reloads += 1;
        metrics::counter!("steadfast_policy_reloads_total", "result" => "error").increment(1);
    }

    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn record_loaded_at(at: Timestamp) {
    metrics::gauge!("steadfast_policy_loaded_timestamp_seconds")
        .set(at.as_millisecond() as f64 / 1000.0);
}
