//! Access protocol `local` (csp-api.md §8.3): the CSP's backing file, bound to a loop
//! device. The device is found again by its backing file, so a restart or a renumbered
//! loop device never confuses two volumes.

use super::Transport;
use crate::target::LocalTarget;
use crate::{paths, FileKind, Host};
use std::path::{Component, Path, PathBuf};
use volbridge_base::error::{Error, Result};

pub struct LocalTransport {
    roots: Vec<PathBuf>,
}

impl LocalTransport {
    pub fn new(roots: Vec<PathBuf>) -> LocalTransport {
        LocalTransport { roots }
    }

    /// The backing file, checked: a CSP must not be able to make this node attach an
    /// arbitrary file.
    pub fn backing_file(&self, host: &dyn Host, target: &LocalTarget) -> Result<PathBuf> {
        let given = &target.file;
        if !given.is_absolute() || given.components().any(|c| c == Component::ParentDir) {
            return Err(Error::precondition(format!(
                "localPath '{}' is not an absolute, normalized path",
                given.display()
            )));
        }
        if host.stat(given)?.is_none() {
            return Err(Error::precondition(format!(
                "volume file {} not visible from this node (local protocol needs a shared filesystem)",
                given.display()
            )));
        }
        let canonical = host.canonicalize(given)?;
        if !paths::is_within(&canonical, &self.roots) {
            return Err(Error::precondition(format!(
                "localPath {} is outside the directories this node attaches from",
                canonical.display()
            )));
        }
        match host.stat(&canonical)? {
            Some(st) if st.kind == FileKind::File => Ok(canonical),
            _ => Err(Error::precondition(format!(
                "localPath {} is not a regular file",
                canonical.display()
            ))),
        }
    }

    fn devices_of(&self, host: &dyn Host, file: &Path) -> Result<Vec<crate::LoopDevice>> {
        Ok(host
            .loops()?
            .into_iter()
            .filter(|l| {
                l.backing_file == file || opened_in_a_gone_namespace(host, &l.backing_file, file)
            })
            .collect())
    }
}

/// Whether a loop device was bound to `file` by a process whose mount namespace is gone: a
/// managed plugin's container that Docker restarted. The kernel names a backing file by the
/// path it was opened through; once that mount is gone, the path it shows is relative to
/// the mount's root (`/csp/volumes/<id>.img` for `/var/lib/volbridge/csp/volumes/<id>.img`)
/// and names nothing here. Missing it would bind a second loop device to the same file and
/// mount one filesystem twice through two devices, which corrupts it. The shown path must
/// be a tail of `file` of at least the directory and the file name (the CSP makes the name
/// unique) and must not exist here.
fn opened_in_a_gone_namespace(host: &dyn Host, shown: &Path, file: &Path) -> bool {
    use std::path::Component::Normal;
    let tail: Vec<_> = shown
        .components()
        .filter(|c| matches!(c, Normal(_)))
        .collect();
    let full: Vec<_> = file
        .components()
        .filter(|c| matches!(c, Normal(_)))
        .collect();
    tail.len() >= 2
        && tail.len() < full.len()
        && full.ends_with(&tail)
        && matches!(host.stat(shown), Ok(None))
}

impl Transport for LocalTransport {
    type Target = LocalTarget;

    fn attach(&self, host: &dyn Host, target: &LocalTarget) -> Result<PathBuf> {
        let file = self.backing_file(host, target)?;
        if let Some(existing) = self.devices_of(host, &file)?.into_iter().next() {
            return Ok(existing.device);
        }
        host.loop_attach(&file, target.read_only)
    }

