//! Job endpoints: submit (one or a batch), list, show, and an operator's
//! retry, payload edit and cancel.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::body::{parse, JsonBody};
use super::{ApiError, AppState, Caller};
use crate::compile::{PRIORITY_MAX, PRIORITY_MIN};
use crate::model::CompiledPolicy;
use crate::store::view::{JobView, PayloadEditView};
use crate::store::{InsertOutcome, JobFilter, JobState, JobUpdate, NewJob};

/// The longest idempotency key accepted.
const MAX_KEY_LEN: usize = 256;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// Kept as the client wrote it: delivered byte for byte (key order and
    /// number precision untouched), and not built into a tree only to be
    /// written out again.
    #[schema(value_type = Option<serde_json::Value>)]
    pub payload: Option<Box<RawValue>>,
    pub idempotency_key: Option<String>,
    /// When the first attempt is due (RFC 3339); default now.
    pub run_at: Option<Timestamp>,
    /// -100..100, higher first within the flow; default the flow's
    /// `priority`, else 0.
    #[schema(minimum = -100, maximum = 100)]
    pub priority: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubmitResponse {
    pub id: String,
    pub state: JobState,
    pub idempotency_key: String,
    /// `false` when the key was already known and the existing job is
    /// returned.
    pub created: bool,
}

