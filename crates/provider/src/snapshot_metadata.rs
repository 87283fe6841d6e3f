//! The snapshot-metadata extension (docs/snapshot-metadata.md): whether a CSP serves it,
//! and one page of a snapshot's allocated ranges or of the ranges two snapshots differ in.

use http::Method;
use volbridge_proto::ranges::{normalize, RangePage, EXTENSION_SNAPSHOT_METADATA};

use super::client::{CspClient, Op};
use volbridge_base::error::{Error, Result};

impl CspClient {
    /// Whether the CSP names the extension in `GET /capacity` (`extensions`). A CSP without
    /// the capacity endpoint, or one that does not list it, is never asked for ranges.
    pub async fn offers_snapshot_metadata(&self) -> Result<bool> {
        self.lists_extension(EXTENSION_SNAPSHOT_METADATA).await
    }

    /// `GET /snapshots/{id}/allocated`: one page from `offset`.
    pub async fn snapshot_allocated(&self, id: &str, offset: u64, limit: u32) -> Result<RangePage> {
        self.range_page(&["snapshots", id, "allocated"], &[], offset, limit)
            .await
    }

    /// `GET /snapshots/{target}/changes?base=`: one page from `offset`.
    pub async fn snapshot_changes(
        &self,
        base: &str,
        target: &str,
        offset: u64,
        limit: u32,
    ) -> Result<RangePage> {
        self.range_page(
            &["snapshots", target, "changes"],
            &[("base", base)],
            offset,
            limit,
        )
        .await
    }

    /// One page, made safe to pass on whatever the CSP sent: ranges sorted, merged and
    /// clipped to `[offset, volume_size)`, and a `next_offset` that moves forward.
    async fn range_page(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        offset: u64,
        limit: u32,
    ) -> Result<RangePage> {
        let (offset_text, limit_text) = (offset.to_string(), limit.to_string());
        let mut query = query.to_vec();
        query.push(("offset", &offset_text));
        query.push(("limit", &limit_text));
        let reply = self.call(Method::GET, segments, &query, None).await?;
        let reply = self.check(reply, Op::Other)?;
        let mut page: RangePage = self.decode(&reply, "page of snapshot ranges")?;
        page.ranges = normalize(std::mem::take(&mut page.ranges), offset, page.volume_size);
        if let Some(next) = page.next_offset {
            if next <= offset || next > page.volume_size {
                return Err(Error::internal(format!(
                    "the CSP answered {} with next_offset {next} after offset {offset} \
                     (volume_size {}): it must lie after the offset and within the snapshot; \
                     the CSP's snapshot-metadata extension is broken",
                    segments.join("/"),
                    page.volume_size
                )));
            }
        }
        Ok(page)
    }
}
