//! Bulk retry of dead jobs as an operation with an id: `POST /v1/dlq/retry`
//! answers 202 at once, a task retries the jobs in short batches, and
//! `GET /v1/operations/{id}` reports its progress.
//!
//! Operations live in the memory of the node that runs them (the last
//! [`KEPT_OPERATIONS`] are kept): they are progress reports, not state; the
//! jobs' own rows are the truth, so a node restarting mid-way loses only the
//! report, and running the same retry again picks up what is still dead.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::body::JsonBody;
use super::jobs::FilterQuery;
use super::{ApiError, AppState};
use crate::store::{JobFilter, JobUpdate};

/// Jobs retried per transaction: small enough that the engine's own writes
/// are never kept waiting long.
pub const RETRY_BATCH: u32 = 500;
/// Default pace of a bulk retry: how many retried jobs become due per
/// second.
pub const DEFAULT_RATE_PER_SECOND: f64 = 1000.0;
/// The most ids one request may list; larger sets go by filter.
pub const MAX_IDS: usize = 10_000;
/// Finished operations kept for `GET /v1/operations/{id}`.
pub const KEPT_OPERATIONS: usize = 100;

/// The progress of one bulk operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Operation {
    pub id: String,
    pub kind: String,
    /// Jobs the operation is to look at (for a filter: the dead jobs that
    /// matched when it started, plus any that died since and matched).
    pub matched: u64,
    pub retried: u64,
    /// Jobs not retried: not found, or no longer dead.
    pub skipped: u64,
    pub done: bool,
    /// Set when the operation stopped on an error.
    pub error: Option<String>,
    /// Retried jobs become due at this many per second.
    pub rate_per_second: f64,
    pub started_at: Timestamp,
    /// When the first retried job becomes due: `started_at`, or the `at`
    /// asked for. Until then the jobs wait `pending`, their retry
    /// scheduled.
    pub runs_at: Timestamp,
    /// Whether `runs_at` is still ahead (as of this report).
    pub scheduled: bool,
    pub finished_at: Option<Timestamp>,
    /// The first ids skipped (up to 100), to look at.
    pub skipped_ids: Vec<String>,
}

/// The operations of this node.
#[derive(Default)]
pub struct Operations {
    inner: Mutex<OperationsInner>,
}

#[derive(Default)]
struct OperationsInner {
    by_id: HashMap<String, Operation>,
    order: VecDeque<String>,
}

impl Operations {
    fn insert(&self, operation: Operation) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.order.push_back(operation.id.clone());
        inner.by_id.insert(operation.id.clone(), operation);
        // Forget the oldest finished ones; running ones are always kept.
        while inner.order.len() > KEPT_OPERATIONS {
            let Some(position) = inner
                .order
                .iter()
                .position(|id| inner.by_id.get(id).is_none_or(|op| op.done))
            else {
                break;
            };
            if let Some(id) = inner.order.remove(position) {
                inner.by_id.remove(&id);
            }
        }
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut Operation)) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(operation) = inner.by_id.get_mut(id) {
            change(operation);
        }
    }

    /// Every operation kept, newest first.
    pub fn list(&self) -> Vec<Operation> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .order
            .iter()
            .rev()
            .filter_map(|id| inner.by_id.get(id).cloned())
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Operation> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_id.get(id).cloned()
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// These jobs.
    pub ids: Option<Vec<String>>,
    /// Every dead job matching this (`{}`: every dead job).
    pub filter: Option<FilterQuery>,
    /// Shorthand for `{"filter": {"flow": …}}`.
    pub flow: Option<String>,
    /// `500/s`, `30/m`, `10000/h`, or a number per second.
    #[schema(value_type = Option<serde_json::Value>)]
    pub rate: Option<Value>,
    /// Schedules the retry: the first job becomes due at this time (RFC
    /// 3339, e.g. `2026-12-07T02:00:00Z`), the rest at `rate` after it;
    /// until then they wait `pending`. At most [`MAX_AHEAD_DAYS`] days
    /// ahead. Now, unless given.
    #[schema(value_type = Option<String>)]
    pub at: Option<Timestamp>,
}

