//! Who is looking at the console, and the guards on what they send.
//!
//! A session is a random id in an HttpOnly, SameSite=Strict cookie scoped
//! to `/ui`, kept in this node's memory for [`SESSION_TTL`] (a restart or
//! another node asks for the token again). With tokens configured a visitor
//! logs in with one, and the session carries its name and scope: `admin`
//! may act, `submit` reads only. Without tokens (the API then listens on
//! loopback only) every visitor gets an admin session named `local` at
//! once, so that forms still carry a session's CSRF token.
//!
//! Every change is a POST whose form carries the session's CSRF token
//! (compared in constant time); on top, a request a browser marks as sent
//! from another site (`Sec-Fetch-Site`, or an `Origin` other than the
//! console's own) is refused before anything is read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::layout;
use crate::api::auth::Refused;
use crate::api::guesses::ClientAddress;
use crate::api::{AppState, Caller, Scope};

/// The session cookie's name.
pub const COOKIE: &str = "steadfast_session";
/// How long a session lasts from login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest go first past it.
const MAX_SESSIONS: usize = 10_000;

/// The person behind a console request.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The token's name, or `local` on a console without tokens.
    pub name: String,
    /// Whether they may change anything (an `admin` token).
    pub admin: bool,
    /// The token every form of this session carries.
    pub csrf: String,
}

impl Viewer {
    /// The caller the API's handlers record (an editor's or a pauser's
    /// name); only admins reach them.
    pub fn as_caller(&self) -> Option<axum::Extension<Caller>> {
        Some(axum::Extension(Caller {
            name: self.name.clone(),
            scope: if self.admin {
                Scope::Admin
            } else {
                Scope::Submit
            },
        }))
    }

    fn from_caller(caller: &Caller) -> Viewer {
        Viewer {
            name: caller.name.clone(),
            admin: caller.scope == Scope::Admin,
            csrf: random_token(),
        }
    }
}

struct Session {
    viewer: Viewer,
    expires: Instant,
}

/// This node's console sessions, by the SHA-256 of their id (a memory dump
/// does not hand out live cookies).
#[derive(Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    /// Opens a session for `viewer`; its id, for the cookie.
    fn open(&self, viewer: Viewer) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut sessions = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            digest(&id),
            Session {
                viewer,
                expires: now + SESSION_TTL,
            },
        );
        id
    }

    fn find(&self, id: &str) -> Option<Viewer> {
        let sessions = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(&digest(id))
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.viewer.clone())
    }

    fn close(&self, id: &str) {
        let mut sessions = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(&digest(id));
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// 244 random bits as 64 hex digits (two v4 UUIDs from a CSPRNG).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The session id the request's cookie carries.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

/// The session cookie; `secure` (the browser reached the console over
/// HTTPS) adds `Secure`, so that it never travels over plain HTTP.
fn set_cookie(id: &str, secure: bool) -> HeaderValue {
    let max_age = SESSION_TTL.as_secs();
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether the browser reached the console over HTTPS: the engine serves
/// plain HTTP, so this is a TLS proxy's `X-Forwarded-Proto: https` or
/// `Forwarded: proto=https`. (Set by a client itself, it only makes that
/// client's own cookie stricter.)
pub(super) fn over_https(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|first| {
            first.split(';').any(|pair| {
                pair.trim()
                    .to_ascii_lowercase()
                    .strip_prefix("proto=")
                    .is_some_and(|proto| proto.trim_matches('"') == "https")
            })
        });
    forwarded_proto || forwarded
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("steadfast_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether the browser says the request came from another site: its
/// `Sec-Fetch-Site`, or an `Origin` whose host is not the one asked.
pub(super) fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return true;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    origin == "null" || !origin_host.eq_ignore_ascii_case(host)
}

/// The console's gate, on every `/ui` path but the login page and the
/// assets: finds the session (or, on a console without tokens, opens one),
/// sends a visitor without one to log in, refuses a change sent from
/// another site, and hands the handlers a [`Viewer`].
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/ui/login" || path.starts_with("/ui/assets/") {
        return next.run(request).await;
    }
    let changes = request.method() != Method::GET && request.method() != Method::HEAD;
    if changes && cross_site(request.headers()) {
        return layout::refusal(
            StatusCode::FORBIDDEN,
            "Refused: this form was sent from another site. Open the console at its own \
             address and try again.",
        );
    }
    let found = session_id(request.headers()).and_then(|id| state.console.sessions.find(id));
    let (viewer, new_cookie) = match found {
        Some(viewer) => (viewer, None),
        None if state.access.is_open() => {
            let viewer = Viewer {
                name: "local".into(),
                admin: true,
                csrf: random_token(),
            };
            let id = state.console.sessions.open(viewer.clone());
            (viewer, Some(id))
        }
        None if changes => {
            return layout::refusal(
                StatusCode::UNAUTHORIZED,
                "Your session has ended: log in again, then repeat what you did.",
            )
        }
        None => {
            let back = request
                .uri()
                .path_and_query()
                .map_or("/ui/", |p| p.as_str());
            let next = serde_urlencoded::to_string([("next", back)]).unwrap_or_default();
            return Redirect::to(&format!("/ui/login?{next}")).into_response();
        }
    };
    request.extensions_mut().insert(viewer);
    let secure = over_https(request.headers());
    let mut response = next.run(request).await;
    if let Some(id) = new_cookie {
        response
            .headers_mut()
            .append(header::SET_COOKIE, set_cookie(&id, secure));
    }
    response
}

