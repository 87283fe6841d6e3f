//! The node half of the reconciler: node records against the kernel. Interrupted set-ups
//! (`creating`) are rolled back, interrupted tear-downs (`removing`) finished, finished
//! states the kernel lost (a reboot) restored, and loop devices or staging mounts that no
//! record accounts for are cleaned up.

use crate::records::node::{
    Phase, PublishRecord, StageRecord, FORMATS, OFFLINE_GROWS, PUBLISHES, STAGES,
};
use crate::ReconcileReport;
use crate::{Engine, Wait};
use std::collections::BTreeSet;
use std::path::PathBuf;
use volbridge_host::stage::{self, StageRequest};
use volbridge_host::{paths, read_only_view, AttachTarget, LoopDevice};
use volbridge_proto::csp::LOCAL_POOL_IMAGE as POOL_IMAGE;

impl Engine {
    pub(crate) async fn reconcile_node(&self, report: &mut ReconcileReport, first_pass: bool) {
        // Loops first, records second: any device seen here already has its record.
        let loops = self.on_host(|h| h.loops()).await.unwrap_or_default();
        // Before any stage is mounted again: a device an offline grow was resizing.
        self.reconcile_offline_grows(report).await;
        self.reconcile_stages(report).await;
        self.reconcile_publishes(report).await;
        self.reconcile_formats(report);
        self.sweep_orphans(report, loops, first_pass).await;
    }

