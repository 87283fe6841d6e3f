//! Background data copies where reflink is not available (a `dir` pool on a filesystem
//! without it): filling a snapshot from its volume, and filling a clone from its snapshot.
//! Each runs on its own thread (copies are long, blocking I/O), reports its progress, and
//! records completion only after the data is fsynced. The rules they keep are
//! docs/copy-semantics.md; in short:
//!
//! * a snapshot copy stops as soon as its record is gone (S4 cancels it, rule 2);
//! * a clone copy stops as soon as its volume is gone or no longer copying;
//! * a snapshot deleted while clones copy from it is only hidden; the copy that ends last
//!   removes it, record first, image after;
//! * a failed snapshot copy removes the image first and the record after, so that a reader
//!   who sees the record gone never finds the image (the record alone is not ready, which
//!   recovery drops anyway).

use crate::files;
use crate::model::Change;
use crate::shared::Shared;
use crate::state;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use volbridge_proto::csp::{
    CopyProgress, BACKGROUND_COMPLETED, BACKGROUND_STATUS, INSUFFICIENT_SPACE, SOURCE_LOST,
};

/// Progress of the copies running in this process, by the id of the object being filled.
/// Ids are 128 random bits, so one table serves every server of the process.
static PROGRESS: LazyLock<Mutex<HashMap<String, Arc<Counter>>>> = LazyLock::new(Default::default);

#[derive(Default)]
struct Counter {
    done: AtomicU64,
    total: AtomicU64,
}

/// The progress of the copy filling object `id`, while one runs.
pub fn progress(id: &str) -> Option<CopyProgress> {
    let table = PROGRESS.lock().unwrap_or_else(|p| p.into_inner());
    table.get(id).map(|c| CopyProgress {
        bytes_done: c.done.load(Ordering::Relaxed),
        bytes_total: c.total.load(Ordering::Relaxed),
    })
}

/// A copy's entry in [`PROGRESS`], removed when the copy ends.
struct Tracked {
    id: String,
    counter: Arc<Counter>,
}

impl Tracked {
    fn start(id: &str, total: u64) -> Tracked {
        let counter = Arc::new(Counter::default());
        counter.total.store(total, Ordering::Relaxed);
        PROGRESS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), counter.clone());
        Tracked {
            id: id.to_owned(),
            counter,
        }
    }
    fn set(&self, done: u64) {
        self.counter.done.store(done, Ordering::Relaxed);
        // A volume written during its snapshot copy can hold more data than counted.
        self.counter.total.fetch_max(done, Ordering::Relaxed);
    }
    fn set_total(&self, total: u64) {
        self.counter.total.store(total, Ordering::Relaxed);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        PROGRESS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Data bytes of an image file (0 when it cannot be read: the copy reports the error).
fn data_total(path: &std::path::Path, len: u64) -> u64 {
    File::open(path)
        .and_then(|f| files::data_bytes(&f, len))
        .unwrap_or(0)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        tracing::warn!(error = %e, "could not start a background copy thread");
    }
}

fn reason(e: &io::Error) -> String {
    if files::is_out_of_space(e) {
        INSUFFICIENT_SPACE.to_owned()
    } else {
        e.to_string()
    }
}

/// Starts filling snapshot `id` from its volume. Its progress is visible when this returns.
pub fn spawn_snapshot_copy(sh: Arc<Shared>, id: String) {
    let Some(snap) = sh.store.read(|s| s.snapshot_any(&id).cloned()).0 else {
        return;
    };
    let tracked = Tracked::start(&id, data_total(&sh.dirs.volume(&snap.volume_id), snap.size));
    spawn("volbridge-snapcopy", move || {
        snapshot_copy(&sh, &snap, &tracked);
        drop(tracked);
        sh.copy_events.notify();
    });
}

fn snapshot_copy(sh: &Shared, snap: &crate::model::SnapshotRec, tracked: &Tracked) {
    let id = snap.id.as_str();
    let dst_path = sh.dirs.snapshot(id);
    // Deleted (S4 removed the record): stop. Hidden snapshots are still wanted, by the
    // clones waiting for them.
    let wanted = || sh.store.read(|s| s.snapshot_any(id).is_some()).0;
    let copied = (|| -> io::Result<()> {
        let src = File::open(sh.dirs.volume(&snap.volume_id))?;
        let dst = files::open_rw(&dst_path)?;
        files::sparse_copy(&src, &dst, snap.size, &mut |done| {
            tracked.set(done);
            wanted()
        })?;
        dst.sync_all()?;
        files::sync_dir(&sh.dirs.snapshots)
    })();
    let recorded = match copied {
        Ok(()) => sh.store.write(|s| match s.snapshot_any(id) {
            Some(cur) if !cur.ready => {
                let mut done = cur.clone();
                done.ready = true;
                Ok(((), vec![Change::PutSnapshot(done)]))
            }
            _ => Ok(((), vec![])),
        }),
        Err(_) if !wanted() => {
            // Cancelled by S4, which removed the record and the image.
            tracing::info!(snapshot = %id, "snapshot copy cancelled: the snapshot was deleted");
            return;
        }
        Err(e) => {
            tracing::warn!(snapshot = %id, error = %reason(&e), "snapshot copy failed; removing the snapshot");
            // Image first: nobody who sees the record gone may still find the file.
            let _ = std::fs::remove_file(&dst_path);
            let _ = files::sync_dir(&sh.dirs.snapshots);
            sh.store.write(|s| {
                let mut changes = Vec::new();
                if let Some(cur) = s.snapshot_any(id) {
                    changes.push(Change::DeleteSnapshot(id.to_owned()));
                    if let Some(g) = s.snapshot_group(&cur.group_id) {
                        let mut g = g.clone();
                        g.snapshot_ids.retain(|m| m != id);
                        changes.push(Change::PutSnapshotGroup(g));
                    }
                }
                Ok(((), changes))
            })
        }
    };
    if let Ok((_, seq)) = recorded {
        let _ = sh.store.settle_blocking(seq);
    }
}

