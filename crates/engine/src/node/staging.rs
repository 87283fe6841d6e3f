//! Node stage and unstage: the device attached and its filesystem mounted at a staging
//! path, recorded before and after so that a crash in between is rolled back.

use crate::records::node::{
    Owner, Phase, PublishRecord, StageRecord, FORMATS, GROWS, PUBLISHES, STAGES,
};
use crate::Access;
use crate::{Engine, OpGuard, Wait};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use volbridge_base::error::{Error, ErrorKind, Result};
use volbridge_host::stage::{self, StageRequest, Staged};
use volbridge_host::{paths, PublishedVolume};

#[derive(Debug, Clone)]
pub struct StageVolume {
    pub volume_key: String,
    pub backend: String,
    pub volume_name: String,
    pub owner: Owner,
    pub pinned: bool,
    pub context: BTreeMap<String, String>,
    pub staging_path: String,
    pub access: Access,
    pub read_only: bool,
}

impl Engine {
    pub(crate) async fn node_guard(&self, volume_key: &str, wait: Wait) -> Result<OpGuard> {
        self.guard("@node", volume_key, wait).await
    }

    /// Stages a volume (idempotent): attach, format if blank, mount at the staging path.
    pub async fn node_stage(&self, req: StageVolume, wait: Wait) -> Result<Staged> {
        let _guard = self.node_guard(&req.volume_key, wait).await?;
        self.stage_locked(req).await
    }

