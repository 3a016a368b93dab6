//! steadfast: a declarative delivery engine.
//!
//! Policy files (YAML or TOML, kept in git) describe how each partner is
//! delivered to; the engine interprets them against a durable step log so that
//! no job is lost in a crash and every attempt is recorded.
//!
//! # Layout
//!
//! Data flows top to bottom; dependencies point the same way (nothing below
//! imports `cli`, and `model`, `retry`, `calendar` know nothing of `engine`,
//! `store`, `api`).
//!
//! - [`policy`]: the files as users write them: serde `*Def` types, loading a
//!   directory (YAML/TOML by extension), `${ENV}` expansion, and the table of
//!   key paths to `file:line:col` that every diagnostic uses.
//! - [`compile`]: pure. Resolves names across files and checks every reference,
//!   template, regex and duration; returns every diagnostic at once.
//! - [`model`]: the compiled, immutable policy the engine reads.
//! - [`retry`]: pure maths: backoff delays with jitter and caps, and
//!   classification of a partner's answer into a verdict.
//! - [`calendar`]: pure. Partner calendars: time zone, weekly hours,
//!   holidays, maintenance windows; "is this instant open?", "when does it
//!   next open?", "when does this window end?", DST-correct.
//! - [`lifecycle`]: pure. A job's life: the state machine (where a job
//!   stands + what happened + the policy + the time → a typed move), the
//!   interpreter of an answer inside it, and the stored words (states,
//!   reasons, outcomes, decisions).
//! - [`engine`]: the scheduler that claims due jobs, the executor that
//!   gathers each event of an attempt (I/O only) and applies the machine's
//!   move, and the batched result writer; owns the policy in force; this
//!   node's membership (heartbeats, dead nodes' jobs handed back, limits
//!   and breakers shared among nodes), the paused flows and the pruner.
//! - [`simulate`]: a job on paper: the classifier and the state machine
//!   driven on a manual clock with given answers (and given breaker and
//!   quota refusals), jitter as bounds; no network. What `test` and
//!   `explain` show.
//! - [`policytest`]: policy test cases (`steadfast test`): found beside the
//!   policies, checked, run through [`simulate`], reported as a diff or
//!   JUnit.
//! - [`channels`]: where deliveries go: `http` and `file` spool; and each
//!   channel's state on this node: circuit breaker, rate and concurrency
//!   limits, the token its `refresh_auth` fetched.
//! - [`store`]: the durable step log behind the [`store::StepLog`] trait
//!   (SQLite embedded).
//! - [`reload`]: the policy in force, swapped whole, and the last reload's
//!   outcome.
//! - [`api`]: the HTTP API (axum).
//! - [`payload`]: a job's payload, checked strictly once and then kept as
//!   the client's bytes everywhere it goes.
//! - [`pacing`]: what each channel's history says (hourly insights in the
//!   step log) and the pacing that reads it.
//! - [`node`]: one engine node: step log, engine and API started together.
//! - [`telemetry`]: logs and Prometheus metrics.
//! - [`cli`]: one module per subcommand; `main.rs` only calls [`cli::main`].
//! - [`clock`]: the one source of time, injectable for exact tests.
//! - [`tokens`]: API tokens as data, read by `settings`, checked by `api`.

pub mod alerts;
pub mod api;
pub(crate) mod calendar;
pub mod channels;
pub mod cli;
pub mod clock;
pub mod compile;
pub mod engine;
pub mod expr;
#[doc(hidden)]
pub mod fuzzing;
pub mod lifecycle;
pub mod model;
pub mod node;
pub mod pacing;
pub(crate) mod payload;
pub mod policy;
pub mod policytest;
pub mod reload;
pub mod retry;
pub(crate) mod settings;
pub(crate) mod simulate;
pub mod store;
pub(crate) mod telemetry;
pub(crate) mod tokens;

/// Installs ring as the process's TLS provider, once. reqwest and sqlx share
/// rustls; two providers would make it panic at the first connection.
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The text of a caught panic's payload, for the log and the step log.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}
