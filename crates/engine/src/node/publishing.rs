//! Node publish and unpublish: a bind of the staged filesystem (or of the device node, for
//! block volumes) onto a target path, recorded before and after.

use crate::records::node::{Phase, PublishRecord, StageRecord, PUBLISHES, STAGES};
use crate::{Engine, Wait};
use volbridge_base::error::{Error, ErrorKind, Result};
use volbridge_host::stage::{self, PublishRequest};
use volbridge_host::{paths, read_only_view};

#[derive(Debug, Clone)]
pub struct PublishVolume {
    pub volume_key: String,
    pub target_path: String,
    pub read_only: bool,
    pub mount_options: Vec<String>,
    /// Remove the target on unpublish (CSI); the CLI leaves the user's directory.
    pub remove_target: bool,
    /// One workload only (CSI SINGLE_NODE_SINGLE_WRITER, Kubernetes ReadWriteOncePod): while
    /// the volume is published at one target, a second target is refused, whichever of the
    /// two asked for single-writer access.
    pub single_writer: bool,
}

impl Engine {
    /// Publishes a staged volume at a target (idempotent).
    pub async fn node_publish(&self, req: PublishVolume, wait: Wait) -> Result<()> {
        let _guard = self.node_guard(&req.volume_key, wait).await?;
        self.publish_locked(req).await
    }