#[utoipa::path(
    post, path = "/v1/flows/{flow}/jobs", operation_id = "submitJob", tag = "jobs",
    params(("flow" = String, Path, description = "A flow of the policy in force")),
    request_body = SubmitRequest,
    responses(
        (status = 201, description = "Created", body = SubmitResponse),
        (status = 200, description = "The idempotency key was known: the existing job", body = SubmitResponse),
        (status = 400, description = "The body or a parameter is not what it should be", body = crate::api::error::ErrorBody),
        (status = 404, description = "No such flow or job", body = crate::api::error::ErrorBody),
        (status = 409, description = "A conflict with the job as it is", body = crate::api::error::ErrorBody),
        (status = 413, description = "The body is larger than 10 MiB", body = crate::api::error::ErrorBody),
        (status = 422, description = "Well-formed but refused", body = crate::api::error::ErrorBody),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn submit(
    State(state): State<AppState>,
    Path(flow): Path<String>,
    headers: axum::http::HeaderMap,
    JsonBody(request): JsonBody<SubmitRequest>,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let policy = state.policy.current();
    let job = new_job(&state, &policy, &flow, request, traceparent(&headers))?;
    let outcome = state.store.job_insert(job).await?;
    let (status, body) = insert_response(outcome)?;
    if status == StatusCode::CREATED {
        state.wake.notify_one();
    }
    Ok((status, Json(body)))
}

fn insert_response(outcome: InsertOutcome) -> Result<(StatusCode, SubmitResponse), ApiError> {
    let respond = |job: crate::store::JobRecord, created| SubmitResponse {
        id: job.id,
        state: job.state,
        idempotency_key: job.idempotency_key,
        created,
    };
    match outcome {
        InsertOutcome::Created(job) => Ok((StatusCode::CREATED, respond(job, true))),
        InsertOutcome::Existing(job) => Ok((StatusCode::OK, respond(job, false))),
        InsertOutcome::Conflict(job) => Err(ApiError::Conflict(format!(
            "idempotency key `{}` is already used by job {} with a different payload; \
             send the same payload, or use a new key",
            job.idempotency_key, job.id
        ))),
    }
}

fn new_job(
    state: &AppState,
    policy: &CompiledPolicy,
    flow_name: &str,
    request: SubmitRequest,
    traceparent: Option<&str>,
) -> Result<NewJob, ApiError> {
    let Some(flow) = policy.flow(flow_name) else {
        let known: Vec<&str> = policy.flows.keys().map(String::as_str).collect();
        return Err(ApiError::NotFound(format!(
            "unknown flow `{flow_name}`; flows in force: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    let payload = accepted_payload(request.payload, "with the data to deliver")?;
    let id = uuid::Uuid::now_v7().to_string();
    let idempotency_key = match request.idempotency_key {
        Some(key) if key.trim().is_empty() => {
            return Err(ApiError::Unprocessable(
                "body field `idempotency_key` is empty: omit it to let the engine generate one"
                    .to_string(),
            ))
        }
        Some(key) if key.len() > MAX_KEY_LEN => {
            return Err(ApiError::Unprocessable(format!(
                "body field `idempotency_key` is {} bytes long; the limit is {MAX_KEY_LEN}",
                key.len()
            )))
        }
        // PostgreSQL text cannot hold NUL, nor can most partners' headers.
        Some(key) if key.chars().any(char::is_control) => {
            return Err(ApiError::Unprocessable(
                "body field `idempotency_key` holds a control character (such as \\u0000 or a \
                 line break); use printable text"
                    .to_string(),
            ))
        }
        Some(key) => key,
        None => id.clone(),
    };
    let priority = match request.priority {
        None => flow.priority,
        Some(p) if (PRIORITY_MIN..=PRIORITY_MAX).contains(&p) => p as i32,
        Some(p) => {
            return Err(ApiError::Unprocessable(format!(
                "body field `priority` is {p}; write a whole number from {PRIORITY_MIN} to \
                 {PRIORITY_MAX} (higher starts first)"
            )))
        }
    };
    let now = state.clock.now();
    Ok(NewJob {
        id,
        flow: flow.name.clone(),
        idempotency_key,
        payload,
        step: flow.steps[0].name.clone(),
        created_at: now,
        next_at: request.run_at.unwrap_or(now),
        policy_version: policy.version.to_string(),
        traceparent: traceparent.map(str::to_string),
        priority,
    })
}

/// The submission's W3C `traceparent`, when it is one (anything else is
/// ignored, as the W3C asks: the attempts then start a trace of their own).
fn traceparent(headers: &axum::http::HeaderMap) -> Option<&str> {
    let text = headers.get("traceparent")?.to_str().ok()?.trim();
    crate::telemetry::traces::parse_traceparent(text).map(|_| text)
}

/// A request's `payload`, present and strict JSON, as the text to store.
fn accepted_payload(payload: Option<Box<RawValue>>, what: &str) -> Result<String, ApiError> {
    let Some(payload) = payload else {
        return Err(ApiError::Unprocessable(format!(
            "body field `payload` is missing: send {{\"payload\": …}} {what}"
        )));
    };
    crate::payload::check(payload.get())
        .map_err(|e| ApiError::Unprocessable(format!("body field `payload`: {e}")))?;
    Ok(String::from(Box::<str>::from(payload)))
}

/// The payloads the submission, batch and edit parsers accept from one
/// body, for [`crate::fuzzing`].
pub(crate) fn accepted_payloads(body: &[u8]) -> Vec<String> {
    let mut accepted = Vec::new();
    if let Ok(request) = parse::<SubmitRequest>(body) {
        accepted.extend(accepted_payload(request.payload, "").ok());
    }
    if let Ok(items) = split_batch(body) {
        for item in items {
            if let Ok(request) = parse::<SubmitRequest>(item.get().as_bytes()) {
                accepted.extend(accepted_payload(request.payload, "").ok());
            }
        }
    }
    if let Ok(request) = parse::<EditRequest>(body) {
        accepted.extend(accepted_payload(request.payload, "").ok());
    }
    accepted
}

/// The answer to a batch: a result per item, in the order sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResponse {
    pub created: usize,
    pub failed: usize,
    pub results: Vec<BatchItem>,
}

/// One item's result: the job (`id`, `idempotency_key`, `created`) or
/// `error`, and the status a single submit would have answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    pub index: usize,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BatchItem {
    fn failed(index: usize, error: &ApiError) -> Self {
        Self {
            index,
            status: error.status().as_u16(),
            id: None,
            idempotency_key: None,
            created: None,
            error: Some(error.to_string()),
        }
    }
}

/// `POST /v1/flows/{flow}/jobs:batch`: a JSON array or NDJSON of jobs, one
/// transaction, a result per item.
#[utoipa::path(
    post, path = "/v1/flows/{flow}/jobs:batch", operation_id = "submitJobs", tag = "jobs",
    params(("flow" = String, Path, description = "A flow of the policy in force")),
    // Typed loosely on purpose: a body that is not an array is read as
    // NDJSON (a lone object is one job), and each job is checked on its
    // own: one the API refuses is reported in its result while the others
    // go in (the batch still answers 200).
    request_body(content(
        (serde_json::Value = "application/json"),
        (SubmitRequest = "application/x-ndjson"),
    ), description = "A JSON array of jobs, or one JSON job per line (NDJSON, whatever the \
        content type); each job is what `submitJob` takes (`payload`, `idempotency_key`, \
        `run_at`, `priority`), checked on its own: an item refused gets its status and error \
        in its result"),
    responses(
        (status = 200, description = "A result per item, in the order sent", body = BatchResponse),
        (status = 400, description = "The body or a parameter is not what it should be", body = crate::api::error::ErrorBody),
        (status = 422, description = "Well-formed but refused", body = crate::api::error::ErrorBody),
        (status = 404, description = "No such flow or job", body = crate::api::error::ErrorBody),
        (status = 413, description = "The body is larger than 10 MiB", body = crate::api::error::ErrorBody),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn submit_batch(
    State(state): State<AppState>,
    Path(flow): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<BatchResponse>, ApiError> {
    let traceparent = traceparent(&headers);
    let policy = state.policy.current();
    if policy.flow(&flow).is_none() {
        new_job(
            &state,
            &policy,
            &flow,
            SubmitRequest {
                payload: None,
                idempotency_key: None,
                run_at: None,
                priority: None,
            },
            None,
        )?;
    }
    let items = split_batch(&body)?;
    if items.is_empty() {
        return Err(ApiError::Unprocessable(
            "the batch is empty: send a JSON array of jobs or one job per line".to_string(),
        ));
    }
    let mut results: Vec<Option<BatchItem>> = Vec::with_capacity(items.len());
    let mut jobs = Vec::new();
    let mut slots = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let parsed = parse::<SubmitRequest>(item.get().as_bytes())
            .and_then(|request| new_job(&state, &policy, &flow, request, traceparent));
        match parsed {
            Ok(job) => {
                slots.push(index);
                jobs.push(job);
                results.push(None);
            }
            Err(error) => results.push(Some(BatchItem::failed(index, &error))),
        }
    }
    let outcomes = state.store.jobs_insert_batch(jobs).await?;
    for (index, outcome) in slots.into_iter().zip(outcomes) {
        results[index] = Some(match insert_response(outcome) {
            Ok((status, body)) => BatchItem {
                index,
                status: status.as_u16(),
                id: Some(body.id),
                idempotency_key: Some(body.idempotency_key),
                created: Some(body.created),
                error: None,
            },
            Err(error) => BatchItem::failed(index, &error),
        });
    }
    let results: Vec<BatchItem> = results.into_iter().collect::<Option<_>>().ok_or_else(|| {
        ApiError::Internal(crate::store::StoreError::Corrupt(
            "the step log answered fewer outcomes than jobs in the batch".to_string(),
        ))
    })?;
    let created = results.iter().filter(|r| r.created == Some(true)).count();
    if created > 0 {
        state.wake.notify_one();
    }
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    Ok(Json(BatchResponse {
        created,
        failed,
        results,
    }))
}

/// Items of a batch: a JSON array, or one JSON object per line.
fn split_batch(body: &[u8]) -> Result<Vec<Box<serde_json::value::RawValue>>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the batch is not UTF-8 text".to_string()))?;
    if text.trim_start().starts_with('[') {
        return parse(body);
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|e| {
                ApiError::BadRequest(format!("NDJSON line {}: not valid JSON: {e}", n + 1))
            })
        })
        .collect()
}

#[utoipa::path(
    get, path = "/v1/jobs/{id}", operation_id = "getJob", tag = "jobs", params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job with its attempts and payload edits", body = JobView),
        (status = 404, description = "No such flow or job", body = crate::api::error::ErrorBody),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = state
        .store
        .job_get(&id)
        .await?
        .ok_or_else(|| job_not_found(&id))?;
    let attempts = state.store.attempts_list(&id).await?;
    let edits = state.store.payload_edits_list(&id).await?;
    let mut view = JobView::new(job, Some(attempts));
    view.payload_edits = Some(edits.into_iter().map(PayloadEditView::from).collect());
    Ok(Json(view))
}

