//! Byte ranges of a snapshot: the wire shape of the CSP snapshot-metadata extension
//! (`docs/snapshot-metadata.md`) and the one merging rule both of its sides apply.
//!
//! Every list of ranges on the wire is sorted by offset, without overlap, and merged: two
//! ranges never touch (`a.offset + a.length < b.offset`). A consumer that streams ranges
//! (CSI GetMetadataAllocated/Delta) can then pass them on as they come, and a page boundary
//! never splits what is one range on disk.

use serde::{Deserialize, Serialize};

/// The value of `Capacity.extensions` by which a CSP says it serves
/// `GET /snapshots/{id}/allocated` and `GET /snapshots/{id}/changes`.
pub const EXTENSION_SNAPSHOT_METADATA: &str = "snapshot_metadata";

/// Ranges per page when the request names no `limit`.
pub const DEFAULT_RANGE_LIMIT: u32 = 1024;

/// The most ranges one page may hold; a larger `limit` is lowered to it, so that one answer
/// stays a few hundred KiB of JSON whatever a caller asks.
pub const MAX_RANGE_LIMIT: u32 = 10_000;

/// `length` bytes from `offset`; `length` is never 0 on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ByteRange {
    #[serde(deserialize_with = "crate::lenient::u64_or_zero")]
    pub offset: u64,
    #[serde(deserialize_with = "crate::lenient::u64_or_zero")]
    pub length: u64,
}

impl ByteRange {
    pub fn new(offset: u64, length: u64) -> ByteRange {
        ByteRange { offset, length }
    }

    /// One past the last byte (saturating: a range never wraps).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// One page of `GET /snapshots/{id}/allocated` or `…/changes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangePage {
    /// The size of the snapshot (of the target snapshot for changes): the volume's capacity
    /// when it was taken. The same on every page.
    #[serde(default, deserialize_with = "crate::lenient::u64_or_zero")]
    pub volume_size: u64,
    /// Sorted, not overlapping, merged; none ends at or before the request's `offset`.
    #[serde(default)]
    pub ranges: Vec<ByteRange>,
    /// Where the next page starts (`offset=` of the next request); absent on the last page.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::lenient::opt_u64"
    )]
    pub next_offset: Option<u64>,
}

/// Builds a merged list from ranges pushed in ascending order of offset: a range that
/// overlaps or touches the last one extends it. Empty ranges are dropped.
#[derive(Debug, Default)]
pub struct Merger {
    out: Vec<ByteRange>,
}

impl Merger {
    pub fn new() -> Merger {
        Merger::default()
    }

    /// `range` must not start before the last pushed range does.
    pub fn push(&mut self, range: ByteRange) {
        if range.length == 0 {
            return;
        }
        match self.out.last_mut() {
            Some(last) if range.offset <= last.end() => {
                let end = last.end().max(range.end());
                last.length = end - last.offset;
            }
            _ => self.out.push(range),
        }
    }

    /// Ranges completed so far: all but the last, which a later push may still extend.
    pub fn complete(&self) -> usize {
        self.out.len().saturating_sub(1)
    }

    /// The end of the last range, if any.
    pub fn end(&self) -> Option<u64> {
        self.out.last().map(ByteRange::end)
    }

    pub fn finish(self) -> Vec<ByteRange> {
        self.out
    }
}

/// Any list made sorted and merged, clipped to `[from, until)`: what a client makes of a
/// CSP's page before trusting it.
pub fn normalize(mut ranges: Vec<ByteRange>, from: u64, until: u64) -> Vec<ByteRange> {
    ranges.sort_unstable();
    let mut m = Merger::new();
    for r in ranges {
        let start = r.offset.max(from);
        let end = r.end().min(until);
        if start < end {
            m.push(ByteRange::new(start, end - start));
        }
    }
    m.finish()
}

