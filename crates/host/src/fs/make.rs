//! mkfs, only ever on a device the caller has just probed as blank. No force flag is
//! passed (xfs and btrfs then refuse an existing filesystem on their own), except to redo
//! a format of our own that a crash interrupted.

use crate::{Cmd, Host};
use std::path::Path;
use std::time::Duration;
use volbridge_base::error::{Error, ErrorKind, Result};
use volbridge_proto::mkfs_args;

#[derive(Debug, Clone)]
pub struct FormatOptions<'a> {
    pub fs_type: &'a str,
    /// Extra mkfs arguments from the publish context (`fsCreateOptions`), whitespace-split.
    pub create_options: &'a str,
    pub timeout: Duration,
    /// The device holds the remains of our own interrupted mkfs (an intent record says so).
    pub redo: bool,
}

pub fn make(host: &dyn Host, device: &Path, o: &FormatOptions) -> Result<()> {
    let fs_type = super::validate_fs_type(o.fs_type)?;
    // The publish context comes from outside: whatever a front end checked, the arguments
    // are checked again where they run as root.
    let extra = mkfs_args::check(fs_type, o.create_options)
        .map_err(|why| Error::invalid("fsCreateOptions", why))?;
    let program = format!("mkfs.{fs_type}");
    let mut cmd = Cmd::new(&program).timeout(o.timeout);
    cmd = match fs_type {
        // Lazy inode-table and journal init: a 1 TiB volume formats in a second, and the
        // kernel finishes the zeroing in the background.
        "ext4" => cmd.args(["-q", "-E", "lazy_itable_init=1,lazy_journal_init=1"]),
        "xfs" => cmd.arg("-q"),
        _ => cmd.arg("-q"),
    };
    if o.redo {
        cmd = cmd.arg(if fs_type == "ext4" { "-F" } else { "-f" });
    }
    let cmd = cmd.args(extra).arg(device.display().to_string());
    tracing::info!(device = %device.display(), fs_type, "formatting");
    let out = host.run(&cmd)?;
    if out.success() {
        return Ok(());
    }
    let reason = out.reason();
    if too_small(&reason) {
        let size = host
            .device_size(device)
            .map_or_else(|_| "this size".to_owned(), |b| format!("{b} bytes"));
        return Err(Error::invalid(
            "fsType",
            format!(
                "the volume ({}, {size}) is too small for {fs_type} ({reason}); make the \
                 volume larger, or ask for ext4, which formats small devices",
                device.display()
            ),
        ));
    }
    Err(Error::new(
        ErrorKind::Internal,
        format!("{program} failed on {}: {reason}", device.display()),
    ))
}

/// mkfs's ways of saying the device is below the filesystem's minimum (xfs: "Filesystem
/// must be larger than 300MB."; btrfs: "… is too small to make a usable filesystem").
fn too_small(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("must be larger than") || r.contains("too small")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CmdOutput, FakeHost};

    fn opts(fs: &str, extra: &str) -> FormatOptions<'static> {
        FormatOptions {
            fs_type: Box::leak(fs.to_owned().into_boxed_str()),
            create_options: Box::leak(extra.to_owned().into_boxed_str()),
            timeout: Duration::from_secs(5),
            redo: false,
        }
    }

    #[test]
    fn a_device_too_small_for_the_filesystem_is_the_callers_to_fix() {
        let host = FakeHost::new();
        host.install("mkfs.xfs");
        host.add_block_device("/dev/loop4", 7, 4, 64 << 20);
        host.script(
            "mkfs.xfs",
            &[],
            CmdOutput::failed(1, "Filesystem must be larger than 300MB.\n"),
        );
        let e = make(&host, Path::new("/dev/loop4"), &opts("xfs", "")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(
            e.message.contains("67108864 bytes")
                && e.message.contains("too small for xfs")
                && e.message.contains("make the volume larger"),
            "{}",
            e.message
        );
    }

    #[test]
    fn argv_per_filesystem() {
        let host = FakeHost::new();
        host.install("mkfs.ext4")
            .install("mkfs.xfs")
            .install("mkfs.btrfs");
        let dev = Path::new("/dev/loop4");
        make(&host, dev, &opts("", "-b 4096 -L data")).unwrap();
        make(&host, dev, &opts("xfs", "")).unwrap();
        make(&host, dev, &opts("btrfs", "")).unwrap();
        make(
            &host,
            dev,
            &FormatOptions {
                redo: true,
                ..opts("ext4", "")
            },
        )
        .unwrap();
        assert_eq!(
            host.commands(),
            [
                "mkfs.ext4 -q -E lazy_itable_init=1,lazy_journal_init=1 -b 4096 -L data /dev/loop4",
                "mkfs.xfs -q /dev/loop4",
                "mkfs.btrfs -q /dev/loop4",
                "mkfs.ext4 -q -E lazy_itable_init=1,lazy_journal_init=1 -F /dev/loop4",
            ]
        );
    }

    #[test]
    fn force_and_unknown_types_are_refused_before_running() {
        let host = FakeHost::new();
        host.install("mkfs.ext4");
        let dev = Path::new("/dev/loop4");
        let e = make(&host, dev, &opts("ext4", "-F")).unwrap_err();
        assert!(e.message.contains("never forces"));
        let e = make(&host, dev, &opts("ntfs", "")).unwrap_err();
        assert!(e.message.contains("ext4, xfs, btrfs"));
        assert!(host.commands().is_empty());
    }

    /// The publish context comes from outside (a StorageClass, a pod's inline volume): an
    /// argument that would have mkfs read a node directory into the volume, or write to
    /// another device, is refused before mkfs runs, whatever filesystem.
    #[test]
    fn arguments_naming_other_files_or_devices_never_run() {
        let host = FakeHost::new();
        host.install("mkfs.ext4")
            .install("mkfs.xfs")
            .install("mkfs.btrfs");
        let dev = Path::new("/dev/loop4");
        for (fs, extra) in [
            ("ext4", "-d /etc/kubernetes"),
            ("ext4", "-d etc"),
            ("ext4", "-qF"),
            ("xfs", "-p file"),
            ("xfs", "-l logdev=sdc"),
            ("btrfs", "--rootdir /etc"),
            ("btrfs", "/dev/sdc"),
        ] {
            let e = make(&host, dev, &opts(fs, extra)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{fs} {extra}");
            assert!(e.message.contains("fsCreateOptions"), "{}", e.message);
        }
        assert!(host.commands().is_empty());
    }

    #[test]
    fn failure_carries_the_tool_reason() {
        let host = FakeHost::new();
        host.script(
            "mkfs.xfs",
            &[],
            CmdOutput::failed(
                1,
                "mkfs.xfs: /dev/loop4 appears to contain an existing filesystem (ext4).",
            ),
        );
        let e = make(&host, Path::new("/dev/loop4"), &opts("xfs", "")).unwrap_err();
        assert!(e.message.contains("existing filesystem"), "{}", e.message);
    }
}
