//! A small client of the engine's API for `submit` and `jobs`.

use anyhow::{anyhow, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::Failure;

/// Where the running engine is, and the token to show it.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The engine's API.
    #[arg(
        long,
        env = "STEADFAST_SERVER",
        default_value = "http://127.0.0.1:8787"
    )]
    pub server: String,
    /// The API token (scope `submit` to submit, `admin` for the rest).
    #[arg(long, env = "STEADFAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(args: &ServerArgs) -> Result<Self, Failure> {
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| Failure::Operation(anyhow!("cannot build an HTTP client: {e}")))?;
        if !(args.server.starts_with("http://") || args.server.starts_with("https://")) {
            return Err(Failure::BadInput(anyhow!(
                "--server `{}` is not an http(s) URL, e.g. http://127.0.0.1:8787",
                args.server
            )));
        }
        Ok(Self {
            base: args.server.trim_end_matches('/').to_string(),
            token: args.token.clone().filter(|t| !t.is_empty()),
            http,
        })
    }

    /// Sends a request; returns the status and JSON body of a 2xx answer.
    /// A 4xx becomes bad input (exit 2) with the server's message, anything
    /// else a failed operation.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(StatusCode, Value), Failure> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let response = request
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach the engine at {}; is `steadfast run` up? (--server)",
                    self.base
                )
            })
            .map_err(Failure::Operation)?;
        let status = response.status();
        let text = response
            .text()
            .await
            .context("reading the engine's answer")
            .map_err(Failure::Operation)?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok((status, body));
        }
        let message = body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        let error = anyhow!("{message} (HTTP {})", status.as_u16());
        if status.is_client_error() {
            Err(Failure::BadInput(error))
        } else {
            Err(Failure::Operation(error))
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, Failure> {
        Ok(self.call(Method::GET, path, None).await?.1)
    }

    pub async fn patch_json(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<Value, Failure> {
        let bytes = serde_json::to_vec(body).map_err(|e| Failure::Operation(e.into()))?;
        Ok(self
            .call(Method::PATCH, path, Some(("application/json", bytes)))
            .await?
            .1)
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<(StatusCode, Value), Failure> {
        let bytes = serde_json::to_vec(body).map_err(|e| Failure::Operation(e.into()))?;
        self.call(Method::POST, path, Some(("application/json", bytes)))
            .await
    }
}

/// Percent-encodes a path segment or query value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
