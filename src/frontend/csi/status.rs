//! The one place engine errors become gRPC statuses.

use crate::error::{Error, ErrorKind};
use tonic::{Code, Status};

/// Use as `engine_call().await.map_err(status)?`.
pub fn status(e: Error) -> Status {
    let code = match e.kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::Internal => Code::Internal,
    };
    Status::new(code, e.message)
}

pub fn invalid(what: impl Into<String>) -> Status {
    Status::invalid_argument(what.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_code() {
        let pairs = [
            (ErrorKind::InvalidArgument, Code::InvalidArgument),
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::AlreadyExists, Code::AlreadyExists),
            (ErrorKind::FailedPrecondition, Code::FailedPrecondition),
            (ErrorKind::Aborted, Code::Aborted),
            (ErrorKind::ResourceExhausted, Code::ResourceExhausted),
            (ErrorKind::OutOfRange, Code::OutOfRange),
            (ErrorKind::Unavailable, Code::Unavailable),
            (ErrorKind::DeadlineExceeded, Code::DeadlineExceeded),
            (ErrorKind::Unimplemented, Code::Unimplemented),
            (ErrorKind::Internal, Code::Internal),
        ];
        for (kind, code) in pairs {
            assert_eq!(status(Error::new(kind, "x")).code(), code);
        }
        let s = status(Error::invalid("name", "must not be empty"));
        assert_eq!(s.message(), "name: must not be empty");
    }
}
