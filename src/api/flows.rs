//! `GET /v1/flows`, `POST /v1/flows/{flow}/pause` and `/resume`: the flows
//! of the policy in force with their jobs by state, and an operator's pause.
//! A paused flow's due jobs wait `suspended` with reason `paused`, burning
//! no attempt, on every node (each reads the paused flows once a second),
//! across restarts; a resume makes them due at once.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use jiff::Timestamp;
use serde::Serialize;

use super::{ApiError, AppState, Caller};

/// `GET /v1/flows`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FlowList {
    pub flows: Vec<FlowSummary>,
}

/// A flow with its jobs by state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FlowSummary {
    pub name: String,
    /// False for a flow gone from the policy that still has jobs.
    pub in_policy: bool,
    pub paused: bool,
    pub paused_at: Option<Timestamp>,
    /// The token (or `local`) that paused it.
    pub paused_by: Option<String>,
    /// Jobs by state (`pending`, `dead`, …); a state without jobs is absent.
    pub jobs: BTreeMap<String, u64>,
}

/// What a pause or a resume did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FlowPause {
    pub flow: String,
    pub paused: bool,
    /// False when the flow already was as asked.
    pub changed: bool,
    /// On a resume: the jobs held for the pause, now due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<u64>,
}

#[utoipa::path(
    get, path = "/v1/flows", operation_id = "listFlows", tag = "flows",
    responses(
        (status = 200, description = "Each flow with its jobs by state, paused or not", body = FlowList),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<FlowList>, ApiError> {
    let policy = state.policy.current();
    let counts = state.store.jobs_count_by_flow().await?;
    let paused = state.store.flows_paused().await?;
    let mut names: Vec<&String> = policy.flows.keys().collect();
    // Flows with jobs but gone from the policy are listed too.
    names.extend(counts.keys().filter(|f| !policy.flows.contains_key(*f)));
    names.sort();
    let flows = names
        .into_iter()
        .map(|name| {
            let jobs = counts
                .get(name)
                .map(|by_state| {
                    by_state
                        .iter()
                        .map(|(state, n)| (state.as_str().to_string(), *n))
                        .collect()
                })
                .unwrap_or_default();
            let pause = paused.iter().find(|p| &p.flow == name);
            FlowSummary {
                name: name.clone(),
                in_policy: policy.flows.contains_key(name),
                paused: pause.is_some(),
                paused_at: pause.map(|p| p.paused_at),
                paused_by: pause.map(|p| p.paused_by.clone()),
                jobs,
            }
        })
        .collect();
    Ok(Json(FlowList { flows }))
}

#[utoipa::path(
    post, path = "/v1/flows/{flow}/pause", operation_id = "pauseFlow", tag = "flows", params(("flow" = String, Path, description = "A flow of the policy in force")),
    responses(
        (status = 200, description = "Paused (or already was)", body = FlowPause),
        (status = 404, description = "No such flow or job", body = crate::api::error::ErrorBody),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn pause(
    State(state): State<AppState>,
    Path(flow): Path<String>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<FlowPause>, ApiError> {
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
    Ok(Json(FlowPause {
        flow,
        paused: true,
        changed,
        resumed: None,
    }))
}

#[utoipa::path(
    post, path = "/v1/flows/{flow}/resume", operation_id = "resumeFlow", tag = "flows", params(("flow" = String, Path, description = "A flow of the policy in force")),
    responses(
        (status = 200, description = "Resumed: its held jobs are due now", body = FlowPause),
        (status = 404, description = "No such flow or job", body = crate::api::error::ErrorBody),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn resume(
    State(state): State<AppState>,
    Path(flow): Path<String>,
) -> Result<Json<FlowPause>, ApiError> {
    let resumed = state.store.flow_resume(&flow, state.clock.now()).await?;
    state.paused.resume(&flow);
    if let Some(count) = resumed {
        tracing::info!(%flow, jobs = count, "flow resumed");
        state.wake.notify_one();
        sweep_after_resume(&state, flow.clone());
    }
    Ok(Json(FlowPause {
        flow,
        paused: false,
        changed: resumed.is_some(),
        resumed: Some(resumed.unwrap_or(0)),
    }))
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
