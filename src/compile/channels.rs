//! Channels: exactly one kind each (`http` or `file`), with URLs, methods,
//! headers and directories checked after `${VAR}` expansion, and the
//! channel's own limits: `circuit_breaker`, `rate`, `concurrency`,
//! `refresh_auth` (http only). Values that came from the environment go
//! into [`Secret`]s; messages never quote them (only the text as written).
//!
//! A step may also set `circuit_breaker`: it configures its channel's
//! breaker ([`apply_step_breakers`]), since a breaker's state is the
//! channel's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::context::{Ctx, Site};
use super::duration::parse_duration;
use super::names::Registry;
use crate::model::ErrorKind;
use crate::model::{
    signing, BreakerConfig, Channel, ChannelKind, FailureRatio, FileChannel, HttpChannel, Pool,
    PoolMember, PoolStrategy, QuickRetry, Rate, RefreshAuth, RefreshBody, Secret, SecretUrl,
    Signing, SigningKey, SlowDown, TokenPath,
};
use crate::policy::defs::{
    BreakerDef, ChannelDef, FileDef, HttpDef, OAuth2Def, PoolDef, PoolMembersDef, PoolStrategyDef,
    QuickRetryDef, RefreshAuthDef, SignDef, SlowDownDef, Text, TlsDef,
};

/// The timeout of one HTTP attempt unless `timeout` says otherwise.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Set by the engine on every attempt; a policy must not override it.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub fn compile_channels(
    ctx: &mut Ctx<'_>,
    registry: &Registry<'_>,
) -> BTreeMap<String, Arc<Channel>> {
    let mut channels: BTreeMap<String, Arc<Channel>> = registry
        .channels
        .values()
        .filter_map(|entry| {
            compile_channel(ctx, &entry.site, entry.name, entry.def)
                .map(|channel| (entry.name.to_string(), Arc::new(channel)))
        })
        .collect();
    // A pool's members are checked once every channel is known.
    let broken: Vec<String> = registry
        .channels
        .values()
        .filter(|entry| {
            let Some(channel) = channels.get(entry.name) else {
                return false;
            };
            let ChannelKind::Pool(pool) = &channel.kind else {
                return false;
            };
            !pool_members_exist(ctx, registry, &entry.site, entry.name, entry.def, pool)
        })
        .map(|entry| entry.name.to_string())
        .collect();
    for name in broken {
        channels.remove(&name);
    }
    channels
}

