//! The pool: where a data dir keeps its image files, chosen so that snapshots and clones are
//! reflinks on every host (csp-api.md B39b).
//!
//! * The data dir itself when its filesystem clones extents (xfs with reflink, btrfs).
//! * Otherwise an **image pool**, as LXD/Incus make one on machines without a spare disk:
//!   `<data_dir>/volbridge-pool.img`, a sparse file formatted xfs (`reflink=1`) or btrfs,
//!   bound to a loop device with direct I/O and mounted privately at `<data_dir>/pool`.
//!   It starts small and grows on demand (before a create that needs room, and when a
//!   periodic check finds it filling), never past what the host filesystem can back.
//! * A plain `dir` pool without reflink only when asked for, or when an image pool cannot be
//!   made here (no root, no mkfs): snapshots and clones then copy in the background with the
//!   copy-state rules of B39.
//!
//! The decision is kept: `pool.json` names the mode of an image pool, and a data dir that
//! already holds images from before pools existed keeps serving them where they are (moving
//! files that nodes may hold open through loop devices is not safe; see ARCHITECTURE.md).
//!
//! Crash safety: the image is formatted under a temporary name, `pool.json` is written, and
//! a rename commits it; a start finds the image, reuses the loop device still bound to it,
//! mounts it if it is not mounted and grows the filesystem to the image's length, so a kill
//! at any step of creation or growth is finished by the next start.
//!
//! One file over 600 lines on purpose: deciding the mode, creating the image and opening it
//! again all read or write `pool.json` (`Marker`) in the crash-safe order above, which is
//! checked best in one place; the operator's choice (`choice.rs`) and the host tools that
//! format, attach, mount and grow the image (`image.rs`) are apart.

mod choice;
mod image;

pub use choice::{PoolChoice, PoolMode};

use crate::files;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The image of an image pool, directly in the data dir.
pub const POOL_IMAGE: &str = volbridge_proto::csp::LOCAL_POOL_IMAGE;
const POOL_IMAGE_TMP: &str = "volbridge-pool.img.tmp";
const MARKER: &str = "pool.json";
const MOUNT_DIR: &str = "pool";

const GIB: u64 = 1 << 30;
/// Below this an image pool is not worth making (xfs needs 300 MiB of its own).
const MIN_SIZE: u64 = GIB;
/// How often a pool checks whether writes inside it call for more room.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Space freed inside the pool is given back to the host once deletes have been quiet this
/// long (and at least this much was freed).
const TRIM_AFTER: Duration = Duration::from_secs(5);
const TRIM_AT_LEAST: u64 = 64 << 20;

#[derive(Serialize, Deserialize)]
struct Marker {
    mode: PoolMode,
    reason: String,
}

/// Space as the pool sees it: an image pool counts the room it can still grow into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub total: u64,
    pub free: u64,
    pub used: u64,
}

struct ImagePool {
    image: PathBuf,
    mount: PathBuf,
    device: PathBuf,
    fs: &'static str,
    grow: Mutex<()>,
}

pub struct Pool {
    mode: PoolMode,
    reason: String,
    reflink: bool,
    data_dir: PathBuf,
    images: PathBuf,
    image: Option<ImagePool>,
    closed: AtomicBool,
}

impl Pool {
    /// Finds, makes or mounts the pool of `data_dir`. `has_data` says whether the metadata
    /// holds volumes or snapshots (an image pool whose image vanished is then an error, never
    /// replaced by an empty one).
    pub fn open(
        data_dir: &Path,
        choice: PoolChoice,
        initial_size: u64,
        has_data: bool,
    ) -> io::Result<Arc<Pool>> {
        let (mode, reason) = decide(data_dir, choice)?;
        let pool = match mode.fs_type() {
            None => {
                let reflink = files::reflink_works(data_dir);
                Pool {
                    mode,
                    reason,
                    reflink,
                    data_dir: data_dir.to_owned(),
                    images: data_dir.to_owned(),
                    image: None,
                    closed: AtomicBool::new(false),
                }
            }
            Some(fs) => {
                let image = open_image(data_dir, mode, fs, &reason, initial_size, has_data)?;
                let images = image.mount.clone();
                let reflink = files::reflink_works(&images);
                if !reflink {
                    tracing::warn!(pool = %images.display(), "the pool's filesystem does not reflink; snapshots will copy");
                }
                Pool {
                    mode,
                    reason,
                    reflink,
                    data_dir: data_dir.to_owned(),
                    images,
                    image: Some(image),
                    closed: AtomicBool::new(false),
                }
            }
        };
        tracing::info!(mode = %pool.mode, reflink = pool.reflink, reason = %pool.reason, root = %pool.images.display(), "local CSP pool");
        let pool = Arc::new(pool);
        if pool.image.is_some() {
            watch(Arc::downgrade(&pool));
        }
        Ok(pool)
    }

