//! Loop devices by ioctl (`/dev/loop-control`, `LOOP_CONFIGURE`, `LOOP_CLR_FD`,
//! `LOOP_SET_CAPACITY`) instead of spawning losetup: one syscall each, no parsing. The
//! structures are the kernel's `<linux/loop.h>` layout; no maintained crate offers them
//! without a bindgen/libclang build step.

use super::LoopDevice;
use rustix::fs::{Mode, OFlags};
use rustix::ioctl::{self, Ioctl, IoctlOutput, Opcode};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use volbridge_base::error::{Error, ErrorKind, Result};

const LOOP_CLR_FD: Opcode = 0x4C01;
const LOOP_SET_CAPACITY: Opcode = 0x4C07;
const LOOP_CONFIGURE: Opcode = 0x4C0A;
const LOOP_CTL_GET_FREE: Opcode = 0x4C82;
const BLKGETSIZE64: Opcode = ioctl::opcode::read::<u64>(0x12, 114);

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;
/// The logical block size of every loop device we make (see `attach`).
const LOGICAL_BLOCK_SIZE: u32 = 512;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// `LOOP_CTL_GET_FREE` answers with the device number as the ioctl's return value.
struct GetFree;

// SAFETY: no argument is passed, and the output is the ioctl's integer return value.
unsafe impl Ioctl for GetFree {
    type Output = u32;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        LOOP_CTL_GET_FREE
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        std::ptr::null_mut()
    }

    unsafe fn output_from_ptr(
        out: IoctlOutput,
        _: *mut std::ffi::c_void,
    ) -> rustix::io::Result<u32> {
        Ok(out as u32)
    }
}

fn io_error(what: impl std::fmt::Display, e: rustix::io::Errno) -> Error {
    let kind = match e {
        rustix::io::Errno::NOENT | rustix::io::Errno::NXIO => ErrorKind::NotFound,
        rustix::io::Errno::BUSY => ErrorKind::FailedPrecondition,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, format!("{what}: {e}"))
}

/// Binds `file` to a free loop device, with direct I/O when the backing filesystem allows it.
pub fn attach(file: &Path, read_only: bool) -> Result<PathBuf> {
    let access = if read_only {
        OFlags::RDONLY
    } else {
        OFlags::RDWR
    };
    // Direct I/O keeps the page cache from holding every block twice (loop and backing
    // file); filesystems without O_DIRECT (tmpfs) fall back to buffered I/O.
    let (backing, direct) = match rustix::fs::open(
        file,
        access | OFlags::CLOEXEC | OFlags::DIRECT,
        Mode::empty(),
    ) {
        Ok(fd) => (fd, true),
        Err(rustix::io::Errno::INVAL) => (
            rustix::fs::open(file, access | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| io_error(format!("cannot open {}", file.display()), e))?,
            false,
        ),
        Err(e) => return Err(io_error(format!("cannot open {}", file.display()), e)),
    };
    let control = rustix::fs::open(
        "/dev/loop-control",
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        io_error(
            "cannot open /dev/loop-control (is the loop module loaded?)",
            e,
        )
    })?;
    // Another process may take the free device between GET_FREE and CONFIGURE: try again.
    let mut last = None;
    for _ in 0..16 {
        // SAFETY: GetFree passes no pointer.
        let n = unsafe { ioctl::ioctl(&control, GetFree) }
            .map_err(|e| io_error("no free loop device", e))?;
        let device = PathBuf::from(format!("/dev/loop{n}"));
        let dev = match rustix::fs::open(&device, access | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                last = Some(io_error(format!("cannot open {}", device.display()), e));
                continue;
            }
        };
        let mut flags = if read_only { LO_FLAGS_READ_ONLY } else { 0 };
        if direct {
            flags |= LO_FLAGS_DIRECT_IO;
        }
        match configure(&dev, &backing, file, flags) {
            Ok(()) => return Ok(device),
            Err(rustix::io::Errno::INVAL) if direct => {
                // The backing file opened with O_DIRECT but the kernel refuses direct I/O
                // for this block size: bind it buffered.
                match configure(&dev, &backing, file, flags & !LO_FLAGS_DIRECT_IO) {
                    Ok(()) => return Ok(device),
                    Err(e) => last = Some(io_error(format!("cannot bind {}", device.display()), e)),
                }
            }
            Err(e) => last = Some(io_error(format!("cannot bind {}", device.display()), e)),
        }
    }
    Err(last.unwrap_or_else(|| Error::internal("no free loop device")))
}

