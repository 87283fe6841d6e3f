//! V2 clone form: a new volume filled from a snapshot, by reflink or a background copy, or
//! (extension) from a volume in one reflink.

use super::{check_size, snapshot_key, volume_key};
use crate::errors::{ApiError, ApiResult};
use crate::files;
use crate::model::{Change, VolumeRec};
use crate::provision::Limit;
use crate::routes::create_rules::{check_group, create_error, same_or_conflict, Source};
use crate::routes::snapshots::make_image;
use crate::shared::Shared;
use crate::state;
use crate::views;
use axum::Json;
use std::sync::Arc;
use volbridge_proto::csp::{
    Config, Volume, BACKGROUND_COMPLETED, BACKGROUND_STATUS, EXTENSION_CLONE_FROM_VOLUME,
};
use volbridge_proto::units::human;

/// Status of a clone whose copy runs in the background (B39).
pub const IN_PROGRESS: &str = "InProgress";

pub struct CloneSpec {
    pub name: String,
    pub source: Source,
    pub size: Option<u64>,
    pub description: Option<String>,
    pub config: Config,
    pub group: Option<String>,
}

/// What the chosen source gives the new volume.
struct Resolved {
    image: std::path::PathBuf,
    /// False while a snapshot's own copy still runs: the clone then copies in the background.
    ready: bool,
    min_size: u64,
    base_snapshot_id: String,
    parent_volume_id: String,
    what: String,
}

fn resolve(sh: &Shared, source: &Source) -> ApiResult<Resolved> {
    match source {
        Source::Snapshot(id) => {
            let snap = sh
                .store
                .read(|s| s.snapshot(id).cloned())
                .0
                .ok_or_else(|| ApiError::bad_request(format!("base snapshot '{id}' not found")))?;
            Ok(Resolved {
                image: sh.dirs.snapshot(&snap.id),
                ready: snap.ready,
                min_size: snap.size,
                base_snapshot_id: snap.id,
                parent_volume_id: snap.volume_id,
                what: format!("snapshot '{}'", snap.name),
            })
        }
        Source::Volume(id) => {
            let v =
                sh.store.read(|s| s.volume(id).cloned()).0.ok_or_else(|| {
                    ApiError::bad_request(format!("base volume '{id}' not found"))
                })?;
            if !sh.pool.reflink() {
                return Err(ApiError::bad_request(format!(
                    "this CSP's pool cannot reflink, so it cannot clone volume '{}' in one step: \
                     clone from a snapshot of it (capacity extensions do not list {EXTENSION_CLONE_FROM_VOLUME})",
                    v.name
                )));
            }
            if state::unusable(&v) {
                return Err(ApiError::conflict(format!(
                    "volume '{}' is not ready: background operation status '{}'",
                    v.name,
                    state::background_status(&v).unwrap_or_default()
                )));
            }
            Ok(Resolved {
                image: sh.dirs.volume(&v.id),
                ready: true,
                min_size: v.size,
                base_snapshot_id: String::new(),
                parent_volume_id: v.id,
                what: format!("volume '{}'", v.name),
            })
        }
    }
}

pub async fn create(sh: &Arc<Shared>, spec: CloneSpec) -> ApiResult<Json<Volume>> {
    let (existing, seq) = sh.store.read(|s| s.volume_by_name(&spec.name).cloned());
    if let Some(v) = existing {
        sh.store.settle(seq).await?;
        return same_or_conflict(sh, &v, spec.size, Some(&spec.source));
    }
    // A snapshot's lock keeps it from going while read; a volume's keeps a snapshot, an
    // expand or a delete from running while its image is cloned.
    let _guard = sh
        .locks
        .lock_one(match &spec.source {
            Source::Snapshot(id) => snapshot_key(id),
            Source::Volume(id) => volume_key(id),
        })
        .await;
    let src = resolve(sh, &spec.source)?;
    let size = match spec.size {
        None | Some(0) => src.min_size,
        Some(n) => check_size(n)?,
    };
    if size < src.min_size {
        return Err(ApiError::bad_request(format!(
            "clone size {size} is smaller than {} ({} bytes)",
            src.what, src.min_size
        )));
    }

    let limit = Limit::of(sh)?;
    let what = format!("clone '{}' ({})", spec.name, human(size));
    sh.store.read(|s| limit.check(s, &what, size)).0?;
    let id = crate::ids::new_id();
    let dst = sh.dirs.volume(&id);
    let image = src.image.clone();
    let volumes_dir = sh.dirs.volumes.clone();
    let (ready, one_step) = (src.ready, matches!(spec.source, Source::Volume(_)));
    let dst2 = dst.clone();
    let made = tokio::task::spawn_blocking(move || {
        if !ready {
            return files::create_sparse(&dst2, size).map(|_| false);
        }
        let made = make_image(&image, &dst2, &volumes_dir, size)?;
        if one_step && !made {
            // A live volume cannot be copied in the background: its data moves meanwhile.
            let _ = std::fs::remove_file(&dst2);
            return Err(std::io::Error::other("the pool stopped reflinking"));
        }
        Ok(made)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    .map_err(|e| create_error(&spec.name, &e))?;

    let mut config = spec.config;
    config.insert(
        BACKGROUND_STATUS.into(),
        if made {
            BACKGROUND_COMPLETED
        } else {
            IN_PROGRESS
        }
        .into(),
    );
    let rec = VolumeRec {
        id: id.clone(),
        name: spec.name.clone(),
        size,
        description: spec.description,
        base_snapshot_id: src.base_snapshot_id.clone(),
        parent_volume_id: src.parent_volume_id.clone(),
        volume_group_id: String::new(),
        config,
        hosts: Default::default(),
        creation_time: crate::ids::now(),
    };
    let written = sh.store.write(|s| {
        if let Some(v) = s.volume_by_name(&spec.name) {
            return Ok((Err(v.clone()), vec![]));
        }
        let source_gone = match &spec.source {
            Source::Snapshot(id) => s.snapshot(id).is_none(),
            Source::Volume(id) => s.volume(id).is_none(),
        };
        if source_gone {
            return Err(ApiError::bad_request(format!(
                "base {} not found",
                src.what
            )));
        }
        limit.check(s, &what, size)?;
        let new = VolumeRec {
            volume_group_id: check_group(s, spec.group.as_deref())?,
            ..rec.clone()
        };
        let mut changes = vec![Change::PutVolume(new.clone())];
        // Complete at once (reflink): the temporary snapshot made for this clone goes now.
        let mut temporary = None;
        if made {
            temporary = s.temporary_source_of(&new);
            if let Some(sid) = &temporary {
                changes.push(Change::DeleteSnapshot(sid.clone()));
            }
        }
        Ok((Ok((new, temporary)), changes))
    });
    match written {
        Err(e) => {
            let _ = std::fs::remove_file(&dst);
            Err(e)
        }
        Ok((Err(existing), seq)) => {
            let _ = std::fs::remove_file(&dst);
            sh.store.settle(seq).await?;
            same_or_conflict(sh, &existing, spec.size, Some(&spec.source))
        }
        Ok((Ok((created, temporary)), seq)) => {
            if !made {
                crate::copies::spawn_clone_copy(sh.clone(), id);
            }
            sh.store.settle(seq).await?;
            if let Some(sid) = temporary {
                crate::copies::remove_snapshot_image(sh, &sid);
            }
            Ok(Json(views::volume(&created, &sh.dirs)))
        }
    }
}
