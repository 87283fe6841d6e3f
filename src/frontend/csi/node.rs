//! Node: stage, publish and their reverses on this machine, stats, expansion, identity.
//! The volume key of a CSI volume on this node is its volume id.

use super::capability::Cap;
use super::status::{status, status_in, Call};
use super::{Csi, CONTEXT_BACKEND, CONTEXT_EPHEMERAL};
use crate::engine::Access;
use crate::engine::{MountVolume, Owner, PublishVolume, StageRecord, StageVolume, Wait};
use std::collections::{BTreeMap, HashMap};
use tonic::{Request, Response, Status};
use volbridge_proto::csi as pb;
use volbridge_proto::csi::node_service_capability::rpc::Type as Rpc;
use volbridge_proto::csi::volume_capability::access_mode::Mode;
use volbridge_proto::csi::volume_usage::Unit;

/// Volume-context key of an ephemeral inline volume's size (`1Gi`).
const CONTEXT_SIZE: &str = "size";

fn is_ephemeral(context: &HashMap<String, String>) -> bool {
    context.get(CONTEXT_EPHEMERAL).map(String::as_str) == Some("true")
}

fn access_of(cap: &Cap) -> Access {
    match cap.block {
        true => Access::Block,
        false => Access::Mount {
            fs_type: cap.fs_type.clone(),
            mount_options: cap.mount_flags.clone(),
        },
    }
}

impl Csi {
    fn backend_of(&self, context: &HashMap<String, String>) -> String {
        context
            .get(CONTEXT_BACKEND)
            .cloned()
            .unwrap_or_else(|| self.engine.backends().default_name().to_owned())
    }

    /// The stage of a volume: under its id, or, for an ephemeral volume (staged by the
    /// engine's own flow), under whatever key that flow chose.
    fn stage_of(&self, volume_id: &str) -> Result<Option<StageRecord>, Status> {
        if let Some(s) = self.engine.stage(volume_id).map_err(status)? {
            return Ok(Some(s));
        }
        Ok(self
            .engine
            .stages()
            .map_err(status)?
            .into_iter()
            .find(|s| s.owner == Owner::Engine && s.volume_name == volume_id))
    }

