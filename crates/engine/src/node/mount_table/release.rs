//! `volbridge docker release`: drops references Docker never sent an Unmount for.

use super::{no_such_volume, DockerRelease};
use crate::names::validate_name;
use crate::Engine;
use volbridge_base::error::{Error, ErrorKind, Object, Reason, Result};

impl Engine {
    /// Drops references Docker never released (all, or one mount ID) and unmounts once
    /// none is left. Unless `force`, refused while a process outside this daemon's mount
    /// namespace (a container) still has the volume mounted.
    pub async fn docker_release(
        &self,
        name: &str,
        id: Option<&str>,
        force: bool,
    ) -> Result<DockerRelease> {
        validate_name("name", name)?;
        let _guard = self.docker_guard(name).await?;
        let mut v = self.docker_get(name)?.ok_or_else(|| no_such_volume(name))?;
        if !force {
            if let Some(path) = v.mounted_at.clone() {
                let users = self
                    .on_host(move |h| {
                        let mounts = h.mounts()?;
                        let dev =
                            volbridge_host::stage::top_mount(&mounts, &path).map(|m| m.dev.clone());
                        match dev {
                            Some(d) => h.mounted_in_other_namespaces(&d),
                            None => Ok(Vec::new()),
                        }
                    })
                    .await?;
                if let Some(pid) = users.first() {
                    return Err(Error::new(
                        ErrorKind::FailedPrecondition,
                        format!(
                            "{name:?} is still mounted in another mount namespace (process {pid}, likely a running container); stop it first or use --force"
                        ),
                    )
                    .with_reason(Reason::InUse)
                    .about(Object::Volume(name.to_owned())));
                }
            }
        }
        let before = v.total_refs();
        match id {
            Some(id) => {
                v.refs.remove(id);
            }
            None => v.refs.clear(),
        }
        let remaining = v.total_refs();
        self.docker_save(&v)?;
        let mut unmounted = false;
        if remaining == 0 {
            self.docker_cancel_deferred(name);
            if v.mounted_at.is_some() || v.release_pending || self.docker_published(&v)?.is_some() {
                self.docker_teardown(&mut v).await?;
                unmounted = true;
            }
        }
        Ok(DockerRelease {
            volume: name.to_owned(),
            dropped: before - remaining,
            remaining,
            unmounted,
        })
    }
}
