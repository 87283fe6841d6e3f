//! V1–V5: list, create, get, edit/expand, delete.

use super::create_rules::{check_group, create_error, same_or_conflict, Source};
use super::{check_size, create_config, snapshot_key, volume_key};
use crate::errors::{ApiError, ApiResult};
use crate::extract::{Body, Id, Params};
use crate::files;
use crate::model::{config_bool, Change, VolumeRec};
use crate::provision::Limit;
use crate::shared::Shared;
use crate::state::{self, State as Db};
use crate::views;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;
use volbridge_proto::csp::{Config, Volume, BACKGROUND_STATUS, CLONE_SNAPSHOT_PREFIX};
use volbridge_proto::units::human;

pub fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("volume '{id}' not found"))
}

pub async fn list(State(sh): State<Arc<Shared>>, params: Params) -> ApiResult<Response> {
    if let Some(name) = params.get("name") {
        let rec = sh.store.query(|s| s.volume_by_name(name).cloned()).await?;
        let rec = rec.ok_or_else(|| ApiError::not_found(format!("no volume named '{name}'")))?;
        return Ok(Json(vec![views::volume(&rec, &sh.dirs)]).into_response());
    }
    // The shared records, not copies; each view is made (one stat) and written in turn.
    let recs = sh
        .store
        .query(|s| s.t.volumes.values().cloned().collect::<Vec<_>>())
        .await?;
    Ok(super::json_array(
        recs.len(),
        320,
        recs.iter().map(|v| views::volume(v, &sh.dirs)),
    ))
}

pub async fn get(State(sh): State<Arc<Shared>>, Id(id): Id) -> ApiResult<Json<Volume>> {
    let rec = sh.store.query(|s| s.volume(&id).cloned()).await?;
    let rec = rec.ok_or_else(|| not_found(&id))?;
    Ok(Json(views::volume(&rec, &sh.dirs)))
}

