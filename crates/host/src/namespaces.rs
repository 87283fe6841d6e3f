//! Mount namespaces other than this process's: a container keeps a volume mounted in its own
//! namespace after the daemon's bind is gone, and only `/proc/<pid>/mountinfo` shows it.

use std::collections::BTreeSet;
use std::path::Path;

/// One process per mount namespace other than ours whose mount table holds device `dev`.
/// Processes come and go during the scan: one that vanishes or cannot be read is skipped,
/// as is the whole scan where `/proc` cannot be listed (nothing is known to hold the mount).
pub(crate) fn processes_mounting(proc_root: &Path, dev: &str) -> Vec<u32> {
    let own = std::fs::read_link(proc_root.join("self/ns/mnt")).ok();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(ns) = std::fs::read_link(e.path().join("ns/mnt")) else {
            continue;
        };
        if Some(&ns) == own.as_ref() || !seen.insert(ns) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path().join("mountinfo")) else {
            continue;
        };
        if holds_device(&text, dev) {
            out.push(pid);
        }
    }
    out
}

/// Whether a mountinfo text has a mount of device `dev`. The third field is enough: the
/// full parse is not worth it for every process on the machine.
fn holds_device(mountinfo: &str, dev: &str) -> bool {
    mountinfo.lines().any(|l| l.split(' ').nth(2) == Some(dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_field_is_matched_exactly() {
        let text = "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 7:12 / /var/lib/docker/x rw - ext4 /dev/loop12 rw\n";
        assert!(holds_device(text, "7:12"));
        assert!(!holds_device(text, "7:1"));
        assert!(!holds_device(text, "35"));
    }

    /// A /proc of four processes: ours (namespace 1), two sharing namespace 2 that holds
    /// the device, one in namespace 3 that does not.
    #[test]
    fn one_process_per_other_namespace_holding_the_device() {
        let root = std::env::temp_dir().join(format!("vb-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let holding = "37 35 7:12 / /data rw - ext4 /dev/loop12 rw\n";
        let other = "36 35 98:0 / / rw - ext4 /dev/root rw\n";
        for (dir, ns, mountinfo) in [
            ("self", "mnt:[1]", holding),
            ("100", "mnt:[1]", holding),
            ("200", "mnt:[2]", holding),
            ("201", "mnt:[2]", holding),
            ("300", "mnt:[3]", other),
        ] {
            std::fs::create_dir_all(root.join(dir).join("ns")).unwrap();
            std::os::unix::fs::symlink(ns, root.join(dir).join("ns/mnt")).unwrap();
            std::fs::write(root.join(dir).join("mountinfo"), mountinfo).unwrap();
        }
        let found = processes_mounting(&root, "7:12");
        assert!(found == [200] || found == [201], "{found:?}");
        assert_eq!(processes_mounting(&root, "98:0"), [300]);
        assert!(processes_mounting(&root, "8:1").is_empty());
        assert!(processes_mounting(&root.join("absent"), "7:12").is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn our_own_namespace_is_never_reported() {
        // Every device mounted here is in our namespace: the scan may find other
        // namespaces holding it (containers on this machine), never this process.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dev = mounts.lines().next().unwrap().split(' ').nth(2).unwrap();
        let me = std::process::id();
        assert!(!processes_mounting(Path::new("/proc"), dev).contains(&me));
    }
}
