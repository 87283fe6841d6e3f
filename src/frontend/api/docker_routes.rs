//! Admin API for the Docker front end's mount references: list them, and release those
//! Docker never released (`volbridge docker refs|release`). The wire types are
//! `volbridge_proto::admin`'s.

use super::error::ApiResult;
use super::extract::ApiPath;
use super::json::ApiJson;
use super::AdminState;
use crate::engine::DockerVolume;
use axum::extract::State;
use axum::Json;
use volbridge_proto::admin::{DockerRefs, DockerReleaseInfo, ReleaseRequest};

fn refs_of(v: &DockerVolume) -> DockerRefs {
    DockerRefs {
        name: v.name.clone(),
        backend: v.backend.clone(),
        state: v.state().to_owned(),
        mountpoint: v.mounted_at.as_ref().map(|p| p.display().to_string()),
        refs: v.refs.clone(),
    }
}

pub async fn list(State(state): State<AdminState>) -> ApiResult<Json<Vec<DockerRefs>>> {
    let all = state.engine.docker_list()?;
    Ok(Json(all.iter().map(refs_of).collect()))
}

pub async fn release(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> ApiResult<Json<DockerReleaseInfo>> {
    let done = state
        .engine
        .docker_release(&name, req.id.as_deref(), req.force)
        .await?;
    Ok(Json(DockerReleaseInfo {
        volume: done.volume,
        dropped: done.dropped,
        remaining: done.remaining,
        unmounted: done.unmounted,
    }))
}
