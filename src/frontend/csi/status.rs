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

/// Calls for which the CSI spec asks another code than the kind's own; the one table of
/// such exceptions (csi.md rules), so that no handler remaps codes on its own.
pub enum Call<'a> {
    /// A device that cannot be reached from this node (gone, or never granted) is
    /// NOT_FOUND for NodeStageVolume.
    NodeStage,
    /// NodeGetVolumeStats: a volume not staged or published at the path, or a path that is
    /// no path the volume is at (csi-sanity sends `some/path`), is NOT_FOUND.
    NodeStats { volume_id: &'a str, path: &'a str },
    /// GetVolumeGroupSnapshot of an id that names no group snapshot is NOT_FOUND.
    GetGroupSnapshot { id: &'a str },
}

/// [`status`], with the exceptions of [`Call`].
pub fn status_in(call: Call<'_>, e: Error) -> Status {
    match (call, e.kind) {
        (Call::NodeStage, ErrorKind::FailedPrecondition | ErrorKind::NotFound) => {
            Status::not_found(format!("attach: {}", e.message))
        }
        (Call::NodeStats { .. }, ErrorKind::FailedPrecondition) => Status::not_found(e.message),
        (Call::NodeStats { volume_id, path }, ErrorKind::InvalidArgument)
            if e.field.as_deref() == Some("volume_path") =>
        {
            Status::not_found(format!(
                "volume '{volume_id}' is not staged or published at '{path}': {}",
                e.message
            ))
        }
        (Call::GetGroupSnapshot { id }, ErrorKind::NotFound | ErrorKind::InvalidArgument) => {
            Status::not_found(format!("group snapshot '{id}' does not exist"))
        }
        _ => status(e),
    }
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

    #[test]
    fn the_csi_exceptions_are_in_one_table() {
        let gone = |e: Error| status_in(Call::NodeStage, e).code();
        assert_eq!(gone(Error::precondition("no device")), Code::NotFound);
        assert_eq!(gone(Error::new(ErrorKind::Aborted, "busy")), Code::Aborted);
        let stats = |e: Error| {
            status_in(
                Call::NodeStats {
                    volume_id: "v",
                    path: "some/path",
                },
                e,
            )
        };
        let s = stats(Error::invalid("volume_path", "not absolute"));
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("'some/path'"), "{}", s.message());
        assert_eq!(
            stats(Error::invalid("other", "x")).code(),
            Code::InvalidArgument
        );
        let g = status_in(Call::GetGroupSnapshot { id: "g/1" }, Error::not_found("x"));
        assert_eq!(g.message(), "group snapshot 'g/1' does not exist");
    }
}
