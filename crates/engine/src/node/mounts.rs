//! The engine's own node flows, for callers that think in "mount this volume here" (CLI,
//! Docker, FlexVolume): CSP grant, stage and publish in one idempotent call, and the
//! reverse that releases the volume once its last mount is gone.

use super::attachments::{Attachment, COLLECTION as ATTACHMENTS};
use crate::names::validate_name;
use crate::records::intent::{self, Intent};
use crate::records::node::{
    engine_volume_key, Owner, PublishRecord, StageRecord, PUBLISHES, STAGES,
};
use crate::Access;
use crate::{Engine, PublishVolume, StageVolume, Wait};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use volbridge_base::error::{Error, Result};
use volbridge_host::paths;

#[derive(Debug, Clone, Default)]
pub struct MountVolume {
    pub name: String,
    pub backend: Option<String>,
    pub target: String,
    pub read_only: bool,
    /// Publish the raw device on a file instead of a filesystem on a directory.
    pub block: bool,
    /// `""` = what the volume was made with, else ext4.
    pub fs_type: String,
    pub mount_options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mounted {
    pub volume: String,
    pub backend: String,
    pub target: PathBuf,
    pub device: PathBuf,
    pub fs_type: Option<String>,
    pub formatted: bool,
    pub read_only: bool,
}

impl Engine {
    /// Mounts a volume at a directory (or its device on a file, `block`), attaching it at
    /// the CSP and staging it first when needed. Repeating it is success.
    pub async fn mount_volume(&self, req: MountVolume, wait: Wait) -> Result<Mounted> {
        validate_name("name", &req.name)?;
        let target = paths::validate_target("path", &req.target)?;
        let backend = self.backends.resolve(req.backend.as_deref())?.name.clone();
        let _guard = self.guard(&backend, &req.name, wait).await?;
        // A second mount of a volume already here shares its attachment and stage: a
        // read-only bind of a read-write volume is fine; anything else is refused here, by
        // name and path, before anything is touched.
        let existing = self
            .stage_of(&backend, &req.name)?
            .filter(|s| s.phase == crate::Phase::Ready && s.owner == Owner::Engine);
        let attach_read_only = match &existing {
            Some(stage) => {
                self.check_second_mount(stage, &req, &target)?;
                stage.read_only
            }
            None => req.read_only,
        };
        self.check_mount_target(&target, req.block).await?;
        let fs_type = (!req.block).then_some(req.fs_type.as_str());
        let attachment = self
            .attach_locked(&backend, &req.name, attach_read_only, fs_type)
            .await?;
        // Volatile: after a power loss the durable attachment record alone says the grant
        // is unused, and the reconciler ends it.
        let intent_key = intent::new_key();
        self.store.put_volatile(
            intent::COLLECTION,
            &intent_key,
            &Intent::MountVolume {
                backend: backend.clone(),
                name: req.name.clone(),
                volume_id: attachment.volume_id.clone(),
                target: target.clone(),
            },
        )?;
        let result = self
            .stage_and_publish(&attachment, &req, &target, attach_read_only)
            .await;
        if result.is_err() {
            if let Err(e) = self.release_if_unused(&attachment).await {
                tracing::warn!(error = %e, volume = %req.name, "cannot release after a failed mount");
                // The intent stays: the reconciler finishes the release.
                return result;
            }
        }
        self.store
            .remove_volatile(intent::COLLECTION, &intent_key)?;
        if result.is_ok() {
            self.finish_pending_releases(&backend).await;
        }
        result
    }