fn job_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no job `{id}`; list jobs with GET /v1/jobs"))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// An empty value (`?state=`, as a form sends it) is no filter, for
    /// every parameter.
    #[serde(default, deserialize_with = "blank_is_none")]
    #[param(value_type = Option<StateFilter>)]
    pub state: Option<String>,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub flow: Option<String>,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub step: Option<String>,
    /// The HTTP status of the last attempt.
    #[serde(default, deserialize_with = "blank_is_none")]
    #[param(value_type = Option<StatusFilter>)]
    pub status: Option<u16>,
    /// The error kind of the last attempt: timeout, connect, dns, reset, tls, io…
    #[serde(default, deserialize_with = "blank_is_none")]
    pub error: Option<String>,
    /// The rule that decided the last attempt.
    #[serde(default, deserialize_with = "blank_is_none")]
    pub rule: Option<String>,
    /// RFC 3339 time, or a duration back from now (`2h`).
    #[serde(default, deserialize_with = "blank_is_none")]
    pub since: Option<String>,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub until: Option<String>,
    /// Text the idempotency key contains.
    #[serde(default, deserialize_with = "blank_is_none")]
    pub key: Option<String>,
    /// 100 unless given.
    #[serde(default, deserialize_with = "blank_is_none")]
    #[param(value_type = Option<LimitFilter>)]
    pub limit: Option<u32>,
    /// `next_cursor` of the page before.
    #[serde(default, deserialize_with = "blank_is_none")]
    pub cursor: Option<String>,
}

