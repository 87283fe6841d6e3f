//! The Docker front end's one mapping from engine error kinds to the `Err` text a person
//! reads after `Error response from daemon: <op> <volume>: ` (docker-volume-plugin.md §13):
//! `volbridge: <kind>: <detail>[; <hint>]`, one line, at most 300 bytes.

use crate::error::{Error, ErrorKind, Object, Reason};

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
        ErrorKind::NotFound => match &e.object {
            Some(Object::Snapshot(name)) => format!("volbridge: no such snapshot: {name:?}"),
            Some(Object::Volume(name)) => format!("volbridge: no such volume: {name:?}"),
            // A CSP's own 404, about what was asked.
            None => format!("volbridge: no such volume: {detail}"),
        },
        ErrorKind::AlreadyExists => format!("volbridge: already exists: {detail}"),
        ErrorKind::FailedPrecondition if e.reason == Some(Reason::InUse) => {
            format!("volbridge: in use: {detail}")
        }
        ErrorKind::FailedPrecondition if e.reason == Some(Reason::AttachedElsewhere) => {
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

/// The Docker endpoint's bodies for the requests hyper refuses itself (400, 414, 431; see
/// `volbridge_local_csp::refusals`): `{"Err": …}` as in every other answer.
pub fn refusal_body(status: u16) -> (&'static str, String) {
    let sentence = volbridge_local_csp::refusals::refusal_sentence(status);
    // A 500 is ours (a request's task failed), not the caller's malformed request.
    let text = if status == 500 {
        one_line(sentence)
    } else {
        malformed(sentence)
    };
    (
        "application/vnd.docker.plugins.v1+json",
        serde_json::json!({ "Err": text }).to_string(),
    )
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
                    field: Some("option".into()),
                    ..Error::new(ErrorKind::InvalidArgument, "size=\"10GB\": unknown unit")
                },
                "volbridge: invalid option: size=\"10GB\": unknown unit",
            ),
            (
                Error::new(ErrorKind::InvalidArgument, "no such policy"),
                "volbridge: rejected by backend: no such policy",
            ),
            (
                Error::not_found("no such volume: \"db9\"").about(Object::Volume("db9".into())),
                "volbridge: no such volume: \"db9\"",
            ),
            (
                Error::not_found("snapshot 'n' does not exist").about(Object::Snapshot("n".into())),
                "volbridge: no such snapshot: \"n\"",
            ),
            (
                Error::not_found("CSP answered 404 Not Found"),
                "volbridge: no such volume: CSP answered 404 Not Found",
            ),
            (
                Error::new(ErrorKind::AlreadyExists, "x"),
                "volbridge: already exists: x",
            ),
            (
                Error::precondition("x").with_reason(Reason::InUse),
                "volbridge: in use: x",
            ),
            (
                Error::precondition("x").with_reason(Reason::AttachedElsewhere),
                "volbridge: attached elsewhere: x",
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
