//! Image file primitives: sparse creation, allocation, reflink, and a sparse-aware copy.

use rustix::fs::{FallocateFlags, SeekFrom};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

const CHUNK: usize = 1 << 20;
const BLOCK: usize = 4096;

pub fn is_out_of_space(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(c) if c == rustix::io::Errno::NOSPC.raw_os_error() || c == rustix::io::Errno::DQUOT.raw_os_error()
    ) || e.kind() == io::ErrorKind::StorageFull
}

/// Creates a new image file (never reusing an existing one) of `size` bytes, all hole.
pub fn create_sparse(path: &Path, size: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    if let Err(e) = f.set_len(size) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(f)
}

/// Opens an existing image for reading and writing.
pub fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Allocates `[offset, offset+len)` so later writes cannot run out of space.
pub fn allocate(f: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    rustix::fs::fallocate(f, FallocateFlags::empty(), offset, len).map_err(io::Error::from)
}

/// Clones `src` into `dst` sharing extents. `Ok(false)`: the filesystem cannot reflink.
pub fn reflink(dst: &File, src: &File) -> io::Result<bool> {
    use rustix::io::Errno;
    match rustix::fs::ioctl_ficlone(dst, src) {
        Ok(()) => Ok(true),
        Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY | Errno::NOSYS) => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether `dir`'s filesystem clones extents: a probe pair of files, removed after.
pub fn reflink_works(dir: &Path) -> bool {
    let tag = crate::ids::random_hex(4);
    let (a, b) = (
        dir.join(format!(".reflink-probe-{tag}-a")),
        dir.join(format!(".reflink-probe-{tag}-b")),
    );
    let works = (|| -> io::Result<bool> {
        let src = create_sparse(&a, 0)?;
        src.write_all_at(&[1u8; BLOCK], 0)?;
        let dst = create_sparse(&b, 0)?;
        reflink(&dst, &src)
    })()
    .unwrap_or(false);
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    works
}

/// Creates `path` (and its parents) with mode 0700 if it does not exist.
pub fn private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Durable replacement and directory fsync: the one copy, in `volbridge-base`.
pub use volbridge_base::fs::{sync_dir, write_atomic};

/// Bytes the file actually occupies on disk.
pub fn allocated_bytes(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.blocks() * 512)
}

/// Bytes in the data ranges (SEEK_DATA/SEEK_HOLE) of the first `len` bytes of `f`: what
/// [`sparse_copy`] will read, the total of a copy's progress.
pub fn data_bytes(f: &File, len: u64) -> io::Result<u64> {
    let mut pos = 0u64;
    let mut total = 0u64;
    while pos < len {
        let Some((start, end)) = next_data(f, pos)? else {
            break;
        };
        if start >= len {
            break;
        }
        let end = end.min(len);
        total += end - start;
        pos = end;
    }
    Ok(total)
}

/// Copies the first `len` bytes of `src` into `dst`, which must read as zeros there
/// (fresh sparse file). Only data ranges are read (SEEK_DATA/SEEK_HOLE) and all-zero
/// blocks are skipped, so the copy stays sparse. `keep_going` is called before each chunk
/// with the data bytes copied so far (progress); a `false` stops the copy with
/// `Interrupted`.
pub fn sparse_copy(
    src: &File,
    dst: &File,
    len: u64,
    keep_going: &mut dyn FnMut(u64) -> bool,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    let mut copied = 0u64;
    while pos < len {
        let (start, end) = match next_data(src, pos)? {
            None => break,
            Some((s, e)) => (s, e.min(len)),
        };
        if start >= len {
            break;
        }
        let mut off = start;
        while off < end {
            if !keep_going(copied) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "copy cancelled"));
            }
            let want = ((end - off) as usize).min(CHUNK);
            let got = read_full(src, &mut buf[..want], off)?;
            if got == 0 {
                // Source shorter than expected: the rest reads as zeros.
                return Ok(());
            }
            write_nonzero(dst, &buf[..got], off)?;
            off += got as u64;
            copied += got as u64;
        }
        pos = end;
    }
    Ok(())
}

/// The next data range at or after `pos`, or `None` past the last one.
pub(crate) fn next_data(f: &File, pos: u64) -> io::Result<Option<(u64, u64)>> {
    use rustix::io::Errno;
    let start = match rustix::fs::seek(f, SeekFrom::Data(pos)) {
        Ok(s) => s,
        Err(Errno::NXIO) => return Ok(None),
        // No SEEK_DATA support: treat everything as data (zero blocks are still skipped).
        Err(Errno::INVAL | Errno::OPNOTSUPP) => return Ok(Some((pos, u64::MAX))),
        Err(e) => return Err(e.into()),
    };
    let end = match rustix::fs::seek(f, SeekFrom::Hole(start)) {
        Ok(e) => e,
        Err(Errno::NXIO) => u64::MAX,
        Err(e) => return Err(e.into()),
    };
    Ok(Some((start, end)))
}

pub(crate) fn read_full(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn is_zero(block: &[u8]) -> bool {
    block.iter().fold(0u8, |acc, b| acc | b) == 0
}

/// Writes `data` at `off`, skipping runs of all-zero blocks.
fn write_nonzero(f: &File, data: &[u8], off: u64) -> io::Result<()> {
    let mut i = 0;
    while i < data.len() {
        let end = (i + BLOCK).min(data.len());
        if is_zero(&data[i..end]) {
            i = end;
            continue;
        }
        let run_start = i;
        let mut run_end = end;
        while run_end < data.len() {
            let next = (run_end + BLOCK).min(data.len());
            if is_zero(&data[run_end..next]) {
                break;
            }
            run_end = next;
        }
        f.write_all_at(&data[run_start..run_end], off + run_start as u64)?;
        i = run_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vb-files-{}-{name}", crate::ids::new_id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sparse_copy_preserves_data_and_holes() {
        let d = tmp("copy");
        let size = 64u64 << 20;
        let src = create_sparse(&d.join("a"), size).unwrap();
        let mut expect = vec![0u8; size as usize];
        for (i, off) in [0u64, 5 << 20, 17 << 20 | 123, 40 << 20, size - 4096]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..200_000u32)
                .map(|x| (x as u8) ^ (i as u8 + 1) | 1)
                .collect();
            let n = data.len().min((size - off) as usize);
            src.write_all_at(&data[..n], off).unwrap();
            expect[off as usize..off as usize + n].copy_from_slice(&data[..n]);
        }
        let dst = create_sparse(&d.join("b"), size).unwrap();
        assert!(data_bytes(&src, size).unwrap() >= 4 * 200_000 + 4096);
        let mut last = 0;
        sparse_copy(&src, &dst, size, &mut |done| {
            assert!(done >= last, "progress goes forward");
            last = done;
            true
        })
        .unwrap();
        let got = std::fs::read(d.join("b")).unwrap();
        assert!(got == expect, "copy differs");
        let used = allocated_bytes(&d.join("b")).unwrap();
        assert!(used < 8 << 20, "copy is not sparse: {used} bytes allocated");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn create_sparse_never_reuses_a_file() {
        let d = tmp("excl");
        create_sparse(&d.join("a"), 512).unwrap();
        assert!(create_sparse(&d.join("a"), 512).is_err());
        assert_eq!(std::fs::metadata(d.join("a")).unwrap().len(), 512);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