/// A query parameter, `None` when absent or empty.
fn blank_is_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text: Option<String> = Option::deserialize(d)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// Which jobs: by flow, step, their last attempt's status, error kind or
/// rule, and when they last changed (for a dead job: when it died).
#[derive(Debug, Default, Deserialize, Serialize, Clone, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterQuery {
    pub flow: Option<String>,
    pub step: Option<String>,
    /// The HTTP status of the last attempt.
    #[serde(default, deserialize_with = "number_or_text")]
    pub status: Option<u16>,
    /// The error kind of the last attempt: timeout, connect, dns, reset, tls, io…
    pub error: Option<String>,
    /// The rule that decided the last attempt: `builtin[3]`, `acme[0]`, a name.
    pub rule: Option<String>,
    /// RFC 3339 time, or a duration back from now (`2h`).
    pub since: Option<String>,
    pub until: Option<String>,
    /// Text the idempotency key contains.
    pub key: Option<String>,
}

/// `HH:MM` as the latest such time in UTC at or before `now` (an operator's
/// "since 02:10"); `None` for any other text.
fn latest_utc_time_of_day(text: &str, now: Timestamp) -> Option<Timestamp> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hour: i8 = hours.parse().ok()?;
    let minute: i8 = minutes.parse().ok()?;
    if !(0..24).contains(&hour) || !(0..60).contains(&minute) {
        return None;
    }
    let time = jiff::civil::time(hour, minute, 0, 0);
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let at = today
        .to_datetime(time)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp();
    if at <= now {
        Some(at)
    } else {
        at.checked_sub(jiff::SignedDuration::from_hours(24)).ok()
    }
}

/// Query strings carry numbers as text; JSON bodies as numbers.
fn number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(u16),
        Text(String),
    }
    match Option::<Either>::deserialize(d)? {
        None => Ok(None),
        Some(Either::Number(n)) => Ok(Some(n)),
        Some(Either::Text(t)) => t.trim().parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("status `{t}` is not an HTTP status such as 503"))
        }),
    }
}

