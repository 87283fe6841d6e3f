//! Which byte ranges of a snapshot image hold data, and which differ between two snapshot
//! images of one volume: the computations behind `GET /snapshots/{id}/allocated` and
//! `GET /snapshots/{id}/changes` (docs/snapshot-metadata.md).
//!
//! Both answer one page at a time: at most `limit` merged ranges from `offset`, and where
//! the next page starts. They stop as soon as the page is full, so a page costs what it
//! returns, not the size of the image.

use crate::fiemap::{Extent, Extents};
use crate::files::{next_data, read_full};
use std::fs::File;
use std::io;
use volbridge_proto::ranges::{effective_limit, ByteRange, Merger};

/// The unit in which bytes are compared when extents cannot tell: a filesystem block.
const COMPARE_BLOCK: u64 = 4096;
/// Bytes read per side and step when comparing.
const COMPARE_CHUNK: usize = 1 << 20;

/// One page of ranges and where the next starts (`None`: this was the last).
pub type Page = (Vec<ByteRange>, Option<u64>);

/// Collects ranges into a page of at most `limit`; full once a range beyond the limit has
/// begun (the last kept range can then no longer grow).
struct PageBuilder {
    merger: Merger,
    limit: usize,
}

impl PageBuilder {
    fn new(limit: u32) -> PageBuilder {
        PageBuilder {
            merger: Merger::new(),
            limit: effective_limit(limit) as usize,
        }
    }

    fn push(&mut self, start: u64, end: u64) {
        if start < end {
            self.merger.push(ByteRange::new(start, end - start));
        }
    }

    fn full(&self) -> bool {
        self.merger.complete() >= self.limit
    }

    fn finish(self) -> Page {
        let mut ranges = self.merger.finish();
        if ranges.len() > self.limit {
            ranges.truncate(self.limit);
            let next = ranges.last().map(ByteRange::end);
            return (ranges, next);
        }
        (ranges, None)
    }
}

/// The data ranges (SEEK_DATA/SEEK_HOLE) of the first `size` bytes of `f` from `offset`.
/// Holes and never-written preallocated blocks read as zeros and are not data.
pub fn allocated(f: &File, size: u64, offset: u64, limit: u32) -> io::Result<Page> {
    let mut page = PageBuilder::new(limit);
    let mut pos = offset;
    while pos < size && !page.full() {
        let Some((start, end)) = next_data(f, pos)? else {
            break;
        };
        if start >= size {
            break;
        }
        let end = end.min(size);
        page.push(start.max(offset), end);
        pos = end;
    }
    Ok(page.finish())
}

/// How two images can be compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Both are reflinks of one volume (a pool with reflink): an extent at the same
    /// physical place on both sides is the same data; elsewhere the data changed.
    Extents,
    /// The images were copied (a `dir` pool without reflink): their extents never match, so
    /// the data ranges of both are read and compared block by block.
    Bytes,
}

/// The ranges of `[offset, size)` where `target` differs from `base`. A range that is a
/// hole (or unwritten) on one side and data on the other counts as changed with
/// [`Method::Extents`] even if the data reads as zeros: it was written in between.
/// Beyond `base`'s end, `base` reads as zeros (the volume grew).
pub fn changed(
    base: &File,
    target: &File,
    size: u64,
    offset: u64,
    limit: u32,
    method: Method,
) -> io::Result<Page> {
    if method == Method::Extents {
        match changed_by_extents(base, target, size, offset, limit) {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
            other => return other,
        }
    }
    changed_by_bytes(base, target, size, offset, limit)
}

