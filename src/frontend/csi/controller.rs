//! Controller: volumes, grants to nodes, expansion, capacity; the snapshot calls are in
//! `controller_snapshots.rs`, ListVolumes in `controller_list.rs`.

use super::capability::Cap;
use super::status::{invalid, status};
use super::{Csi, CONTEXT_BACKEND, TOPOLOGY_NODE_KEY};
use crate::engine::{
    GrantRequest, RequestedSource, RequestedVolume, SizeRange, Snapshot, Volume, Wait,
};
use crate::ErrorKind;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tonic::{Request, Response, Status};
use volbridge_proto::csi as pb;
use volbridge_proto::csi::controller_service_capability::rpc::Type as Rpc;
use volbridge_proto::csi::volume_content_source::Type as Source;

/// StorageClass parameters the Kubernetes sidecars add for themselves; not CSP config.
const CO_PREFIX: &str = "csi.storage.k8s.io/";

/// A CSI id that is not even a valid name names nothing.
pub(super) fn known_name(id: &str) -> bool {
    crate::engine::names::validate_name("id", id).is_ok()
}

pub(super) fn not_found(what: &str, id: &str) -> Status {
    Status::not_found(format!("{what} '{id}' does not exist"))
}

fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// A snapshot's source volume by name: its own, or looked up in `names` by CSP id.
pub(super) fn source_of(s: &Snapshot, names: &HashMap<String, String>) -> String {
    s.volume_name
        .clone()
        .or_else(|| names.get(&s.volume_id).cloned())
        .unwrap_or_default()
}

pub(super) fn csi_snapshot(s: &Snapshot, source_volume: &str) -> pb::Snapshot {
    pb::Snapshot {
        size_bytes: s.size_bytes as i64,
        snapshot_id: s.name.clone(),
        source_volume_id: source_volume.to_owned(),
        creation_time: Some(timestamp(s.creation_time)),
        ready_to_use: s.ready_to_use,
        group_snapshot_id: String::new(),
    }
}

/// The size range of a request (csi.md rule 33; the engine checks it before any backend
/// call).
fn size_range(range: Option<&pb::CapacityRange>) -> SizeRange {
    range.map_or(SizeRange::default(), |r| SizeRange {
        required: r.required_bytes as u64,
        limit: r.limit_bytes as u64,
    })
}

impl Csi {
    pub(super) fn csi_volume(
        &self,
        v: &Volume,
        embedded: bool,
        source: Option<pb::VolumeContentSource>,
    ) -> pb::Volume {
        let mut context: HashMap<String, String> = v.context.clone().into_iter().collect();
        context.insert(CONTEXT_BACKEND.to_owned(), v.backend.clone());
        pb::Volume {
            capacity_bytes: v.size_bytes as i64,
            volume_id: v.name.clone(),
            volume_context: context,
            content_source: source,
            accessible_topology: if embedded {
                vec![self.topology()]
            } else {
                vec![]
            },
        }
    }

    /// Whether a topology list lets the volume sit on this node (an embedded backend's
    /// volumes can only be reached here).
    fn topology_allows(&self, wanted: &[pb::Topology]) -> bool {
        wanted.is_empty()
            || wanted.iter().any(|t| {
                t.segments
                    .get(TOPOLOGY_NODE_KEY)
                    .is_none_or(|n| n == self.node_id())
            })
    }

    fn volume_status(&self, v: &Volume) -> Result<(Vec<String>, pb::VolumeCondition), Status> {
        let nodes = self
            .engine
            .grants_of(&v.backend, &v.name)
            .map_err(status)?
            .into_iter()
            .map(|g| g.node_id)
            .collect();
        Ok((nodes, Self::condition(v)))
    }

    pub(super) fn condition(v: &Volume) -> pb::VolumeCondition {
        let abnormal = v.status.starts_with("Failed");
        let message = if abnormal {
            format!("backend reports {}", v.status)
        } else {
            v.status.clone()
        };
        pb::VolumeCondition { abnormal, message }
    }

