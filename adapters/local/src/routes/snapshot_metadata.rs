//! The snapshot-metadata extension (docs/snapshot-metadata.md):
//! `GET /snapshots/{id}/allocated` and `GET /snapshots/{id}/changes?base=`, one page of byte
//! ranges per request.

use crate::block_map::{self, Method, Page};
use crate::errors::{ApiError, ApiResult};
use crate::extract::{Id, Params};
use crate::model::SnapshotRec;
use crate::shared::Shared;
use axum::extract::State;
use axum::Json;
use std::fs::File;
use std::sync::Arc;
use volbridge_proto::ranges::RangePage;

/// A non-negative integer query parameter; absent or empty → `None`.
fn number(params: &Params, key: &str) -> Result<Option<u64>, ApiError> {
    match params.get(key).map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "query parameter '{key}' must be a non-negative integer, not '{v}'"
            ))
        }),
    }
}

/// `offset` (default 0, at most the snapshot's size) and `limit` (0 or absent: the
/// default; larger than the maximum: the maximum).
fn window(params: &Params, snap: &SnapshotRec) -> Result<(u64, u32), ApiError> {
    let offset = number(params, "offset")?.unwrap_or(0);
    if offset > snap.size {
        return Err(ApiError::bad_request(format!(
            "offset {offset} is past the end of snapshot '{}' ({} bytes); ask for an offset \
             from 0 to {}",
            snap.name, snap.size, snap.size
        )));
    }
    let limit = number(params, "limit")?.unwrap_or(0);
    Ok((offset, u32::try_from(limit).unwrap_or(u32::MAX)))
}

/// The snapshot's record.
async fn record(sh: &Shared, id: &str) -> ApiResult<SnapshotRec> {
    sh.store
        .query(|s| s.snapshot(id).cloned())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("snapshot '{id}' not found")))
}

/// Refuses a snapshot whose data a background copy is still writing.
fn ready(snap: &SnapshotRec) -> Result<(), ApiError> {
    if !snap.ready {
        return Err(ApiError::conflict(format!(
            "snapshot '{}' is still being copied; ask again once it is ready_to_use",
            snap.name
        )));
    }
    Ok(())
}

/// Opens a snapshot's image. A snapshot deleted since its record was read is gone; an
/// image opened before the delete stays readable until closed.
fn open(sh: &Shared, snap: &SnapshotRec) -> Result<File, ApiError> {
    File::open(sh.dirs.snapshot(&snap.id)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            ApiError::not_found(format!("snapshot '{}' not found", snap.id))
        }
        _ => ApiError::io(
            &format!("opening the image of snapshot '{}'", snap.name),
            &e,
        ),
    })
}

async fn compute(
    what: String,
    work: impl FnOnce() -> std::io::Result<Page> + Send + 'static,
) -> ApiResult<Page> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("{what}: {e}")))?
        .map_err(|e| ApiError::io(&what, &e))
}

fn answer(volume_size: u64, (ranges, next_offset): Page) -> Json<RangePage> {
    Json(RangePage {
        volume_size,
        ranges,
        next_offset,
    })
}

pub async fn allocated(
    State(sh): State<Arc<Shared>>,
    Id(id): Id,
    params: Params,
) -> ApiResult<Json<RangePage>> {
    let snap = record(&sh, &id).await?;
    let (offset, limit) = window(&params, &snap)?;
    ready(&snap)?;
    let f = open(&sh, &snap)?;
    let size = snap.size;
    let page = compute(
        format!("reading the allocated ranges of snapshot '{}'", snap.name),
        move || block_map::allocated(&f, size, offset, limit),
    )
    .await?;
    Ok(answer(size, page))
}

pub async fn changes(
    State(sh): State<Arc<Shared>>,
    Id(id): Id,
    params: Params,
) -> ApiResult<Json<RangePage>> {
    let base_id = params
        .get("base")
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "query parameter 'base' is required: the id of an earlier snapshot of the \
                 volume of snapshot '{id}'"
            ))
        })?
        .to_owned();
    // What is wrong whenever it is asked is said before what is wrong only for now.
    let target = record(&sh, &id).await?;
    let base = record(&sh, &base_id).await?;
    if base.volume_id != target.volume_id {
        return Err(ApiError::bad_request(format!(
            "snapshots '{}' (of volume '{}') and '{}' (of volume '{}') are not of one volume; \
             changes exist only between snapshots of the same volume",
            base.name, base.volume_name, target.name, target.volume_name
        )));
    }
    let (offset, limit) = window(&params, &target)?;
    ready(&base)?;
    ready(&target)?;
    let (fb, ft) = (open(&sh, &base)?, open(&sh, &target)?);
    // Reflinked snapshots share the extents of what did not change; copies share nothing
    // and must be read.
    let method = if sh.pool.reflink() {
        Method::Extents
    } else {
        Method::Bytes
    };
    let size = target.size;
    let page = compute(
        format!(
            "comparing snapshot '{}' with snapshot '{}'",
            target.name, base.name
        ),
        move || block_map::changed(&fb, &ft, size, offset, limit, method),
    )
    .await?;
    Ok(answer(size, page))
}