/// How far ahead a bulk retry may be scheduled.
pub const MAX_AHEAD_DAYS: i64 = 30;

/// The slowest bulk retry: one an hour.
const MIN_RATE_PER_SECOND: f64 = 1.0 / 3600.0;

/// Reads a rate: `N/s`, `N/m`, `N/h`, or a plain number per second.
pub fn parse_rate(value: &Value) -> Result<f64, String> {
    let hint = "write the rate as 500/s, 30/m, 10000/h or a number per second";
    let per_second = match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| hint.to_string())?,
        Value::String(text) => {
            let text = text.trim();
            let (count, per) = text.split_once('/').unwrap_or((text, "s"));
            let count: f64 = count
                .trim()
                .parse()
                .map_err(|_| format!("rate `{text}`: {hint}"))?;
            let seconds = match per.trim() {
                "s" | "sec" | "second" => 1.0,
                "m" | "min" | "minute" => 60.0,
                "h" | "hour" => 3600.0,
                other => return Err(format!("rate `{text}`: unknown unit `{other}`; {hint}")),
            };
            count / seconds
        }
        _ => return Err(hint.to_string()),
    };
    if !per_second.is_finite() || per_second <= 0.0 {
        return Err(format!("the rate must be more than 0; {hint}"));
    }
    // Slower would space retries past any sensible horizon (and past the
    // end of representable time for a large batch).
    if per_second < MIN_RATE_PER_SECOND {
        return Err(format!(
            "the rate must be at least 1/h (one retry an hour); {hint}"
        ));
    }
    Ok(per_second)
}

/// A bulk operation started.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OperationStarted {
    /// Followed at `GET /v1/operations/{id}`.
    pub operation: String,
}