/// Whether each member of `pool` (channel `name`) is a channel that is not
/// a pool; every one that is not is reported at its place.
fn pool_members_exist(
    ctx: &mut Ctx<'_>,
    registry: &Registry<'_>,
    site: &Site,
    name: &str,
    def: &ChannelDef,
    pool: &Pool,
) -> bool {
    let pool_site = site.child("pool");
    let listed_as_list = matches!(
        def.pool.as_ref().and_then(|p| p.members.as_ref()),
        Some(PoolMembersDef::List(_))
    );
    let mut ok = true;
    for (index, member) in pool.members.iter().enumerate() {
        let at = if listed_as_list {
            pool_site.child("members").index(index)
        } else if def.pool.as_ref().is_some_and(|p| p.weighted.is_some()) {
            pool_site.child("weighted").child(&member.name)
        } else {
            pool_site.child("members").child(&member.name)
        };
        let problem = if member.name == name {
            Some(format!("pool `{name}` cannot be a member of itself"))
        } else if !registry.channels.contains_key(member.name.as_str()) {
            let known: Vec<&str> = registry
                .channels
                .keys()
                .copied()
                .filter(|c| *c != name)
                .collect();
            Some(format!(
                "unknown channel `{}`; defined channels: {}",
                member.name,
                known.join(", ")
            ))
        } else if registry
            .channels
            .get(member.name.as_str())
            .is_some_and(|entry| entry.def.pool.is_some())
        {
            Some(format!(
                "`{}` is a pool: a pool's members are `http` or `file` channels",
                member.name
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            ctx.error(&at, problem);
            ok = false;
        }
    }
    ok
}

/// A pool's members and strategy as written (the members' existence is
/// checked by [`compile_channels`]).
fn compile_pool(ctx: &mut Ctx<'_>, site: &Site, def: &PoolDef) -> Option<Pool> {
    let weights = |map: &BTreeMap<String, u32>| -> Vec<PoolMember> {
        map.iter()
            .map(|(name, weight)| PoolMember {
                name: name.clone(),
                weight: *weight,
            })
            .collect()
    };
    let (members, weighted) = match (&def.members, &def.weighted) {
        (Some(_), Some(_)) => {
            ctx.error_at_key(
                &site.child("weighted"),
                "write the members once: `members: [a, b]` (with `strategy`), or \
                 `weighted: { a: 3, b: 1 }`",
            );
            return None;
        }
        (None, None) => {
            ctx.error_at_key(
                site,
                "a pool needs its members: `members: [a, b]`, or `weighted: { a: 3, b: 1 }`",
            );
            return None;
        }
        (Some(PoolMembersDef::List(names)), None) => (
            names
                .iter()
                .map(|name| PoolMember {
                    name: name.clone(),
                    weight: 1,
                })
                .collect::<Vec<_>>(),
            false,
        ),
        (Some(PoolMembersDef::Weights(map)), None) | (None, Some(map)) => (weights(map), true),
    };
    let strategy = match (def.strategy, weighted) {
        (None, false) | (Some(PoolStrategyDef::RoundRobin), false) => PoolStrategy::RoundRobin,
        (Some(PoolStrategyDef::Healthiest), false) => PoolStrategy::Healthiest,
        (None, true) | (Some(PoolStrategyDef::Weighted), true) => PoolStrategy::Weighted,
        (Some(PoolStrategyDef::Weighted), false) => {
            ctx.error(
                &site.child("strategy"),
                "`weighted` needs each member's weight: write `members: { a: 3, b: 1 }`",
            );
            return None;
        }
        (Some(other), true) => {
            ctx.error(
                &site.child("strategy"),
                format_args!(
                    "weights are for `strategy: weighted`; with `{}`, list the members: \
                     `members: [a, b]`",
                    match other {
                        PoolStrategyDef::Healthiest => "healthiest",
                        _ => "round_robin",
                    }
                ),
            );
            return None;
        }
    };
    let mut ok = true;
    if members.is_empty() {
        ctx.error_at_key(site, "a pool needs at least one member");
        ok = false;
    }
    for (index, member) in members.iter().enumerate() {
        if member.weight == 0 {
            ctx.error(
                &site
                    .child(if def.weighted.is_some() {
                        "weighted"
                    } else {
                        "members"
                    })
                    .child(&member.name),
                "a weight is at least 1 (leave the member out instead)",
            );
            ok = false;
        }
        if members[..index].iter().any(|m| m.name == member.name) {
            ctx.error(
                &site.child("members").index(index),
                format_args!("`{}` is listed twice", member.name),
            );
            ok = false;
        }
    }
    ok.then_some(Pool { members, strategy })
}

fn compile_channel(
    ctx: &mut Ctx<'_>,
    site: &Site,
    name: &str,
    def: &ChannelDef,
) -> Option<Channel> {
    let mut ok = true;
    let breaker = match &def.circuit_breaker {
        None => None,
        Some(breaker) => {
            let compiled = compile_breaker(ctx, &site.child("circuit_breaker"), breaker);
            ok &= compiled.is_some();
            compiled
        }
    };
    let rate = match &def.rate {
        None => None,
        Some(text) => {
            let compiled = compile_rate(ctx, &site.child("rate"), text);
            ok &= compiled.is_some();
            compiled
        }
    };
    if def.concurrency == Some(0) {
        ctx.error(
            &site.child("concurrency"),
            "concurrency must be at least 1 (the most attempts in flight at once)",
        );
        ok = false;
    }
    let refresh_auth = match &def.refresh_auth {
        None => None,
        Some(_) if def.http.is_none() => {
            if def.file.is_some() {
                ctx.error_at_key(
                    &site.child("refresh_auth"),
                    "`refresh_auth` is for `http` channels; a `file` channel has no token",
                );
                ok = false;
            }
            None
        }
        Some(refresh) => {
            let compiled = compile_refresh_auth(ctx, &site.child("refresh_auth"), refresh);
            ok &= compiled.is_some();
            compiled
        }
    };
    let quick_retry = match &def.quick_retry {
        None => None,
        Some(quick) => {
            let compiled = compile_quick_retry(ctx, &site.child("quick_retry"), quick);
            ok &= compiled.is_some();
            compiled
        }
    };
    let slow_down = match &def.slow_down {
        None => None,
        Some(slow) => {
            let compiled = compile_slow_down(ctx, &site.child("slow_down"), slow);
            ok &= compiled.is_some();
            compiled
        }
    };
    if def.pool.is_some() {
        for (key, set) in [
            ("circuit_breaker", def.circuit_breaker.is_some()),
            ("rate", def.rate.is_some()),
            ("concurrency", def.concurrency.is_some()),
            ("refresh_auth", def.refresh_auth.is_some()),
            ("quick_retry", def.quick_retry.is_some()),
            ("slow_down", def.slow_down.is_some()),
        ] {
            if set {
                ctx.error_at_key(
                    &site.child(key),
                    format_args!(
                        "`{key}` belongs to the pool's member channels: each partner has \
                         its own; set it on the members"
                    ),
                );
                ok = false;
            }
        }
    }
    let kind = match (&def.http, &def.file, &def.pool) {
        (None, None, Some(pool)) => {
            compile_pool(ctx, &site.child("pool"), pool).map(ChannelKind::Pool)
        }
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            ctx.error_at_key(
                site,
                "a channel has exactly one kind: write `http`, `file` or `pool`, not two",
            );
            None
        }
        (http, file, None) => match (http, file) {
            (Some(http), None) => {
                compile_http(ctx, &site.child("http"), http).and_then(|mut http| {
                    if refresh_auth.is_some() && http.refresh_auth.is_some() {
                        ctx.error_at_key(
                            &site.child("refresh_auth"),
                            "this channel gets its token from `http.auth.oauth2` already: \
                     remove `refresh_auth`, or `auth`",
                        );
                        return None;
                    }
                    if let Some(refresh) = refresh_auth {
                        http.refresh_auth = Some(Box::new(refresh));
                    }
                    Some(ChannelKind::Http(http))
                })
            }
            (None, Some(file)) => {
                compile_file(ctx, &site.child("file"), file).map(ChannelKind::File)
            }
            (Some(_), Some(_)) => {
                ctx.error_at_key(
                    site,
                    "a channel has exactly one kind: write `http`, `file` or `pool`, not two",
                );
                None
            }
            (None, None) => {
                ctx.error_at_key(site, "a channel needs its kind: `http`, `file` or `pool`");
                None
            }
        },
    };
    let kind = kind.filter(|_| ok)?;
    Some(Channel {
        name: name.to_string(),
        kind,
        breaker,
        rate,
        concurrency: def.concurrency,
        quick_retry,
        slow_down,
    })
}

/// `slow_down`; every problem is reported, `None` if there was one.
fn compile_slow_down(ctx: &mut Ctx<'_>, site: &Site, def: &SlowDownDef) -> Option<SlowDown> {
    let mut ok = true;
    if def.errors == 0 {
        ctx.error(
            &site.child("errors"),
            "errors must be at least 1: the failed attempts within `per` past which the \
             channel slows down",
        );
        ok = false;
    }
    let mut bounded = |ctx: &mut Ctx<'_>, key: &str, text: &str, max: Duration| {
        let at = site.child(key);
        match parse_duration(text) {
            Ok(d) if d >= Duration::from_secs(1) && d <= max => Some(d),
            Ok(_) => {
                ctx.error(
                    &at,
                    format_args!(
                        "{key} must be 1s to {}",
                        crate::compile::format_duration(max)
                    ),
                );
                ok = false;
                None
            }
            Err(err) => {
                let shown = ctx.shown(&at, text).to_string();
                ctx.error(&at, format_args!("bad duration `{shown}`: {err}"));
                ok = false;
                None
            }
        }
    };
    let per = bounded(ctx, "per", def.per.as_str(), SlowDown::MAX_PER);
    let (low, high) = match def.delay.as_str().split_once("..") {
        Some((low, high)) => (low.trim(), high.trim()),
        None => (def.delay.as_str().trim(), def.delay.as_str().trim()),
    };
    let low = bounded(ctx, "delay", low, SlowDown::MAX_DELAY);
    let high = bounded(ctx, "delay", high, SlowDown::MAX_DELAY);
    if let (Some(low), Some(high)) = (low, high) {
        if low > high {
            ctx.error(
                &site.child("delay"),
                "the delay range runs from the shorter to the longer, e.g. `10s..60s`",
            );
            ok = false;
        }
    }
    let max_delays = def.max_delays.unwrap_or(SlowDown::DEFAULT_MAX_DELAYS);
    if max_delays == 0 {
        ctx.error(
            &site.child("max_delays"),
            "max_delays must be at least 1 (leave `slow_down` out to never delay)",
        );
        ok = false;
    }
    match (ok, per, low, high) {
        (true, Some(per), Some(low), Some(high)) => Some(SlowDown {
            errors: def.errors,
            per,
            delay: (low, high),
            max_delays,
        }),
        _ => None,
    }
}