pub async fn create(
    State(sh): State<Arc<Shared>>,
    Body(req): Body<Volume>,
) -> ApiResult<Json<Volume>> {
    let name = crate::ids::check_name("volume name", req.name.as_deref())?;
    let base = req.base_snapshot_id.clone().filter(|b| !b.is_empty());
    let base_volume = req.base_volume_id.clone().filter(|b| !b.is_empty());
    match (req.clone, &base, &base_volume) {
        (_, Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "a clone has one source: set base_snapshot_id or base_volume_id, not both",
            ))
        }
        (Some(true), None, None) => {
            return Err(ApiError::bad_request(
                "clone is true but base_snapshot_id is empty",
            ))
        }
        (Some(false), Some(_), _) => {
            return Err(ApiError::bad_request(
                "base_snapshot_id is set but clone is false",
            ))
        }
        (Some(false), _, Some(_)) => {
            return Err(ApiError::bad_request(
                "base_volume_id is set but clone is false",
            ))
        }
        _ => {}
    }
    let config = create_config(req.config.clone(), &sh.exports.protocols())?;
    let group = req.group_id().map(str::to_owned);
    let source = match (base, base_volume) {
        (Some(snapshot), _) => Some(Source::Snapshot(snapshot)),
        (_, Some(volume)) => Some(Source::Volume(volume)),
        _ => None,
    };
    if let Some(source) = source {
        let spec = super::clones::CloneSpec {
            name,
            source,
            size: req.size,
            description: req.description,
            config,
            group,
        };
        return super::clones::create(&sh, spec).await;
    }
    let size = check_size(
        req.size
            .ok_or_else(|| ApiError::bad_request("volume size is required"))?,
    )?;

    let (existing, seq) = sh.store.read(|s| s.volume_by_name(&name).cloned());
    if let Some(v) = existing {
        sh.store.settle(seq).await?;
        return same_or_conflict(&sh, &v, Some(size), None);
    }

    let thick = config_bool(&config, "thick")
        .ok()
        .flatten()
        .unwrap_or(false);
    let limit = Limit::of(&sh)?;
    let what = format!("volume '{name}' ({})", human(size));
    sh.store.read(|s| limit.check(s, &what, size)).0?;
    let id = crate::ids::new_id();
    let path = sh.dirs.volume(&id);
    let file = files::create_sparse(&path, size).map_err(|e| create_error(&name, &e))?;
    if thick {
        let p = path.clone();
        let pool = sh.pool.clone();
        let allocated = tokio::task::spawn_blocking(move || {
            pool.ensure_free(size)?;
            files::allocate(&file, 0, size)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = allocated {
            let _ = std::fs::remove_file(&p);
            return Err(ApiError::io(&format!("allocating volume '{name}'"), &e));
        }
    } else {
        drop(file);
    }
    let rec = VolumeRec {
        id,
        name: name.clone(),
        size,
        description: req.description,
        base_snapshot_id: String::new(),
        parent_volume_id: String::new(),
        volume_group_id: String::new(),
        config,
        hosts: Default::default(),
        creation_time: crate::ids::now(),
    };
    let written = sh.store.write(|s| {
        if let Some(v) = s.volume_by_name(&name) {
            return Ok((Err(v.clone()), vec![]));
        }
        limit.check(s, &what, size)?;
        let new = VolumeRec {
            volume_group_id: check_group(s, group.as_deref())?,
            ..rec.clone()
        };
        Ok((Ok(new.clone()), vec![Change::PutVolume(new)]))
    });
    match written {
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
        Ok((Err(existing), seq)) => {
            // Lost a race with a concurrent create of the same name (B12).
            let _ = std::fs::remove_file(&path);
            sh.store.settle(seq).await?;
            same_or_conflict(&sh, &existing, Some(size), None)
        }
        Ok((Ok(created), seq)) => {
            sh.store.settle(seq).await?;
            Ok(Json(views::volume(&created, &sh.dirs)))
        }
    }
}

/// The validated content of a PUT body (B19–B21), applied to the current record later.
struct Edit {
    size: Option<u64>,
    description: Option<String>,
    /// `Some("")`: leave the group; `Some(g)`: join `g`.
    group: Option<String>,
    config: Option<Config>,
}

fn read_only<T: PartialEq + std::fmt::Debug>(
    key: &str,
    sent: Option<T>,
    current: T,
) -> ApiResult<()> {
    match sent {
        Some(v) if v != current => Err(ApiError::bad_request(format!(
            "'{key}' is read-only and cannot be changed"
        ))),
        _ => Ok(()),
    }
}

impl Edit {
    fn parse(cur: &VolumeRec, req: Volume) -> ApiResult<Edit> {
        read_only("name", req.name.as_deref(), cur.name.as_str())?;
        read_only("published", req.published, !cur.hosts.is_empty())?;
        read_only("clone", req.clone, cur.is_clone())?;
        read_only(
            "base_snapshot_id",
            req.base_snapshot_id.as_deref(),
            cur.base_snapshot_id.as_str(),
        )?;
        read_only(
            "parent_volume_id",
            req.parent_volume_id.as_deref(),
            cur.parent_volume_id.as_str(),
        )?;
        let base_volume = if cur.base_snapshot_id.is_empty() {
            cur.parent_volume_id.as_str()
        } else {
            ""
        };
        read_only("base_volume_id", req.base_volume_id.as_deref(), base_volume)?;
        let size = match req.size {
            None => None,
            Some(n) => {
                let n = check_size(n)?;
                if n < cur.size {
                    return Err(ApiError::bad_request(format!(
                        "volume '{}' cannot shrink from {} to {n} bytes",
                        cur.name, cur.size
                    )));
                }
                Some(n)
            }
        };
        let group = match req.volume_group_id {
            None => None,
            Some(None) => Some(String::new()),
            Some(Some(g)) if g.is_empty() => None,
            Some(Some(g)) => Some(g),
        };
        let config = match req.config {
            None => None,
            Some(patch) => Some(merge_config(cur, patch)?),
        };
        Ok(Edit {
            size,
            description: req.description,
            group,
            config,
        })
    }

    fn apply(&self, s: &Db, cur: &VolumeRec) -> ApiResult<VolumeRec> {
        let mut v = cur.clone();
        if let Some(n) = self.size {
            v.size = n;
        }
        if let Some(d) = &self.description {
            v.description = Some(d.clone());
        }
        if let Some(g) = &self.group {
            v.volume_group_id = check_group(s, Some(g.as_str()).filter(|g| !g.is_empty()))?;
        }
        if let Some(c) = &self.config {
            let status = v.config.get(BACKGROUND_STATUS).cloned();
            v.config = c.clone();
            // The background status moves on its own while the PUT waits; keep the live one.
            match status {
                Some(st) => v.config.insert(BACKGROUND_STATUS.into(), st),
                None => v.config.remove(BACKGROUND_STATUS),
            };
        }
        Ok(v)
    }
}

/// B20: merge key by key; `null` removes; immutable keys may only be re-sent unchanged.
fn merge_config(cur: &VolumeRec, patch: Config) -> ApiResult<Config> {
    let mut merged = cur.config.clone();
    for (k, v) in patch {
        if k == BACKGROUND_STATUS {
            continue;
        }
        if v.is_null() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    if let Some(v) = merged.get("access_protocol") {
        v.as_str()
            .ok_or_else(|| ApiError::bad_request("config 'access_protocol' must be a string"))?;
    }
    if crate::export::protocol_in(&merged) != crate::export::protocol_in(&cur.config) {
        return Err(immutable("access_protocol"));
    }
    let thick_now = config_bool(&cur.config, "thick")
        .ok()
        .flatten()
        .unwrap_or(false);
    let thick_new = config_bool(&merged, "thick").map_err(|_| immutable("thick"))?;
    if thick_new.unwrap_or(false) != thick_now {
        return Err(immutable("thick"));
    }
    for key in ["destroy_on_delete", "multi_initiator"] {
        config_bool(&merged, key).map_err(ApiError::bad_request)?;
    }
    Ok(merged)
}

fn immutable(key: &str) -> ApiError {
    ApiError::bad_request(format!("config '{key}' cannot be changed after creation"))
}

pub async fn edit(
    State(sh): State<Arc<Shared>>,
    Id(id): Id,
    Body(req): Body<Volume>,
) -> ApiResult<Json<Volume>> {
    if let Some(body_id) = req.id.as_deref().filter(|i| !i.is_empty()) {
        if body_id != id {
            return Err(ApiError::bad_request(format!(
                "id '{body_id}' in the body does not match the path id '{id}'"
            )));
        }
    }
    let _guard = sh.locks.lock_one(volume_key(&id)).await;
    let cur = sh
        .store
        .read(|s| s.volume(&id).cloned())
        .0
        .ok_or_else(|| not_found(&id))?;
    let edit = Edit::parse(&cur, req)?;

    let grow = edit.size.filter(|&n| n > cur.size);
    let limit = Limit::of(&sh)?;
    let what = format!(
        "expanding volume '{}' to {}",
        cur.name,
        human(grow.unwrap_or(cur.size))
    );
    let more = grow.map_or(0, |n| n - cur.size);
    sh.store.read(|s| limit.check(s, &what, more)).0?;
    let protocol = crate::export::protocol_of(&cur);
    if grow.is_some() && !cur.hosts.is_empty() && !crate::export::Exports::grows_online(&protocol) {
        return Err(ApiError::conflict(format!(
            "volume '{}' is published over {protocol} to {} host(s), and the kernel's iSCSI \
             target cannot resize a LUN in use: unpublish it, expand it, then publish it again",
            cur.name,
            cur.hosts.len()
        )));
    }
    if let Some(new_size) = grow {
        let path = sh.dirs.volume(&id);
        let thick = config_bool(&cur.config, "thick")
            .ok()
            .flatten()
            .unwrap_or(false);
        let old = cur.size;
        let pool = sh.pool.clone();
        let grown = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if thick {
                pool.ensure_free(new_size - old)?;
            }
            let f = files::open_rw(&path)?;
            f.set_len(new_size)?;
            if thick {
                if let Err(e) = files::allocate(&f, old, new_size - old) {
                    let _ = f.set_len(old);
                    return Err(e);
                }
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        grown.map_err(|e| ApiError::io(&format!("expanding volume '{}'", cur.name), &e))?;
    }

    let written = sh.store.write(|s| {
        let v = s.volume(&id).ok_or_else(|| not_found(&id))?;
        let new = edit.apply(s, v)?;
        limit.check(s, &what, new.size.saturating_sub(v.size))?;
        if new == *v {
            Ok((new, vec![]))
        } else {
            Ok((new.clone(), vec![Change::PutVolume(new)]))
        }
    });
    let (new, seq) = match written {
        Ok(w) => w,
        Err(e) => {
            if grow.is_some() {
                if let Ok(f) = files::open_rw(&sh.dirs.volume(&id)) {
                    let _ = f.set_len(cur.size);
                }
            }
            return Err(e);
        }
    };
    sh.store.settle(seq).await?;
    if grow.is_some() && !new.hosts.is_empty() {
        if let Err(e) = sh.exports.resized(&id) {
            tracing::warn!(volume = %new.name, error = %e, "hosts may not see the new size until the volume is published again");
        }
    }
    Ok(Json(views::volume(&new, &sh.dirs)))
}

pub async fn delete(
    State(sh): State<Arc<Shared>>,
    Id(id): Id,
    params: Params,
) -> ApiResult<StatusCode> {
    let force = params.flag("force")?.unwrap_or(false);
    let base = sh
        .store
        .read(|s| s.volume(&id).map(|v| v.base_snapshot_id.clone()))
        .0
        .ok_or_else(|| not_found(&id))?;
    let mut keys = vec![volume_key(&id)];
    if !base.is_empty() {
        keys.push(snapshot_key(&base));
    }
    let _guard = sh.locks.lock(&keys).await;
    let (retain, auto_snapshot) = sh
        .store
        .commit(|s| {
            let v = s.volume(&id).ok_or_else(|| not_found(&id))?;
            if !v.hosts.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "volume '{}' is still published to {} host(s)",
                    v.name,
                    v.hosts.len()
                )));
            }
            let snaps = s.snapshots_of(&id).count();
            if snaps > 0 {
                return Err(ApiError::conflict(format!(
                    "volume '{}' has {snaps} snapshot(s)",
                    v.name
                )));
            }
            let retain =
                !force && config_bool(&v.config, "destroy_on_delete").ok().flatten() == Some(false);
            let mut changes = vec![Change::DeleteVolume {
                id: id.clone(),
                retain,
            }];
            // A hidden source snapshot (rule 2) or a temporary clone snapshot (§8.5) that
            // nothing needs once this volume is gone goes with it.
            let auto = s
                .hidden_source_done(&v.base_snapshot_id, &v.id)
                .or_else(|| auto_removable_snapshot(s, v));
            if let Some(sid) = &auto {
                changes.push(Change::DeleteSnapshot(sid.clone()));
            }
            Ok(((retain, auto), changes))
        })
        .await?;

    let path = sh.dirs.volume(&id);
    let moved = if retain {
        std::fs::rename(&path, sh.dirs.retained(&id))
    } else {
        std::fs::remove_file(&path)
    };
    if let Err(e) = moved {
        // Recovery finishes the job at the next open.
        tracing::warn!(volume = %id, error = %e, "could not remove the image of a deleted volume");
    }
    if let Some(sid) = auto_snapshot {
        tracing::debug!(snapshot = %sid, "removed a source snapshot with its last clone");
        crate::copies::remove_snapshot_image(&sh, &sid);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// §8.5: a `snap-for-clone-` snapshot goes away with the last volume cloned from it.
fn auto_removable_snapshot(s: &Db, v: &VolumeRec) -> Option<String> {
    if v.base_snapshot_id.is_empty() {
        return None;
    }
    let snap = s.snapshot(&v.base_snapshot_id)?;
    let last_clone = s.clones_of(&snap.id).all(|c| c.id == v.id);
    let idle = snap.ready
        && !s
            .clones_of(&snap.id)
            .any(|c| c.id != v.id && state::copy_running(c));
    (snap.name.starts_with(CLONE_SNAPSHOT_PREFIX) && snap.group_id.is_empty() && last_clone && idle)
        .then(|| snap.id.clone())
}
