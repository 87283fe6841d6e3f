//! Node-side records: what this node staged and published, written before the host is
//! touched (phase `…ing`) and after it is done (phase `…ed`), so the reconciler can tell a
//! finished state from an interrupted one after a crash.

use crate::Access;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use volbridge_host::PublishedVolume;

pub const STAGES: &str = "stages";
pub const PUBLISHES: &str = "publishes";
/// "mkfs started on a blank device" markers, keyed like stages: a crash mid-mkfs leaves a
/// half-made signature that only these records allow volbridge to overwrite.
pub const FORMATS: &str = "formats";
/// Volumes expanded at the CSP while not staged here: their filesystem grows at the next
/// stage.
pub const GROWS: &str = "grows";
/// Offline grows under way, keyed like stages: written before the filesystem is unmounted
/// for an offline resize and removed when it is mounted again. One left after a crash tells
/// the reconciler to finish the resize before anything mounts the device.
pub const OFFLINE_GROWS: &str = "offline-grows";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Being set up; a crash here is rolled back.
    Creating,
    /// Done; the reconciler restores it if the kernel lost it (reboot).
    Ready,
    /// Being torn down; a crash here is finished.
    Removing,
}

/// Who asked for a stage: a CO that drives stage and publish itself (CSI), or the engine's
/// own mount/attach flows (CLI, Docker, Flex), which also own the CSP grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    Co,
    Engine,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    /// The caller's key for the volume (CSI volume id, or `<backend>-<volume id>`).
    pub volume_key: String,
    pub backend: String,
    pub volume_name: String,
    pub owner: Owner,
    /// Kept attached with no mount wanted (`volume attach`): the reconciler leaves it.
    #[serde(default)]
    pub pinned: bool,
    /// The publish context (csp-api.md §6). May hold CHAP secrets: 0600, never logged.
    pub context: BTreeMap<String, String>,
    pub staging_path: PathBuf,
    pub access: Access,
    pub read_only: bool,
    pub phase: Phase,
    /// The filesystem found or made (mount access, once ready).
    #[serde(default)]
    pub fs_type: Option<String>,
    /// The staging directory did not exist and the stage made it (a CO that makes none:
    /// Docker Swarm); unstage removes it again.
    #[serde(default)]
    pub made_staging_dir: bool,
}

impl StageRecord {
    /// The publish context, parsed into what this node attaches; errors name the volume.
    pub fn published(&self) -> volbridge_base::Result<PublishedVolume> {
        PublishedVolume::parse(&self.volume_name, &self.context)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRecord {
    pub volume_key: String,
    pub target: PathBuf,
    pub staging_path: PathBuf,
    pub block: bool,
    pub read_only: bool,
    #[serde(default)]
    pub mount_options: Vec<String>,
    /// Remove the target on unpublish (CSI: the SP removes what it created).
    pub remove_target: bool,
    /// Published for one workload only (CSI SINGLE_NODE_SINGLE_WRITER): no second target.
    /// `None` in a record from before the flag: not known, so neither refused nor refusing.
    #[serde(default)]
    pub single_writer: Option<bool>,
    pub phase: Phase,
}

/// The stage key for the engine's own flows: backend and CSP volume id.
pub fn engine_volume_key(backend: &str, volume_id: &str) -> String {
    format!("{backend}-{volume_id}")
}

/// A name safe as one path component: kept when it is plain, hex-encoded otherwise, so a
/// CSP-chosen id never walks out of the staging directory.
pub fn path_component(key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= 200
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if plain {
        key.to_owned()
    } else if key.len() <= 120 {
        let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x{hex}")
    } else {
        // Cut short, two long keys with one beginning would share a directory: a digest
        // keeps them apart within a file name's length.
        format!("h{}", super::sha256_hex(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_with_one_beginning_stay_apart() {
        let stem = format!("user@host-{}", "v".repeat(130));
        let (a, b) = (format!("{stem}-a"), format!("{stem}-b"));
        let (ca, cb) = (path_component(&a), path_component(&b));
        assert_ne!(ca, cb);
        assert_eq!(ca.len(), 65);
        assert_eq!(ca, path_component(&a), "stable");
        assert_eq!(path_component("a@b"), "x614062", "short keys as before");
    }

    #[test]
    fn path_components_never_escape() {
        assert_eq!(path_component("local-9d41c0"), "local-9d41c0");
        for hostile in ["../etc", "a/b", "..", ".", "", "x\0y"] {
            let c = path_component(hostile);
            assert!(
                !c.contains('/') && c != ".." && c != "." && !c.is_empty(),
                "{c}"
            );
        }
    }
}
