//! Node expand and stats of a staged volume.

use crate::records::node::{
    path_component, Phase, PublishRecord, StageRecord, OFFLINE_GROWS, PUBLISHES, STAGES,
};
use crate::Access;
use crate::{Engine, Wait};
use std::path::PathBuf;
use volbridge_base::error::{Error, Result};
use volbridge_host::stage::{self, ExpandRequest, Expanded, PublishRequest, Stats};
use volbridge_host::{paths, split_mount_options, Host, MountSpec};

impl Engine {
    fn ready_stage(&self, volume_key: &str) -> Result<StageRecord> {
        self.store
            .get::<StageRecord>(STAGES, volume_key)?
            .filter(|s| s.phase == Phase::Ready)
            .ok_or_else(|| {
                Error::not_found(format!("volume '{volume_key}' is not staged on this node"))
            })
    }

    /// Grows the device and filesystem of a staged volume to the size the CSP now has.
    pub async fn node_expand(&self, volume_key: &str, wait: Wait) -> Result<Expanded> {
        let _guard = self.node_guard(volume_key, wait).await?;
        self.expand_locked(volume_key).await
    }

    pub(crate) async fn expand_locked(&self, volume_key: &str) -> Result<Expanded> {
        let record = self.ready_stage(volume_key)?;
        let published = record.published()?;
        let transport_config = self.node_config.transport.clone();
        let tool_timeout = self.node_config.tool_timeout;
        let scratch = self
            .staging_root()
            .join(format!(".grow-{}", path_component(volume_key)));
        let binds: Vec<PublishRecord> = self
            .publishes_of(volume_key)?
            .into_iter()
            .filter(|p| p.phase == Phase::Ready)
            .collect();
        let store = self.store.clone();
        let key = volume_key.to_owned();
        let name = record.volume_name.clone();
        let before_offline =
            move || store.put(OFFLINE_GROWS, &key, &serde_json::json!({ "volume": name }));
        let grown = self
            .on_host(move |host| {
                let attacher = published.target.attacher(&transport_config);
                let mounted = host
                    .mounts()?
                    .iter()
                    .any(|m| m.target == record.staging_path);
                let request = ExpandRequest {
                    attacher: attacher.as_ref(),
                    mounted_at: mounted.then_some(record.staging_path.as_path()),
                    fs_type: record.fs_type.as_deref(),
                    scratch: &scratch,
                    tool_timeout,
                };
                match stage::expand(host, &request) {
                    Err(e) if mounted && e.message.contains(stage::ONLINE_REFUSED) => {
                        // The host's sentence ends with what a person would do by hand
                        // (unmount, expand again); volbridge does it now, so only the
                        // kernel's reason is logged.
                        let cause = e
                            .message
                            .rsplit_once("; unmount")
                            .map_or(e.message.as_str(), |(cause, _)| cause);
                        tracing::info!(
                            volume = %record.volume_name,
                            cause = %cause,
                            "growing offline: volbridge unmounts the volume, checks and grows \
                             its filesystem, then mounts it again"
                        );
                        before_offline()?;
                        grow_offline(host, &record, &binds, &request)
                    }
                    other => other,
                }
            })
            .await;
        // A resize left running past its deadline keeps the record: the device must not be
        // mounted until it ends, and the reconciler finishes the job.
        let running = matches!(&grown, Err(e) if e.kind == volbridge_base::error::ErrorKind::DeadlineExceeded);
        if !running {
            self.store.remove(OFFLINE_GROWS, volume_key)?;
        }
        grown
    }

