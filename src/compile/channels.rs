//! Channels: exactly one kind each (`http` or `file`), with URLs, methods,
//! headers and directories checked after `${VAR}` expansion. Values that
//! came from the environment go into [`Secret`]s; messages never quote them
//! (only the text as written).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::context::{Ctx, Site};
use super::duration::parse_duration;
use super::names::Registry;
use crate::model::{Channel, ChannelKind, FileChannel, HttpChannel, Secret};
use crate::policy::defs::{ChannelDef, FileDef, HttpDef, Text};

/// The timeout of one HTTP attempt unless `timeout` says otherwise.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Set by the engine on every attempt; a policy must not override it.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub fn compile_channels(
    ctx: &mut Ctx<'_>,
    registry: &Registry<'_>,
) -> BTreeMap<String, Arc<Channel>> {
    registry
        .channels
        .values()
        .filter_map(|entry| {
            compile_channel(ctx, &entry.site, entry.def).map(|kind| {
                (
                    entry.name.to_string(),
                    Arc::new(Channel {
                        name: entry.name.to_string(),
                        kind,
                    }),
                )
            })
        })
        .collect()
}

fn compile_channel(ctx: &mut Ctx<'_>, site: &Site, def: &ChannelDef) -> Option<ChannelKind> {
    let mut ok = true;
    for (key, present) in [
        ("circuit_breaker", def.circuit_breaker.is_some()),
        ("rate", def.rate.is_some()),
        ("concurrency", def.concurrency.is_some()),
        ("refresh_auth", def.refresh_auth.is_some()),
    ] {
        if present {
            ctx.not_supported(&site.child(key), key);
            ok = false;
        }
    }
    let kind = match (&def.http, &def.file) {
        (Some(http), None) => compile_http(ctx, &site.child("http"), http).map(ChannelKind::Http),
        (None, Some(file)) => compile_file(ctx, &site.child("file"), file).map(ChannelKind::File),
        (Some(_), Some(_)) => {
            ctx.error_at_key(
                site,
                "a channel has exactly one kind: write `http` or `file`, not both",
            );
            None
        }
        (None, None) => {
            ctx.error_at_key(site, "a channel needs its kind: `http` or `file`");
            None
        }
    };
    kind.filter(|_| ok)
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

    let method_site = site.child("method");
    let method = def.method.as_deref().unwrap_or("POST").to_ascii_uppercase();
    if ctx.is_resolved(&method_site) && !METHODS.contains(&method.as_str()) {
        let shown = ctx
            .shown(&method_site, def.method.as_deref().unwrap_or_default())
            .to_string();
        ctx.error(
            &method_site,
            format_args!(
                "unknown method `{shown}`; use one of {}",
                METHODS.join(", ")
            ),
        );
        ok = false;
    }

    let headers_site = site.child("headers");
    let mut headers = Vec::new();
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    // In the order written, so that a repeated name is reported where it
    // is repeated.
    let mut written: Vec<(&String, &Text)> = def.headers.iter().collect();
    written.sort_by_key(|(name, _)| {
        ctx.file(&headers_site)
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
            ok = false;
        } else if lower == IDEMPOTENCY_KEY {
            ctx.error_at_key(
                &at,
                "`Idempotency-Key` is set by the engine on every attempt (the job's key); \
                 remove it here",
            );
            ok = false;
        } else if let Some(earlier) = seen.insert(lower, name) {
            ctx.error_at_key(
                &at,
                format_args!(
                    "header `{name}` is written twice (also as `{earlier}`; names ignore case)"
                ),
            );
            ok = false;
        }
        if ctx.is_resolved(&at) && value.as_str().chars().any(|c| c.is_control() && c != '\t') {
            // The value itself is never quoted: it may be a token.
            ctx.error(
                &at,
                "header value holds a line break or another control character",
            );
            ok = false;
        }
        headers.push((name.clone(), Secret::new(value.as_str())));
    }

    let timeout_site = site.child("timeout");
    let timeout = match &def.timeout {
        None => DEFAULT_HTTP_TIMEOUT,
        Some(text) => match parse_duration(text.as_str()) {
            Ok(d) if d > Duration::ZERO => d,
            Ok(_) => {
                ctx.error(&timeout_site, "timeout must be longer than 0s");
                ok = false;
                DEFAULT_HTTP_TIMEOUT
            }
            Err(err) => {
                let shown = ctx.shown(&timeout_site, text.as_str()).to_string();
                ctx.error(&timeout_site, format_args!("bad duration `{shown}`: {err}"));
                ok = false;
                DEFAULT_HTTP_TIMEOUT
            }
        },
    };

    ok.then(|| HttpChannel {
        url: Secret::new(def.url.as_str()),
        url_display,
        method,
        headers,
        timeout,
    })
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

/// A light check, enough to catch a missing scheme or host: `http://` or
/// `https://`, then a host, and no whitespace.
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
    !host.is_empty() && !url.chars().any(char::is_whitespace)
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
}
