//! The HTTP API of PRODUCT.md: submit jobs, inspect them and the policy in
//! force, health and Prometheus metrics.

pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod channels;
pub mod console;
pub(crate) mod dlq;
mod error;
pub(crate) mod flows;
pub(crate) mod guesses;
pub(crate) mod jobs;
mod nodes;
pub mod openapi;
mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower_http::timeout::TimeoutLayer;

pub use auth::{Access, Caller, Scope, Token};
pub use error::ApiError;
pub use server::{connection_bound, ServeConfig};

use crate::channels::SharedChannels;
use crate::clock::SharedClock;
use crate::engine::LivePolicy;
use crate::store::SharedStepLog;

/// The largest request body accepted: 10 MiB (a batch of jobs).
pub const BODY_LIMIT: usize = 10 * 1024 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: SharedStepLog,
    pub policy: Arc<LivePolicy>,
    pub clock: SharedClock,
    /// Wakes the scheduler when a job may be due now.
    pub wake: Arc<Notify>,
    pub metrics: PrometheusHandle,
    /// Each channel's breaker, limits and token state on this node.
    pub channels: SharedChannels,
    /// The API's tokens.
    pub access: Access,
    /// Bulk operations running or recently done on this node.
    pub operations: Arc<dlq::Operations>,
    /// This node's channel insights, flushed before a read.
    pub insights: Arc<crate::pacing::Recorder>,
    /// Which channels are past their `slow_down` threshold.
    pub errors: Arc<crate::pacing::ErrorWindows>,
    /// The engine's health from the lag of due jobs.
    pub health: Arc<crate::pacing::health::EngineHealth>,
    /// Silent this long, a node is dead (for `GET /v1/nodes`).
    pub node_timeout: std::time::Duration,
    /// The flows paused, as this node's engine knows them.
    pub paused: Arc<crate::engine::PausedFlows>,
    /// The console's sessions and cached counts.
    pub console: Arc<console::Console>,
}

pub fn router(state: AppState) -> Router {
    let console = console::router(state.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/v1/policies", get(policies))
        .route("/v1/channels", get(channels::list))
        .route("/v1/channels/{name}", get(channels::show))
        .route("/v1/channels/{name}/insights", get(channels::insights))
        .route("/v1/flows/{flow}/jobs", post(jobs::submit))
        .route("/v1/flows/{flow}/jobs:batch", post(jobs::submit_batch))
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::show).patch(jobs::edit))
        .route("/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/dlq/retry", post(dlq::retry))
        .route("/v1/operations", get(dlq::operations))
        .route("/v1/operations/{id}", get(dlq::operation))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/health", get(nodes::health))
        .route("/v1/flows", get(flows::list))
        .route("/v1/flows/{flow}/pause", post(flows::pause))
        .route("/v1/flows/{flow}/resume", post(flows::resume))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::check,
        ))
        // The console checks its own sessions; the limits below hold for it too.
        .merge(console)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(60),
        ))
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(state)
}

/// Serves the API until `shutdown` completes, then finishes the requests in
/// flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router(state), config, shutdown).await
}

#[utoipa::path(
    get, path = "/healthz", operation_id = "healthz", tag = "engine",
    responses((status = 200, description = "`{\"status\": \"ok\"}` while the process serves", body = serde_json::Value)),
)]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: 200 while the step log takes writes, 503 (with
/// `Retry-After`) while it cannot; `/healthz` stays plain liveness.
#[utoipa::path(
    get, path = "/readyz", operation_id = "readyz", tag = "engine",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}` while the step log takes writes", body = serde_json::Value),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.store.writable().await.map_err(|error| {
        if error.is_unavailable() {
            ApiError::Unavailable(error.to_string())
        } else {
            ApiError::Unavailable(format!("the step log refused a write: {error}"))
        }
    })?;
    Ok(Json(json!({ "status": "ready" })))
}

#[utoipa::path(
    get, path = "/metrics", operation_id = "metrics", tag = "engine",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)),
)]
async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let counts = state.store.jobs_count_by_state().await?;
    crate::telemetry::record_job_counts(&counts);
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    ))
}

#[utoipa::path(
    get, path = "/v1/policies", operation_id = "getPolicy", tag = "engine",
    responses((status = 200, description = "The policy in force: version, files, names, and the last reload and its error", body = PolicyView)),
    security((), ("token" = [])),
)]
async fn policies(State(state): State<AppState>) -> Json<PolicyView> {
    let policy = state.policy.current();
    let status = state.policy.status();
    Json(PolicyView {
        version: policy.version.to_string(),
        files: policy
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect(),
        loaded_at: status.loaded_at,
        last_error: status.last_error,
        last_error_at: status.last_error_at,
        reloads: status.reloads,
        failed_reloads: status.failed_reloads,
        flows: policy.flows.keys().cloned().collect(),
        channels: policy
            .channels
            .values()
            .map(|c| ChannelName {
                name: c.name.clone(),
                kind: c.kind.kind_name().to_string(),
            })
            .collect(),
        templates: policy.templates.keys().cloned().collect(),
        classifiers: policy.classifiers.keys().cloned().collect(),
    })
}

/// `GET /v1/policies`: the policy in force and how its reloads went.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PolicyView {
    /// The version in force (a hash of its files).
    pub version: String,
    pub files: Vec<String>,
    /// When the version in force was loaded.
    pub loaded_at: jiff::Timestamp,
    /// The problems of the last failed reload, `file:line:col: message`
    /// each; empty when the last reload succeeded.
    pub last_error: Vec<String>,
    pub last_error_at: Option<jiff::Timestamp>,
    /// Reloads that put a new version in force since the start.
    pub reloads: u64,
    /// Reloads refused because the files had errors.
    pub failed_reloads: u64,
    pub flows: Vec<String>,
    pub channels: Vec<ChannelName>,
    pub templates: Vec<String>,
    pub classifiers: Vec<String>,
}

/// A channel of the policy and its kind (`http`, `file`, `pool`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ChannelName {
    pub name: String,
    pub kind: String,
}

#[utoipa::path(
    get, path = "/v1/openapi.json", operation_id = "getOpenApi", tag = "engine",
    responses((status = 200, description = "This document", body = serde_json::Value)),
)]
async fn openapi_json() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], openapi::document())
}

async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    if uri.path().starts_with("/ui/") {
        return console::not_found();
    }
    ApiError::NotFound(
        "no such endpoint; see the API reference in the README (e.g. POST /v1/flows/{flow}/jobs, GET /v1/jobs)"
            .to_string(),
    )
    .into_response()
}
