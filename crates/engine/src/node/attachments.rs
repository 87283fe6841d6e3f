//! The controller half of attaching: grant this node access at the CSP and keep the
//! publish context as a durable attachment record, keyed by (backend, volume id). The node
//! half (loop, iSCSI, mount) reads these records.

use crate::names::validate_name;
use crate::{Engine, Wait};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use volbridge_base::error::{Error, Object, Result};
use volbridge_provider::{self, PublishContextInput};

pub const COLLECTION: &str = "attachments";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub backend: String,
    pub volume_name: String,
    pub volume_id: String,
    pub node_uuid: String,
    pub read_only: bool,
    /// The publish context (csp-api.md §6). May hold CHAP credentials: the record is 0600
    /// and is never logged.
    pub context: BTreeMap<String, String>,
    /// Nothing on this node uses the volume any more, but the CSP grant could not be ended
    /// (its backend came from request secrets the daemon no longer has, or did not answer).
    /// The next call that brings the backend back, or a reconciler pass, ends it.
    #[serde(default)]
    pub release_pending: bool,
}

impl Attachment {
    /// The same key as the volume's stage record.
    fn key(backend: &str, volume_id: &str) -> String {
        crate::records::node::engine_volume_key(backend, volume_id)
    }
}

impl Engine {
    /// Grants this node access to a volume and records how to reach it. Repeating it returns
    /// the same attachment; another read-only setting is refused (AlreadyExists).
    pub async fn attach_volume(
        &self,
        name: &str,
        backend: Option<&str>,
        read_only: bool,
        wait: Wait,
    ) -> Result<Attachment> {
        validate_name("name", name)?;
        let backend = self.backends.resolve(backend)?.name.clone();
        let _guard = self.guard(&backend, name, wait).await?;
        self.attach_locked(&backend, name, read_only, None).await
    }

    /// Attach with the volume's guard already held by the caller.
    pub(crate) async fn attach_locked(
        &self,
        backend: &str,
        name: &str,
        read_only: bool,
        fs_type: Option<&str>,
    ) -> Result<Attachment> {
        let backend = self.backends.resolve(Some(backend))?;
        let client = &backend.client;
        let volume = client.find_volume(name).await?.ok_or_else(|| {
            Error::not_found(format!("volume '{name}' does not exist"))
                .about(Object::Volume(name.to_string()))
        })?;
        let volume_id = volume.id.clone().unwrap_or_default();
        let key = Attachment::key(&backend.name, &volume_id);
        if let Some(existing) = self.store.get::<Attachment>(COLLECTION, &key)? {
            if existing.read_only != read_only {
                return Err(Error::new(
                    volbridge_base::ErrorKind::AlreadyExists,
                    format!(
                        "volume '{name}' is attached to this node {}; a volume is attached \
                         read-only or read-write as a whole: end what uses it here (volbridge \
                         node lists it) to attach it {}",
                        rw(existing.read_only),
                        rw(read_only)
                    ),
                ));
            }
        }
        let host = self.this_host().await;
        let info = client
            .publish_volume(&volume_id, &host, None)
            .await
            .map_err(|e| {
                // A volume published elsewhere that refuses this host is single-initiator
                // and held by another node; say so in words a front end can pick.
                if e.kind == volbridge_base::ErrorKind::FailedPrecondition
                    && volume.published == Some(true)
                {
                    e.with_reason(volbridge_base::Reason::AttachedElsewhere)
                } else {
                    e
                }
            })?;
        let volume_context = volbridge_provider::volume_context(&volume);
        let context = volbridge_provider::publish_context(&PublishContextInput {
            info: &info,
            volume: &volume,
            read_only,
            fs_type,
            volume_context: &volume_context,
        })?;
        let record = Attachment {
            backend: backend.name.clone(),
            volume_name: name.to_owned(),
            volume_id,
            node_uuid: self.node.uuid.clone(),
            read_only,
            context,
            release_pending: false,
        };
        self.store.put(COLLECTION, &key, &record)?;
        Ok(record)
    }

