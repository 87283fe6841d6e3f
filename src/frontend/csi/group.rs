//! GroupController: crash-consistent snapshots of several volumes, on CSP volume groups
//! and snapshot groups. `group_snapshot_id` is the CSP snapshot group's id; each member
//! snapshot is `<group_snapshot_id>/<CSP snapshot id>` (members share the group's name).

use super::controller::{csi_snapshot, source_of};
use super::status::{status, status_in, Call};
use super::Csi;
use crate::engine::SnapshotGroup;
use tonic::{Request, Response, Status};
use volbridge_proto::csi as pb;
use volbridge_proto::csi::group_controller_service_capability::rpc::Type as Rpc;

impl Csi {
    fn csi_group(
        &self,
        g: &SnapshotGroup,
        names: &std::collections::HashMap<String, String>,
    ) -> pb::VolumeGroupSnapshot {
        let snapshots: Vec<pb::Snapshot> = g
            .snapshots
            .iter()
            .map(|s| {
                let mut snap = csi_snapshot(s, &source_of(s, names));
                snap.snapshot_id = format!("{}/{}", g.name, s.id);
                snap.group_snapshot_id = g.id.clone();
                snap
            })
            .collect();
        let created = g
            .snapshots
            .iter()
            .map(|s| s.creation_time)
            .min()
            .unwrap_or(0);
        pb::VolumeGroupSnapshot {
            group_snapshot_id: g.id.clone(),
            ready_to_use: g.snapshots.iter().all(|s| s.ready_to_use),
            snapshots,
            creation_time: Some(prost_types::Timestamp {
                seconds: created,
                nanos: 0,
            }),
        }
    }
}

#[tonic::async_trait]
impl pb::group_controller_server::GroupController for Csi {
    async fn group_controller_get_capabilities(
        &self,
        _: Request<pb::GroupControllerGetCapabilitiesRequest>,
    ) -> Result<Response<pb::GroupControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(pb::GroupControllerGetCapabilitiesResponse {
            capabilities: vec![pb::GroupControllerServiceCapability {
                r#type: Some(pb::group_controller_service_capability::Type::Rpc(
                    pb::group_controller_service_capability::Rpc {
                        r#type: Rpc::CreateDeleteGetVolumeGroupSnapshot as i32,
                    },
                )),
            }],
        }))
    }

    async fn create_volume_group_snapshot(
        &self,
        request: Request<pb::CreateVolumeGroupSnapshotRequest>,
    ) -> Result<Response<pb::CreateVolumeGroupSnapshotResponse>, Status> {
        let mut req = request.into_inner();
        req.name = super::stored_name("name", &req.name).map_err(status)?;
        let backend = self.backend(&req.secrets)?;
        let backend = backend.as_deref();
        let group = self
            .engine
            .create_group_snapshot(&req.name, &req.source_volume_ids, backend)
            .await
            .map_err(status)?;
        let names = self.volume_names(backend).await?;
        Ok(Response::new(pb::CreateVolumeGroupSnapshotResponse {
            group_snapshot: Some(self.csi_group(&group, &names)),
        }))
    }

    async fn delete_volume_group_snapshot(
        &self,
        request: Request<pb::DeleteVolumeGroupSnapshotRequest>,
    ) -> Result<Response<pb::DeleteVolumeGroupSnapshotResponse>, Status> {
        let req = request.into_inner();
        let backend = self.backend(&req.secrets)?;
        let backend = backend.as_deref();
        self.engine
            .delete_group_snapshot(&req.group_snapshot_id, backend)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteVolumeGroupSnapshotResponse {}))
    }

    async fn get_volume_group_snapshot(
        &self,
        request: Request<pb::GetVolumeGroupSnapshotRequest>,
    ) -> Result<Response<pb::GetVolumeGroupSnapshotResponse>, Status> {
        let req = request.into_inner();
        let backend = self.backend(&req.secrets)?;
        let backend = backend.as_deref();
        let group = self
            .engine
            .get_snapshot_group(&req.group_snapshot_id, backend)
            .await
            .map_err(|e| {
                status_in(
                    Call::GetGroupSnapshot {
                        id: &req.group_snapshot_id,
                    },
                    e,
                )
            })?;
        let names = self.volume_names(backend).await?;
        Ok(Response::new(pb::GetVolumeGroupSnapshotResponse {
            group_snapshot: Some(self.csi_group(&group, &names)),
        }))
    }
}
