//! `GET /v1/nodes`: the nodes sharing the step log, each with its version,
//! start, last heartbeat, the jobs it holds running, and whether it is live
//! (a heartbeat within the node timeout). `GET /v1/health`: this node's
//! engine health.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::lifecycle::signed;

#[utoipa::path(
    get, path = "/v1/nodes", operation_id = "listNodes", tag = "engine",
    responses(
        (status = 200, description = "`{\"nodes\": [...]}`: the nodes sharing the step log, live or not, with their running jobs", body = serde_json::Value),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let nodes = state.store.nodes_list().await?;
    let alive_after = state.clock.now() - signed(state.node_timeout);
    let nodes: Vec<Value> = nodes
        .into_iter()
        .map(|node| {
            json!({
                "id": node.id,
                "version": node.version,
                "started_at": node.started_at,
                "heartbeat_at": node.heartbeat_at,
                "running": node.running,
                "live": node.heartbeat_at >= alive_after,
            })
        })
        .collect();
    Ok(Json(json!({ "nodes": nodes })))
}

/// `GET /v1/health`: this node's engine health from the lag of due jobs.
#[utoipa::path(
    get, path = "/v1/health", operation_id = "getEngineHealth", tag = "engine",
    responses(
        (status = 200, description = "This node's health: `green`, `yellow` or `red` by the worst lag of a claimed job over the last five seconds, against `[pacing]`'s thresholds", body = crate::pacing::health::Report),
    ),
    security((), ("token" = [])),
)]
pub async fn health(State(state): State<AppState>) -> Json<crate::pacing::health::Report> {
    Json(state.health.report(state.clock.now()))
}
