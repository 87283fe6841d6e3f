//! Admin REST API models: JSON over the daemon's unix socket (`proto/openapi/admin.yaml`).
//! The CLI and the FlexVolume binary are its clients.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Percent-encodes one URL path segment (RFC 3986 unreserved bytes kept): a name in an
/// admin API path, from the CLI and the FlexVolume driver alike.
pub fn path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Version prefix of every admin endpoint.
pub const API_PREFIX: &str = "/v1";

/// `POST /v1/volumes`: create, or clone when a source is given. Idempotent by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeCreateRequest {
    pub name: String,
    /// Bytes as a number, or a string with a unit (`"1Gi"`, `"500Mi"`, `"10G"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Parameters passed to the CSP as `config` (camelCase keys).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Name of a snapshot to clone from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
    /// Name of a volume to clone from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_volume: Option<String>,
}

/// `POST /v1/volumes/{name}/expand`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeExpandRequest {
    pub size: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSourceInfo {
    /// `snapshot` or `volume`.
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    pub id: String,
    pub backend: String,
    pub size_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub published: bool,
    /// `ready`, or the CSP's background status while a clone copies.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<VolumeSourceInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// The CSP's effective config, keys in camelCase.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// After an expand: how the filesystem of a volume staged on this node grew (`online`,
    /// `offline`, or `device only` for block volumes), or `next mount` when the volume is
    /// not staged here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem_resize: Option<String>,
    /// While the CSP still copies a clone's data: bytes copied and in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_progress: Option<crate::csp::CopyProgress>,
}

/// `POST /v1/snapshots`. Idempotent by (name, volume).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotCreateRequest {
    pub name: String,
    pub volume: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub id: String,
    pub backend: String,
    pub volume_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    pub size_bytes: u64,
    pub creation_time: i64,
    pub ready_to_use: bool,
    pub in_use: bool,
    /// While the CSP still copies the snapshot's data: bytes copied and in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_progress: Option<crate::csp::CopyProgress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityInfo {
    pub total_bytes: u64,
    pub free_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned_limit_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    pub name: String,
    pub url: String,
    pub default: bool,
    /// The local CSP running inside this daemon.
    pub embedded: bool,
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityInfo>,
    /// How the backend stores volumes, when it says (the local CSP does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<crate::csp::PoolStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every admin error body: `{"error": {"kind", "message", "field"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// One of the engine error kinds (`InvalidArgument`, `NotFound`, …).
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `GET /v1/status`: what the daemon is and what its start-up reconciliation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub state_dir: String,
    pub default_backend: String,
    pub pending_intents: usize,
    pub reconciled: Vec<String>,
}

/// `POST /v1/volumes/{name}/mount`: attach, stage and publish on this node. Idempotent by
/// (volume, path).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRequest {
    /// Absolute directory (or, with `block`, the file the device node is bound onto).
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub block: bool,
    /// `ext4` (default), `xfs` or `btrfs`; only used to format a blank volume.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fs_type: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    pub volume: String,
    pub backend: String,
    /// Empty for `attach` (no mount).
    pub path: String,
    /// The device as resolved now (it may differ after a restart).
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<String>,
    /// A blank volume was formatted by this call.
    pub formatted: bool,
    pub read_only: bool,
}

/// `POST /v1/volumes/{name}/unmount`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmountRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmountInfo {
    /// `false` when volbridge had nothing mounted there (still success).
    pub unmounted: bool,
}

/// `POST /v1/volumes/{name}/attach` and `/detach`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default)]
    pub read_only: bool,
}

/// `GET /v1/volumes/{name}/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeStatsInfo {
    pub volume: String,
    pub path: String,
    /// `false` when the device is gone or the path is not mounted; see `message`.
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_inodes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_inodes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_inodes: Option<u64>,
}

/// One volume staged on this node, with where it is published (`GET /v1/node`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeVolumeInfo {
    pub volume: String,
    pub backend: String,
    pub volume_key: String,
    pub access_protocol: String,
    pub staging_path: String,
    pub block: bool,
    pub read_only: bool,
    /// `creating`, `ready` or `removing`.
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<String>,
    /// `co` (CSI) or `engine` (CLI, Docker, Flex).
    pub owner: String,
    pub pinned: bool,
    pub published_at: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub uuid: String,
    pub hostname: String,
    pub volumes: Vec<NodeVolumeInfo>,
    /// Volumes nothing on this node uses whose CSP grant is still to be ended (their
    /// backend is unknown or unreachable for now).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_releases: Vec<PendingRelease>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRelease {
    pub backend: String,
    pub volume: String,
}

/// `GET /v1/docker/volumes`: one Docker volume of this node and its mount references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerRefs {
    pub name: String,
    pub backend: String,
    pub state: String,
    pub mountpoint: Option<String>,
    /// Mount ID → how many Mounts Docker sent for it without an Unmount.
    pub refs: BTreeMap<String, u32>,
}

/// `POST /v1/docker/volumes/{name}/release`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ReleaseRequest {
    /// One mount ID; none: all of them.
    pub id: Option<String>,
    /// Release even while a container still mounts the volume.
    pub force: bool,
}

/// The answer of `POST /v1/docker/volumes/{name}/release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerReleaseInfo {
    pub volume: String,
    /// References dropped.
    pub dropped: u64,
    /// References left (another ID kept, with `id`).
    pub remaining: u64,
    /// The volume was unmounted and detached.
    pub unmounted: bool,
}

/// `GET /v1/reconcile` (the last pass) and `POST /v1/reconcile` (a pass now).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileInfo {
    pub actions: Vec<String>,
    pub pending: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments() {
        assert_eq!(path_segment("pv-data_1.x~"), "pv-data_1.x~");
        assert_eq!(path_segment("my vol/é"), "my%20vol%2F%C3%A9");
    }

    /// The Docker reference types kept the JSON they had in the front end.
    #[test]
    fn docker_reference_json() {
        let refs = DockerRefs {
            name: "db1".into(),
            backend: "local".into(),
            state: "mounted".into(),
            mountpoint: None,
            refs: [("abc".to_owned(), 2)].into(),
        };
        assert_eq!(
            serde_json::to_string(&refs).unwrap(),
            r#"{"name":"db1","backend":"local","state":"mounted","mountpoint":null,"refs":{"abc":2}}"#
        );
        assert_eq!(
            serde_json::to_string(&ReleaseRequest::default()).unwrap(),
            r#"{"id":null,"force":false}"#
        );
        let r: ReleaseRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(r, ReleaseRequest::default());
        let r: ReleaseRequest = serde_json::from_str(r#"{"id":"m1","force":true}"#).unwrap();
        assert_eq!((r.id.as_deref(), r.force), (Some("m1"), true));
        let done = DockerReleaseInfo {
            volume: "db1".into(),
            dropped: 1,
            remaining: 0,
            unmounted: true,
        };
        assert_eq!(
            serde_json::to_string(&done).unwrap(),
            r#"{"volume":"db1","dropped":1,"remaining":0,"unmounted":true}"#
        );
    }
}
