//! Path and query extractors whose every refusal is the API's own JSON error (axum's
//! built-in ones answer plain text): a name in the path that is not UTF-8 once
//! percent-decoded, a query string that does not decode.

use super::error::ApiFailure;
use crate::error::Error;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// The `{name}` segment of a path, percent-decoded.
pub struct ApiPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiPath {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiFailure> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|_| {
                ApiFailure(Error::invalid(
                    "name",
                    "the name in the path is not valid UTF-8 once percent-decoded; names are text (percent-encode each byte of its UTF-8 form)",
                ))
            })
    }
}

/// The query string, decoded into `T`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiFailure> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                ApiFailure(Error::invalid(
                    "query",
                    format!("the query string does not decode: {}", e.body_text()),
                ))
            })
    }
}
