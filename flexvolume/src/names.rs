//! Names are not paths: every volume, snapshot and PV name is checked here before it is put
//! in a URL or joined to a directory, and every target path must be absolute and normalized.

use crate::errors::Failure;
use volbridge_proto::names::{check_user_name, shown};

/// A PV name, or the name of a volume `autoCreate` makes: the one user-name rule of
/// `volbridge_proto::names` (letters, digits, `_`, `.`, `-`, starting with a letter or a
/// digit; at most 128 bytes; no `..`). Kubernetes' PV and volume names always pass it.
pub fn validate_name(what: &str, name: &str) -> Result<(), Failure> {
    check_user_name(name).map_err(|e| Failure::new("invalid name", e.describe(what)))
}

/// A target directory given by kubelet: absolute, normalized (no `.`/`..` parts, no `//`,
/// no trailing `/`), not `/`, no NUL.
pub fn validate_path(what: &str, path: &str) -> Result<(), Failure> {
    let bad = |why: &str| Failure::invalid_arguments(format!("{what} \"{}\" {why}", shown(path)));
    if path.is_empty() {
        return Err(Failure::invalid_arguments(format!("{what} is empty")));
    }
    if path.contains('\0') || path.chars().any(char::is_control) {
        return Err(bad("contains a control character"));
    }
    if !path.starts_with('/') {
        return Err(bad("is not absolute"));
    }
    if path == "/" {
        return Err(bad("is the root directory"));
    }
    if path.ends_with('/') || path.contains("//") {
        return Err(bad("is not normalized"));
    }
    if path[1..].split('/').any(|p| p == "." || p == "..") {
        return Err(bad("is not normalized ('.' or '..')"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "pv-data",
            "pvc-0b1c2d3e-aaaa-bbbb-cccc-123456789abc",
            "a",
            "db.backup_2",
        ] {
            validate_name("volume", ok).unwrap();
        }
        validate_name("volume", &"x".repeat(128)).unwrap();
        for bad in [
            "", "a/b", "..", "../etc", "x..y", "my vol", "-rf", ".hidden", "a\nb", "é",
        ] {
            let e = validate_name("volume", bad).unwrap_err();
            assert_eq!(e.kind, "invalid name", "{bad}");
        }
        let e = validate_name("volume", "my vol").unwrap_err();
        assert_eq!(
            e.message(),
            "volbridge: invalid name: volume \"my vol\" may contain only letters, digits, '_', '.', '-'"
        );
        assert!(validate_name("volume", &"x".repeat(129)).is_err());
    }

    #[test]
    fn paths() {
        validate_path("target", "/var/lib/kubelet/pods/u/volumes/volbridge~csp/v").unwrap();
        for bad in [
            "", "rel/dir", "/", "/a//b", "/a/", "/a/./b", "/a/../b", "/a\0b",
        ] {
            let e = validate_path("target", bad).unwrap_err();
            assert_eq!(e.kind, "invalid arguments", "{bad:?}");
        }
    }
}
