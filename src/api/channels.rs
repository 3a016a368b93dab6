//! `GET /v1/channels` and `GET /v1/channels/{name}`: each channel of the
//! policy in force with its state on this node: circuit breaker (state,
//! since, why it opened, when it probes, failures in a row, counts over its
//! window, recent outcomes), rate and concurrency limits (with what is in
//! use), and its `refresh_auth` (whether it holds a token, never the token).

use axum::extract::{Path, State};
use axum::Json;
use jiff::Timestamp;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::channels::breaker::show_duration;
use crate::channels::Channels;
use crate::model::{BreakerConfig, Channel, ChannelKind};

#[utoipa::path(
    get, path = "/v1/channels", operation_id = "listChannels", tag = "engine",
    responses((status = 200, description = "`{\"channels\": [...]}`: each channel's kind, breaker, limits and token state on this node", body = serde_json::Value)),
    security((), ("token" = [])),
)]
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let policy = state.policy.current();
    let now = state.clock.now();
    let channels: Vec<Value> = policy
        .channels
        .values()
        .map(|channel| view(channel, &state.channels, &state.errors, now))
        .collect();
    Json(json!({ "channels": channels }))
}

#[utoipa::path(
    get, path = "/v1/channels/{name}", operation_id = "getChannel", tag = "engine",
    params(("name" = String, Path, description = "A channel of the policy in force")),
    responses(
        (status = 200, description = "The channel's kind, breaker, limits and token state on this node", body = serde_json::Value),
        (status = 404, description = "No such flow or job", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let policy = state.policy.current();
    let channel = policy.channel(&name).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no channel `{name}` in the policy in force; GET /v1/channels lists them"
        ))
    })?;
    Ok(Json(view(
        channel,
        &state.channels,
        &state.errors,
        state.clock.now(),
    )))
}

/// The longest window insights sum over (counts are kept as long).
pub const MAX_INSIGHTS_WINDOW: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InsightsQuery {
    /// How far back: `7d` unless given (at most `30d`).
    pub window: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/channels/{name}/insights", operation_id = "getChannelInsights", tag = "engine",
    params(("name" = String, Path, description = "A channel, or a pool's member"), InsightsQuery),
    responses(
        (status = 200, description = "The channel's history over the window, from every node: attempts and success rate by attempt number and by hour of the week (UTC), error kinds, latency p50/p99", body = crate::pacing::insights::Insights),
        (status = 400, description = "The body or a parameter is not what it should be", body = crate::api::error::ErrorBody),
        (status = 404, description = "No such flow or job", body = crate::api::error::ErrorBody),
        (status = 503, description = "The step log cannot take writes now; nothing was written (`Retry-After`)", body = crate::api::error::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn insights(
    State(state): State<AppState>,
    Path(name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<InsightsQuery>,
) -> Result<Json<crate::pacing::insights::Insights>, ApiError> {
    let window = match query.window.as_deref() {
        None => std::time::Duration::from_secs(7 * 86_400),
        Some(text) => match crate::compile::parse_duration(text) {
            Ok(window) if window > std::time::Duration::ZERO && window <= MAX_INSIGHTS_WINDOW => {
                window
            }
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "window `{text}`: write a duration up to 30d, e.g. `24h` or `7d`"
                )))
            }
        },
    };
    insights_over(&state, &name, window).await.map(Json)
}

