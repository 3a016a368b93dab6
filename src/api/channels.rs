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
        .map(|channel| view(channel, &state.channels, now))
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
    Ok(Json(view(channel, &state.channels, state.clock.now())))
}

fn view(channel: &Channel, channels: &Channels, now: Timestamp) -> Value {
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
