//! Read-only raw block publish. A read-only bind of a device node does not stop writes
//! through it: the kernel checks device nodes against the device, not the mount. So a
//! read-only publish binds a *view* instead: a loop device with the read-only flag over
//! the staged device, which refuses every open for writing. Each read-only target gets its
//! own view; read-write targets of the same volume bind the device itself.
//!
//! Nothing about a view is stored: the target's mount names the view (a bound device node
//! shows its path within /dev as the mount's root), and a view's backing file is the
//! device it shows. The reconciler detaches views no target binds.

use super::{Host, LoopDevice, MountEntry};
use std::path::{Path, PathBuf};
use volbridge_base::error::Result;

/// A loop device that may be a view: read-only, backed by a device node.
pub fn is_view(l: &LoopDevice) -> bool {
    l.read_only && l.backing_file.starts_with("/dev/")
}

/// `major:minor` of the filesystem that holds `/dev` (device nodes bind from it).
pub fn dev_fs(host: &dyn Host) -> Result<String> {
    Ok(host
        .stat(Path::new("/dev"))?
        .map(|s| format!("{}:{}", s.dev.0, s.dev.1))
        .unwrap_or_default())
}

/// Whether a mount binds the device node `device` (`/dev/loop7` → root `/loop7`).
fn binds(m: &MountEntry, dev_fs: &str, device: &Path) -> bool {
    m.dev == dev_fs
        && device
            .strip_prefix("/dev")
            .is_ok_and(|rest| m.root == Path::new("/").join(rest))
}

/// Whether anything mounts the loop device or binds its node.
pub fn in_use(mounts: &[MountEntry], dev_fs: &str, l: &LoopDevice) -> bool {
    mounts
        .iter()
        .any(|m| m.dev == l.dev || binds(m, dev_fs, &l.device))
}

/// The view bound at `target`, if the top mount there is one.
pub fn bound_at(host: &dyn Host, target: &Path) -> Result<Option<PathBuf>> {
    let mounts = host.mounts()?;
    let Some(top) = super::mountinfo::top_mount(&mounts, target) else {
        return Ok(None);
    };
    let dev_fs = dev_fs(host)?;
    Ok(host
        .loops()?
        .into_iter()
        .find(|l| is_view(l) && binds(top, &dev_fs, &l.device))
        .map(|l| l.device))
}

/// The view to bind at `target` for `device`: the one already bound there (a repeated
/// publish), or a new one (`true`: the caller detaches it if the bind fails).
pub fn for_target(host: &dyn Host, device: &Path, target: &Path) -> Result<(PathBuf, bool)> {
    if let Some(view) = bound_at(host, target)? {
        let shows = host
            .loops()?
            .into_iter()
            .any(|l| l.device == view && l.backing_file == device);
        if shows {
            return Ok((view, false));
        }
    }
    Ok((host.loop_attach(device, true)?, true))
}

/// After the device grew: every view of it shows the new size.
pub fn refresh(host: &dyn Host, device: &Path) -> Result<()> {
    for l in host.loops()? {
        if is_view(&l) && l.backing_file == device {
            host.loop_refresh(&l.device)?;
        }
    }
    Ok(())
}
