//! `GET /v1/nodes`: the nodes sharing the step log, each with its version,
//! start, last heartbeat, the jobs it holds running, and whether it is live
//! (a heartbeat within the node timeout). `GET /v1/health`: this node's
//! engine health.

use axum::extract::State;
use axum::Json;
use jiff::Timestamp;
use serde::Serialize;

use super::{ApiError, AppState};
use crate::lifecycle::signed;

/// `GET /v1/nodes`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeList {
    pub nodes: Vec<NodeView>,
}

/// A node sharing the step log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    pub id: String,
    /// The steadfast version it runs.
    pub version: String,
    pub started_at: Timestamp,
    pub heartbeat_at: Timestamp,
    /// Jobs it holds `running`.
    pub running: u64,
    /// A heartbeat within the node timeout.
    pub live: bool,
}

#[utoipa::path(
    get, path = "/v1/nodes", operation_id = "listNodes", tag = "engine",
    responses(
        (status = 200, description = "The nodes sharing the step log, live or not, with their running jobs", body = NodeList),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<NodeList>, ApiError> {
    let nodes = state.store.nodes_list().await?;
    let alive_after = state.clock.now() - signed(state.node_timeout);
    let nodes = nodes
        .into_iter()
        .map(|node| NodeView {
            live: node.heartbeat_at >= alive_after,
            id: node.id,
            version: node.version,
            started_at: node.started_at,
            heartbeat_at: node.heartbeat_at,
            running: node.running,
        })
        .collect();
    Ok(Json(NodeList { nodes }))
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