    pub fn mode(&self) -> PoolMode {
        self.mode
    }
    /// Why this mode, in a sentence for `doctor` and `backend ls`.
    pub fn reason(&self) -> &str {
        &self.reason
    }
    /// Whether snapshots and clones share extents (else they copy).
    pub fn reflink(&self) -> bool {
        self.reflink
    }
    /// The directory holding `volumes/`, `snapshots/` and `retained/`.
    pub fn images_root(&self) -> &Path {
        &self.images
    }

    /// The pool's size and free space; an image pool adds the room it can still grow into.
    pub fn space(&self) -> io::Result<Space> {
        let Some(img) = &self.image else {
            let st = statvfs(&self.data_dir)?;
            return Ok(Space {
                total: st.total,
                free: st.free,
                used: st.total.saturating_sub(st.free),
            });
        };
        let inner = statvfs(&img.mount)?;
        let host = statvfs(&self.data_dir)?;
        let growable = max_image_len(img, &host).saturating_sub(file_len(&img.image)?);
        Ok(Space {
            total: inner.total + growable,
            free: (inner.free + growable).min(inner.free + host.free),
            used: inner.total.saturating_sub(inner.free),
        })
    }

    /// Makes sure `want` bytes (plus a margin) are free inside an image pool, growing the
    /// image when they are not. A pool that cannot grow further is left as it is: the
    /// create that follows then fails with the out-of-space error.
    pub fn ensure_free(&self, want: u64) -> io::Result<()> {
        let Some(img) = &self.image else {
            return Ok(());
        };
        if self.closed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let _one = img.grow.lock().unwrap_or_else(|p| p.into_inner());
        let inner = statvfs(&img.mount)?;
        let margin = GIB.max(inner.total / 8);
        if inner.free >= want.saturating_add(margin) {
            return Ok(());
        }
        let len = file_len(&img.image)?;
        let need = want.saturating_add(margin) - inner.free;
        let host = statvfs(&self.data_dir)?;
        let target = round_up(len + need.max(len / 2), GIB).min(max_image_len(img, &host));
        if target <= len {
            return Ok(());
        }
        grow_image(img, target)?;
        tracing::info!(from = len, to = target, pool = %img.image.display(), "grew the pool image");
        Ok(())
    }

    /// Unmounts an image pool and frees its loop device, unless a volume in it is still in
    /// use (then it stays mounted, and the next start finds it). Idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(img) = &self.image else { return };
        let _one = img.grow.lock().unwrap_or_else(|p| p.into_inner());
        match image::unmount(&img.mount) {
            Ok(true) => {
                if let Err(e) = image::detach(&img.device) {
                    tracing::warn!(device = %img.device.display(), error = %e, "could not free the pool's loop device");
                }
            }
            Ok(false) => {
                tracing::info!(pool = %img.mount.display(), "the pool stays mounted: volumes in it are in use")
            }
            Err(e) => {
                tracing::warn!(pool = %img.mount.display(), error = %e, "could not unmount the pool")
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.close();
    }
}

/// Grows the image file, then the loop device, then the filesystem. Each step is complete
/// on its own; a start after a crash in between does the later ones (see `open_image`).
fn grow_image(img: &ImagePool, target: u64) -> io::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(&img.image)?;
    f.set_len(target)?;
    f.sync_all()?;
    image::refresh_capacity(&img.device)?;
    image::grow_fs(&img.mount, img.fs)
}

