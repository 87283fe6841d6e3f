//! Identity: who we are, what we offer, whether we are ready.

use super::Csi;
use std::time::Duration;
use tonic::{Request, Response, Status};
use volbridge_proto::csi as pb;
use volbridge_proto::csi::plugin_capability::{
    service, volume_expansion, Service, Type, VolumeExpansion,
};

impl Csi {
    /// Whether the default backend's CSP serves snapshot metadata, asked within a bound:
    /// a CO (the external-snapshot-metadata sidecar) calls the service only when this
    /// capability is listed, and a backend that does not answer in time offers nothing now.
    async fn snapshot_metadata_offered(&self) -> bool {
        let asked = tokio::time::timeout(
            Duration::from_secs(2),
            self.engine.snapshot_metadata_offered(None),
        )
        .await;
        matches!(asked, Ok(Ok(true)))
    }
}

#[tonic::async_trait]
impl pb::identity_server::Identity for Csi {
    async fn get_plugin_info(
        &self,
        _: Request<pb::GetPluginInfoRequest>,
    ) -> Result<Response<pb::GetPluginInfoResponse>, Status> {
        Ok(Response::new(pb::GetPluginInfoResponse {
            name: self.config.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<pb::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<pb::GetPluginCapabilitiesResponse>, Status> {
        let svc = |t: service::Type| pb::PluginCapability {
            r#type: Some(Type::Service(Service { r#type: t as i32 })),
        };
        let exp = |t: volume_expansion::Type| pb::PluginCapability {
            r#type: Some(Type::VolumeExpansion(VolumeExpansion { r#type: t as i32 })),
        };
        let mut caps = vec![svc(service::Type::VolumeAccessibilityConstraints)];
        if self.config.mode.controller() {
            caps.push(svc(service::Type::ControllerService));
            caps.push(svc(service::Type::GroupControllerService));
            if self.snapshot_metadata_offered().await {
                caps.push(svc(service::Type::SnapshotMetadataService));
            }
        }
        caps.push(exp(volume_expansion::Type::Online));
        caps.push(exp(volume_expansion::Type::Offline));
        Ok(Response::new(pb::GetPluginCapabilitiesResponse {
            capabilities: caps,
        }))
    }

    /// Cheap: one capacity call to the default backend, bounded. A node-only daemon does
    /// not need a backend to serve.
    async fn probe(
        &self,
        _: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        let started = *self.ready.borrow();
        let ready = started
            && if self.config.mode.controller() {
                let asked =
                    tokio::time::timeout(Duration::from_secs(2), self.engine.capacity(None)).await;
                matches!(asked, Ok(Ok(_)))
            } else {
                true
            };
        Ok(Response::new(pb::ProbeResponse { ready: Some(ready) }))
    }
}
