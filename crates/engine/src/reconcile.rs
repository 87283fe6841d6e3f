//! Start-up replay of intent records: each interrupted multi-step operation is finished or
//! rolled back. A record whose backend cannot be reached stays for the next pass.

use crate::records::intent::{self, Intent};
use crate::Engine;
use volbridge_base::error::Result;
use volbridge_proto::csp::{BACKGROUND_COMPLETED, CLONE_SNAPSHOT_PREFIX};

/// What one reconciliation pass did, one sentence per action.
#[derive(Debug, Default, Clone)]
pub struct ReconcileReport {
    pub actions: Vec<String>,
    pub pending: usize,
}

impl ReconcileReport {
    /// Notes one item's outcome: what was done (nothing to say: `None`), or why it stays
    /// for the next pass.
    pub(super) fn settle(&mut self, what: &str, outcome: Result<Option<String>>) {
        match outcome {
            Ok(Some(did)) => self.actions.push(format!("{what}: {did}")),
            Ok(None) => {}
            Err(e) => {
                self.pending += 1;
                self.actions
                    .push(format!("{what}: kept for the next pass: {e}"));
            }
        }
    }
}

impl Engine {
    pub async fn reconcile(&self) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let first_pass = !self
            .reconciled_once
            .swap(true, std::sync::atomic::Ordering::SeqCst);
        // Docker first: a volume no container references any more is unmounted before the
        // node pass would restore its mount.
        self.reconcile_docker(&mut report).await;
        self.reconcile_node(&mut report, first_pass).await;
        self.reconcile_intents(&mut report).await;
        self.reconcile_attachments(&mut report).await;
        for action in &report.actions {
            tracing::info!(action = %action, "reconciler");
        }
        report
    }

    async fn reconcile_intents(&self, report: &mut ReconcileReport) {
        let records = match self.store.list::<Intent>(intent::COLLECTION) {
            Ok(r) => r,
            Err(e) => {
                report
                    .actions
                    .push(format!("cannot read intent records: {e}"));
                return;
            }
        };
        for (key, record) in records {
            // An operation still running holds its volume's guard: leave its intent alone.
            let _busy = match &record {
                Ok(i) => match self.intent_guard(i) {
                    Ok(g) => g,
                    Err(_) => continue,
                },
                Err(_) => None,
            };
            let outcome = match record {
                Ok(intent) => self
                    .replay(&intent)
                    .await
                    .map(|did| (intent.describe(), did)),
                Err(e) => {
                    report
                        .actions
                        .push(format!("dropped damaged intent {key}: {e}"));
                    let _ = self.store.remove(intent::COLLECTION, &key);
                    continue;
                }
            };
            match outcome {
                Ok((what, did)) => {
                    report.actions.push(format!("{what}: {did}"));
                    if let Err(e) = self.store.remove(intent::COLLECTION, &key) {
                        report
                            .actions
                            .push(format!("cannot clear intent {key}: {e}"));
                    }
                }
                Err(e) => {
                    report.pending += 1;
                    report
                        .actions
                        .push(format!("intent {key} kept for the next pass: {e}"));
                }
            }
        }
    }

    fn intent_guard(&self, intent: &Intent) -> Result<Option<crate::OpGuard>> {
        match intent {
            Intent::CloneFromVolume { .. } => Ok(None),
            Intent::MountVolume { backend, name, .. }
            | Intent::UnmountVolume { backend, name, .. } => {
                self.guards.try_lock(&format!("{backend}/{name}")).map(Some)
            }
            Intent::CreateGroupSnapshot { backend, name, .. }
            | Intent::DeleteGroupSnapshot { backend, name, .. } => self
                .guards
                .try_lock(&format!("{backend}/group-snapshot:{name}"))
                .map(Some),
        }
    }

    pub(super) async fn replay(&self, intent: &Intent) -> Result<String> {
        match intent {
            Intent::CloneFromVolume {
                backend,
                name,
                parent_id,
            } => {
                let client = &self.backends.resolve(Some(backend))?.client;
                if let Some(clone) = client.find_volume(name).await? {
                    let status = clone.background_status().unwrap_or(BACKGROUND_COMPLETED);
                    if status != BACKGROUND_COMPLETED && !status.starts_with("Failed") {
                        return Err(volbridge_base::Error::unavailable(
                            "the clone is still copying",
                        ));
                    }
                }
                let temporary = client.list_snapshots(Some(parent_id)).await?;
                let mut removed = 0;
                for s in temporary {
                    let ours = s
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(CLONE_SNAPSHOT_PREFIX))
                        && s.description.as_deref() == Some(name.as_str());
                    if ours && s.ready_to_use == Some(false) {
                        // A retry of the clone goes on with this copy (rule 3): removing it
                        // now would make that retry start a second one.
                        return Err(volbridge_base::Error::unavailable(
                            "the temporary snapshot of the clone is still being copied",
                        ));
                    }
                    if ours {
                        // In use (the CSP still copies from it): keep it, as B16 step 5 says.
                        match client
                            .delete_snapshot(s.id.as_deref().unwrap_or_default())
                            .await
                        {
                            Ok(()) => removed += 1,
                            Err(e) if e.kind == volbridge_base::ErrorKind::FailedPrecondition => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Ok(format!("removed {removed} temporary snapshot(s)"))
            }
            Intent::MountVolume {
                backend,
                name,
                volume_id,
                target,
            } => {
                let key = crate::records::node::engine_volume_key(backend, volume_id);
                let done = self
                    .store
                    .get::<crate::PublishRecord>(
                        crate::records::node::PUBLISHES,
                        &target.display().to_string(),
                    )?
                    .is_some_and(|p| p.volume_key == key && p.phase == crate::Phase::Ready);
                if done {
                    return Ok("it had completed".into());
                }
                self.release_if_unused(&self.attachment_for(backend, name, volume_id)?)
                    .await?;
                Ok("rolled back".into())
            }
            Intent::UnmountVolume {
                backend,
                name,
                volume_id,
                target,
            } => {
                let key = crate::records::node::engine_volume_key(backend, volume_id);
                {
                    let _node = self.node_guard(&key, crate::Wait::No).await?;
                    self.unpublish_locked(&key, target).await?;
                }
                self.release_if_unused(&self.attachment_for(backend, name, volume_id)?)
                    .await?;
                Ok("finished".into())
            }
            Intent::CreateGroupSnapshot {
                backend,
                name,
                made_volume_group,
            } => {
                self.replay_create_group_snapshot(backend, name, *made_volume_group)
                    .await
            }
            Intent::DeleteGroupSnapshot { backend, name, id } => {
                self.replay_delete_group_snapshot(backend, name, id).await
            }
        }
    }
}
