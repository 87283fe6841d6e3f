//! Failures as kubelet shows them in pod events: `volbridge: <kind>: <detail>[; <hint>]`, one
//! line, no secrets. The daemon's error kinds become these words in exactly one place,
//! [`from_daemon`].

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The `<kind>` words (`invalid option`, `no such volume`, `timeout`, …).
    pub kind: &'static str,
    pub detail: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(kind: &'static str, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    pub fn invalid_arguments(detail: impl Into<String>) -> Failure {
        Failure::new("invalid arguments", detail)
    }

    pub fn invalid_option(detail: impl Into<String>) -> Failure {
        Failure::new("invalid option", detail)
    }

    pub fn message(&self) -> String {
        match &self.hint {
            Some(h) => format!("volbridge: {}: {}; {h}", self.kind, self.detail),
            None => format!("volbridge: {}: {}", self.kind, self.detail),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// An error answer of the admin API (`{"error": {"kind", "message", "field"}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonError {
    pub status: u16,
    pub kind: String,
    pub message: String,
    pub field: Option<String>,
}

impl DaemonError {
    pub fn is(&self, kind: &str) -> bool {
        self.kind == kind
    }
}

/// The one mapping from the engine's error kinds to Flex failure words.
pub fn from_daemon(e: &DaemonError) -> Failure {
    let m = e.message.clone();
    match e.kind.as_str() {
        "InvalidArgument" => match e.field.as_deref() {
            Some("name") => Failure::new("invalid name", m),
            Some("path") | Some("staging_target_path") => Failure::invalid_arguments(m),
            _ if m.contains("CSP") || m.contains("backend refused") => {
                Failure::new("rejected by backend", m)
            }
            _ => Failure::invalid_option(m),
        },
        "OutOfRange" => Failure::new("out of range", m),
        "NotFound" => Failure::new("not found", m),
        "AlreadyExists" => Failure::new("already exists", m),
        "FailedPrecondition" => {
            if m.contains("attached to node") || m.contains("attached elsewhere") {
                Failure::new("attached elsewhere", m)
            } else if m.contains("mounted") || m.contains("in use") || m.contains("staged") {
                Failure::new("in use", m)
            } else {
                Failure::new("refused", m)
            }
        }
        "Aborted" => Failure::new("busy", m).hint("kubelet will retry"),
        "ResourceExhausted" => Failure::new("no capacity", m),
        "Unavailable" => Failure::new("backend unavailable", m).hint("kubelet will retry"),
        "DeadlineExceeded" => Failure::new("timeout", m).hint("kubelet will retry"),
        "Unimplemented" => Failure::new("not supported", m),
        _ => Failure::new("internal error", m).hint("see the daemon log"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: &str, message: &str, field: Option<&str>) -> DaemonError {
        DaemonError {
            status: 400,
            kind: kind.into(),
            message: message.into(),
            field: field.map(Into::into),
        }
    }

    #[test]
    fn kinds_become_the_shared_words() {
        let cases = [
            (
                err("InvalidArgument", "name: bad", Some("name")),
                "invalid name",
            ),
            (
                err("InvalidArgument", "path: relative", Some("path")),
                "invalid arguments",
            ),
            (
                err("InvalidArgument", "backend: no backend", Some("backend")),
                "invalid option",
            ),
            (err("NotFound", "x", None), "not found"),
            (err("AlreadyExists", "x", None), "already exists"),
            (
                err("FailedPrecondition", "volume 'a' is mounted at /x", None),
                "in use",
            ),
            (err("FailedPrecondition", "holds xfs", None), "refused"),
            (err("Aborted", "x", None), "busy"),
            (err("ResourceExhausted", "x", None), "no capacity"),
            (err("OutOfRange", "x", None), "out of range"),
            (err("Unavailable", "x", None), "backend unavailable"),
            (err("DeadlineExceeded", "x", None), "timeout"),
            (err("Unimplemented", "x", None), "not supported"),
            (err("Internal", "x", None), "internal error"),
            (err("SomethingNew", "x", None), "internal error"),
        ];
        for (e, word) in cases {
            let f = from_daemon(&e);
            assert_eq!(f.kind, word, "{e:?}");
            assert!(f.message().starts_with(&format!("volbridge: {word}: ")));
        }
    }
}
