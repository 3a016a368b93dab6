//! Jobs: the list with its filters and keyset paging (`/ui/jobs`), a job's
//! page (`/ui/jobs/{id}`) with its attempt timeline and payload edits, and
//! the actions on one job: edit its payload, retry, cancel.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::layout::{self, csrf_field, maybe_time, page, respond, state_badge, time, Tab};
use super::layout::{given, urlencode};
use super::session::{AdminForm, Looking, Viewer};
use crate::api::body::JsonBody;
use crate::api::jobs::{EditRequest, FilterQuery};
use crate::api::{ApiError, AppState};
use crate::store::{JobFilter, JobRecord, JobState};

/// Jobs on one page of the list.
pub const PAGE_SIZE: u32 = 50;

/// The list's filters, as the form sends them (every field text; empty is
/// no filter).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct JobsQuery {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub flow: String,
    #[serde(default)]
    pub step: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub rule: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cursor: String,
}

impl JobsQuery {
    /// The store's filter, or what to fix in the form.
    pub fn to_filter(&self, state: &AppState) -> Result<JobFilter, String> {
        let job_state = match given(&self.state) {
            Some(s) => Some(s.parse::<JobState>()?),
            None => None,
        };
        let status = match given(&self.status) {
            Some(s) => Some(
                s.parse::<u16>()
                    .map_err(|_| format!("status `{s}`: write an HTTP status such as 503"))?,
            ),
            None => None,
        };
        let cursor = given(&self.cursor);
        if cursor
            .as_deref()
            .is_some_and(|c| uuid::Uuid::parse_str(c).is_err())
        {
            return Err("that page link is broken: start again from the first page".into());
        }
        let filter = FilterQuery {
            flow: given(&self.flow),
            step: given(&self.step),
            status,
            error: given(&self.error),
            rule: given(&self.rule),
            since: given(&self.since),
            until: given(&self.until),
            key: given(&self.key),
        }
        .to_filter(state.clock.now())
        .map_err(|e| e.to_string())?;
        Ok(JobFilter {
            state: job_state,
            limit: PAGE_SIZE,
            cursor,
            ..filter
        })
    }

    /// This filter as a query string, without the cursor.
    pub fn query_string(&self) -> String {
        let mut plain = self.clone();
        plain.cursor.clear();
        serde_urlencoded::to_string(&plain).unwrap_or_default()
    }
}

/// The filter form, filled in with `query`.
fn filter_form(state: &AppState, query: &JobsQuery) -> Markup {
    let policy = state.policy.current();
    html! {
        form.filters method="get" action="/ui/jobs" {
            label { "State "
                select name="state" {
                    option value="" selected[query.state.is_empty()] { "any" }
                    @for s in JobState::ALL {
                        option value=(s.as_str()) selected[query.state == s.as_str()] { (s.as_str()) }
                    }
                }
            }
            label { "Flow "
                select name="flow" {
                    option value="" selected[query.flow.is_empty()] { "any" }
                    @for name in policy.flows.keys() {
                        option value=(name) selected[&query.flow == name] { (name) }
                    }
                    @if !query.flow.is_empty() && !policy.flows.contains_key(&query.flow) {
                        option value=(query.flow) selected { (query.flow) }
                    }
                }
            }
            label { "Step " input name="step" value=(query.step) size="10"; }
            label { "Status " input name="status" value=(query.status) size="4" placeholder="503"; }
            label { "Error " input name="error" value=(query.error) size="8" placeholder="timeout"; }
            label { "Rule " input name="rule" value=(query.rule) size="10"; }
            label { "Since " input name="since" value=(query.since) size="12" placeholder="2h, 02:10 (UTC)"; }
            label { "Until " input name="until" value=(query.until) size="12" placeholder="RFC 3339, 03:00"; }
            label { "Key contains " input name="key" value=(query.key) size="12"; }
            button type="submit" { "Filter" }
            " " a href="/ui/jobs" { "Clear" }
        }
    }
}