/// Cuts a merged list into one page of at most `limit` ranges starting at `offset`: the
/// page and where the next one starts. Ranges that end at or before `offset` are left out
/// and one that holds `offset` is clipped to begin there, so that a caller resuming at the
/// end of what it received gets neither a repeat nor a gap.
pub fn page(ranges: &[ByteRange], offset: u64, limit: u32) -> (Vec<ByteRange>, Option<u64>) {
    let limit = effective_limit(limit) as usize;
    let mut out = Vec::new();
    let mut rest = ranges.iter().filter(|r| r.end() > offset).peekable();
    while out.len() < limit {
        let Some(r) = rest.next() else { break };
        let start = r.offset.max(offset);
        out.push(ByteRange::new(start, r.end() - start));
    }
    let next = match rest.peek() {
        Some(_) => out.last().map(ByteRange::end),
        None => None,
    };
    (out, next)
}

/// `limit` as a CSP applies it: 0 means the default, and never more than the maximum.
pub fn effective_limit(limit: u32) -> u32 {
    match limit {
        0 => DEFAULT_RANGE_LIMIT,
        n => n.min(MAX_RANGE_LIMIT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(offset: u64, length: u64) -> ByteRange {
        ByteRange::new(offset, length)
    }

    #[test]
    fn merger_joins_touching_and_overlapping_ranges_and_drops_empty_ones() {
        let mut m = Merger::new();
        for x in [r(0, 10), r(10, 5), r(12, 1), r(20, 0), r(30, 10), r(35, 10)] {
            m.push(x);
        }
        assert_eq!(m.complete(), 1);
        assert_eq!(m.end(), Some(45));
        assert_eq!(m.finish(), vec![r(0, 15), r(30, 15)]);
    }

    #[test]
    fn normalize_sorts_merges_and_clips() {
        let got = normalize(vec![r(50, 20), r(0, 10), r(5, 10), r(100, 1)], 3, 60);
        assert_eq!(got, vec![r(3, 12), r(50, 10)]);
        assert_eq!(normalize(vec![r(0, 10)], 10, 20), vec![]);
        assert_eq!(
            normalize(vec![r(u64::MAX - 1, 10)], 0, u64::MAX),
            vec![r(u64::MAX - 1, 1)]
        );
    }

    #[test]
    fn pages_concatenate_to_the_whole_list_without_repeat_or_gap() {
        let all: Vec<ByteRange> = (0..25).map(|i| r(i * 100, 50)).collect();
        let mut offset = 0;
        let mut got = Vec::new();
        let mut pages = 0;
        loop {
            let (p, next) = page(&all, offset, 7);
            assert!(p.len() <= 7);
            got.extend(p);
            pages += 1;
            match next {
                Some(n) => offset = n,
                None => break,
            }
        }
        assert_eq!(pages, 4);
        assert_eq!(got, all);
    }

    #[test]
    fn a_page_starting_inside_a_range_clips_it_and_skips_what_ended_before() {
        let all = vec![r(0, 100), r(200, 100), r(400, 100)];
        let (p, next) = page(&all, 250, 1);
        assert_eq!(p, vec![r(250, 50)]);
        assert_eq!(next, Some(300));
        let (p, next) = page(&all, 300, 1);
        assert_eq!(p, vec![r(400, 100)]);
        assert_eq!(next, None);
        let (p, next) = page(&all, 500, 1);
        assert_eq!((p, next), (vec![], None));
    }

    #[test]
    fn limits_default_and_cap() {
        assert_eq!(effective_limit(0), DEFAULT_RANGE_LIMIT);
        assert_eq!(effective_limit(3), 3);
        assert_eq!(effective_limit(u32::MAX), MAX_RANGE_LIMIT);
    }

    #[test]
    fn a_page_reads_numbers_or_strings_and_omits_the_end_marker() {
        let p: RangePage = serde_json::from_str(
            r#"{"volume_size":"1048576","ranges":[{"offset":0,"length":4096}],"next_offset":4096,"x":1}"#,
        )
        .unwrap();
        assert_eq!(p.volume_size, 1 << 20);
        assert_eq!(p.next_offset, Some(4096));
        let last = RangePage {
            volume_size: 10,
            ranges: vec![],
            next_offset: None,
        };
        assert_eq!(
            serde_json::to_string(&last).unwrap(),
            r#"{"volume_size":10,"ranges":[]}"#
        );
    }
}
