//! Reloading the policy in force: load → compile → swap the engine's
//! [`crate::engine::LivePolicy`] whole; on failure the last good set stays
//! and the error is kept for the API.
//!
//! [`Reloader`] does one reload; [`watcher`] runs it when the files change
//! (debounced), on SIGHUP, and on a slow timer as a safety net.

pub(crate) mod watcher;

pub use watcher::{ReloadOutcome, Reloader, WatchConfig, Watcher};
