//! The `http` channel: the job's payload as a JSON request body, with the
//! job's `Idempotency-Key`, over one pooled client shared by every attempt.

use std::error::Error as _;
use std::io;

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;

use super::{Delivery, DeliveryResult, Response, TransportError, MAX_BODY};
use crate::model::{ErrorKind, HttpChannel};

/// Sends HTTP deliveries; cheap to share (the client is a connection pool).
#[derive(Clone)]
pub struct HttpSender {
    client: reqwest::Client,
}

impl HttpSender {
    pub fn new() -> Result<Self, TransportError> {
        crate::install_tls_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("steadfast/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(256)
            // Redirects would re-send a payload somewhere the policy did not
            // name; a 3xx is for the classifier to judge.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| TransportError {
                kind: ErrorKind::Other,
                message: format!("cannot build the HTTP client: {}", e.without_url()),
            })?;
        Ok(Self { client })
    }

    pub async fn send(&self, channel: &HttpChannel, delivery: &Delivery<'_>) -> DeliveryResult {
        let method = Method::from_bytes(channel.method.as_bytes()).map_err(|_| TransportError {
            kind: ErrorKind::Other,
            message: format!("invalid method `{}`", channel.method),
        })?;
        let mut request = self
            .client
            .request(method, channel.url.expose())
            .timeout(channel.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", delivery.idempotency_key)
            .body(delivery.payload.to_owned());
        for (name, value) in &channel.headers {
            let name = HeaderName::from_bytes(name.as_bytes());
            let value = HeaderValue::from_str(value.expose());
            if let (Ok(name), Ok(mut value)) = (name, value) {
                value.set_sensitive(true);
                request = request.header(name, value);
            }
        }
        let mut response = request.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
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
        })
    }
}

/// Names why a request got no answer. reqwest reports dns, tls, refused and
/// reset connections alike as `is_connect()`, so the source chain decides.
fn transport_error(error: reqwest::Error) -> TransportError {
    let error = error.without_url();
    let chain = error_chain(&error);
    let kind = if error.is_timeout() {
        ErrorKind::Timeout
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
