//! The overview (`/ui/`): the engine's health and policy, each flow with
//! its jobs by state and its pause, the channels at a glance; and the
//! login page.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, csrf_field, page, respond, state_badge, urlencode, Tab};
use super::session::{self, AdminForm, Looking, Viewer};
use crate::api::auth::Refused;
use crate::api::guesses::ClientAddress;
use crate::api::AppState;
use crate::store::JobState;

pub async fn page_of(state: &AppState, viewer: &Viewer, query: &NoticeQuery) -> Response {
    let policy = state.policy.current();
    // Notices name a flow of the policy only: a link cannot make the
    // console say something of its choosing.
    let notice = match (&query.paused, &query.resumed) {
        (Some(flow), _) if policy.flows.contains_key(flow) => Some(format!(
            "Flow {flow} paused: its due jobs wait suspended (paused) until you resume it."
        )),
        (_, Some(flow)) if policy.flows.contains_key(flow) => {
            Some(format!("Flow {flow} resumed: its held jobs are due now."))
        }
        _ => None,
    };
    let status = state.policy.status();
    let now = state.clock.now();
    let health = state.health.report(now);
    let counts = state.console.counts(state).await;
    let paused = state.store.flows_paused().await;
    let mut names: Vec<String> = policy.flows.keys().cloned().collect();
    if let Ok(counts) = &counts {
        names.extend(
            counts
                .by_flow
                .keys()
                .filter(|f| !policy.flows.contains_key(*f))
                .cloned(),
        );
    }
    names.sort();
    let states = [
        JobState::Pending,
        JobState::Running,
        JobState::Suspended,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];
    let channels: Vec<serde_json::Value> = policy
        .channels
        .values()
        .map(|c| crate::api::channels::view(c, &state.channels, &state.errors, now))
        .collect();
    let last_hour = super::channels::last_hour(state).await;
    let ends = flow_ends(state, &names).await;
    let body = html! {
        @if let Some(notice) = notice { p.notice role="status" { (notice) } }
        h1 { "Overview" }
        section.strip {
            div { span.label { "Engine health" } " " span class={ "health " (health.health.as_str()) } { (health.health.as_str()) }
                  " " span.muted { "lag " (layout::duration_ms(health.lag_ms as i64)) } }
            div { span.label { "Policy" } " " code { (policy.version.to_string()) } " loaded " (layout::time(status.loaded_at)) }
            div { span.label { "Reloads" } " " (status.reloads) " · failed " (status.failed_reloads) }
        }
        @if !status.last_error.is_empty() {
            div.error role="alert" {
                p { strong { "The last reload failed" } " " (layout::maybe_time(status.last_error_at))
                    "; the policy above stays in force until the files are fixed." }
                pre { @for line in &status.last_error { (line) "\n" } }
            }
        }
        h2 { "Flows" }
        @match (&counts, &paused) {
            (Err(error), _) | (_, Err(error)) => p.error role="alert" { "The step log did not answer: " (error.to_string()) },
            (Ok(counts), Ok(paused)) => {
                table.grid {
                    thead { tr {
                        th { "Flow" }
                        @for s in &states { th.num { (s.as_str()) } }
                        th.num title="this hour and the last, from every node" { "delivered (2 h)" }
                        th.num title="this hour and the last, from every node" { "died (2 h)" }
                        th { "Paused" }
                        @if viewer.admin { th {} }
                    } }
                    tbody {
                        @for name in &names {
                            @let by_state = counts.by_flow.get(name);
                            @let pause = paused.iter().find(|p| &p.flow == name);
                            tr {
                                td { a href={ "/ui/jobs?flow=" (urlencode(name)) } { (name) }
                                     @if !policy.flows.contains_key(name) { " " span.muted { "(not in the policy)" } } }
                                @for s in &states {
                                    @let n = by_state.and_then(|b| b.get(s)).copied().unwrap_or(0);
                                    td.num { @if n > 0 {
                                        a href={ "/ui/jobs?flow=" (urlencode(name)) "&state=" (s.as_str()) } class=[(*s == JobState::Dead).then_some("dead")] { (n) }
                                    } @else { span.muted { "0" } } }
                                }
                                @let (delivered, died) = ends.get(name).copied().unwrap_or_default();
                                td.num.delivered { (delivered) }
                                td.num.died { @if died > 0 { span.dead { (died) } } @else { span.muted { "0" } } }
                                td { @if let Some(p) = pause { (state_badge("paused")) " by " (p.paused_by) " " (layout::time(p.paused_at)) } @else { span.muted { "no" } } }
                                @if viewer.admin && policy.flows.contains_key(name) {
                                    td {
                                        @if pause.is_some() {
                                            form.inline method="post" action={ "/ui/flows/" (urlencode(name)) "/resume" } {
                                                (csrf_field(viewer)) button type="submit" { "Resume" } }
                                        } @else {
                                            form.inline method="post" action={ "/ui/flows/" (urlencode(name)) "/pause" } {
                                                (csrf_field(viewer)) button.warn type="submit" { "Pause" } }
                                        }
                                    }
                                } @else if viewer.admin { td {} }
                            }
                        }
                    }
                }
                p.muted { "Counted " (layout::time(counts.at)) " (at most every " (super::COUNTS_FOR.as_secs()) " s)." }
            }
        }
        h2 { "Channels" }
        (channel_table(&channels))
        h2 { "Deliveries this hour and the last, from every node" }
        (last_hour)
    };
    respond(
        StatusCode::OK,
        page(Some(viewer), "Overview", Tab::Overview, body),
    )
}

