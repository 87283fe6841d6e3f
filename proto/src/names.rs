//! Volume, snapshot and group names: one rule for the names people type, the same in every
//! front end (Docker, the CLI and admin API, FlexVolume), and a wider one for the names
//! volbridge stores and looks up (docs/vocabulary.md).
//!
//! - [`check_user_name`], for a name being *made* by a person: `[A-Za-z0-9][A-Za-z0-9_.-]*`,
//!   at most 128 bytes, never `..`. It is Docker's volume-name rule (which dockerd checks
//!   before the plugin sees the name), so a name made with the CLI or FlexVolume can always
//!   be used with `docker volume`, and the other way round. It is also a safe URL path
//!   segment and a safe file name.
//! - [`check_stored_name`], for names that already exist or come from an orchestrator:
//!   1 to 128 bytes, no `/`, `\` or control character, not `.`, no `..`, not starting with
//!   `-`. CSI
//!   names (`pvc-<uuid>`, `snapshot-<uuid>`) pass it as they are; volumes made before the
//!   user rule existed (`my vol`) keep passing it, so they can still be listed, inspected,
//!   mounted and removed by the name they have.
//! - [`check_held_name`], for removing what a backend already holds: any name a CSP
//!   accepted (1 to [`MAX_HELD_NAME_BYTES`] bytes), `../../evil` and `my/vol` included,
//!   so that a volume made straight on a CSP's REST API under a name the other rules refuse
//!   can still be removed by that name. Such a name is only ever sent to the CSP (a query
//!   parameter, a JSON field), never joined to a path or used as a record's key.
//!
//! [`NameError`] is the reason; each front end puts its own prefix before
//! [`NameError::describe`] (`volbridge: invalid name: …`, `name: …`).

use std::fmt;

/// The longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// The longest name [`check_held_name`] takes: the local CSP's own limit.
pub const MAX_HELD_NAME_BYTES: usize = 1024;

/// Why a text is not a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    /// The name as shown in messages ([`shown`]).
    pub name: String,
    pub problem: NameProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    Empty,
    /// Longer than [`MAX_NAME_BYTES`]; the length in bytes.
    TooLong(usize),
    /// Held rule: longer than [`MAX_HELD_NAME_BYTES`]; the length in bytes.
    HeldTooLong(usize),
    /// User rule: the first character is not a letter or a digit.
    BadStart,
    /// User rule: a character other than a letter, a digit, `_`, `.`, `-`.
    BadCharacter,
    /// Stored rule: `/`, `\` or a control character.
    Forbidden(char),
    /// Stored rule: starts with `-` (it would read as a command-line flag).
    LeadingDash,
    /// Stored rule: `.` alone (it names the directory it would be joined to).
    Dot,
    DotDot,
}

impl NameError {
    fn new(name: &str, problem: NameProblem) -> Self {
        NameError {
            name: shown(name),
            problem,
        }
    }

    /// The reason as a sentence about `what` (`volume`, `fromSnapshot`, or `""` for the
    /// name alone): `volume "my vol" may contain only letters, digits, '_', '.', '-'`.
    pub fn describe(&self, what: &str) -> String {
        let subject = if what.is_empty() {
            format!("\"{}\"", self.name)
        } else {
            format!("{what} \"{}\"", self.name)
        };
        match self.problem {
            NameProblem::Empty if what.is_empty() => "a volume name is required".to_owned(),
            NameProblem::Empty => format!("{what} is empty"),
            NameProblem::TooLong(bytes) => {
                format!("{subject} is {bytes} bytes long; the limit is {MAX_NAME_BYTES}")
            }
            NameProblem::HeldTooLong(bytes) => format!(
                "{subject} is {bytes} bytes long; no backend volbridge knows holds names longer than {MAX_HELD_NAME_BYTES}"
            ),
            NameProblem::BadStart => format!("{subject} must start with a letter or a digit"),
            NameProblem::BadCharacter => {
                format!("{subject} may contain only letters, digits, '_', '.', '-'")
            }
            NameProblem::Forbidden(c) => format!(
                "{subject} contains {c:?}; names may not contain '/', '\\' or control characters"
            ),
            NameProblem::LeadingDash => format!("{subject} must not start with '-'"),
            NameProblem::Dot => format!("{subject} is not a name"),
            NameProblem::DotDot => format!("{subject} must not contain '..'"),
        }
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(""))
    }
}

impl std::error::Error for NameError {}

/// The rule for a name a person makes (module docs).
pub fn check_user_name(name: &str) -> Result<(), NameError> {
    let fail = |p| Err(NameError::new(name, p));
    length(name)?;
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return fail(NameProblem::BadStart);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return fail(NameProblem::BadCharacter);
    }
    if name.contains("..") {
        return fail(NameProblem::DotDot);
    }
    Ok(())
}

/// The rule for a name volbridge stores or looks up (module docs). Every name
/// [`check_user_name`] accepts passes it.
pub fn check_stored_name(name: &str) -> Result<(), NameError> {
    let fail = |p| Err(NameError::new(name, p));
    length(name)?;
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '\\') || c.is_control())
    {
        return fail(NameProblem::Forbidden(c));
    }
    if name == "." {
        return fail(NameProblem::Dot);
    }
    if name.contains("..") {
        return fail(NameProblem::DotDot);
    }
    if name.starts_with('-') {
        return fail(NameProblem::LeadingDash);
    }
    Ok(())
}

