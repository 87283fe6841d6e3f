//! What a person sees while the CLI waits for a long operation (issue 16, "Progress").
//!
//! The daemon answers a clone or a snapshot copied in the background only once its data is
//! complete (docs/copy-semantics.md rule 3), so the request itself says nothing until then.
//! While it runs, the CLI polls the object being filled through the admin API (its
//! `copy_progress`, rule 4) twice a second:
//!
//! * on a terminal (stderr is a TTY and `--output table`): an indicatif bar on stderr, bytes
//!   copied of all, rate and ETA, one bar per copy (a clone from a volume copies twice: the
//!   temporary snapshot of the volume, then the clone);
//! * otherwise (a pipe, a file, or `--output json`, whose stdout stays pure JSON): nothing
//!   while it runs, then one line on stderr when a copy was seen — what was copied, how much,
//!   in how long — or how far it came when the wait ran out (exit code 8 follows).
//!
//! Waits without a byte count (an expand, which may grow the filesystem offline) get a
//! spinner with the elapsed time on a terminal and nothing otherwise.

use super::client::{segment, AdminClient};
use super::output::Format;
use crate::engine::size::human;
use crate::error::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::future::Future;
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use volbridge_proto::admin::{SnapshotInfo, VolumeInfo};
use volbridge_proto::csp::{CopyProgress, CLONE_SNAPSHOT_PREFIX};

/// How often the object being filled is read while the CLI waits.
const POLL: Duration = Duration::from_millis(500);

/// What the CLI waits for, and how to read its progress.
pub enum Watched<'a> {
    /// `volume clone NAME` (from a snapshot, or from a volume through a temporary snapshot).
    Clone {
        name: &'a str,
        from_volume: Option<&'a str>,
        backend: Option<&'a str>,
    },
    /// `snapshot create NAME`.
    Snapshot {
        name: &'a str,
        backend: Option<&'a str>,
    },
    /// A wait without a byte count: a spinner on a terminal.
    Opaque,
}

/// One copy being watched: what it fills, and how far it is.
struct Phase {
    what: String,
    progress: CopyProgress,
}

async fn poll(client: &AdminClient, watched: &Watched<'_>) -> Option<Phase> {
    match *watched {
        Watched::Clone {
            name,
            from_volume,
            backend,
        } => {
            let query = [("backend", backend.unwrap_or(""))];
            let path = format!("/v1/volumes/{}", segment(name));
            if let Ok(v) = client.get::<VolumeInfo>(&path, &query).await {
                if let Some(progress) = v.copy_progress {
                    return Some(Phase {
                        what: format!("copying into '{name}'"),
                        progress,
                    });
                }
                if v.status == "ready" {
                    return None;
                }
            }
            // Before the clone's own copy runs, the temporary snapshot of the volume is
            // being filled (B16); the admin API shows it only when asked for.
            let source = from_volume?;
            let query = [
                ("backend", backend.unwrap_or("")),
                ("volume", source),
                ("temporary", "true"),
            ];
            let list: Vec<SnapshotInfo> = client.get("/v1/snapshots", &query).await.ok()?;
            list.into_iter()
                .filter(|s| s.name.starts_with(CLONE_SNAPSHOT_PREFIX) && !s.ready_to_use)
                .filter_map(|s| s.copy_progress.map(|p| (s.creation_time, p)))
                .max_by_key(|(created, _)| *created)
                .map(|(_, progress)| Phase {
                    what: format!("snapshotting '{source}' for '{name}'"),
                    progress,
                })
        }
        Watched::Snapshot { name, backend } => {
            let query = [("backend", backend.unwrap_or(""))];
            let path = format!("/v1/snapshots/{}", segment(name));
            let s: SnapshotInfo = client.get(&path, &query).await.ok()?;
            s.copy_progress.map(|progress| Phase {
                what: format!("copying into snapshot '{name}'"),
                progress,
            })
        }
        Watched::Opaque => None,
    }
}

/// Runs `op` (the request that waits inside the daemon) while showing its progress;
/// `title` says what runs ("cloning 'copy' from volume 'data'").
pub async fn watch<T>(
    client: &AdminClient,
    format: Format,
    title: &str,
    watched: Watched<'_>,
    op: impl Future<Output = Result<T>>,
) -> Result<T> {
    let tty = format == Format::Table && std::io::stderr().is_terminal();
    let mut view = View::new(tty, title);
    tokio::pin!(op);
    // The first read comes after a short while: a reflink clone is complete by then.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + POLL, POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            r = &mut op => break r,
            _ = tick.tick() => {
                // A copy that has not counted its source yet says 0 of 0: not worth a bar.
                if let Some(phase) = poll(client, &watched).await.filter(|p| p.progress.bytes_total > 0) {
                    view.update(phase);
                }
            }
        }
    };
    view.finish(result.is_ok());
    result
}

/// The bar (on a terminal) or the summary kept for the final line (otherwise).
struct View {
    title: String,
    started: Instant,
    /// `Some` on a terminal.
    bar: Option<ProgressBar>,
    /// The copy shown now, and the bytes of the copies before it that completed.
    phase: Option<Phase>,
    finished_bytes: u64,
}

impl View {
    fn new(tty: bool, title: &str) -> View {
        let bar = tty.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(format!("{title}…"));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        View {
            title: title.to_owned(),
            started: Instant::now(),
            bar,
            phase: None,
            finished_bytes: 0,
        }
    }

    fn update(&mut self, phase: Phase) {
        let new_copy = self.phase.as_ref().is_none_or(|p| p.what != phase.what);
        if new_copy {
            if let Some(previous) = &self.phase {
                self.finished_bytes += previous.progress.bytes_total;
            }
        }
        if let Some(bar) = &self.bar {
            if new_copy {
                if self.phase.is_some() {
                    // The previous copy is complete: leave its bar as a finished line.
                    if let Some(p) = &self.phase {
                        bar.set_position(p.progress.bytes_total);
                    }
                    bar.finish();
                    let next = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                    self.bar = Some(next);
                }
                let bar = self.bar.as_ref().expect("set above");
                bar.disable_steady_tick();
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({percent}%) \
                         {binary_bytes_per_sec}, ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_message(phase.what.clone());
                bar.set_length(phase.progress.bytes_total);
                bar.set_position(phase.progress.bytes_done);
                // What was copied before the CLI looked (a rerun) is no rate of its own.
                bar.reset_eta();
            } else {
                bar.set_length(phase.progress.bytes_total);
                bar.set_position(phase.progress.bytes_done);
            }
        }
        self.phase = Some(phase);
    }

    fn finish(self, ok: bool) {
        let secs = self.started.elapsed().as_secs_f64();
        if let Some(bar) = self.bar {
            match (&self.phase, ok) {
                (None, _) => bar.finish_and_clear(),
                (Some(p), true) => {
                    bar.set_position(p.progress.bytes_total);
                    bar.finish();
                }
                // The error line that follows says why and what to do.
                (Some(_), false) => bar.abandon(),
            }
            return;
        }
        let Some(phase) = self.phase else {
            return;
        };
        let p = &phase.progress;
        if ok {
            let copied = self.finished_bytes + p.bytes_total;
            eprintln!(
                "{}: copied {} in {secs:.1} s ({}/s)",
                self.title,
                human(copied),
                human((copied as f64 / secs.max(0.001)) as u64),
            );
        } else {
            eprintln!(
                "{}: {}: {} of {} ({}%) after {secs:.1} s",
                self.title,
                phase.what,
                human(p.bytes_done),
                human(p.bytes_total),
                p.percent(),
            );
        }
    }
}