    /// The readable records of a collection; damaged ones are dropped and reported.
    fn readable<T: serde::de::DeserializeOwned>(
        &self,
        report: &mut ReconcileReport,
        kind: &str,
    ) -> Vec<(String, T)> {
        let records = match self.store.list::<T>(kind) {
            Ok(r) => r,
            Err(e) => {
                report
                    .actions
                    .push(format!("cannot read {kind} records: {e}"));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (key, record) in records {
            match record {
                Ok(r) => out.push((key, r)),
                Err(_) => {
                    report
                        .actions
                        .push(format!("dropped damaged {kind} record {key}"));
                    let _ = self.store.remove(kind, &key);
                }
            }
        }
        out
    }

    async fn reconcile_stages(&self, report: &mut ReconcileReport) {
        for (key, record) in self.readable::<StageRecord>(report, STAGES) {
            // An operation running on this volume owns its records. (`key` may be the
            // hashed file name of a long id; the record holds the id itself.)
            let Ok(_guard) = self.node_guard(&record.volume_key, Wait::No).await else {
                continue;
            };
            let what = format!(
                "stage of '{}' at {}",
                record.volume_name,
                record.staging_path.display()
            );
            let outcome = match record.phase {
                Phase::Ready => self.restore_stage(&record).await,
                phase => self
                    .unstage_on_host(&record)
                    .await
                    .and_then(|()| self.store.remove(STAGES, &key))
                    .map(|()| Some(teardown_verb(phase).to_owned())),
            };
            report.settle(&what, outcome);
        }
    }

    /// An offline grow the daemon did not see to its end. Its resize2fs runs on after the
    /// daemon's death: wait for it, then check and grow (a no-op when it finished); when
    /// the machine or the whole service stopped it half-way, the check repairs the resize's
    /// damage. The stage's mount and binds come back in `reconcile_stages`.
    async fn reconcile_offline_grows(&self, report: &mut ReconcileReport) {
        for (key, _) in self.readable::<serde_json::Value>(report, OFFLINE_GROWS) {
            let Ok(_guard) = self.node_guard(&key, Wait::No).await else {
                continue;
            };
            let Some(record) = self
                .store
                .get::<StageRecord>(STAGES, &key)
                .ok()
                .flatten()
                .filter(|s| s.phase == Phase::Ready)
            else {
                let _ = self.store.remove(OFFLINE_GROWS, &key);
                continue;
            };
            let what = format!("offline grow of '{}'", record.volume_name);
            let outcome = self.finish_offline_grow(&record).await;
            if matches!(&outcome, Ok(Some(_)) | Ok(None)) {
                let _ = self.store.remove(OFFLINE_GROWS, &key);
            }
            report.settle(&what, outcome);
        }
    }

    async fn finish_offline_grow(
        &self,
        record: &StageRecord,
    ) -> volbridge_base::Result<Option<String>> {
        let published = record.published()?;
        let transport_config = self.node_config.transport.clone();
        let tool_timeout = self.node_config.tool_timeout;
        let staging = record.staging_path.clone();
        // xfs and btrfs grow only while mounted, which the kernel keeps consistent.
        if !record
            .fs_type
            .as_deref()
            .is_some_and(|f| f.starts_with("ext"))
        {
            return Ok(None);
        }
        self.on_host(move |host| {
            let Some(device) = published.target.attacher(&transport_config).find(host)? else {
                // Detached (a reboot): the stage's restore attaches it and its own check
                // runs before the mount; the grow is redone by the next expand.
                return Ok(Some("left to the next expand (the device is gone)".into()));
            };
            if stage::top_mount(&host.mounts()?, &staging).is_some() {
                return Ok(None);
            }
            let deadline = std::time::Instant::now() + tool_timeout;
            while host.tool_running(&["resize2fs", "e2fsck"], &device)? {
                if std::time::Instant::now() >= deadline {
                    return Err(volbridge_base::Error::new(
                        volbridge_base::error::ErrorKind::DeadlineExceeded,
                        format!(
                            "resize2fs is still growing {}; the next pass finishes the grow",
                            device.display()
                        ),
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            volbridge_host::fs::grow_ext_offline(host, &device, tool_timeout, true)?;
            Ok(Some("finished after the daemon stopped during it".into()))
        })
        .await
    }

    /// A ready stage whose device or mount is gone (reboot): set it up again. Never
    /// formats: a device that lost its filesystem is reported instead.
    async fn restore_stage(&self, record: &StageRecord) -> volbridge_base::Result<Option<String>> {
        let published = record.published()?;
        let transport_config = self.node_config.transport.clone();
        let tool_timeout = self.node_config.tool_timeout;
        let record = record.clone();
        self.on_host(move |host| {
            let attacher = published.target.attacher(&transport_config);
            let present = attacher.find(host)?;
            let mounted = record.access.is_block()
                || stage::top_mount(&host.mounts()?, &record.staging_path).is_some();
            if present.is_some() && mounted {
                return Ok(None);
            }
            let no_format = || {
                Err(volbridge_base::Error::precondition(
                    "the device is blank; a restore never formats",
                ))
            };
            stage::stage(
                host,
                &StageRequest {
                    attacher: attacher.as_ref(),
                    filesystem: &published.filesystem,
                    staging_path: &record.staging_path,
                    access: &(&record.access).into(),
                    read_only: record.read_only,
                    tool_timeout,
                    redo_format: false,
                    before_format: &no_format,
                },
            )?;
            Ok(Some("restored (the kernel had lost it)".to_owned()))
        })
        .await
    }

    async fn reconcile_publishes(&self, report: &mut ReconcileReport) {
        for (key, record) in self.readable::<PublishRecord>(report, PUBLISHES) {
            let Ok(_guard) = self.node_guard(&record.volume_key, Wait::No).await else {
                continue;
            };
            let what = format!("publish at {}", record.target.display());
            let outcome = match record.phase {
                Phase::Ready => self.restore_publish(&record).await,
                phase => self
                    .unpublish_on_host(&record)
                    .await
                    .and_then(|()| self.store.remove(PUBLISHES, &key))
                    .map(|()| Some(teardown_verb(phase).to_owned())),
            };
            report.settle(&what, outcome);
        }
    }

    async fn restore_publish(
        &self,
        record: &PublishRecord,
    ) -> volbridge_base::Result<Option<String>> {
        let target = record.target.clone();
        let mounted = self
            .on_host(move |h| Ok(stage::top_mount(&h.mounts()?, &target).is_some()))
            .await?;
        if mounted {
            return Ok(None);
        }
        let Some(stage) = self
            .store
            .get::<StageRecord>(STAGES, &record.volume_key)?
            .filter(|s| s.phase == Phase::Ready)
        else {
            // Its stage is gone: the publish cannot come back.
            self.store
                .remove(PUBLISHES, &record.target.display().to_string())?;
            return Ok(Some("dropped (the volume is no longer staged)".into()));
        };
        self.publish_on_host(&stage, record).await?;
        Ok(Some("restored (the kernel had lost it)".into()))
    }

    /// A format marker outlives its stage only by a crash right after the stage finished.
    fn reconcile_formats(&self, report: &mut ReconcileReport) {
        let Ok(markers) = self.store.list::<serde_json::Value>(FORMATS) else {
            return;
        };
        for (key, _) in markers {
            let ready = self
                .store
                .get::<StageRecord>(STAGES, &key)
                .ok()
                .flatten()
                .is_some_and(|s| s.phase == Phase::Ready);
            if ready && self.store.remove(FORMATS, &key).is_ok() {
                report
                    .actions
                    .push(format!("cleared the format marker of staged volume {key}"));
            }
        }
    }

    /// Loop devices on files of our CSP roots that no stage record claims, and mounts under
    /// the staging root that no stage record explains. A periodic pass only removes what
    /// the previous pass already saw orphaned, so an operation that starts in between is
    /// never disturbed.
    async fn sweep_orphans(
        &self,
        report: &mut ReconcileReport,
        loops: Vec<LoopDevice>,
        first_pass: bool,
    ) {
        let roots = self.node_config.transport.local_roots.clone();
        let stages = self.stages().unwrap_or_default();
        let claimed: BTreeSet<PathBuf> = stages
            .iter()
            .filter_map(|s| s.context.get("localPath").map(PathBuf::from))
            .map(|p| self.host.canonicalize(&p).unwrap_or(p))
            .collect();
        let staged_paths: BTreeSet<PathBuf> =
            stages.iter().map(|s| s.staging_path.clone()).collect();
        let staging_root = self.staging_root();
        // Read-only views (read_only_view) of the devices our stages use: the local loops
        // over files of our roots, and what the other transports find.
        let mut our_devices: BTreeSet<PathBuf> = loops
            .iter()
            .filter(|l| paths::is_within(&strip_deleted(&l.backing_file), &roots))
            .map(|l| l.device.clone())
            .collect();
        our_devices.extend(self.devices_of(&stages).await);
        let mut candidates: Vec<LoopDevice> = loops
            .into_iter()
            .filter(|l| {
                let file = strip_deleted(&l.backing_file);
                // The local CSP's image pool holds the volumes' files; it is not one.
                let pool_image = file.file_name() == Some(POOL_IMAGE.as_ref());
                (paths::is_within(&file, &roots) && !claimed.contains(&file) && !pool_image)
                    || (read_only_view::is_view(l) && our_devices.contains(&file))
            })
            .collect();
        // Views first: each holds the device it shows open.
        candidates.sort_by_key(|l| !read_only_view::is_view(l));
        let now: BTreeSet<(PathBuf, PathBuf)> = candidates
            .iter()
            .map(|l| (l.device.clone(), l.backing_file.clone()))
            .collect();
        let previous = std::mem::replace(
            &mut *self.orphans_seen.lock().unwrap_or_else(|p| p.into_inner()),
            now,
        );
        let ripe: Vec<LoopDevice> = candidates
            .into_iter()
            .filter(|l| {
                first_pass || previous.contains(&(l.device.clone(), l.backing_file.clone()))
            })
            .collect();
        let actions = self
            .on_host(move |host| {
                let mut actions = Vec::new();
                let mounts = host.mounts()?;
                for m in mounts.iter().filter(|m| {
                    m.target.starts_with(&staging_root) && !staged_paths.contains(&m.target)
                }) {
                    host.unmount(&m.target)?;
                    actions.push(format!(
                        "unmounted orphaned staging mount {}",
                        m.target.display()
                    ));
                }
                let mounts = host.mounts()?;
                let current = host.loops()?;
                let dev_fs = read_only_view::dev_fs(host)?;
                for l in ripe {
                    // Still the same binding, and nothing mounts it or binds its node.
                    if !current.contains(&l) || read_only_view::in_use(&mounts, &dev_fs, &l) {
                        continue;
                    }
                    host.loop_detach(&l.device)?;
                    actions.push(format!(
                        "detached orphaned loop device {} ({})",
                        l.device.display(),
                        l.backing_file.display()
                    ));
                }
                Ok(actions)
            })
            .await;
        match actions {
            Ok(a) => report.actions.extend(a),
            Err(e) => report.actions.push(format!("orphan sweep failed: {e}")),
        }
    }
}

impl Engine {
    /// The devices of ready stages that do not use the local transport (whose loops the
    /// sweep sees directly), found by their identity.
    async fn devices_of(&self, stages: &[StageRecord]) -> Vec<PathBuf> {
        let targets: Vec<AttachTarget> = stages
            .iter()
            .filter(|s| s.phase == Phase::Ready)
            .filter_map(|s| s.published().ok())
            .map(|p| p.target)
            .filter(|t| !matches!(t, AttachTarget::Local(_)))
            .collect();
        if targets.is_empty() {
            return Vec::new();
        }
        let transport_config = self.node_config.transport.clone();
        self.on_host(move |host| {
            Ok(targets
                .iter()
                .filter_map(|t| t.attacher(&transport_config).find(host).ok().flatten())
                .collect())
        })
        .await
        .unwrap_or_default()
    }
}

/// What finishing an interrupted phase means: a set-up is undone, a tear-down completed.
fn teardown_verb(phase: Phase) -> &'static str {
    if phase == Phase::Creating {
        "rolled back"
    } else {
        "finished removing"
    }
}

fn strip_deleted(p: &std::path::Path) -> PathBuf {
    let s = p.to_string_lossy();
    PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s).to_string())
}

impl Engine {
    /// CSP grants this node holds for nothing: an attachment record with no stage record
    /// (a crash between the CSP publish and the stage). Their grant is ended; records of
    /// volumes the CSP no longer has are dropped.
    pub(crate) async fn reconcile_attachments(&self, report: &mut ReconcileReport) {
        let attachments = match self.attachments() {
            Ok(a) => a,
            Err(e) => return report.actions.push(format!("cannot read attachments: {e}")),
        };
        for a in attachments {
            let key = crate::records::node::engine_volume_key(&a.backend, &a.volume_id);
            if self
                .store
                .get::<StageRecord>(STAGES, &key)
                .ok()
                .flatten()
                .is_some()
            {
                continue;
            }
            let Ok(_guard) = self
                .guards
                .try_lock(&format!("{}/{}", a.backend, a.volume_name))
            else {
                continue;
            };
            let what = format!(
                "CSP grant of '{}' on backend '{}'",
                a.volume_name, a.backend
            );
            let outcome = self
                .detach_locked(&a.backend, &a.volume_name, Some(&a.volume_id))
                .await
                .map(|()| Some("ended (nothing uses it on this node)".to_owned()));
            report.settle(&what, outcome);
        }
    }
}