    /// Ephemeral inline volume: create, grant, stage and publish in one call.
    async fn publish_ephemeral(
        &self,
        req: pb::NodePublishVolumeRequest,
        cap: Cap,
    ) -> Result<(), Status> {
        let backend = self.backend(&req.secrets)?;
        let size = match req.volume_context.get(CONTEXT_SIZE) {
            Some(text) => {
                Some(crate::engine::size::parse_size(CONTEXT_SIZE, text).map_err(status)?)
            }
            None => None,
        };
        let params: BTreeMap<String, String> = req
            .volume_context
            .iter()
            .filter(|(k, _)| !k.contains('/') && k.as_str() != CONTEXT_SIZE)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let create = crate::engine::CreateVolume {
            name: req.volume_id.clone(),
            size,
            backend: backend.clone(),
            params,
            ..Default::default()
        };
        self.engine
            .create_volume(create, Wait::No)
            .await
            .map_err(status)?;
        let mount = MountVolume {
            name: req.volume_id.clone(),
            backend,
            target: req.target_path.clone(),
            read_only: req.readonly || cap.read_only_mode(),
            block: cap.block,
            fs_type: cap.fs_type.clone(),
            mount_options: cap.mount_flags.clone(),
        };
        self.engine
            .mount_volume(mount, Wait::No)
            .await
            .map_err(status)?;
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::node_server::Node for Csi {
    async fn node_stage_volume(
        &self,
        request: Request<pb::NodeStageVolumeRequest>,
    ) -> Result<Response<pb::NodeStageVolumeResponse>, Status> {
        let req = request.into_inner();
        let cap = Cap::usable(req.volume_capability.as_ref())?;
        if req.publish_context.is_empty() {
            return Err(Status::not_found(format!(
                "attach: volume '{}' has no publish_context; ControllerPublishVolume it to node {} first",
                req.volume_id,
                self.node_id()
            )));
        }
        let read_only = cap.read_only_mode()
            || req.publish_context.get("readOnly").map(String::as_str) == Some("true");
        let stage = StageVolume {
            volume_key: req.volume_id.clone(),
            backend: self.backend_of(&req.volume_context),
            volume_name: req.volume_id.clone(),
            owner: Owner::Co,
            pinned: false,
            context: req.publish_context.into_iter().collect(),
            staging_path: req.staging_target_path,
            access: access_of(&cap),
            read_only,
        };
        self.engine
            .node_stage(stage, Wait::No)
            .await
            .map_err(|e| status_in(Call::NodeStage, e))?;
        Ok(Response::new(pb::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<pb::NodeUnstageVolumeRequest>,
    ) -> Result<Response<pb::NodeUnstageVolumeResponse>, Status> {
        let req = request.into_inner();
        self.engine
            .node_unstage(&req.volume_id, &req.staging_target_path, Wait::No)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<pb::NodePublishVolumeRequest>,
    ) -> Result<Response<pb::NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let cap = Cap::usable(req.volume_capability.as_ref())?;
        if is_ephemeral(&req.volume_context) {
            self.publish_ephemeral(req, cap).await?;
            return Ok(Response::new(pb::NodePublishVolumeResponse {}));
        }
        match self.engine.stage(&req.volume_id).map_err(status)? {
            Some(s) if s.staging_path.as_os_str() != req.staging_target_path.as_str() => {
                return Err(Status::failed_precondition(format!(
                    "volume '{}' is staged at {}, not at {}",
                    req.volume_id,
                    s.staging_path.display(),
                    req.staging_target_path
                )));
            }
            Some(s) if s.access.is_block() != cap.block => {
                return Err(Status::already_exists(format!(
                    "volume '{}' is staged for {} access",
                    req.volume_id,
                    if s.access.is_block() {
                        "block"
                    } else {
                        "mount"
                    }
                )));
            }
            _ => {}
        }
        let publish = PublishVolume {
            volume_key: req.volume_id.clone(),
            target_path: req.target_path,
            read_only: req.readonly || cap.read_only_mode(),
            single_writer: cap.mode == Mode::SingleNodeSingleWriter,
            mount_options: cap.mount_flags,
            remove_target: true,
        };
        self.engine
            .node_publish(publish, Wait::No)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<pb::NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let target =
            crate::host::paths::validate_target("target_path", &req.target_path).map_err(status)?;
        let published = self
            .engine
            .publishes()
            .map_err(status)?
            .into_iter()
            .find(|p| p.target == target);
        let ephemeral = match &published {
            Some(p) if p.volume_key != req.volume_id => {
                self.engine.stages().map_err(status)?.into_iter().find(|s| {
                    s.volume_key == p.volume_key
                        && s.owner == Owner::Engine
                        && s.volume_name == req.volume_id
                })
            }
            _ => None,
        };
        match ephemeral {
            Some(stage) => {
                let backend = Some(stage.backend.as_str());
                self.engine
                    .unmount_volume(&req.volume_id, backend, &req.target_path, Wait::No)
                    .await
                    .map_err(status)?;
                self.engine
                    .delete_volume(&req.volume_id, backend, Wait::No)
                    .await
                    .map_err(status)?;
            }
            None if self.config.orchestrator.unstage_on_last_unpublish() => {
                self.engine
                    .node_unpublish_and_unstage(&req.volume_id, &req.target_path, Wait::No)
                    .await
                    .map_err(status)?;
            }
            None => {
                self.engine
                    .node_unpublish(&req.volume_id, &req.target_path, Wait::No)
                    .await
                    .map_err(status)?;
            }
        }
        self.engine
            .forget_target(&req.volume_id, &req.target_path, Wait::No)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<pb::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<pb::NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        let key = self
            .stage_of(&req.volume_id)?
            .map_or_else(|| req.volume_id.clone(), |s| s.volume_key);
        let stats = self
            .engine
            .node_stats(&key, &req.volume_path)
            .await
            .map_err(|e| {
                status_in(
                    Call::NodeStats {
                        volume_id: &req.volume_id,
                        path: &req.volume_path,
                    },
                    e,
                )
            })?;
        let mut usage = Vec::new();
        if let Some(u) = &stats.usage {
            usage.push(pb::VolumeUsage {
                available: u.available_bytes as i64,
                total: u.total_bytes as i64,
                used: u.used_bytes as i64,
                unit: Unit::Bytes as i32,
            });
            usage.push(pb::VolumeUsage {
                available: u.free_inodes as i64,
                total: u.total_inodes as i64,
                used: u.used_inodes as i64,
                unit: Unit::Inodes as i32,
            });
        } else if let Some(bytes) = stats.device_bytes {
            usage.push(pb::VolumeUsage {
                available: 0,
                total: bytes as i64,
                used: 0,
                unit: Unit::Bytes as i32,
            });
        }
        Ok(Response::new(pb::NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(pb::VolumeCondition {
                abnormal: !stats.healthy,
                message: stats.message,
            }),
        }))
    }

    async fn node_expand_volume(
        &self,
        request: Request<pb::NodeExpandVolumeRequest>,
    ) -> Result<Response<pb::NodeExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        let Some(stage) = self.stage_of(&req.volume_id)? else {
            return Err(Status::not_found(format!(
                "volume '{}' is not staged on this node",
                req.volume_id
            )));
        };
        let key = stage.volume_key;
        let expanded = self
            .engine
            .node_expand(&key, Wait::No)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::NodeExpandVolumeResponse {
            capacity_bytes: expanded.device_bytes as i64,
        }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<pb::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<pb::NodeGetCapabilitiesResponse>, Status> {
        let rpcs = [
            Rpc::StageUnstageVolume,
            Rpc::GetVolumeStats,
            Rpc::ExpandVolume,
            Rpc::VolumeCondition,
            Rpc::SingleNodeMultiWriter,
        ];
        let capabilities = rpcs
            .into_iter()
            .map(|t| pb::NodeServiceCapability {
                r#type: Some(pb::node_service_capability::Type::Rpc(
                    pb::node_service_capability::Rpc { r#type: t as i32 },
                )),
            })
            .collect();
        Ok(Response::new(pb::NodeGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<pb::NodeGetInfoRequest>,
    ) -> Result<Response<pb::NodeGetInfoResponse>, Status> {
        // The registrar asks this once when the plugin registers, before any publish.
        if let Err(e) = self.engine.register_node().await {
            tracing::warn!(error = %e.message, "this node is not registered with the default backend");
        }
        Ok(Response::new(pb::NodeGetInfoResponse {
            node_id: self.node_id().to_owned(),
            max_volumes_per_node: self.config.max_volumes_per_node,
            accessible_topology: Some(self.topology()),
        }))
    }
}