/// `quick_retry`; every problem is reported, `None` if there was one.
fn compile_quick_retry(ctx: &mut Ctx<'_>, site: &Site, def: &QuickRetryDef) -> Option<QuickRetry> {
    let mut ok = true;
    if !(1..=QuickRetry::MAX_ATTEMPTS).contains(&def.attempts) {
        ctx.error(
            &site.child("attempts"),
            format_args!(
                "attempts must be 1 to {}: the tries after the first within one attempt \
                 (use the retry template for more)",
                QuickRetry::MAX_ATTEMPTS
            ),
        );
        ok = false;
    }
    let delay = match &def.delay {
        None => QuickRetry::DEFAULT_DELAY,
        Some(text) => match parse_duration(text.as_str()) {
            Ok(delay) if delay <= QuickRetry::MAX_DELAY => delay,
            Ok(_) => {
                ctx.error(
                    &site.child("delay"),
                    "a quick retry's delay is at most 10s (longer waits belong to the retry \
                     template, which frees the worker)",
                );
                ok = false;
                Duration::ZERO
            }
            Err(err) => {
                let shown = ctx.shown(&site.child("delay"), text.as_str()).to_string();
                ctx.error(
                    &site.child("delay"),
                    format_args!("bad duration `{shown}`: {err}"),
                );
                ok = false;
                Duration::ZERO
            }
        },
    };
    let on = match &def.on {
        None => QuickRetry::DEFAULT_ON.to_vec(),
        Some(kinds) => {
            let mut on = Vec::new();
            for (kind, item) in super::classifiers::items(ctx, &site.child("on"), kinds) {
                let kind = super::classifiers::error_kind(*kind);
                if matches!(kind, ErrorKind::Mapping | ErrorKind::Internal) {
                    ctx.error(
                        &item,
                        format_args!(
                            "`{}` fails before anything is sent: a quick try would fail the \
                             same way; name transport errors (connect, reset, timeout, dns, \
                             tls, io, other)",
                            kind.as_str()
                        ),
                    );
                    ok = false;
                }
                on.push(kind);
            }
            if on.is_empty() {
                ctx.error(
                    &site.child("on"),
                    "`on` is empty: name the error kinds that get a quick try, e.g. \
                     `[connect, reset]`",
                );
                ok = false;
            }
            on
        }
    };
    ok.then_some(QuickRetry {
        attempts: def.attempts,
        delay,
        on,
    })
}

