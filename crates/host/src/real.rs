//! The [`Host`] of a real machine: syscalls through rustix, tools through [`super::exec`].

use super::{
    exec, loopdev, mountinfo, namespaces, Cmd, CmdOutput, FileKind, FileStat, FsUsage, Host,
    LoopDevice, MountEntry, MountFlags, MountSpec,
};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags as MsFlags, UnmountFlags};
use std::ffi::CString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use volbridge_base::error::{Error, ErrorKind, Result};

#[derive(Debug, Default, Clone, Copy)]
pub struct RealHost;

const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

fn errno(what: impl std::fmt::Display, e: Errno) -> Error {
    let kind = match e {
        Errno::NOENT | Errno::NXIO | Errno::NODEV => ErrorKind::NotFound,
        Errno::BUSY => ErrorKind::FailedPrecondition,
        Errno::ACCESS | Errno::PERM => ErrorKind::FailedPrecondition,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, format!("{what}: {e}"))
}

fn ms_flags(f: &MountFlags) -> MsFlags {
    let mut out = MsFlags::empty();
    for (on, flag) in [
        (f.read_only, MsFlags::RDONLY),
        (f.bind, MsFlags::BIND),
        (f.nosuid, MsFlags::NOSUID),
        (f.nodev, MsFlags::NODEV),
        (f.noexec, MsFlags::NOEXEC),
        (f.noatime, MsFlags::NOATIME),
        (f.nodiratime, MsFlags::NODIRATIME),
        (f.relatime, MsFlags::RELATIME),
        (f.sync, MsFlags::SYNCHRONOUS),
        (f.dirsync, MsFlags::DIRSYNC),
    ] {
        if on {
            out |= flag;
        }
    }
    out
}

fn c_string(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid("mount options", "contains a NUL byte"))
}

impl Host for RealHost {
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput> {
        tracing::debug!(cmd = %cmd, "run");
        exec::run(cmd)
    }

    fn find_program(&self, name: &str) -> Option<PathBuf> {
        if name.contains('/') {
            return Path::new(name).is_file().then(|| PathBuf::from(name));
        }
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }

    fn mount(&self, spec: &MountSpec) -> Result<()> {
        let what = format!(
            "cannot mount {} on {}",
            spec.source.display(),
            spec.target.display()
        );
        let data = c_string(&spec.data)?;
        let data = (!spec.data.is_empty()).then_some(data.as_c_str());
        let flags = ms_flags(&spec.flags);
        let result = if spec.flags.remount {
            let flags = flags
                | if spec.flags.bind {
                    MsFlags::BIND
                } else {
                    MsFlags::empty()
                };
            rustix::mount::mount_remount(&spec.target, flags, data.unwrap_or_default())
        } else if spec.flags.bind {
            rustix::mount::mount_bind(&spec.source, &spec.target)
        } else {
            let fs_type = spec.fs_type.as_deref().unwrap_or("auto");
            rustix::mount::mount(&spec.source, &spec.target, fs_type, flags, data)
        };
        result.map_err(|e| errno(&what, e))
    }

