//! CSP REST API models (csp-api.md §4). Every field is optional on input and unknown fields
//! are ignored, so both the client and the embedded CSP decode whatever real CSPs send;
//! `None` fields are left out on output.

mod keys;

pub use keys::{camel_to_snake, snake_to_camel};

use crate::lenient;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Path prefix of every endpoint.
pub const API_PREFIX: &str = "/containers/v1";
/// Header that carries the session token.
pub const AUTH_HEADER: &str = "x-auth-token";
/// Header that selects the array in service mode.
pub const ARRAY_HEADER: &str = "x-array-ip";
/// Message fragment by which any CSP signals "out of space" (B42).
pub const INSUFFICIENT_SPACE: &str = "insufficient storage space";
/// Access protocol of the embedded CSP (csp-api.md §8.2).
pub const PROTOCOL_LOCAL: &str = "local";

/// The file name of the local CSP's image pool (docs/pool.md). A node that shares the
/// machine sees the pool's loop device among its own and must leave it alone, so both
/// sides know the name.
pub const LOCAL_POOL_IMAGE: &str = "volbridge-pool.img";
/// Name prefix of the snapshots the client makes to clone from a volume (B16).
pub const CLONE_SNAPSHOT_PREFIX: &str = "snap-for-clone-";
/// Config key that reports asynchronous create/clone progress (B39).
pub const BACKGROUND_STATUS: &str = "background_operation_status";
/// The value of [`BACKGROUND_STATUS`] once the operation is done.
pub const BACKGROUND_COMPLETED: &str = "Completed";
/// (ext) In a `Failed…` background status of a clone: the snapshot it was being copied
/// from did not survive (its own copy was interrupted by a restart, or failed). Nothing of
/// the clone is usable; a clone from a volume starts over (docs/copy-semantics.md rule 5).
pub const SOURCE_LOST: &str = "source snapshot lost";

pub type Config = Map<String, Value>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_i64"
    )]
    pub creation_time: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_i64"
    )]
    pub expiry_time: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient::string_list"
    )]
    pub iqns: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient::string_list"
    )]
    pub wwpns: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient::string_list"
    )]
    pub nqns: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient::string_list"
    )]
    pub networks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_domain: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_u64"
    )]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_snapshot_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_bool"
    )]
    pub clone: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_volume_id: Option<String>,
    /// Clone form from a volume in one step (volbridge extension, only to a CSP that lists
    /// [`EXTENSION_CLONE_FROM_VOLUME`]): the CSP copies the volume as it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_volume_id: Option<String>,
    /// Absent: unchanged; `null`: leave the group (PUT only, B21); `""`: none/unchanged.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::present"
    )]
    pub volume_group_id: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_bool"
    )]
    pub published: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Config>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_u64"
    )]
    pub used_bytes: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_u64"
    )]
    pub free_bytes: Option<u64>,
    /// (ext) Bytes of a running background copy (a clone's data), absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_progress: Option<CopyProgress>,
}

/// (ext, csp-api.md §8 and docs/copy-semantics.md) How far a background copy has come: the
/// bytes of the source's data copied so far and in all. `bytes_total` counts the data
/// ranges of the source (holes are not copied), so it can be far below `size`; it may grow
/// while a snapshot copy reads a volume still being written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyProgress {
    #[serde(default, deserialize_with = "lenient::u64_or_zero")]
    pub bytes_done: u64,
    #[serde(default, deserialize_with = "lenient::u64_or_zero")]
    pub bytes_total: u64,
}

impl CopyProgress {
    /// Whole percent done, 0–100 (100 when there is nothing to copy).
    pub fn percent(&self) -> u64 {
        if self.bytes_total == 0 {
            return 100;
        }
        (self.bytes_done.min(self.bytes_total) as u128 * 100 / self.bytes_total as u128) as u64
    }
}

impl Volume {
    /// The volume's group id, `None` when it has none (`""`, `null` or absent).
    pub fn group_id(&self) -> Option<&str> {
        self.volume_group_id
            .as_ref()
            .and_then(|g| g.as_deref())
            .filter(|g| !g.is_empty())
    }

    /// `config.background_operation_status`, if the CSP reports one (B39).
    pub fn background_status(&self) -> Option<&str> {
        self.config
            .as_ref()
            .and_then(|c| c.get(BACKGROUND_STATUS))
            .and_then(Value::as_str)
    }
}

/// Body of a publish (V6) or unpublish (V7) request, block or file form (§4.4, §4.6).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_protocol: Option<String>,
    /// File form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// File form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_control_list: Option<String>,
}

impl PublishOptions {
    /// Whether this is the NFS (file) form of the body.
    pub fn is_file_form(&self) -> bool {
        self.access_protocol
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("nfs"))
            || (self.host_uuid.is_none() && self.access_control_list.is_some())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondaryLunInfo {
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub lun_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub target_names: Vec<String>,
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub discovery_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_password: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_string_or_number"
    )]
    pub target_port: Option<String>,
}

