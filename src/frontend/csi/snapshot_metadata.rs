//! SnapshotMetadata (changed-block tracking): GetMetadataAllocated and GetMetadataDelta as
//! server streams, one message per page of the engine's range walk, each with at most
//! `max_results` ranges, VARIABLE_LENGTH, and the snapshot's size as
//! `volume_capacity_bytes`.
//!
//! Snapshot ids are those CreateSnapshot answers: a name, or `<group>/<CSP id>` for a
//! member of a group snapshot (see the module doc of `csi`).

use super::rpc;
use super::status::status;
use super::Csi;
use crate::engine::{ByteRange, RangeWalk, SnapshotKey};
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use volbridge_base::redact::secret_values;
use volbridge_proto::csi as pb;
use volbridge_proto::ranges::DEFAULT_RANGE_LIMIT;

type Answers<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>;

fn key(id: &str) -> SnapshotKey<'_> {
    match id.split_once('/') {
        Some((_, csp_id)) => SnapshotKey::Id(csp_id),
        None => SnapshotKey::Name(id),
    }
}

/// `max_results` 0 lets the plugin choose (the layer already refused negative values).
fn per_message(max_results: i32) -> u32 {
    match u32::try_from(max_results) {
        Ok(0) | Err(_) => DEFAULT_RANGE_LIMIT,
        Ok(n) => n,
    }
}

fn blocks(ranges: Vec<ByteRange>) -> Vec<pb::BlockMetadata> {
    ranges
        .into_iter()
        .map(|r| pb::BlockMetadata {
            byte_offset: r.offset as i64,
            size_bytes: r.length as i64,
        })
        .collect()
}

/// Streams the walk: a message per page, the first sent as soon as its page is read. A
/// walk without any range still sends one message, so that the CO learns the capacity.
/// An error ends the stream with its status (the spec's "abort transmission"); a CO that
/// goes away stops the walk at its next page.
fn stream<M: Send + 'static>(
    mut walk: RangeWalk,
    max_results: u32,
    secrets: Vec<String>,
    message: fn(i64, Vec<pb::BlockMetadata>) -> M,
) -> Answers<M> {
    let (tx, rx) = mpsc::channel(2);
    let capacity = walk.volume_size() as i64;
    tokio::spawn(async move {
        let mut sent = false;
        loop {
            let (item, last) = match walk.next_page(max_results).await {
                Ok(Some(ranges)) => (Ok(message(capacity, blocks(ranges))), false),
                Ok(None) if sent => return,
                Ok(None) => (Ok(message(capacity, Vec::new())), true),
                Err(e) => (Err(rpc::scrub(status(e), &secrets)), true),
            };
            if tx.send(item).await.is_err() || last {
                return;
            }
            sent = true;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl pb::snapshot_metadata_server::SnapshotMetadata for Csi {
    type GetMetadataAllocatedStream = Answers<pb::GetMetadataAllocatedResponse>;
    type GetMetadataDeltaStream = Answers<pb::GetMetadataDeltaResponse>;

    async fn get_metadata_allocated(
        &self,
        request: Request<pb::GetMetadataAllocatedRequest>,
    ) -> Result<Response<Self::GetMetadataAllocatedStream>, Status> {
        let req = request.into_inner();
        let secrets = secret_values(&req.secrets);
        let backend = self.backend(&req.secrets)?;
        let walk = self
            .engine
            .allocated_ranges(
                key(&req.snapshot_id),
                req.starting_offset,
                backend.as_deref(),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(stream(
            walk,
            per_message(req.max_results),
            secrets,
            |capacity, block_metadata| pb::GetMetadataAllocatedResponse {
                block_metadata_type: pb::BlockMetadataType::VariableLength as i32,
                volume_capacity_bytes: capacity,
                block_metadata,
            },
        )))
    }

    async fn get_metadata_delta(
        &self,
        request: Request<pb::GetMetadataDeltaRequest>,
    ) -> Result<Response<Self::GetMetadataDeltaStream>, Status> {
        let req = request.into_inner();
        let secrets = secret_values(&req.secrets);
        let backend = self.backend(&req.secrets)?;
        let walk = self
            .engine
            .changed_ranges(
                key(&req.base_snapshot_id),
                key(&req.target_snapshot_id),
                req.starting_offset,
                backend.as_deref(),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(stream(
            walk,
            per_message(req.max_results),
            secrets,
            |capacity, block_metadata| pb::GetMetadataDeltaResponse {
                block_metadata_type: pb::BlockMetadataType::VariableLength as i32,
                volume_capacity_bytes: capacity,
                block_metadata,
            },
        )))
    }
}
