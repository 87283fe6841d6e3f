//! Snapshot metadata (changed-block tracking): the allocated ranges of a snapshot and the
//! ranges in which two snapshots of one volume differ, walked page by page through the CSP
//! extension (docs/snapshot-metadata.md). Everything a request can get wrong is checked
//! before the first page, so a caller streaming the pages fails before it has sent any.

use crate::model::Snapshot;
use crate::names::validate_name;
use crate::Engine;
use std::collections::VecDeque;
use volbridge_base::error::{Error, ErrorKind, Object, Result};
use volbridge_proto::ranges::{effective_limit, RangePage, EXTENSION_SNAPSHOT_METADATA};
use volbridge_provider::CspClient;

pub use volbridge_proto::ranges::ByteRange;

/// How a request names a snapshot.
#[derive(Debug, Clone, Copy)]
pub enum SnapshotKey<'a> {
    /// By its name on the backend (what CreateSnapshot was given).
    Name(&'a str),
    /// By the CSP's id (members of a snapshot group, which share the group's name).
    Id(&'a str),
}

/// What a walk reports.
#[derive(Debug, Clone)]
enum Query {
    Allocated { snapshot: String },
    Changes { base: String, target: String },
}

/// What a walk has read from the CSP and not yet handed out, and where it stands.
#[derive(Debug)]
struct Cursor {
    volume_size: u64,
    /// Where the next CSP page starts; `None` once the last page was read.
    next: Option<u64>,
    /// The end of the last range accepted: nothing before it is accepted again, so that a
    /// CSP repeating itself across pages cannot make ranges overlap.
    accepted_until: u64,
    pending: VecDeque<ByteRange>,
}

impl Cursor {
    fn new(volume_size: u64, offset: u64) -> Cursor {
        Cursor {
            volume_size,
            next: Some(offset),
            accepted_until: offset,
            pending: VecDeque::new(),
        }
    }

    /// Takes in one page of the CSP (already sorted and merged by the client).
    fn absorb(&mut self, page: RangePage) {
        self.next = page.next_offset;
        for r in page.ranges {
            let start = r.offset.max(self.accepted_until);
            let end = r.end().min(self.volume_size);
            if start < end {
                self.pending.push_back(ByteRange::new(start, end - start));
                self.accepted_until = end;
            }
        }
    }

    /// At most `limit` ranges (0: the default) of what was read, if any: a CSP that
    /// ignores `limit` must not make a message longer than the CO allowed.
    fn take(&mut self, limit: u32) -> Option<Vec<ByteRange>> {
        if self.pending.is_empty() {
            return None;
        }
        let n = (effective_limit(limit) as usize).min(self.pending.len());
        Some(self.pending.drain(..n).collect())
    }
}

/// A walk over ranges, from a start offset to the end of the snapshot, one page per call.
pub struct RangeWalk {
    client: CspClient,
    query: Query,
    cursor: Cursor,
}

impl RangeWalk {
    fn new(client: CspClient, query: Query, volume_size: u64, offset: u64) -> RangeWalk {
        RangeWalk {
            client,
            query,
            cursor: Cursor::new(volume_size, offset),
        }
    }

    /// The size of the snapshot (of the target snapshot for changes).
    pub fn volume_size(&self) -> u64 {
        self.cursor.volume_size
    }

    /// The next ranges, at most `limit` (0: the default), sorted, not overlapping and
    /// after everything handed out before; `None` once the walk is complete. Pages that
    /// hold nothing are skipped, so every `Some` holds at least one range.
    pub async fn next_page(&mut self, limit: u32) -> Result<Option<Vec<ByteRange>>> {
        loop {
            if let Some(ranges) = self.cursor.take(limit) {
                return Ok(Some(ranges));
            }
            let Some(offset) = self.cursor.next else {
                return Ok(None);
            };
            let page = match &self.query {
                Query::Allocated { snapshot } => {
                    self.client
                        .snapshot_allocated(snapshot, offset, limit)
                        .await?
                }
                Query::Changes { base, target } => {
                    self.client
                        .snapshot_changes(base, target, offset, limit)
                        .await?
                }
            };
            self.cursor.absorb(page);
        }
    }
}

impl Engine {
    /// Whether a backend serves snapshot metadata (its CSP lists the extension).
    pub async fn snapshot_metadata_offered(&self, backend: Option<&str>) -> Result<bool> {
        let backend = self.backends.resolve(backend)?;
        backend.client.offers_snapshot_metadata().await
    }

    /// The allocated ranges of a snapshot from `offset`.
    pub async fn allocated_ranges(
        &self,
        snapshot: SnapshotKey<'_>,
        offset: i64,
        backend: Option<&str>,
    ) -> Result<RangeWalk> {
        let (client, backend) = self.metadata_backend(backend).await?;
        let snap = find(&client, &backend, snapshot).await?;
        let offset = check_offset(offset, &snap)?;
        ready(&snap)?;
        Ok(RangeWalk::new(
            client,
            Query::Allocated { snapshot: snap.id },
            snap.size_bytes,
            offset,
        ))
    }

    /// The ranges from `offset` where snapshot `target` differs from `base`, an earlier
    /// snapshot of the same volume.
    pub async fn changed_ranges(
        &self,
        base: SnapshotKey<'_>,
        target: SnapshotKey<'_>,
        offset: i64,
        backend: Option<&str>,
    ) -> Result<RangeWalk> {
        let (client, backend) = self.metadata_backend(backend).await?;
        let base = find(&client, &backend, base).await?;
        let target = find(&client, &backend, target).await?;
        if base.volume_id != target.volume_id {
            let volume = |s: &Snapshot| s.volume_name.clone().unwrap_or(s.volume_id.clone());
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "snapshots '{}' (of volume '{}') and '{}' (of volume '{}') are not of one \
                     volume: changed blocks exist only between two snapshots of the same \
                     volume; name a base snapshot of volume '{}'",
                    base.name,
                    volume(&base),
                    target.name,
                    volume(&target),
                    volume(&target)
                ),
            ));
        }
        let offset = check_offset(offset, &target)?;
        // What is wrong whatever the timing (above) is said before what is only for now.
        ready(&base)?;
        ready(&target)?;
        Ok(RangeWalk::new(
            client,
            Query::Changes {
                base: base.id,
                target: target.id,
            },
            target.size_bytes,
            offset,
        ))
    }

    /// The backend's client, if its CSP serves the extension.
    async fn metadata_backend(&self, backend: Option<&str>) -> Result<(CspClient, String)> {
        let backend = self.backends.resolve(backend)?;
        if !backend.client.offers_snapshot_metadata().await? {
            return Err(Error::precondition(format!(
                "backend '{}' does not track changed blocks: its CSP does not list the \
                 '{EXTENSION_SNAPSHOT_METADATA}' extension in GET /capacity \
                 (docs/snapshot-metadata.md); back up whole snapshots from it instead",
                backend.name
            )));
        }
        Ok((backend.client, backend.name))
    }
}