/// Grows the pool when writes fill it, and trims it some seconds after space was freed
/// (deleted volumes and snapshots), so the host gets that space back.
/// The longest the image may become: what it holds now plus the host's free space, less a
/// reserve for the host's own needs.
fn max_image_len(img: &ImagePool, host: &FsSpace) -> u64 {
    let allocated = files::allocated_bytes(&img.image).unwrap_or(0);
    (allocated + host.free).saturating_sub(reserve(host.total))
}

fn watch(pool: Weak<Pool>) {
    let spawned = std::thread::Builder::new()
        .name("volbridge-pool".into())
        .spawn(move || {
            let mut last_free = None;
            let mut freed_at = None;
            loop {
                std::thread::sleep(WATCH_EVERY);
                let Some(p) = pool.upgrade() else { return };
                if p.closed.load(Ordering::Relaxed) {
                    return;
                }
                if let Err(e) = p.ensure_free(0) {
                    tracing::warn!(error = %e, "could not grow the pool");
                }
                let Some(img) = &p.image else { return };
                let Ok(now) = statvfs(&img.mount).map(|s| s.free) else {
                    continue;
                };
                if last_free.is_some_and(|before| now > before + TRIM_AT_LEAST) {
                    freed_at = Some(std::time::Instant::now());
                }
                last_free = Some(now);
                if freed_at.is_some_and(|t| t.elapsed() >= TRIM_AFTER) {
                    freed_at = None;
                    let _one = img.grow.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = image::trim(&img.mount) {
                        tracing::warn!(error = %e, "could not trim the pool");
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the pool's growth watch");
    }
}

/// What `open` would choose for `data_dir` now, without making anything (for `doctor`):
/// the mode, whether snapshots would share extents, and why. A data dir that does not
/// exist yet is judged by the filesystem it would be made on.
pub fn preview(data_dir: &Path, choice: PoolChoice) -> io::Result<(PoolMode, bool, String)> {
    let mut probe = data_dir;
    while !probe.is_dir() {
        match probe.parent() {
            Some(p) => probe = p,
            None => break,
        }
    }
    let (mode, reason) = decide_in(data_dir, probe, choice)?;
    let reflink = mode != PoolMode::Dir || files::reflink_works(probe);
    Ok((mode, reflink, reason))
}

/// The mode for this data dir and why.
fn decide(data_dir: &Path, choice: PoolChoice) -> io::Result<(PoolMode, String)> {
    decide_in(data_dir, data_dir, choice)
}

/// `probe` is where filesystem facts are read: the data dir, or its nearest existing parent.
fn decide_in(data_dir: &Path, probe: &Path, choice: PoolChoice) -> io::Result<(PoolMode, String)> {
    if let Some(m) = read_marker(data_dir)? {
        return match choice.mode() {
            None => Ok((m.mode, m.reason)),
            Some(asked) if asked == m.mode => Ok((m.mode, m.reason)),
            Some(asked) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "data dir {} keeps its volumes in a {} pool, but the configuration asks for pool = \"{asked}\"; \
                     set pool = \"{}\" (or \"auto\"), or give this CSP another data dir",
                    data_dir.display(),
                    m.mode,
                    m.mode
                ),
            )),
        };
    }
    let legacy = holds_images(data_dir);
    let fs = fs_name(probe);
    if choice == PoolChoice::Dir {
        return Ok((PoolMode::Dir, "configured: pool = \"dir\"".into()));
    }
    if let Some(asked) = choice.mode() {
        if legacy {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "data dir {} already holds volume images outside a pool; pool = \"{asked}\" needs a new data dir \
                     (or set pool = \"dir\" to keep serving them)",
                    data_dir.display()
                ),
            ));
        }
        let fs = asked.fs_type().unwrap_or("xfs");
        can_make_image(probe, fs).map_err(|why| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("pool = \"{asked}\" cannot be made here: {why}"),
            )
        })?;
        return Ok((asked, format!("configured: pool = \"{asked}\"")));
    }
    if files::reflink_works(probe) {
        return Ok((
            PoolMode::Dir,
            format!("the data dir's filesystem ({fs}) clones by reflink"),
        ));
    }
    if legacy {
        return Ok((
            PoolMode::Dir,
            format!(
                "the data dir ({fs}, no reflink) holds volumes from before pools; they stay where they are \
                 and snapshots copy (a new data dir gets an image pool)"
            ),
        ));
    }
    let mut why_not = Vec::new();
    for (mode, fs_type) in [(PoolMode::XfsImage, "xfs"), (PoolMode::BtrfsImage, "btrfs")] {
        match can_make_image(probe, fs_type) {
            Ok(()) => {
                return Ok((
                    mode,
                    format!(
                        "the data dir's filesystem ({fs}) cannot reflink, so volumes live in an image pool ({fs_type})"
                    ),
                ))
            }
            Err(why) => why_not.push(why),
        }
    }
    why_not.dedup();
    Ok((
        PoolMode::Dir,
        format!(
            "the data dir's filesystem ({fs}) cannot reflink and no image pool can be made ({}): snapshots and clones copy",
            why_not.join("; ")
        ),
    ))
}

