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
}

impl Intent {
    pub fn describe(&self) -> String {
        match self {
            Intent::CloneFromVolume { backend, name, .. } => {
                format!("clone of volume '{name}' on backend '{backend}'")
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