/// Where to go after logging in: a console path only (never another site).
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next) if next.starts_with("/ui/") && !next.starts_with("/ui//") => next,
        _ => "/ui/",
    }
}

/// Logs in with a token presented from `from`: a new session and its
/// cookie, then on to `next`.
pub fn log_in(
    state: &AppState,
    secret: &str,
    from: ClientAddress,
    secure: bool,
    next: &str,
) -> Result<Response, Refused> {
    let caller = state.access.identify(secret.trim(), from)?;
    let id = state.console.sessions.open(Viewer::from_caller(&caller));
    let mut response = Redirect::to(next).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(&id, secure));
    Ok(response)
}

/// Ends the request's session.
pub fn log_out(state: &AppState, headers: &HeaderMap) -> Response {
    if let Some(id) = session_id(headers) {
        state.console.sessions.close(id);
    }
    let target = if state.access.is_open() {
        "/ui/"
    } else {
        "/ui/login"
    };
    let mut response = Redirect::to(target).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, clear_cookie());
    response
}

/// A change asked for by an admin: the form `T`, read only once the
/// session's CSRF token in the form's `csrf` field matched. Anyone else
/// gets a page saying why not.
pub struct AdminForm<T>(pub Viewer, pub T);

#[derive(serde::Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for AdminForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let viewer = request
            .extensions()
            .get::<Viewer>()
            .cloned()
            .ok_or_else(|| {
                layout::refusal(StatusCode::UNAUTHORIZED, "Log in to the console first.")
            })?;
        if !viewer.admin {
            return Err(layout::refusal(
                StatusCode::FORBIDDEN,
                &format!(
                    "Token `{}` reads only: changes need a token of scope `admin`.",
                    viewer.name
                ),
            ));
        }
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| layout::refusal(StatusCode::BAD_REQUEST, &e.body_text()))?;
        let field: CsrfField = serde_urlencoded::from_bytes(&body)
            .map_err(|e| layout::refusal(StatusCode::BAD_REQUEST, &format!("bad form: {e}")))?;
        if !bool::from(field.csrf.as_bytes().ct_eq(viewer.csrf.as_bytes())) {
            return Err(layout::refusal(
                StatusCode::FORBIDDEN,
                "Refused: the form's security token does not match your session (it may have \
                 been opened before you logged in again). Reload the page and try again.",
            ));
        }
        let form = serde_urlencoded::from_bytes(&body)
            .map_err(|e| layout::refusal(StatusCode::BAD_REQUEST, &format!("bad form: {e}")))?;
        Ok(AdminForm(viewer, form))
    }
}

/// The viewer of a console page (set by [`guard`]).
pub struct Looking(pub Viewer);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Looking {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Viewer>()
            .cloned()
            .map(Looking)
            .ok_or_else(|| {
                layout::refusal(StatusCode::UNAUTHORIZED, "Log in to the console first.")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_cookie_is_secure_where_a_tls_proxy_says_the_browser_used_https() {
        let with = |name: &'static str, value: &str| over_https(&headers(&[(name, value)]));
        assert!(with("x-forwarded-proto", "https"));
        assert!(with("x-forwarded-proto", "HTTPS, http"));
        assert!(!with("x-forwarded-proto", "http"));
        assert!(with("forwarded", "for=1.2.3.4;proto=https;by=5.6.7.8"));
        assert!(with("forwarded", "proto=\"https\""));
        assert!(!with("forwarded", "for=1.2.3.4;proto=http"));
        assert!(!over_https(&HeaderMap::new()));
        let cookie = |secure| set_cookie("abc", secure).to_str().unwrap().to_string();
        assert!(cookie(true).ends_with("; Secure"), "{}", cookie(true));
        assert!(!cookie(false).contains("Secure"));
        assert!(cookie(false).contains("HttpOnly; SameSite=Strict"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; steadfast_session=abc ; b=2")]);
        assert_eq!(session_id(&h), Some("abc"));
        assert_eq!(session_id(&headers(&[("cookie", "a=1")])), None);
    }

    #[test]
    fn requests_from_another_site_are_told_apart() {
        let ours = [("host", "127.0.0.1:8080")];
        assert!(!cross_site(&headers(&ours)));
        assert!(!cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null"),
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("sec-fetch-site", "same-site"),
        ])));
    }

    #[test]
    fn after_login_only_console_paths() {
        assert_eq!(
            safe_next(Some("/ui/jobs?state=dead")),
            "/ui/jobs?state=dead"
        );
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui/");
        assert_eq!(safe_next(Some("//evil.example/ui/")), "/ui/");
        assert_eq!(safe_next(Some("/ui//evil.example")), "/ui/");
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn sessions_open_find_and_close() {
        let sessions = Sessions::default();
        let viewer = Viewer {
            name: "ops".into(),
            admin: false,
            csrf: random_token(),
        };
        let id = sessions.open(viewer);
        assert_eq!(id.len(), 64);
        assert_eq!(sessions.find(&id).map(|v| v.name), Some("ops".into()));
        assert!(sessions.find("nope").is_none());
        sessions.close(&id);
        assert!(sessions.find(&id).is_none());
    }
}
