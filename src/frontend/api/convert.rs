//! Engine model → admin API model.

use crate::engine::{BackendStatus, Snapshot, Volume};
use volbridge_proto::admin::{
    BackendInfo, CapacityInfo, SnapshotInfo, VolumeInfo, VolumeSourceInfo,
};
use volbridge_proto::csp::CopyProgress;

pub fn volume(v: Volume) -> VolumeInfo {
    VolumeInfo {
        name: v.name,
        id: v.id,
        backend: v.backend,
        size_bytes: v.size_bytes,
        description: v.description,
        published: v.published,
        status: v.status,
        source: v.source.map(|(kind, id)| VolumeSourceInfo { kind, id }),
        used_bytes: v.used_bytes,
        config: v.context,
        filesystem_resize: None,
        copy_progress: v.copy_progress.map(progress),
    }
}

pub fn snapshot(s: Snapshot) -> SnapshotInfo {
    SnapshotInfo {
        name: s.name,
        id: s.id,
        backend: s.backend,
        volume_id: s.volume_id,
        volume_name: s.volume_name,
        size_bytes: s.size_bytes,
        creation_time: s.creation_time,
        ready_to_use: s.ready_to_use,
        in_use: s.in_use,
        copy_progress: s.copy_progress.map(progress),
    }
}

fn progress((bytes_done, bytes_total): (u64, u64)) -> CopyProgress {
    CopyProgress {
        bytes_done,
        bytes_total,
    }
}

pub fn backend(b: BackendStatus) -> BackendInfo {
    BackendInfo {
        name: b.name,
        url: b.url,
        default: b.default,
        embedded: b.embedded,
        reachable: b.reachable,
        pool: b.capacity.as_ref().and_then(|c| c.pool.clone()),
        capacity: b.capacity.and_then(|c| {
            Some(CapacityInfo {
                total_bytes: c.total_bytes?,
                free_bytes: c.free_bytes?,
                provisioned_bytes: c.provisioned_bytes,
                provisioned_limit_bytes: c.provisioned_limit_bytes,
            })
        }),
        error: b.error,
    }
}
