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
        let status = status_of(self.0.kind);
        respond(status, self.0)
    }
}

/// The JSON error of `e` with `status`: its kind's own, or one no kind has (405 for a
/// method an endpoint does not serve).
pub fn respond(status: StatusCode, e: Error) -> Response {
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

/// The admin API's bodies for the requests hyper refuses itself (400, 414, 431; see
/// `volbridge_local_csp::refusals`): the same JSON error shape as every other answer.
pub fn refusal_body(status: u16) -> (&'static str, String) {
    let body = ApiError {
        error: ErrorDetail {
            kind: if status == 500 {
                ErrorKind::Internal
            } else {
                ErrorKind::InvalidArgument
            }
            .as_str()
            .to_owned(),
            message: volbridge_local_csp::refusals::refusal_sentence(status).to_owned(),
            field: (status == 414).then(|| "path".to_owned()),
        },
    };
    (
        "application/json",
        serde_json::to_string(&body).unwrap_or_default(),
    )
}

pub type ApiResult<T> = Result<T, ApiFailure>;
