//! The node procedures on the host, in the order a CO drives them: stage (device attached,
//! formatted if blank, mounted at a staging path), publish (bind onto a target), and their
//! reverses, plus expand and stats. Each step checks the kernel's state first, so every
//! procedure is idempotent, and a failure undoes what the same call did.

pub use super::fs::ONLINE_REFUSED;
use super::fs::{self, FormatOptions, GrowOutcome, GrowRequest, Probe};
pub use super::mountinfo::top_mount;
use super::transport::Attacher;
use super::{split_mount_options, FileKind, FsUsage, Host, MountEntry, MountFlags, MountSpec};
use crate::target::FsSettings;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use volbridge_base::error::{Error, Result};

/// How a volume is presented: a mounted filesystem or the raw block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Access {
    Mount {
        /// `""` = the publish context's `fsType`, else ext4.
        fs_type: String,
        mount_options: Vec<String>,
    },
    Block,
}

impl Access {
    pub fn is_block(&self) -> bool {
        matches!(self, Access::Block)
    }
}

pub struct StageRequest<'a> {
    /// The volume's transport, bound to its target.
    pub attacher: &'a dyn Attacher,
    /// What a filesystem made here gets.
    pub filesystem: &'a FsSettings,
    /// Directory the filesystem is mounted on (unused for block access).
    pub staging_path: &'a Path,
    pub access: &'a Access,
    pub read_only: bool,
    pub tool_timeout: Duration,
    /// Our own format of this device was interrupted: its half-made signature may be
    /// overwritten.
    pub redo_format: bool,
    /// Called just before mkfs runs, so the caller can record that it did.
    pub before_format: &'a dyn Fn() -> Result<()>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    pub device: PathBuf,
    /// The filesystem on the device (None for block access).
    pub fs_type: Option<String>,
    pub formatted: bool,
    pub checked: bool,
}

/// Attaches, formats a blank device, checks a dirty one, mounts. If anything after the
/// attach fails, a device this call attached is detached again.
pub fn stage(host: &dyn Host, r: &StageRequest) -> Result<Staged> {
    if let Access::Mount { mount_options, .. } = r.access {
        check_mount_options(mount_options)?;
    }
    let was_attached = r.attacher.find(host)?.is_some();
    let device = r.attacher.attach(host)?;
    match stage_on(host, r, &device, !was_attached) {
        Ok(staged) => Ok(staged),
        Err(e) => {
            if !was_attached {
                if let Err(undo) = r.attacher.detach(host) {
                    tracing::warn!(error = %undo, "cannot detach after a failed stage");
                }
            }
            Err(e)
        }
    }
}

/// Every front end's mount options meet here before anything is attached: one naming
/// another device (`logdev=/dev/sdb`) would have the kernel write to it.
fn check_mount_options(options: &[String]) -> Result<()> {
    let named = options
        .iter()
        .flat_map(|o| o.split(','))
        .find_map(volbridge_proto::options::device_mount_option);
    match named {
        Some(name) => Err(Error::invalid(
            "mount_options",
            format!(
                "mount option {name} names another device; a volume is mounted from its own \
                 device only"
            ),
        )),
        None => Ok(()),
    }
}

