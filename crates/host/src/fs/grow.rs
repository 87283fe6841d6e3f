//! Growing a filesystem to fill its (already grown) device: online through the mount point
//! when mounted, offline otherwise. xfs and btrfs only grow while mounted, so offline they
//! get a short private mount.

use crate::{Cmd, Host, MountFlags, MountSpec};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use volbridge_base::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrowOutcome {
    /// Whether the filesystem was mounted (in use) while it grew.
    pub online: bool,
}

/// The start of the error an online grow refused by the kernel gives.
pub const ONLINE_REFUSED: &str = "the kernel refused to grow the mounted filesystem";

pub struct GrowRequest<'a> {
    pub device: &'a Path,
    pub fs_type: &'a str,
    /// Where the filesystem is mounted now, if it is.
    pub mounted_at: Option<&'a Path>,
    /// An empty private directory for the offline xfs/btrfs mount.
    pub scratch: &'a Path,
    pub timeout: Duration,
}

pub fn grow(host: &dyn Host, r: &GrowRequest) -> Result<GrowOutcome> {
    let dev = r.device.display().to_string();
    match (r.fs_type, r.mounted_at) {
        ("ext4" | "ext3" | "ext2", Some(_)) => {
            run(host, Cmd::new("resize2fs").arg(&dev), r.timeout, true)?;
            Ok(GrowOutcome { online: true })
        }
        ("ext4" | "ext3" | "ext2", None) => {
            grow_ext_offline(host, r.device, r.timeout, false)?;
            Ok(GrowOutcome { online: false })
        }
        ("xfs" | "btrfs", Some(at)) => {
            grow_mounted(host, r.fs_type, at, r.timeout)?;
            Ok(GrowOutcome { online: true })
        }
        ("xfs" | "btrfs", None) => {
            host.create_dir(r.scratch)?;
            host.mount(&MountSpec {
                source: r.device.to_path_buf(),
                target: r.scratch.to_path_buf(),
                fs_type: Some(r.fs_type.to_owned()),
                flags: MountFlags::default(),
                data: String::new(),
            })?;
            let grown = grow_mounted(host, r.fs_type, r.scratch, r.timeout);
            let unmounted = host.unmount(r.scratch);
            let _ = host.remove(r.scratch);
            grown?;
            unmounted?;
            Ok(GrowOutcome { online: false })
        }
        (other, _) => Err(Error::precondition(format!(
            "cannot grow a '{other}' filesystem; supported: ext4, xfs, btrfs"
        ))),
    }
}

/// resize2fs on an unmounted ext filesystem, after the check it insists on. Both run to
/// the end whatever happens to the daemon ([`Cmd::must_finish`]): an offline resize stopped
/// half-way leaves a filesystem that does not mount ("Resize inode not valid").
///
/// `interrupted`: the caller knows an earlier offline grow of this device was cut short
/// (the machine or the whole service stopped under it, so `must_finish` could not help).
/// Then errors `e2fsck -p` will not fix are the resize's own, and `e2fsck -y` repairs them;
/// any other filesystem is never repaired without a human.
pub fn grow_ext_offline(
    host: &dyn Host,
    device: &Path,
    timeout: Duration,
    interrupted: bool,
) -> Result<()> {
    let dev = device.display().to_string();
    let check = |how: &str| {
        host.run(
            &Cmd::new("e2fsck")
                .args(["-f", how, &dev])
                .timeout(timeout)
                .must_finish(),
        )
    };
    let mut checked = check("-p")?;
    if checked.status > 2 && interrupted {
        tracing::warn!(device = %dev, reason = %checked.reason(), "repairing the damage of an interrupted offline grow: e2fsck -f -y");
        checked = check("-y")?;
    }
    // 1: errors corrected; 2: corrected, reboot advised (root filesystems only).
    if checked.status > 2 {
        return Err(Error::precondition(format!(
            "{dev} has filesystem errors e2fsck could not fix ({}); run e2fsck by hand",
            checked.reason()
        )));
    }
    run(
        host,
        Cmd::new("resize2fs").arg(&dev).must_finish(),
        timeout,
        false,
    )
}

fn grow_mounted(host: &dyn Host, fs_type: &str, at: &Path, timeout: Duration) -> Result<()> {
    let at = at.display().to_string();
    let cmd = if fs_type == "xfs" {
        Cmd::new("xfs_growfs").arg(at)
    } else {
        Cmd::new("btrfs")
            .args(["filesystem", "resize", "max"])
            .arg(at)
    };
    run(host, cmd, timeout, true)
}

fn run(host: &dyn Host, cmd: Cmd, timeout: Duration, online: bool) -> Result<()> {
    let program = cmd.program.clone();
    let out = host.run(&cmd.timeout(timeout))?;
    if out.success() {
        return Ok(());
    }
    let reason = out.reason();
    // EPERM: ext4 online resize needs CAP_SYS_RESOURCE, which containers often drop.
    let refused = [
        "not supported",
        "Operation not permitted",
        "Permission denied",
    ];
    if online && refused.iter().any(|r| reason.contains(r)) {
        return Err(Error::precondition(format!(
            "{ONLINE_REFUSED} ({reason}); unmount the volume and expand it again to grow it offline"
        )));
    }
    Err(Error::internal(format!("{program} failed: {reason}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Call, CmdOutput, FakeHost};

    fn request<'a>(fs: &'a str, at: Option<&'a Path>) -> GrowRequest<'a> {
        GrowRequest {
            device: Path::new("/dev/loop2"),
            fs_type: fs,
            mounted_at: at,
            scratch: Path::new("/state/scratch/v1"),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn online_and_offline_argv() {
        let host = FakeHost::new();
        for p in ["resize2fs", "e2fsck", "xfs_growfs", "btrfs"] {
            host.install(p);
        }
        host.add_block_device("/dev/loop2", 7, 2, 1 << 30);
        let at = Path::new("/mnt/v");
        assert!(grow(&host, &request("ext4", Some(at))).unwrap().online);
        assert!(!grow(&host, &request("ext4", None)).unwrap().online);
        assert!(grow(&host, &request("xfs", Some(at))).unwrap().online);
        assert!(grow(&host, &request("btrfs", Some(at))).unwrap().online);
        assert!(!grow(&host, &request("xfs", None)).unwrap().online);
        assert_eq!(
            host.commands(),
            [
                "resize2fs /dev/loop2",
                "e2fsck -f -p /dev/loop2",
                "resize2fs /dev/loop2",
                "xfs_growfs /mnt/v",
                "btrfs filesystem resize max /mnt/v",
                "xfs_growfs /state/scratch/v1",
            ]
        );
        let calls = host.calls();
        assert!(calls.contains(&Call::Unmount("/state/scratch/v1".into())));
        assert!(host.mounts().unwrap().is_empty());
    }

    #[test]
    fn a_refused_online_resize_says_to_go_offline() {
        let host = FakeHost::new();
        host.script(
            "resize2fs",
            &[],
            CmdOutput::failed(
                1,
                "resize2fs: Operation not supported While checking for on-line resizing support",
            ),
        );
        let e = grow(&host, &request("ext4", Some(Path::new("/mnt/v")))).unwrap_err();
        assert_eq!(e.kind, volbridge_base::ErrorKind::FailedPrecondition);
        assert!(e.message.contains("offline"));
    }
}
