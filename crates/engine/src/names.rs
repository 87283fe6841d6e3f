//! External names (CLI, Docker, CSI) are validated here before anything is created. They
//! become CSP object names, never filesystem paths.

use volbridge_base::error::{Error, Result};

pub const MAX_NAME_BYTES: usize = 128;

/// Checks a volume, snapshot or group name given by a user or orchestrator.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "'{}…' is {} bytes long; the limit is {MAX_NAME_BYTES}",
                truncate(name),
                name.len()
            ),
        ));
    }
    if name == "." || name == ".." || name.contains("..") {
        return Err(Error::invalid(
            field,
            format!("'{name}' must not contain '..'"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '\\') || c.is_control())
    {
        return Err(Error::invalid(
            field,
            format!(
                "'{}' contains {c:?}; use letters, digits, '-', '_' and '.'",
                name.escape_debug()
            ),
        ));
    }
    if name.starts_with('-') {
        return Err(Error::invalid(
            field,
            format!("'{name}' must not start with '-'"),
        ));
    }
    Ok(())
}

fn truncate(s: &str) -> &str {
    let mut end = 24.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use volbridge_base::ErrorKind;

    #[test]
    fn accepts_ordinary_names() {
        for n in [
            "data",
            "pvc-0b1c2d3e-aaaa-bbbb-cccc-123456789abc",
            "db.backup_2",
            "a",
            &"x".repeat(128),
        ] {
            validate_name("name", n).unwrap();
        }
    }

    #[test]
    fn refuses_bad_names_with_the_field() {
        for n in [
            "",
            "a/b",
            "..",
            "../etc",
            "x..y",
            "a\\b",
            "tab\tname",
            "-rf",
            &"x".repeat(129),
        ] {
            let e = validate_name("name", n).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{n}");
            assert_eq!(e.field.as_deref(), Some("name"));
            assert!(e.message.starts_with("name: "), "{}", e.message);
        }
    }
}
