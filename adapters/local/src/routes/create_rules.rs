//! What every way of creating a volume checks the same way (B11, groups, file errors), and
//! the source a clone is made from: shared by plain creates (`volumes`) and clones
//! (`clones`), so that neither imports the other for it.

use crate::errors::{ApiError, ApiResult};
use crate::model::VolumeRec;
use crate::shared::Shared;
use crate::state::State as Db;
use crate::views;
use axum::Json;
use volbridge_proto::csp::Volume;

/// Where a clone's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The standard form: `base_snapshot_id`.
    Snapshot(String),
    /// The extension form (`base_volume_id`): the volume as it is now, in one reflink.
    Volume(String),
}

impl Source {
    /// The source an existing volume was made from, for B11's comparison.
    pub fn of(v: &VolumeRec) -> Option<Source> {
        if !v.base_snapshot_id.is_empty() {
            Some(Source::Snapshot(v.base_snapshot_id.clone()))
        } else if !v.parent_volume_id.is_empty() {
            Some(Source::Volume(v.parent_volume_id.clone()))
        } else {
            None
        }
    }
}

/// B11: an existing volume answers a create with the same size and source; else 409.
pub fn same_or_conflict(
    sh: &Shared,
    existing: &VolumeRec,
    size: Option<u64>,
    source: Option<&Source>,
) -> ApiResult<Json<Volume>> {
    if Source::of(existing).as_ref() != source {
        return Err(ApiError::conflict(format!(
            "volume '{}' already exists with a different source",
            existing.name
        )));
    }
    if let Some(size) = size.filter(|&s| s != 0 && s != existing.size) {
        return Err(ApiError::conflict(format!(
            "volume '{}' already exists with size {} (requested {size})",
            existing.name, existing.size
        )));
    }
    Ok(Json(views::volume(existing, &sh.dirs)))
}

/// The group a create asks to join, checked against the state.
pub fn check_group(s: &Db, group: Option<&str>) -> ApiResult<String> {
    match group {
        None => Ok(String::new()),
        Some(g) if s.volume_group(g).is_some() => Ok(g.to_owned()),
        Some(g) => Err(ApiError::bad_request(format!(
            "volume group '{g}' not found"
        ))),
    }
}

/// Maps a failure to create an image file.
pub fn create_error(name: &str, e: &std::io::Error) -> ApiError {
    if e.raw_os_error() == Some(rustix::io::Errno::FBIG.raw_os_error()) {
        ApiError::bad_request(format!(
            "size of volume '{name}' is too large for the filesystem"
        ))
    } else {
        ApiError::io(&format!("creating volume '{name}'"), e)
    }
}
