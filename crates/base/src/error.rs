//! The one error type of volbridge. Every layer (provider, engine, host) returns it; each
//! front end maps [`ErrorKind`] to its protocol in exactly one place.

use std::fmt;

/// What went wrong, in terms every front end can translate (DESIGN.md, engine rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    /// The object exists with other parameters.
    AlreadyExists,
    FailedPrecondition,
    /// Another operation on the same object is in progress.
    Aborted,
    ResourceExhausted,
    OutOfRange,
    /// Retryable: the backend is unreachable or busy.
    Unavailable,
    DeadlineExceeded,
    Unimplemented,
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::FailedPrecondition => "FailedPrecondition",
            ErrorKind::Aborted => "Aborted",
            ErrorKind::ResourceExhausted => "ResourceExhausted",
            ErrorKind::OutOfRange => "OutOfRange",
            ErrorKind::Unavailable => "Unavailable",
            ErrorKind::DeadlineExceeded => "DeadlineExceeded",
            ErrorKind::Unimplemented => "Unimplemented",
            ErrorKind::Internal => "Internal",
        }
    }
}

impl std::str::FromStr for ErrorKind {
    type Err = ();

    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        const ALL: [ErrorKind; 11] = [
            ErrorKind::InvalidArgument,
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::FailedPrecondition,
            ErrorKind::Aborted,
            ErrorKind::ResourceExhausted,
            ErrorKind::OutOfRange,
            ErrorKind::Unavailable,
            ErrorKind::DeadlineExceeded,
            ErrorKind::Unimplemented,
            ErrorKind::Internal,
        ];
        ALL.into_iter().find(|k| k.as_str() == s).ok_or(())
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why, where the kind alone does not tell a front end what to say: set where the error
/// is made, read by the front ends' mapping tables (never the message text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A container or another mount namespace of this node still uses the volume.
    InUse,
    /// The volume is published to another host and cannot be shared.
    AttachedElsewhere,
}

/// What an error is about, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Object {
    Volume(String),
    Snapshot(String),
}

/// An error with its kind, a sentence for humans, and, for bad input, the field at fault;
/// `reason` and `object` say more to front ends that word errors their own way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub field: Option<String>,
    pub reason: Option<Reason>,
    pub object: Option<Object>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            field: None,
            reason: None,
            object: None,
        }
    }

    pub fn with_reason(mut self, reason: Reason) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn about(mut self, object: Object) -> Self {
        self.object = Some(object);
        self
    }

    /// Bad input in a named field; the message should say what is accepted.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error {
            field: Some(field.to_owned()),
            ..Error::new(
                ErrorKind::InvalidArgument,
                format!("{field}: {}", message.into()),
            )
        }
    }

    /// A user's option (Docker's and Flex's `-o`) that cannot be taken; the message names
    /// it. Front ends word it as an option error, not a field of a request.
    pub fn invalid_option(message: impl Into<String>) -> Self {
        Error {
            field: Some("option".to_owned()),
            ..Error::new(ErrorKind::InvalidArgument, message)
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unavailable, message)
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::FailedPrecondition, message)
    }

    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind == kind
    }

    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::StorageFull => ErrorKind::ResourceExhausted,
            std::io::ErrorKind::TimedOut => ErrorKind::DeadlineExceeded,
            _ => ErrorKind::Internal,
        };
        Error::new(kind, e.to_string())
    }
}
