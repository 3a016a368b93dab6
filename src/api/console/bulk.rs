//! Bulk retry from the console: everything the dead-letter filter matches,
//! on every page, at the rate the operator chose (`POST /ui/retry`, the
//! same operation as `POST /v1/dlq/retry`), and its progress page, which
//! refreshes itself every second until the operation is done.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{self, page_refreshing, respond, time, Tab};
use super::layout::{given, urlencode};
use super::session::{AdminForm, Looking};
use crate::api::body::JsonBody;
use crate::api::dlq::RetryRequest;
use crate::api::jobs::FilterQuery;
use crate::api::AppState;

#[derive(Deserialize)]
pub struct BulkForm {
    #[serde(default)]
    flow: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    rate: String,
}

/// `POST /ui/retry`.
pub async fn start(
    State(state): State<AppState>,
    AdminForm(_, form): AdminForm<BulkForm>,
) -> Response {
    let status = match given(&form.status).map(|s| s.parse::<u16>()) {
        None => None,
        Some(Ok(code)) => Some(code),
        Some(Err(_)) => {
            return layout::refusal(
                StatusCode::BAD_REQUEST,
                &format!("status `{}`: write an HTTP status such as 503", form.status),
            )
        }
    };
    let request = RetryRequest {
        ids: None,
        filter: Some(FilterQuery {
            flow: given(&form.flow),
            step: given(&form.step),
            status,
            error: given(&form.error),
            rule: given(&form.rule),
            since: given(&form.since),
            until: given(&form.until),
            key: given(&form.key),
        }),
        flow: None,
        rate: given(&form.rate).map(serde_json::Value::String),
        at: None,
    };
    match crate::api::dlq::retry(State(state.clone()), JsonBody(request)).await {
        Ok((_, answer)) => {
            state.console.recount();
            let id = answer.0.operation;
            Redirect::to(&format!("/ui/operations/{}", urlencode(&id))).into_response()
        }
        Err(error) => layout::refusal(error.status(), &error.to_string()),
    }
}

/// `GET /ui/operations/{id}`.
pub async fn progress(
    State(state): State<AppState>,
    Looking(viewer): Looking,
    Path(id): Path<String>,
) -> Response {
    let Some(op) = state.operations.get(&id) else {
        return layout::refusal(
            StatusCode::NOT_FOUND,
            "No such operation on this node: operations are kept in the memory of the node \
             that ran them (the last 100).",
        );
    };
    let handled = op.retried + op.skipped;
    let max = op.matched.max(handled).max(1);
    let percent = handled * 100 / max;
    // The k-th retried job is due at `runs_at + k / rate`: how many are due
    // by now, and when the last one is.
    let now = state.clock.now();
    let since_start = now.duration_since(op.runs_at).as_secs_f64();
    let due = if since_start < 0.0 {
        0
    } else {
        ((since_start * op.rate_per_second).floor() as u64 + 1).min(op.retried)
    };
    let spread_ms = if op.retried > 1 {
        ((op.retried - 1) as f64 / op.rate_per_second * 1000.0).round() as i64
    } else {
        0
    };
    let last_due = op.runs_at + jiff::SignedDuration::from_millis(spread_ms);
    let pacing = op.done && op.error.is_none() && due < op.retried;
    let body = html! {
        h1 { "Bulk retry" }
        p { "Moved back to pending" }
        progress #progress max=(max) value=(handled) { (percent) "%" }
        p.big {
            strong { (op.retried) } " of " (op.matched) " retried"
            @if op.skipped > 0 { ", " (op.skipped) " skipped (no longer dead)" }
            @if op.done { " — " strong.done { "done" } } @else { " — running…" }
        }
        @if let Some(error) = &op.error { p.error role="alert" { "Stopped: " (error) } }
        @if op.retried > 0 {
            p { "Due to their partner so far, at the pace chosen" }
            progress #due max=(op.retried) value=(due) {}
            p { strong { (due) } " of " (op.retried) " due"
                @if pacing { " — the last at " (time(last_due)) } }
        }
        dl.facts {
            dt { "Pace" } dd { (format!("{:.2}", op.rate_per_second).trim_end_matches('0').trim_end_matches('.')) " per second" }
            dt { "Started" } dd { (time(op.started_at)) }
            dt { "First due" } dd { (time(op.runs_at)) }
            dt { "Last due" } dd { (time(last_due)) }
            dt { "Finished" } dd { (layout::maybe_time(op.finished_at)) }
        }
        p.muted { "Retried jobs are pending again and become due at the pace above; follow them in "
            a href="/ui/jobs?state=pending" { "pending jobs" } " or see what is still "
            a href="/ui/jobs?state=dead" { "dead" } "." }
        @if !op.skipped_ids.is_empty() {
            details { summary { "Skipped jobs" }
                ul { @for id in &op.skipped_ids { li { a href={ "/ui/jobs/" (urlencode(id)) } { code { (id) } } } } } }
        }
    };
    // Refreshed while jobs are being moved, then while they come due (a
    // retry scheduled far ahead is not watched second by second).
    let soon = last_due.duration_since(now) < jiff::SignedDuration::from_secs(600);
    let refresh = (!op.done || (pacing && soon)).then_some(1);
    respond(
        StatusCode::OK,
        page_refreshing(Some(&viewer), "Bulk retry", Tab::DeadLetters, body, refresh),
    )
}