fn stage_on(host: &dyn Host, r: &StageRequest, device: &Path, fresh: bool) -> Result<Staged> {
    let Access::Mount {
        fs_type,
        mount_options,
    } = r.access
    else {
        return Ok(Staged {
            device: device.to_path_buf(),
            fs_type: None,
            formatted: false,
            checked: false,
        });
    };
    let dev_id = device_id(host, device)?;
    let mounts = host.mounts()?;
    if let Some(m) = top_mount(&mounts, r.staging_path) {
        if m.dev == dev_id {
            return Ok(Staged {
                device: device.to_path_buf(),
                fs_type: Some(m.fs_type.clone()),
                formatted: false,
                checked: false,
            });
        }
        return Err(Error::precondition(format!(
            "{} is already used by another mount ({})",
            r.staging_path.display(),
            m.source
        )));
    }
    let wanted = if fs_type.is_empty() {
        r.filesystem.fs_type.as_str()
    } else {
        fs_type.as_str()
    };
    let mut formatted = false;
    // A device attached just now has no cached writes of its own, so a backing store with
    // no data at all is blank without asking blkid (a process, ~4 ms). Otherwise: probe.
    let found = if fresh && !r.redo_format && r.attacher.known_blank(host)? {
        Probe::Blank
    } else {
        fs::probe(host, device)?
    };
    let fs_type = match (found, r.redo_format) {
        (Probe::Filesystem(existing), false) => {
            if !wanted.is_empty() && wanted != existing {
                return Err(Error::precondition(format!(
                    "the volume holds a {existing} filesystem, not {wanted}; volbridge never reformats"
                )));
            }
            existing
        }
        (Probe::Other(what), false) => {
            return Err(Error::precondition(format!(
                "the volume holds {what}, not a filesystem; volbridge never reformats"
            )))
        }
        (Probe::Blank, _) | (_, true) => {
            if r.read_only {
                return Err(Error::precondition(
                    "the volume is blank and attached read-only: nothing to mount",
                ));
            }
            let fs_type = fs::validate_fs_type(wanted)?.to_owned();
            (r.before_format)()?;
            fs::make(
                host,
                device,
                &FormatOptions {
                    fs_type: &fs_type,
                    create_options: &r.filesystem.create_options,
                    timeout: r.tool_timeout,
                    redo: r.redo_format,
                },
            )?;
            formatted = true;
            fs_type
        }
    };
    let checked = !formatted && fs::check_before_mount(host, device, &fs_type, r.tool_timeout)?;
    host.create_dir(r.staging_path)?;
    let (mut flags, data) = split_mount_options(mount_options);
    flags.read_only |= r.read_only;
    host.mount(&MountSpec {
        source: device.to_path_buf(),
        target: r.staging_path.to_path_buf(),
        fs_type: Some(fs_type.clone()),
        flags,
        data,
    })?;
    if formatted {
        if let Err(e) = set_owner_and_mode(host, r.staging_path, r.filesystem) {
            let _ = host.unmount(r.staging_path);
            return Err(e);
        }
    }
    Ok(Staged {
        device: device.to_path_buf(),
        fs_type: Some(fs_type),
        formatted,
        checked,
    })
}

/// `fsOwner` (`uid:gid`) and `fsMode` (octal) apply to the root of a new filesystem only.
fn set_owner_and_mode(host: &dyn Host, root: &Path, fs: &FsSettings) -> Result<()> {
    if !fs.owner.is_empty() {
        let (uid, gid) = parse_owner(&fs.owner)?;
        host.chown(root, uid, gid)?;
    }
    if !fs.mode.is_empty() {
        host.chmod(root, parse_mode(&fs.mode)?)?;
    }
    Ok(())
}

pub fn parse_owner(s: &str) -> Result<(u32, u32)> {
    let bad = || Error::invalid("fsOwner", format!("'{s}' is not uid:gid (numbers)"));
    let (u, g) = s.split_once(':').ok_or_else(bad)?;
    Ok((
        u.trim().parse().map_err(|_| bad())?,
        g.trim().parse().map_err(|_| bad())?,
    ))
}

pub fn parse_mode(s: &str) -> Result<u32> {
    let ok = (1..=4).contains(&s.len()) && s.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if !ok {
        return Err(Error::invalid(
            "fsMode",
            format!("'{s}' is not an octal mode of 1 to 4 digits"),
        ));
    }
    u32::from_str_radix(s, 8).map_err(|_| Error::invalid("fsMode", "not octal"))
}

/// Unmounts the staging path and detaches the device. The device is found again by its
/// identity; one that is already gone is success.
pub fn unstage(host: &dyn Host, attacher: &dyn Attacher, staging_path: &Path) -> Result<()> {
    unmount_all(host, staging_path)?;
    attacher.detach(host)
}

pub struct PublishRequest<'a> {
    /// The staging mount (filesystem) or the device node (block).
    pub source: &'a Path,
    pub target: &'a Path,
    pub block: bool,
    pub read_only: bool,
    pub mount_options: &'a [String],
}