    fn find(&self, host: &dyn Host, target: &LocalTarget) -> Result<Option<PathBuf>> {
        let file = match self.backing_file(host, target) {
            Ok(f) => f,
            // The file is gone (volume deleted): so is any device we could find by it.
            Err(e) if e.kind == volbridge_base::ErrorKind::FailedPrecondition => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(self
            .devices_of(host, &file)?
            .into_iter()
            .next()
            .map(|l| l.device))
    }

    fn known_blank(&self, host: &dyn Host, target: &LocalTarget) -> Result<bool> {
        let file = self.backing_file(host, target)?;
        Ok(!host.file_has_data(&file)?)
    }

    /// The CSP grew the file: the loop device keeps the old size until told.
    fn refresh_size(&self, host: &dyn Host, _target: &LocalTarget, device: &Path) -> Result<()> {
        host.loop_refresh(device)
    }

    fn detach(&self, host: &dyn Host, target: &LocalTarget) -> Result<()> {
        let Some(file) = self.find_file(host, target)? else {
            return Ok(());
        };
        let devices = self.devices_of(host, &file)?;
        if devices.is_empty() {
            return Ok(());
        }
        let mounts = host.mounts()?;
        for d in &devices {
            if let Some(m) = mounts.iter().find(|m| m.dev == d.dev) {
                return Err(Error::precondition(format!(
                    "{} is still mounted at {}",
                    d.device.display(),
                    m.target.display()
                )));
            }
        }
        for d in devices {
            host.loop_detach(&d.device)?;
        }
        Ok(())
    }
}

impl LocalTransport {
    /// The canonical backing file, or `None` once it no longer exists (then the kernel
    /// reports it with a " (deleted)" suffix, matched in [`Self::detach_deleted`]).
    fn find_file(&self, host: &dyn Host, target: &LocalTarget) -> Result<Option<PathBuf>> {
        match self.backing_file(host, target) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind == volbridge_base::ErrorKind::FailedPrecondition => {
                self.detach_deleted(host, target)?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A volume file deleted while attached keeps its loop device; clear it by the path the
    /// kernel remembers.
    fn detach_deleted(&self, host: &dyn Host, target: &LocalTarget) -> Result<()> {
        // The file is gone, so it cannot be canonicalized: the path as given must be plainly
        // inside the roots, or a loop device of someone else's deleted file could be freed.
        let given = &target.file;
        if !given.is_absolute()
            || given.components().any(|c| c == Component::ParentDir)
            || !paths::is_within(given, &self.roots)
        {
            return Ok(());
        }
        let wanted = format!("{} (deleted)", given.display());
        let mounts = host.mounts()?;
        for l in host.loops()? {
            if l.backing_file.as_os_str() == wanted.as_str()
                && !mounts.iter().any(|m| m.dev == l.dev)
            {
                host.loop_detach(&l.device)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Call, FakeHost};

    fn ctx(path: &str) -> LocalTarget {
        LocalTarget {
            file: path.into(),
            read_only: false,
        }
    }

    fn transport() -> LocalTransport {
        LocalTransport::new(vec![PathBuf::from("/data")])
    }

    #[test]
    fn attach_is_idempotent_by_backing_file() {
        let host = FakeHost::new();
        host.add_file("/data/volumes/abc.img", "0123456789");
        let t = transport();
        let c = ctx("/data/volumes/abc.img");
        let first = t.attach(&host, &c).unwrap();
        let second = t.attach(&host, &c).unwrap();
        assert_eq!(first, second);
        let attaches = host
            .calls()
            .into_iter()
            .filter(|c| matches!(c, Call::LoopAttach { .. }))
            .count();
        assert_eq!(attaches, 1);
        assert_eq!(t.find(&host, &c).unwrap(), Some(first));
        t.detach(&host, &c).unwrap();
        assert_eq!(t.find(&host, &c).unwrap(), None);
        t.detach(&host, &c).unwrap();
    }

    #[test]
    fn a_loop_bound_in_a_gone_mount_namespace_is_found_again() {
        let attaches = |host: &FakeHost| {
            host.calls()
                .into_iter()
                .filter(|c| matches!(c, Call::LoopAttach { .. }))
                .count()
        };
        let c = ctx("/data/volumes/abc.img");
        // Bound by a plugin container Docker has restarted: the kernel shows the path
        // below the mount it was opened through. The file name alone is not enough.
        let host = FakeHost::new();
        host.add_file("/data/volumes/abc.img", "0123456789")
            .add_loop("/dev/loop5", "/abc.img", "7:5")
            .add_loop("/dev/loop4", "/volumes/abc.img", "7:4");
        assert_eq!(
            transport().attach(&host, &c).unwrap(),
            PathBuf::from("/dev/loop4")
        );
        assert_eq!(attaches(&host), 0);
        // A shown path that names a file here is that file's loop, not this one's.
        let host = FakeHost::new();
        host.add_file("/data/volumes/abc.img", "0123456789")
            .add_file("/volumes/abc.img", "x")
            .add_loop("/dev/loop4", "/volumes/abc.img", "7:4");
        assert_ne!(
            transport().attach(&host, &c).unwrap(),
            PathBuf::from("/dev/loop4")
        );
        assert_eq!(attaches(&host), 1);
    }

    /// A deleted volume file's loop device is freed when the file was inside the roots; a
    /// recorded path elsewhere never frees another deleted file's loop device.
    #[test]
    fn only_deleted_files_inside_the_roots_lose_their_loop_devices() {
        let host = FakeHost::new();
        host.add_loop("/dev/loop4", "/data/volumes/gone.img (deleted)", "7:4")
            .add_loop("/dev/loop5", "/srv/other/gone.img (deleted)", "7:5");
        let t = transport();
        t.detach(&host, &ctx("/srv/other/gone.img")).unwrap();
        t.detach(&host, &ctx("/data/volumes/gone.img")).unwrap();
        let freed: Vec<_> = host
            .calls()
            .into_iter()
            .filter(|c| matches!(c, Call::LoopDetach { .. }))
            .collect();
        assert_eq!(freed.len(), 1, "{freed:?}");
        assert!(format!("{freed:?}").contains("loop4"), "{freed:?}");
    }

    #[test]
    fn files_outside_the_roots_or_missing_are_refused() {
        let host = FakeHost::new();
        host.add_file("/etc/shadow", "x");
        host.add_dir("/data/volumes/dir.img");
        let t = transport();
        for (path, why) in [
            ("/etc/shadow", "outside"),
            ("relative.img", "absolute"),
            ("/data/../etc/shadow", "normalized"),
            ("/data/volumes/missing.img", "shared filesystem"),
            ("/data/volumes/dir.img", "regular file"),
        ] {
            let e = t.attach(&host, &ctx(path)).unwrap_err();
            assert_eq!(
                e.kind,
                volbridge_base::ErrorKind::FailedPrecondition,
                "{path}"
            );
            assert!(e.message.contains(why), "{path}: {}", e.message);
        }
        assert!(!host
            .calls()
            .iter()
            .any(|c| matches!(c, Call::LoopAttach { .. })));
    }

    #[test]
    fn a_mounted_device_is_not_detached() {
        let host = FakeHost::new();
        host.add_file("/data/volumes/abc.img", "x");
        let t = transport();
        let c = ctx("/data/volumes/abc.img");
        let dev = t.attach(&host, &c).unwrap();
        host.add_mount(&dev.display().to_string(), "/mnt/x", "ext4", "7:0");
        let e = t.detach(&host, &c).unwrap_err();
        assert!(e.message.contains("still mounted at /mnt/x"));
        assert!(!host
            .calls()
            .iter()
            .any(|c| matches!(c, Call::LoopDetach(_))));
    }
}