    pub(crate) async fn stage_locked(&self, req: StageVolume) -> Result<Staged> {
        if req.volume_key.is_empty() {
            return Err(Error::invalid("volume_id", "a volume id is required"));
        }
        let staging_path = paths::validate_target("staging_target_path", &req.staging_path)?;
        let published = PublishedVolume::parse(&req.volume_name, &req.context)?;
        let key = req.volume_key.clone();
        let previous = self.store.get::<StageRecord>(STAGES, &key)?;
        if let Some(p) = previous.as_ref().filter(|p| p.phase == Phase::Ready) {
            let other_fs = match (&req.access, &p.fs_type) {
                (Access::Mount { fs_type, .. }, Some(have)) => {
                    !fs_type.is_empty() && fs_type != have
                }
                _ => false,
            };
            if p.staging_path != staging_path
                || p.access.is_block() != req.access.is_block()
                || p.read_only != req.read_only
                || other_fs
            {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "volume '{}' is already staged at {} (read_only={}, block={})",
                        req.volume_name,
                        p.staging_path.display(),
                        p.read_only,
                        p.access.is_block()
                    ),
                ));
            }
        }
        // Kubelet makes the staging directory; Docker Swarm's agent makes none (it names
        // `/data/staged/<id>` in the plugin's rootfs). What we make, we remove at unstage, or
        // at once if the stage fails. The transitional record says so before the directory
        // exists, so that the reconciler's rollback of a crashed stage removes it too: a
        // retry would otherwise find it and take it for the CO's.
        let made_before = previous.as_ref().is_some_and(|p| p.made_staging_dir);
        let making = !req.access.is_block() && {
            let path = staging_path.clone();
            self.on_host(move |host| Ok(host.stat(&path)?.is_none()))
                .await?
        };
        let mut record = StageRecord {
            volume_key: key.clone(),
            backend: req.backend,
            volume_name: req.volume_name,
            owner: req.owner,
            pinned: req.pinned || previous.as_ref().is_some_and(|p| p.pinned),
            context: req.context,
            staging_path: staging_path.clone(),
            access: req.access,
            read_only: req.read_only,
            phase: Phase::Creating,
            fs_type: None,
            made_staging_dir: made_before || making,
        };
        let was_ready = previous.as_ref().is_some_and(|p| p.phase == Phase::Ready);
        // Transitional records need only survive the process, not a power loss (which
        // takes the loop devices and mounts with it); the final state is written durably.
        if !was_ready {
            self.store.put_volatile(STAGES, &key, &record)?;
        }
        let redo_format = self
            .store
            .get::<serde_json::Value>(FORMATS, &key)?
            .is_some();
        let store = self.store.clone();
        let transport_config = self.node_config.transport.clone();
        let tool_timeout = self.node_config.tool_timeout;
        let access = record.access.clone();
        let read_only = record.read_only;
        let format_key = key.clone();
        let outcome = self
            .on_host(move |host| {
                let attacher = published.target.attacher(&transport_config);
                let before_format = || {
                    store.put(
                        FORMATS,
                        &format_key,
                        &serde_json::json!({"device_was_blank": true}),
                    )
                };
                let staged = stage::stage(
                    host,
                    &StageRequest {
                        attacher: attacher.as_ref(),
                        filesystem: &published.filesystem,
                        staging_path: &staging_path,
                        access: &(&access).into(),
                        read_only,
                        tool_timeout,
                        redo_format,
                        before_format: &before_format,
                    },
                );
                match staged {
                    Ok(staged) => Ok((staged, made_before || making)),
                    Err(e) => {
                        if making {
                            // Nothing is mounted there after a failed stage; an rmdir
                            // that fails leaves an empty directory, nothing worse.
                            let _ = host.remove(&staging_path);
                        }
                        Err(e)
                    }
                }
            })
            .await;
        match outcome {
            Ok((staged, made)) => {
                record.phase = Phase::Ready;
                record.made_staging_dir = made;
                record.fs_type = staged.fs_type.clone();
                self.store.put(STAGES, &key, &record)?;
                // The filesystem is complete and mounted: from here on it may hold data,
                // so our own mkfs must never run on it again.
                self.store.remove_volatile(FORMATS, &key)?;
                if staged.fs_type.is_some()
                    && self.store.get::<serde_json::Value>(GROWS, &key)?.is_some()
                {
                    // Expanded while it was not staged here: grow the filesystem now.
                    self.expand_locked(&key).await?;
                    self.store.remove(GROWS, &key)?;
                }
                Ok(staged)
            }
            Err(e) => {
                if !was_ready {
                    self.store.remove_volatile(STAGES, &key)?;
                }
                Err(e)
            }
        }
    }

    /// Unmounts the staging path and detaches the device (idempotent). Refused while the
    /// volume is still published on this node.
    pub async fn node_unstage(
        &self,
        volume_key: &str,
        staging_path: &str,
        wait: Wait,
    ) -> Result<()> {
        let _guard = self.node_guard(volume_key, wait).await?;
        let staging_path = paths::validate_target("staging_target_path", staging_path)?;
        self.unstage_locked(volume_key, Some(&staging_path)).await
    }

    pub(crate) async fn unstage_locked(
        &self,
        volume_key: &str,
        staging_path: Option<&Path>,
    ) -> Result<()> {
        let Some(mut record) = self.store.get::<StageRecord>(STAGES, volume_key)? else {
            // Never staged by us (or already unstaged): leave whatever else is there alone.
            return Ok(());
        };
        if let Some(path) = staging_path {
            if path != record.staging_path {
                return Err(Error::not_found(format!(
                    "volume is staged at {}, not at {}",
                    record.staging_path.display(),
                    path.display()
                )));
            }
        }
        let published = self.publishes_of(volume_key)?;
        if let Some(p) = published.first() {
            return Err(Error::precondition(format!(
                "volume '{}' is still published at {}; unpublish it first",
                record.volume_name,
                p.target.display()
            )));
        }
        if record.phase != Phase::Removing {
            record.phase = Phase::Removing;
            self.store.put_volatile(STAGES, volume_key, &record)?;
        }
        self.unstage_on_host(&record).await?;
        self.store.remove(STAGES, volume_key)
    }

    /// The host half of unstage, also used by the reconciler.
    pub(crate) async fn unstage_on_host(&self, record: &StageRecord) -> Result<()> {
        let published = record.published()?;
        let transport_config = self.node_config.transport.clone();
        let staging = record.staging_path.clone();
        let ours = record.owner == Owner::Engine;
        let made = record.made_staging_dir;
        self.on_host(move |host| {
            let attacher = published.target.attacher(&transport_config);
            stage::unstage(host, attacher.as_ref(), &staging)?;
            if ours {
                host.remove(&staging)?;
            } else if made {
                // The CO never asked for this directory; if it put something there
                // meanwhile, that is its own to keep, and the unstage is done anyway.
                if let Err(e) = host.remove(&staging) {
                    tracing::warn!(error = %e.message, path = %staging.display(), "staging directory left in place");
                }
            }
            Ok(())
        })
        .await
    }

    /// Publish records of one volume.
    pub(crate) fn publishes_of(&self, volume_key: &str) -> Result<Vec<PublishRecord>> {
        Ok(self
            .store
            .list::<PublishRecord>(PUBLISHES)?
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .filter(|r| r.volume_key == volume_key)
            .collect())
    }

    /// The stage record under one key (one record read, not a listing).
    pub fn stage(&self, volume_key: &str) -> Result<Option<StageRecord>> {
        self.store.get::<StageRecord>(STAGES, volume_key)
    }

    /// Every stage record of this node (for the admin API and the reconciler).
    pub fn stages(&self) -> Result<Vec<StageRecord>> {
        Ok(self
            .store
            .list::<StageRecord>(STAGES)?
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .collect())
    }

    /// The stage record of a volume by backend and name.
    pub fn stage_of(&self, backend: &str, name: &str) -> Result<Option<StageRecord>> {
        Ok(self
            .stages()?
            .into_iter()
            .find(|s| s.backend == backend && s.volume_name == name))
    }

    /// Before a snapshot: what this node's page cache holds for a volume staged here (or,
    /// with no name, for every volume of the backend: a group snapshot) is
    /// written back, so the CSP's copy holds every write made before the snapshot call
    /// (the loop device writes through to the image; the filesystem above it caches).
    /// Best effort: a volume staged nowhere here has nothing to flush, and a failed flush
    /// still leaves a crash-consistent snapshot.
    pub(crate) async fn flush_staged(&self, backend: &str, name: Option<&str>) {
        let Ok(stages) = self.stages() else {
            return;
        };
        let stages: Vec<StageRecord> = stages
            .into_iter()
            .filter(|s| s.phase == Phase::Ready && s.backend == backend)
            .filter(|s| name.is_none_or(|n| s.volume_name == n))
            .collect();
        if stages.is_empty() {
            return;
        }
        let transport_config = self.node_config.transport.clone();
        let flushed = self
            .on_host(move |host| {
                for stage in stages {
                    let path = if stage.access.is_block() {
                        let published = stage.published()?;
                        let found = published.target.attacher(&transport_config).find(host)?;
                        match found {
                            Some(device) => device,
                            None => continue,
                        }
                    } else {
                        stage.staging_path.clone()
                    };
                    host.flush(&path)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = flushed {
            tracing::warn!(error = %e.message, "cannot flush before the snapshot");
        }
    }

    /// The staging directory the engine's own flows use for a volume.
    pub(crate) fn engine_staging_path(&self, volume_key: &str) -> PathBuf {
        self.staging_root()
            .join(crate::records::node::path_component(volume_key))
    }
}
