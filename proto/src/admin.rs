//! Admin REST API models: JSON over the daemon's unix socket (`proto/openapi/admin.yaml`).
//! The CLI and the FlexVolume binary are its clients.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityInfo {
    pub total_bytes: u64,
    pub free_bytes: u64,
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
