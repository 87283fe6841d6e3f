//! The metadata store: in-memory state, made durable by one group-committing thread.
//!
//! A request validates and applies its change to the in-memory [`State`] under a short
//! mutex (no I/O), queues the change, and then awaits the committer. The committer takes
//! everything queued, appends it to the journal with one `fdatasync` and acknowledges every
//! waiter at once, so the fsync cost is shared by all concurrent requests.
//!
//! Reads also wait until the state they saw is durable (usually no wait at all), so no
//! answer ever reflects a change that a crash could still undo.
//!
//! If the journal write fails, the waiting requests get a 500 and the next batch rewrites
//! the whole state file first: memory is the source of truth and becomes durable again as
//! soon as the disk allows.
//!
//! A compaction writes the live tables, copied under the lock (cheap: volume records are
//! shared, see [`Tables`]). They may hold changes still queued for the journal; those are
//! appended after it, and replaying a change over a state that already holds it is
//! idempotent ([`crate::model`]). No second copy of the tables is kept for the committer.

use crate::errors::ApiError;
use crate::journal::Journal;
use crate::model::{Change, Tables};
use crate::state::State;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Every operation with a sequence number up to this one is durable.
    durable: u64,
    /// Operations up to this one failed to commit (unless `durable` caught up later).
    failed: u64,
    /// Whether the last failure was a full disk (B42 wording).
    out_of_space: bool,
}

struct Inner {
    state: State,
    queue: Vec<(u64, Vec<Change>)>,
    last_seq: u64,
    shutdown: bool,
}

struct Core {
    inner: Mutex<Inner>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
}

pub struct Store {
    core: Arc<Core>,
    committer: Option<JoinHandle<()>>,
}