    /// Removes this node's access and its record; a volume that is not attached is done.
    pub async fn detach_volume(&self, name: &str, backend: Option<&str>, wait: Wait) -> Result<()> {
        validate_name("name", name)?;
        let backend = self.backends.resolve(backend)?.name.clone();
        let _guard = self.guard(&backend, name, wait).await?;
        self.detach_locked(&backend, name, None).await
    }

    /// Detach with the volume's guard held. With a known volume id the record goes even
    /// when the CSP has forgotten the volume.
    pub(crate) async fn detach_locked(
        &self,
        backend: &str,
        name: &str,
        volume_id: Option<&str>,
    ) -> Result<()> {
        let backend = self.backends.resolve(Some(backend))?;
        let volume_id = match backend.client.find_volume(name).await? {
            Some(v) => {
                let id = v.id.unwrap_or_default();
                backend
                    .client
                    .unpublish_volume(&id, &self.node.uuid)
                    .await?;
                id
            }
            None => match volume_id {
                Some(id) => id.to_owned(),
                None => return Ok(()),
            },
        };
        self.store
            .remove(COLLECTION, &Attachment::key(&backend.name, &volume_id))
    }

    /// Ends the CSP grant of an attachment nothing uses; when the backend is unknown (a
    /// secrets-only backend after a restart) or unreachable, records the release as pending
    /// instead of failing: the node side is already clean.
    pub(crate) async fn release_or_defer(&self, a: &Attachment) -> Result<()> {
        match self
            .detach_locked(&a.backend, &a.volume_name, Some(&a.volume_id))
            .await
        {
            Ok(()) => Ok(()),
            Err(e)
                if self.backends.resolve(Some(&a.backend)).is_err()
                    || e.kind == volbridge_base::ErrorKind::Unavailable =>
            {
                tracing::warn!(
                    volume = %a.volume_name,
                    backend = %a.backend,
                    error = %e.message,
                    "the CSP grant stays until the backend is back (release pending)"
                );
                let pending = Attachment {
                    release_pending: true,
                    ..a.clone()
                };
                self.store.put(
                    COLLECTION,
                    &Attachment::key(&a.backend, &a.volume_id),
                    &pending,
                )?;
                // After the record: a scan that finds none may clear the flag first.
                self.releases_pending.store(true, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Ends the pending releases of one backend (after a call brought it back). Best
    /// effort: what still fails stays pending for the reconciler.
    pub(crate) async fn finish_pending_releases(&self, backend: &str) {
        if !self.releases_pending.load(Ordering::SeqCst) {
            return;
        }
        let Ok(all) = self.attachments() else {
            return;
        };
        let pending: Vec<Attachment> = all.into_iter().filter(|a| a.release_pending).collect();
        if pending.is_empty() {
            // A deferral racing this scan sets the flag again after writing its record; in
            // the rare interleaving that loses, the reconciler still retries the release
            // (an attachment with no stage) on its next pass.
            self.releases_pending.store(false, Ordering::SeqCst);
            return;
        }
        for a in pending.into_iter().filter(|a| a.backend == backend) {
            let Ok(_guard) = self
                .guards
                .try_lock(&format!("{}/{}", a.backend, a.volume_name))
            else {
                continue;
            };
            let key = Attachment::key(&a.backend, &a.volume_id);
            if self
                .store
                .get::<crate::records::node::StageRecord>(crate::records::node::STAGES, &key)
                .ok()
                .flatten()
                .is_some()
            {
                continue;
            }
            match self
                .detach_locked(&a.backend, &a.volume_name, Some(&a.volume_id))
                .await
            {
                Ok(()) => {
                    tracing::info!(volume = %a.volume_name, backend = %a.backend, "pending release done")
                }
                Err(e) => {
                    tracing::warn!(volume = %a.volume_name, error = %e.message, "pending release failed")
                }
            }
        }
    }

    /// Every attachment record of this node.
    pub fn attachments(&self) -> Result<Vec<Attachment>> {
        self.store
            .list::<Attachment>(COLLECTION)?
            .into_iter()
            .map(|(_, a)| a)
            .collect()
    }
}

fn rw(read_only: bool) -> &'static str {
    if read_only {
        "read-only"
    } else {
        "read-write"
    }
}
