//! The host side of an image pool: format the image, find or attach its loop device, mount
//! it, grow it. The image runs through util-linux and the filesystem's own tools, the ones
//! an operator would use by hand; every step is safe to repeat after a crash.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a tool and returns its stdout; a failure carries the tool's own words. The tool
/// dies with the CSP: a losetup finishing after a kill -9 would bind a second loop device
/// behind the back of the next start.
fn run(program: &str, args: &[&str]) -> io::Result<String> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: the closure only makes one async-signal-safe syscall (prctl).
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(io::Error::from)
        });
    }
    let out = cmd.output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{program} is not installed"),
            )
        } else {
            io::Error::new(e.kind(), format!("{program}: {e}"))
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(io::Error::other(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            err.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` can be found on PATH (or in the sbin directories root uses).
pub fn have_tool(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|d| d.join(program).is_file())
}

/// The mkfs of a pool filesystem.
pub fn mkfs_tool(fs: &str) -> &'static str {
    if fs == "btrfs" {
        "mkfs.btrfs"
    } else {
        "mkfs.xfs"
    }
}

/// Formats the file `image` (already of its full, sparse size) with reflink enabled.
pub fn format(image: &Path, fs: &str) -> io::Result<()> {
    let path = image.to_string_lossy();
    match fs {
        "btrfs" => run(
            "mkfs.btrfs",
            &["-q", "-f", "-L", "volbridge-pool", path.as_ref()],
        )?,
        _ => run(
            "mkfs.xfs",
            &["-q", "-f", "-m", "reflink=1", "-L", "vbpool", path.as_ref()],
        )?,
    };
    File::open(image)?.sync_all()
}

fn strip_deleted(s: &str) -> &str {
    s.strip_suffix(" (deleted)").unwrap_or(s)
}

/// The loop devices already bound to `image` (after a crash or a daemon restart the
/// binding outlives the process).
pub fn find_loops(image: &Path) -> io::Result<Vec<PathBuf>> {
    let want = std::fs::canonicalize(image)?;
    let mut found = Vec::new();
    for e in std::fs::read_dir("/sys/block")?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        if Path::new(strip_deleted(backing.trim_end())) == want {
            found.push(PathBuf::from(format!("/dev/{name}")));
        }
    }
    found.sort();
    Ok(found)
}

/// Binds `image` to a free loop device with direct I/O (the pool's pages are cached once,
/// by the filesystem inside it, not a second time in the host's page cache).
pub fn attach(image: &Path) -> io::Result<PathBuf> {
    let out = run(
        "losetup",
        &[
            "--find",
            "--show",
            "--direct-io=on",
            image.to_string_lossy().as_ref(),
        ],
    )?;
    let dev = out.trim();
    if !dev.starts_with("/dev/loop") {
        return Err(io::Error::other(format!(
            "losetup answered '{dev}' instead of a loop device"
        )));
    }
    Ok(PathBuf::from(dev))
}

/// Makes the loop device see the image's new length.
pub fn refresh_capacity(device: &Path) -> io::Result<()> {
    run(
        "losetup",
        &["--set-capacity", device.to_string_lossy().as_ref()],
    )
    .map(drop)
}

/// Returns once the kernel has let go of the image, or after a short wait: while udev (or
/// anyone) still holds the device open, the kernel only marks it for auto-clear, and a
/// restart that looks for loops on the image right after would find this one.
pub fn detach(device: &Path) -> io::Result<()> {
    run("losetup", &["--detach", device.to_string_lossy().as_ref()])?;
    let name = device.file_name().unwrap_or_default();
    let bound = Path::new("/sys/block").join(name).join("loop/backing_file");
    for _ in 0..200 {
        if !bound.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
}

/// `major:minor` of a block device node.
pub fn device_number(device: &Path) -> io::Result<String> {
    let rdev = std::fs::metadata(device)?.rdev();
    Ok(format!(
        "{}:{}",
        rustix::fs::major(rdev),
        rustix::fs::minor(rdev)
    ))
}

/// The `major:minor` of what is mounted exactly at `target`, if anything.
pub fn mounted_device(target: &Path) -> io::Result<Option<String>> {
    let want = target.to_string_lossy();
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    // The last matching line is the mount on top.
    Ok(table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 4 && unescape(f[4]) == want).then(|| f[2].to_owned())
        })
        .next_back())
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts the pool privately: nothing mounted under it propagates anywhere, and no device
/// node, set-uid bit or executable inside the images' filesystem is honoured.
pub fn mount(device: &Path, target: &Path, fs: &str) -> io::Result<()> {
    use rustix::mount::{MountFlags, MountPropagationFlags};
    rustix::mount::mount(
        device,
        target,
        fs,
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC | MountFlags::NOATIME,
        // No online `discard`: it made the fsyncs of the next snapshot wait for the freed
        // extents (about 100 ms after deleting a clone of 1 GiB); the pool trims in the
        // background instead (`trim`). btrfs frees deleted extents only at its next
        // transaction commit (every 30 s by default), so the space would show, and be
        // trimmed back to the host, up to 35 s after a delete; commit every 5 s instead.
        if fs == "btrfs" { c"commit=5" } else { c"" },
    )
    .map_err(|e| {
        io::Error::from(e).with_context(format!(
            "mounting the pool {} at {}",
            device.display(),
            target.display()
        ))
    })?;
    rustix::mount::mount_change(target, MountPropagationFlags::PRIVATE).map_err(io::Error::from)
}

/// Unmounts the pool unless something still uses it: `Ok(false)` when busy (a volume in
/// the pool is attached), which leaves it mounted for the next start to find.
pub fn unmount(target: &Path) -> io::Result<bool> {
    match rustix::mount::unmount(target, rustix::mount::UnmountFlags::empty()) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::BUSY) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Returns the pool's unused blocks to the host filesystem (holes in the image).
pub fn trim(target: &Path) -> io::Result<()> {
    run("fstrim", &[target.to_string_lossy().as_ref()]).map(drop)
}

/// Grows the mounted filesystem to fill its device.
pub fn grow_fs(target: &Path, fs: &str) -> io::Result<()> {
    let t = target.to_string_lossy();
    match fs {
        "btrfs" => run("btrfs", &["filesystem", "resize", "max", t.as_ref()]).map(drop),
        _ => {
            // A grow whose daemon was killed is still finishing in the kernel (the killed
            // xfs_growfs sits in its ioctl until then): wait for it rather than fail the start.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                match run("xfs_growfs", &["-d", t.as_ref()]) {
                    Err(e)
                        if e.to_string().contains("growfs operation in progress")
                            && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(200));
                    }
                    other => return other.map(drop),
                }
            }
        }
    }
}

trait WithContext {
    fn with_context(self, what: String) -> io::Error;
}

impl WithContext for io::Error {
    fn with_context(self, what: String) -> io::Error {
        io::Error::new(self.kind(), format!("{what}: {self}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
    }

    #[test]
    fn deleted_suffix_is_ignored() {
        assert_eq!(strip_deleted("/d/p.img (deleted)"), "/d/p.img");
        assert_eq!(strip_deleted("/d/p.img"), "/d/p.img");
    }
}
