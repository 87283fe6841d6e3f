//! The refcounted mount table: the volumes Docker knows through the volume plugin, and
//! their mount references keyed by (volume, mount ID) with a counter
//! (docker-volume-plugin.md §7). The first reference mounts the volume at a per-volume
//! path (through the engine's own mount flow: CSP grant, stage, bind), the last one
//! unmounts and detaches it, after an optional delay that lets the copy-up cycle and the
//! start of one `docker run` share a single attach. The Docker front end and
//! `volbridge docker` (admin API) use it; the types keep Docker's name because they hold
//! Docker's options and mount IDs.
//!
//! Crash safety: a mount is made (and recorded by the engine's own phase records) before
//! its reference is counted, so a crash in between leaves a mount with no reference, which
//! the reconciler pass (`teardown`) tears down; a reference is never counted for a mount
//! that was not made. Over-counting (a crash after persisting, then Docker's re-send) only
//! delays a teardown; `volbridge docker release` repairs it.
//!
//! `table`: the records, in memory and on disk, and the boot ID; `volumes`: create, adopt,
//! remove; `refs`: Mount and Unmount; `teardown`: the last reference gone; `release`:
//! references Docker lost.

mod refs;
mod release;
mod table;
mod teardown;
mod volumes;

use crate::model::VolumeSource;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::RwLock;
use std::time::Duration;
use volbridge_base::error::{Error, Object};

pub const DOCKER_VOLUMES: &str = "docker-volumes";
/// How long a mount that finished after its caller gave up is kept for a retrying Mount.
pub const LATE_MOUNT_KEEP: Duration = Duration::from_secs(60);

/// One volume as Docker knows it: its options and this node's mount references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerVolume {
    /// The Docker name (also the CSP volume name).
    pub name: String,
    pub backend: String,
    /// The CSP volume id.
    pub volume_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The options the user gave, under their canonical spelling.
    pub options: BTreeMap<String, String>,
    pub size_bytes: u64,
    /// `""`: whatever the volume holds (clones), else the filesystem made on first mount.
    pub fs_type: String,
    pub read_only: bool,
    #[serde(default)]
    pub mount_options: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// `snapshot:<name>` or `volume:<name>` for clones.
    #[serde(default)]
    pub source: Option<String>,
    /// Mount ID → count.
    #[serde(default)]
    pub refs: BTreeMap<String, u32>,
    /// Where the volume is mounted for Docker, while it is.
    #[serde(default)]
    pub mounted_at: Option<PathBuf>,
    /// The last teardown failed; the reconciler retries it.
    #[serde(default)]
    pub release_pending: bool,
}

impl DockerVolume {
    pub fn total_refs(&self) -> u64 {
        self.refs.values().map(|n| u64::from(*n)).sum()
    }

    /// `available`, `mounted` or `release-pending`.
    pub fn state(&self) -> &'static str {
        if self.total_refs() > 0 {
            "mounted"
        } else if self.release_pending {
            "release-pending"
        } else if self.mounted_at.is_some() {
            // Zero references inside the unstage delay: still attached here.
            "attached"
        } else {
            "available"
        }
    }

    /// The mount point Docker is given, while this node holds references.
    pub fn mountpoint(&self) -> Option<&Path> {
        if self.total_refs() > 0 {
            self.mounted_at.as_deref()
        } else {
            None
        }
    }
}

/// What Create needs; the front end has parsed and checked the user's options.
#[derive(Debug, Clone, Default)]
pub struct DockerCreate {
    pub name: String,
    pub backend: Option<String>,
    pub size: Option<u64>,
    pub description: Option<String>,
    /// CSP config, camelCase keys (`fsType`, `fsCreateOptions`, `fsOwner`, pass-through keys).
    pub params: BTreeMap<String, String>,
    pub source: Option<VolumeSource>,
    pub fs_type: String,
    pub read_only: bool,
    pub mount_options: Vec<String>,
    /// The options as given (canonical key spelling), for idempotence and `inspect`.
    pub options: BTreeMap<String, String>,
}

/// What `volbridge docker release` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerRelease {
    pub volume: String,
    /// References dropped.
    pub dropped: u64,
    /// References left (another ID kept, with `--id`).
    pub remaining: u64,
    /// The volume was unmounted and detached.
    pub unmounted: bool,
}

/// Settings of the Docker mount flow.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// Directory the per-volume mount points live in (default `<state dir>/mounts`).
    pub mount_base: Option<PathBuf>,
    /// How long a volume stays mounted after its last reference is gone.
    pub unstage_delay: Duration,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            mount_base: None,
            unstage_delay: Duration::from_secs(5),
        }
    }
}

/// The in-memory side of the records (loaded on first use).
#[derive(Default)]
pub struct MountTable {
    volumes: RwLock<Option<BTreeMap<String, DockerVolume>>>,
    settings: RwLock<DockerSettings>,
    /// Volumes whose teardown waits for the unstage delay, with the generation that armed it.
    deferred: std::sync::Mutex<HashMap<String, u64>>,
    generation: AtomicU64,
    /// What the load found worth reporting (boot change), for the first reconcile report.
    load_notes: std::sync::Mutex<Vec<String>>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn no_such_volume(name: &str) -> Error {
    Error::not_found(format!("no such volume: {name:?}")).about(Object::Volume(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record with the given options (volumes.rs's tests use it too).
    pub(super) fn volume(options: &[(&str, &str)]) -> DockerVolume {
        DockerVolume {
            name: "db1".into(),
            backend: "local".into(),
            volume_id: "abc".into(),
            created_at: 0,
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            size_bytes: 1 << 30,
            fs_type: "ext4".into(),
            read_only: false,
            mount_options: Vec::new(),
            description: None,
            source: None,
            refs: BTreeMap::new(),
            mounted_at: None,
            release_pending: false,
        }
    }

    #[test]
    fn state_and_mountpoint_follow_refs() {
        let mut v = volume(&[]);
        assert_eq!(v.state(), "available");
        v.mounted_at = Some("/m/x".into());
        assert_eq!(v.state(), "attached");
        assert_eq!(v.mountpoint(), None);
        v.refs.insert("a".into(), 2);
        v.refs.insert("b".into(), 1);
        assert_eq!(v.total_refs(), 3);
        assert_eq!(v.state(), "mounted");
        assert_eq!(v.mountpoint(), Some(Path::new("/m/x")));
        v.refs.clear();
        v.release_pending = true;
        assert_eq!(v.state(), "release-pending");
    }
}
