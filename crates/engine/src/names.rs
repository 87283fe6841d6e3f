//! External names (CLI, Docker, CSI, FlexVolume) are checked here before anything is made
//! or looked up. They become CSP object names, never filesystem paths. The rules and their
//! words live in `volbridge_proto::names` (docs/vocabulary.md).

use volbridge_base::error::{Error, Result};
use volbridge_proto::names::{
    check_held_name, check_stored_name, check_user_name, NameError, NameProblem,
};

/// Checks a volume, snapshot or group name the engine stores or looks up: the stored-name
/// rule, which every CSI name and every name made before the user-name rule passes.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    check_stored_name(name).map_err(|e| refusal(field, &e))
}

/// Checks a name a person is making (CLI and admin API, Docker, FlexVolume create): the
/// user-name rule.
pub fn validate_new_name(field: &str, name: &str) -> Result<()> {
    check_user_name(name).map_err(|e| refusal(field, &e))
}

/// Checks a name given to remove what a backend holds: any name a CSP accepted, even one
/// the stored-name rule refuses (`../../evil`, made straight on a CSP's REST API). Such a
/// name only goes to the CSP; it is never a path or a record's key.
pub fn validate_held_name(field: &str, name: &str) -> Result<()> {
    check_held_name(name).map_err(|e| refusal(field, &e))
}

fn refusal(field: &str, e: &NameError) -> Error {
    match e.problem {
        NameProblem::Empty => Error::invalid(field, "must not be empty"),
        _ => Error::invalid(field, e.to_string()),
    }
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
            validate_new_name("name", n).unwrap();
        }
        // Made before the user-name rule: still found.
        validate_name("name", "my vol").unwrap();
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
        let e = validate_new_name("name", "my vol").unwrap_err();
        assert_eq!(
            e.message,
            "name: \"my vol\" may contain only letters, digits, '_', '.', '-'"
        );
    }
}