/// Why an image pool of `fs` cannot be made here, if it cannot.
fn can_make_image(data_dir: &Path, fs: &str) -> Result<(), String> {
    if !has_cap_sys_admin() {
        return Err("mounting needs root (CAP_SYS_ADMIN)".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("no loop devices (/dev/loop-control is missing)".into());
    }
    let package = if fs == "btrfs" {
        "btrfs-progs"
    } else {
        "xfsprogs"
    };
    let grow = if fs == "btrfs" { "btrfs" } else { "xfs_growfs" };
    for (tool, package) in [
        (image::mkfs_tool(fs), package),
        (grow, package),
        ("losetup", "mount"),
    ] {
        if !image::have_tool(tool) {
            return Err(format!(
                "{tool} is not installed (apt-get install {package})"
            ));
        }
    }
    if !std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| t.contains(fs)) {
        return Err(format!("the kernel does not offer {fs}"));
    }
    let host = statvfs(data_dir).map_err(|e| e.to_string())?;
    if host.free.saturating_sub(reserve(host.total)) < MIN_SIZE {
        return Err(format!(
            "less than {} GiB free in {}",
            MIN_SIZE / GIB,
            data_dir.display()
        ));
    }
    Ok(())
}

fn has_cap_sys_admin() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// Image files in the pre-pool layout directly under the data dir.
fn holds_images(data_dir: &Path) -> bool {
    ["volumes", "snapshots", "retained"].iter().any(|d| {
        std::fs::read_dir(data_dir.join(d)).is_ok_and(|mut it| {
            it.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".img")))
        })
    })
}

/// Finds or makes the image, its loop device and its mount; grows the filesystem to the
/// image's length (finishing a growth a crash interrupted).
fn open_image(
    data_dir: &Path,
    mode: PoolMode,
    fs: &'static str,
    reason: &str,
    initial_size: u64,
    has_data: bool,
) -> io::Result<ImagePool> {
    let image = data_dir.join(POOL_IMAGE);
    let tmp = data_dir.join(POOL_IMAGE_TMP);
    if !image.exists() {
        if has_data && read_marker(data_dir)?.is_some() && !tmp.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the pool image {} is missing but the CSP's records name volumes in it; \
                     restore the image (or move the data dir away to start empty)",
                    image.display()
                ),
            ));
        }
        create_image(data_dir, &tmp, &image, mode, fs, reason, initial_size)?;
    }
    let mount = data_dir.join(MOUNT_DIR);
    files::private_dir(&mount)?;
    let mount = std::fs::canonicalize(&mount)?;
    let mounted = image::mounted_device(&mount)?;
    let bound = image::find_loops(&image)?;
    // The device mounted already, else the first bound one; any other binding is a
    // leftover (two binders raced before a crash) and goes.
    let mut numbers = Vec::new();
    for d in &bound {
        numbers.push(image::device_number(d)?);
    }
    let keep = numbers
        .iter()
        .position(|n| Some(n) == mounted.as_ref())
        .or(if bound.is_empty() { None } else { Some(0) });
    for (i, d) in bound.iter().enumerate() {
        if Some(i) != keep {
            tracing::info!(device = %d.display(), "freeing a second loop device bound to the pool image");
            if let Err(e) = image::detach(d) {
                tracing::warn!(device = %d.display(), error = %e, "could not free a leftover loop device");
            }
        }
    }
    let device = match keep {
        Some(i) => bound[i].clone(),
        None => image::attach(&image)?,
    };
    let dev_no = image::device_number(&device)?;
    match mounted {
        Some(d) if d == dev_no => {}
        Some(other) => {
            return Err(io::Error::other(format!(
                "{} is a mount of device {other}, not of the pool image {}; unmount it",
                mount.display(),
                image.display()
            )))
        }
        None => {
            image::mount(&device, &mount, fs)?;
            // The new filesystem's root comes up 0755; the pool is the CSP's alone.
            std::fs::set_permissions(&mount, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        }
    }
    image::refresh_capacity(&device)?;
    image::grow_fs(&mount, fs)?;
    for d in ["volumes", "snapshots", "retained"] {
        files::private_dir(&mount.join(d))?;
    }
    Ok(ImagePool {
        image,
        mount,
        device,
        fs,
        grow: Mutex::new(()),
    })
}

