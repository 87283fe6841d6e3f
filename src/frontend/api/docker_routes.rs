//! Admin API for the Docker front end's mount references: list them, and release those
//! Docker never released (`volbridge docker refs|release`).

use super::error::ApiResult;
use super::json::ApiJson;
use super::AdminState;
use crate::engine::{DockerRelease, DockerVolume};
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One Docker volume and its mount references.
#[derive(Debug, Serialize, Deserialize)]
pub struct DockerRefs {
    pub name: String,
    pub backend: String,
    pub state: String,
    pub mountpoint: Option<String>,
    pub refs: BTreeMap<String, u32>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ReleaseRequest {
    /// One mount ID; none: all of them.
    pub id: Option<String>,
    /// Release even while a container still mounts the volume.
    pub force: bool,
}

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
    Path(name): Path<String>,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> ApiResult<Json<DockerRelease>> {
    let done = state
        .engine
        .docker_release(&name, req.id.as_deref(), req.force)
        .await?;
    Ok(Json(done))
}