fn compile_http(ctx: &mut Ctx<'_>, site: &Site, def: &HttpDef) -> Option<HttpChannel> {
    let mut ok = true;

    let url_site = site.child("url");
    let url_display = ctx.shown(&url_site, &def.url).to_string();
    if ctx.is_resolved(&url_site) && !is_http_url(&def.url) {
        let expanded = if url_display == def.url {
            ""
        } else {
            " (after expanding variables)"
        };
        ctx.error(
            &url_site,
            format_args!(
                "url `{url_display}`{expanded} is not an absolute http(s) URL, \
                 e.g. `https://api.example.com/leads`"
            ),
        );
        ok = false;
    }

    let method = compile_method(ctx, &site.child("method"), def.method.as_deref(), &mut ok);

    let headers = compile_headers(ctx, &site.child("headers"), &def.headers, &mut ok);
    let timeout = compile_timeout(
        ctx,
        &site.child("timeout"),
        def.timeout.as_ref(),
        DEFAULT_HTTP_TIMEOUT,
        &mut ok,
    );
    let oauth2 = match def.auth.as_ref().and_then(|auth| auth.oauth2.as_ref()) {
        None => None,
        Some(oauth2) => {
            let compiled = compile_oauth2(ctx, &site.child("auth").child("oauth2"), oauth2);
            ok &= compiled.is_some();
            compiled
        }
    };
    let client = def
        .tls
        .as_ref()
        .and_then(|tls| compile_tls(ctx, &site.child("tls"), tls, &mut ok));
    let sign = def.sign.as_ref().and_then(|sign| {
        compile_sign(
            ctx,
            &site.child("sign"),
            sign,
            &site.child("headers"),
            def,
            &mut ok,
        )
    });

    ok.then(|| HttpChannel {
        url: SecretUrl::new(def.url.as_str()),
        url_display,
        method,
        headers,
        timeout,
        refresh_auth: oauth2.map(Box::new),
        sign,
        client,
    })
}

/// `sign`: each secret decoded (a bad one named at its own position, never
/// quoted), and no header of the policy's own in the signature's place.
fn compile_sign(
    ctx: &mut Ctx<'_>,
    site: &Site,
    def: &SignDef,
    headers_site: &Site,
    http: &HttpDef,
    ok: &mut bool,
) -> Option<Box<Signing>> {
    let secret_site = site.child("secret");
    if def.secret.0.is_empty() {
        ctx.error(
            &secret_site,
            "no secret: write one (`secret: \"${WEBHOOK_SECRET}\"`), or a list of them \
             during a rotation",
        );
        *ok = false;
        return None;
    }
    for name in http.headers.keys() {
        let lower = name.to_ascii_lowercase();
        if [
            signing::ID_HEADER,
            signing::TIMESTAMP_HEADER,
            signing::SIGNATURE_HEADER,
        ]
        .contains(&lower.as_str())
        {
            ctx.error_at_key(
                &headers_site.child(name),
                format_args!("header `{name}` is set by `sign` on every request; remove it here"),
            );
            *ok = false;
        }
    }
    let mut keys = Vec::new();
    let sites = ctx.item_sites(&secret_site, def.secret.0.len());
    for (secret, at) in def.secret.0.iter().zip(sites) {
        if !ctx.is_resolved(&at) {
            // `${VAR}` left unexpanded (`validate --no-env`): nothing to check.
            continue;
        }
        match SigningKey::parse(secret.as_str()) {
            Ok(key) => keys.push(key),
            Err(message) => {
                ctx.error(&at, message);
                *ok = false;
            }
        }
    }
    (*ok && keys.len() == def.secret.0.len()).then(|| Box::new(Signing { keys }))
}

/// An HTTP method, `POST` unless written, upper-cased; an unknown one is
/// an error listing those allowed.
fn compile_method(
    ctx: &mut Ctx<'_>,
    method_site: &Site,
    written: Option<&str>,
    ok: &mut bool,
) -> String {
    let method = written.unwrap_or("POST").to_ascii_uppercase();
    if ctx.is_resolved(method_site) && !METHODS.contains(&method.as_str()) {
        let shown = ctx
            .shown(method_site, written.unwrap_or_default())
            .to_string();
        ctx.error(
            method_site,
            format_args!(
                "unknown method `{shown}`; use one of {}",
                METHODS.join(", ")
            ),
        );
        *ok = false;
    }
    method
}

