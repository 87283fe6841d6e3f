//! R1 replication partners (none) and X1 capacity (§8.6), which also names the extensions
//! this CSP serves.

use crate::errors::{ApiError, ApiResult};
use crate::extract::Params;
use crate::server::Shared;
use axum::extract::State;
use axum::Json;
use std::sync::Arc;
use volbridge_proto::csp::{Capacity, PoolStatus, ReplicationPartner};
use volbridge_proto::ranges::EXTENSION_SNAPSHOT_METADATA;

pub async fn replication_partners(params: Params) -> ApiResult<Json<Vec<ReplicationPartner>>> {
    if let Some(name) = params.get("name") {
        return Err(ApiError::not_found(format!(
            "no replication partner named '{name}'"
        )));
    }
    Ok(Json(Vec::new()))
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
        extensions: vec![EXTENSION_SNAPSHOT_METADATA.to_owned()],
    }))
}
