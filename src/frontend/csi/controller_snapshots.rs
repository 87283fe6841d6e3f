//! The snapshot calls of the CSI controller service (CreateSnapshot, DeleteSnapshot,
//! ListSnapshots, GetSnapshot): the trait impl in `controller.rs` hands them here.

use super::controller::{csi_snapshot, known_name, not_found, source_of};
use super::paging::page;
use super::status::status;
use super::Csi;
use crate::engine::{Snapshot, SnapshotRef, Wait};
use crate::ErrorKind;
use std::collections::HashMap;
use tonic::{Request, Response, Status};
use volbridge_proto::csi as pb;

impl Csi {
    pub(super) async fn create_snapshot_call(
        &self,
        request: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        let mut req = request.into_inner();
        req.name = super::stored_name("name", &req.name).map_err(status)?;
        if !known_name(&req.source_volume_id) {
            return Err(not_found("volume", &req.source_volume_id));
        }
        let backend = self.backend(&req.secrets)?;
        // The same name taken by a snapshot of another volume is ALREADY_EXISTS.
        match self
            .engine
            .get_snapshot(&req.name, backend.as_deref())
            .await
        {
            Ok(s)
                if s.volume_name
                    .as_deref()
                    .is_some_and(|v| v != req.source_volume_id) =>
            {
                return Err(Status::already_exists(format!(
                    "snapshot '{}' exists for volume '{}'",
                    req.name,
                    s.volume_name.unwrap_or_default()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(status(e)),
        }
        let snap = self
            .engine
            .create_snapshot(
                &req.name,
                &req.source_volume_id,
                None,
                backend.as_deref(),
                Wait::No,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateSnapshotResponse {
            snapshot: Some(csi_snapshot(&snap, &req.source_volume_id)),
        }))
    }

    pub(super) async fn delete_snapshot_call(
        &self,
        request: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let req = request.into_inner();
        let backend = self.backend(&req.secrets)?;
        match SnapshotRef::parse(&req.snapshot_id) {
            SnapshotRef::Member { csp_id, .. } => self
                .engine
                .delete_snapshot_by_id(&csp_id, backend.as_deref())
                .await
                .map_err(status)?,
            SnapshotRef::Name(name) => self
                .engine
                .delete_snapshot(&name, backend.as_deref(), Wait::No)
                .await
                .map_err(status)?,
            // An id volbridge never handed out names nothing: deleted already.
            SnapshotRef::Nothing => {}
        }
        Ok(Response::new(pb::DeleteSnapshotResponse {}))
    }

    pub(super) async fn list_snapshots_call(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let req = request.into_inner();
        let backend = self.backend(&req.secrets)?;
        let backend = backend.as_deref();
        // A filter naming nothing lists nothing; it is not an error.
        let snapshots: Vec<Snapshot> = if !req.snapshot_id.is_empty() {
            match self
                .engine
                .find_snapshot_ref(&req.snapshot_id, backend)
                .await
            {
                Ok(s) => vec![s],
                Err(e) if e.kind == ErrorKind::NotFound => vec![],
                Err(e) => return Err(status(e)),
            }
        } else if !req.source_volume_id.is_empty() {
            match known_name(&req.source_volume_id) {
                true => match self
                    .engine
                    .list_snapshots(Some(&req.source_volume_id), backend)
                    .await
                {
                    Ok(s) => s,
                    Err(e) if e.kind == ErrorKind::NotFound => vec![],
                    Err(e) => return Err(status(e)),
                },
                false => vec![],
            }
        } else {
            self.engine
                .list_snapshots(None, backend)
                .await
                .map_err(status)?
        };
        let snapshots: Vec<Snapshot> = snapshots
            .into_iter()
            .filter(|s| {
                req.source_volume_id.is_empty()
                    || s.volume_name
                        .as_deref()
                        .is_none_or(|v| v == req.source_volume_id)
            })
            .collect();
        // Names of source volumes, for CSPs that report only their ids.
        let names = if snapshots.iter().any(|s| s.volume_name.is_none()) {
            self.volume_names(backend).await?
        } else {
            HashMap::new()
        };
        let (snapshots, next_token) =
            page(snapshots, |s| &s.name, req.max_entries, &req.starting_token)?;
        let entries = snapshots
            .iter()
            .map(|s| pb::list_snapshots_response::Entry {
                snapshot: Some(csi_snapshot(s, &source_of(s, &names))),
            })
            .collect();
        Ok(Response::new(pb::ListSnapshotsResponse {
            entries,
            next_token,
        }))
    }

    pub(super) async fn get_snapshot_call(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::GetSnapshotResponse>, Status> {
        let req = request.into_inner();
        let backend = self.backend(&req.secrets)?;
        let backend = backend.as_deref();
        let id = req.snapshot_id.as_str();
        let parsed = SnapshotRef::parse(id);
        let snap = self
            .engine
            .find_parsed_snapshot(id, &parsed, backend)
            .await
            .map_err(status)?;
        let mut snapshot = csi_snapshot(&snap, &self.source_name(&snap, backend).await?);
        if let SnapshotRef::Member { group, .. } = parsed {
            snapshot.snapshot_id = id.to_owned();
            snapshot.group_snapshot_id = self
                .engine
                .find_snapshot_group(&group, backend)
                .await
                .map_err(status)?
                .map(|g| g.id)
                .unwrap_or_default();
        }
        Ok(Response::new(pb::GetSnapshotResponse {
            snapshot: Some(snapshot),
        }))
    }
}
