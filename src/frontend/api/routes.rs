//! Admin API handlers: decode, call the engine (waiting within bounds, as a human caller
//! expects), encode. No storage logic here.

use super::convert;
use super::error::{ApiFailure, ApiResult};
use super::extract::{ApiPath, ApiQuery};
use super::json::ApiJson;
use super::secrets::{backend_of, WithSecrets};
use super::AdminState;
use crate::engine::names::validate_new_name;
use crate::engine::size::size_from_json;
use crate::engine::{CreateVolume, VolumeSource, Wait};
use crate::error::Error;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use volbridge_proto::admin::{
    BackendInfo, DaemonStatus, SnapshotCreateRequest, SnapshotInfo, VolumeCreateRequest,
    VolumeExpandRequest, VolumeInfo,
};
use volbridge_proto::csp::CLONE_SNAPSHOT_PREFIX;

#[derive(Debug, Default, Deserialize)]
pub struct BackendQuery {
    pub backend: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SnapshotQuery {
    pub backend: Option<String>,
    pub volume: Option<String>,
    /// `true`: also the temporary `snap-for-clone-` snapshots of clones from a volume still
    /// being copied (the CLI's progress reads them); hidden otherwise (docs/copy-semantics.md).
    #[serde(default)]
    pub temporary: bool,
}

pub async fn create_volume(
    State(state): State<AdminState>,
    ApiJson(body): ApiJson<WithSecrets<VolumeCreateRequest>>,
) -> ApiResult<Json<VolumeInfo>> {
    let req = body.request;
    // A name a person could type in every front end (docs/vocabulary.md); a volume made
    // under the older, wider rule is still inspected, mounted and removed by its name.
    validate_new_name("name", &req.name)?;
    let backend = backend_of(&state.engine, req.backend, &body.secrets)?;
    let size = req
        .size
        .as_ref()
        .map(|v| size_from_json("size", v))
        .transpose()?;
    let source = match (req.from_snapshot, req.from_volume) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "from_snapshot",
                "give either from_snapshot or from_volume, not both",
            )
            .into())
        }
        (Some(s), None) => Some(VolumeSource::Snapshot(s)),
        (None, Some(v)) => Some(VolumeSource::Volume(v)),
        (None, None) => None,
    };
    let create = CreateVolume {
        name: req.name,
        size,
        backend,
        description: req.description,
        params: req.options,
        source,
        ..CreateVolume::default()
    };
    let v = state.engine.create_volume(create, Wait::Bounded).await?;
    Ok(Json(convert::volume(v)))
}

pub async fn list_volumes(
    State(state): State<AdminState>,
    ApiQuery(q): ApiQuery<BackendQuery>,
) -> ApiResult<Json<Vec<VolumeInfo>>> {
    let list = state.engine.list_volumes(q.backend.as_deref()).await?;
    Ok(Json(list.into_iter().map(convert::volume).collect()))
}

pub async fn get_volume(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath,
    ApiQuery(q): ApiQuery<BackendQuery>,
) -> ApiResult<Json<VolumeInfo>> {
    let v = state.engine.get_volume(&name, q.backend.as_deref()).await?;
    Ok(Json(convert::volume(v)))
}

