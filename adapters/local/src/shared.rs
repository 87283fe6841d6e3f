//! The state every request handler shares: the data dir's layout, the metadata store,
//! locks, tokens and the pool. Apart from the server that builds it, so that handlers and
//! the server do not import each other.

use crate::auth::Tokens;
use crate::config::LocalCspConfig;
use crate::locks::KeyedLocks;
use crate::pool::Pool;
use crate::store::Store;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Where the images live. Paths are built only from ids.
pub struct Dirs {
    /// The data dir: metadata, the lock, and an image pool's image.
    pub root: PathBuf,
    pub volumes: PathBuf,
    pub snapshots: PathBuf,
    pub retained: PathBuf,
    /// Canonical form of `volumes`, for `local_path` (§8.2).
    pub canonical_volumes: PathBuf,
}

fn image(dir: &Path, id: &str) -> PathBuf {
    // Ids are validated when records are created and loaded; this guard keeps a broken
    // invariant from ever naming a path outside the directory.
    if crate::ids::is_id(id) {
        dir.join(format!("{id}.img"))
    } else {
        dir.join("invalid-id.img")
    }
}

impl Dirs {
    pub fn volume(&self, id: &str) -> PathBuf {
        image(&self.volumes, id)
    }
    pub fn snapshot(&self, id: &str) -> PathBuf {
        image(&self.snapshots, id)
    }
    pub fn retained(&self, id: &str) -> PathBuf {
        image(&self.retained, id)
    }
    pub fn local_path(&self, id: &str) -> String {
        image(&self.canonical_volumes, id)
            .to_string_lossy()
            .into_owned()
    }
}

/// Wakes background copies waiting for a snapshot copy to finish.
#[derive(Default)]
pub struct CopyEvents {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl CopyEvents {
    pub fn notify(&self) {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.cv.notify_all();
    }
    pub fn wait(&self, timeout: Duration) {
        let g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        let start = *g;
        let _ = self.cv.wait_timeout_while(g, timeout, |n| *n == start);
    }
}

pub struct Shared {
    pub cfg: LocalCspConfig,
    pub dirs: Dirs,
    pub store: Store,
    pub locks: KeyedLocks,
    pub tokens: Tokens,
    pub copy_events: CopyEvents,
    pub pool: Arc<Pool>,
    /// iSCSI and NVMe/TCP exports of published volumes.
    pub exports: crate::export::Exports,
    /// Held for the life of the server: one process per data dir.
    pub(crate) _dir_lock: File,
}
