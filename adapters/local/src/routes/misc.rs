//! R1 replication partners (none) and X1 capacity (§8.6).

use crate::errors::{ApiError, ApiResult};
use crate::extract::Params;
use crate::server::Shared;
use axum::extract::State;
use axum::Json;
use std::sync::Arc;
use volbridge_proto::csp::{Capacity, ReplicationPartner};

pub async fn replication_partners(params: Params) -> ApiResult<Json<Vec<ReplicationPartner>>> {
    if let Some(name) = params.get("name") {
        return Err(ApiError::not_found(format!(
            "no replication partner named '{name}'"
        )));
    }
    Ok(Json(Vec::new()))
}

pub async fn capacity(State(sh): State<Arc<Shared>>) -> ApiResult<Json<Capacity>> {
    let st = rustix::fs::statvfs(&sh.dirs.root)
        .map_err(|e| ApiError::io("reading capacity", &e.into()))?;
    let unit = st.f_frsize;
    Ok(Json(Capacity {
        total_bytes: Some(st.f_blocks.saturating_mul(unit)),
        free_bytes: Some(st.f_bavail.saturating_mul(unit)),
        used_bytes: Some(st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(unit)),
    }))
}