pub async fn delete_volume(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath,
    ApiQuery(q): ApiQuery<BackendQuery>,
) -> ApiResult<StatusCode> {
    let removed = state
        .engine
        .delete_volume_if_exists(&name, q.backend.as_deref(), Wait::Bounded)
        .await?;
    if !removed {
        return Err(not_there("volume", &name, &state, q.backend.as_deref()).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn expand_volume(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath,
    ApiQuery(q): ApiQuery<BackendQuery>,
    ApiJson(req): ApiJson<VolumeExpandRequest>,
) -> ApiResult<Json<VolumeInfo>> {
    let size = size_from_json("size", &req.size)?;
    let (v, grown) = state
        .engine
        .expand_and_grow(&name, size, q.backend.as_deref(), Wait::Bounded)
        .await?;
    let mut info = convert::volume(v);
    info.filesystem_resize = Some(
        match grown.map(|g| g.filesystem) {
            Some(Some(f)) if f.online => "online",
            Some(Some(_)) => "offline",
            Some(None) => "device only",
            // Not staged here: the grow is recorded and made at its next mount here.
            None => "next mount",
        }
        .to_owned(),
    );
    Ok(Json(info))
}

pub async fn create_snapshot(
    State(state): State<AdminState>,
    ApiJson(req): ApiJson<SnapshotCreateRequest>,
) -> ApiResult<Json<SnapshotInfo>> {
    validate_new_name("name", &req.name)?;
    let s = state
        .engine
        .create_snapshot(
            &req.name,
            &req.volume,
            req.description.as_deref(),
            req.backend.as_deref(),
            Wait::Bounded,
        )
        .await?;
    Ok(Json(convert::snapshot(s)))
}

pub async fn list_snapshots(
    State(state): State<AdminState>,
    ApiQuery(q): ApiQuery<SnapshotQuery>,
) -> ApiResult<Json<Vec<SnapshotInfo>>> {
    let list = state
        .engine
        .list_snapshots(q.volume.as_deref(), q.backend.as_deref())
        .await?;
    Ok(Json(
        list.into_iter()
            .filter(|s| q.temporary || !s.name.starts_with(CLONE_SNAPSHOT_PREFIX))
            .map(convert::snapshot)
            .collect(),
    ))
}

pub async fn get_snapshot(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath,
    ApiQuery(q): ApiQuery<BackendQuery>,
) -> ApiResult<Json<SnapshotInfo>> {
    let s = state
        .engine
        .get_snapshot(&name, q.backend.as_deref())
        .await?;
    Ok(Json(convert::snapshot(s)))
}

pub async fn delete_snapshot(
    State(state): State<AdminState>,
    ApiPath(name): ApiPath,
    ApiQuery(q): ApiQuery<BackendQuery>,
) -> ApiResult<StatusCode> {
    let removed = state
        .engine
        .delete_snapshot_if_exists(&name, q.backend.as_deref(), Wait::Bounded)
        .await?;
    if !removed {
        return Err(not_there("snapshot", &name, &state, q.backend.as_deref()).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A remove of something that is not there: NotFound, naming it and where it was looked
/// for (a person's `rm nosuch` is a typo more often than a retry).
fn not_there(kind: &str, name: &str, state: &AdminState, backend: Option<&str>) -> Error {
    let backend = state
        .engine
        .backends()
        .resolve(backend)
        .map(|b| b.name)
        .unwrap_or_else(|_| backend.unwrap_or_default().to_owned());
    let list = if kind == "volume" {
        "volbridge volume ls"
    } else {
        "volbridge snapshot ls"
    };
    let object = if kind == "volume" {
        volbridge_base::Object::Volume(name.to_owned())
    } else {
        volbridge_base::Object::Snapshot(name.to_owned())
    };
    Error::not_found(format!(
        "{kind} '{name}' does not exist on backend '{backend}'; nothing was removed ({list} \
         shows what there is)"
    ))
    .about(object)
}

pub async fn list_backends(State(state): State<AdminState>) -> Json<Vec<BackendInfo>> {
    let list = state.engine.backend_status().await;
    Json(list.into_iter().map(convert::backend).collect())
}

pub async fn status(State(state): State<AdminState>) -> Json<DaemonStatus> {
    let pending = state
        .engine
        .store()
        .list::<serde_json::Value>(crate::engine::intent::COLLECTION)
        .map(|l| l.len())
        .unwrap_or(0);
    Json(DaemonStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        state_dir: state.engine.store().root().display().to_string(),
        default_backend: state.engine.backends().default_name().to_owned(),
        pending_intents: pending,
        reconciled: state.last_reconcile().actions,
    })
}

pub async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
        volbridge_proto::ADMIN_OPENAPI,
    )
}

pub async fn not_found() -> ApiFailure {
    ApiFailure(Error::not_found(
        "no such admin API endpoint; see GET /openapi.yaml",
    ))
}

/// 405, with the `Allow` header axum adds; [`explain_405`] names the methods in the body.
pub async fn method_not_allowed(request: axum::extract::Request) -> axum::response::Response {
    super::error::respond(
        StatusCode::METHOD_NOT_ALLOWED,
        not_allowed(request.method(), request.uri().path(), None),
    )
}

fn not_allowed(method: &axum::http::Method, path: &str, allow: Option<&str>) -> Error {
    let path = volbridge_proto::names::shown(path);
    let fix = match allow {
        Some(a) if !a.is_empty() => format!("it takes {}", a.replace(',', ", ")),
        _ => "see GET /openapi.yaml".to_owned(),
    };
    Error::new(
        crate::ErrorKind::Unimplemented,
        format!("{method} is not allowed on {path}; {fix}"),
    )
}

/// Middleware: a 405 names the methods of its `Allow` header in the JSON error.
pub async fn explain_405(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response
        .headers()
        .get(axum::http::header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // The same response (status, Allow, request id), with the body that names the methods.
    let (mut parts, _) = response.into_parts();
    let (fresh, body) = super::error::respond(
        StatusCode::METHOD_NOT_ALLOWED,
        not_allowed(&method, &path, allow.as_deref()),
    )
    .into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.extend(fresh.headers);
    axum::response::Response::from_parts(parts, body)
}
