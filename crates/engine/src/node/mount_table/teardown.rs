//! The teardown of a volume with no reference left: at once, or after the unstage delay
//! (armed by the last Unmount, cancelled by a Mount within it), or by the reconciler for a
//! mount a crash or a failed teardown left behind.

use super::DockerVolume;
use crate::{Engine, ReconcileReport, Wait};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use volbridge_base::error::Result;

impl Engine {
    /// Tears the volume down after `delay` unless a Mount comes first.
    pub(super) fn docker_arm_teardown(self: &Arc<Self>, name: &str, delay: Duration) {
        let generation = self.mount_table.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.mount_table
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), generation);
        let engine = self.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            engine.docker_deferred_teardown(&name, generation).await;
        });
    }

    pub(super) fn docker_cancel_deferred(&self, name: &str) -> bool {
        self.mount_table
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some()
    }

    pub(super) fn docker_is_deferred(&self, name: &str) -> bool {
        self.mount_table
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    pub(super) async fn docker_deferred_teardown(&self, name: &str, generation: u64) {
        let Ok(_guard) = self.docker_guard(name).await else {
            return;
        };
        {
            let mut deferred = self
                .mount_table
                .deferred
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if deferred.get(name) != Some(&generation) {
                return;
            }
            deferred.remove(name);
        }
        let Ok(Some(mut v)) = self.docker_get(name) else {
            return;
        };
        if v.total_refs() > 0 {
            return;
        }
        if let Err(e) = self.docker_teardown(&mut v).await {
            tracing::warn!(volume = %name, error = %e, "Docker unmount: teardown failed; release pending");
        }
    }

    /// Unmounts and detaches a volume with no references (the caller holds its guard).
    /// A failure marks it release-pending.
    pub(super) async fn docker_teardown(&self, v: &mut DockerVolume) -> Result<()> {
        let target = self
            .docker_published(v)?
            .or_else(|| v.mounted_at.clone())
            .unwrap_or_else(|| self.docker_target(v));
        let result = self
            .unmount_volume(
                &v.name,
                Some(&v.backend),
                &target.display().to_string(),
                Wait::Bounded,
            )
            .await;
        match result {
            Ok(_) => {
                // The mount point goes too, only when empty (never data); one left behind
                // is reused by the next Mount.
                if let Err(e) = self.on_host(move |h| h.remove_empty_dir(&target)).await {
                    tracing::debug!(volume = %v.name, error = %e, "Docker mount point kept");
                }
                v.mounted_at = None;
                v.release_pending = false;
                self.docker_save(v)
            }
            Err(e) => {
                v.release_pending = true;
                self.docker_save(v)?;
                Err(e)
            }
        }
    }

    /// The reconciler's Docker pass: volumes mounted with no reference (a crash inside the
    /// unstage delay or between mount and count, a failed teardown) are unmounted and
    /// detached. Volumes in their unstage delay and busy volumes are left alone.
    pub(crate) async fn reconcile_docker(&self, report: &mut ReconcileReport) {
        let notes: Vec<String> = std::mem::take(
            &mut *self
                .mount_table
                .load_notes
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let volumes = match self.docker_list() {
            Ok(v) => v,
            Err(e) => {
                report
                    .actions
                    .push(format!("cannot read Docker volume records: {e}"));
                return;
            }
        };
        report.actions.extend(notes);
        for v in volumes {
            if v.total_refs() > 0 || self.docker_is_deferred(&v.name) {
                continue;
            }
            let published = match self.docker_published(&v) {
                Ok(p) => p,
                Err(e) => {
                    report.settle(&format!("Docker volume '{}'", v.name), Err(e));
                    continue;
                }
            };
            if published.is_none() && !v.release_pending && v.mounted_at.is_none() {
                continue;
            }
            let Ok(_guard) = self.guards.try_lock(&format!("@docker/{}", v.name)) else {
                continue;
            };
            // Read again under the guard: a Mount may have finished meanwhile.
            let Ok(Some(mut v)) = self.docker_get(&v.name) else {
                continue;
            };
            if v.total_refs() > 0 {
                continue;
            }
            let what = format!("Docker volume '{}' with no mount reference", v.name);
            let outcome = self
                .docker_teardown(&mut v)
                .await
                .map(|()| Some("unmounted and detached".to_owned()));
            report.settle(&what, outcome);
        }
    }
}