fn compile_headers(
    ctx: &mut Ctx<'_>,
    headers_site: &Site,
    written: &BTreeMap<String, Text>,
    ok: &mut bool,
) -> Vec<(String, Secret)> {
    let mut headers = Vec::new();
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    // In the order written, so that a repeated name is reported where it
    // is repeated.
    let mut written: Vec<(&String, &Text)> = written.iter().collect();
    written.sort_by_key(|(name, _)| {
        ctx.file(headers_site)
            .key_at(&headers_site.child(name).path)
    });
    for (name, value) in written {
        let at = headers_site.child(name);
        let lower = name.to_ascii_lowercase();
        if !is_token(name) {
            ctx.error_at_key(
                &at,
                format_args!(
                    "bad header name `{name}`: use letters, digits and `-` \
                     (no spaces or `:`)"
                ),
            );
            *ok = false;
        } else if lower == IDEMPOTENCY_KEY {
            ctx.error_at_key(
                &at,
                "`Idempotency-Key` is set by the engine on every attempt (the job's key); \
                 remove it here",
            );
            *ok = false;
        } else if let Some(earlier) = seen.insert(lower, name) {
            ctx.error_at_key(
                &at,
                format_args!(
                    "header `{name}` is written twice (also as `{earlier}`; names ignore case)"
                ),
            );
            *ok = false;
        }
        if ctx.is_resolved(&at) && value.as_str().chars().any(|c| c.is_control() && c != '\t') {
            // The value itself is never quoted: it may be a token.
            ctx.error(
                &at,
                "header value holds a line break or another control character",
            );
            *ok = false;
        }
        headers.push((name.clone(), Secret::new(value.as_str())));
    }
    headers
}

/// A duration that must be longer than zero; `default` when not written.
fn compile_timeout(
    ctx: &mut Ctx<'_>,
    site: &Site,
    text: Option<&Text>,
    default: Duration,
    ok: &mut bool,
) -> Duration {
    let key = site
        .path
        .rsplit('.')
        .next()
        .unwrap_or("duration")
        .to_string();
    match text {
        None => default,
        Some(text) => match positive_duration(ctx, site, text, &key) {
            Some(d) => d,
            None => {
                *ok = false;
                default
            }
        },
    }
}

/// A duration longer than zero, or an error at `site` (named `key`).
fn positive_duration(ctx: &mut Ctx<'_>, site: &Site, text: &Text, key: &str) -> Option<Duration> {
    match parse_duration(text.as_str()) {
        Ok(d) if d > Duration::ZERO => Some(d),
        Ok(_) => {
            ctx.error(site, format_args!("{key} must be longer than 0s"));
            None
        }
        Err(err) => {
            let shown = ctx.shown(site, text.as_str()).to_string();
            ctx.error(site, format_args!("bad duration `{shown}`: {err}"));
            None
        }
    }
}