/// Written extents only: an unwritten one reads as zeros, as a hole does.
fn next_written(it: &mut Extents<'_>) -> io::Result<Option<Extent>> {
    while let Some(e) = it.next_extent()? {
        if !e.unwritten() {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

fn changed_by_extents(
    base: &File,
    target: &File,
    size: u64,
    offset: u64,
    limit: u32,
) -> io::Result<Page> {
    let mut page = PageBuilder::new(limit);
    let mut bases = Extents::new(base, offset, size);
    let mut targets = Extents::new(target, offset, size);
    let mut b = next_written(&mut bases)?;
    let mut t = next_written(&mut targets)?;
    let mut pos = offset;
    while pos < size && !page.full() {
        while b.is_some_and(|e| e.end() <= pos) {
            b = next_written(&mut bases)?;
        }
        while t.is_some_and(|e| e.end() <= pos) {
            t = next_written(&mut targets)?;
        }
        // The extent covering `pos` on each side, and where that side next changes state.
        let side = |e: Option<Extent>| match e {
            Some(e) if e.logical <= pos => (Some(e), e.end()),
            Some(e) => (None, e.logical),
            None => (None, u64::MAX),
        };
        let (on_b, b_next) = side(b);
        let (on_t, t_next) = side(t);
        let end = b_next.min(t_next).min(size);
        match (on_b, on_t) {
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => page.push(pos, end),
            (Some(x), Some(y)) if x.exact() && y.exact() => {
                if x.physical_at(pos) != y.physical_at(pos) {
                    page.push(pos, end);
                }
            }
            // The filesystem cannot say where the bytes are: read them.
            (Some(_), Some(_)) => compare_bytes(base, target, pos, end, &mut page)?,
        }
        pos = end;
    }
    Ok(page.finish())
}

fn changed_by_bytes(
    base: &File,
    target: &File,
    size: u64,
    offset: u64,
    limit: u32,
) -> io::Result<Page> {
    let mut page = PageBuilder::new(limit);
    let mut pos = offset;
    while pos < size && !page.full() {
        let db = next_data(base, pos)?;
        let dt = next_data(target, pos)?;
        // Only where either side has data can they differ; holes on both read as zeros.
        let start = match (db, dt) {
            (None, None) => break,
            (Some((s, _)), None) | (None, Some((s, _))) => s,
            (Some((a, _)), Some((b, _))) => a.min(b),
        };
        if start >= size {
            break;
        }
        // Up to where either side next changes between data and hole.
        let mut end = size;
        for (s, e) in [db, dt].into_iter().flatten() {
            end = end.min(if s > start { s } else { e });
        }
        compare_bytes(base, target, start, end, &mut page)?;
        pos = end;
    }
    Ok(page.finish())
}

/// Pushes the blocks of `[start, end)` whose bytes differ; stops early once the page is
/// full. Bytes past a file's end read as zeros.
fn compare_bytes(
    base: &File,
    target: &File,
    start: u64,
    end: u64,
    page: &mut PageBuilder,
) -> io::Result<()> {
    let mut a = vec![0u8; COMPARE_CHUNK];
    let mut b = vec![0u8; COMPARE_CHUNK];
    let mut pos = start;
    while pos < end && !page.full() {
        let want = ((end - pos) as usize).min(COMPARE_CHUNK);
        for (f, buf) in [(base, &mut a), (target, &mut b)] {
            let got = read_full(f, &mut buf[..want], pos)?;
            buf[got..want].fill(0);
        }
        // Blocks are aligned to the file, not to `start`, so that ranges come out whole.
        let mut at = pos;
        let stop = pos + want as u64;
        while at < stop {
            let block_end = ((at / COMPARE_BLOCK + 1) * COMPARE_BLOCK).min(stop);
            let (i, j) = ((at - pos) as usize, (block_end - pos) as usize);
            if a[i..j] != b[i..j] {
                page.push(at, block_end);
            }
            at = block_end;
        }
        pos = stop;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const K64: u64 = 64 << 10;

    fn temp(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "vb-blockmap-{tag}-{}-{}",
            std::process::id(),
            crate::ids::random_hex(4)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn image(path: &std::path::Path, size: u64, writes: &[(u64, u64, u8)]) -> File {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        f.set_len(size).unwrap();
        for &(off, len, byte) in writes {
            f.write_all_at(&vec![byte; len as usize], off).unwrap();
        }
        f.sync_all().unwrap();
        f
    }

    fn r(o: u64, l: u64) -> ByteRange {
        ByteRange::new(o, l)
    }

    fn all(mut next: impl FnMut(u64) -> Page) -> (Vec<ByteRange>, usize) {
        let (mut out, mut pages, mut offset) = (Vec::new(), 0, 0);
        loop {
            let (p, n) = next(offset);
            out.extend(p);
            pages += 1;
            match n {
                Some(n) => offset = n,
                None => return (out, pages),
            }
        }
    }

    #[test]
    fn byte_comparison_finds_exactly_the_rewritten_and_new_blocks() {
        let dir = temp("bytes");
        let size = 64 * K64;
        let base = image(&dir.join("a"), size, &[(0, K64, 1), (4 * K64, 2 * K64, 2)]);
        // Rewrites the first range, keeps the second with the same bytes, adds two.
        let target = image(
            &dir.join("b"),
            size,
            &[
                (0, K64, 9),
                (4 * K64, 2 * K64, 2),
                (10 * K64, K64, 3),
                (11 * K64, K64, 4),
                (40 * K64, K64, 5),
            ],
        );
        let want = vec![r(0, K64), r(10 * K64, 2 * K64), r(40 * K64, K64)];
        let (got, pages) = all(|o| changed(&base, &target, size, o, 1, Method::Bytes).unwrap());
        assert_eq!(got, want);
        assert_eq!(pages, 3);
        // Starting inside a changed range clips it.
        let (p, next) = changed(&base, &target, size, 10 * K64 + 4096, 0, Method::Bytes).unwrap();
        assert_eq!(
            p,
            vec![r(10 * K64 + 4096, 2 * K64 - 4096), r(40 * K64, K64)]
        );
        assert_eq!(next, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn allocated_pages_follow_the_data_ranges() {
        let dir = temp("alloc");
        let size = 64 * K64;
        let f = image(
            &dir.join("a"),
            size,
            &[(0, K64, 1), (8 * K64, 3 * K64, 2), (63 * K64, K64, 3)],
        );
        // Filesystems without SEEK_DATA treat everything as data; /tmp here has it.
        let want = vec![r(0, K64), r(8 * K64, 3 * K64), r(63 * K64, K64)];
        let (got, pages) = all(|o| allocated(&f, size, o, 2).unwrap());
        assert_eq!(got, want);
        assert_eq!(pages, 2);
        let (p, _) = allocated(&f, size, 9 * K64, 1).unwrap();
        assert_eq!(p, vec![r(9 * K64, 2 * K64)]);
        assert_eq!(allocated(&f, size, size, 0).unwrap(), (vec![], None));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_shorter_base_reads_as_zeros_beyond_its_end() {
        let dir = temp("grown");
        let base = image(&dir.join("a"), 4 * K64, &[(0, K64, 1)]);
        let target = image(&dir.join("b"), 8 * K64, &[(0, K64, 1), (6 * K64, K64, 7)]);
        let (p, next) = changed(&base, &target, 8 * K64, 0, 0, Method::Bytes).unwrap();
        assert_eq!((p, next), (vec![r(6 * K64, K64)], None));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
