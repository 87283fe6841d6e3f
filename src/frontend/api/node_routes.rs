//! Admin API handlers for this node: mount, unmount, attach, detach, stats, the node's
//! volumes, and the reconciler.

use super::error::ApiResult;
use super::extract::{ApiPath, ApiQuery};
use super::json::ApiJson;
use super::secrets::{backend_of, WithSecrets};
use super::AdminState;
use crate::engine::{MountVolume, Mounted, Wait};
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use volbridge_proto::admin::{
    AttachRequest, MountInfo, MountRequest, NodeInfo, NodeVolumeInfo, PendingRelease,
    ReconcileInfo, UnmountInfo, UnmountRequest, VolumeStatsInfo,
};

fn mount_info(m: Mounted) -> MountInfo {
    MountInfo {
        volume: m.volume,
        backend: m.backend,
        path: m.target.display().to_string(),
        device: m.device.display().to_string(),
        fs_type: m.fs_type,
        formatted: m.formatted,
        read_only: m.read_only,
    }
}

pub async fn mount(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath,
    ApiJson(body): ApiJson<WithSecrets<MountRequest>>,
) -> ApiResult<Json<MountInfo>> {
    let req = body.request;
    check_mount_options(&req.mount_options)?;
    let backend = backend_of(&state.engine, req.backend, &body.secrets)?;
    let m = state
        .engine
        .mount_volume(
            MountVolume {
                name,
                backend,
                target: req.path,
                read_only: req.read_only,
                block: req.block,
                fs_type: req.fs_type,
                mount_options: req.mount_options,
            },
            Wait::Bounded,
        )
        .await?;
    Ok(Json(mount_info(m)))
}

/// Mount options are refused up front, as Docker and FlexVolume refuse them
/// (`volbridge_proto::options`), instead of failing in mount(2) after the volume was
/// attached: `ro`/`rw`, `bind`/`rbind`, `remount`, and anything with a space or a control
/// character. Entries may hold comma-separated lists.
fn check_mount_options(list: &[String]) -> crate::Result<()> {
    for o in list
        .iter()
        .flat_map(|o| o.split(','))
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        let shown = volbridge_proto::names::shown(o);
        let fix = match volbridge_proto::options::refused_mount_option(o).as_deref() {
            Some("ro" | "rw") => {
                "a mount is read-write unless asked for read-only: use --read-only (read_only in the API)"
            }
            Some("bind" | "rbind") => {
                "volbridge mounts the volume and binds it onto the path itself: give only filesystem options such as noatime or discard"
            }
            Some(_) => "to change the options of a mount, unmount it and mount it again with the new ones",
            None if o.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                "give one option per --mount-option, or a comma-separated list such as noatime,discard"
            }
            None => continue,
        };
        return Err(crate::Error {
            field: Some("mount_options".to_owned()),
            ..crate::Error::new(
                crate::ErrorKind::InvalidArgument,
                format!("mount option \"{shown}\" is not allowed; {fix}"),
            )
        });
    }
    Ok(())
}

pub async fn unmount(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath,
    ApiJson(req): ApiJson<UnmountRequest>,
) -> ApiResult<Json<UnmountInfo>> {
    let unmounted = state
        .engine
        .unmount_volume(&name, req.backend.as_deref(), &req.path, Wait::Bounded)
        .await?;
    Ok(Json(UnmountInfo { unmounted }))
}

pub async fn attach(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath,
    ApiJson(req): ApiJson<AttachRequest>,
) -> ApiResult<Json<MountInfo>> {
    let m = state
        .engine
        .attach_device(&name, req.backend.as_deref(), req.read_only, Wait::Bounded)
        .await?;
    Ok(Json(mount_info(m)))
}

pub async fn detach(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath,
    ApiJson(req): ApiJson<AttachRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    state
        .engine
        .detach_device(&name, req.backend.as_deref(), Wait::Bounded)
        .await?;
    Ok(Json(
        serde_json::json!({ "volume": name, "detached": true }),
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct StatsQuery {
    pub backend: Option<String>,
    pub path: Option<String>,
}

pub async fn stats(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<VolumeStatsInfo>> {
    let engine = &state.engine;
    let backend = engine
        .backends()
        .resolve(q.backend.as_deref())?
        .name
        .clone();
    let stage = engine.stage_of(&backend, &name)?.ok_or_else(|| {
        crate::Error::not_found(format!("volume '{name}' is not attached to this node"))
    })?;
    let path = match q.path {
        Some(p) => p,
        None => engine
            .publishes()?
            .into_iter()
            .find(|p| p.volume_key == stage.volume_key)
            .map(|p| p.target)
            .unwrap_or(stage.staging_path)
            .display()
            .to_string(),
    };
    let s = engine.node_stats(&stage.volume_key, &path).await?;
    let u = s.usage;
    Ok(Json(VolumeStatsInfo {
        volume: name,
        path,
        healthy: s.healthy,
        message: s.message,
        total_bytes: u.map(|u| u.total_bytes).or(s.device_bytes),
        used_bytes: u.map(|u| u.used_bytes),
        available_bytes: u.map(|u| u.available_bytes),
        total_inodes: u.map(|u| u.total_inodes),
        used_inodes: u.map(|u| u.used_inodes),
        free_inodes: u.map(|u| u.free_inodes),
    }))
}

pub async fn node(State(state): State<AdminState>) -> ApiResult<Json<NodeInfo>> {
    let engine = &state.engine;
    let publishes = engine.publishes()?;
    let phase = |p: crate::engine::Phase| {
        serde_json::to_value(p)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let volumes = engine
        .stages()?
        .into_iter()
        .map(|s| NodeVolumeInfo {
            published_at: publishes
                .iter()
                .filter(|p| p.volume_key == s.volume_key)
                .map(|p| p.target.display().to_string())
                .collect(),
            volume: s.volume_name,
            backend: s.backend,
            access_protocol: s.context.get("accessProtocol").cloned().unwrap_or_default(),
            volume_key: s.volume_key,
            staging_path: s.staging_path.display().to_string(),
            block: s.access.is_block(),
            read_only: s.read_only,
            phase: phase(s.phase),
            fs_type: s.fs_type,
            owner: match s.owner {
                crate::engine::Owner::Co => "co".into(),
                crate::engine::Owner::Engine => "engine".into(),
            },
            pinned: s.pinned,
        })
        .collect();
    let pending_releases = engine
        .attachments()?
        .into_iter()
        .filter(|a| a.release_pending)
        .map(|a| PendingRelease {
            backend: a.backend,
            volume: a.volume_name,
        })
        .collect();
    Ok(Json(NodeInfo {
        uuid: engine.node().uuid.clone(),
        hostname: engine.node().hostname.clone(),
        volumes,
        pending_releases,
    }))
}

pub async fn last_reconcile(State(state): State<AdminState>) -> Json<ReconcileInfo> {
    Json(state.last_reconcile())
}

pub async fn reconcile_now(State(state): State<AdminState>) -> Json<ReconcileInfo> {
    let report = state.engine.reconcile().await;
    state.record_reconcile(report);
    Json(state.last_reconcile())
}