/// `POST /v1/dlq/retry`: 202 `{"operation": id}`.
#[utoipa::path(
    post, path = "/v1/dlq/retry", operation_id = "retryDeadJobs", tag = "dead-letter queue",
    request_body = RetryRequest,
    responses(
        (status = 202, description = "Started: followed at GET /v1/operations/{id}", body = OperationStarted),
        (status = 400, description = "The body or a parameter is not what it should be", body = crate::api::error::ErrorBody),
        (status = 422, description = "Well-formed but refused", body = crate::api::error::ErrorBody),
        (status = 413, description = "The body is larger than 10 MiB", body = crate::api::error::ErrorBody),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn retry(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<RetryRequest>,
) -> Result<(StatusCode, Json<OperationStarted>), ApiError> {
    let rate = match &request.rate {
        Some(value) => parse_rate(value).map_err(ApiError::Unprocessable)?,
        None => DEFAULT_RATE_PER_SECOND,
    };
    let now = state.clock.now();
    let runs_at = match request.at {
        None => now,
        Some(at) => {
            // A minute's grace: `--at` resolved on a client a moment ago.
            if at < now - jiff::SignedDuration::from_secs(60) {
                return Err(ApiError::Unprocessable(format!(
                    "`at` {at} is in the past (now {now}): give a time ahead, or leave `at` out \
                     to retry now"
                )));
            }
            if at > now + jiff::SignedDuration::from_hours(24 * MAX_AHEAD_DAYS) {
                return Err(ApiError::Unprocessable(format!(
                    "`at` {at} is more than {MAX_AHEAD_DAYS} days ahead: schedule it closer"
                )));
            }
            // The step log keeps milliseconds: so does the schedule.
            let at = Timestamp::from_millisecond(at.as_millisecond()).unwrap_or(at);
            at.max(now)
        }
    };
    let target = match (request.ids, request.filter, request.flow) {
        (Some(ids), None, None) => {
            if ids.is_empty() {
                return Err(ApiError::Unprocessable(
                    "body field `ids` is empty: list the dead jobs to retry".into(),
                ));
            }
            if ids.len() > MAX_IDS {
                return Err(ApiError::Unprocessable(format!(
                    "{} ids in one request; the limit is {MAX_IDS}: retry larger sets with a `filter`",
                    ids.len()
                )));
            }
            Target::Ids(ids)
        }
        (None, Some(filter), None) => Target::Filter(filter.to_filter(now)?),
        (None, None, Some(flow)) => Target::Filter(
            FilterQuery {
                flow: Some(flow),
                ..FilterQuery::default()
            }
            .to_filter(now)?,
        ),
        (None, None, None) => {
            return Err(ApiError::Unprocessable(
                "say which dead jobs to retry: {\"ids\": [...]}, or {\"filter\": {...}} \
                 ({\"filter\": {}} retries every dead job)"
                    .into(),
            ))
        }
        _ => {
            return Err(ApiError::Unprocessable(
                "send either `ids` or `filter` (or `flow`), not several".into(),
            ))
        }
    };
    if let Target::Filter(filter) = &target {
        if let Some(flow) = &filter.flow {
            // An unknown flow is most likely a typo; dead jobs of a flow since
            // removed from the policy can still be retried (they suspend
            // with reason `flow_removed` until it is back).
            let policy = state.policy.current();
            if policy.flow(flow).is_none() && state.store.jobs_count(filter).await? == 0 {
                return Err(ApiError::NotFound(format!(
                    "no flow `{flow}` in force and no jobs of it; check the name"
                )));
            }
        }
    }
    let matched = match &target {
        Target::Ids(ids) => ids.len() as u64,
        Target::Filter(filter) => {
            let mut dead = filter.clone();
            dead.state = Some(crate::store::JobState::Dead);
            state.store.jobs_count(&dead).await?
        }
    };
    let id = uuid::Uuid::now_v7().to_string();
    state.operations.insert(Operation {
        id: id.clone(),
        kind: "dlq_retry".into(),
        matched,
        retried: 0,
        skipped: 0,
        done: false,
        error: None,
        rate_per_second: rate,
        started_at: now,
        runs_at,
        scheduled: runs_at > now,
        finished_at: None,
        skipped_ids: Vec::new(),
    });
    tokio::spawn(run_retry(state.clone(), id.clone(), target, rate, runs_at));
    Ok((
        StatusCode::ACCEPTED,
        Json(OperationStarted {
            operation: id.to_string(),
        }),
    ))
}

enum Target {
    Ids(Vec<String>),
    Filter(JobFilter),
}

/// Retries the jobs batch by batch; the k-th retried job is due at
/// `start + k / rate`, so that a large retry reaches partners at the pace
/// asked for instead of all at once. A scheduled retry moves the jobs now
/// (the step log holds the schedule, so a restart loses nothing) with
/// `start` ahead.
async fn run_retry(state: AppState, id: String, target: Target, rate: f64, start: Timestamp) {
    let spacing_us = (1_000_000.0 / rate).round() as i64;
    let due = |k: u64| {
        let offset_ms = spacing_us.saturating_mul(k as i64) / 1000;
        start
            .checked_add(jiff::SignedDuration::from_millis(offset_ms))
            .unwrap_or(start)
    };
    let mut retried = 0u64;
    let result: Result<(), crate::store::StoreError> = async {
        match target {
            Target::Ids(ids) => {
                for chunk in ids.chunks(RETRY_BATCH as usize) {
                    for job in chunk {
                        let update = JobUpdate::Retry { at: due(retried) };
                        let applied = state.store.job_update(job, update).await?;
                        if applied == Some(true) {
                            retried += 1;
                            state.operations.update(&id, |op| op.retried += 1);
                        } else {
                            state.operations.update(&id, |op| {
                                op.skipped += 1;
                                if op.skipped_ids.len() < 100 {
                                    op.skipped_ids.push(job.clone());
                                }
                            });
                        }
                    }
                    state.wake.notify_one();
                    pause_between_batches().await;
                }
            }
            Target::Filter(filter) => {
                let mut after: Option<String> = None;
                let mut scanned = 0u64;
                loop {
                    let batch = state
                        .store
                        .jobs_retry_batch(
                            &filter,
                            after.as_deref(),
                            RETRY_BATCH,
                            due(retried),
                            spacing_us,
                        )
                        .await?;
                    let Some(last) = batch.last_id else { break };
                    after = Some(last);
                    scanned += batch.matched;
                    retried += batch.retried;
                    state.operations.update(&id, |op| {
                        op.retried += batch.retried;
                        op.skipped += batch.matched - batch.retried;
                        op.matched = op.matched.max(scanned);
                    });
                    state.wake.notify_one();
                    pause_between_batches().await;
                }
            }
        }
        Ok(())
    }
    .await;
    metrics::counter!("steadfast_manual_retries_total").increment(retried);
    let finished = state.clock.now();
    state.operations.update(&id, |op| {
        op.done = true;
        op.finished_at = Some(finished);
        if let Err(error) = &result {
            tracing::error!(operation = %op.id, %error, "bulk retry failed");
            op.error = Some("the step log failed; see the engine's log".into());
        }
    });
}

/// Gives the engine's own transactions their turn between two batches.
async fn pause_between_batches() {
    tokio::time::sleep(Duration::from_millis(2)).await;
}

/// The operations of this node, as the API shows them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OperationList {
    /// Newest first: running and scheduled ones, and the last finished.
    pub operations: Vec<Operation>,
}

