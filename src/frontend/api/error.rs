//! The admin API's one mapping from engine error kinds to HTTP statuses and JSON bodies.

use crate::error::{Error, ErrorKind};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use volbridge_proto::admin::{ApiError, ErrorDetail};

pub struct ApiFailure(pub Error);

impl From<Error> for ApiFailure {
    fn from(e: Error) -> Self {
        ApiFailure(e)
    }
}

pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidArgument | ErrorKind::OutOfRange => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists => StatusCode::CONFLICT,
        ErrorKind::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        ErrorKind::Aborted => StatusCode::LOCKED,
        ErrorKind::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = status_of(e.kind);
        if status.is_server_error() {
            tracing::warn!(kind = %e.kind, error = %e.message, "request failed");
        } else {
            tracing::debug!(kind = %e.kind, error = %e.message, "request refused");
        }
        let body = ApiError {
            error: ErrorDetail {
                kind: e.kind.as_str().to_owned(),
                message: e.message,
                field: e.field,
            },
        };
        (status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiFailure>;
