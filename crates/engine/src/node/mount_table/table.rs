//! The table and its records: one durable JSON document per volume (collection
//! `docker-volumes`) and the same in memory, so that Get, List and Path never wait for a disk
//! or a CSP. The kernel's boot ID is kept beside them: after a reboot no container holds a
//! reference, so a load under a new boot ID drops them all.

use super::{DockerSettings, DockerVolume, DOCKER_VOLUMES};
use crate::records::node::{engine_volume_key, path_component, PublishRecord, PUBLISHES};
use crate::{Engine, OpGuard};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use volbridge_base::error::Result;

const DOCKER_NODE: &str = "docker-node";
const BOOT_KEY: &str = "boot";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BootRecord {
    boot_id: String,
}

impl Engine {
    /// Applies the Docker settings and loads the records (the daemon calls this at start,
    /// before it serves Docker). Refs from an earlier boot are dropped here.
    pub fn docker_open(&self, settings: DockerSettings) -> Result<usize> {
        *self
            .mount_table
            .settings
            .write()
            .unwrap_or_else(|p| p.into_inner()) = settings;
        self.docker_with(|t| Ok(t.len()))
    }

    pub(super) fn docker_mount_base(&self) -> PathBuf {
        self.mount_table
            .settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .mount_base
            .clone()
            .unwrap_or_else(|| self.store.root().join("mounts"))
    }

    pub(super) fn docker_delay(&self) -> Duration {
        self.mount_table
            .settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .unstage_delay
    }

    /// Runs `f` on the loaded table (loading it first when needed).
    pub(super) fn docker_with<T>(
        &self,
        f: impl FnOnce(&BTreeMap<String, DockerVolume>) -> Result<T>,
    ) -> Result<T> {
        {
            let guard = self
                .mount_table
                .volumes
                .read()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(table) = guard.as_ref() {
                return f(table);
            }
        }
        let mut guard = self
            .mount_table
            .volumes
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.docker_load()?);
        }
        f(guard.as_ref().expect("loaded"))
    }

    pub(super) fn docker_load(&self) -> Result<BTreeMap<String, DockerVolume>> {
        let mut table = BTreeMap::new();
        for (key, record) in self.store.list::<DockerVolume>(DOCKER_VOLUMES)? {
            match record {
                Ok(v) => {
                    table.insert(v.name.clone(), v);
                }
                Err(e) => {
                    // Kept on disk for a human to look at; Docker sees the others.
                    tracing::error!(record = %key, error = %e, "damaged Docker volume record skipped");
                }
            }
        }
        // After a reboot no container holds a mount: every reference is stale. Without a
        // boot ID they are kept: a stale reference only delays a teardown, a dropped live
        // one would unmount a volume under a running container.
        let boot_id = self.host.boot_id().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the boot ID; Docker mount references kept");
            None
        });
        if let Some(now) = boot_id {
            let stored = self.store.get::<BootRecord>(DOCKER_NODE, BOOT_KEY)?;
            let changed = stored.as_ref().is_some_and(|b| b.boot_id != now);
            if changed {
                let mut cleared = 0;
                for v in table.values_mut() {
                    if !v.refs.is_empty() {
                        cleared += v.total_refs();
                        v.refs.clear();
                        self.store.put(DOCKER_VOLUMES, &v.name, v)?;
                    }
                }
                let note = format!("boot ID changed: dropped {cleared} Docker mount reference(s)");
                tracing::info!("{note}");
                self.mount_table
                    .load_notes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(note);
            }
            if stored.is_none() || changed {
                self.store
                    .put(DOCKER_NODE, BOOT_KEY, &BootRecord { boot_id: now })?;
            }
        }
        Ok(table)
    }

    /// Writes a record durably, then the memory copy.
    pub(super) fn docker_save(&self, v: &DockerVolume) -> Result<()> {
        self.store.put(DOCKER_VOLUMES, &v.name, v)?;
        self.docker_with(|_| Ok(()))?;
        let mut guard = self
            .mount_table
            .volumes
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(t) = guard.as_mut() {
            t.insert(v.name.clone(), v.clone());
        }
        Ok(())
    }

    pub(super) fn docker_forget(&self, name: &str) -> Result<()> {
        self.store.remove(DOCKER_VOLUMES, name)?;
        let mut guard = self
            .mount_table
            .volumes
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(t) = guard.as_mut() {
            t.remove(name);
        }
        Ok(())
    }

    /// One Docker operation at a time per volume (Mount, Unmount, Remove, Create, release).
    pub(super) async fn docker_guard(&self, name: &str) -> Result<OpGuard> {
        self.guards
            .lock(&format!("@docker/{name}"), self.config.guard_wait)
            .await
    }

    /// A Docker volume from memory: no disk, no CSP.
    pub fn docker_get(&self, name: &str) -> Result<Option<DockerVolume>> {
        self.docker_with(|t| Ok(t.get(name).cloned()))
    }

    /// Every Docker volume from memory, by name.
    pub fn docker_list(&self) -> Result<Vec<DockerVolume>> {
        self.docker_with(|t| Ok(t.values().cloned().collect()))
    }

    /// Where a volume is mounted for Docker.
    pub(super) fn docker_target(&self, v: &DockerVolume) -> PathBuf {
        self.docker_mount_base()
            .join(path_component(&engine_volume_key(&v.backend, &v.volume_id)))
    }

    /// The engine's publish record of the volume's Docker mount point, if any.
    pub(super) fn docker_published(&self, v: &DockerVolume) -> Result<Option<PathBuf>> {
        let mut candidates = vec![self.docker_target(v)];
        if let Some(m) = &v.mounted_at {
            candidates.insert(0, m.clone());
        }
        for target in candidates {
            let record = self
                .store
                .get::<PublishRecord>(PUBLISHES, &target.display().to_string())?;
            if record.is_some() {
                return Ok(Some(target));
            }
        }
        Ok(None)
    }
}