/// `GET /v1/operations`.
#[utoipa::path(
    get, path = "/v1/operations", operation_id = "listOperations", tag = "dead-letter queue",
    responses(
        (status = 200, description = "This node's bulk operations, newest first", body = OperationList),
    ),
    security((), ("token" = [])),
)]
pub async fn operations(State(state): State<AppState>) -> Json<OperationList> {
    let now = state.clock.now();
    let operations = state
        .operations
        .list()
        .into_iter()
        .map(|mut operation| {
            operation.scheduled = operation.runs_at > now;
            operation
        })
        .collect();
    Json(OperationList { operations })
}

/// `GET /v1/operations/{id}`.
#[utoipa::path(
    get, path = "/v1/operations/{id}", operation_id = "getOperation", tag = "dead-letter queue",
    params(("id" = String, Path, description = "The operation's id")),
    responses(
        (status = 200, description = "The operation's progress", body = Operation),
        (status = 404, description = "No such flow or job", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn operation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    let now = state.clock.now();
    let report = state.operations.get(&id).map(|mut operation| {
        operation.scheduled = operation.runs_at > now;
        operation
    });
    report.map(Json).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no operation `{id}` on this node (operations are kept in memory, the last {KEPT_OPERATIONS})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::parse_rate;
    use serde_json::json;

    #[test]
    fn rates_read_per_second_minute_and_hour() {
        assert_eq!(parse_rate(&json!("500/s")), Ok(500.0));
        assert_eq!(parse_rate(&json!("60/m")), Ok(1.0));
        assert_eq!(parse_rate(&json!("7200/h")), Ok(2.0));
        assert_eq!(parse_rate(&json!(250)), Ok(250.0));
        assert_eq!(parse_rate(&json!("250")), Ok(250.0));
        assert!(parse_rate(&json!("0/s")).is_err());
        assert_eq!(parse_rate(&json!("1/h")), Ok(1.0 / 3600.0));
        for slow in [
            json!(1e-300),
            json!("1e-300"),
            json!("1e-300/s"),
            json!("0.5/h"),
        ] {
            let error = parse_rate(&slow).unwrap_err();
            assert!(error.contains("at least 1/h"), "{slow}: {error}");
        }
        assert!(parse_rate(&json!("5/d"))
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_rate(&json!("fast")).is_err());
    }
}
