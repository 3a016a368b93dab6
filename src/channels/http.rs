//! The `http` channel: the job's payload as a JSON request body, with the
//! job's `Idempotency-Key`, over one pooled client shared by every attempt;
//! and the request of a channel's `refresh_auth`, which fetches a fresh
//! token (kept in memory by [`super::Tokens`], never logged or stored).

use std::error::Error as _;
use std::io;

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;

use super::{Delivery, DeliveryResult, Response, TransportError, MAX_BODY};
use crate::model::{signing, ErrorKind, HttpChannel, RefreshAuth, RefreshBody, Secret, Signing};

/// Why a token refresh failed. The message never holds the token, the URL
/// or the answer's body (any of which may carry a secret).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RefreshError {
    /// Worth trying again later (no answer, a 5xx, a 429); otherwise the
    /// refresh itself is refused (bad credentials, no token in the answer).
    pub transient: bool,
    pub message: String,
}

/// How every HTTP client of the engine is made: the shared one, and those
/// of channels with `tls` of their own.
pub fn client_builder() -> reqwest::ClientBuilder {
    crate::install_tls_provider();
    reqwest::Client::builder()
        .user_agent(concat!("steadfast/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(256)
        // Redirects would re-send a payload somewhere the policy did not
        // name; a 3xx is for the classifier to judge.
        .redirect(reqwest::redirect::Policy::none())
}

/// Sends HTTP deliveries; cheap to share (the client is a connection pool).
#[derive(Clone)]
pub struct HttpSender {
    client: reqwest::Client,
}

impl HttpSender {
    pub fn new() -> Result<Self, TransportError> {
        let client = client_builder().build().map_err(|e| TransportError {
            kind: ErrorKind::Other,
            message: format!("cannot build the HTTP client: {}", e.without_url()),
        })?;
        Ok(Self { client })
    }

    /// Sends one delivery. `token`, when the channel refreshes its own, goes
    /// in the refresh's header in place of a static header of that name.
    pub async fn send(
        &self,
        channel: &HttpChannel,
        delivery: &Delivery<'_>,
        token: Option<&Secret>,
    ) -> DeliveryResult {
        let method = Method::from_bytes(channel.method.as_bytes()).map_err(|_| TransportError {
            kind: ErrorKind::Other,
            message: format!("invalid method `{}`", channel.method),
        })?;
        let client = channel.client.as_ref().unwrap_or(&self.client);
        let request = match channel.url.parsed() {
            Some(url) => client.request(method, url.clone()),
            None => client.request(method, channel.url.expose()),
        };
        let mut request = request
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", delivery.idempotency_key)
            .body(delivery.payload.to_owned());
        let token_header = channel
            .refresh_auth
            .as_ref()
            .zip(token)
            .map(|(refresh, token)| {
                (
                    refresh.header.as_str(),
                    refresh.header_value(token.expose()),
                )
            });
        for (name, value) in &channel.headers {
            if token_header
                .as_ref()
                .is_some_and(|(header, _)| header.eq_ignore_ascii_case(name))
            {
                continue;
            }
            let name = HeaderName::from_bytes(name.as_bytes());
            let value = HeaderValue::from_str(value.expose());
            if let (Ok(name), Ok(mut value)) = (name, value) {
                value.set_sensitive(true);
                request = request.header(name, value);
            }
        }
        if let Some((name, value)) = token_header {
            let name = HeaderName::from_bytes(name.as_bytes());
            let value = HeaderValue::from_str(&value);
            if let (Ok(name), Ok(mut value)) = (name, value) {
                value.set_sensitive(true);
                request = request.header(name, value);
            }
        }
        if let Some(traceparent) = delivery.traceparent {
            request = request.header("traceparent", traceparent);
        }
        if let Some(signing) = &channel.sign {
            request = sign(request, signing, delivery);
        }
        // Timed here rather than by reqwest, whose `timeout` boxes a timer
        // per request and another around the body: see `super::deadline`.
        let answer = match delivery.deadline {
            Some(deadline) => {
                deadline
                    .within(channel.timeout, exchange(request, delivery.keep_headers))
                    .await
            }
            None => tokio::time::timeout(channel.timeout, exchange(request, delivery.keep_headers))
                .await
                .ok(),
        };
        match answer {
            Some(answer) => answer,
            None => Err(TransportError {
                kind: ErrorKind::Timeout,
                message: format!(
                    "no complete answer within the channel's timeout ({} ms)",
                    channel.timeout.as_millis()
                ),
            }),
        }
    }
}

/// Adds the Standard Webhooks headers. The timestamp is the wall clock's,
/// whatever clock schedules the jobs: partners compare it with theirs.
fn sign(
    request: reqwest::RequestBuilder,
    signing: &Signing,
    delivery: &Delivery<'_>,
) -> reqwest::RequestBuilder {
    let timestamp = jiff::Timestamp::now().as_second();
    let signature = signing.signature(
        delivery.idempotency_key,
        timestamp,
        delivery.payload.as_bytes(),
    );
    let mut signature = match HeaderValue::from_str(&signature) {
        Ok(value) => value,
        // base64 and `v1,` only: always a valid header value.
        Err(_) => return request,
    };
    signature.set_sensitive(true);
    request
        .header(signing::ID_HEADER, delivery.idempotency_key)
        .header(signing::TIMESTAMP_HEADER, timestamp)
        .header(signing::SIGNATURE_HEADER, signature)
}

/// Sends the request and reads the answer, its body up to [`MAX_BODY`],
/// and its headers when `keep_headers` (a later step reads them).
async fn exchange(request: reqwest::RequestBuilder, keep_headers: bool) -> DeliveryResult {
    let mut response = request.send().await.map_err(transport_error)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let headers = if keep_headers {
        response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut body = Vec::new();
    while body.len() < MAX_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Err(transport_error(e)),
        }
    }
    body.truncate(MAX_BODY);
    Ok(Response {
        status,
        retry_after,
        body: String::from_utf8_lossy(&body).into_owned(),
        headers,
    })
}

impl HttpSender {
    /// Runs a channel's `refresh_auth` request and returns the token found
    /// at its path in the JSON answer, with the answer's `expires_in`.
    pub async fn fetch_token(&self, refresh: &RefreshAuth) -> Result<Fetched, RefreshError> {
        let refused = |message: String| RefreshError {
            transient: false,
            message,
        };
        let method = Method::from_bytes(refresh.method.as_bytes())
            .map_err(|_| refused(format!("invalid method `{}`", refresh.method)))?;
        let mut request = self
            .client
            .request(method, refresh.url.expose())
            .timeout(refresh.timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        match &refresh.body {
            None => {}
            Some(RefreshBody::Json(json)) => {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(json.expose().to_owned());
            }
            Some(RefreshBody::Text(text)) => request = request.body(text.expose().to_owned()),
            Some(RefreshBody::Form(pairs)) => {
                let pairs: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.expose()))
                    .collect();
                request = request.form(&pairs);
            }
        }
        for (name, value) in &refresh.headers {
            let name = HeaderName::from_bytes(name.as_bytes());
            let value = HeaderValue::from_str(value.expose());
            if let (Ok(name), Ok(mut value)) = (name, value) {
                value.set_sensitive(true);
                request = request.header(name, value);
            }
        }
        let response = request.send().await.map_err(|e| {
            let error = transport_error(e);
            RefreshError {
                transient: true,
                message: format!(
                    "the token request got no answer ({}): {}",
                    error.kind, error.message
                ),
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(RefreshError {
                transient: status.is_server_error()
                    || status.as_u16() == 429
                    || status.as_u16() == 408,
                message: format!("the token request was answered {}", status.as_u16()),
            });
        }
        let mut response = response;
        let mut body = Vec::new();
        while body.len() < MAX_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    return Err(RefreshError {
                        transient: true,
                        message: format!(
                            "the token answer could not be read: {}",
                            transport_error(e).message
                        ),
                    })
                }
            }
        }
        let document: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| refused("the token answer is not JSON".to_string()))?;
        let token = refresh
            .token
            .find(&document)
            .map(Secret::new)
            .ok_or_else(|| {
                refused(format!(
                    "the token answer has no token at `{}`",
                    refresh.token
                ))
            })?;
        // OAuth 2.0 (RFC 6749, 5.1): seconds, a number; some servers send text.
        let expires_in = match document.get("expires_in") {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .map(std::time::Duration::from_secs);
        Ok(Fetched { token, expires_in })
    }
}

