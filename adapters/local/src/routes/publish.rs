//! V6 publish, V7 unpublish (access protocol `local`, §8.2).

use super::check_protocol;
use crate::errors::{ApiError, ApiResult};
use crate::extract::{Body, Id};
use crate::model::{config_bool, Change};
use crate::routes::volumes::not_found;
use crate::shared::Shared;
use crate::state;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use std::sync::Arc;
use volbridge_proto::csp::{PublishInfo, PublishOptions, PROTOCOL_LOCAL};

pub async fn publish(
    State(sh): State<Arc<Shared>>,
    Id(id): Id,
    Body(req): Body<PublishOptions>,
) -> ApiResult<Json<PublishInfo>> {
    if req.is_file_form() {
        return Err(ApiError::bad_request(
            "file (NFS) publish is not supported by the local CSP",
        ));
    }
    let host = crate::ids::check_name("host_uuid", req.host_uuid.as_deref())?;
    check_protocol(req.access_protocol.as_deref())?;
    sh.store
        .commit(|s| {
            let v = s.volume(&id).ok_or_else(|| not_found(&id))?;
            if let Some(p) = v.config.get("access_protocol").and_then(|p| p.as_str()) {
                check_protocol(Some(p))?;
            }
            if s.host(&host).is_none() {
                return Err(ApiError::not_found(format!("host '{host}' not found")));
            }
            if v.hosts.contains(&host) {
                return Ok(((), vec![]));
            }
            if state::unusable(v) {
                return Err(ApiError::conflict(format!(
                    "volume '{}' is not ready: background operation status '{}'",
                    v.name,
                    state::background_status(v).unwrap_or_default()
                )));
            }
            if s.snapshot_copy_running(&id) {
                return Err(ApiError::conflict(format!(
                    "volume '{}' is being copied into a snapshot; publish it when the snapshot is ready",
                    v.name
                )));
            }
            let multi = config_bool(&v.config, "multi_initiator").ok().flatten() == Some(true);
            if !v.hosts.is_empty() && !multi {
                return Err(ApiError::conflict(format!(
                    "volume '{}' is published to another host",
                    v.name
                )));
            }
            let mut new = v.clone();
            new.hosts.insert(host.clone());
            Ok(((), vec![Change::PutVolume(new)]))
        })
        .await?;
    Ok(Json(PublishInfo {
        serial_number: id.clone(),
        access_protocol: PROTOCOL_LOCAL.to_owned(),
        lun_id: Some(0),
        target_names: Vec::new(),
        discovery_ips: Vec::new(),
        local_path: Some(sh.dirs.local_path(&id)),
        ..PublishInfo::default()
    }))
}

pub async fn unpublish(
    State(sh): State<Arc<Shared>>,
    Id(id): Id,
    Body(req): Body<PublishOptions>,
) -> ApiResult<StatusCode> {
    if req.host_uuid.is_none() && req.access_control_list.is_some() {
        return Err(ApiError::bad_request(
            "file (NFS) unpublish is not supported by the local CSP",
        ));
    }
    let host = crate::ids::check_name("host_uuid", req.host_uuid.as_deref())?;
    sh.store
        .commit(|s| {
            let v = s.volume(&id).ok_or_else(|| not_found(&id))?;
            if !v.hosts.contains(&host) {
                return Ok(((), vec![]));
            }
            let mut new = v.clone();
            new.hosts.remove(&host);
            Ok(((), vec![Change::PutVolume(new)]))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