    /// A second mount of a volume this node already stages for `volume mount` (or Docker):
    /// the same kind of access (filesystem or raw device), the same filesystem, and
    /// read-write only when the volume is attached read-write. Read-only or read-write is a
    /// property of the whole attachment (the loop device, the staging mount); a read-only
    /// mount of a read-write volume is a read-only bind of it.
    fn check_second_mount(
        &self,
        stage: &StageRecord,
        req: &MountVolume,
        target: &Path,
    ) -> Result<()> {
        let name = &req.name;
        let publishes = self.publishes_of(&stage.volume_key)?;
        let refuse = |message: String| {
            Err(Error::precondition(message)
                .with_reason(volbridge_base::Reason::InUse)
                .about(volbridge_base::Object::Volume(name.clone())))
        };
        let how = |block: bool, read_only: bool| match (block, read_only) {
            (true, true) => "as a read-only raw device",
            (true, false) => "as a raw device",
            (false, true) => "read-only",
            (false, false) => "read-write",
        };
        // The same target again: the same mount is a repeat (success), another is refused.
        if let Some(here) = publishes.iter().find(|p| p.target == target) {
            if here.block == req.block && here.read_only == req.read_only {
                return Ok(());
            }
            let shown = target.display();
            return refuse(format!(
                "volume '{name}' is already mounted at {shown} {}; unmount it first to mount \
                 it there {}: volbridge volume unmount {name} {shown}",
                how(here.block, here.read_only),
                how(req.block, req.read_only)
            ));
        }
        let targets: Vec<String> = publishes
            .iter()
            .map(|p| p.target.display().to_string())
            .collect();
        // Where the volume is used now, and the command that ends that use.
        let (place, undo) = match targets.as_slice() {
            [] => (
                "attached to this node (volume attach)".to_owned(),
                format!("detach it first: volbridge volume detach {name}"),
            ),
            [one] => (
                format!("mounted at {one}"),
                format!("unmount it from {one} first: volbridge volume unmount {name} {one}"),
            ),
            many => (
                format!("mounted at {}", many.join(", ")),
                format!(
                    "unmount it from each first: {}",
                    many.iter()
                        .map(|t| format!("volbridge volume unmount {name} {t}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ),
        };
        let undo = if stage.pinned && !targets.is_empty() {
            format!("{undo}, then volbridge volume detach {name}")
        } else {
            undo
        };
        match (stage.access.is_block(), req.block) {
            (false, true) => {
                return refuse(format!(
                    "volume '{name}' is {place} as a filesystem; its raw device cannot be \
                     published while the filesystem is mounted (writes to the device would \
                     corrupt it): {undo}, or use another volume for --block"
                ))
            }
            (true, false) => {
                return refuse(format!(
                    "volume '{name}' is {place} as a raw device; its filesystem cannot be \
                     mounted while the device is used that way: {undo}, or mount it with \
                     --block too"
                ))
            }
            _ => {}
        }
        if stage.read_only && !req.read_only {
            return refuse(format!(
                "volume '{name}' is {place} read-only; a volume is attached read-only or \
                 read-write as a whole: {undo}, or mount it with --read-only too"
            ));
        }
        if let Some(have) = stage.fs_type.as_deref() {
            if !req.block && !req.fs_type.is_empty() && !req.fs_type.eq_ignore_ascii_case(have) {
                return refuse(format!(
                    "volume '{name}' holds {have} ({place}); a formatted volume is never \
                     reformatted, so --fs-type {} does not apply: leave --fs-type out",
                    req.fs_type
                ));
            }
        }
        Ok(())
    }

    /// A filesystem is mounted on a directory (made when missing), a raw device on a file.
    async fn check_mount_target(&self, target: &Path, block: bool) -> Result<()> {
        let path = target.to_path_buf();
        let kind = self
            .on_host(move |host| Ok(host.stat(&path)?.map(|s| s.kind)))
            .await?;
        let shown = target.display();
        match (kind, block) {
            (Some(volbridge_host::FileKind::Dir) | None, false) => Ok(()),
            (Some(_), false) => Err(Error::precondition(format!(
                "{shown} exists and is not a directory; a volume's filesystem is mounted on a \
                 directory: give a directory (it is made when missing), or add --block to \
                 bind the raw device onto this file"
            ))),
            (Some(volbridge_host::FileKind::Dir), true) => Err(Error::precondition(format!(
                "{shown} is a directory; --block binds the raw device onto a file: give a \
                 file's path (it is made when missing), or leave --block out to mount the \
                 filesystem there"
            ))),
            (_, true) => Ok(()),
        }
    }

    async fn stage_and_publish(
        &self,
        attachment: &Attachment,
        req: &MountVolume,
        target: &Path,
        stage_read_only: bool,
    ) -> Result<Mounted> {
        let key = engine_volume_key(&attachment.backend, &attachment.volume_id);
        let _node = self.node_guard(&key, Wait::Bounded).await?;
        let staging = self.engine_staging_path(&key);
        let access = if req.block {
            Access::Block
        } else {
            Access::Mount {
                fs_type: req.fs_type.clone(),
                mount_options: req.mount_options.clone(),
            }
        };
        let staged = self
            .stage_locked(StageVolume {
                volume_key: key.clone(),
                backend: attachment.backend.clone(),
                volume_name: attachment.volume_name.clone(),
                owner: Owner::Engine,
                pinned: false,
                context: attachment.context.clone(),
                staging_path: staging.display().to_string(),
                access,
                read_only: stage_read_only,
            })
            .await?;
        self.publish_locked(PublishVolume {
            volume_key: key,
            target_path: target.display().to_string(),
            read_only: req.read_only,
            mount_options: Vec::new(),
            remove_target: false,
            single_writer: false,
        })
        .await?;
        Ok(Mounted {
            volume: attachment.volume_name.clone(),
            backend: attachment.backend.clone(),
            target: target.to_path_buf(),
            device: staged.device,
            fs_type: staged.fs_type,
            formatted: staged.formatted,
            read_only: req.read_only || stage_read_only,
        })
    }

    /// Unmounts a volume from a path; the last unmount unstages it and ends this node's
    /// grant at the CSP. A path volbridge does not mount is success.
    pub async fn unmount_volume(
        &self,
        name: &str,
        backend: Option<&str>,
        target: &str,
        wait: Wait,
    ) -> Result<bool> {
        validate_name("name", name)?;
        let target = paths::validate_target("path", target)?;
        let backend = match self.backends.resolve(backend) {
            Ok(b) => b.name,
            // A backend named by request secrets is forgotten at a restart. The node's
            // records say what the target holds (checked below), so the node side can
            // still be torn down; the CSP grant waits for the backend (release pending).
            Err(e) => match backend.filter(|b| !b.is_empty()) {
                Some(named) => named.to_owned(),
                None => return Err(e),
            },
        };
        let Some(publish) = self
            .store
            .get::<PublishRecord>(PUBLISHES, &target.display().to_string())?
        else {
            return Ok(false);
        };
        let stage = self.store.get::<StageRecord>(STAGES, &publish.volume_key)?;
        let Some(stage) = stage.filter(|s| s.owner == Owner::Engine) else {
            return Err(Error::precondition(format!(
                "{} is published by a container orchestrator, not by `volume mount`",
                target.display()
            )));
        };
        if stage.volume_name != name || stage.backend != backend {
            return Err(Error::invalid(
                "path",
                format!(
                    "{} holds volume '{}' of backend '{}', not '{name}'",
                    target.display(),
                    stage.volume_name,
                    stage.backend
                ),
            ));
        }
        let _guard = self.guard(&backend, name, wait).await?;
        let attachment = self.attachment_of(&stage)?;
        // Volatile: after a power loss the durable attachment record alone says the grant
        // is unused, and the reconciler ends it.
        let intent_key = intent::new_key();
        self.store.put_volatile(
            intent::COLLECTION,
            &intent_key,
            &Intent::UnmountVolume {
                backend: backend.clone(),
                name: name.to_owned(),
                volume_id: attachment.volume_id.clone(),
                target: target.clone(),
            },
        )?;
        {
            let _node = self.node_guard(&publish.volume_key, Wait::Bounded).await?;
            self.unpublish_locked(&publish.volume_key, &target).await?;
        }
        self.release_if_unused(&attachment).await?;
        self.store
            .remove_volatile(intent::COLLECTION, &intent_key)?;
        Ok(true)
    }

    fn attachment_of(&self, stage: &StageRecord) -> Result<Attachment> {
        let volume_id = stage
            .volume_key
            .strip_prefix(&format!("{}-", stage.backend))
            .unwrap_or_default();
        let mut a = self.attachment_for(&stage.backend, &stage.volume_name, volume_id)?;
        if a.context.is_empty() {
            a.context = stage.context.clone();
        }
        Ok(a)
    }

    /// The attachment record of a volume, or a stand-in with what is known (enough to
    /// unstage and end the grant) when the record is already gone.
    pub(crate) fn attachment_for(
        &self,
        backend: &str,
        name: &str,
        volume_id: &str,
    ) -> Result<Attachment> {
        let key = engine_volume_key(backend, volume_id);
        Ok(self
            .store
            .get::<Attachment>(ATTACHMENTS, &key)?
            .unwrap_or(Attachment {
                backend: backend.to_owned(),
                volume_name: name.to_owned(),
                volume_id: volume_id.to_owned(),
                node_uuid: self.node.uuid.clone(),
                read_only: false,
                context: Default::default(),
                release_pending: false,
            }))
    }

    /// With no publish left and no pin: unstage, then end the CSP grant.
    pub(crate) async fn release_if_unused(&self, attachment: &Attachment) -> Result<()> {
        let key = engine_volume_key(&attachment.backend, &attachment.volume_id);
        let _node = self.node_guard(&key, Wait::Bounded).await?;
        if !self.publishes_of(&key)?.is_empty() {
            return Ok(());
        }
        if let Some(stage) = self.store.get::<StageRecord>(STAGES, &key)? {
            if stage.pinned || stage.owner != Owner::Engine {
                return Ok(());
            }
            self.unstage_locked(&key, None).await?;
        }
        self.release_or_defer(attachment).await
    }

    /// Attaches a volume's device to this node and keeps it attached (`volume attach`).
    pub async fn attach_device(
        &self,
        name: &str,
        backend: Option<&str>,
        read_only: bool,
        wait: Wait,
    ) -> Result<Mounted> {
        validate_name("name", name)?;
        let backend = self.backends.resolve(backend)?.name.clone();
        let _guard = self.guard(&backend, name, wait).await?;
        let attachment = self.attach_locked(&backend, name, read_only, None).await?;
        let key = engine_volume_key(&backend, &attachment.volume_id);
        let node = self.node_guard(&key, Wait::Bounded).await?;
        if let Some(existing) = self.store.get::<StageRecord>(STAGES, &key)? {
            // Already staged (mounted somewhere): pin it so the last unmount keeps it.
            let mut pinned = existing.clone();
            pinned.pinned = true;
            self.store.put(STAGES, &key, &pinned)?;
        }
        let staged = self
            .stage_locked(StageVolume {
                volume_key: key.clone(),
                backend: backend.clone(),
                volume_name: name.to_owned(),
                owner: Owner::Engine,
                pinned: true,
                context: attachment.context.clone(),
                staging_path: self.engine_staging_path(&key).display().to_string(),
                access: self
                    .store
                    .get::<StageRecord>(STAGES, &key)?
                    .map(|s| s.access)
                    .unwrap_or(Access::Block),
                read_only,
            })
            .await;
        drop(node);
        let staged = match staged {
            Ok(s) => s,
            Err(e) => {
                let _ = self.release_if_unused(&attachment).await;
                return Err(e);
            }
        };
        Ok(Mounted {
            volume: name.to_owned(),
            backend,
            target: PathBuf::new(),
            device: staged.device,
            fs_type: staged.fs_type,
            formatted: false,
            read_only,
        })
    }

    /// Detaches a volume attached with `volume attach`; refused while it is mounted.
    pub async fn detach_device(&self, name: &str, backend: Option<&str>, wait: Wait) -> Result<()> {
        validate_name("name", name)?;
        let backend = self.backends.resolve(backend)?.name.clone();
        let _guard = self.guard(&backend, name, wait).await?;
        let Some(mut stage) = self.stage_of(&backend, name)? else {
            // Not staged here: end any grant left at the CSP.
            return self.detach_locked(&backend, name, None).await;
        };
        if stage.owner != Owner::Engine {
            return Err(Error::precondition(format!(
                "volume '{name}' is staged by a container orchestrator; it detaches it"
            )));
        }
        if let Some(p) = self.publishes_of(&stage.volume_key)?.first() {
            return Err(Error::precondition(format!(
                "volume '{name}' is mounted at {}; unmount it first",
                p.target.display()
            )));
        }
        {
            let _node = self.node_guard(&stage.volume_key, Wait::Bounded).await?;
            stage.pinned = false;
            self.store.put(STAGES, &stage.volume_key, &stage)?;
        }
        let attachment = self.attachment_of(&stage)?;
        self.release_if_unused(&attachment).await
    }
}

impl Engine {
    /// Expands a volume at the CSP and, when it is staged on this node, its device and
    /// filesystem too (online when mounted).
    pub async fn expand_and_grow(
        &self,
        name: &str,
        size: u64,
        backend: Option<&str>,
        wait: Wait,
    ) -> Result<(crate::Volume, Option<volbridge_host::stage::Expanded>)> {
        let volume = self
            .expand_volume_with(name, size, backend, wait, crate::Shrink::Refuse)
            .await?;
        let key = engine_volume_key(&volume.backend, &volume.id);
        let staged = self
            .store
            .get::<StageRecord>(STAGES, &key)?
            .is_some_and(|s| s.phase == crate::Phase::Ready);
        if !staged {
            self.store.put(
                crate::records::node::GROWS,
                &key,
                &serde_json::json!({"size_bytes": volume.size_bytes}),
            )?;
            return Ok((volume, None));
        }
        let grown = self.node_expand(&key, wait).await?;
        Ok((volume, Some(grown)))
    }
}