/// Each flow's jobs delivered and dead this hour and the last, from every
/// node (the insight counts; this node's latest flushed first).
async fn flow_ends(
    state: &AppState,
    flows: &[String],
) -> std::collections::HashMap<String, (i64, i64)> {
    use crate::pacing::insights::{hour_of, metric};
    if let Err(error) = state.insights.flush(&state.store).await {
        tracing::warn!(%error, "flushing this node's insights before a read failed");
    }
    let since = hour_of(state.clock.now() - jiff::SignedDuration::from_hours(1));
    let mut ends = std::collections::HashMap::new();
    for flow in flows {
        let Ok(counts) = state.store.insights_of(flow, since).await else {
            continue;
        };
        let mut tally = (0, 0);
        for count in counts.iter().filter(|c| c.metric == metric::FLOW_ENDS) {
            match count.key.as_str() {
                "succeeded" => tally.0 += count.count,
                "dead" => tally.1 += count.count,
                _ => {}
            }
        }
        ends.insert(flow.clone(), tally);
    }
    ends
}

/// The channels with their breaker, limits and slow-down, from the same
/// view as `GET /v1/channels`.
pub fn channel_table(channels: &[serde_json::Value]) -> Markup {
    html! {
        table.grid {
            thead { tr { th { "Channel" } th { "Kind" } th { "Breaker" } th { "Rate" } th { "Concurrency" } th { "Slow-down" } } }
            tbody {
                @for c in channels {
                    tr {
                        td { (c["name"].as_str().unwrap_or_default()) }
                        td { (c["kind"].as_str().unwrap_or_default()) }
                        td { @match c["breaker"]["state"].as_str() {
                            Some(s) => {
                                span class={ "breaker " (s) } { (s.replace('_', " ")) }
                                @if let Some(reason) = c["breaker"]["reason"].as_str() { " " span.muted { (reason) } }
                                @if let Some(at) = c["breaker"]["probe_at"].as_str() { " " span.muted { "probe at " (at) } }
                            }
                            None => span.muted { "none" },
                        } }
                        td { @match c["rate"]["limit"].as_str() { Some(l) => (l), None => span.muted { "—" } } }
                        td { @if c["concurrency"].is_object() {
                            (c["concurrency"]["in_use"]) " of " (c["concurrency"]["node_limit"]) " in use"
                        } @else { span.muted { "—" } } }
                        td { @match c["slow_down"]["slowing"].as_bool() {
                            Some(true) => span.state.suspended { "slowing new attempts" },
                            Some(false) => span.muted { "quiet" },
                            None => span.muted { "—" },
                        } }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct NoticeQuery {
    paused: Option<String>,
    resumed: Option<String>,
}

/// `GET /ui/`.
pub async fn show(
    State(state): State<AppState>,
    Looking(viewer): Looking,
    Query(query): Query<NoticeQuery>,
) -> Response {
    page_of(&state, &viewer, &query).await
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

fn login_form(next: &str, error: Option<&str>) -> Markup {
    let body = html! {
        div.login {
            h1 { "Log in to steadfast" }
            @if let Some(error) = error { p.error role="alert" { (error) } }
            form method="post" action="/ui/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                p.muted { "A token of `[[tokens]]` in steadfast.toml: scope admin may act, scope submit reads only." }
                button type="submit" { "Log in" }
            }
        }
    };
    page(None, "Log in", Tab::None, body)
}

/// `GET /ui/login`.
pub async fn login_page(
    State(state): State<AppState>,
    Query(query): Query<LoginQuery>,
) -> Response {
    if state.access.is_open() {
        return Redirect::to("/ui/").into_response();
    }
    let next = session::safe_next(query.next.as_deref());
    respond(StatusCode::OK, login_form(next, None))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

/// `POST /ui/login`.
pub async fn login(
    State(state): State<AppState>,
    from: ClientAddress,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if session::cross_site(&headers) {
        return layout::refusal(
            StatusCode::FORBIDDEN,
            "Refused: this login was sent from another site.",
        );
    }
    let next = session::safe_next(form.next.as_deref());
    if state.access.is_open() {
        return Redirect::to(next).into_response();
    }
    let secure = session::over_https(&headers);
    match session::log_in(&state, &form.token, from, secure, next) {
        Ok(response) => {
            tracing::info!("console login");
            response
        }
        Err(Refused::Guessing { wait }) => respond(
            StatusCode::TOO_MANY_REQUESTS,
            login_form(
                next,
                Some(&format!(
                    "Too many unknown tokens from this address: try again in {} s.",
                    wait.as_secs().max(1)
                )),
            ),
        ),
        Err(Refused::Unknown) => {
            tracing::warn!("console login with an unknown token");
            respond(
                StatusCode::UNAUTHORIZED,
                login_form(
                    next,
                    Some("Unknown token: check the secret against `[[tokens]]` in steadfast.toml."),
                ),
            )
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {}

/// `POST /ui/logout`.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Looking(viewer): Looking,
    Form(form): Form<LogoutForm>,
) -> Response {
    use subtle::ConstantTimeEq;
    if !bool::from(form.csrf.as_bytes().ct_eq(viewer.csrf.as_bytes())) {
        return layout::refusal(
            StatusCode::FORBIDDEN,
            "Refused: reload the page and log out again.",
        );
    }
    session::log_out(&state, &headers)
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/flows/{flow}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    Path(flow): Path<String>,
    AdminForm(viewer, _): AdminForm<CsrfOnly>,
) -> Response {
    let done =
        crate::api::flows::pause(State(state.clone()), Path(flow.clone()), viewer.as_caller())
            .await;
    after_flow_change(
        &state,
        done.map(|_| format!("/ui/?paused={}", urlencode(&flow))),
    )
}

/// `POST /ui/flows/{flow}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    Path(flow): Path<String>,
    AdminForm(_, _): AdminForm<CsrfOnly>,
) -> Response {
    let done = crate::api::flows::resume(State(state.clone()), Path(flow.clone())).await;
    after_flow_change(
        &state,
        done.map(|_| format!("/ui/?resumed={}", urlencode(&flow))),
    )
}

fn after_flow_change(state: &AppState, done: Result<String, crate::api::ApiError>) -> Response {
    state.console.recount();
    match done {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(error) => layout::refusal(error.status(), &error.to_string()),
    }
}
