//! G1–G4 volume groups and P1–P4 snapshot groups (§3, §4.8).

use super::{plain_config, snapshot_key, volume_key};
use crate::errors::{ApiError, ApiResult};
use crate::extract::{Body, Id, Params};
use crate::model::{Change, SnapshotGroupRec, SnapshotRec, VolumeGroupRec};
use crate::routes::snapshots::{existing_named, make_image};
use crate::shared::Shared;
use crate::state;
use crate::views;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use std::collections::BTreeSet;
use std::sync::Arc;
use volbridge_proto::csp::{SnapshotGroup, VolumeGroup};

fn vg_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("volume group '{id}' not found"))
}

fn sg_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("snapshot group '{id}' not found"))
}

pub async fn list_volume_groups(
    State(sh): State<Arc<Shared>>,
    params: Params,
) -> ApiResult<Json<Vec<VolumeGroup>>> {
    let name = params.get("name");
    let groups = sh
        .store
        .query(|s| match name {
            Some(n) => s
                .volume_group_by_name(n)
                .map(|g| views::volume_group(g, s))
                .into_iter()
                .collect::<Vec<_>>(),
            None => {
                s.t.volume_groups
                    .values()
                    .map(|g| views::volume_group(g, s))
                    .collect()
            }
        })
        .await?;
    if let (Some(n), true) = (name, groups.is_empty()) {
        return Err(ApiError::not_found(format!("no volume group named '{n}'")));
    }
    Ok(Json(groups))
}

pub async fn create_volume_group(
    State(sh): State<Arc<Shared>>,
    Body(req): Body<VolumeGroup>,
) -> ApiResult<Json<VolumeGroup>> {
    let name = crate::ids::check_name("volume group name", req.name.as_deref())?;
    let rec = VolumeGroupRec {
        id: crate::ids::new_id(),
        name: name.clone(),
        description: req.description,
        creation_time: crate::ids::now(),
        config: plain_config(req.config),
    };
    let view = sh
        .store
        .commit(|s| {
            if let Some(g) = s.volume_group_by_name(&name) {
                return Ok((views::volume_group(g, s), vec![]));
            }
            let mut view = views::volume_group(&rec, s);
            view.volumes = Some(Vec::new());
            Ok((view, vec![Change::PutVolumeGroup(rec.clone())]))
        })
        .await?;
    Ok(Json(view))
}

pub async fn get_volume_group(
    State(sh): State<Arc<Shared>>,
    Id(id): Id,
) -> ApiResult<Json<VolumeGroup>> {
    sh.store
        .query(|s| s.volume_group(&id).map(|g| views::volume_group(g, s)))
        .await?
        .map(Json)
        .ok_or_else(|| vg_not_found(&id))
}

