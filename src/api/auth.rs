//! API tokens and their scopes.
//!
//! - `submit`: create jobs (`POST /v1/flows/{flow}/jobs`, `…/jobs:batch`)
//!   and read (every `GET`).
//! - `admin`: everything, reads and submission included.
//!
//! `/healthz` and `/readyz` are always open; `/metrics` is open when the API listens on
//! loopback only, and otherwise wants a token of either scope. Without any
//! token configured the API is open (the engine refuses to listen beyond
//! loopback then, see `steadfast run`). Secrets are compared in constant
//! time and never logged: a token's `Debug` shows its name and scope only.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::guesses::{ClientAddress, Guesses, MOST_UNKNOWN};
use super::AppState;

pub use crate::tokens::{Scope, Token};

/// Who made a request: the token's name and scope. Handlers read it as an
/// extension (absent when the API has no tokens).
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
}

/// The API's tokens, checked on every request.
#[derive(Clone, Default)]
pub struct Access {
    /// Secrets kept as SHA-256 digests: equal length, so the comparison's
    /// time does not depend on the secret's length either.
    tokens: Arc<Vec<(Caller, [u8; 32])>>,
    /// Serve `/metrics` without a token (the API listens on loopback only).
    pub open_metrics: bool,
    /// Unknown tokens by client address.
    guesses: Arc<Guesses>,
}

/// Why a secret presented was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No token has this secret.
    Unknown,
    /// The client's address sent too many unknown tokens: nothing is
    /// compared for `wait` more.
    Guessing { wait: Duration },
}

impl Access {
    pub fn new(tokens: &[Token], open_metrics: bool) -> Self {
        let tokens = tokens
            .iter()
            .map(|t| {
                (
                    Caller {
                        name: t.name.clone(),
                        scope: t.scope,
                    },
                    digest(&t.secret),
                )
            })
            .collect();
        Access {
            tokens: Arc::new(tokens),
            open_metrics,
            guesses: Arc::default(),
        }
    }

    /// The token whose secret this is, presented from `from`; refused
    /// without a comparison while that address is past its unknown
    /// tokens (see [`super::guesses`]).
    pub(crate) fn identify(&self, secret: &str, from: ClientAddress) -> Result<Caller, Refused> {
        let now = Instant::now();
        if let Some(wait) = from
            .0
            .and_then(|address| self.guesses.refused(address, now))
        {
            return Err(Refused::Guessing { wait });
        }
        if let Some(caller) = self.find(secret) {
            return Ok(caller);
        }
        if let Some(address) = from.0 {
            if self.guesses.unknown(address, now) {
                tracing::warn!(
                    client = %address,
                    "{MOST_UNKNOWN} unknown tokens within a minute from one address: \
                     its tokens are refused (429) until the minute ends"
                );
            }
        }
        Err(Refused::Unknown)
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token whose secret this is; every token is compared, in constant
    /// time, whether or not one matched already.
    pub(crate) fn find(&self, secret: &str) -> Option<Caller> {
        let presented = digest(secret);
        let mut found = None;
        for (caller, stored) in self.tokens.iter() {
            if bool::from(stored.ct_eq(&presented)) && found.is_none() {
                found = Some(caller.clone());
            }
        }
        found
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|(c, _)| c.name.as_str()).collect();
        f.debug_struct("Access")
            .field("tokens", &names)
            .field("open_metrics", &self.open_metrics)
            .finish()
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// What a request needs: `None` open, `Some(None)` any token, `Some(scope)`.
fn needs(method: &Method, path: &str, open_metrics: bool) -> Option<Option<Scope>> {
    match path {
        "/healthz" | "/readyz" => None,
        // The console checks its own sessions (console::session).
        "/ui" => None,
        _ if path.starts_with("/ui/") => None,
        "/metrics" if open_metrics => None,
        "/metrics" => Some(None),
        _ if method == Method::GET || method == Method::HEAD => Some(None),
        _ if method == Method::POST
            && path.starts_with("/v1/flows/")
            && (path.ends_with("/jobs") || path.ends_with("/jobs:batch")) =>
        {
            Some(Some(Scope::Submit))
        }
        _ => Some(Some(Scope::Admin)),
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// 429 for an address that sent too many unknown tokens, with the
/// seconds until it may try again.
fn too_many_guesses(wait: Duration) -> Response {
    let seconds = wait.as_secs().max(1);
    let mut response = refuse(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "too many unknown tokens from this address ({MOST_UNKNOWN} a minute at most): \
             try again in {seconds} s"
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    response
}

/// The middleware: 401 without a known token, 403 with a token whose scope
/// does not allow the call.
pub async fn check(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let access = &state.access;
    if access.is_open() {
        return next.run(request).await;
    }
    let Some(needed) = needs(request.method(), request.uri().path(), access.open_metrics) else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(secret) = presented else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "this API needs a token: send `Authorization: Bearer SECRET` (the CLI reads \
             --token or STEADFAST_TOKEN)"
                .into(),
        );
    };
    let caller = match access.identify(secret, ClientAddress::of(request.extensions())) {
        Ok(caller) => caller,
        Err(Refused::Unknown) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unknown token: check the secret against the `[[tokens]]` of steadfast.toml".into(),
            );
        }
        Err(Refused::Guessing { wait }) => return too_many_guesses(wait),
    };
    if let Some(scope) = needed {
        let allowed = caller.scope == Scope::Admin || caller.scope == scope;
        if !allowed {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "token `{}` has scope `{}`; {} {} needs scope `{}`",
                    caller.name,
                    caller.scope.as_str(),
                    request.method(),
                    request.uri().path(),
                    scope.as_str()
                ),
            );
        }
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_by_call() {
        assert_eq!(needs(&Method::GET, "/healthz", false), None);
        assert_eq!(needs(&Method::GET, "/metrics", true), None);
        assert_eq!(needs(&Method::GET, "/metrics", false), Some(None));
        assert_eq!(needs(&Method::GET, "/v1/jobs", true), Some(None));
        assert_eq!(
            needs(&Method::POST, "/v1/flows/a/jobs", true),
            Some(Some(Scope::Submit))
        );
        assert_eq!(
            needs(&Method::POST, "/v1/flows/a/jobs:batch", true),
            Some(Some(Scope::Submit))
        );
        assert_eq!(
            needs(&Method::POST, "/v1/dlq/retry", true),
            Some(Some(Scope::Admin))
        );
        assert_eq!(
            needs(&Method::PATCH, "/v1/jobs/x", true),
            Some(Some(Scope::Admin))
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let token = Token {
            name: "ci".into(),
            secret: "hunter2".into(),
            scope: Scope::Submit,
        };
        assert!(!format!("{token:?}").contains("hunter2"));
        let access = Access::new(&[token], false);
        assert_eq!(access.find("hunter2").map(|c| c.name), Some("ci".into()));
        assert!(access.find("hunter3").is_none());
        assert!(!format!("{access:?}").contains("hunter2"));
    }
}