/// Starts filling clone `id` from its snapshot (now, or once the snapshot's own copy is
/// done). Its progress is visible when this returns.
pub fn spawn_clone_copy(sh: Arc<Shared>, id: String) {
    let source = sh
        .store
        .read(|s| {
            s.volume(&id)
                .and_then(|v| s.snapshot_any(&v.base_snapshot_id))
                .cloned()
        })
        .0;
    let total = match &source {
        Some(snap) if snap.ready => data_total(&sh.dirs.snapshot(&snap.id), snap.size),
        // Not copied yet: its volume's data is what it will hold.
        Some(snap) => progress(&snap.id).map_or(0, |p| p.bytes_total),
        None => 0,
    };
    let tracked = Tracked::start(&id, total);
    spawn("volbridge-clonecopy", move || {
        clone_copy(&sh, &id, &tracked);
        drop(tracked);
        sh.copy_events.notify();
    });
}

enum Next {
    Copy(crate::model::SnapshotRec),
    Wait(String),
    Stop,
    Fail(String),
}

fn clone_copy(sh: &Shared, id: &str, tracked: &Tracked) {
    // A clone may be made from a snapshot whose own copy still runs; wait for it.
    let snap = loop {
        let next = sh.store.read(|s| match s.volume(id) {
            Some(v) if state::copy_running(v) => match s.snapshot_any(&v.base_snapshot_id) {
                Some(snap) if snap.ready => Next::Copy(snap.clone()),
                Some(snap) => Next::Wait(snap.id.clone()),
                None => Next::Fail(format!(
                    "{SOURCE_LOST}: its copy did not complete (the copy failed, or a restart \
                     interrupted it); delete this volume and clone again from a new snapshot"
                )),
            },
            _ => Next::Stop,
        });
        match next.0 {
            Next::Copy(snap) => break snap,
            Next::Wait(sid) => {
                if let Some(p) = progress(&sid) {
                    tracked.set_total(p.bytes_total);
                }
                sh.copy_events.wait(Duration::from_secs(1))
            }
            // Deleted meanwhile: the delete released the source.
            Next::Stop => return,
            Next::Fail(why) => return finish(sh, id, Err(why)),
        }
    };
    tracked.set_total(data_total(&sh.dirs.snapshot(&snap.id), snap.size));
    let still_wanted = || {
        sh.store
            .read(|s| s.volume(id).is_some_and(state::copy_running))
            .0
    };
    let copied = (|| -> io::Result<()> {
        let src = File::open(sh.dirs.snapshot(&snap.id))?;
        let dst = files::open_rw(&sh.dirs.volume(id))?;
        files::sparse_copy(&src, &dst, snap.size, &mut |done| {
            tracked.set(done);
            still_wanted()
        })?;
        dst.sync_all()?;
        files::sync_dir(&sh.dirs.volumes)
    })();
    match copied {
        Ok(()) => finish(sh, id, Ok(())),
        // Deleted meanwhile: the delete released the source.
        Err(_) if !still_wanted() => {}
        Err(e) => {
            tracing::warn!(volume = %id, error = %e, "clone copy failed");
            finish(sh, id, Err(reason(&e)));
        }
    }
}

/// Records the end of clone `id`'s copy; a hidden source snapshot that no other copy
/// reads, or the temporary snapshot made for this clone alone once it is complete, goes
/// with it (record, then image).
fn finish(sh: &Shared, id: &str, outcome: Result<(), String>) {
    let complete = outcome.is_ok();
    let status = match outcome {
        Ok(()) => BACKGROUND_COMPLETED.to_owned(),
        Err(why) => format!("Failed: {why}"),
    };
    let r = sh.store.write(|s| match s.volume(id) {
        Some(v) if state::copy_running(v) => {
            let mut changes = Vec::new();
            let done = s
                .hidden_source_done(&v.base_snapshot_id, id)
                .or_else(|| complete.then(|| s.temporary_source_of(v)).flatten());
            if let Some(sid) = &done {
                changes.push(Change::DeleteSnapshot(sid.clone()));
            }
            let mut v = v.clone();
            v.config
                .insert(BACKGROUND_STATUS.into(), status.clone().into());
            changes.push(Change::PutVolume(v));
            Ok((done, changes))
        }
        _ => Ok((None, vec![])),
    });
    if let Ok((done, seq)) = r {
        if sh.store.settle_blocking(seq).is_ok() {
            if let Some(sid) = done {
                remove_snapshot_image(sh, &sid);
            }
        }
    }
}

pub fn remove_snapshot_image(sh: &Shared, id: &str) {
    tracing::debug!(snapshot = %id, "removing the image of a deleted snapshot");
    if let Err(e) = std::fs::remove_file(sh.dirs.snapshot(id)) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(snapshot = %id, error = %e, "could not remove the image of a deleted snapshot");
        }
    }
}
