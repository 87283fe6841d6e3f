//! The host attach layer: everything that touches this machine (processes, mounts, loop
//! devices, block devices, sysfs) goes through the [`Host`] trait, so the procedures above
//! it (transports, filesystems, staging) run unchanged against the kernel or against the
//! recording [`FakeHost`] in unit tests.

mod cmd;
pub mod doctor;
mod exec;
pub mod fake;
pub mod fs;
pub mod initiators;
mod loopdev;
mod mountinfo;
mod namespaces;
pub mod paths;
pub mod read_only_view;
mod real;
pub mod stage;
pub mod target;
pub mod transport;

pub use cmd::{Cmd, CmdOutput};
pub use fake::{Call, FakeHost};
pub use mountinfo::{parse_mountinfo, MountEntry};
pub use real::RealHost;
pub use target::{AttachTarget, PublishedVolume};

use std::path::{Path, PathBuf};
use volbridge_base::error::Result;

/// Mount flags volbridge uses, independent of any syscall crate so the fake can record them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountFlags {
    pub read_only: bool,
    pub bind: bool,
    pub remount: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    pub noatime: bool,
    pub nodiratime: bool,
    pub relatime: bool,
    pub sync: bool,
    pub dirsync: bool,
}

/// One mount(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: PathBuf,
    pub target: PathBuf,
    /// `None` for bind mounts and remounts.
    pub fs_type: Option<String>,
    pub flags: MountFlags,
    /// Filesystem-specific options, comma-separated (`discard,nouuid`).
    pub data: String,
}

/// A loop device and the file behind it, as the kernel reports it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDevice {
    pub device: PathBuf,
    pub backing_file: PathBuf,
    /// `major:minor`, to match against mountinfo.
    pub dev: String,
    pub read_only: bool,
}

/// Usage of a mounted filesystem (statvfs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FsUsage {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub used_inodes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    BlockDevice,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub kind: FileKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device number of a device node (`major:minor` of what it names).
    pub rdev: (u32, u32),
    /// Device holding the file itself.
    pub dev: (u32, u32),
}

/// Everything the attach layer does to the machine. Each method is one small, typed step;
/// the policy (what to do in which order) lives in the callers.
pub trait Host: Send + Sync {
    /// Runs a command with its timeout; a non-zero exit is not an error here.
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput>;
    /// Whether a program is on the PATH (or at an absolute path).
    fn find_program(&self, name: &str) -> Option<PathBuf>;
    /// Whether one of `programs` is running with `arg` among its arguments (a tool that
    /// outlived the daemon before it, see [`Cmd::must_finish`]).
    fn tool_running(&self, programs: &[&str], arg: &Path) -> Result<bool>;
    /// The kernel's boot ID, new at every boot; `None` where the kernel has none.
    fn boot_id(&self) -> Result<Option<String>>;

    fn mount(&self, spec: &MountSpec) -> Result<()>;
    /// Unmounts `target`; `false` when nothing was mounted there.
    fn unmount(&self, target: &Path) -> Result<bool>;
    /// The mount table of this process's namespace (`/proc/self/mountinfo`).
    fn mounts(&self) -> Result<Vec<MountEntry>>;
    /// One process for each mount namespace other than this process's whose mount table
    /// holds device `dev` (`major:minor`): a container still using a volume.
    fn mounted_in_other_namespaces(&self, dev: &str) -> Result<Vec<u32>>;

    /// Binds a file to a free loop device with direct I/O on; returns the device path.
    fn loop_attach(&self, file: &Path, read_only: bool) -> Result<PathBuf>;
    /// Clears a loop device; a device that is already free is success.
    fn loop_detach(&self, device: &Path) -> Result<()>;
    /// Every bound loop device.
    fn loops(&self) -> Result<Vec<LoopDevice>>;
    /// Re-reads the size of the backing file (after the CSP grew it).
    fn loop_refresh(&self, device: &Path) -> Result<()>;
    /// Writes back what the kernel holds for a mounted filesystem (`syncfs` of a path in
    /// it) or a block device (`fsync`), so that the CSP's copy sees it.
    fn flush(&self, path: &Path) -> Result<()>;

    /// Size of a block device in bytes (BLKGETSIZE64).
    fn device_size(&self, device: &Path) -> Result<u64>;
    /// Whether a file has any allocated data (`SEEK_DATA`); `false` means every byte reads
    /// as zero.
    fn file_has_data(&self, path: &Path) -> Result<bool>;
    /// Reads `len` bytes at `offset` (superblock checks).
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>>;
    fn statvfs(&self, path: &Path) -> Result<FsUsage>;

    /// Follows symlinks; `None` when the path does not exist.
    fn stat(&self, path: &Path) -> Result<Option<FileStat>>;
    /// Whether anything is at `path`, a final symlink not followed (a dangling link counts).
    fn exists(&self, path: &Path) -> Result<bool>;
    fn canonicalize(&self, path: &Path) -> Result<PathBuf>;
    /// A small text file (sysfs attributes); `None` when absent.
    fn read_file(&self, path: &Path) -> Result<Option<String>>;
    /// Writes a sysfs attribute (SCSI scan, device delete).
    fn write_file(&self, path: &Path, contents: &str) -> Result<()>;
    /// Entry names of a directory, sorted; empty when it does not exist.
    fn list_dir(&self, path: &Path) -> Result<Vec<String>>;
    /// `mkdir -p` with mode 0750 for new directories.
    fn create_dir(&self, path: &Path) -> Result<()>;
    /// Creates an empty file if none is there (the target of a block bind).
    fn create_file(&self, path: &Path) -> Result<()>;
    /// Removes a file or an empty directory; a missing path is success.
    fn remove(&self, path: &Path) -> Result<()>;
    /// Removes `path` only if it is an empty directory (never data); a missing path is
    /// success, anything else an error.
    fn remove_empty_dir(&self, path: &Path) -> Result<()>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()>;
    fn chmod(&self, path: &Path, mode: u32) -> Result<()>;
}

impl MountFlags {
    pub fn read_only() -> MountFlags {
        MountFlags {
            read_only: true,
            ..MountFlags::default()
        }
    }
}

/// Splits user mount options into the flags mount(2) takes and the filesystem's own data
/// string, the way mount(8) does for the common names.
pub fn split_mount_options<S: AsRef<str>>(options: &[S]) -> (MountFlags, String) {
    let mut flags = MountFlags::default();
    let mut data = Vec::new();
    for option in options
        .iter()
        .flat_map(|o| o.as_ref().split(','))
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        match option {
            "ro" => flags.read_only = true,
            "rw" => flags.read_only = false,
            "nosuid" => flags.nosuid = true,
            "nodev" => flags.nodev = true,
            "noexec" => flags.noexec = true,
            "noatime" => flags.noatime = true,
            "nodiratime" => flags.nodiratime = true,
            "relatime" => flags.relatime = true,
            "sync" => flags.sync = true,
            "dirsync" => flags.dirsync = true,
            "suid" | "dev" | "exec" | "async" | "atime" | "defaults" | "bind" => {}
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_split_into_flags_and_data() {
        let (flags, data) = split_mount_options(&["ro,noatime", "discard", "nouuid", " "]);
        assert!(flags.read_only && flags.noatime && !flags.nosuid);
        assert_eq!(data, "discard,nouuid");
        let (flags, data) = split_mount_options::<&str>(&[]);
        assert_eq!(flags, MountFlags::default());
        assert_eq!(data, "");
    }
}
