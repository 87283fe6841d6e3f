//! fsck only when the filesystem says it needs one. ext4 records its state in the
//! superblock (clean / errors); xfs and btrfs repair themselves at mount (log replay), and
//! their offline repair tools are not safe to run unattended.

use crate::{Cmd, Host};
use std::path::Path;
use std::time::Duration;
use volbridge_base::error::{Error, Result};

const SUPERBLOCK: u64 = 1024;
const EXT_MAGIC: u16 = 0xEF53;
const STATE_VALID: u16 = 1;
const STATE_ERROR: u16 = 2;

/// Runs `e2fsck -p` on an ext filesystem that was not cleanly unmounted or has errors.
/// Returns whether a check ran.
pub fn check_before_mount(
    host: &dyn Host,
    device: &Path,
    fs_type: &str,
    timeout: Duration,
) -> Result<bool> {
    if !fs_type.starts_with("ext") {
        return Ok(false);
    }
    let sb = host.read_at(device, SUPERBLOCK, 64)?;
    if sb.len() < 60 {
        return Ok(false);
    }
    let magic = u16::from_le_bytes([sb[56], sb[57]]);
    let state = u16::from_le_bytes([sb[58], sb[59]]);
    if magic != EXT_MAGIC || (state & STATE_VALID != 0 && state & STATE_ERROR == 0) {
        return Ok(false);
    }
    tracing::info!(device = %device.display(), state, "filesystem not clean: e2fsck -p");
    let out = host.run(
        &Cmd::new("e2fsck")
            .arg("-p")
            .arg(device.display().to_string())
            .timeout(timeout),
    )?;
    // 0 clean, 1 errors corrected, 2 corrected (reboot advised: irrelevant, not mounted).
    if out.status <= 2 {
        return Ok(true);
    }
    Err(Error::precondition(format!(
        "{} has filesystem errors e2fsck -p could not fix ({}); run e2fsck by hand",
        device.display(),
        out.reason()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CmdOutput, FakeHost};

    fn superblock(state: u16) -> Vec<u8> {
        let mut sb = vec![b'x'; 1024 + 64];
        sb[1024 + 56..1024 + 58].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        sb[1024 + 58..1024 + 60].copy_from_slice(&state.to_le_bytes());
        sb
    }

    #[test]
    fn clean_ext4_is_not_checked_dirty_is() {
        let host = FakeHost::new();
        host.install("e2fsck");
        host.add_bytes("/dev/clean", &superblock(STATE_VALID));
        host.add_bytes("/dev/dirty", &superblock(0));
        host.add_bytes("/dev/errors", &superblock(STATE_VALID | STATE_ERROR));
        let t = Duration::from_secs(5);
        assert!(!check_before_mount(&host, Path::new("/dev/clean"), "ext4", t).unwrap());
        assert!(check_before_mount(&host, Path::new("/dev/dirty"), "ext4", t).unwrap());
        assert!(check_before_mount(&host, Path::new("/dev/errors"), "ext4", t).unwrap());
        assert!(!check_before_mount(&host, Path::new("/dev/dirty"), "xfs", t).unwrap());
        assert_eq!(
            host.commands(),
            ["e2fsck -p /dev/dirty", "e2fsck -p /dev/errors"]
        );
    }

    #[test]
    fn unfixable_errors_stop_the_mount() {
        let host = FakeHost::new();
        host.script(
            "e2fsck",
            &[],
            CmdOutput::failed(4, "UNEXPECTED INCONSISTENCY"),
        );
        host.add_bytes("/dev/bad", &superblock(STATE_ERROR));
        let e = check_before_mount(&host, Path::new("/dev/bad"), "ext4", Duration::from_secs(5))
            .unwrap_err();
        assert!(e.message.contains("run e2fsck by hand"));
    }
}