/// Block publish response (§4.5). Canonical emission always carries the first five fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishInfo {
    #[serde(default)]
    pub serial_number: String,
    #[serde(default)]
    pub access_protocol: String,
    /// Missing decodes as 0 (servers on the reference model drop zero); negative is kept so
    /// the client can refuse it (B31).
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub lun_id: Option<i64>,
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub target_names: Vec<String>,
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub discovery_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_password: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_string_or_number"
    )]
    pub target_port: Option<String>,
    #[serde(
        rename = "PeerArrayDetails",
        alias = "peerArrayDetails",
        alias = "peer_array_details",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub peer_array_details: Vec<SecondaryLunInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_path: Option<String>,
}

/// File publish response (§4.6).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishFileInfo {
    #[serde(default)]
    pub export_ip: String,
    #[serde(default)]
    pub mount_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_u64"
    )]
    pub size: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_i64"
    )]
    pub creation_time: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_bool"
    )]
    pub ready_to_use: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_bool"
    )]
    pub in_use: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Config>,
    /// (ext) Bytes of the copy that fills the snapshot while `ready_to_use` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_progress: Option<CopyProgress>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_i64"
    )]
    pub creation_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Config>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_group_name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_i64"
    )]
    pub creation_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "volumes")]
    pub snapshots: Option<Vec<Snapshot>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Config>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicationPartner {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "partner_name"
    )]
    pub name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "alive",
        deserialize_with = "lenient::opt_bool"
    )]
    pub is_alive: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "repl_direction"
    )]
    pub repl_role: Option<String>,
}

/// `GET /capacity` (ext, §4.9).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub total_bytes: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub free_bytes: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub used_bytes: Option<u64>,
    /// The sizes of all volumes added up (thin provisioning: may exceed `total_bytes`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_u64"
    )]
    pub provisioned_bytes: Option<u64>,
    /// The most `provisioned_bytes` may reach; creates beyond it are refused.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_u64"
    )]
    pub provisioned_limit_bytes: Option<u64>,
    /// How the CSP stores volumes (volbridge extension; the local CSP fills it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolStatus>,
    /// The optional volbridge endpoints this CSP serves, by name (e.g.
    /// [`crate::ranges::EXTENSION_SNAPSHOT_METADATA`]); a client asks only for what is
    /// listed here, so a CSP without an extension is never probed with guesses.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient::string_list"
    )]
    pub extensions: Vec<String>,
}

/// In [`Capacity::extensions`]: V2 takes `base_volume_id` with `clone: true` and makes the
/// clone in one step, with no snapshot.
pub const EXTENSION_CLONE_FROM_VOLUME: &str = "clone_from_volume";

/// `GET /mutable_config` (ext): the volume `config` keys (snake_case) whose change on an
/// existing volume (V4) takes effect. A CSP that does not serve it names none, and the
/// engine then refuses every mutable parameter: it cannot promise that a change was applied
/// as a whole or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutableConfig {
    #[serde(default)]
    pub volume: Vec<String>,
}

/// The local CSP's pool (csp-api.md B39b): its mode, whether snapshots and clones share
/// extents, and why this mode was chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// `dir`, `xfs-image` or `btrfs-image`.
    pub mode: String,
    pub reflink: bool,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorItem {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// The wrapped error body every CSP error carries (§4.10).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub errors: Vec<ErrorItem>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            errors: vec![ErrorItem {
                code: code.into(),
                message: message.into(),
            }],
        }
    }

    /// Decodes an error response the way B40 asks: the wrapped form, the bare form, or
    /// anything else as one element with `reason` and up to 512 bytes of the raw text.
    pub fn parse(body: &[u8], reason: &str) -> Self {
        #[derive(Deserialize)]
        struct Bare {
            code: Option<Value>,
            message: Option<String>,
        }
        if let Ok(w) = serde_json::from_slice::<ErrorBody>(body) {
            if !w.errors.is_empty() {
                return w;
            }
        }
        if let Ok(Bare {
            code,
            message: Some(message),
        }) = serde_json::from_slice::<Bare>(body)
        {
            let code = match code {
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => reason.to_owned(),
            };
            return ErrorBody::new(code, message);
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
        ErrorBody::new(reason, text.trim().to_owned())
    }

    /// Whether the response came in the wrapped form with a non-empty code and message.
    pub fn is_canonical(body: &[u8]) -> bool {
        serde_json::from_slice::<ErrorBody>(body).is_ok_and(|w| {
            !w.errors.is_empty()
                && w.errors
                    .iter()
                    .all(|e| !e.code.is_empty() && !e.message.is_empty())
        })
    }

    /// All messages joined, for error text.
    pub fn message(&self) -> String {
        let parts: Vec<&str> = self
            .errors
            .iter()
            .map(|e| e.message.as_str())
            .filter(|m| !m.is_empty())
            .collect();
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests;