impl Store {
    /// Starts the committer over an opened journal; `tables` must equal what it holds.
    pub fn start(journal: Journal, tables: Tables) -> Store {
        let core = Arc::new(Core {
            inner: Mutex::new(Inner {
                state: State::new(tables),
                queue: Vec::new(),
                last_seq: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            progress: watch::channel(Progress::default()).0,
        });
        let thread_core = core.clone();
        let committer = std::thread::Builder::new()
            .name("volbridge-csp-commit".into())
            .spawn(move || commit_loop(&thread_core, journal))
            .expect("spawn the metadata committer thread");
        Store {
            core,
            committer: Some(committer),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave State half-updated in a way we could
        // repair, but refusing every later request would be worse; keep serving.
        self.core.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the current state; returns its result and the sequence number to await
    /// before answering with it.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> (R, u64) {
        let g = self.lock();
        (f(&g.state), g.last_seq)
    }

    /// Validates with `f` and applies the changes it returns, atomically. Returns `f`'s
    /// result and the sequence number to await (the newest one when nothing changed).
    pub fn write<R>(
        &self,
        f: impl FnOnce(&State) -> Result<(R, Vec<Change>), ApiError>,
    ) -> Result<(R, u64), ApiError> {
        let mut g = self.lock();
        let (r, changes) = f(&g.state)?;
        if changes.is_empty() {
            return Ok((r, g.last_seq));
        }
        for c in &changes {
            g.state.apply(c.clone());
        }
        g.last_seq += 1;
        let seq = g.last_seq;
        g.queue.push((seq, changes));
        drop(g);
        self.core.wake.notify_one();
        Ok((r, seq))
    }

    /// Waits until operation `seq` is durable.
    pub async fn settle(&self, seq: u64) -> Result<(), ApiError> {
        let mut rx = self.core.progress.subscribe();
        loop {
            let p = *rx.borrow_and_update();
            if p.durable >= seq {
                return Ok(());
            }
            if p.failed >= seq {
                return Err(commit_error(p));
            }
            if rx.changed().await.is_err() {
                return Err(ApiError::internal("metadata committer stopped"));
            }
        }
    }

    /// Blocking form of [`Store::settle`] for background threads.
    pub fn settle_blocking(&self, seq: u64) -> Result<(), ApiError> {
        let mut rx = self.core.progress.subscribe();
        loop {
            let p = *rx.borrow_and_update();
            if p.durable >= seq {
                return Ok(());
            }
            if p.failed >= seq {
                return Err(commit_error(p));
            }
            // The watch channel has no blocking wait; background threads are rare and
            // commits take well under a millisecond.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// `write` then `settle`.
    pub async fn commit<R>(
        &self,
        f: impl FnOnce(&State) -> Result<(R, Vec<Change>), ApiError>,
    ) -> Result<R, ApiError> {
        let (r, seq) = self.write(f)?;
        self.settle(seq).await?;
        Ok(r)
    }

    /// `read` then `settle`.
    pub async fn query<R>(&self, f: impl FnOnce(&State) -> R) -> Result<R, ApiError> {
        let (r, seq) = self.read(f);
        self.settle(seq).await?;
        Ok(r)
    }
}

fn commit_error(p: Progress) -> ApiError {
    if p.out_of_space {
        ApiError::internal(format!(
            "could not record the change: {}",
            volbridge_proto::csp::INSUFFICIENT_SPACE
        ))
    } else {
        ApiError::internal("could not record the change durably")
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.lock().shutdown = true;
        self.core.wake.notify_all();
        if let Some(h) = self.committer.take() {
            let _ = h.join();
        }
    }
}

/// A copy of the live tables, for a compaction.
fn live_tables(core: &Core) -> Tables {
    let g = core.inner.lock().unwrap_or_else(|p| p.into_inner());
    g.state.t.clone()
}

fn commit_loop(core: &Core, mut journal: Journal) {
    // Set after a failed write: memory holds changes the disk lacks, so the next write
    // must be a full state file. Retried on a timer too, so that reads (which wait for the
    // newest sequence number) recover without waiting for another write.
    let mut dirty = false;
    let mut last_seen = 0;
    loop {
        let (batch, shutdown) = {
            let mut g = core.inner.lock().unwrap_or_else(|p| p.into_inner());
            while g.queue.is_empty() && !g.shutdown {
                if dirty {
                    g = core
                        .wake
                        .wait_timeout(g, std::time::Duration::from_secs(1))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    break;
                }
                g = core.wake.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            (std::mem::take(&mut g.queue), g.shutdown)
        };
        if batch.is_empty() && !dirty {
            if shutdown {
                return;
            }
            continue;
        }
        if let Some((seq, _)) = batch.last() {
            last_seen = *seq;
        }
        let result = if dirty {
            journal.compact(&live_tables(core))
        } else {
            journal.append(batch.iter().map(|(_, op)| op.as_slice()))
        };
        match result {
            Ok(()) => {
                if dirty {
                    tracing::info!("metadata is durable again");
                }
                dirty = false;
                core.progress.send_modify(|p| p.durable = last_seen);
                if journal.wants_compaction() {
                    if let Err(e) = journal.compact(&live_tables(core)) {
                        tracing::warn!(error = %e, "journal compaction failed; will retry");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metadata commit failed");
                dirty = true;
                let oos = crate::files::is_out_of_space(&e);
                core.progress.send_modify(|p| {
                    p.failed = last_seen;
                    p.out_of_space = oos;
                });
                if shutdown && batch.is_empty() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VolumeRec;

    fn volume(i: usize, size: u64) -> VolumeRec {
        VolumeRec {
            id: format!("{i:032x}"),
            name: format!("v-{i}"),
            size,
            // Large records, so that the journal passes the compaction threshold soon.
            description: Some("d".repeat(2000)),
            base_snapshot_id: String::new(),
            parent_volume_id: String::new(),
            volume_group_id: String::new(),
            config: Default::default(),
            hosts: Default::default(),
            creation_time: 1,
        }
    }

    /// Compactions write the live tables while writers keep queueing changes; whatever the
    /// interleaving, reopening finds exactly what memory held.
    #[test]
    fn compactions_under_concurrent_writes_lose_nothing() {
        let dir = std::env::temp_dir().join(format!("vb-store-{}", crate::ids::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (journal, tables) = Journal::open(&dir).unwrap();
        let store = Arc::new(Store::start(journal, tables));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let n = w * 10_000 + i % 700;
                        let change = if i % 5 == 4 {
                            Change::DeleteVolume {
                                id: format!("{n:032x}"),
                                retain: false,
                            }
                        } else {
                            Change::PutVolume(volume(n, 512 * (i as u64 + 1)))
                        };
                        let (_, seq) = store.write(|_| Ok(((), vec![change]))).unwrap();
                        store.settle_blocking(seq).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let live = store.read(|s| s.t.clone()).0;
        assert!(std::fs::metadata(dir.join("state.json")).unwrap().len() > 0);
        drop(store);
        let (_, reopened) = Journal::open(&dir).unwrap();
        assert_eq!(reopened, live);
        assert!(live.volumes.len() > 1000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
