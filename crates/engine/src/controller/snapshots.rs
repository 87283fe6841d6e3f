//! Snapshot operations, idempotent by (backend, name, source volume).

use super::volumes::POLL;
use crate::model::Snapshot;
use crate::names::validate_name;
use crate::{Engine, Wait};
use std::collections::BTreeMap;
use volbridge_base::error::{Error, ErrorKind, Object, Result};
use volbridge_provider::SnapshotCreate;

impl Engine {
    /// Snapshots volume `volume`. With `Wait::Bounded` it returns once the data is complete.
    pub async fn create_snapshot(
        &self,
        name: &str,
        volume: &str,
        description: Option<&str>,
        backend: Option<&str>,
        wait: Wait,
    ) -> Result<Snapshot> {
        validate_name("name", name)?;
        validate_name("volume", volume)?;
        let backend = self.backends.resolve(backend)?;
        let _guard = self.guard(&backend.name, volume, wait).await?;
        let client = &backend.client;
        let source = client.find_volume(volume).await?.ok_or_else(|| {
            Error::not_found(format!("volume '{volume}' does not exist"))
                .about(Object::Volume(volume.to_string()))
        })?;
        self.flush_staged(&backend.name, Some(volume)).await;
        let req = SnapshotCreate {
            name: name.to_owned(),
            volume_id: source.id.unwrap_or_default(),
            description: description.map(str::to_owned),
            params: BTreeMap::new(),
        };
        let snap = client.create_snapshot(&req).await?;
        let snap = Snapshot::from_csp(&backend.name, &snap);
        // CSI answers at once: ready_to_use false now, true on a later call (rule 1).
        if snap.ready_to_use || wait != Wait::Bounded {
            return Ok(snap);
        }
        self.wait_ready(&backend.name, client, snap).await
    }

    /// Polls a snapshot until the CSP reports its data complete, within the copy bound;
    /// then DeadlineExceeded: the same command again waits for the same copy.
    pub(crate) async fn wait_ready(
        &self,
        backend: &str,
        client: &volbridge_provider::CspClient,
        mut snap: Snapshot,
    ) -> Result<Snapshot> {
        let started = std::time::Instant::now();
        while !snap.ready_to_use {
            if started.elapsed() >= self.config.copy_wait {
                return Err(Error::new(
                    ErrorKind::DeadlineExceeded,
                    format!(
                        "snapshot '{}' is still being copied{}: still running after {} s \
                         (limits.copy_wait_seconds); run the same command again to keep waiting",
                        snap.name,
                        volbridge_provider::progress_text(snap.copy_progress.map(|(d, t)| {
                            volbridge_proto::csp::CopyProgress {
                                bytes_done: d,
                                bytes_total: t,
                            }
                        })),
                        started.elapsed().as_secs()
                    ),
                ));
            }
            tokio::time::sleep(POLL).await;
            snap = match client.get_snapshot_opt(&snap.id).await? {
                Some(s) => Snapshot::from_csp(backend, &s),
                None => {
                    return Err(Error::internal(format!(
                        "snapshot '{}' was removed by the CSP before its copy completed (the copy failed, \
                         or the snapshot was deleted meanwhile); take it again",
                        snap.name
                    )))
                }
            };
        }
        Ok(snap)
    }

    pub async fn get_snapshot(&self, name: &str, backend: Option<&str>) -> Result<Snapshot> {
        validate_name("name", name)?;
        let backend = self.backends.resolve(backend)?;
        backend
            .client
            .find_snapshot(name, None)
            .await?
            .map(|s| Snapshot::from_csp(&backend.name, &s))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "snapshot '{name}' does not exist on backend '{}'",
                    backend.name
                ))
                .about(Object::Snapshot(name.to_string()))
            })
    }

    /// Lists snapshots of one volume (by name) or of the whole backend.
    pub async fn list_snapshots(
        &self,
        volume: Option<&str>,
        backend: Option<&str>,
    ) -> Result<Vec<Snapshot>> {
        let backend = self.backends.resolve(backend)?;
        let volume_id = match volume {
            None => None,
            Some(v) => {
                validate_name("volume", v)?;
                let found = backend.client.find_volume(v).await?.ok_or_else(|| {
                    Error::not_found(format!("volume '{v}' does not exist"))
                        .about(Object::Volume(v.to_string()))
                })?;
                found.id
            }
        };
        let mut out: Vec<Snapshot> = backend
            .client
            .list_snapshots(volume_id.as_deref())
            .await?
            .iter()
            .map(|s| Snapshot::from_csp(&backend.name, s))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A snapshot by its CSP id (members of a snapshot group).
    pub async fn get_snapshot_by_id(&self, id: &str, backend: Option<&str>) -> Result<Snapshot> {
        let backend = self.backends.resolve(backend)?;
        let s = backend.client.get_snapshot(id).await?;
        Ok(Snapshot::from_csp(&backend.name, &s))
    }

    /// Deletes a snapshot by its CSP id; one that does not exist is already deleted.
    pub async fn delete_snapshot_by_id(&self, id: &str, backend: Option<&str>) -> Result<()> {
        let backend = self.backends.resolve(backend)?;
        backend.client.delete_snapshot(id).await
    }

    /// Deletes a snapshot by name; one that does not exist is already deleted. Any name the
    /// backend holds is taken, as for volumes.
    pub async fn delete_snapshot(
        &self,
        name: &str,
        backend: Option<&str>,
        wait: Wait,
    ) -> Result<()> {
        self.delete_snapshot_if_exists(name, backend, wait)
            .await
            .map(drop)
    }

    /// Deletes a snapshot by name: `false` when there was no such snapshot.
    pub async fn delete_snapshot_if_exists(
        &self,
        name: &str,
        backend: Option<&str>,
        wait: Wait,
    ) -> Result<bool> {
        crate::names::validate_held_name("name", name)?;
        let backend = self.backends.resolve(backend)?;
        let _guard = self
            .guard(&backend.name, &format!("snapshot:{name}"), wait)
            .await?;
        match backend.client.find_snapshot(name, None).await? {
            None => Ok(false),
            Some(s) => backend
                .client
                .delete_snapshot(&s.id.unwrap_or_default())
                .await
                .map(|()| true),
        }
    }
}
