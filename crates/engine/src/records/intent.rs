//! Intent records: written before a multi-step operation and removed after it, so that a
//! crash in between is finished or rolled back by the reconciler at the next start.

use serde::{Deserialize, Serialize};

pub const COLLECTION: &str = "intents";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Intent {
    /// Clone `name` from volume `parent_id` through a temporary `snap-for-clone-` snapshot
    /// whose description is `name` (csp-api.md B16). Replay removes that snapshot once the
    /// clone is complete or absent.
    CloneFromVolume {
        backend: String,
        name: String,
        parent_id: String,
    },
    /// Mount `name` at `target` (attach at the CSP, stage, publish). Replay rolls back an
    /// unfinished mount so that nothing stays attached or mounted for a command that failed.
    MountVolume {
        backend: String,
        name: String,
        volume_id: String,
        target: std::path::PathBuf,
    },
    /// Unmount `name` from `target` and release it when unused. Replay finishes it.
    UnmountVolume {
        backend: String,
        name: String,
        volume_id: String,
        target: std::path::PathBuf,
    },
    /// Make group snapshot `name`: a volume group of that name (made now unless
    /// `made_volume_group` is false), then its snapshot group. Replay finds it complete or
    /// removes the volume group it made.
    CreateGroupSnapshot {
        backend: String,
        name: String,
        made_volume_group: bool,
    },
    /// Delete group snapshot `name` (snapshot group `id`), then its volume group. Replay
    /// finishes it.
    DeleteGroupSnapshot {
        backend: String,
        name: String,
        id: String,
    },
}

impl Intent {
    pub fn describe(&self) -> String {
        match self {
            Intent::CloneFromVolume { backend, name, .. } => {
                format!("clone of volume '{name}' on backend '{backend}'")
            }
            Intent::MountVolume { name, target, .. } => {
                format!("mount of volume '{name}' at {}", target.display())
            }
            Intent::UnmountVolume { name, target, .. } => {
                format!("unmount of volume '{name}' from {}", target.display())
            }
            Intent::CreateGroupSnapshot { backend, name, .. } => {
                format!("group snapshot '{name}' on backend '{backend}'")
            }
            Intent::DeleteGroupSnapshot { backend, name, .. } => {
                format!("deletion of group snapshot '{name}' on backend '{backend}'")
            }
        }
    }
}

/// A fresh record key, unique within this state dir: time, process and a counter.
pub fn new_key() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{n:x}", std::process::id())
}