/// Binds the staged filesystem (or the device node) onto the target. Publishing again the
/// same way is success; a target used by something else is refused.
pub fn publish(host: &dyn Host, r: &PublishRequest) -> Result<()> {
    let mounts = host.mounts()?;
    let expect = expected_bind(host, &mounts, r)?;
    if let Some(m) = top_mount(&mounts, r.target) {
        if m.dev == expect.0 && m.root == expect.1 {
            if m.read_only() != r.read_only {
                return Err(Error::new(
                    volbridge_base::ErrorKind::AlreadyExists,
                    format!(
                        "{} is already published with read_only={}",
                        r.target.display(),
                        m.read_only()
                    ),
                ));
            }
            return Ok(());
        }
        return Err(Error::precondition(format!(
            "{} is already used by another mount ({})",
            r.target.display(),
            m.source
        )));
    }
    if r.block {
        if let Some(parent) = r.target.parent() {
            host.create_dir(parent)?;
        }
        match host.stat(r.target)? {
            Some(st) if st.kind == FileKind::Dir => {
                return Err(Error::precondition(format!(
                    "{} is a directory; a block volume is published on a file",
                    r.target.display()
                )))
            }
            Some(_) => {}
            None => host.create_file(r.target)?,
        }
    } else {
        host.create_dir(r.target)?;
    }
    host.mount(&MountSpec {
        source: r.source.to_path_buf(),
        target: r.target.to_path_buf(),
        fs_type: None,
        flags: MountFlags {
            bind: true,
            ..MountFlags::default()
        },
        data: String::new(),
    })?;
    let (mut flags, _) = split_mount_options(r.mount_options);
    flags.read_only |= r.read_only;
    if flags != MountFlags::default() {
        // A bind takes the source's flags; read-only and the like need a remount of the bind.
        flags.bind = true;
        flags.remount = true;
        if let Err(e) = host.mount(&MountSpec {
            source: PathBuf::new(),
            target: r.target.to_path_buf(),
            fs_type: None,
            flags,
            data: String::new(),
        }) {
            let _ = host.unmount(r.target);
            return Err(e);
        }
    }
    Ok(())
}

/// (dev, root) a correct bind at the target shows in mountinfo.
fn expected_bind(
    host: &dyn Host,
    mounts: &[MountEntry],
    r: &PublishRequest,
) -> Result<(String, PathBuf)> {
    if r.block {
        if host.stat(r.source)?.is_none() {
            return Err(Error::not_found(format!(
                "device {} vanished",
                r.source.display()
            )));
        }
        // A bound device node shows the devtmpfs device and the node's path within /dev.
        let dev_fs = host
            .stat(Path::new("/dev"))?
            .map(|s| format!("{}:{}", s.dev.0, s.dev.1))
            .unwrap_or_default();
        let root = Path::new("/").join(r.source.strip_prefix("/dev").unwrap_or(r.source));
        Ok((dev_fs, root))
    } else {
        let m = top_mount(mounts, r.source).ok_or_else(|| {
            Error::precondition(format!(
                "{} is not mounted: stage the volume first",
                r.source.display()
            ))
        })?;
        Ok((m.dev.clone(), m.root.clone()))
    }
}

/// Unmounts the target and removes what publish created there when asked (CSI: the SP
/// removes its target; the CLI leaves the user's directory).
pub fn unpublish(host: &dyn Host, target: &Path, remove_target: bool) -> Result<()> {
    unmount_all(host, target)?;
    if remove_target {
        match host.stat(target)? {
            Some(st) if st.kind == FileKind::Dir => host.remove(target)?,
            Some(_) => host.remove(target)?,
            None => {}
        }
    }
    Ok(())
}

/// Unmounts every mount stacked on a path.
pub fn unmount_all(host: &dyn Host, path: &Path) -> Result<()> {
    for _ in 0..16 {
        if !host.mounts()?.iter().any(|m| m.target == path) {
            return Ok(());
        }
        host.unmount(path)?;
    }
    Err(Error::internal(format!(
        "{} is still mounted after 16 unmounts",
        path.display()
    )))
}

