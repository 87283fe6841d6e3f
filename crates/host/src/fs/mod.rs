//! Filesystems on a block device: probe, make, check, grow, and measure. Each shells out to
//! the filesystem's own tools (blkid, mkfs.*, e2fsck, resize2fs, xfs_growfs, btrfs) with a
//! timeout; mounting is a syscall elsewhere.

mod check;
mod grow;
mod make;
mod probe;

pub use check::check_before_mount;
pub use grow::{grow, grow_ext_offline, GrowOutcome, GrowRequest, ONLINE_REFUSED};
pub use make::{make, FormatOptions};
pub use probe::{probe, Probe};

/// Filesystems volbridge formats and grows.
pub const SUPPORTED: [&str; 3] = ["ext4", "xfs", "btrfs"];

/// The filesystem made when none is asked for.
pub const DEFAULT_FS: &str = "ext4";

/// Checks a requested filesystem type; `""` means the default.
pub fn validate_fs_type(fs_type: &str) -> volbridge_base::Result<&str> {
    match fs_type {
        "" => Ok(DEFAULT_FS),
        t if SUPPORTED.contains(&t) => Ok(t),
        other => Err(volbridge_base::Error::invalid(
            "fsType",
            format!("'{other}' is not supported; use one of ext4, xfs, btrfs"),
        )),
    }
}
