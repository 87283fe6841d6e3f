//! Crash recovery at open: brings image files and metadata back into agreement.
//!
//! The write ordering (see the crate docs) means every disagreement has one safe answer:
//! * an image without a record was never acknowledged, or its delete was: remove it (or
//!   finish its move to `retained/`);
//! * a volume record whose image is missing or short was acknowledged before its sparse
//!   file reached the disk: it held no data, so recreate or extend it;
//! * a snapshot that was still being copied has no complete data, and the volume it read
//!   has moved on since: drop it (it never was ready, so no CO was told it could use it);
//! * a clone whose copy was running: restart the copy from its (immutable) snapshot; a
//!   clone whose snapshot was dropped above fails when its copy restarts;
//! * a hidden snapshot (deleted while clones copied from it) that no restarted copy needs
//!   any more: drop it.

use crate::files;
use crate::ids::is_id;
use crate::model::Tables;
use crate::shared::Dirs;
use crate::state;
use std::collections::BTreeSet;
use std::io;
use std::path::Path;

/// Fixes files and `tables` in place; returns the clones whose copy must be restarted.
pub fn reconcile(dirs: &Dirs, t: &mut Tables) -> io::Result<Vec<String>> {
    // Records with ids this crate could not have made would name paths it must not use.
    t.volumes.retain(|id, v| is_id(id) && v.id == *id);
    t.snapshots.retain(|id, s| is_id(id) && s.id == *id);

    let unfinished: Vec<String> = t
        .snapshots
        .values()
        .filter(|s| !s.ready || !dirs.snapshot(&s.id).is_file())
        .map(|s| s.id.clone())
        .collect();
    for id in &unfinished {
        tracing::warn!(snapshot = %id, "dropping a snapshot whose copy did not finish");
        t.snapshots.remove(id);
    }
    let needed: BTreeSet<String> = t
        .volumes
        .values()
        .filter(|v| state::copy_running(v))
        .map(|v| v.base_snapshot_id.clone())
        .collect();
    let released: Vec<String> = t
        .snapshots
        .values()
        .filter(|s| s.hidden && !needed.contains(&s.id))
        .map(|s| s.id.clone())
        .collect();
    for id in &released {
        tracing::info!(snapshot = %id, "dropping a deleted snapshot that no clone copy needs any more");
        t.snapshots.remove(id);
    }
    let snapshot_ids: BTreeSet<String> = t.snapshots.keys().cloned().collect();
    for g in t.snapshot_groups.values_mut() {
        g.snapshot_ids.retain(|id| snapshot_ids.contains(id));
    }

    let mut restart = Vec::new();
    for v in t.volumes.values() {
        let path = dirs.volume(&v.id);
        let thick = crate::model::config_bool(&v.config, "thick")
            .ok()
            .flatten()
            .unwrap_or(false);
        if state::copy_running(v) {
            // Start the copy over on an empty file: the copy writes only non-zero blocks.
            let f = open_or_create(&path)?;
            f.set_len(0)?;
            f.set_len(v.size)?;
            restart.push(v.id.clone());
            continue;
        }
        let f = open_or_create(&path)?;
        let len = f.metadata()?.len();
        if len != v.size {
            tracing::warn!(volume = %v.id, len, size = v.size, "resizing a volume image to its recorded size");
            f.set_len(v.size)?;
            if thick && len < v.size {
                files::allocate(&f, len, v.size - len)?;
            }
        }
    }

    for id in image_ids(&dirs.volumes)? {
        if t.volumes.contains_key(&id) {
            continue;
        }
        if t.retained.contains(&id) {
            std::fs::rename(dirs.volume(&id), dirs.retained(&id))?;
        } else {
            tracing::info!(volume = %id, "removing an image without metadata");
            std::fs::remove_file(dirs.volume(&id))?;
        }
    }
    // Every retained move is complete (and made durable below).
    t.retained.clear();
    for id in image_ids(&dirs.snapshots)? {
        if !t.snapshots.contains_key(&id) {
            tracing::info!(snapshot = %id, "removing a snapshot image without metadata");
            std::fs::remove_file(dirs.snapshot(&id))?;
        }
    }
    for d in [&dirs.volumes, &dirs.snapshots, &dirs.retained] {
        files::sync_dir(d)?;
    }
    Ok(restart)
}

fn open_or_create(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// Ids of the `<id>.img` files in `dir`; other names are left alone.
fn image_ids(dir: &Path) -> io::Result<Vec<String>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name.strip_suffix(".img").filter(|id| is_id(id)) {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}
