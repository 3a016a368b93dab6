//! Channels (`/ui/channels`): each channel's breaker, limits and slow-down
//! on this node, with its last hour of attempts from every node; and the
//! policy in force (`/ui/policy`): its version, files, what they define and
//! the last reload error.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};

use super::layout::{self, page, respond, time, Tab};
use super::overview::channel_table;
use super::session::Looking;
use crate::api::AppState;

/// `GET /ui/channels`.
pub async fn list(State(state): State<AppState>, Looking(viewer): Looking) -> Response {
    let policy = state.policy.current();
    let now = state.clock.now();
    let views: Vec<serde_json::Value> = policy
        .channels
        .values()
        .map(|c| crate::api::channels::view(c, &state.channels, &state.errors, now))
        .collect();
    let last_hour = last_hour(&state).await;
    let body = html! {
        h1 { "Channels" }
        (channel_table(&views))
        h2 { "This hour and the last, from every node" }
        (last_hour)
        p.muted { "Breakers and limits are this node's view; the history is every node's. "
                  "Per channel: " code { "steadfast insights CHANNEL" } "." }
    };
    respond(
        StatusCode::OK,
        page(Some(&viewer), "Channels", Tab::Channels, body),
    )
}

/// `GET /ui/policy`.
pub async fn policy(State(state): State<AppState>, Looking(viewer): Looking) -> Response {
    let policy = state.policy.current();
    let status = state.policy.status();
    let body = html! {
        h1 { "Policy in force" }
        dl.facts {
            dt { "Version" } dd { code { (policy.version.to_string()) } }
            dt { "Loaded" } dd { (time(status.loaded_at)) }
            dt { "Reloads" } dd { (status.reloads) " put in force, " (status.failed_reloads) " refused" }
        }
        @if status.last_error.is_empty() {
            p.notice { "The last reload succeeded." }
        } @else {
            div.error role="alert" {
                p { strong { "The last reload failed" } " " (layout::maybe_time(status.last_error_at))
                    ": the version above stays in force. Fix these and save again:" }
                pre { @for line in &status.last_error { (line) "\n" } }
            }
        }
        h2 { "Files" }
        ul { @for file in &policy.files { li { code { (file.display().to_string()) } } } }
        h2 { "Flows" }
        table.grid {
            thead { tr { th { "Flow" } th { "Steps" } } }
            tbody { @for (name, flow) in &policy.flows { tr {
                td { a href={ "/ui/jobs?flow=" (super::layout::urlencode(name)) } { (name) } }
                td { @for (k, step) in flow.steps.iter().enumerate() {
                    @if k > 0 { " → " }
                    (step.name)
                } }
            } } }
        }
        h2 { "Channels" }
        ul { @for (name, channel) in &policy.channels { li { (name) " " span.muted { "(" (channel.kind.kind_name()) ")" } } } }
        h2 { "Templates" }
        ul { @for name in policy.templates.keys() { li { (name) } } }
        @if !policy.classifiers.is_empty() {
            h2 { "Classifiers" }
            ul { @for name in policy.classifiers.keys() { li { (name) } } }
        }
    };
    respond(
        StatusCode::OK,
        page(Some(&viewer), "Policy", Tab::Policy, body),
    )
}

/// Each channel's attempts over this hour and the last, from every node:
/// how many, how many succeeded, latency, the commonest failures.
pub async fn last_hour(state: &AppState) -> Markup {
    let policy = state.policy.current();
    let hour = std::time::Duration::from_secs(3600);
    let mut last_hour = Vec::new();
    for name in policy.channels.keys() {
        let insights = crate::api::channels::insights_over(state, name, hour).await;
        last_hour.push((name.clone(), insights));
    }
    html! {
        table.grid {
            thead { tr { th { "Channel" } th.num { "Attempts" } th.num { "Succeeded" } th.num { "Success" }
                         th.num { "p50" } th.num { "p99" } th { "Top errors" } } }
            tbody {
                @for (name, insights) in &last_hour {
                    tr {
                        td { (name) }
                        @match insights {
                            Err(error) => td colspan="6" { span.error { (error.to_string()) } },
                            Ok(i) => {
                                td.num { (i.total.attempts) }
                                td.num { (i.total.successes) }
                                td.num { @match i.total.success_rate {
                                    Some(r) => (format!("{:.1} %", r * 100.0)),
                                    None => span.muted { "—" },
                                } }
                                td.num { @match i.latency_ms.p50 { Some(v) => (layout::duration_ms(v.round() as i64)), None => span.muted { "—" } } }
                                td.num { @match i.latency_ms.p99 { Some(v) => (layout::duration_ms(v.round() as i64)), None => span.muted { "—" } } }
                                td {
                                    @for (kind, n) in top_errors(&i.errors) { code { (kind) } " " (n) " " }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The three commonest failures, most first.
fn top_errors(errors: &std::collections::BTreeMap<String, i64>) -> Vec<(&String, &i64)> {
    let mut errors: Vec<_> = errors.iter().collect();
    errors.sort_by(|a, b| b.1.cmp(a.1));
    errors.truncate(3);
    errors
}