/// `GET /ui/jobs`.
pub async fn list(
    State(state): State<AppState>,
    Looking(viewer): Looking,
    Query(query): Query<JobsQuery>,
) -> Response {
    let tab = if query.state == "dead" {
        Tab::DeadLetters
    } else {
        Tab::Jobs
    };
    let title = if tab == Tab::DeadLetters {
        "Dead letters"
    } else {
        "Jobs"
    };
    let filter = match query.to_filter(&state) {
        Ok(filter) => filter,
        Err(problem) => {
            let body = html! {
                h1 { (title) }
                (filter_form(&state, &query))
                p.error role="alert" { (problem) }
            };
            return respond(
                StatusCode::BAD_REQUEST,
                page(Some(&viewer), title, tab, body),
            );
        }
    };
    let listed = state.store.jobs_list(&filter).await;
    let answers = match &listed {
        Ok(listed) => last_answers(&state, &listed.jobs).await,
        Err(_) => Vec::new(),
    };
    // Bulk retry counts the dead jobs the filter matches (an index holds
    // dead jobs alone), only when the list shows dead jobs.
    let dead_matching = if viewer.admin && filter.state == Some(JobState::Dead) {
        state.store.jobs_count(&filter).await.ok()
    } else {
        None
    };
    let body = html! {
        h1 { (title) }
        (filter_form(&state, &query))
        @match &listed {
            Err(error) => p.error role="alert" { "The step log did not answer: " (error.to_string()) },
            Ok(listed) => {
                @if listed.jobs.is_empty() {
                    p.muted { "No jobs match." }
                } @else {
                    (job_table(&listed.jobs, &answers))
                }
                nav.pager {
                    @if !query.cursor.is_empty() {
                        a href={ "/ui/jobs?" (query.query_string()) } { "« First page" }
                    }
                    @if let Some(next) = &listed.next_cursor {
                        a href={ "/ui/jobs?" (query.query_string()) "&cursor=" (urlencode(next)) } rel="next" { "Next page »" }
                    }
                }
            }
        }
        @if let Some(matching) = dead_matching {
            @if matching > 0 { (bulk_form(&viewer, &query, matching)) }
        } @else if viewer.admin && filter.state != Some(JobState::Dead) {
            p.muted { "To retry in bulk, filter by state dead." }
        }
    };
    respond(StatusCode::OK, page(Some(&viewer), title, tab, body))
}

/// Each job's last answer: the status or error kind of its last attempt
/// (notifications left out), with the rule that decided; one query for the
/// page.
async fn last_answers(state: &AppState, jobs: &[JobRecord]) -> Vec<Option<(String, String)>> {
    let ids: Vec<String> = jobs
        .iter()
        .filter(|job| job.attempts_total > 0)
        .map(|job| job.id.clone())
        .collect();
    let last = state.store.attempts_last_of(&ids).await.unwrap_or_default();
    let by_job: std::collections::HashMap<&str, &crate::store::AttemptRecord> =
        last.iter().map(|a| (a.job_id.as_str(), a)).collect();
    jobs.iter()
        .map(|job| {
            let last = by_job.get(job.id.as_str())?;
            let answer = match (last.status, &last.error) {
                (Some(status), _) => format!("HTTP {status}"),
                (None, Some(kind)) => kind.clone(),
                (None, None) => last.outcome.as_str().to_string(),
            };
            Some((answer, last.rule.clone().unwrap_or_default()))
        })
        .collect()
}

fn job_table(jobs: &[JobRecord], answers: &[Option<(String, String)>]) -> Markup {
    html! {
        table.grid.jobs {
            thead { tr {
                th { "Job" } th { "Flow" } th { "Step" } th { "State" } th.num { "Attempts" }
                th { "Last answer" } th { "Key" } th { "Changed" } th { "Next attempt" }
            } }
            tbody {
                @for (job, answer) in jobs.iter().zip(answers.iter().chain(std::iter::repeat(&None))) {
                    tr {
                        td { a href={ "/ui/jobs/" (urlencode(&job.id)) } { code { (short_id(&job.id)) } } }
                        td { (job.flow) }
                        td { (job.step) }
                        td { (state_badge(job.state.as_str()))
                             @if let Some(reason) = job.reason { " " span.muted { (reason.as_str()) } } }
                        td.num { (job.attempts_total) }
                        td { @if let Some((answer, rule)) = answer {
                            (answer) @if !rule.is_empty() { " " span.muted { (rule) } }
                        } }
                        td.key { (job.idempotency_key) }
                        td { (time(job.updated_at)) }
                        td { (maybe_time(job.next_at)) }
                    }
                }
            }
        }
    }
}

