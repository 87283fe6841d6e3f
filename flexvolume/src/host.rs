//! The little the driver does on the host itself: tell whether a path is a mount point, and
//! set owner, mode and fsGroup on a volume root the daemon just mounted.

use crate::errors::Failure;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Whether `path` (absolute, normalized) is a mount point in this mount namespace.
pub fn is_mount_point(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| {
            info.lines()
                .filter_map(|l| l.split(' ').nth(4))
                .any(|m| unescape(m) == path)
        })
        .unwrap_or(false)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn host_failure(what: String, e: std::io::Error) -> Failure {
    Failure::new("host error", format!("{what}: {e}"))
}

/// `fsOwner` / `fsMode` on the root of a filesystem formatted by this very call.
pub fn set_owner_and_mode(
    root: &Path,
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
) -> Result<(), Failure> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(root, Some(uid), Some(gid)).map_err(|e| {
            host_failure(format!("cannot chown {} to {uid}:{gid}", root.display()), e)
        })?;
    }
    if let Some(mode) = mode {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode))
            .map_err(|e| host_failure(format!("cannot chmod {} to {mode:o}", root.display()), e))?;
    }
    Ok(())
}

/// `fs_group = "volbridge"`: the volume root gets the pod's gid and `g+rwxs`; not recursive.
pub fn apply_fs_group(root: &Path, gid: u32) -> Result<(), Failure> {
    std::os::unix::fs::chown(root, None, Some(gid)).map_err(|e| {
        host_failure(
            format!("cannot give {} the fsGroup {gid}", root.display()),
            e,
        )
    })?;
    let mode = std::fs::metadata(root)
        .map_err(|e| host_failure(format!("cannot stat {}", root.display()), e))?
        .permissions()
        .mode();
    let wanted = (mode & 0o7777) | 0o2070;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(wanted))
        .map_err(|e| host_failure(format!("cannot chmod {} to {wanted:o}", root.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn root_is_a_mount_point_and_a_fresh_dir_is_not() {
        assert!(is_mount_point("/"));
        let dir = std::env::temp_dir().join(format!("vbflex-mp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!is_mount_point(dir.to_str().unwrap()));
        std::fs::remove_dir(&dir).unwrap();
    }
}
