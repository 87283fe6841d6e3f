//! Background data copies where reflink is not available: filling a snapshot from its
//! volume, and filling a clone from its snapshot. Each runs on its own thread (copies are
//! long, blocking I/O) and records completion only after the data is fsynced.

use crate::files;
use crate::model::Change;
use crate::server::Shared;
use crate::state;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use volbridge_proto::csp::{BACKGROUND_COMPLETED, BACKGROUND_STATUS, INSUFFICIENT_SPACE};

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

pub fn spawn_snapshot_copy(sh: Arc<Shared>, id: String) {
    spawn("volbridge-snapcopy", move || {
        snapshot_copy(&sh, &id);
        sh.copy_events.notify();
    });
}

fn snapshot_copy(sh: &Shared, id: &str) {
    let Some(snap) = sh.store.read(|s| s.snapshot(id).cloned()).0 else {
        return;
    };
    let dst_path = sh.dirs.snapshot(id);
    let copied = (|| -> io::Result<()> {
        let src = File::open(sh.dirs.volume(&snap.volume_id))?;
        let dst = files::open_rw(&dst_path)?;
        files::sparse_copy(&src, &dst, snap.size, &mut || true)?;
        dst.sync_all()?;
        files::sync_dir(&sh.dirs.snapshots)
    })();
    let recorded = match copied {
        Ok(()) => sh.store.write(|s| match s.snapshot(id) {
            Some(cur) if !cur.ready => {
                let mut done = cur.clone();
                done.ready = true;
                Ok(((), vec![Change::PutSnapshot(done)]))
            }
            _ => Ok(((), vec![])),
        }),
        Err(e) => {
            tracing::warn!(snapshot = %id, error = %reason(&e), "snapshot copy failed; removing the snapshot");
            let r = sh.store.write(|s| {
                let mut changes = Vec::new();
                if let Some(cur) = s.snapshot(id) {
                    changes.push(Change::DeleteSnapshot(id.to_owned()));
                    if let Some(g) = s.snapshot_group(&cur.group_id) {
                        let mut g = g.clone();
                        g.snapshot_ids.retain(|m| m != id);
                        changes.push(Change::PutSnapshotGroup(g));
                    }
                }
                Ok(((), changes))
            });
            if let Ok((_, seq)) = &r {
                if sh.store.settle_blocking(*seq).is_ok() {
                    let _ = std::fs::remove_file(&dst_path);
                }
            }
            r
        }
    };
    if let Ok((_, seq)) = recorded {
        let _ = sh.store.settle_blocking(seq);
    }
}

pub fn spawn_clone_copy(sh: Arc<Shared>, id: String) {
    spawn("volbridge-clonecopy", move || {
        clone_copy(&sh, &id);
        sh.copy_events.notify();
    });
}

enum Next {
    Copy(crate::model::SnapshotRec),
    Wait,
    Stop,
    Fail(String),
}

fn clone_copy(sh: &Shared, id: &str) {
    // A clone may be made from a snapshot whose own copy still runs (B16 does exactly
    // that); wait for it.
    let snap = loop {
        let next = sh.store.read(|s| match s.volume(id) {
            Some(v) if state::copy_running(v) => match s.snapshot(&v.base_snapshot_id) {
                Some(snap) if snap.ready => Next::Copy(snap.clone()),
                Some(_) => Next::Wait,
                None => Next::Fail("the source snapshot is gone".into()),
            },
            _ => Next::Stop,
        });
        match next.0 {
            Next::Copy(snap) => break snap,
            Next::Wait => sh.copy_events.wait(Duration::from_secs(1)),
            Next::Stop => return,
            Next::Fail(why) => return finish(sh, id, Err(why)),
        }
    };
    let still_wanted = || {
        sh.store
            .read(|s| s.volume(id).is_some_and(state::copy_running))
            .0
    };
    let copied = (|| -> io::Result<()> {
        let src = File::open(sh.dirs.snapshot(&snap.id))?;
        let dst = files::open_rw(&sh.dirs.volume(id))?;
        files::sparse_copy(&src, &dst, snap.size, &mut || still_wanted())?;
        dst.sync_all()?;
        files::sync_dir(&sh.dirs.volumes)
    })();
    match copied {
        Ok(()) => finish(sh, id, Ok(())),
        Err(e) if e.kind() == io::ErrorKind::Interrupted && !still_wanted() => {}
        Err(e) => {
            tracing::warn!(volume = %id, error = %e, "clone copy failed");
            finish(sh, id, Err(reason(&e)));
        }
    }
}

fn finish(sh: &Shared, id: &str, outcome: Result<(), String>) {
    let status = match outcome {
        Ok(()) => BACKGROUND_COMPLETED.to_owned(),
        Err(why) => format!("Failed: {why}"),
    };
    let r = sh.store.write(|s| match s.volume(id) {
        Some(v) if state::copy_running(v) => {
            let mut v = v.clone();
            v.config
                .insert(BACKGROUND_STATUS.into(), status.clone().into());
            Ok(((), vec![Change::PutVolume(v)]))
        }
        _ => Ok(((), vec![])),
    });
    if let Ok((_, seq)) = r {
        let _ = sh.store.settle_blocking(seq);
    }
}
