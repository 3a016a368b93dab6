//! JSON request bodies with errors that say where the JSON is wrong.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::BODY_LIMIT;

/// Like `axum::Json`, but a bad body answers 400 (not JSON) or 422 (the
/// wrong shape) naming the line, column and field, and an oversized one 413.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge { limit: BODY_LIMIT }
                } else {
                    ApiError::BadRequest(format!("cannot read the request body: {rejection}"))
                }
            })?;
        parse(&bytes).map(JsonBody)
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = format!("line {} column {}", inner.line(), inner.column());
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => {
                ApiError::Unprocessable(format!("body field `{path}`: {inner}"))
            }
            serde_json::error::Category::Data => ApiError::Unprocessable(format!("body: {inner}")),
            serde_json::error::Category::Eof => ApiError::BadRequest(format!(
                "the body is not complete JSON ({at}); send a JSON object"
            )),
            _ => ApiError::BadRequest(format!("the body is not valid JSON: {inner}")),
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::BadRequest(format!("trailing data after the JSON body: {e}")))?;
    Ok(value)
}