/// `major:minor` of a block device node.
pub fn device_id(host: &dyn Host, device: &Path) -> Result<String> {
    match host.stat(device)? {
        Some(st) if st.kind == FileKind::BlockDevice => Ok(format!("{}:{}", st.rdev.0, st.rdev.1)),
        Some(_) => Err(Error::internal(format!(
            "{} is not a block device",
            device.display()
        ))),
        None => Err(Error::not_found(format!(
            "device {} vanished",
            device.display()
        ))),
    }
}

/// Where a device is mounted now, if anywhere.
pub fn mounted_at(host: &dyn Host, device: &Path) -> Result<Option<PathBuf>> {
    let id = device_id(host, device)?;
    Ok(host
        .mounts()?
        .into_iter()
        .find(|m| m.dev == id)
        .map(|m| m.target))
}

pub struct ExpandRequest<'a> {
    pub attacher: &'a dyn Attacher,
    /// The staging (or any) mount of the filesystem, when mounted.
    pub mounted_at: Option<&'a Path>,
    pub fs_type: Option<&'a str>,
    pub scratch: &'a Path,
    pub tool_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expanded {
    pub device_bytes: u64,
    /// `None` for block access (nothing to grow above the device).
    pub filesystem: Option<GrowOutcome>,
}

/// Makes the device see its new size (the transport's `refresh_size`: loop devices re-read
/// their file), then grows the filesystem.
pub fn expand(host: &dyn Host, r: &ExpandRequest) -> Result<Expanded> {
    let device = r.attacher.find(host)?.ok_or_else(|| {
        Error::precondition("the volume is not attached to this node: nothing to expand")
    })?;
    r.attacher.refresh_size(host, &device)?;
    // Read-only block targets bind a view of the device, which keeps its old size until
    // told.
    super::read_only_view::refresh(host, &device)?;
    let device_bytes = host.device_size(&device)?;
    let filesystem = match r.fs_type {
        None => None,
        Some(fs_type) => Some(fs::grow(
            host,
            &GrowRequest {
                device: &device,
                fs_type,
                mounted_at: r.mounted_at,
                scratch: r.scratch,
                timeout: r.tool_timeout,
            },
        )?),
    };
    Ok(Expanded {
        device_bytes,
        filesystem,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Filesystem usage (mounted volumes).
    pub usage: Option<FsUsage>,
    /// Device size (block volumes).
    pub device_bytes: Option<u64>,
    /// `false` with a message when the volume is not healthy (device gone, not mounted).
    pub healthy: bool,
    pub message: String,
}

/// Usage of a published or staged path, and whether its device is still there.
pub fn stats(host: &dyn Host, attacher: &dyn Attacher, path: &Path, block: bool) -> Result<Stats> {
    if !block && host.stat(path)?.is_none() {
        return Err(Error::not_found(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let device = attacher.find(host)?;
    let Some(device) = device else {
        return Ok(Stats {
            usage: None,
            device_bytes: None,
            healthy: false,
            message: "the volume's device is gone from this node".into(),
        });
    };
    if block {
        return Ok(Stats {
            usage: None,
            device_bytes: Some(host.device_size(&device)?),
            healthy: true,
            message: String::new(),
        });
    }
    let mounts = host.mounts()?;
    let dev_id = device_id(host, &device)?;
    match top_mount(&mounts, path) {
        Some(m) if m.dev == dev_id => Ok(Stats {
            usage: Some(host.statvfs(path)?),
            device_bytes: None,
            healthy: true,
            message: String::new(),
        }),
        Some(m) => Ok(Stats {
            usage: None,
            device_bytes: None,
            healthy: false,
            message: format!("{} shows another mount ({})", path.display(), m.source),
        }),
        None => Ok(Stats {
            usage: None,
            device_bytes: None,
            healthy: false,
            message: format!("{} is not mounted", path.display()),
        }),
    }
}

#[cfg(test)]
mod tests;
