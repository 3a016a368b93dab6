//! `GET /v1/flows`, `POST /v1/flows/{flow}/pause` and `/resume`: the flows
//! of the policy in force with their jobs by state, and an operator's pause.
//! A paused flow's due jobs wait `suspended` with reason `paused`, burning
//! no attempt, on every node (each reads the paused flows once a second),
//! across restarts; a resume makes them due at once.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};

use super::{ApiError, AppState, Caller};

#[utoipa::path(
    get, path = "/v1/flows", operation_id = "listFlows", tag = "flows",
    responses(
        (status = 200, description = "`{\"flows\": [...]}`: each flow with its jobs by state, paused or not", body = serde_json::Value),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let policy = state.policy.current();
    let counts = state.store.jobs_count_by_flow().await?;
    let paused = state.store.flows_paused().await?;
    let mut names: Vec<&String> = policy.flows.keys().collect();
    // Flows with jobs but gone from the policy are listed too.
    names.extend(counts.keys().filter(|f| !policy.flows.contains_key(*f)));
    names.sort();
    let flows: Vec<Value> = names
        .into_iter()
        .map(|name| {
            let jobs: Map<String, Value> = counts
                .get(name)
                .map(|by_state| {
                    by_state
                        .iter()
                        .map(|(state, n)| (state.as_str().to_string(), json!(n)))
                        .collect()
                })
                .unwrap_or_default();
            let pause = paused.iter().find(|p| &p.flow == name);
            json!({
                "name": name,
                "in_policy": policy.flows.contains_key(name),
                "paused": pause.is_some(),
                "paused_at": pause.map(|p| p.paused_at),
                "paused_by": pause.map(|p| p.paused_by.clone()),
                "jobs": jobs,
            })
        })
        .collect();
    Ok(Json(json!({ "flows": flows })))
}

#[utoipa::path(
    post, path = "/v1/flows/{flow}/pause", operation_id = "pauseFlow", tag = "flows", params(("flow" = String, Path, description = "A flow of the policy in force")),
    responses(
        (status = 200, description = "Paused (or already was)", body = serde_json::Value),
        (status = 404, description = "No such flow or job", body = crate::api::error::ErrorBody),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn pause(
    State(state): State<AppState>,
    Path(flow): Path<String>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<Value>, ApiError> {
    known(&state, &flow)?;
    let by = caller.map_or_else(|| "local".to_string(), |c| c.0.name.clone());
    let changed = state
        .store
        .flow_pause(&flow, &by, state.clock.now())
        .await?;
    state.paused.pause(&flow);
    if changed {
        tracing::info!(%flow, %by, "flow paused");
    }
    Ok(Json(
        json!({ "flow": flow, "paused": true, "changed": changed }),
    ))
}

#[utoipa::path(
    post, path = "/v1/flows/{flow}/resume", operation_id = "resumeFlow", tag = "flows", params(("flow" = String, Path, description = "A flow of the policy in force")),
    responses(
        (status = 200, description = "Resumed: its held jobs are due now", body = serde_json::Value),
        (status = 404, description = "No such flow or job", body = crate::api::error::ErrorBody),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn resume(
    State(state): State<AppState>,
    Path(flow): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let resumed = state.store.flow_resume(&flow, state.clock.now()).await?;
    state.paused.resume(&flow);
    if let Some(count) = resumed {
        tracing::info!(%flow, jobs = count, "flow resumed");
        state.wake.notify_one();
        sweep_after_resume(&state, flow.clone());
    }
    Ok(Json(json!({
        "flow": flow,
        "paused": false,
        "changed": resumed.is_some(),
        "resumed": resumed.unwrap_or(0),
    })))
}

/// How long after a resume its sweep runs: past the second in which
/// every node reads the paused flows, and past any hold a node was writing
/// as the resume committed.
const RESUME_SWEEP_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// Makes due, a little after a resume, the jobs a node held for the pause
/// as the resume committed (see [`crate::store::StepLog::flow_resume_sweep`]);
/// without it they would wait for the pause's hourly recheck.
fn sweep_after_resume(state: &AppState, flow: String) {
    let (store, clock, wake) = (state.store.clone(), state.clock.clone(), state.wake.clone());
    tokio::spawn(async move {
        tokio::time::sleep(RESUME_SWEEP_AFTER).await;
        match store.flow_resume_sweep(&flow, clock.now()).await {
            Ok(0) => {}
            Ok(count) => {
                tracing::info!(%flow, jobs = count, "jobs held for a pause lifted meanwhile are due");
                wake.notify_one();
            }
            Err(error) => {
                tracing::warn!(%flow, %error, "the sweep after a resume failed; the pause's hourly recheck will find its jobs");
            }
        }
    });
}

/// A flow of the policy in force, or 404 naming the ones that are.
fn known(state: &AppState, flow: &str) -> Result<(), ApiError> {
    let policy = state.policy.current();
    if policy.flow(flow).is_some() {
        return Ok(());
    }
    let known: Vec<&str> = policy.flows.keys().map(String::as_str).collect();
    Err(ApiError::NotFound(format!(
        "no flow `{flow}` in the policy in force; its flows: {}",
        known.join(", ")
    )))
}
