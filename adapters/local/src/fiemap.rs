//! Where a file's data sits on disk, by the `FS_IOC_FIEMAP` ioctl: the extents that map
//! its logical byte ranges to physical ones, with the filesystem's flags (shared with
//! another file, not yet allocated, encoded, …).
//!
//! Two reflinked images whose extents at some offset start at the same physical byte share
//! that data, so comparing extent maps tells which ranges of two snapshots differ without
//! reading them (`block_map`). Tests use it to check that clones share extents.
//!
//! rustix has no FIEMAP wrapper, so the structures are written here in the kernel's
//! `<linux/fiemap.h>` layout and passed through `rustix::ioctl` (as `host/loopdev.rs` does
//! for loop devices).

use rustix::io::Errno;
use rustix::ioctl::{self, Opcode};
use std::fs::File;
use std::io;

/// `struct fiemap` without its trailing array.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapHead {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
}

/// `struct fiemap_extent`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RawExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

// The kernel reads these sizes from the ABI; a mismatch would corrupt memory.
const _: () = assert!(std::mem::size_of::<FiemapHead>() == 32);
const _: () = assert!(std::mem::size_of::<RawExtent>() == 56);

/// Extents asked for per call: about 7 KiB of buffer.
const BATCH: usize = 128;

/// The head followed by room for `BATCH` extents, as the kernel fills it.
#[repr(C)]
struct FiemapBuf {
    head: FiemapHead,
    extents: [RawExtent; BATCH],
}

/// `_IOWR('f', 11, struct fiemap)`: the size in the opcode is the head's only.
const FS_IOC_FIEMAP: Opcode = ioctl::opcode::read_write::<FiemapHead>(b'f', 11);

/// Flush dirty data before mapping, so that delayed allocations have a place.
const FIEMAP_FLAG_SYNC: u32 = 0x1;

pub const FIEMAP_EXTENT_LAST: u32 = 0x1;
pub const FIEMAP_EXTENT_UNKNOWN: u32 = 0x2;
pub const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
pub const FIEMAP_EXTENT_ENCODED: u32 = 0x8;
pub const FIEMAP_EXTENT_DATA_ENCRYPTED: u32 = 0x80;
pub const FIEMAP_EXTENT_NOT_ALIGNED: u32 = 0x100;
pub const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x200;
pub const FIEMAP_EXTENT_DATA_TAIL: u32 = 0x400;
pub const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
pub const FIEMAP_EXTENT_SHARED: u32 = 0x2000;

/// Flags under which `physical` does not name where the bytes are: no location yet, data
/// stored transformed (compressed, encrypted) or packed with other files' data.
const INEXACT: u32 = FIEMAP_EXTENT_UNKNOWN
    | FIEMAP_EXTENT_DELALLOC
    | FIEMAP_EXTENT_ENCODED
    | FIEMAP_EXTENT_DATA_ENCRYPTED
    | FIEMAP_EXTENT_NOT_ALIGNED
    | FIEMAP_EXTENT_DATA_INLINE
    | FIEMAP_EXTENT_DATA_TAIL;

/// One mapped range of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: u32,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.logical.saturating_add(self.length)
    }

    /// Shared with another file (reflink, snapshot).
    pub fn shared(&self) -> bool {
        self.flags & FIEMAP_EXTENT_SHARED != 0
    }

    /// Allocated but never written: reads as zeros, like a hole.
    pub fn unwritten(&self) -> bool {
        self.flags & FIEMAP_EXTENT_UNWRITTEN != 0
    }

    /// Whether equal physical addresses mean equal bytes (see [`INEXACT`]).
    pub fn exact(&self) -> bool {
        self.flags & INEXACT == 0
    }

    /// The physical byte behind logical byte `pos` (which must lie in this extent).
    pub fn physical_at(&self, pos: u64) -> u64 {
        self.physical + (pos - self.logical)
    }
}

/// Reads a file's extents in order, a batch per ioctl, from `start` until `end`.
pub struct Extents<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    sync: bool,
    batch: std::vec::IntoIter<Extent>,
    done: bool,
}

impl<'a> Extents<'a> {
    /// The first call flushes the file's dirty data (`FIEMAP_FLAG_SYNC`): an extent still
    /// waiting for allocation has no physical address to compare.
    pub fn new(file: &'a File, start: u64, end: u64) -> Extents<'a> {
        Extents {
            file,
            pos: start,
            end,
            sync: true,
            batch: Vec::new().into_iter(),
            done: start >= end,
        }
    }

    /// The next extent that ends after `start`, in logical order; `None` after the last.
    /// Filesystems without FIEMAP (tmpfs, overlayfs) answer `Unsupported`.
    pub fn next_extent(&mut self) -> io::Result<Option<Extent>> {
        loop {
            if let Some(e) = self.batch.next() {
                return Ok(Some(e));
            }
            if self.done {
                return Ok(None);
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut buf = FiemapBuf {
            head: FiemapHead {
                fm_start: self.pos,
                fm_length: self.end - self.pos,
                fm_flags: if self.sync { FIEMAP_FLAG_SYNC } else { 0 },
                fm_extent_count: BATCH as u32,
                ..FiemapHead::default()
            },
            extents: [RawExtent::default(); BATCH],
        };
        self.sync = false;
        // SAFETY: FS_IOC_FIEMAP takes a `struct fiemap` followed by `fm_extent_count`
        // extents; `FiemapBuf` is exactly that, and the kernel writes no further.
        let asked = unsafe {
            ioctl::ioctl(
                self.file,
                ioctl::Updater::<FS_IOC_FIEMAP, FiemapBuf>::new(&mut buf),
            )
        };
        match asked {
            Ok(()) => {}
            Err(Errno::OPNOTSUPP | Errno::NOTTY | Errno::NOSYS) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the filesystem does not map extents (FIEMAP)",
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let count = (buf.head.fm_mapped_extents as usize).min(BATCH);
        let got: Vec<Extent> = buf.extents[..count]
            .iter()
            .map(|e| Extent {
                logical: e.fe_logical,
                physical: e.fe_physical,
                length: e.fe_length,
                flags: e.fe_flags,
            })
            .collect();
        match got.last() {
            None => self.done = true,
            Some(last) => {
                self.done = last.flags & FIEMAP_EXTENT_LAST != 0 || last.end() >= self.end;
                // A filesystem that answers an extent again (it may when the range starts
                // inside it) must not make this loop forever.
                if last.end() <= self.pos {
                    self.done = true;
                }
                self.pos = last.end();
            }
        }
        self.batch = got.into_iter();
        Ok(())
    }
}

/// Every extent of the whole file.
pub fn extents(file: &File) -> io::Result<Vec<Extent>> {
    let mut it = Extents::new(file, 0, u64::MAX);
    let mut out = Vec::new();
    while let Some(e) = it.next_extent()? {
        out.push(e);
    }
    Ok(out)
}

/// Bytes of `file` in extents shared with another file (what `filefrag -v` marks
/// "shared").
pub fn shared_bytes(file: &File) -> io::Result<u64> {
    Ok(extents(file)?
        .iter()
        .filter(|e| e.shared())
        .map(|e| e.length)
        .sum())
}