fn configure(
    dev: &impl AsFd,
    backing: &impl AsFd,
    file: &Path,
    flags: u32,
) -> rustix::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut name = [0u8; LO_NAME_SIZE];
    let bytes = file.as_os_str().as_encoded_bytes();
    let n = bytes.len().min(LO_NAME_SIZE - 1);
    name[..n].copy_from_slice(&bytes[..n]);
    let config = LoopConfig {
        fd: backing.as_fd().as_raw_fd() as u32,
        // Always 512: with 0 the kernel takes the backing file's direct-I/O alignment, which
        // for an xfs file that shares extents (a snapshot or clone in the local CSP's pool) is
        // 4096, and a filesystem made with 1 KiB blocks or 512-byte sectors on an earlier
        // attach would no longer mount. A volume's geometry must not change between attaches;
        // where 512 is too small for direct I/O the loop driver uses buffered I/O instead.
        block_size: LOGICAL_BLOCK_SIZE,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: name,
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which LoopConfig lays out.
    unsafe {
        ioctl::ioctl(
            dev,
            ioctl::Setter::<LOOP_CONFIGURE, LoopConfig>::new(config),
        )
    }
}

/// Clears a loop device. Success when it is already free.
pub fn detach(device: &Path) -> Result<()> {
    let dev = match rustix::fs::open(device, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NXIO) => return Ok(()),
        Err(e) => return Err(io_error(format!("cannot open {}", device.display()), e)),
    };
    // SAFETY: LOOP_CLR_FD takes no argument.
    match unsafe { ioctl::ioctl(&dev, ioctl::NoArg::<LOOP_CLR_FD>::new()) } {
        Ok(()) | Err(rustix::io::Errno::NXIO) => {}
        Err(e) => return Err(io_error(format!("cannot detach {}", device.display()), e)),
    }
    drop(dev);
    settle_detach(device);
    Ok(())
}

/// While anyone else holds the device open (udev's blkid probing a new loop, most often),
/// the kernel only marks it for auto-clear and lets go of the file at the last close.
/// Callers go on to delete or clone that file and count leftover loops, so wait for the
/// release briefly; a holder that stays is legal and the kernel finishes on its own.
fn settle_detach(device: &Path) {
    let Some(name) = device.file_name() else {
        return;
    };
    let backing = Path::new("/sys/block").join(name).join("loop/backing_file");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while backing.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

pub fn refresh_capacity(device: &Path) -> Result<()> {
    let dev = rustix::fs::open(device, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| io_error(format!("cannot open {}", device.display()), e))?;
    // SAFETY: LOOP_SET_CAPACITY takes no argument.
    unsafe { ioctl::ioctl(&dev, ioctl::NoArg::<LOOP_SET_CAPACITY>::new()) }
        .map_err(|e| io_error(format!("cannot refresh {}", device.display()), e))
}

pub fn device_size(device: &Path) -> Result<u64> {
    let dev = rustix::fs::open(device, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| io_error(format!("cannot open {}", device.display()), e))?;
    // SAFETY: BLKGETSIZE64 writes one u64.
    unsafe { ioctl::ioctl(&dev, ioctl::Getter::<BLKGETSIZE64, u64>::new()) }
        .map_err(|e| io_error(format!("cannot read the size of {}", device.display()), e))
}

/// Bound loop devices, from sysfs (the kernel's full backing path, not the 64-byte name).
pub fn list() -> Result<Vec<LoopDevice>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir("/sys/block") {
        Ok(e) => e,
        Err(e) => return Err(Error::internal(format!("cannot read /sys/block: {e}"))),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let base = entry.path();
        let Ok(backing) = std::fs::read_to_string(base.join("loop/backing_file")) else {
            continue;
        };
        let dev = std::fs::read_to_string(base.join("dev")).unwrap_or_default();
        let ro = std::fs::read_to_string(base.join("ro")).unwrap_or_default();
        out.push(LoopDevice {
            device: PathBuf::from(format!("/dev/{name}")),
            backing_file: PathBuf::from(backing.trim_end_matches('\n')),
            dev: dev.trim().to_owned(),
            read_only: ro.trim() == "1",
        });
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(out)
}
