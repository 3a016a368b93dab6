//! API errors: each maps to a status and a `{"error": "…"}` body that says
//! what to fix. Internal failures are logged in full and shown only as
//! "internal error".

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body too large: the limit is {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Unprocessable(String),
    /// The step log cannot take writes now; nothing was written. Answered
    /// 503 with `Retry-After`.
    #[error("step log unavailable: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] StoreError),
}

/// What `Retry-After` says when the step log is unavailable, in seconds.
pub const RETRY_AFTER_SECS: u64 = 5;

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            ApiError::Unavailable(error.to_string())
        } else {
            ApiError::Internal(error)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(source) = &self {
            tracing::error!(error = %source, "API request failed");
        }
        let body = serde_json::json!({ "error": self.to_string() });
        let mut response = (self.status(), Json(body)).into_response();
        if let ApiError::Unavailable(message) = &self {
            tracing::warn!(%message, "a request met the step log unavailable");
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// The longest framework error text quoted into a JSON error.
const FRAMEWORK_TEXT_MAX: usize = 1024;

/// Turns the errors that axum, hyper and tower answer themselves (405,
/// 408, 413, a path or query that cannot be decoded) into the API's JSON
/// `{"error": …}`, so that a client reads every error the same way.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    // JSON already, or a console page (which says its errors in HTML).
    let is_json_or_page = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_json_or_page {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, FRAMEWORK_TEXT_MAX)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => match parts
            .headers
            .get(axum::http::header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .filter(|allowed| !allowed.is_empty())
        {
            Some(allowed) => format!("method not allowed on this path; allowed: {allowed}"),
            None => {
                "method not allowed on this path; see the API reference in the README".to_string()
            }
        },
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge {
            limit: super::BODY_LIMIT,
        }
        .to_string(),
        StatusCode::REQUEST_TIMEOUT => "the request took too long and was stopped".to_string(),
        _ if text.is_empty() => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
        _ => text,
    };
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Every error body: what went wrong and, where there is one, the fix.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: String,
}
