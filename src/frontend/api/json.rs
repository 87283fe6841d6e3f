//! A JSON body extractor whose every refusal is the API's own JSON error (axum's built-in
//! one answers plain text and 415/422). Content-Type is not required: curl users forget it.

use super::error::ApiFailure;
use crate::error::Error;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

/// Largest admin request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiFailure(Error::invalid(
                "body",
                format!("cannot read the request body: {e}"),
            ))
        })?;
        if bytes.len() > BODY_LIMIT {
            return Err(ApiFailure(Error::invalid(
                "body",
                format!("is larger than {BODY_LIMIT} bytes"),
            )));
        }
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiFailure(json_error(&e)))
    }
}

/// Names the field where serde can tell it (`missing field `name``, `invalid type … at line`).
fn json_error(e: &serde_json::Error) -> Error {
    let text = e.to_string();
    let field = text
        .split('`')
        .nth(1)
        .filter(|_| text.starts_with("missing field") || text.starts_with("unknown field"))
        .unwrap_or("body");
    Error::invalid(field, format!("malformed JSON: {text}"))
}