/// A `circuit_breaker` under a channel or a step. Every problem is
/// reported; `None` if there was one.
pub(super) fn compile_breaker(
    ctx: &mut Ctx<'_>,
    site: &Site,
    def: &BreakerDef,
) -> Option<BreakerConfig> {
    let mut ok = true;
    if def.failures.is_none() && def.failure_ratio.is_none() {
        ctx.error_at_key(
            site,
            "a circuit breaker needs `failures: N` (opens after N failures in a row) or \
             `failure_ratio` with `window` (opens when that share of recent attempts failed), \
             e.g. `{ failures: 5, window: 60s, cooldown: 30s }`",
        );
        ok = false;
    }
    if def.failures == Some(0) {
        ctx.error(&site.child("failures"), "failures must be at least 1");
        ok = false;
    }
    let window = match &def.window {
        None => None,
        Some(text) => {
            let window = positive_duration(ctx, &site.child("window"), text, "window");
            ok &= window.is_some();
            window
        }
    };
    let cooldown = match &def.cooldown {
        None => Some(BreakerConfig::DEFAULT_COOLDOWN),
        Some(text) => positive_duration(ctx, &site.child("cooldown"), text, "cooldown"),
    };
    ok &= cooldown.is_some();
    let ratio_site = site.child("failure_ratio");
    let ratio = match &def.failure_ratio {
        None => None,
        Some(text) => match parse_ratio(text.as_str()) {
            Some(ratio) => Some(ratio),
            None => {
                let shown = ctx.shown(&ratio_site, text.as_str()).to_string();
                ctx.error(
                    &ratio_site,
                    format_args!(
                        "bad failure_ratio `{shown}`: write a share above 0 and at most 1, \
                         as `50%` or `0.5`"
                    ),
                );
                ok = false;
                None
            }
        },
    };
    if def.failure_ratio.is_some() && def.window.is_none() {
        ctx.error_at_key(
            &ratio_site,
            "`failure_ratio` needs a `window` to count attempts over, e.g. `window: 60s`",
        );
        ok = false;
    }
    if def.min_requests == Some(0) {
        ctx.error(
            &site.child("min_requests"),
            "min_requests must be at least 1",
        );
        ok = false;
    } else if def.min_requests.is_some() && def.failure_ratio.is_none() {
        ctx.warning_at_key(
            &site.child("min_requests"),
            "`min_requests` has no effect without `failure_ratio`",
        );
    }
    if def.half_open_probes == Some(0) {
        ctx.error(
            &site.child("half_open_probes"),
            "half_open_probes must be at least 1 (a breaker closes only after a probe succeeds)",
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(BreakerConfig {
        failures: def.failures,
        failure_ratio: ratio.map(|ratio| FailureRatio {
            ratio,
            min_requests: def
                .min_requests
                .unwrap_or(BreakerConfig::DEFAULT_MIN_REQUESTS),
        }),
        window,
        cooldown: cooldown?,
        half_open_probes: def.half_open_probes.unwrap_or(1),
    })
}

/// `50%` or `0.5`: a share in `(0, 1]`.
fn parse_ratio(text: &str) -> Option<f64> {
    let text = text.trim();
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().ok()? / 100.0,
        None => text.parse::<f64>().ok()?,
    };
    (value > 0.0 && value <= 1.0).then_some(value)
}

/// `50/s`, `600/m`, `3600/h`, `5/10s`, `1/250ms`.
fn compile_rate(ctx: &mut Ctx<'_>, site: &Site, text: &Text) -> Option<Rate> {
    match parse_rate(text.as_str()) {
        Ok(rate) => Some(rate),
        Err(why) => {
            let shown = ctx.shown(site, text.as_str()).to_string();
            ctx.error(
                site,
                format_args!(
                    "bad rate `{shown}`: {why}; write a count per period, e.g. `50/s`, \
                     `600/m` or `5/10s`"
                ),
            );
            None
        }
    }
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    let Some((count, per)) = text.trim().split_once('/') else {
        return Err("no `/`".to_string());
    };
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| "the count before `/` is not a whole number".to_string())?;
    if count == 0 {
        return Err("the count must be at least 1".to_string());
    }
    let per = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => parse_duration(other).map_err(|e| format!("the period after `/`: {e}"))?,
    };
    if per.is_zero() {
        return Err("the period must be longer than 0s".to_string());
    }
    Ok(Rate { count, per })
}

/// A token request's URL, checked at `site.key`; returns it as it may be
/// shown (`${VAR}` not expanded).
fn token_url(ctx: &mut Ctx<'_>, site: &Site, key: &str, url: &str, ok: &mut bool) -> String {
    let url_site = site.child(key);
    let url_display = ctx.shown(&url_site, url).to_string();
    if ctx.is_resolved(&url_site) && !is_http_url(url) {
        ctx.error(
            &url_site,
            format_args!(
                "{key} `{url_display}` is not an absolute http(s) URL, \
                 e.g. `https://auth.example.com/oauth/token`"
            ),
        );
        *ok = false;
    }
    url_display
}

fn compile_refresh_auth(
    ctx: &mut Ctx<'_>,
    site: &Site,
    def: &RefreshAuthDef,
) -> Option<RefreshAuth> {
    let mut ok = true;
    let url_display = token_url(ctx, site, "url", &def.url, &mut ok);
    let method = compile_method(ctx, &site.child("method"), def.method.as_deref(), &mut ok);
    let headers = compile_headers(ctx, &site.child("headers"), &def.headers, &mut ok);
    let body = match (&def.body, &def.form) {
        (Some(_), Some(_)) => {
            ctx.error_at_key(
                &site.child("form"),
                "write the refresh request's `body` or its `form`, not both",
            );
            ok = false;
            None
        }
        (Some(serde_json::Value::String(text)), None) => {
            Some(RefreshBody::Text(Secret::new(text.as_str())))
        }
        (Some(value), None) => Some(RefreshBody::Json(Secret::new(value.to_string()))),
        (None, Some(form)) => Some(RefreshBody::Form(
            form.iter()
                .map(|(k, v)| (k.clone(), Secret::new(v.as_str())))
                .collect(),
        )),
        (None, None) => None,
    };
    let token_site = site.child("token");
    let token = match TokenPath::parse(&def.token) {
        Ok(path) => Some(path),
        Err(why) => {
            let shown = ctx.shown(&token_site, &def.token).to_string();
            ctx.error(
                &token_site,
                format_args!(
                    "bad token path `{shown}`: {why}; write where the token is in the \
                     JSON answer, e.g. `access_token` or `$.data.token`"
                ),
            );
            ok = false;
            None
        }
    };
    let header = def.header.clone().unwrap_or_else(|| "Authorization".into());
    if !is_token(&header) {
        ctx.error(
            &site.child("header"),
            format_args!("bad header name `{header}`: use letters, digits and `-`"),
        );
        ok = false;
    } else if header.eq_ignore_ascii_case(IDEMPOTENCY_KEY) {
        ctx.error(
            &site.child("header"),
            "the token cannot go in `Idempotency-Key`, which the engine sets",
        );
        ok = false;
    }
    let scheme = def.scheme.clone().unwrap_or_else(|| "Bearer".into());
    if scheme.chars().any(|c| c.is_control() || c == ' ') {
        ctx.error(
            &site.child("scheme"),
            "scheme is one word, e.g. `Bearer` (or `\"\"` for the token alone)",
        );
        ok = false;
    }
    let timeout = compile_timeout(
        ctx,
        &site.child("timeout"),
        def.timeout.as_ref(),
        RefreshAuth::DEFAULT_TIMEOUT,
        &mut ok,
    );
    if !ok {
        return None;
    }
    Some(RefreshAuth {
        url: Secret::new(def.url.as_str()),
        url_display,
        method,
        headers,
        body,
        token: token?,
        header,
        scheme,
        timeout,
        client_credentials: false,
    })
}

