//! Records → wire models (csp-api.md §4).

use crate::model::{SnapshotGroupRec, SnapshotRec, VolumeGroupRec, VolumeRec};
use crate::shared::Dirs;
use crate::state::State;
use volbridge_proto::csp::{Host, Snapshot, SnapshotGroup, Volume, VolumeGroup};

pub fn volume(v: &VolumeRec, dirs: &Dirs) -> Volume {
    let used = crate::files::allocated_bytes(&dirs.volume(&v.id))
        .unwrap_or(0)
        .min(v.size);
    Volume {
        id: Some(v.id.clone()),
        name: Some(v.name.clone()),
        size: Some(v.size),
        description: Some(v.description.clone().unwrap_or_default()),
        base_snapshot_id: Some(v.base_snapshot_id.clone()),
        clone: Some(v.is_clone()),
        parent_volume_id: Some(v.parent_volume_id.clone()),
        base_volume_id: (v.is_clone() && v.base_snapshot_id.is_empty())
            .then(|| v.parent_volume_id.clone()),
        volume_group_id: Some(Some(v.volume_group_id.clone())),
        published: Some(!v.hosts.is_empty()),
        config: Some(v.config.clone()),
        used_bytes: Some(used),
        free_bytes: Some(v.size - used),
        copy_progress: crate::state::copy_running(v)
            .then(|| crate::copies::progress(&v.id))
            .flatten(),
    }
}

/// The short member form used inside a volume group.
pub fn member(v: &VolumeRec) -> Volume {
    Volume {
        id: Some(v.id.clone()),
        name: Some(v.name.clone()),
        size: Some(v.size),
        ..Volume::default()
    }
}

pub fn snapshot(s: &SnapshotRec, state: &State) -> Snapshot {
    Snapshot {
        id: Some(s.id.clone()),
        name: Some(s.name.clone()),
        description: Some(s.description.clone().unwrap_or_default()),
        volume_id: Some(s.volume_id.clone()),
        volume_name: Some(s.volume_name.clone()),
        size: Some(s.size),
        creation_time: Some(s.creation_time),
        ready_to_use: Some(s.ready),
        in_use: Some(state.snapshot_in_use(s)),
        config: Some(s.config.clone()),
        copy_progress: (!s.ready).then(|| crate::copies::progress(&s.id)).flatten(),
    }
}

/// A host as answered: `id` = `uuid`, never the CHAP secret.
pub fn host(h: &Host) -> Host {
    Host {
        id: h.uuid.clone(),
        chap_password: None,
        ..h.clone()
    }
}

pub fn volume_group(g: &VolumeGroupRec, state: &State) -> VolumeGroup {
    VolumeGroup {
        id: Some(g.id.clone()),
        name: Some(g.name.clone()),
        description: Some(g.description.clone().unwrap_or_default()),
        creation_time: Some(g.creation_time),
        volumes: Some(state.members_of(&g.id).map(member).collect()),
        config: Some(g.config.clone()),
    }
}

pub fn snapshot_group(g: &SnapshotGroupRec, state: &State) -> SnapshotGroup {
    SnapshotGroup {
        id: Some(g.id.clone()),
        name: Some(g.name.clone()),
        volume_group_id: Some(g.volume_group_id.clone()),
        volume_group_name: state
            .volume_group(&g.volume_group_id)
            .map(|vg| vg.name.clone()),
        creation_time: Some(g.creation_time),
        snapshots: Some(
            g.snapshot_ids
                .iter()
                .filter_map(|id| state.snapshot(id))
                .map(|s| snapshot(s, state))
                .collect(),
        ),
        config: Some(g.config.clone()),
    }
}
