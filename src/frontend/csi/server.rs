//! Serving CSI: the socket (0660, bound like the admin socket), the services the mode asks
//! for, all behind the [`CsiLayer`](super::layer::CsiLayer), every connection read through
//! [`AnyAuthority`] (any HTTP/2 `:authority` is served).

use super::authority::AnyAuthority;
use super::layer::CsiLayer;
use super::{Csi, Endpoint};
use crate::error::{Error, Result};
use std::future::Future;
use tokio_stream::StreamExt;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use volbridge_local_csp::to_the_end;
use volbridge_proto::csi as pb;

/// Binds the endpoint now (so callers know it is reachable once this returns) and serves
/// until `stop` resolves.
pub async fn serve(
    csi: Csi,
    endpoint: &Endpoint,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>> {
    let mode = csi.config.mode;
    let mut router = Server::builder()
        .layer(CsiLayer::new(csi.ready.clone(), csi.tasks.clone()))
        .add_service(pb::identity_server::IdentityServer::new(csi.clone()));
    if mode.controller() {
        router = router
            .add_service(pb::controller_server::ControllerServer::new(csi.clone()))
            .add_service(pb::group_controller_server::GroupControllerServer::new(
                csi.clone(),
            ))
            // Registered always in controller mode; GetPluginCapabilities advertises it only
            // while the default backend's CSP serves the extension, and a call to a backend
            // without it answers FAILED_PRECONDITION.
            .add_service(pb::snapshot_metadata_server::SnapshotMetadataServer::new(
                csi.clone(),
            ));
    }
    if mode.node() {
        router = router.add_service(pb::node_server::NodeServer::new(csi.clone()));
    }
    let shown = endpoint.to_string();
    let tasks = csi.tasks.clone();
    let task = match endpoint {
        Endpoint::Unix(path) => {
            let listener = crate::frontend::api::bind(path)?;
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener)
                .map(|conn| conn.map(AnyAuthority::new));
            let path = path.clone();
            tokio::spawn(async move {
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
                    tracing::error!(error = %e, "CSI server failed");
                }
                let _ = std::fs::remove_file(path);
                finish(tasks).await;
            })
        }
        Endpoint::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::internal(format!("cannot listen on {addr}: {e}")))?;
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener)
                .map(|conn| conn.map(AnyAuthority::new));
            tokio::spawn(async move {
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
                    tracing::error!(error = %e, "CSI server failed");
                }
                finish(tasks).await;
            })
        }
    };
    tracing::info!(endpoint = %shown, mode = ?mode, driver = %csi.config.driver_name, "CSI serving");
    Ok(task)
}

/// Waits for the calls still running, also those whose caller gave up (see
/// [`super::layer`]) or was answered early ([`super::deadline::answer_by`]), so that the
/// engine logs out and the embedded CSP closes only after them.
async fn finish(tasks: TaskTracker) {
    to_the_end::finish(&tasks, to_the_end::FINISH_LIMIT, "CSI").await;
}