/// A token fetched, and how long its server says it lasts.
pub struct Fetched {
    pub token: Secret,
    pub expires_in: Option<std::time::Duration>,
}

/// Names why a request got no answer. reqwest reports dns, tls, refused and
/// reset connections alike as `is_connect()`, so the source chain decides.
fn transport_error(error: reqwest::Error) -> TransportError {
    let error = error.without_url();
    let chain = error_chain(&error);
    let kind = if error.is_timeout() {
        ErrorKind::Timeout
    } else if caused_by_tls(&error) {
        ErrorKind::Tls
    } else if let Some(kind) = io_kind(&error) {
        match kind {
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => ErrorKind::Reset,
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::HostUnreachable => ErrorKind::Connect,
            _ if chain.contains("dns error") || chain.contains("failed to lookup") => {
                ErrorKind::Dns
            }
            _ if is_tls(&chain) => ErrorKind::Tls,
            _ => ErrorKind::Other,
        }
    } else if chain.contains("dns error") || chain.contains("failed to lookup") {
        ErrorKind::Dns
    } else if is_tls(&chain) {
        ErrorKind::Tls
    } else if chain.contains("connection closed")
        || chain.contains("connection reset")
        || chain.contains("IncompleteMessage")
        || chain.contains("incomplete message")
    {
        ErrorKind::Reset
    } else if error.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Other
    };
    TransportError {
        kind,
        message: chain,
    }
}

/// Whether rustls refused the exchange: a bad certificate, or a protocol
/// error such as a plain-HTTP answer to a TLS hello. rustls' errors travel
/// inside `io::Error`s, whose `source()` skips the error they wrap, so each
/// one is opened with `get_ref`.
fn caused_by_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            if inner.is::<rustls::Error>() || caused_by_tls(inner) {
                return true;
            }
        }
        next = e.source();
    }
    false
}

fn is_tls(chain: &str) -> bool {
    let lower = chain.to_ascii_lowercase();
    lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
}

fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        source = e.source();
    }
    None
}

/// The error and its causes, `: `-joined.
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}