async fn find(client: &CspClient, backend: &str, key: SnapshotKey<'_>) -> Result<Snapshot> {
    let found = match key {
        SnapshotKey::Name(name) => {
            validate_name("snapshot", name).map_err(|_| {
                Error::not_found(format!("snapshot '{name}' does not exist"))
                    .about(Object::Snapshot(name.to_string()))
            })?;
            client.find_snapshot(name, None).await?
        }
        SnapshotKey::Id(id) => match id.is_empty() {
            true => None,
            false => client.get_snapshot_opt(id).await?,
        },
    };
    let shown = match key {
        SnapshotKey::Name(n) | SnapshotKey::Id(n) => n,
    };
    found
        .map(|s| Snapshot::from_csp(backend, &s))
        .ok_or_else(|| {
            Error::not_found(format!(
                "snapshot '{shown}' does not exist on backend '{backend}'"
            ))
        })
}

/// A snapshot a background copy is still filling has no final ranges yet.
fn ready(snap: &Snapshot) -> Result<()> {
    if !snap.ready_to_use {
        return Err(Error::unavailable(format!(
            "snapshot '{}' is still being copied{}; ask again once it is ready to use",
            snap.name,
            volbridge_provider::progress_text(snap.copy_progress.map(|(d, t)| {
                volbridge_proto::csp::CopyProgress {
                    bytes_done: d,
                    bytes_total: t,
                }
            }))
        )));
    }
    Ok(())
}

/// An offset within the snapshot: from 0 to its size (at the size there is nothing left).
fn check_offset(offset: i64, snap: &Snapshot) -> Result<u64> {
    match u64::try_from(offset) {
        Ok(o) if o <= snap.size_bytes => Ok(o),
        _ => Err(Error::new(
            ErrorKind::OutOfRange,
            format!(
                "starting offset {offset} is outside snapshot '{}' of {} bytes; start from 0, \
                 or from the end of the last range received",
                snap.name, snap.size_bytes
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(size: u64) -> Snapshot {
        Snapshot {
            name: "nightly".into(),
            id: "a".into(),
            backend: "local".into(),
            volume_id: "v".into(),
            volume_name: Some("db".into()),
            size_bytes: size,
            creation_time: 0,
            ready_to_use: true,
            in_use: false,
            copy_progress: None,
        }
    }

    fn page(ranges: &[(u64, u64)], next: Option<u64>) -> RangePage {
        RangePage {
            volume_size: 1000,
            ranges: ranges.iter().map(|&(o, l)| ByteRange::new(o, l)).collect(),
            next_offset: next,
        }
    }

    #[test]
    fn a_page_longer_than_the_limit_is_handed_out_in_pieces() {
        let mut c = Cursor::new(1000, 0);
        assert_eq!(c.take(2), None);
        c.absorb(page(
            &[(0, 10), (20, 10), (40, 10), (60, 10), (80, 10)],
            Some(90),
        ));
        let sizes: Vec<usize> = std::iter::from_fn(|| c.take(2)).map(|p| p.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        assert_eq!(c.next, Some(90));
    }

    #[test]
    fn what_a_csp_repeats_or_sends_past_the_end_is_dropped() {
        let mut c = Cursor::new(1000, 100);
        c.absorb(page(&[(50, 100), (300, 50)], Some(320)));
        c.absorb(page(&[(300, 80), (990, 50)], None));
        let got: Vec<ByteRange> = std::iter::from_fn(|| c.take(0)).flatten().collect();
        assert_eq!(
            got,
            vec![
                ByteRange::new(100, 50),
                ByteRange::new(300, 50),
                ByteRange::new(350, 30),
                ByteRange::new(990, 10)
            ]
        );
        assert_eq!(c.next, None);
    }

    #[test]
    fn offsets_from_zero_to_the_size_are_valid_and_others_out_of_range() {
        let s = snap(1 << 20);
        assert_eq!(check_offset(0, &s).unwrap(), 0);
        assert_eq!(check_offset(1 << 20, &s).unwrap(), 1 << 20);
        for bad in [-1, (1 << 20) + 1, i64::MIN] {
            let e = check_offset(bad, &s).unwrap_err();
            assert_eq!(e.kind, ErrorKind::OutOfRange);
            assert!(
                e.message.contains("snapshot 'nightly' of 1048576 bytes"),
                "{e}"
            );
        }
    }
}