pub async fn delete_volume_group(
    State(sh): State<Arc<Shared>>,
    Id(id): Id,
) -> ApiResult<StatusCode> {
    sh.store
        .commit(|s| {
            let g = s.volume_group(&id).ok_or_else(|| vg_not_found(&id))?;
            let members = s.members_of(&id).count();
            if members > 0 {
                return Err(ApiError::conflict(format!(
                    "volume group '{}' has {members} member volume(s)",
                    g.name
                )));
            }
            let sgs = s.snapshot_groups_of(&id).count();
            if sgs > 0 {
                return Err(ApiError::conflict(format!(
                    "volume group '{}' has {sgs} snapshot group(s)",
                    g.name
                )));
            }
            Ok(((), vec![Change::DeleteVolumeGroup(id.clone())]))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_snapshot_groups(
    State(sh): State<Arc<Shared>>,
    params: Params,
) -> ApiResult<Json<Vec<SnapshotGroup>>> {
    let vg = params
        .get("volume_group_id")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("query parameter 'volume_group_id' is required"))?;
    // A filter that matches nothing lists nothing: an unknown group is 200 [].
    let groups = sh
        .store
        .query(|s| {
            s.snapshot_groups_of(vg)
                .map(|g| views::snapshot_group(g, s))
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(groups))
}

pub async fn get_snapshot_group(
    State(sh): State<Arc<Shared>>,
    Id(id): Id,
) -> ApiResult<Json<SnapshotGroup>> {
    sh.store
        .query(|s| s.snapshot_group(&id).map(|g| views::snapshot_group(g, s)))
        .await?
        .map(Json)
        .ok_or_else(|| sg_not_found(&id))
}

/// The existing group for (name, volume group), a 409 if the name belongs to another
/// volume group, `None` if free.
fn existing_group(s: &state::State, name: &str, vg: &str) -> ApiResult<Option<SnapshotGroup>> {
    match s.snapshot_group_by_name(name) {
        Some(g) if g.volume_group_id == vg => Ok(Some(views::snapshot_group(g, s))),
        Some(_) => Err(ApiError::conflict(format!(
            "snapshot group name '{name}' is already used by another volume group"
        ))),
        None => Ok(None),
    }
}

/// Checks that every member can be snapshotted under `name`; returns the member ids.
fn check_members(s: &state::State, name: &str, vg: &str) -> ApiResult<BTreeSet<String>> {
    let g = s
        .volume_group(vg)
        .ok_or_else(|| ApiError::bad_request(format!("volume group '{vg}' not found")))?;
    let mut ids = BTreeSet::new();
    for v in s.members_of(vg) {
        if state::unusable(v) {
            return Err(ApiError::conflict(format!(
                "volume '{}' is not ready: background operation status '{}'",
                v.name,
                state::background_status(v).unwrap_or_default()
            )));
        }
        if existing_named(s, name, &v.id)?.is_some() {
            return Err(ApiError::conflict(format!(
                "volume '{}' already has a snapshot named '{name}'",
                v.name
            )));
        }
        ids.insert(v.id.clone());
    }
    if ids.is_empty() {
        return Err(ApiError::bad_request(format!(
            "volume group '{}' has no member volumes",
            g.name
        )));
    }
    Ok(ids)
}

pub async fn create_snapshot_group(
    State(sh): State<Arc<Shared>>,
    Body(req): Body<SnapshotGroup>,
) -> ApiResult<Json<SnapshotGroup>> {
    let name = crate::ids::check_name("snapshot group name", req.name.as_deref())?;
    let vg = req
        .volume_group_id
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("volume_group_id is required"))?;

    let (planned, seq) = sh.store.read(|s| -> ApiResult<_> {
        if s.volume_group(&vg).is_none() {
            return Err(ApiError::bad_request(format!(
                "volume group '{vg}' not found"
            )));
        }
        if let Some(g) = existing_group(s, &name, &vg)? {
            return Ok(Err(g));
        }
        Ok(Ok(check_members(s, &name, &vg)?))
    });
    let members = match planned? {
        Err(existing) => {
            sh.store.settle(seq).await?;
            return Ok(Json(existing));
        }
        Ok(m) => m,
    };
    let keys: Vec<String> = members.iter().map(|id| volume_key(id)).collect();
    let _guard = sh.locks.lock(&keys).await;
    let sizes = sh
        .store
        .read(|s| -> Option<Vec<(String, String, u64)>> {
            members
                .iter()
                .map(|id| s.volume(id).map(|v| (v.id.clone(), v.name.clone(), v.size)))
                .collect()
        })
        .0
        .ok_or_else(|| ApiError::conflict("a member volume was deleted meanwhile; retry"))?;

    let group_id = crate::ids::new_id();
    let now = crate::ids::now();
    let plan: Vec<(String, String, String, u64)> = sizes
        .into_iter()
        .map(|(vid, vname, size)| (crate::ids::new_id(), vid, vname, size))
        .collect();
    let dirs_plan: Vec<_> = plan
        .iter()
        .map(|(sid, vid, _, size)| (sh.dirs.volume(vid), sh.dirs.snapshot(sid), *size))
        .collect();
    let snap_dir = sh.dirs.snapshots.clone();
    // Reflink every member back to back, so they share one point in time.
    let made = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<bool>> {
        let mut done = Vec::new();
        for (src, dst, size) in &dirs_plan {
            match make_image(src, dst, &snap_dir, *size) {
                Ok(r) => done.push(r),
                Err(e) => {
                    for (_, d, _) in dirs_plan.iter().take(done.len()) {
                        let _ = std::fs::remove_file(d);
                    }
                    return Err(e);
                }
            }
        }
        Ok(done)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    .map_err(|e| ApiError::io(&format!("creating snapshot group '{name}'"), &e))?;

    let snaps: Vec<SnapshotRec> = plan
        .iter()
        .zip(&made)
        .map(|((sid, vid, vname, size), ready)| SnapshotRec {
            id: sid.clone(),
            name: name.clone(),
            description: None,
            volume_id: vid.clone(),
            volume_name: vname.clone(),
            size: *size,
            creation_time: now,
            ready: *ready,
            config: Default::default(),
            group_id: group_id.clone(),
            hidden: false,
        })
        .collect();
    let rec = SnapshotGroupRec {
        id: group_id.clone(),
        name: name.clone(),
        volume_group_id: vg.clone(),
        creation_time: now,
        config: plain_config(req.config),
        snapshot_ids: snaps.iter().map(|s| s.id.clone()).collect(),
    };
    let remove_files = || {
        for s in &snaps {
            let _ = std::fs::remove_file(sh.dirs.snapshot(&s.id));
        }
    };
    let written = sh.store.write(|s| {
        if let Some(g) = existing_group(s, &name, &vg)? {
            return Ok((Err(g), vec![]));
        }
        if check_members(s, &name, &vg)? != members {
            return Err(ApiError::conflict(format!(
                "the members of volume group '{vg}' changed meanwhile; retry"
            )));
        }
        let mut changes: Vec<Change> = snaps.iter().cloned().map(Change::PutSnapshot).collect();
        changes.push(Change::PutSnapshotGroup(rec.clone()));
        Ok((Ok(()), changes))
    });
    let seq = match written {
        Err(e) => {
            remove_files();
            return Err(e);
        }
        Ok((Err(existing), seq)) => {
            remove_files();
            sh.store.settle(seq).await?;
            return Ok(Json(existing));
        }
        Ok((Ok(()), seq)) => seq,
    };
    for s in snaps.iter().filter(|s| !s.ready) {
        crate::copies::spawn_snapshot_copy(sh.clone(), s.id.clone());
    }
    sh.store.settle(seq).await?;
    let view = sh
        .store
        .read(|s| {
            s.snapshot_group(&group_id)
                .map(|g| views::snapshot_group(g, s))
        })
        .0
        .ok_or_else(|| sg_not_found(&group_id))?;
    Ok(Json(view))
}

pub async fn delete_snapshot_group(
    State(sh): State<Arc<Shared>>,
    Id(id): Id,
) -> ApiResult<StatusCode> {
    let members = sh
        .store
        .read(|s| s.snapshot_group(&id).map(|g| g.snapshot_ids.clone()))
        .0
        .ok_or_else(|| sg_not_found(&id))?;
    let keys: Vec<String> = members.iter().map(|m| snapshot_key(m)).collect();
    let _guard = sh.locks.lock(&keys).await;
    let removed = sh
        .store
        .commit(|s| {
            let g = s.snapshot_group(&id).ok_or_else(|| sg_not_found(&id))?;
            let mut changes = Vec::new();
            let mut removed = Vec::new();
            for sid in &g.snapshot_ids {
                if s.snapshot(sid).is_some() {
                    // Members clones still copy from stay hidden until those copies end.
                    let mut member = Vec::new();
                    if s.delete_snapshot_changes(sid, &mut member) {
                        removed.push(sid.clone());
                    }
                    // The group goes as a whole: its own updates are dropped.
                    changes.extend(
                        member
                            .into_iter()
                            .filter(|c| !matches!(c, Change::PutSnapshotGroup(_))),
                    );
                }
            }
            changes.push(Change::DeleteSnapshotGroup(id.clone()));
            Ok((removed, changes))
        })
        .await?;
    for sid in removed {
        crate::copies::remove_snapshot_image(&sh, &sid);
    }
    Ok(StatusCode::NO_CONTENT)
}
