//! The engine's domain model. Front ends translate these to their protocols; the engine
//! itself speaks none.

use std::collections::BTreeMap;
use volbridge_proto::csp;
use volbridge_provider as provider;

/// Where a cloned volume came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A snapshot, by name.
    Snapshot(String),
    /// A volume, by name (cloned through a temporary snapshot).
    Volume(String),
    /// A snapshot by its CSP id: members of a snapshot group share the group's name.
    SnapshotId(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub id: String,
    pub backend: String,
    pub size_bytes: u64,
    pub description: Option<String>,
    pub published: bool,
    /// `ready`, or the CSP's background status while data is still being copied.
    pub status: String,
    /// `(kind, id)`: `snapshot` with its id for clones.
    pub source: Option<(String, String)>,
    pub used_bytes: Option<u64>,
    /// Effective CSP config, camelCase keys (csp-api.md B38).
    pub context: BTreeMap<String, String>,
    /// (bytes done, bytes in all) of the copy filling a clone, while the CSP reports one.
    pub copy_progress: Option<(u64, u64)>,
}

impl Volume {
    pub fn from_csp(backend: &str, v: &csp::Volume) -> Volume {
        let status = match v.background_status() {
            None => "ready".to_owned(),
            Some(s) if s == csp::BACKGROUND_COMPLETED => "ready".to_owned(),
            Some(s) => s.to_owned(),
        };
        let source = v
            .base_snapshot_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| ("snapshot".to_owned(), s.to_owned()));
        Volume {
            name: v.name.clone().unwrap_or_default(),
            id: v.id.clone().unwrap_or_default(),
            backend: backend.to_owned(),
            size_bytes: v.size.unwrap_or(0),
            description: v.description.clone().filter(|d| !d.is_empty()),
            published: v.published.unwrap_or(false),
            status,
            source,
            used_bytes: v.used_bytes,
            context: provider::volume_context(v),
            copy_progress: v.copy_progress.map(|p| (p.bytes_done, p.bytes_total)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub id: String,
    pub backend: String,
    pub volume_id: String,
    pub volume_name: Option<String>,
    pub size_bytes: u64,
    pub creation_time: i64,
    pub ready_to_use: bool,
    pub in_use: bool,
    /// (bytes done, bytes in all) of the copy filling the snapshot, while one runs.
    pub copy_progress: Option<(u64, u64)>,
}

impl Snapshot {
    pub fn from_csp(backend: &str, s: &csp::Snapshot) -> Snapshot {
        Snapshot {
            name: s.name.clone().unwrap_or_default(),
            id: s.id.clone().unwrap_or_default(),
            backend: backend.to_owned(),
            volume_id: s.volume_id.clone().unwrap_or_default(),
            volume_name: s.volume_name.clone().filter(|n| !n.is_empty()),
            size_bytes: s.size.unwrap_or(0),
            creation_time: s.creation_time.unwrap_or(0),
            // A CSP that does not report readiness has the data in place when it answers.
            ready_to_use: s.ready_to_use.unwrap_or(true),
            in_use: s.in_use.unwrap_or(false),
            copy_progress: s.copy_progress.map(|p| (p.bytes_done, p.bytes_total)),
        }
    }
}

/// A configured backend as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    pub name: String,
    pub url: String,
    pub default: bool,
    pub embedded: bool,
    pub reachable: bool,
    /// What the CSP's capacity endpoint answered, when it has one.
    pub capacity: Option<volbridge_proto::csp::Capacity>,
    pub error: Option<String>,
}

/// What the engine needs to create a volume.
#[derive(Debug, Clone, Default)]
pub struct CreateVolume {
    pub name: String,
    /// Bytes; `None` takes the source's size for clones, the default size otherwise.
    pub size: Option<u64>,
    pub backend: Option<String>,
    pub description: Option<String>,
    pub params: BTreeMap<String, String>,
    pub source: Option<VolumeSource>,
    /// Several hosts may be granted the volume at once (csp-api.md B27).
    pub multi_initiator: bool,
}

/// How a volume is presented on a node: a mounted filesystem or the raw block device. The
/// engine's word (front ends name it, node records keep it); the attach layer has its own,
/// of the same shape, and gets it at the boundary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Access {
    Mount {
        /// `""` = the publish context's `fsType`, else ext4.
        fs_type: String,
        mount_options: Vec<String>,
    },
    Block,
}

impl Access {
    pub fn is_block(&self) -> bool {
        matches!(self, Access::Block)
    }
}

impl From<&Access> for volbridge_host::stage::Access {
    fn from(a: &Access) -> Self {
        match a {
            Access::Mount {
                fs_type,
                mount_options,
            } => volbridge_host::stage::Access::Mount {
                fs_type: fs_type.clone(),
                mount_options: mount_options.clone(),
            },
            Access::Block => volbridge_host::stage::Access::Block,
        }
    }
}