fn create_image(
    data_dir: &Path,
    tmp: &Path,
    image: &Path,
    mode: PoolMode,
    fs: &str,
    reason: &str,
    initial_size: u64,
) -> io::Result<()> {
    match std::fs::remove_file(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let host = statvfs(data_dir)?;
    let size = round_down(
        initial_size
            .max(MIN_SIZE)
            .min(host.free.saturating_sub(reserve(host.total))),
        1 << 20,
    );
    if size < MIN_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "{}: less than {} GiB free for the pool image",
                data_dir.display(),
                MIN_SIZE / GIB
            ),
        ));
    }
    tracing::info!(image = %image.display(), size, fs, "creating the local CSP's pool image");
    drop(files::create_sparse(tmp, size)?);
    image::format(tmp, fs)?;
    let marker = serde_json::to_vec_pretty(&Marker {
        mode,
        reason: reason.to_owned(),
    })
    .map_err(io::Error::other)?;
    files::write_atomic(&data_dir.join(MARKER), &marker)?;
    std::fs::rename(tmp, image)?;
    files::sync_dir(data_dir)
}

fn read_marker(data_dir: &Path) -> io::Result<Option<Marker>> {
    let path = data_dir.join(MARKER);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a pool record: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

struct FsSpace {
    total: u64,
    free: u64,
}

fn statvfs(path: &Path) -> io::Result<FsSpace> {
    let st = rustix::fs::statvfs(path)?;
    Ok(FsSpace {
        total: st.f_blocks.saturating_mul(st.f_frsize),
        free: st.f_bavail.saturating_mul(st.f_frsize),
    })
}

/// What an image pool leaves the host: 2 % of its filesystem, at least 512 MiB.
fn reserve(host_total: u64) -> u64 {
    (host_total / 50).max(512 << 20)
}

fn file_len(p: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(p)?.len())
}

fn round_up(n: u64, unit: u64) -> u64 {
    n.div_ceil(unit).saturating_mul(unit)
}

fn round_down(n: u64, unit: u64) -> u64 {
    n / unit * unit
}

/// The filesystem type of `path`, for messages.
fn fs_name(path: &Path) -> String {
    const NAMES: [(i64, &str); 6] = [
        (0xEF53, "ext4"),
        (0x5846_5342, "xfs"),
        (0x9123_683E, "btrfs"),
        (0x0102_1994, "tmpfs"),
        (0x794C_7630, "overlayfs"),
        (0x2FC1_2FC1, "zfs"),
    ];
    match rustix::fs::statfs(path) {
        Ok(st) => {
            let t = st.f_type;
            NAMES
                .iter()
                .find(|(m, _)| *m == t)
                .map(|(_, n)| (*n).to_owned())
                .unwrap_or_else(|| format!("filesystem 0x{t:x}"))
        }
        Err(_) => "unknown filesystem".into(),
    }
}

#[cfg(test)]
mod tests;