impl FilterQuery {
    /// The store's filter; times are RFC 3339 or a duration back from `now`.
    pub fn to_filter(&self, now: Timestamp) -> Result<JobFilter, ApiError> {
        let time = |name: &str, value: &Option<String>| -> Result<Option<Timestamp>, ApiError> {
            let Some(text) = value else { return Ok(None) };
            if let Ok(at) = text.parse::<Timestamp>() {
                return Ok(Some(at));
            }
            if let Some(at) = latest_utc_time_of_day(text, now) {
                return Ok(Some(at));
            }
            let back = crate::compile::parse_duration(text).map_err(|_| {
                ApiError::BadRequest(format!(
                    "`{name}` = `{text}`: write an RFC 3339 time (2026-11-20T08:00:00Z), \
                     a time of day in UTC (02:10: the latest one), or a duration back from \
                     now (2h, 30m)"
                ))
            })?;
            let back = jiff::SignedDuration::try_from(back).map_err(|_| {
                ApiError::BadRequest(format!("`{name}` = `{text}` is too long ago"))
            })?;
            now.checked_sub(back)
                .map(Some)
                .map_err(|_| ApiError::BadRequest(format!("`{name}` = `{text}` is too long ago")))
        };
        let since = time("since", &self.since)?;
        let until = time("until", &self.until)?;
        if let (Some(since), Some(until)) = (since, until) {
            if since >= until {
                return Err(ApiError::BadRequest(format!(
                    "`since` ({since}) must be before `until` ({until})"
                )));
            }
        }
        Ok(JobFilter {
            flow: self.flow.clone(),
            step: self.step.clone(),
            status: self.status,
            error: self.error.clone(),
            rule: self.rule.clone(),
            since,
            until,
            key: self.key.clone(),
            ..JobFilter::default()
        })
    }
}

#[utoipa::path(
    get, path = "/v1/jobs", operation_id = "listJobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs, newest first", body = JobPage),
        (status = 400, description = "The body or a parameter is not what it should be", body = crate::api::error::ErrorBody),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::BadRequest(format!(
            "bad query: {}; parameters are state, flow, step, status, error, rule, since, \
             until, key, limit, cursor",
            e.body_text()
        ))
    })?;
    let job_state = match query.state.as_deref() {
        Some(s) => Some(s.parse::<JobState>().map_err(ApiError::BadRequest)?),
        None => None,
    };
    if let Some(cursor) = &query.cursor {
        // A cursor is the id of the last job of the previous page.
        if uuid::Uuid::parse_str(cursor).is_err() {
            return Err(ApiError::BadRequest(format!(
                "cursor `{}` is not one this API gave: pass `next_cursor` from the previous \
                 page, or leave it out for the first page",
                crate::policy::shorten(cursor)
            )));
        }
    }
    if query.limit.is_some_and(|l| l == 0 || l > 1000) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".to_string(),
        ));
    }
    let filter = JobFilter {
        state: job_state,
        limit: query.limit.unwrap_or(100),
        cursor: query.cursor,
        ..FilterQuery {
            flow: query.flow,
            step: query.step,
            status: query.status,
            error: query.error,
            rule: query.rule,
            since: query.since,
            until: query.until,
            key: query.key,
        }
        .to_filter(state.clock.now())?
    };
    let page = state.store.jobs_list(&filter).await?;
    let jobs: Vec<JobView> = page
        .jobs
        .into_iter()
        .map(|j| JobView::new(j, None))
        .collect();
    Ok(Json(JobPage {
        jobs,
        next_cursor: page.next_cursor,
    }))
}

/// A page of jobs. A struct, not `json!`: a `Value` would re-encode each
/// payload instead of embedding its bytes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    /// Stored as written, like a submitted payload. Required.
    #[schema(value_type = serde_json::Value)]
    pub payload: Option<Box<RawValue>>,
}

