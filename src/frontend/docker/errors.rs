//! The Docker front end's one mapping from engine error kinds to the `Err` text a person
//! reads after `Error response from daemon: <op> <volume>: ` (docker-volume-plugin.md §13):
//! `volbridge: <kind>: <detail>[; <hint>]`, one line, at most 300 bytes.

use crate::engine::mount_table::IN_USE;
use crate::error::{Error, ErrorKind};

/// The longest `Err` text.
pub const MAX_ERR: usize = 300;

/// The `Err` text of an engine error.
pub fn err_text(e: &Error) -> String {
    let detail = e.message.as_str();
    let text = match e.kind {
        ErrorKind::InvalidArgument => match e.field.as_deref() {
            Some("name") => format!("volbridge: invalid name: {}", strip_field(detail, "name")),
            Some(_) => format!("volbridge: invalid option: {detail}"),
            // No field: the CSP refused what it was given.
            None => format!("volbridge: rejected by backend: {detail}"),
        },
        ErrorKind::NotFound => {
            if detail.starts_with("no such ") {
                format!("volbridge: {detail}")
            } else if detail.starts_with("snapshot") {
                format!("volbridge: no such snapshot: {detail}")
            } else {
                format!("volbridge: no such volume: {detail}")
            }
        }
        ErrorKind::AlreadyExists => format!("volbridge: already exists: {detail}"),
        ErrorKind::FailedPrecondition if e.field.as_deref() == Some(IN_USE) => {
            format!("volbridge: in use: {detail}")
        }
        ErrorKind::FailedPrecondition if detail.contains("attached to node") => {
            format!("volbridge: attached elsewhere: {detail}")
        }
        ErrorKind::FailedPrecondition => format!("volbridge: not possible now: {detail}"),
        ErrorKind::Aborted => format!("volbridge: busy: {detail}; retry"),
        ErrorKind::ResourceExhausted => format!("volbridge: no capacity: {detail}"),
        ErrorKind::OutOfRange => format!("volbridge: out of range: {detail}"),
        ErrorKind::Unavailable => format!("volbridge: backend unavailable: {detail}; retry later"),
        ErrorKind::DeadlineExceeded => format!("volbridge: timeout: {detail}"),
        ErrorKind::Unimplemented => format!("volbridge: not supported: {detail}"),
        ErrorKind::Internal => {
            let reference = reference();
            tracing::error!(reference = %reference, error = %detail, "internal error answered to Docker");
            format!("volbridge: internal error (ref {reference}); see the daemon log")
        }
    };
    one_line(&text)
}

/// The message of a malformed request.
pub fn malformed(detail: &str) -> String {
    one_line(&format!("volbridge: malformed request: {detail}"))
}

/// `name: 'x' …` from the engine's name check reads better without the field prefix.
fn strip_field<'a>(detail: &'a str, field: &str) -> &'a str {
    detail
        .strip_prefix(field)
        .and_then(|d| d.strip_prefix(": "))
        .unwrap_or(detail)
}

/// Control characters become spaces; the text is cut at [`MAX_ERR`] bytes.
pub fn one_line(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_ERR {
        let mut end = MAX_ERR - 3;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str("...");
    }
    out
}

/// A short id that ties an `Err` to its log line.
fn reference() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(11)
        });
    format!("{:06x}", n & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_as_the_spec_says() {
        let cases = [
            (
                Error::invalid("name", "'a b' contains ' '"),
                "volbridge: invalid name: 'a b' contains ' '",
            ),
            (
                Error {
                    kind: ErrorKind::InvalidArgument,
                    message: "size=\"10GB\": unknown unit".into(),
                    field: Some("option".into()),
                },
                "volbridge: invalid option: size=\"10GB\": unknown unit",
            ),
            (
                Error::new(ErrorKind::InvalidArgument, "no such policy"),
                "volbridge: rejected by backend: no such policy",
            ),
            (
                Error::not_found("no such volume: \"db9\""),
                "volbridge: no such volume: \"db9\"",
            ),
            (
                Error::not_found("snapshot 'n' does not exist"),
                "volbridge: no such snapshot: snapshot 'n' does not exist",
            ),
            (
                Error::new(ErrorKind::AlreadyExists, "x"),
                "volbridge: already exists: x",
            ),
            (
                Error {
                    kind: ErrorKind::FailedPrecondition,
                    message: "x".into(),
                    field: Some(IN_USE.into()),
                },
                "volbridge: in use: x",
            ),
            (
                Error::new(ErrorKind::Aborted, "x"),
                "volbridge: busy: x; retry",
            ),
            (
                Error::new(ErrorKind::ResourceExhausted, "x"),
                "volbridge: no capacity: x",
            ),
            (
                Error::new(ErrorKind::OutOfRange, "x"),
                "volbridge: out of range: x",
            ),
            (
                Error::unavailable("x"),
                "volbridge: backend unavailable: x; retry later",
            ),
            (
                Error::new(ErrorKind::DeadlineExceeded, "x"),
                "volbridge: timeout: x",
            ),
            (
                Error::new(ErrorKind::Unimplemented, "x"),
                "volbridge: not supported: x",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(err_text(&e), want);
        }
        let internal = err_text(&Error::internal("secret=hunter2 at line 3"));
        assert!(
            internal.starts_with("volbridge: internal error (ref "),
            "{internal}"
        );
        assert!(!internal.contains("hunter2"));
    }

    #[test]
    fn one_line_and_short() {
        let t = err_text(&Error::new(
            ErrorKind::AlreadyExists,
            format!("a\nb{}", "é".repeat(400)),
        ));
        assert!(!t.contains('\n'));
        assert!(t.len() <= MAX_ERR);
    }
}