    pub(crate) async fn publish_locked(&self, req: PublishVolume) -> Result<()> {
        let target = paths::validate_target("target_path", &req.target_path)?;
        let key = target.display().to_string();
        let stage = self
            .store
            .get::<StageRecord>(STAGES, &req.volume_key)?
            .filter(|s| s.phase == Phase::Ready)
            .ok_or_else(|| {
                Error::precondition(format!(
                    "volume '{}' is not staged on this node; stage it first",
                    req.volume_key
                ))
            })?;
        if target == stage.staging_path {
            return Err(Error::invalid(
                "target_path",
                "the target must differ from the staging path",
            ));
        }
        let block = stage.access.is_block();
        let read_only = req.read_only || stage.read_only;
        let existing = self.store.get::<PublishRecord>(PUBLISHES, &key)?;
        if let Some(existing) = &existing {
            if existing.volume_key != req.volume_key {
                return Err(Error::precondition(format!(
                    "{} already publishes another volume",
                    target.display()
                )));
            }
            let other_access = existing
                .single_writer
                .filter(|single| *single != req.single_writer);
            if let (Phase::Ready, Some(single)) = (existing.phase, other_access) {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "{} is already published with {} access",
                        target.display(),
                        if single { "single-writer" } else { "shared" }
                    ),
                ));
            }
            if existing.phase == Phase::Ready && existing.read_only != read_only {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "{} is already published with read_only={}",
                        target.display(),
                        existing.read_only
                    ),
                ));
            }
        }
        let elsewhere = self
            .publishes_of(&req.volume_key)?
            .into_iter()
            .find(|p| p.target != target && (req.single_writer || p.single_writer == Some(true)));
        if let Some(other) = elsewhere {
            return Err(Error::precondition(format!(
                "volume '{}' is already published at {} for a single writer; a second target ({}) is refused until it is unpublished there",
                stage.volume_name,
                other.target.display(),
                target.display()
            )));
        }
        let mut record = PublishRecord {
            volume_key: req.volume_key.clone(),
            target: target.clone(),
            staging_path: stage.staging_path.clone(),
            block,
            read_only,
            mount_options: req.mount_options.clone(),
            remove_target: req.remove_target,
            single_writer: Some(req.single_writer),
            phase: Phase::Creating,
        };
        let already = existing.as_ref().is_some_and(|r| r.phase == Phase::Ready);
        if !already {
            self.store.put_volatile(PUBLISHES, &key, &record)?;
        }
        let result = self.publish_on_host(&stage, &record).await;
        match result {
            Ok(()) => {
                if !already {
                    record.phase = Phase::Ready;
                    self.store.put(PUBLISHES, &key, &record)?;
                } else if let Some(mut kept) = existing.filter(|r| r.single_writer.is_none()) {
                    // A record from before the flag learns it from this re-publish, so that
                    // a later publish elsewhere is judged by what the CO asked for. Only the
                    // flag: the target stays as it was made.
                    kept.single_writer = Some(req.single_writer);
                    self.store.put(PUBLISHES, &key, &kept)?;
                }
                Ok(())
            }
            Err(e) => {
                if !already {
                    self.store.remove_volatile(PUBLISHES, &key)?;
                }
                Err(e)
            }
        }
    }

    /// The host half of publish, also used by the reconciler to restore a lost bind.
    pub(crate) async fn publish_on_host(
        &self,
        stage: &StageRecord,
        record: &PublishRecord,
    ) -> Result<()> {
        let published = stage.published()?;
        let transport_config = self.node_config.transport.clone();
        let record = record.clone();
        self.on_host(move |host| {
            let (source, new_view) = if record.block {
                // The device is found by its identity now, never from a stored name.
                let attacher = published.target.attacher(&transport_config);
                let device = attacher.find(host)?.ok_or_else(|| {
                    Error::precondition(
                        "the volume's device is gone from this node; stage it again",
                    )
                })?;
                if record.read_only {
                    read_only_view::for_target(host, &device, &record.target)?
                } else {
                    (device, false)
                }
            } else {
                (record.staging_path.clone(), false)
            };
            let published = stage::publish(
                host,
                &PublishRequest {
                    source: &source,
                    target: &record.target,
                    block: record.block,
                    read_only: record.read_only,
                    mount_options: &record.mount_options,
                },
            );
            if published.is_err() && new_view {
                let _ = host.loop_detach(&source);
            }
            published
        })
        .await
    }

    /// Unpublishes a target (idempotent: a target volbridge never published is success).
    pub async fn node_unpublish(
        &self,
        volume_key: &str,
        target_path: &str,
        wait: Wait,
    ) -> Result<()> {
        let _guard = self.node_guard(volume_key, wait).await?;
        let target = paths::validate_target("target_path", target_path)?;
        self.unpublish_locked(volume_key, &target).await
    }

    /// Unpublishes a target and then, when the volume has no other publish on this node,
    /// unstages it, under one guard so that no stage or publish of the volume comes in
    /// between. For a CO that never sends NodeUnstageVolume (Docker Swarm: see
    /// `frontend::csi::orchestrator`). A volume that is not staged is left as it is.
    pub async fn node_unpublish_and_unstage(
        &self,
        volume_key: &str,
        target_path: &str,
        wait: Wait,
    ) -> Result<()> {
        let _guard = self.node_guard(volume_key, wait).await?;
        let target = paths::validate_target("target_path", target_path)?;
        self.unpublish_locked(volume_key, &target).await?;
        if !self.publishes_of(volume_key)?.is_empty() {
            return Ok(());
        }
        self.unstage_locked(volume_key, None).await
    }

    pub(crate) async fn unpublish_locked(
        &self,
        volume_key: &str,
        target: &std::path::Path,
    ) -> Result<()> {
        let key = target.display().to_string();
        let Some(mut record) = self.store.get::<PublishRecord>(PUBLISHES, &key)? else {
            return Ok(());
        };
        if record.volume_key != volume_key {
            return Err(Error::precondition(format!(
                "{} publishes another volume",
                target.display()
            )));
        }
        if record.phase != Phase::Removing {
            record.phase = Phase::Removing;
            self.store.put_volatile(PUBLISHES, &key, &record)?;
        }
        self.unpublish_on_host(&record).await?;
        self.store.remove(PUBLISHES, &key)
    }

    pub(crate) async fn unpublish_on_host(&self, record: &PublishRecord) -> Result<()> {
        let target = record.target.clone();
        let remove = record.remove_target || record.block;
        let view = record.block && record.read_only;
        self.on_host(move |host| {
            // Found before the unmount: the mount is what names the view.
            let view = if view {
                read_only_view::bound_at(host, &target)?
            } else {
                None
            };
            stage::unpublish(host, &target, remove)?;
            match view {
                Some(device) => host.loop_detach(&device),
                None => Ok(()),
            }
        })
        .await
    }

    /// A target with no publish record (CSI unpublish after a lost answer, or a path the CO
    /// made): removed when nothing is mounted on it and it holds nothing (an empty
    /// directory, or the empty file a block publish binds onto). Anything else is left.
    /// Runs under the node guard of `volume_key`, so that no publish of the volume makes
    /// the target anew while it is looked at.
    pub async fn forget_target(
        &self,
        volume_key: &str,
        target_path: &str,
        wait: Wait,
    ) -> Result<()> {
        let _guard = self.node_guard(volume_key, wait).await?;
        let target = paths::validate_target("target_path", target_path)?;
        if self
            .store
            .get::<PublishRecord>(PUBLISHES, &target.display().to_string())?
            .is_some()
        {
            return Ok(());
        }
        self.on_host(move |host| {
            if host.mounts()?.iter().any(|m| m.target == target) {
                return Ok(());
            }
            let empty = match host.stat(&target)? {
                None => return Ok(()),
                Some(st) if st.kind == volbridge_host::FileKind::Dir => {
                    host.list_dir(&target)?.is_empty()
                }
                Some(st) if st.kind == volbridge_host::FileKind::File => {
                    !host.file_has_data(&target)?
                }
                Some(_) => false,
            };
            if empty {
                host.remove(&target)?;
            }
            Ok(())
        })
        .await
    }

    /// Every publish record of this node.
    pub fn publishes(&self) -> Result<Vec<PublishRecord>> {
        Ok(self
            .store
            .list::<PublishRecord>(PUBLISHES)?
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .collect())
    }
}