    fn unmount(&self, target: &Path) -> Result<bool> {
        match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
            Ok(()) => Ok(true),
            Err(Errno::INVAL | Errno::NOENT) => Ok(false),
            Err(e) => Err(errno(format!("cannot unmount {}", target.display()), e)),
        }
    }

    fn tool_running(&self, programs: &[&str], arg: &Path) -> Result<bool> {
        let arg = arg.as_os_str().as_encoded_bytes();
        let procs = std::fs::read_dir("/proc")
            .map_err(|e| Error::internal(format!("cannot list /proc: {e}")))?;
        for entry in procs.flatten() {
            // Processes come and go while we look: an unreadable one is not ours.
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let mut argv = cmdline.split(|b| *b == 0);
            let Some(program) = argv.next() else {
                continue;
            };
            let name = program.rsplit(|b| *b == b'/').next().unwrap_or(program);
            if programs.iter().any(|p| p.as_bytes() == name) && argv.any(|a| a == arg) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn boot_id(&self) -> Result<Option<String>> {
        Ok(self
            .read_file(Path::new(BOOT_ID_FILE))?
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()))
    }

    fn mounted_in_other_namespaces(&self, dev: &str) -> Result<Vec<u32>> {
        Ok(namespaces::processes_mounting(Path::new("/proc"), dev))
    }

    fn mounts(&self) -> Result<Vec<MountEntry>> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::internal(format!("cannot read /proc/self/mountinfo: {e}")))?;
        Ok(mountinfo::parse_mountinfo(&text))
    }

    fn loop_attach(&self, file: &Path, read_only: bool) -> Result<PathBuf> {
        loopdev::attach(file, read_only)
    }

    fn loop_detach(&self, device: &Path) -> Result<()> {
        loopdev::detach(device)
    }

    fn loops(&self) -> Result<Vec<LoopDevice>> {
        loopdev::list()
    }

    fn loop_refresh(&self, device: &Path) -> Result<()> {
        loopdev::refresh_capacity(device)
    }

    fn flush(&self, path: &Path) -> Result<()> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::internal(format!("cannot open {}: {e}", path.display())))?;
        let block = rustix::fs::fstat(&fd)
            .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_block_device())
            .unwrap_or(false);
        let synced = if block {
            rustix::fs::fsync(&fd)
        } else {
            rustix::fs::syncfs(&fd)
        };
        synced.map_err(|e| Error::internal(format!("cannot flush {}: {e}", path.display())))
    }

    fn device_size(&self, device: &Path) -> Result<u64> {
        loopdev::device_size(device)
    }

    fn file_has_data(&self, path: &Path) -> Result<bool> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| errno(format!("cannot open {}", path.display()), e))?;
        match rustix::fs::seek(&fd, rustix::fs::SeekFrom::Data(0)) {
            Ok(_) => Ok(true),
            Err(Errno::NXIO) => Ok(false),
            Err(e) => Err(errno(format!("cannot seek in {}", path.display()), e)),
        }
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| errno(format!("cannot open {}", path.display()), e))?;
        let mut buf = vec![0u8; len];
        let n = rustix::io::pread(&fd, &mut buf, offset)
            .map_err(|e| errno(format!("cannot read {}", path.display()), e))?;
        buf.truncate(n);
        Ok(buf)
    }

    fn statvfs(&self, path: &Path) -> Result<FsUsage> {
        let s = rustix::fs::statvfs(path)
            .map_err(|e| errno(format!("cannot stat filesystem at {}", path.display()), e))?;
        let block = s.f_frsize.max(1);
        Ok(FsUsage {
            total_bytes: s.f_blocks * block,
            available_bytes: s.f_bavail * block,
            used_bytes: s.f_blocks.saturating_sub(s.f_bfree) * block,
            total_inodes: s.f_files,
            free_inodes: s.f_ffree,
            used_inodes: s.f_files.saturating_sub(s.f_ffree),
        })
    }

    fn stat(&self, path: &Path) -> Result<Option<FileStat>> {
        let st = match rustix::fs::stat(path) {
            Ok(st) => st,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(errno(format!("cannot stat {}", path.display()), e)),
        };
        let kind = match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::RegularFile => FileKind::File,
            rustix::fs::FileType::Directory => FileKind::Dir,
            rustix::fs::FileType::BlockDevice => FileKind::BlockDevice,
            _ => FileKind::Other,
        };
        let split = |d: u64| (rustix::fs::major(d), rustix::fs::minor(d));
        Ok(Some(FileStat {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: split(st.st_rdev),
            dev: split(st.st_dev),
        }))
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        match rustix::fs::lstat(path) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(false),
            Err(e) => Err(errno(format!("cannot stat {}", path.display()), e)),
        }
    }

    fn canonicalize(&self, path: &Path) -> Result<PathBuf> {
        std::fs::canonicalize(path)
            .map_err(|e| Error::from(e).context(format!("cannot resolve {}", path.display())))
    }

    fn read_file(&self, path: &Path) -> Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from(e).context(format!("cannot read {}", path.display()))),
        }
    }

    fn write_file(&self, path: &Path, contents: &str) -> Result<()> {
        std::fs::write(path, contents)
            .map_err(|e| Error::from(e).context(format!("cannot write {}", path.display())))
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::from(e).context(format!("cannot list {}", path.display()))),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn create_dir(&self, path: &Path) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(path)
            .map_err(|e| Error::from(e).context(format!("cannot create {}", path.display())))
    }

    fn create_file(&self, path: &Path) -> Result<()> {
        match rustix::fs::open(
            path,
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o640),
        ) {
            Ok(_) => Ok(()),
            Err(Errno::ISDIR) => Err(Error::precondition(format!(
                "{} is a directory; a block volume needs a file",
                path.display()
            ))),
            Err(e) => Err(errno(format!("cannot create {}", path.display()), e)),
        }
    }

    fn remove(&self, path: &Path) -> Result<()> {
        let result = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(path),
            Ok(_) => std::fs::remove_file(path),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::from(e).context(format!("cannot remove {}", path.display()))),
        }
    }

    fn remove_empty_dir(&self, path: &Path) -> Result<()> {
        match std::fs::remove_dir(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::from(e).context(format!("cannot remove {}", path.display()))),
        }
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        let (uid, gid) = (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        );
        rustix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| errno(format!("cannot chown {}", path.display()), e))
    }

    fn chmod(&self, path: &Path, mode: u32) -> Result<()> {
        rustix::fs::chmod(path, Mode::from_raw_mode(mode))
            .map_err(|e| errno(format!("cannot chmod {}", path.display()), e))
    }
}