/// The end of a UUIDv7, which differs from job to job (its start is the
/// time).
fn short_id(id: &str) -> &str {
    id.get(id.len().saturating_sub(12)..).unwrap_or(id)
}

fn bulk_form(viewer: &Viewer, query: &JobsQuery, matching: u64) -> Markup {
    html! {
        section.bulk {
            h2 { "Retry everything this filter matches" }
            p { strong { (matching) } " dead jobs match, on every page, not just this one." }
            form method="post" action="/ui/retry" {
                (csrf_field(viewer))
                @for (name, value) in [("flow", &query.flow), ("step", &query.step), ("status", &query.status),
                        ("error", &query.error), ("rule", &query.rule), ("since", &query.since),
                        ("until", &query.until), ("key", &query.key)] {
                    input type="hidden" name=(name) value=(value);
                }
                label { "At most " input name="rate" value="10/s" size="8" required; }
                " " span.muted { "(500/s, 30/m, 10000/h: a recovering partner is not flattened)" }
                " " button.warn type="submit" { "Retry " (matching) " jobs" }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

/// `GET /ui/jobs/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Looking(viewer): Looking,
    Path(id): Path<String>,
    Query(query): Query<DoneQuery>,
) -> Response {
    let notice = match query.done.as_deref() {
        Some("edited") => Some("Payload saved; the old one is kept in the edits below."),
        Some("retried") => Some("Retried: the job is pending again."),
        Some("cancelled") => Some("Cancelled."),
        _ => None,
    };
    job_page(&state, &viewer, &id, notice, None).await
}

/// A job's page; `edit`: a payload edit refused, with the text as typed.
async fn job_page(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    notice: Option<&str>,
    edit: Option<(&str, &str)>,
) -> Response {
    let job = match state.store.job_get(id).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            return layout::refusal(
                StatusCode::NOT_FOUND,
                &format!("No job `{id}`: it may have been pruned. Look it up from the jobs list."),
            )
        }
        Err(error) => return layout::refusal(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
    };
    let attempts = state.store.attempts_list(id).await.unwrap_or_default();
    let edits = state.store.payload_edits_list(id).await.unwrap_or_default();
    let editable = matches!(
        job.state,
        JobState::Dead | JobState::Pending | JobState::Suspended
    );
    let cancellable = editable;
    let status = if edit.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let body = html! {
        @if let Some(notice) = notice { p.notice role="status" { (notice) } }
        h1 { "Job " code { (job.id) } }
        dl.facts {
            dt { "State" } dd { (state_badge(job.state.as_str()))
                @if let Some(reason) = job.reason { " " (reason.as_str()) } }
            dt { "Flow" } dd { a href={ "/ui/jobs?flow=" (urlencode(&job.flow)) } { (job.flow) } }
            dt { "Step" } dd { (job.step) @if job.channel_index > 0 { " (fallback " (job.channel_index) ")" } }
            dt { "Key" } dd.key { (job.idempotency_key) }
            dt { "Priority" } dd { (job.priority) }
            dt { "Attempts" } dd { (job.attempts_total) }
            dt { "Created" } dd { (time(job.created_at)) }
            dt { "Changed" } dd { (time(job.updated_at)) }
            dt { "Next attempt" } dd { (maybe_time(job.next_at)) }
            dt { "Policy" } dd { code { (job.policy_version) } }
        }
        @if viewer.admin {
            div.actions {
                @if job.state == JobState::Dead {
                    form.inline method="post" action={ "/ui/jobs/" (urlencode(&job.id)) "/retry" } {
                        (csrf_field(viewer)) button type="submit" { "Retry now" } }
                }
                @if cancellable {
                    details.inline {
                        summary { "Cancel…" }
                        form method="post" action={ "/ui/jobs/" (urlencode(&job.id)) "/cancel" } {
                            (csrf_field(viewer))
                            span { "The job will never be attempted again. " }
                            button.danger type="submit" { "Cancel this job" }
                        }
                    }
                }
            }
        }
        h2 { "Attempts" }
        @if attempts.is_empty() { p.muted { "None yet." } }
        @else {
            ol.timeline {
                @for a in &attempts {
                    li class={ "attempt " (a.outcome.as_str()) } {
                        div.when { (time(a.started_at)) " · " (layout::duration_ms((a.finished_at - a.started_at).get_milliseconds())) }
                        div.what {
                            strong { (a.step) " → " (a.channel) @if let Some(m) = &a.member { " (" (m) ")" } }
                            " #" (a.attempt) " "
                            @if let Some(s) = a.status { span.status { "HTTP " (s) } }
                            @if let Some(e) = &a.error { span.status { (e) } }
                            @if a.quick_tries > 0 { " (+" (a.quick_tries) " quick tries)" }
                            " " span class={ "state " (a.outcome.as_str()) } { (a.outcome.as_str()) }
                        }
                        div.why {
                            "rule " code { (a.rule.as_deref().unwrap_or("—")) }
                            " → " (a.decision.as_str())
                            @if let Some(d) = a.delay_ms { " after " (layout::duration_ms(d)) }
                            @if let Some(n) = a.next_at { " (at " (time(n)) ")" }
                        }
                        @if let Some(message) = &a.error_message { pre.message { (message) } }
                    }
                }
            }
        }
        h2 { "Payload" }
        @if let Some((_, problem)) = edit { p.error role="alert" { "Not saved: " (problem) } }
        @if viewer.admin && editable {
            form.payload method="post" action={ "/ui/jobs/" (urlencode(&job.id)) "/payload" } {
                (csrf_field(viewer))
                textarea name="payload" rows="8" spellcheck="false" {
                    @match edit { Some((typed, _)) => (typed), None => (job.payload) }
                }
                p.muted { "Saved exactly as written, once it is valid JSON; the old payload stays in the edits below." }
                button type="submit" { "Save payload" }
            }
        } @else {
            pre.payload { (job.payload) }
        }
        @if !edits.is_empty() {
            h2 { "Payload edits" }
            table.grid {
                thead { tr { th { "When" } th { "Who" } th { "Before" } th { "After" } } }
                tbody { @for e in &edits { tr {
                    td { (time(e.edited_at)) } td { (e.editor) }
                    td { pre { (e.old_payload) } } td { pre { (e.new_payload) } }
                } } }
            }
        }
        @if let Some(branches) = &job.branches {
            h2 { "Parallel branches" }
            pre { (branches) }
        }
    };
    respond(status, page(Some(viewer), "Job", Tab::Jobs, body))
}

#[derive(Deserialize)]
pub struct PayloadForm {
    #[serde(default)]
    payload: String,
}

/// `POST /ui/jobs/{id}/payload`.
pub async fn edit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AdminForm(viewer, form): AdminForm<PayloadForm>,
) -> Response {
    // Browsers send a textarea's line breaks as CRLF; JSON has them only
    // between tokens, where LF is what the operator typed.
    let text = form.payload.replace("\r\n", "\n");
    if let Err(problem) = crate::payload::check(&text) {
        return job_page(
            &state,
            &viewer,
            &id,
            None,
            Some((&text, &problem.to_string())),
        )
        .await;
    }
    let raw = match RawValue::from_string(text.clone()) {
        Ok(raw) => raw,
        Err(error) => {
            return job_page(
                &state,
                &viewer,
                &id,
                None,
                Some((&text, &error.to_string())),
            )
            .await
        }
    };
    let done = crate::api::jobs::edit(
        State(state.clone()),
        viewer.as_caller(),
        Path(id.clone()),
        JsonBody(EditRequest { payload: Some(raw) }),
    )
    .await;
    after(&state, &id, "edited", done.map(|_| ()))
}

/// `POST /ui/jobs/{id}/retry`.
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AdminForm(_, _): AdminForm<super::overview::CsrfOnly>,
) -> Response {
    let done = crate::api::jobs::retry(State(state.clone()), Path(id.clone())).await;
    after(&state, &id, "retried", done.map(|_| ()))
}

/// `POST /ui/jobs/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AdminForm(_, _): AdminForm<super::overview::CsrfOnly>,
) -> Response {
    let done = crate::api::jobs::cancel(State(state.clone()), Path(id.clone())).await;
    after(&state, &id, "cancelled", done.map(|_| ()))
}

fn after(state: &AppState, id: &str, done: &str, result: Result<(), ApiError>) -> Response {
    state.console.recount();
    match result {
        Ok(()) => Redirect::to(&format!("/ui/jobs/{}?done={done}", urlencode(id))).into_response(),
        Err(error) => layout::refusal(error.status(), &error.to_string()),
    }
}