/// `tls`: the channel's own client, with the client certificate and the
/// CA read and checked now, so that a missing file or a bad PEM is an
/// error at its key, not a failed attempt later.
fn compile_tls(
    ctx: &mut Ctx<'_>,
    site: &Site,
    def: &TlsDef,
    ok: &mut bool,
) -> Option<reqwest::Client> {
    let mut read = |key: &str, path: &Option<String>| -> Option<Vec<u8>> {
        let path = path.as_deref()?;
        let at = site.child(key);
        if !ctx.is_resolved(&at) {
            return None;
        }
        match std::fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                ctx.error(&at, format_args!("cannot read `{path}`: {error}"));
                *ok = false;
                None
            }
        }
    };
    let cert = read("client_cert", &def.client_cert);
    let key = read("client_key", &def.client_key);
    let ca = read("ca", &def.ca);
    if !*ok {
        return None;
    }
    let mut builder = crate::channels::http_client_builder();
    match (&def.client_cert, &def.client_key) {
        (Some(_), None) | (None, Some(_)) => {
            ctx.error_at_key(
                site,
                "a client certificate needs its key: write both `client_cert` and `client_key`",
            );
            *ok = false;
            return None;
        }
        _ => {}
    }
    if let (Some(cert), Some(key)) = (cert, key) {
        let mut pem = cert;
        pem.push(b'\n');
        pem.extend_from_slice(&key);
        match reqwest::Identity::from_pem(&pem) {
            Ok(identity) => builder = builder.identity(identity),
            Err(_) => {
                ctx.error(
                    &site.child("client_cert"),
                    "no usable client certificate and key: `client_cert` must hold PEM \
                     certificates and `client_key` a PEM private key (PKCS#8, PKCS#1 or SEC1)",
                );
                *ok = false;
                return None;
            }
        }
    }
    if let Some(ca) = ca {
        match reqwest::Certificate::from_pem_bundle(&ca) {
            Ok(certificates) if !certificates.is_empty() => {
                for certificate in certificates {
                    builder = builder.add_root_certificate(certificate);
                }
            }
            _ => {
                ctx.error(
                    &site.child("ca"),
                    "no PEM certificate in this file (`-----BEGIN CERTIFICATE-----`)",
                );
                *ok = false;
                return None;
            }
        }
    }
    match builder.build() {
        Ok(client) => Some(client),
        Err(error) => {
            ctx.error(
                site,
                format_args!("cannot make a TLS client of these files: {error}"),
            );
            *ok = false;
            None
        }
    }
}

/// `auth.oauth2`: the client-credentials grant as a token request, its
/// token at `access_token`, sent as `Authorization: Bearer`.
fn compile_oauth2(ctx: &mut Ctx<'_>, site: &Site, def: &OAuth2Def) -> Option<RefreshAuth> {
    let mut ok = true;
    let url_display = token_url(ctx, site, "token_url", &def.token_url, &mut ok);
    let timeout = compile_timeout(
        ctx,
        &site.child("timeout"),
        def.timeout.as_ref(),
        RefreshAuth::DEFAULT_TIMEOUT,
        &mut ok,
    );
    let mut form = vec![
        ("grant_type".to_string(), Secret::new("client_credentials")),
        ("client_id".to_string(), Secret::new(def.client_id.as_str())),
        (
            "client_secret".to_string(),
            Secret::new(def.client_secret.as_str()),
        ),
    ];
    if let Some(scope) = &def.scope {
        form.push(("scope".to_string(), Secret::new(scope.as_str())));
    }
    let token = TokenPath::parse("access_token").ok()?;
    ok.then(|| RefreshAuth {
        url: Secret::new(def.token_url.as_str()),
        url_display,
        method: "POST".to_string(),
        headers: Vec::new(),
        body: Some(RefreshBody::Form(form)),
        token,
        header: "Authorization".to_string(),
        scheme: "Bearer".to_string(),
        timeout,
        client_credentials: true,
    })
}

/// A step's `circuit_breaker`, to be applied to its channel.
#[derive(Debug, Clone)]
pub struct StepBreaker {
    pub channel: String,
    pub config: BreakerConfig,
    pub site: Site,
}

