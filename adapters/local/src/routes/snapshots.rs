//! S1–S4: list, create, get, delete.

use super::{plain_config, snapshot_key, volume_key};
use crate::errors::{ApiError, ApiResult};
use crate::extract::{Body, Id, Params};
use crate::files;
use crate::model::{Change, SnapshotRec};
use crate::shared::Shared;
use crate::state::{self, State as Db};
use crate::views;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use std::sync::Arc;
use volbridge_proto::csp::Snapshot;

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("snapshot '{id}' not found"))
}

pub async fn list(State(sh): State<Arc<Shared>>, params: Params) -> ApiResult<Json<Vec<Snapshot>>> {
    let volume_id = params.get("volume_id").filter(|v| !v.is_empty());
    let name = params.get("name");
    let exists_only = params.get("mode") == Some("exists");
    let found = sh
        .store
        .query(|s| {
            // A filter that matches nothing lists nothing: an unknown volume_id is 200 []
            // (the HPE CSI driver fails ListSnapshots on a 404 here). Only a name is a
            // lookup, answered below.
            let keep =
                |snap: &&crate::model::SnapshotRec| volume_id.is_none_or(|v| snap.volume_id == v);
            let views =
                |it: &mut dyn Iterator<Item = &crate::model::SnapshotRec>| -> Vec<Snapshot> {
                    it.take(if exists_only { 1 } else { usize::MAX })
                        .map(|snap| views::snapshot(snap, s))
                        .collect()
                };
            match (name, volume_id) {
                (Some(n), _) => views(&mut s.snapshots_named(n).filter(keep)),
                (None, Some(v)) => views(&mut s.snapshots_of(v)),
                (None, None) => views(&mut s.visible_snapshots()),
            }
        })
        .await?;
    if let (Some(n), true) = (name, found.is_empty()) {
        return Err(ApiError::not_found(match volume_id {
            Some(v) => format!("no snapshot named '{n}' on volume '{v}'"),
            None => format!("no snapshot named '{n}'"),
        }));
    }
    Ok(Json(found))
}

pub async fn get(State(sh): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<Snapshot>> {
    sh.store
        .query(|s| s.snapshot(&id).map(|snap| views::snapshot(snap, s)))
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

/// B12 (embedded: names unique CSP-wide): the snapshot already named `name` on this
/// volume, a 409 if the name is taken on another volume, `None` if it is free.
pub fn existing_named(s: &Db, name: &str, volume_id: &str) -> ApiResult<Option<SnapshotRec>> {
    let mut any = None;
    for snap in s.snapshots_named(name) {
        if snap.volume_id == volume_id {
            return Ok(Some(snap.clone()));
        }
        any = Some(snap);
    }
    match any {
        Some(other) => Err(ApiError::conflict(format!(
            "snapshot name '{name}' is already used by volume '{}'",
            other.volume_name
        ))),
        None => Ok(None),
    }
}

/// Makes the image of a new snapshot of `src`: a reflink (returns true, data durable), or
/// an empty sparse file to be filled by a background copy (returns false).
pub fn make_image(
    src: &std::path::Path,
    dst: &std::path::Path,
    dir: &std::path::Path,
    size: u64,
) -> std::io::Result<bool> {
    let f = files::create_sparse(dst, 0)?;
    let result = (|| {
        if files::reflink(&f, &std::fs::File::open(src)?)? {
            f.set_len(size)?;
            f.sync_all()?;
            files::sync_dir(dir)?;
            return Ok(true);
        }
        f.set_len(size)?;
        Ok(false)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    result
}

pub async fn create(
    State(sh): State<Arc<Shared>>,
    Body(req): Body<Snapshot>,
) -> ApiResult<Json<Snapshot>> {
    let name = crate::ids::check_name("snapshot name", req.name.as_deref())?;
    let volume_id = req
        .volume_id
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("volume_id is required"))?;
    let _guard = sh.locks.lock_one(volume_key(&volume_id)).await;
    let (pre, seq) = sh.store.read(|s| -> ApiResult<Result<Snapshot, _>> {
        let v = s
            .volume(&volume_id)
            .ok_or_else(|| ApiError::bad_request(format!("volume '{volume_id}' not found")))?;
        if let Some(existing) = existing_named(s, &name, &volume_id)? {
            return Ok(Ok(views::snapshot(&existing, s)));
        }
        if state::unusable(v) {
            return Err(ApiError::conflict(format!(
                "volume '{}' is not ready: background operation status '{}'",
                v.name,
                state::background_status(v).unwrap_or_default()
            )));
        }
        Ok(Err(v.clone()))
    });
    let volume = match pre? {
        Ok(existing) => {
            sh.store.settle(seq).await?;
            return Ok(Json(existing));
        }
        Err(v) => v,
    };

    let id = crate::ids::new_id();
    let (src, dst, dir) = (
        sh.dirs.volume(&volume.id),
        sh.dirs.snapshot(&id),
        sh.dirs.snapshots.clone(),
    );
    let size = volume.size;
    let dst2 = dst.clone();
    let ready = tokio::task::spawn_blocking(move || make_image(&src, &dst2, &dir, size))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|e| ApiError::io(&format!("creating snapshot '{name}'"), &e))?;
    let rec = SnapshotRec {
        id: id.clone(),
        name: name.clone(),
        description: req.description,
        volume_id: volume.id.clone(),
        volume_name: volume.name.clone(),
        size,
        creation_time: crate::ids::now(),
        ready,
        config: plain_config(req.config),
        group_id: String::new(),
        hidden: false,
    };
    let written = sh.store.write(|s| {
        if s.volume(&volume_id).is_none() {
            return Err(ApiError::bad_request(format!(
                "volume '{volume_id}' not found"
            )));
        }
        if let Some(existing) = existing_named(s, &name, &volume_id)? {
            return Ok((Err(views::snapshot(&existing, s)), vec![]));
        }
        Ok((Ok(()), vec![Change::PutSnapshot(rec.clone())]))
    });
    match written {
        Err(e) => {
            let _ = std::fs::remove_file(&dst);
            Err(e)
        }
        Ok((Err(existing), seq)) => {
            let _ = std::fs::remove_file(&dst);
            sh.store.settle(seq).await?;
            Ok(Json(existing))
        }
        Ok((Ok(()), seq)) => {
            if !ready {
                crate::copies::spawn_snapshot_copy(sh.clone(), id.clone());
            }
            sh.store.settle(seq).await?;
            let view = sh
                .store
                .read(|s| s.snapshot(&id).map(|snap| views::snapshot(snap, s)))
                .0;
            // Deleted meanwhile (S4 right after S2): answer what was made.
            Ok(Json(
                view.unwrap_or_else(|| views::snapshot(&rec, &Db::default())),
            ))
        }
    }
}

/// S4 (docs/copy-semantics.md rule 2): never refused. A snapshot whose own copy runs is
/// removed and the copy stops; one that clones are being copied from is hidden until those
/// copies end (they keep their data source, B39a).
pub async fn delete(State(sh): State<Arc<Shared>>, Id(id): Id) -> ApiResult<StatusCode> {
    let _guard = sh.locks.lock_one(snapshot_key(&id)).await;
    let remove_now = sh
        .store
        .commit(|s| {
            s.snapshot(&id).ok_or_else(|| not_found(&id))?;
            let mut changes = Vec::new();
            let now = s.delete_snapshot_changes(&id, &mut changes);
            Ok((now, changes))
        })
        .await?;
    if remove_now {
        crate::copies::remove_snapshot_image(&sh, &id);
    }
    Ok(StatusCode::NO_CONTENT)
}