/// The rule for a name a backend already holds, given to remove it (module docs): not
/// empty, at most [`MAX_HELD_NAME_BYTES`] bytes. Every name [`check_stored_name`] accepts
/// passes it.
pub fn check_held_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::new(name, NameProblem::Empty));
    }
    if name.len() > MAX_HELD_NAME_BYTES {
        return Err(NameError::new(name, NameProblem::HeldTooLong(name.len())));
    }
    Ok(())
}

fn length(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::new(name, NameProblem::Empty));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::new(name, NameProblem::TooLong(name.len())));
    }
    Ok(())
}

/// User input as shown in a message: escaped (`\n`, `\u{7f}`), at most 64 characters.
pub fn shown(s: &str) -> String {
    let escaped = s.escape_debug().to_string();
    if escaped.chars().count() <= 64 {
        return escaped;
    }
    let cut: String = escaped.chars().take(60).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: [&str; 5] = [
        "data",
        "pvc-0b1c2d3e-aaaa-bbbb-cccc-123456789abc",
        "db.backup_2",
        "a",
        "9lives",
    ];

    #[test]
    fn user_names() {
        for n in GOOD {
            check_user_name(n).unwrap();
        }
        check_user_name(&"x".repeat(128)).unwrap();
        for (n, problem) in [
            ("", NameProblem::Empty),
            ("my vol", NameProblem::BadCharacter),
            ("a/b", NameProblem::BadCharacter),
            ("é", NameProblem::BadStart),
            ("cafè", NameProblem::BadCharacter),
            ("..", NameProblem::BadStart),
            (".hidden", NameProblem::BadStart),
            ("-rf", NameProblem::BadStart),
            ("_x", NameProblem::BadStart),
            ("x..y", NameProblem::DotDot),
            ("a\nb", NameProblem::BadCharacter),
        ] {
            assert_eq!(check_user_name(n).unwrap_err().problem, problem, "{n:?}");
        }
        assert_eq!(
            check_user_name(&"x".repeat(129)).unwrap_err().problem,
            NameProblem::TooLong(129)
        );
    }

    #[test]
    fn stored_names_are_wider_and_include_every_user_name() {
        for n in GOOD.into_iter().chain(["my vol", ".hidden", "_x", "cafè"]) {
            check_stored_name(n).unwrap();
        }
        for (n, problem) in [
            ("", NameProblem::Empty),
            ("a/b", NameProblem::Forbidden('/')),
            ("a\\b", NameProblem::Forbidden('\\')),
            ("tab\tname", NameProblem::Forbidden('\t')),
            (".", NameProblem::Dot),
            ("..", NameProblem::DotDot),
            ("../etc", NameProblem::Forbidden('/')),
            ("x..y", NameProblem::DotDot),
            ("-rf", NameProblem::LeadingDash),
        ] {
            assert_eq!(check_stored_name(n).unwrap_err().problem, problem, "{n:?}");
        }
        assert!(check_stored_name(&"x".repeat(129)).is_err());
    }

    #[test]
    fn held_names_are_whatever_a_backend_took() {
        for n in
            GOOD.into_iter()
                .chain(["my vol", "../../evil", "a/b", "..", ".", "-rf", "tab\tname"])
        {
            check_held_name(n).unwrap();
        }
        check_held_name(&"x".repeat(MAX_HELD_NAME_BYTES)).unwrap();
        assert_eq!(check_held_name("").unwrap_err().problem, NameProblem::Empty);
        assert_eq!(
            check_held_name(&"x".repeat(1025)).unwrap_err().problem,
            NameProblem::HeldTooLong(1025)
        );
    }

    #[test]
    fn messages() {
        let e = check_user_name("my vol").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"my vol\" may contain only letters, digits, '_', '.', '-'"
        );
        assert_eq!(
            e.describe("volume"),
            "volume \"my vol\" may contain only letters, digits, '_', '.', '-'"
        );
        assert_eq!(
            check_user_name("").unwrap_err().to_string(),
            "a volume name is required"
        );
        assert_eq!(
            check_user_name("").unwrap_err().describe("PV name"),
            "PV name is empty"
        );
        assert_eq!(
            check_user_name("..").unwrap_err().to_string(),
            "\"..\" must start with a letter or a digit"
        );
        assert_eq!(
            check_user_name("a..b").unwrap_err().to_string(),
            "\"a..b\" must not contain '..'"
        );
        assert_eq!(
            check_stored_name("a/b").unwrap_err().to_string(),
            "\"a/b\" contains '/'; names may not contain '/', '\\' or control characters"
        );
        assert_eq!(
            check_stored_name("-rf").unwrap_err().to_string(),
            "\"-rf\" must not start with '-'"
        );
        let long = check_user_name(&"n".repeat(200)).unwrap_err().to_string();
        assert!(
            long.ends_with("…\" is 200 bytes long; the limit is 128"),
            "{long}"
        );
        assert_eq!(shown("a\nb"), "a\\nb");
    }
}