/// Gives each channel the breaker its steps configure. A channel has one
/// breaker: a step's must equal the channel's own, and every other step's
/// for that channel; a difference is an error naming both places.
pub fn apply_step_breakers(
    ctx: &mut Ctx<'_>,
    registry: &Registry<'_>,
    channels: &mut BTreeMap<String, Arc<Channel>>,
    step_breakers: &[StepBreaker],
) {
    let mut first_site: BTreeMap<&str, &Site> = BTreeMap::new();
    for step in step_breakers {
        let Some(channel) = channels.get_mut(&step.channel) else {
            continue;
        };
        match (&channel.breaker, first_site.get(step.channel.as_str())) {
            (None, _) => {
                Arc::make_mut(channel).breaker = Some(step.config.clone());
                first_site.insert(&step.channel, &step.site);
            }
            (Some(existing), _) if *existing == step.config => {}
            (Some(_), Some(earlier)) => {
                let earlier = ctx.describe_key(earlier);
                ctx.error_at_key(
                    &step.site,
                    format_args!(
                        "channel `{}` already has a different breaker, set by the step at \
                         {earlier}; a breaker belongs to its channel: write it once, under \
                         `channels.{}`",
                        step.channel, step.channel
                    ),
                );
            }
            (Some(_), None) => {
                let at = registry
                    .channels
                    .get(step.channel.as_str())
                    .map(|entry| ctx.describe_key(&entry.site.child("circuit_breaker")))
                    .unwrap_or_else(|| format!("channels.{}", step.channel));
                ctx.error_at_key(
                    &step.site,
                    format_args!(
                        "channel `{}` has its own circuit_breaker ({at}), different from this \
                         one; a breaker belongs to its channel: remove this one or make them equal",
                        step.channel
                    ),
                );
            }
        }
    }
}

fn compile_file(ctx: &mut Ctx<'_>, site: &Site, def: &FileDef) -> Option<FileChannel> {
    let dir_site = site.child("dir");
    if ctx.is_resolved(&dir_site) && def.dir.trim().is_empty() {
        ctx.error(&dir_site, "dir must name a directory");
        return None;
    }
    Some(FileChannel {
        dir: PathBuf::from(&def.dir),
    })
}

/// An absolute `http://` or `https://` URL with a host, no whitespace,
/// and nothing a URL parser refuses.
fn is_http_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if host_port.starts_with('[') {
        // An IPv6 literal: `[::1]:8080`.
        host_port.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    // The light check catches what `Url` would repair (`https:///x` reads as
    // host `x`); `Url` then refuses what the light check cannot see: an
    // unclosed IPv6 literal, a port past 65535, a bad character in the host.
    !host.is_empty()
        && !url.chars().any(char::is_whitespace)
        && reqwest::Url::parse(url).is_ok_and(|parsed| parsed.host_str().is_some())
}

/// An HTTP token (RFC 9110 `tchar`s), as header names must be.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_an_http_scheme_and_a_host() {
        for good in [
            "https://api.acme.example/leads",
            "http://127.0.0.1:8080",
            "HTTPS://x.example?q=1",
            "http://user:pw@host/x",
            "http://[::1]:80/",
        ] {
            assert!(is_http_url(good), "{good}");
        }
        for bad in [
            "api.acme.example/leads",
            "ftp://x",
            "https://",
            "https:///path",
            "http://:80/",
            "https://a b.example",
            "",
            "http://[::1",
            "http://[::1/x",
            "http://example.com:99999/x",
            "http://example.com:65536",
            "http://exa<mple.com/",
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }

    #[test]
    fn header_names_are_tokens() {
        assert!(is_token("Authorization"));
        assert!(is_token("X-Api-Key"));
        assert!(!is_token("X Api"));
        assert!(!is_token("X:Y"));
        assert!(!is_token(""));
    }

    #[test]
    fn rates_are_a_count_per_period() {
        let rate = |count, ms| Rate {
            count,
            per: Duration::from_millis(ms),
        };
        assert_eq!(parse_rate("50/s"), Ok(rate(50, 1_000)));
        assert_eq!(parse_rate(" 600 / m "), Ok(rate(600, 60_000)));
        assert_eq!(parse_rate("3600/h"), Ok(rate(3600, 3_600_000)));
        assert_eq!(parse_rate("5/10s"), Ok(rate(5, 10_000)));
        assert_eq!(parse_rate("1/250ms"), Ok(rate(1, 250)));
        for bad in [
            "50",
            "0/s",
            "x/s",
            "5/",
            "5/0s",
            "5/fortnight",
            "-1/s",
            "1.5/s",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ratios_are_shares() {
        assert_eq!(parse_ratio("50%"), Some(0.5));
        assert_eq!(parse_ratio("0.25"), Some(0.25));
        assert_eq!(parse_ratio("1"), Some(1.0));
        for bad in ["0", "0%", "150%", "1.5", "x", "-0.1"] {
            assert_eq!(parse_ratio(bad), None, "{bad}");
        }
    }
}
