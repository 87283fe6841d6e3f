//! Paths that come from outside (CSI target paths, CLI mount points, `localPath` from a
//! CSP) are checked here before anything is mounted on them or attached from them.

use std::path::{Path, PathBuf};
use volbridge_base::error::{Error, Result};

/// Trees no volume may be mounted into: the kernel's own views.
const FORBIDDEN: [&str; 3] = ["/proc", "/sys", "/dev"];

/// A mount target (staging, publish or block-file path): absolute, normalized (no `.`,
/// `..` or empty components), not `/` and not inside `/proc`, `/sys` or `/dev`.
pub fn validate_target(field: &str, path: &str) -> Result<PathBuf> {
    if path.is_empty() {
        return Err(Error::invalid(field, "a path is required"));
    }
    if path.contains('\0') {
        return Err(Error::invalid(field, "the path contains a NUL byte"));
    }
    if !path.starts_with('/') {
        return Err(Error::invalid(
            field,
            format!("'{path}' is relative; give an absolute path"),
        ));
    }
    // Split the text, not Path::components(), which silently drops inner `.` parts.
    let mut normal = PathBuf::from("/");
    for part in path.split('/').filter(|p| !p.is_empty()) {
        match part {
            ".." => {
                return Err(Error::invalid(
                    field,
                    format!("'{path}' contains '..'; give a normalized path"),
                ))
            }
            "." => return Err(Error::invalid(field, format!("'{path}' is not normalized"))),
            part => normal.push(part),
        }
    }
    if normal == Path::new("/") {
        return Err(Error::invalid(field, "refusing to mount over /"));
    }
    if let Some(root) = FORBIDDEN.iter().find(|r| normal.starts_with(r)) {
        return Err(Error::invalid(
            field,
            format!("'{path}' is inside {root}; choose a path outside /proc, /sys and /dev"),
        ));
    }
    Ok(normal)
}

/// Whether `path` lies inside one of `roots` (both already canonical).
pub fn is_within(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_targets_pass_and_are_normalized() {
        assert_eq!(
            validate_target("t", "/srv/data").unwrap(),
            PathBuf::from("/srv/data")
        );
        assert_eq!(
            validate_target("t", "/srv//data/").unwrap(),
            PathBuf::from("/srv/data")
        );
        assert_eq!(
            validate_target("t", "/var/lib/kubelet/pods/x/volumes/y/mount").unwrap(),
            PathBuf::from("/var/lib/kubelet/pods/x/volumes/y/mount")
        );
        assert!(validate_target("t", "/device/x").is_ok());
    }

    #[test]
    fn bad_targets_are_refused_with_a_reason() {
        for (bad, why) in [
            ("", "required"),
            ("srv/data", "relative"),
            ("./x", "relative"),
            ("/srv/../etc", ".."),
            ("/srv/./x", "normalized"),
            ("/", "over /"),
            ("/proc/1/root", "/proc"),
            ("/sys/kernel", "/sys"),
            ("/dev/sda", "/dev"),
            ("/dev", "/dev"),
            ("/a\0b", "NUL"),
        ] {
            let e = validate_target("target_path", bad).unwrap_err();
            assert_eq!(e.kind, volbridge_base::ErrorKind::InvalidArgument, "{bad}");
            assert!(e.message.contains(why), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn within_roots() {
        let roots = [PathBuf::from("/var/lib/volbridge/csp")];
        assert!(is_within(
            Path::new("/var/lib/volbridge/csp/volumes/a.img"),
            &roots
        ));
        assert!(!is_within(Path::new("/var/lib/volbridge/cspx/a"), &roots));
        assert!(!is_within(Path::new("/etc/shadow"), &roots));
    }
}