    /// The CO's name of a snapshot's source volume, for CSPs that report only its id.
    pub(super) async fn source_name(
        &self,
        s: &Snapshot,
        backend: Option<&str>,
    ) -> Result<String, Status> {
        if s.volume_name.is_some() {
            return Ok(source_of(s, &HashMap::new()));
        }
        Ok(source_of(s, &self.volume_names(backend).await?))
    }

    /// CSP volume id → volume name, for CSPs whose snapshots name only the volume id.
    pub(super) async fn volume_names(
        &self,
        backend: Option<&str>,
    ) -> Result<HashMap<String, String>, Status> {
        let name = self
            .engine
            .backends()
            .resolve(backend)
            .map_err(status)?
            .name;
        Ok(self
            .engine
            .list_volumes(Some(&name))
            .await
            .map_err(status)?
            .into_iter()
            .map(|v| (v.id, v.name))
            .collect())
    }

    fn check_caps(caps: &[pb::VolumeCapability]) -> Result<(), Status> {
        for c in caps {
            if let Some(why) = Cap::of(c).unsupported() {
                return Err(invalid(why));
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::controller_server::Controller for Csi {
    async fn create_volume(
        &self,
        request: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::CreateVolumeResponse>, Status> {
        // A clone answers once its data is complete, waiting within the caller's deadline
        // (docs/copy-semantics.md rule 3).
        let answer = super::deadline::answer_deadline(request.metadata());
        let until = answer.unwrap_or_else(|| Instant::now() + self.engine.config().copy_wait);
        let mut req = request.into_inner();
        req.name = super::stored_name("name", &req.name).map_err(status)?;
        Self::check_caps(&req.volume_capabilities)?;
        // Sizes are checked before any backend call (csi.md rule 33).
        size_range(req.capacity_range.as_ref())
            .resolve(
                "capacity_range.required_bytes",
                self.engine.config().default_volume_size,
            )
            .map_err(status)?;
        let backend = self.backend(&req.secrets)?;
        // Spec 1.12: a mutable parameter the volume cannot take fails the call, and
        // nothing may be made of it; checked before any source lookup or create.
        let mutable: BTreeMap<String, String> = req
            .mutable_parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.engine
            .check_mutable_params(
                &mutable,
                backend.as_deref(),
                &format!("volume '{}'", req.name),
                "nothing was created",
            )
            .await
            .map_err(status)?;
        let embedded = self
            .engine
            .is_embedded(backend.as_deref())
            .map_err(status)?;
        if embedded {
            if let Some(t) = &req.accessibility_requirements {
                if !self.topology_allows(&t.requisite) {
                    return Err(Status::resource_exhausted(format!(
                        "volumes of this backend live on node {} only, outside the requisite topology",
                        self.node_id()
                    )));
                }
            }
        }
        // A key in both maps takes the mutable value (spec: mutable_parameters win); the
        // merged set is part of the request's identity, so a retry must ask the same.
        let mut params: BTreeMap<String, String> = req
            .parameters
            .iter()
            .filter(|(k, _)| !k.starts_with(CO_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        params.extend(mutable);
        let source = match req
            .volume_content_source
            .as_ref()
            .and_then(|s| s.r#type.as_ref())
        {
            Some(Source::Snapshot(s)) => Some(RequestedSource::Snapshot(s.snapshot_id.clone())),
            Some(Source::Volume(v)) => Some(RequestedSource::Volume(v.volume_id.clone())),
            None => None,
        };
        let requested = RequestedVolume {
            name: req.name.clone(),
            size: size_range(req.capacity_range.as_ref()),
            backend: backend.clone(),
            params,
            source,
            multi_initiator: req
                .volume_capabilities
                .iter()
                .any(|c| Cap::of(c).multi_node()),
        };
        let engine = self.engine.clone();
        let volume = super::deadline::answer_by(
            &self.tasks,
            answer,
            format!("volume '{}'", req.name),
            format!(
                "volume '{}' is still being created; retry CreateVolume with the same name to keep waiting for it",
                req.name
            ),
            async move { engine.create_requested(requested, Wait::Until(until)).await },
        )
        .await?;
        Ok(Response::new(pb::CreateVolumeResponse {
            volume: Some(self.csi_volume(&volume, embedded, req.volume_content_source)),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        if !known_name(&req.volume_id) {
            return Ok(Response::new(pb::DeleteVolumeResponse {}));
        }
        let backend = self.backend(&req.secrets)?;
        self.engine
            .delete_ungranted_volume(&req.volume_id, backend.as_deref(), Wait::No)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        request: Request<pb::ControllerPublishVolumeRequest>,
    ) -> Result<Response<pb::ControllerPublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let cap = if self.config.orchestrator.trusts_publish_access_type() {
            Cap::usable(req.volume_capability.as_ref())?
        } else {
            Cap::mode_only(req.volume_capability.as_ref())?
        };
        let backend = self.backend(&req.secrets)?;
        let grant = GrantRequest {
            volume: req.volume_id.clone(),
            backend,
            node_id: req.node_id.clone(),
            read_only: req.readonly || cap.read_only_mode(),
            access: cap.fingerprint(),
            single_node: cap.single_node(),
            max_per_node: self.config.max_volumes_per_node.max(0) as usize,
            fs_type: (!cap.block).then(|| cap.fs_type.clone()),
        };
        let granted = self.engine.grant(grant, Wait::No).await.map_err(status)?;
        Ok(Response::new(pb::ControllerPublishVolumeResponse {
            publish_context: granted.context.into_iter().collect(),
        }))
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<pb::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<pb::ControllerUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let backend = self.backend(&req.secrets)?;
        let node = Some(req.node_id.as_str()).filter(|n| !n.is_empty());
        self.engine
            .revoke(&req.volume_id, backend.as_deref(), node, Wait::No)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ControllerUnpublishVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<pb::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<pb::ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        if !known_name(&req.volume_id) {
            return Err(not_found("volume", &req.volume_id));
        }
        let backend = self.backend(&req.secrets)?;
        self.engine
            .get_volume(&req.volume_id, backend.as_deref())
            .await
            .map_err(status)?;
        let mutable: BTreeMap<String, String> = req
            .mutable_parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mutable_refused = match self
            .engine
            .check_mutable_params(
                &mutable,
                backend.as_deref(),
                &format!("volume '{}'", req.volume_id),
                "so they are not confirmed",
            )
            .await
        {
            Ok(()) => None,
            Err(e) if e.kind == ErrorKind::InvalidArgument => Some(e.message),
            Err(e) => return Err(status(e)),
        };
        let refused = req
            .volume_capabilities
            .iter()
            .find_map(|c| Cap::of(c).unsupported())
            .or(mutable_refused);
        let reply = match refused {
            Some(why) => pb::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: why,
            },
            None => pb::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(pb::validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: req.mutable_parameters,
                }),
                message: String::new(),
            },
        };
        Ok(Response::new(reply))
    }

    async fn list_volumes(
        &self,
        request: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        self.list_volumes_call(request).await
    }

    async fn get_capacity(
        &self,
        request: Request<pb::GetCapacityRequest>,
    ) -> Result<Response<pb::GetCapacityResponse>, Status> {
        let req = request.into_inner();
        let embedded = self.engine.is_embedded(None).map_err(status)?;
        let reachable_here = req
            .accessible_topology
            .as_ref()
            .is_none_or(|t| self.topology_allows(std::slice::from_ref(t)));
        let free = match embedded && !reachable_here {
            true => 0,
            false => self
                .engine
                .capacity(None)
                .await
                .map_err(status)?
                .map_or(0, |(_, free)| free),
        };
        Ok(Response::new(pb::GetCapacityResponse {
            available_capacity: free as i64,
            maximum_volume_size: None,
            minimum_volume_size: Some(1 << 20),
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<pb::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<pb::ControllerGetCapabilitiesResponse>, Status> {
        let rpcs = [
            Rpc::CreateDeleteVolume,
            Rpc::PublishUnpublishVolume,
            Rpc::ListVolumes,
            Rpc::GetCapacity,
            Rpc::CreateDeleteSnapshot,
            Rpc::ListSnapshots,
            Rpc::CloneVolume,
            Rpc::PublishReadonly,
            Rpc::ExpandVolume,
            Rpc::ListVolumesPublishedNodes,
            Rpc::GetVolume,
            Rpc::VolumeCondition,
            Rpc::SingleNodeMultiWriter,
            Rpc::ModifyVolume,
            Rpc::GetSnapshot,
        ];
        let capabilities = rpcs
            .into_iter()
            .map(|t| pb::ControllerServiceCapability {
                r#type: Some(pb::controller_service_capability::Type::Rpc(
                    pb::controller_service_capability::Rpc { r#type: t as i32 },
                )),
            })
            .collect();
        Ok(Response::new(pb::ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        self.create_snapshot_call(request).await
    }

    async fn delete_snapshot(
        &self,
        request: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        self.delete_snapshot_call(request).await
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        self.list_snapshots_call(request).await
    }

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::GetSnapshotResponse>, Status> {
        self.get_snapshot_call(request).await
    }

    async fn controller_expand_volume(
        &self,
        request: Request<pb::ControllerExpandVolumeRequest>,
    ) -> Result<Response<pb::ControllerExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        let range = size_range(req.capacity_range.as_ref());
        let size = range
            .resolve("capacity_range.required_bytes", 0)
            .map_err(status)?;
        let limit = range.limit;
        if !known_name(&req.volume_id) {
            return Err(not_found("volume", &req.volume_id));
        }
        let backend = self.backend(&req.secrets)?;
        let volume = self
            .engine
            .expand_volume(&req.volume_id, size, backend.as_deref(), Wait::No)
            .await
            .map_err(status)?;
        if limit > 0 && volume.size_bytes > limit {
            return Err(Status::out_of_range(format!(
                "volume '{}' already holds {} bytes, above limit_bytes {limit}",
                volume.name, volume.size_bytes
            )));
        }
        let block = req
            .volume_capability
            .as_ref()
            .is_some_and(|c| Cap::of(c).block);
        Ok(Response::new(pb::ControllerExpandVolumeResponse {
            capacity_bytes: volume.size_bytes as i64,
            node_expansion_required: !block,
        }))
    }

    async fn controller_get_volume(
        &self,
        request: Request<pb::ControllerGetVolumeRequest>,
    ) -> Result<Response<pb::ControllerGetVolumeResponse>, Status> {
        let req = request.into_inner();
        if !known_name(&req.volume_id) {
            return Err(not_found("volume", &req.volume_id));
        }
        let volume = self
            .engine
            .get_volume(&req.volume_id, None)
            .await
            .map_err(status)?;
        let embedded = self.engine.is_embedded(None).map_err(status)?;
        let (published_node_ids, condition) = self.volume_status(&volume)?;
        Ok(Response::new(pb::ControllerGetVolumeResponse {
            volume: Some(self.csi_volume(&volume, embedded, None)),
            status: Some(pb::controller_get_volume_response::VolumeStatus {
                published_node_ids,
                volume_condition: Some(condition),
            }),
        }))
    }

    async fn controller_modify_volume(
        &self,
        request: Request<pb::ControllerModifyVolumeRequest>,
    ) -> Result<Response<pb::ControllerModifyVolumeResponse>, Status> {
        let req = request.into_inner();
        if !known_name(&req.volume_id) {
            return Err(not_found("volume", &req.volume_id));
        }
        let backend = self.backend(&req.secrets)?;
        let params: BTreeMap<String, String> = req.mutable_parameters.into_iter().collect();
        self.engine
            .modify_volume(&req.volume_id, &params, backend.as_deref(), Wait::No)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ControllerModifyVolumeResponse {}))
    }
}
