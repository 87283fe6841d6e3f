//! R1 replication partners (none), X1 capacity (§8.6), which also names the extensions
//! this CSP serves, and the mutable config keys.

use crate::errors::{ApiError, ApiResult};
use crate::extract::Params;
use crate::shared::Shared;
use axum::extract::State;
use axum::Json;
use std::sync::Arc;
use volbridge_proto::csp::{
    Capacity, MutableConfig, PoolStatus, ReplicationPartner, EXTENSION_CLONE_FROM_VOLUME,
};
use volbridge_proto::ranges::EXTENSION_SNAPSHOT_METADATA;

pub async fn replication_partners(params: Params) -> ApiResult<Json<Vec<ReplicationPartner>>> {
    if let Some(name) = params.get("name") {
        return Err(ApiError::not_found(format!(
            "no replication partner named '{name}'"
        )));
    }
    Ok(Json(Vec::new()))
}

/// The config keys that change what this CSP does with an existing volume; other keys are
/// stored and echoed but mean nothing to it, so a CO asking to "change" one would be told
/// it succeeded while nothing changed. `thick` and `access_protocol` are fixed at create.
pub const MUTABLE_VOLUME_CONFIG: &[&str] = &["destroy_on_delete", "multi_initiator"];

pub async fn mutable_config() -> Json<MutableConfig> {
    Json(MutableConfig {
        volume: MUTABLE_VOLUME_CONFIG
            .iter()
            .map(|k| k.to_string())
            .collect(),
    })
}

pub async fn capacity(State(sh): State<Arc<Shared>>) -> ApiResult<Json<Capacity>> {
    let pool = sh.pool.clone();
    let space = tokio::task::spawn_blocking(move || pool.space())
        .await
        .map_err(|e| ApiError::internal(format!("reading capacity: {e}")))?
        .map_err(|e| ApiError::io("reading capacity", &e))?;
    let limit = crate::provision::Limit::of(&sh)?;
    let provisioned = sh.store.query(|s| s.provisioned()).await?;
    Ok(Json(Capacity {
        total_bytes: Some(space.total),
        free_bytes: Some(space.free),
        used_bytes: Some(space.used),
        provisioned_bytes: Some(provisioned),
        provisioned_limit_bytes: limit.bytes(),
        pool: Some(PoolStatus {
            mode: sh.pool.mode().to_string(),
            reflink: sh.pool.reflink(),
            reason: sh.pool.reason().to_owned(),
        }),
        // Without reflink a clone of a live volume needs a point-in-time source to copy
        // from, which is what the standard form's snapshot is.
        extensions: if sh.pool.reflink() {
            vec![
                EXTENSION_SNAPSHOT_METADATA.to_owned(),
                EXTENSION_CLONE_FROM_VOLUME.to_owned(),
            ]
        } else {
            vec![EXTENSION_SNAPSHOT_METADATA.to_owned()]
        },
    }))
}
