//! The one error type of the HTTP layer: a status and a sentence, always sent as the wrapped
//! CSP error body (csp-api.md §4.10).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use volbridge_proto::csp::{ErrorBody, INSUFFICIENT_SPACE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A filesystem failure while doing `what`; out-of-space gets the B42 wording.
    pub fn io(what: &str, err: &std::io::Error) -> Self {
        if crate::files::is_out_of_space(err) {
            Self::internal(format!("{what}: {INSUFFICIENT_SPACE}"))
        } else {
            Self::internal(format!("{what}: {err}"))
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), message = %self.message, "request failed");
        } else {
            tracing::debug!(status = self.status.as_u16(), message = %self.message, "request refused");
        }
        let code = self.status.canonical_reason().unwrap_or("Error");
        (self.status, Json(ErrorBody::new(code, self.message))).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