    /// Stats of a staged volume at its staging path or one of its targets. The volume is
    /// looked up first: an unknown one is NotFound whatever the path (csi.md rule 31); a
    /// malformed path is InvalidArgument, a path the volume is not at, or a target of it
    /// that no longer exists, NotFound.
    pub async fn node_stats(&self, volume_key: &str, path: &str) -> Result<Stats> {
        let record = self.ready_stage(volume_key)?;
        let path = paths::validate_target("volume_path", path)?;
        let published = self
            .store
            .get::<crate::PublishRecord>(PUBLISHES, &path.display().to_string())?;
        if path != record.staging_path
            && published
                .as_ref()
                .is_none_or(|p| p.volume_key != volume_key)
        {
            return Err(Error::not_found(format!(
                "volume '{volume_key}' is not staged or published at {}",
                path.display()
            )));
        }
        // A target the volume is recorded at but that is gone (a block volume's staging
        // path need not exist: stats then come from the device).
        if path != record.staging_path && !self.target_exists(&path).await {
            return Err(Error::not_found(format!(
                "{} does not exist, though volume '{volume_key}' is recorded as published \
                 there; unpublish it and publish it again",
                path.display()
            )));
        }
        let published = record.published()?;
        let transport_config = self.node_config.transport.clone();
        let block = record.access.is_block();
        let path: PathBuf = path;
        self.on_host(move |host| {
            let attacher = published.target.attacher(&transport_config);
            stage::stats(host, attacher.as_ref(), &path, block)
        })
        .await
    }

    /// Whether anything is at a publish target (a dangling symlink counts); one that cannot
    /// be looked at counts as gone.
    async fn target_exists(&self, path: &std::path::Path) -> bool {
        let path = path.to_path_buf();
        matches!(self.on_host(move |h| h.exists(&path)).await, Ok(true))
    }
}

/// The kernel refused an online grow (ext4 without CAP_SYS_RESOURCE, old kernels): unmount
/// every bind and the staging mount, grow offline, mount it all again. Open files make the
/// unmount fail with a clear error, and what was unmounted is put back.
fn grow_offline(
    host: &dyn Host,
    record: &StageRecord,
    binds: &[PublishRecord],
    request: &ExpandRequest,
) -> Result<Expanded> {
    let Access::Mount { mount_options, .. } = &record.access else {
        return Err(Error::internal("offline grow of a block volume"));
    };
    let device = request
        .attacher
        .find(host)?
        .ok_or_else(|| Error::precondition("the volume's device vanished during expand"))?;
    let remount_staging = || -> Result<()> {
        if stage::top_mount(&host.mounts()?, &record.staging_path).is_some() {
            return Ok(());
        }
        let (mut flags, data) = split_mount_options(mount_options);
        flags.read_only |= record.read_only;
        host.mount(&MountSpec {
            source: device.clone(),
            target: record.staging_path.clone(),
            fs_type: record.fs_type.clone(),
            flags,
            data,
        })
    };
    let rebind = |b: &PublishRecord| {
        stage::publish(
            host,
            &PublishRequest {
                source: &record.staging_path,
                target: &b.target,
                block: false,
                read_only: b.read_only,
                mount_options: &b.mount_options,
            },
        )
    };
    let mut unmounted = Vec::new();
    let mut taken_down = Ok(());
    for b in binds {
        if let Err(e) = stage::unmount_all(host, &b.target) {
            taken_down = Err(e);
            break;
        }
        unmounted.push(b);
    }
    if taken_down.is_ok() {
        taken_down = stage::unmount_all(host, &record.staging_path);
    }
    let grown = match taken_down {
        Ok(()) => stage::expand(
            host,
            &ExpandRequest {
                mounted_at: None,
                ..*request
            },
        ),
        Err(e) => Err(Error::precondition(format!(
            "the kernel refused to grow the mounted filesystem and it cannot be unmounted to grow offline ({e}); stop what uses it and expand again"
        ))),
    };
    if let Err(e) = &grown {
        if e.kind == volbridge_base::error::ErrorKind::DeadlineExceeded {
            return Err(e.clone());
        }
    }
    let restored = remount_staging().and_then(|()| unmounted.iter().try_for_each(|b| rebind(b)));
    let grown = grown?;
    restored?;
    Ok(grown)
}