#[utoipa::path(
    patch, path = "/v1/jobs/{id}", operation_id = "editJobPayload", tag = "dead-letter queue", params(("id" = String, Path, description = "The job's id")),
    request_body = EditRequest,
    responses(
        (status = 200, description = "The job with its new payload", body = JobView),
        (status = 400, description = "The body or a parameter is not what it should be", body = crate::api::error::ErrorBody),
        (status = 422, description = "Well-formed but refused", body = crate::api::error::ErrorBody),
        (status = 404, description = "No such flow or job", body = crate::api::error::ErrorBody),
        (status = 409, description = "A conflict with the job as it is", body = crate::api::error::ErrorBody),
        (status = 413, description = "The body is larger than 10 MiB", body = crate::api::error::ErrorBody),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn edit(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<EditRequest>,
) -> Result<Json<JobView>, ApiError> {
    let payload = accepted_payload(request.payload, "with the new payload")?;
    let update = JobUpdate::EditPayload {
        payload,
        editor: caller.map_or_else(|| "local".to_string(), |c| c.0.name.clone()),
        at: state.clock.now(),
    };
    apply(
        &state,
        &id,
        update,
        "edit the payload of",
        "dead, pending or suspended",
    )
    .await
}

#[utoipa::path(
    post, path = "/v1/jobs/{id}/retry", operation_id = "retryJob", tag = "dead-letter queue", params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, pending again", body = JobView),
        (status = 404, description = "No such flow or job", body = crate::api::error::ErrorBody),
        (status = 409, description = "A conflict with the job as it is", body = crate::api::error::ErrorBody),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let update = JobUpdate::Retry {
        at: state.clock.now(),
    };
    let view = apply(&state, &id, update, "retry", "dead").await?;
    metrics::counter!("steadfast_manual_retries_total").increment(1);
    state.wake.notify_one();
    Ok(view)
}

#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", operation_id = "cancelJob", tag = "jobs", params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, cancelled", body = JobView),
        (status = 404, description = "No such flow or job", body = crate::api::error::ErrorBody),
        (status = 409, description = "A conflict with the job as it is", body = crate::api::error::ErrorBody),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let update = JobUpdate::Cancel {
        at: state.clock.now(),
    };
    apply(&state, &id, update, "cancel", "pending, suspended or dead").await
}

async fn apply(
    state: &AppState,
    id: &str,
    update: JobUpdate,
    verb: &str,
    allowed: &str,
) -> Result<Json<JobView>, ApiError> {
    match state.store.job_update(id, update).await? {
        None => Err(job_not_found(id)),
        Some(true) => {
            let job = state
                .store
                .job_get(id)
                .await?
                .ok_or_else(|| job_not_found(id))?;
            Ok(Json(JobView::new(job, None)))
        }
        Some(false) => {
            let current = state
                .store
                .job_get(id)
                .await?
                .map_or("gone".to_string(), |j| j.state.to_string());
            Err(ApiError::Conflict(format!(
                "cannot {verb} job {id}: it is {current}; only {allowed} jobs can be"
            )))
        }
    }
}

/// The `state` filter of a listing: a state, or empty for every state (as
/// a form sends a filter left blank).
pub struct StateFilter;

impl utoipa::PartialSchema for StateFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let names = std::iter::once("").chain(
            crate::store::JobState::ALL
                .iter()
                .map(|state| state.as_str()),
        );
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(names))
            .into()
    }
}

impl utoipa::ToSchema for StateFilter {}

/// A whole number in `min..=max`, or empty (no filter).
fn blank_or_integer(min: u32, max: u32) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(min))
                .maximum(Some(max)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(0)),
        )
        .into()
}

/// `limit`: 1 to 1000, or empty for the default (100).
pub struct LimitFilter;

impl utoipa::PartialSchema for LimitFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        blank_or_integer(1, 1000)
    }
}

impl utoipa::ToSchema for LimitFilter {}

/// `status`: an HTTP status, or empty for any.
pub struct StatusFilter;

impl utoipa::PartialSchema for StatusFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        blank_or_integer(0, u32::from(u16::MAX))
    }
}

impl utoipa::ToSchema for StatusFilter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_of_day_is_the_latest_one_in_utc() {
        let now: Timestamp = "2026-12-06T03:00:00Z".parse().unwrap();
        let at = |text| latest_utc_time_of_day(text, now).map(|t| t.to_string());
        assert_eq!(at("02:10").as_deref(), Some("2026-12-06T02:10:00Z"));
        assert_eq!(at("03:00").as_deref(), Some("2026-12-06T03:00:00Z"));
        assert_eq!(at("23:30").as_deref(), Some("2026-12-05T23:30:00Z"));
        for bad in ["24:00", "12:60", "2:10", "-1:00", "ab:cd", "02:10:00", "2h"] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }
}
