//! V6 publish, V7 unpublish: `local` (§8.2) answers the image's path; `iscsi` and
//! `nvmetcp` export the image through the kernel's targets ([`crate::export`]) to the
//! initiators of the host's record.

use super::{check_protocol, volume_key};
use crate::errors::{ApiError, ApiResult};
use crate::export::{self, PROTOCOL_ISCSI, PROTOCOL_NVME};
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
    let served = sh.exports.protocols();
    let requested = check_protocol(req.access_protocol.as_deref(), &served)?;
    let _guard = sh.locks.lock_one(volume_key(&id)).await;
    let protocol = sh
        .store
        .commit(|s| {
            let v = s.volume(&id).ok_or_else(|| not_found(&id))?;
            let protocol = export::protocol_of(v);
            check_protocol(Some(&protocol), &served)?;
            if requested.as_ref().is_some_and(|r| *r != protocol) {
                return Err(ApiError::bad_request(format!(
                    "volume '{}' is served over {protocol} (its access_protocol, set when it \
                     was created), not {}; publish it over {protocol}",
                    v.name,
                    requested.as_deref().unwrap_or_default()
                )));
            }
            let Some(h) = s.host(&host) else {
                return Err(ApiError::not_found(format!("host '{host}' not found")));
            };
            let initiators = match protocol.as_str() {
                PROTOCOL_ISCSI => Some((&h.iqns, "iSCSI initiator name (IQN)", "/etc/iscsi/initiatorname.iscsi, from open-iscsi")),
                PROTOCOL_NVME => Some((&h.nqns, "NVMe host NQN", "/etc/nvme/hostnqn, from nvme-cli")),
                _ => None,
            };
            if let Some((list, what, source)) = initiators {
                if list.iter().all(|i| i.trim().is_empty()) {
                    return Err(ApiError::bad_request(format!(
                        "host '{host}' has no {what} registered, so volume '{}' cannot be \
                         exported to it over {protocol}; the node announces it from {source}: \
                         install that on the node and restart volbridge there",
                        v.name
                    )));
                }
            }
            if v.hosts.contains(&host) {
                return Ok((protocol, vec![]));
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
            Ok((protocol, vec![Change::PutVolume(new)]))
        })
        .await?;
    if protocol != PROTOCOL_LOCAL {
        // Also when nothing changed above: a publish retried after a failed export.
        sync_export(&sh, &id).await?;
        return Ok(Json(sh.exports.publish_info(&id, &protocol)));
    }
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
    let _guard = sh.locks.lock_one(volume_key(&id)).await;
    let protocol = sh
        .store
        .commit(|s| {
            let v = s.volume(&id).ok_or_else(|| not_found(&id))?;
            let protocol = export::protocol_of(v);
            if !v.hosts.contains(&host) {
                return Ok((protocol, vec![]));
            }
            let mut new = v.clone();
            new.hosts.remove(&host);
            Ok((protocol, vec![Change::PutVolume(new)]))
        })
        .await?;
    if protocol != PROTOCOL_LOCAL {
        // The host's ACL goes (the whole target with the last host), also on a retry.
        sync_export(&sh, &id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Makes volume `id`'s network export match the store, off the async workers (configfs
/// writes wait for the kernel to start or stop a target).
async fn sync_export(sh: &Arc<Shared>, id: &str) -> ApiResult<()> {
    let (wanted, name) = sh
        .store
        .read(|s| {
            (
                export::wanted(s, id, sh.dirs.volume(id)),
                s.volume(id).map(|v| v.name.clone()),
            )
        })
        .0;
    let sh2 = sh.clone();
    let id2 = id.to_owned();
    tokio::task::spawn_blocking(move || sh2.exports.sync(&id2, wanted.as_ref()))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|e| {
            ApiError::io(
                &format!("exporting volume '{}'", name.as_deref().unwrap_or(id)),
                &e,
            )
        })
}