/// A channel's insights over `window` back from now, from every node (this
/// node's latest attempts flushed first); a pool's are its members'.
pub(crate) async fn insights_over(
    state: &AppState,
    name: &str,
    window: std::time::Duration,
) -> Result<crate::pacing::insights::Insights, ApiError> {
    let policy = state.policy.current();
    let since =
        crate::pacing::insights::hour_of(state.clock.now() - crate::lifecycle::signed(window));
    // This node's latest attempts count too.
    if let Err(error) = state.insights.flush(&state.store).await {
        tracing::warn!(%error, "flushing this node's insights before a read failed");
    }
    // A pool's history is its members': attempts are counted for the
    // channel they went to.
    let members: Vec<String> = match policy.channel(name).map(|c| &c.kind) {
        Some(ChannelKind::Pool(pool)) => pool.members.iter().map(|m| m.name.clone()).collect(),
        _ => vec![name.to_string()],
    };
    let mut counts = Vec::new();
    for member in &members {
        counts.extend(
            state
                .store
                .insights_of(member, since)
                .await?
                .into_iter()
                // A flow of the same name counts its jobs under this name.
                .filter(|c| c.metric != crate::pacing::insights::metric::FLOW_ENDS),
        );
    }
    if counts.is_empty() && policy.channel(name).is_none() {
        return Err(ApiError::NotFound(format!(
            "no channel `{name}` in the policy in force, and no history of one; GET \
             /v1/channels lists them"
        )));
    }
    let since = Timestamp::from_millisecond(since).unwrap_or(Timestamp::UNIX_EPOCH);
    Ok(crate::pacing::insights::Insights::from_counts(
        name, since, &counts,
    ))
}

pub(crate) fn view(
    channel: &Channel,
    channels: &Channels,
    errors: &crate::pacing::ErrorWindows,
    now: Timestamp,
) -> Value {
    let target = match &channel.kind {
        ChannelKind::Http(http) => json!(http.url_display),
        ChannelKind::File(file) => json!(file.dir),
        ChannelKind::Pool(pool) => json!({
            "strategy": pool.strategy.as_str(),
            "members": pool.members.iter().map(|member| {
                let health = channels.pools().health(&member.name);
                json!({
                    "channel": member.name,
                    "weight": member.weight,
                    "breaker_open_until": channels.breakers().open_until(&member.name, now),
                    "recent_success": health.success,
                    "recent_latency_ms": (health.latency * 1000.0).round(),
                    "attempts": health.attempts,
                })
            }).collect::<Vec<_>>(),
        }),
    };
    let breaker = channel.breaker.as_ref().map(|config| {
        let snapshot = channels.breakers().snapshot(&channel.name, config, now);
        let mut value = serde_json::to_value(snapshot).unwrap_or(Value::Null);
        value["config"] = breaker_config(config);
        value
    });
    let rate = channel
        .rate
        .map(|rate| channels.limits().rate_snapshot(&channel.name, rate, now));
    let concurrency = channel
        .concurrency
        .map(|limit| channels.limits().concurrency_snapshot(&channel.name, limit));
    let refresh_auth = match &channel.kind {
        ChannelKind::Http(http) => http.refresh_auth.as_ref().map(|refresh| {
            let mut value =
                serde_json::to_value(channels.tokens().snapshot(&channel.name)).unwrap_or_default();
            value["url"] = json!(refresh.url_display);
            value["token_path"] = json!(refresh.token.text);
            value["header"] = json!(refresh.header);
            value
        }),
        ChannelKind::File(_) | ChannelKind::Pool(_) => None,
    };
    json!({
        "name": channel.name,
        "kind": channel.kind.kind_name(),
        "target": target,
        "breaker": breaker,
        "rate": rate,
        "concurrency": concurrency,
        "refresh_auth": refresh_auth,
        "slow_down": channel.slow_down.as_ref().map(|slow| json!({
            "errors": slow.errors,
            "per": show_duration(slow.per),
            "delay": [show_duration(slow.delay.0), show_duration(slow.delay.1)],
            "max_delays": slow.max_delays,
            "slowing": errors.is_over(&channel.name),
        })),
    })
}

fn breaker_config(config: &BreakerConfig) -> Value {
    json!({
        "failures": config.failures,
        "failure_ratio": config.failure_ratio.map(|r| r.ratio),
        "min_requests": config.failure_ratio.map(|r| r.min_requests),
        "window": config.window.map(show_duration),
        "cooldown": show_duration(config.cooldown),
        "half_open_probes": config.half_open_probes,
    })
}
