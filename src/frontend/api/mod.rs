//! The admin REST API: JSON over the daemon's unix socket (mode 0660), described by
//! `proto/openapi/admin.yaml`. The CLI and the FlexVolume binary are its clients.

mod convert;
pub mod docker_routes;
pub mod error;
mod extract;
pub mod health;
mod json;
mod node_routes;
mod request_id;
mod routes;
mod secrets;

use crate::engine::Engine;
use crate::error::{Error, Result};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use volbridge_proto::admin::ReconcileInfo;

#[derive(Clone)]
pub struct AdminState {
    pub engine: Arc<Engine>,
    /// What the last reconciliation pass did (`GET /v1/status`, `GET /v1/reconcile`).
    pub reconciled: Arc<Mutex<ReconcileInfo>>,
    /// Turns true once the start-up reconciliation has run: requests wait for it, so no
    /// caller sees (or races with) a half-reconciled node.
    pub ready: tokio::sync::watch::Receiver<bool>,
}

impl AdminState {
    /// The state, and the sender that opens the gate.
    pub fn new(engine: Arc<Engine>) -> (AdminState, tokio::sync::watch::Sender<bool>) {
        let (tx, ready) = tokio::sync::watch::channel(false);
        (
            AdminState {
                engine,
                reconciled: Arc::default(),
                ready,
            },
            tx,
        )
    }

    pub fn record_reconcile(&self, report: crate::engine::ReconcileReport) {
        let deferred = report.pending;
        crate::metrics::reconciled(report.actions.len().saturating_sub(deferred), deferred);
        *self.reconciled.lock().unwrap_or_else(|p| p.into_inner()) = ReconcileInfo {
            actions: report.actions,
            pending: report.pending,
        };
    }

    pub fn last_reconcile(&self) -> ReconcileInfo {
        self.reconciled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub fn router(state: AdminState) -> Router {
    // A 405 names the methods of its `Allow` header, which axum adds as the inner router's
    // answer leaves it: the middleware runs outside it.
    Router::new()
        .fallback_service(routes_of(state))
        .layer(axum::middleware::from_fn(routes::explain_405))
}

fn routes_of(state: AdminState) -> Router {
    Router::new()
        .route(
            "/v1/volumes",
            get(routes::list_volumes).post(routes::create_volume),
        )
        .route(
            "/v1/volumes/{name}",
            get(routes::get_volume).delete(routes::delete_volume),
        )
        .route("/v1/volumes/{name}/expand", post(routes::expand_volume))
        .route("/v1/volumes/{name}/mount", post(node_routes::mount))
        .route("/v1/volumes/{name}/unmount", post(node_routes::unmount))
        .route("/v1/volumes/{name}/attach", post(node_routes::attach))
        .route("/v1/volumes/{name}/detach", post(node_routes::detach))
        .route("/v1/volumes/{name}/stats", get(node_routes::stats))
        .route("/v1/node", get(node_routes::node))
        .route("/v1/docker/volumes", get(docker_routes::list))
        .route(
            "/v1/docker/volumes/{name}/release",
            post(docker_routes::release),
        )
        .route(
            "/v1/reconcile",
            get(node_routes::last_reconcile).post(node_routes::reconcile_now),
        )
        .route(
            "/v1/snapshots",
            get(routes::list_snapshots).post(routes::create_snapshot),
        )
        .route(
            "/v1/snapshots/{name}",
            get(routes::get_snapshot).delete(routes::delete_snapshot),
        )
        .route("/v1/backends", get(routes::list_backends))
        .route("/v1/status", get(routes::status))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.yaml", get(routes::openapi))
        .route_layer(axum::middleware::from_fn(health::count))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn(request_id::tag))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            wait_until_ready,
        ))
        .layer(DefaultBodyLimit::max(json::BODY_LIMIT + 1))
        .with_state(state)
}

/// Holds requests (all but the probes and metrics) until the start-up reconciliation is done.
async fn wait_until_ready(
    axum::extract::State(state): axum::extract::State<AdminState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !health::UNGATED.contains(&request.uri().path()) {
        let mut ready = state.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }
    next.run(request).await
}

/// Binds the admin socket: parent dir created 0755, a stale socket from a crashed daemon
/// removed, a live one refused, the new socket chmod 0660.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::internal(format!("cannot create {}: {e}", parent.display())))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(Error::precondition(format!(
                "{} exists and is not a socket; remove it or choose another --admin-socket",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::precondition(format!(
                "another volbridge daemon is listening on {}; stop it first",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| {
            Error::internal(format!(
                "cannot remove stale socket {}: {e}",
                path.display()
            ))
        })?;
    }
    // Bound under a temporary name and renamed once it is 0660, so the socket is never
    // reachable with the umask's wider mode.
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = path.with_file_name(format!(".{file_name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let listener = tokio::net::UnixListener::bind(&staging)
        .map_err(|e| Error::internal(format!("cannot listen on {}: {e}", path.display())))?;
    let placed = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o660))
        .and_then(|()| std::fs::rename(&staging, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&staging);
        return Err(Error::internal(format!(
            "cannot place socket {}: {e}",
            path.display()
        )));
    }
    Ok(listener)
}
