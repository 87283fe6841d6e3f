//! Reference counting: a Mount counts one reference of a mount ID, mounting the volume for
//! the first; an Unmount drops one, and the last hands the volume to the teardown.

use super::{no_such_volume, LATE_MOUNT_KEEP};
use crate::names::validate_name;
use crate::{Engine, MountVolume, Wait};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use volbridge_base::error::{Error, ErrorKind, Result};

impl Engine {
    /// Mounts a volume for one Docker mount ID and returns the mount point. The first
    /// reference mounts (attach, format if blank, mount); later ones reuse it.
    ///
    /// `abandoned` turns true when the caller gave up waiting (Docker's deadline passed):
    /// a mount that finishes after that is not counted (Docker took the Mount as failed);
    /// it is kept for [`LATE_MOUNT_KEEP`] for a retrying Mount, then torn down.
    pub async fn docker_mount(
        self: &Arc<Self>,
        name: &str,
        id: &str,
        abandoned: Option<Arc<AtomicBool>>,
    ) -> Result<PathBuf> {
        check_mount_id(id)?;
        if validate_name("name", name).is_err() {
            return Err(no_such_volume(name));
        }
        let _guard = self.docker_guard(name).await?;
        let mut v = self.docker_get(name)?.ok_or_else(|| no_such_volume(name))?;
        self.docker_cancel_deferred(name);
        let target = match v.mounted_at.clone() {
            Some(t) if self.docker_is_mounted(&t).await? => t,
            _ => {
                let target = self.docker_target(&v);
                self.mount_volume(
                    MountVolume {
                        name: v.name.clone(),
                        backend: Some(v.backend.clone()),
                        target: target.display().to_string(),
                        read_only: v.read_only,
                        block: false,
                        fs_type: v.fs_type.clone(),
                        mount_options: v.mount_options.clone(),
                    },
                    Wait::Bounded,
                )
                .await?;
                target
            }
        };
        if abandoned.is_some_and(|a| a.load(Ordering::SeqCst)) {
            if v.total_refs() == 0 {
                v.mounted_at = Some(target.clone());
                self.docker_save(&v)?;
                self.docker_arm_teardown(name, LATE_MOUNT_KEEP);
            }
            return Err(Error::new(
                ErrorKind::DeadlineExceeded,
                format!("mount of {name:?} finished after the caller gave up"),
            ));
        }
        *v.refs.entry(id.to_owned()).or_insert(0) += 1;
        v.mounted_at = Some(target.clone());
        v.release_pending = false;
        self.docker_save(&v)?;
        Ok(target)
    }

    /// Whether `path` is a mount point now.
    async fn docker_is_mounted(&self, path: &Path) -> Result<bool> {
        let path = path.to_path_buf();
        self.on_host(move |h| Ok(volbridge_host::stage::top_mount(&h.mounts()?, &path).is_some()))
            .await
    }

    /// Drops one reference of a mount ID; an unknown (volume, ID) pair is success. The last
    /// reference unmounts and detaches, at once or after the unstage delay.
    pub async fn docker_unmount(self: &Arc<Self>, name: &str, id: &str) -> Result<()> {
        if validate_name("name", name).is_err() {
            return Ok(());
        }
        let _guard = self.docker_guard(name).await?;
        let Some(mut v) = self.docker_get(name)? else {
            return Ok(());
        };
        let Some(count) = v.refs.get_mut(id) else {
            return Ok(());
        };
        *count -= 1;
        if *count == 0 {
            v.refs.remove(id);
        }
        self.docker_save(&v)?;
        if v.total_refs() > 0 {
            return Ok(());
        }
        let delay = self.docker_delay();
        if delay.is_zero() {
            if let Err(e) = self.docker_teardown(&mut v).await {
                // The decrement stands; the reconciler retries the teardown.
                tracing::warn!(volume = %name, error = %e, "Docker unmount: teardown failed; release pending");
            }
            return Ok(());
        }
        self.docker_arm_teardown(name, delay);
        Ok(())
    }
}

/// Docker mount IDs are 64 hex characters; anything printable and short is accepted.
fn check_mount_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(Error::invalid(
            "ID",
            "a mount ID is required (Docker sends 64 hex characters)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_ids_are_checked() {
        assert!(check_mount_id(&"a".repeat(64)).is_ok());
        assert!(check_mount_id("").is_err());
        assert!(check_mount_id("a\nb").is_err());
    }
}
