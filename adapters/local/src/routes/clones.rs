//! V2 clone form: a new volume filled from a snapshot, by reflink or a background copy.

use super::{check_size, snapshot_key};
use crate::errors::{ApiError, ApiResult};
use crate::files;
use crate::model::{Change, VolumeRec};
use crate::provision::Limit;
use crate::routes::snapshots::make_image;
use crate::routes::volumes::{check_group, create_error, same_or_conflict};
use crate::server::Shared;
use crate::views;
use axum::Json;
use std::sync::Arc;
use volbridge_proto::csp::{Config, Volume, BACKGROUND_COMPLETED, BACKGROUND_STATUS};
use volbridge_proto::units::human;

/// Status of a clone whose copy runs in the background (B39).
pub const IN_PROGRESS: &str = "InProgress";

pub struct CloneSpec {
    pub name: String,
    pub base: String,
    pub size: Option<u64>,
    pub description: Option<String>,
    pub config: Config,
    pub group: Option<String>,
}

pub async fn create(sh: &Arc<Shared>, spec: CloneSpec) -> ApiResult<Json<Volume>> {
    let (existing, seq) = sh.store.read(|s| s.volume_by_name(&spec.name).cloned());
    if let Some(v) = existing {
        sh.store.settle(seq).await?;
        return same_or_conflict(sh, &v, spec.size, &spec.base);
    }
    let _guard = sh.locks.lock_one(snapshot_key(&spec.base)).await;
    let snap = sh
        .store
        .read(|s| s.snapshot(&spec.base).cloned())
        .0
        .ok_or_else(|| ApiError::bad_request(format!("base snapshot '{}' not found", spec.base)))?;
    let size = match spec.size {
        None | Some(0) => snap.size,
        Some(n) => check_size(n)?,
    };
    if size < snap.size {
        return Err(ApiError::bad_request(format!(
            "clone size {size} is smaller than snapshot '{}' ({} bytes)",
            snap.name, snap.size
        )));
    }

    let limit = Limit::of(sh)?;
    let what = format!("clone '{}' ({})", spec.name, human(size));
    sh.store.read(|s| limit.check(s, &what, size)).0?;
    let id = crate::ids::new_id();
    let dst = sh.dirs.volume(&id);
    let src = sh.dirs.snapshot(&snap.id);
    let volumes_dir = sh.dirs.volumes.clone();
    let snap_ready = snap.ready;
    let dst2 = dst.clone();
    let made = tokio::task::spawn_blocking(move || {
        if snap_ready {
            make_image(&src, &dst2, &volumes_dir, size)
        } else {
            files::create_sparse(&dst2, size).map(|_| false)
        }
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
        base_snapshot_id: snap.id.clone(),
        parent_volume_id: snap.volume_id.clone(),
        volume_group_id: String::new(),
        config,
        hosts: Default::default(),
        creation_time: crate::ids::now(),
    };
    let written = sh.store.write(|s| {
        if let Some(v) = s.volume_by_name(&spec.name) {
            return Ok((Err(v.clone()), vec![]));
        }
        if s.snapshot(&snap.id).is_none() {
            return Err(ApiError::bad_request(format!(
                "base snapshot '{}' not found",
                snap.id
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
            same_or_conflict(sh, &existing, spec.size, &spec.base)
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
