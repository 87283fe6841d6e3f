//! Volume operations. Each is idempotent by (backend, name) and runs under the volume's guard.

use crate::model::{CreateVolume, Volume, VolumeSource};
use crate::names::{validate_held_name, validate_name};
use crate::records::intent::{self, Intent};
use crate::size::{align, human};
use crate::{Engine, Wait};
use std::collections::BTreeMap;
use std::time::Duration;
use std::time::Instant;
use volbridge_base::error::{Error, ErrorKind, Object, Result};
use volbridge_proto::csp::{camel_to_snake, snake_to_camel};
use volbridge_provider::{CloneSource, CspClient, VolumeCreate, VolumeEdit};

impl Engine {
    /// Creates a volume, or clones one from a snapshot or a volume. A second call with the
    /// same name and parameters returns the same volume; other parameters → AlreadyExists.
    pub async fn create_volume(&self, req: CreateVolume, wait: Wait) -> Result<Volume> {
        validate_name("name", &req.name)?;
        if let Some(VolumeSource::Snapshot(s) | VolumeSource::Volume(s)) = &req.source {
            validate_name("source", s)?;
        }
        if let Some(d) = &req.description {
            if d.len() > 1024 {
                return Err(Error::invalid("description", "is longer than 1024 bytes"));
            }
        }
        let backend = self.backends.resolve(req.backend.as_deref())?;
        let size = match (req.size, &req.source) {
            (Some(s), _) => Some(align("size", s)?),
            (None, None) => Some(align(
                "default_volume_size",
                self.config.default_volume_size,
            )?),
            (None, Some(_)) => None,
        };
        let _guard = self.guard(&backend.name, &req.name, wait).await?;
        let client = &backend.client;
        let create = VolumeCreate {
            name: req.name.clone(),
            size,
            description: req.description.clone(),
            params: req.params.clone(),
            multi_initiator: req.multi_initiator,
        };
        let attempt = || async {
            match &req.source {
                None => client.create_volume(&create).await,
                Some(VolumeSource::Snapshot(snap)) => {
                    let found = client.find_snapshot(snap, None).await?.ok_or_else(|| {
                        Error::not_found(format!("snapshot '{snap}' does not exist"))
                            .about(Object::Snapshot(snap.to_string()))
                    })?;
                    let id = found.id.unwrap_or_default();
                    client
                        .clone_volume(&create, &CloneSource::Snapshot(id))
                        .await
                }
                Some(VolumeSource::SnapshotId(id)) => {
                    client.get_snapshot(id).await.map_err(|e| match e.kind {
                        ErrorKind::NotFound => {
                            Error::not_found(format!("snapshot {id} does not exist"))
                                .about(Object::Snapshot(id.to_string()))
                        }
                        _ => e,
                    })?;
                    client
                        .clone_volume(&create, &CloneSource::Snapshot(id.clone()))
                        .await
                }
                Some(VolumeSource::Volume(parent)) => {
                    self.clone_from_volume(client, &backend.name, &create, parent)
                        .await
                }
            }
        };
        // A copy still being made answers Aborted (provider::in_progress); the next attempt
        // finds the same copy by name and never starts a second one. Wait for it within the
        // caller's bound (rule 3): the answer is a volume whose data is complete, or an
        // error that says to retry.
        let (until, at_deadline) = match wait {
            Wait::No => (Instant::now(), ErrorKind::Aborted),
            Wait::Bounded => (
                Instant::now() + self.config.copy_wait,
                ErrorKind::DeadlineExceeded,
            ),
            Wait::Until(t) => (t, ErrorKind::Aborted),
        };
        let started = Instant::now();
        let volume = loop {
            let tried = Instant::now();
            match attempt().await {
                Err(e) if e.kind == ErrorKind::Aborted => {
                    let now = Instant::now();
                    // The next attempt must end before the deadline too: on a loaded host
                    // one attempt (CSP calls, an fsync'd intent) takes longer than the
                    // margin the caller left, and an answer after its deadline is lost.
                    let took = now.duration_since(tried);
                    if now + took + POLL / 2 >= until {
                        let waited = now.duration_since(started).as_secs();
                        let hint = match wait {
                            Wait::Bounded => format!(
                                "still running after {waited} s (limits.copy_wait_seconds); run the same command again to keep waiting"
                            ),
                            _ => "retry CreateVolume with the same name to keep waiting for the same copy".to_owned(),
                        };
                        return Err(Error::new(at_deadline, format!("{}: {hint}", e.message)));
                    }
                    tokio::time::sleep(POLL.min(until - now - took)).await;
                }
                other => break other?,
            }
        };
        Ok(Volume::from_csp(&backend.name, &volume))
    }

    async fn clone_from_volume(
        &self,
        client: &CspClient,
        backend: &str,
        create: &VolumeCreate,
        parent: &str,
    ) -> Result<volbridge_provider::Volume> {
        let parent = client.find_volume(parent).await?.ok_or_else(|| {
            Error::not_found(format!("volume '{parent}' does not exist"))
                .about(Object::Volume(parent.to_string()))
        })?;
        let parent_id = parent.id.unwrap_or_default();
        // The clone goes through a temporary snapshot: record the intent so that a crash
        // between its steps does not leave that snapshot behind. One key per clone, so that
        // retries of the same clone share one record.
        let key = format!("clone-{backend}-{}", create.name);
        let record = Intent::CloneFromVolume {
            backend: backend.to_owned(),
            name: create.name.clone(),
            parent_id: parent_id.clone(),
        };
        self.store.put(intent::COLLECTION, &key, &record)?;
        // The clone is taken from the parent as it is now, in one step or through a
        // snapshot: what this node's filesystem still caches belongs in it.
        self.flush_staged(backend, parent.name.as_deref()).await;
        let result = client
            .clone_volume(create, &CloneSource::Volume(parent_id))
            .await;
        match &result {
            // Still copying: the record stays; the retry or the reconciler cleans up.
            Err(e) if e.kind == ErrorKind::Aborted => {}
            // A retry that found the clone by name does not know the temporary snapshot:
            // the same cleanup as the reconciler's removes it.
            Ok(_) => {
                if let Err(e) = self.replay(&record).await {
                    tracing::warn!(clone = %create.name, error = %e, "temporary snapshot kept for the reconciler");
                    return result;
                }
                self.store.remove(intent::COLLECTION, &key)?;
            }
            // The provider removed the temporary snapshot itself (B16 step 4).
            Err(_) => self.store.remove(intent::COLLECTION, &key)?,
        }
        result
    }

    pub async fn get_volume(&self, name: &str, backend: Option<&str>) -> Result<Volume> {
        validate_name("name", name)?;
        let backend = self.backends.resolve(backend)?;
        let found = backend.client.find_volume(name).await?;
        found
            .map(|v| Volume::from_csp(&backend.name, &v))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "volume '{name}' does not exist on backend '{}'",
                    backend.name
                ))
                .about(Object::Volume(name.to_string()))
            })
    }

    /// Lists the volumes of one backend, or of all of them.
    pub async fn list_volumes(&self, backend: Option<&str>) -> Result<Vec<Volume>> {
        let targets: Vec<_> = match backend {
            Some(name) => vec![self.backends.resolve(Some(name))?.clone()],
            None => self.backends.all().cloned().collect(),
        };
        let mut out = Vec::new();
        for b in targets {
            let listed = b
                .client
                .list_volumes()
                .await
                .map_err(|e| e.context(format!("backend '{}'", b.name)))?;
            out.extend(listed.iter().map(|v| Volume::from_csp(&b.name, v)));
        }
        out.sort_by(|a, b| (&a.backend, &a.name).cmp(&(&b.backend, &b.name)));
        Ok(out)
    }

    /// Grows a volume; a size at or below the current one answers the current volume (CSI's
    /// rule: the resizer's retry of a done expand is success).
    pub async fn expand_volume(
        &self,
        name: &str,
        size: u64,
        backend: Option<&str>,
        wait: Wait,
    ) -> Result<Volume> {
        self.expand_volume_with(name, size, backend, wait, Shrink::AnswerCurrent)
            .await
    }

    /// Grows a volume; `shrink` says what a size below the current one gets.
    pub async fn expand_volume_with(
        &self,
        name: &str,
        size: u64,
        backend: Option<&str>,
        wait: Wait,
        shrink: Shrink,
    ) -> Result<Volume> {
        validate_name("name", name)?;
        let size = align("size", size)?;
        let backend = self.backends.resolve(backend)?;
        let _guard = self.guard(&backend.name, name, wait).await?;
        let found = backend.client.find_volume(name).await?.ok_or_else(|| {
            Error::not_found(format!(
                "volume '{name}' does not exist on backend '{}'",
                backend.name
            ))
            .about(Object::Volume(name.to_string()))
        })?;
        let current = found.size.unwrap_or(0);
        if shrink == Shrink::Refuse && size < current {
            return Err(Error::invalid(
                "size",
                format!(
                    "volume '{name}' is {} ({current} bytes) and {} is smaller: shrinking a \
                     volume is not supported; give a size above {}",
                    human(current),
                    human(size),
                    human(current)
                ),
            )
            .about(Object::Volume(name.to_string())));
        }
        let id = found.id.clone().unwrap_or_default();
        let grown = backend.client.expand_volume(&id, size).await?;
        Ok(Volume::from_csp(&backend.name, &grown))
    }

    /// Refuses (InvalidArgument) mutable parameters that the backend's CSP does not name as
    /// mutable (`GET /mutable_config`, camelCase keys compared as snake_case, B38), all of
    /// them named in one sentence, before anything is created or changed. `volume` names
    /// the object for the message; `untouched` says what the refusal left as it was.
    pub async fn check_mutable_params(
        &self,
        params: &BTreeMap<String, String>,
        backend: Option<&str>,
        volume: &str,
        untouched: &str,
    ) -> Result<()> {
        if params.is_empty() {
            return Ok(());
        }
        let backend = self.backends.resolve(backend)?;
        let declared = backend.client.mutable_config().await?;
        let allowed: Vec<String> = declared
            .as_ref()
            .map(|m| m.volume.clone())
            .unwrap_or_default();
        // `description` is where volbridge keeps the fingerprint of the CreateVolume
        // request (its idempotency check), whatever a CSP says about it.
        let refused: Vec<&String> = params
            .keys()
            .filter(|k| *k == "description" || !allowed.contains(&camel_to_snake(k)))
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        let keys = refused
            .iter()
            .map(|k| format!("'{k}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let what = if refused.len() == 1 {
            format!("mutable parameter {keys} is")
        } else {
            format!("mutable parameters {keys} are")
        };
        let why = match declared {
            None => format!(
                "backend '{}' names no mutable keys (its CSP does not serve GET \
                 /containers/v1/mutable_config), so no parameter of a volume can change",
                backend.name
            ),
            Some(_) if allowed.is_empty() => format!(
                "backend '{}' names no mutable keys (its CSP's GET \
                 /containers/v1/mutable_config is empty)",
                backend.name
            ),
            Some(_) => {
                let mut camel: Vec<String> = allowed.iter().map(|k| snake_to_camel(k)).collect();
                camel.sort();
                format!(
                    "backend '{}' lets a volume change only {}",
                    backend.name,
                    camel.join(", ")
                )
            }
        };
        Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{what} not supported for {volume}: {why}; {untouched}. Remove the key from \
                 the request (in Kubernetes, from the VolumeAttributeClass)"
            ),
        ))
    }

    /// Changes a volume's CSP config (camelCase keys). Every key is checked against what
    /// the CSP names as mutable before the one PUT, which the CSP applies whole or not at
    /// all (B20), so a refused request changes nothing.
    pub async fn modify_volume(
        &self,
        name: &str,
        params: &BTreeMap<String, String>,
        backend: Option<&str>,
        wait: Wait,
    ) -> Result<Volume> {
        validate_name("name", name)?;
        self.check_mutable_params(
            params,
            backend,
            &format!("volume '{name}'"),
            "nothing was changed",
        )
        .await?;
        let backend = self.backends.resolve(backend)?;
        let _guard = self.guard(&backend.name, name, wait).await?;
        let found = backend.client.find_volume(name).await?.ok_or_else(|| {
            Error::not_found(format!("volume '{name}' does not exist"))
                .about(Object::Volume(name.to_string()))
        })?;
        if params.is_empty() {
            return Ok(Volume::from_csp(&backend.name, &found));
        }
        let edit = VolumeEdit {
            params: params
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect(),
            ..VolumeEdit::default()
        };
        let edited = backend
            .client
            .edit_volume(found.id.as_deref().unwrap_or_default(), &edit)
            .await?;
        Ok(Volume::from_csp(&backend.name, &edited))
    }

    /// (total, free) bytes of a backend, when its CSP reports capacity.
    pub async fn capacity(&self, backend: Option<&str>) -> Result<Option<(u64, u64)>> {
        let backend = self.backends.resolve(backend)?;
        let c = backend.client.capacity().await?;
        Ok(c.and_then(|c| Some((c.total_bytes?, c.free_bytes?))))
    }

    /// Whether a backend is the embedded local CSP (its volumes live on this machine).
    pub fn is_embedded(&self, backend: Option<&str>) -> Result<bool> {
        Ok(self.backends.resolve(backend)?.embedded)
    }

    /// Deletes a volume by name; a volume that does not exist is already deleted. Any name
    /// the backend holds is taken (`validate_held_name`): a volume made straight on the
    /// CSP under a name the other rules refuse can still be removed. A Docker record of
    /// the volume with no reference left goes with it.
    pub async fn delete_volume(&self, name: &str, backend: Option<&str>, wait: Wait) -> Result<()> {
        self.delete_checked(name, backend, wait, false)
            .await
            .map(drop)
    }

    /// Deletes a volume by name unless this engine has granted it to a node (CSI: a
    /// published volume is FailedPrecondition). The check runs under the volume's guard,
    /// the one `grant` takes, so no grant can slip in between check and delete.
    pub async fn delete_ungranted_volume(
        &self,
        name: &str,
        backend: Option<&str>,
        wait: Wait,
    ) -> Result<()> {
        self.delete_checked(name, backend, wait, true)
            .await
            .map(drop)
    }

    /// Deletes a volume by name: `false` when there was no such volume (a person's `rm`
    /// says so; CSI and Docker take it as done). A volume still in use is refused with
    /// where it is used and what to do, by its name.
    pub async fn delete_volume_if_exists(
        &self,
        name: &str,
        backend: Option<&str>,
        wait: Wait,
    ) -> Result<bool> {
        self.delete_checked(name, backend, wait, false).await
    }

    async fn delete_checked(
        &self,
        name: &str,
        backend: Option<&str>,
        wait: Wait,
        refuse_granted: bool,
    ) -> Result<bool> {
        validate_held_name("name", name)?;
        let backend = self.backends.resolve(backend)?;
        let _guard = self.guard(&backend.name, name, wait).await?;
        if refuse_granted {
            if let Some(g) = self.grants_of(&backend.name, name)?.first() {
                return Err(Error::precondition(format!(
                    "volume '{name}' is still published to node {}",
                    g.node_id
                )));
            }
        }
        let Some(v) = backend.client.find_volume(name).await? else {
            return Ok(false);
        };
        if v.published == Some(true) {
            return Err(self.still_in_use(&backend.name, name)?);
        }
        match backend.client.delete_found_volume(&v).await {
            Ok(()) => {
                self.docker_drop_deleted(&backend.name, name, v.id.as_deref().unwrap_or(""));
                Ok(true)
            }
            Err(e) if e.kind == ErrorKind::FailedPrecondition => {
                Err(self.why_not_deleted(&backend.client, name, &v, e).await)
            }
            Err(e) => Err(e),
        }
    }

    /// Why a published volume cannot go: where this node mounts or attaches it (with the
    /// command that ends it), the nodes CSI published it to, or else the CSP's word.
    fn still_in_use(&self, backend: &str, name: &str) -> Result<Error> {
        let object = Object::Volume(name.to_string());
        let in_use = |message: String| {
            Error::precondition(message)
                .with_reason(volbridge_base::Reason::InUse)
                .about(object.clone())
        };
        if let Some(stage) = self.stage_of(backend, name)? {
            let targets: Vec<String> = self
                .publishes_of(&stage.volume_key)?
                .iter()
                .map(|p| p.target.display().to_string())
                .collect();
            let by_cli = stage.owner == crate::records::node::Owner::Engine;
            // Docker's mount of it (the mount table's, under the Docker mount base).
            let docker = self
                .docker_get(name)?
                .filter(|d| d.backend == backend)
                .and_then(|d| {
                    let at = d.mounted_at.as_ref()?.display().to_string();
                    targets.contains(&at).then(|| (at, d.total_refs()))
                });
            if let (Some((at, refs)), true) = (docker, by_cli) {
                return Ok(in_use(format!(
                    "volume '{name}' is mounted by Docker at {at} for {refs} container \
                     reference(s); stop the containers that use it (docker ps --filter \
                     volume={name}), or drop references Docker never released: volbridge \
                     docker release {name}"
                )));
            }
            return Ok(in_use(match (targets.first(), by_cli) {
                (Some(first), true) => {
                    let commands: Vec<String> = targets
                        .iter()
                        .map(|t| format!("volbridge volume unmount {name} {t}"))
                        .collect();
                    let pin = if stage.pinned {
                        format!(", then volbridge volume detach {name}")
                    } else {
                        String::new()
                    };
                    format!(
                        "volume '{name}' is mounted on this node at {}; unmount it first: {}{pin}",
                        if targets.len() == 1 {
                            first.clone()
                        } else {
                            targets.join(", ")
                        },
                        commands.join("; ")
                    )
                }
                (None, true) => format!(
                    "volume '{name}' is attached to this node (volume attach); detach it first: \
                     volbridge volume detach {name}"
                ),
                (_, false) => format!(
                    "volume '{name}' is in use on this node by a container orchestrator (staged \
                     at {}{}); stop what uses it (the pod or container) and remove it again",
                    stage.staging_path.display(),
                    if targets.is_empty() {
                        String::new()
                    } else {
                        format!(", published at {}", targets.join(", "))
                    }
                ),
            }));
        }
        if self
            .attachments()?
            .iter()
            .any(|a| a.backend == backend && a.volume_name == name)
        {
            return Ok(in_use(format!(
                "volume '{name}' is attached to this node; detach it first: volbridge volume \
                 detach {name}"
            )));
        }
        let nodes: Vec<String> = self
            .grants_of(backend, name)?
            .into_iter()
            .map(|g| g.node_id)
            .collect();
        if !nodes.is_empty() {
            return Ok(in_use(format!(
                "volume '{name}' is published to node {}; unpublish it there first \
                 (ControllerUnpublishVolume: volbridge csi controller unpublish {name} --node-id {})",
                nodes.join(", "),
                nodes[0]
            )));
        }
        Ok(in_use(format!(
            "volume '{name}' is published by backend '{backend}' to a host other than this \
             one; unmount it there (volbridge volume unmount on that host) and remove it again"
        )))
    }

    /// A refusal of the CSP's delete, worded by name: the snapshots to remove first.
    async fn why_not_deleted(
        &self,
        client: &CspClient,
        name: &str,
        v: &volbridge_provider::Volume,
        refused: Error,
    ) -> Error {
        let id = v.id.as_deref().unwrap_or_default();
        let snapshots = match client.list_snapshots(Some(id)).await {
            Ok(list) => list,
            Err(_) => return refused.about(Object::Volume(name.to_string())),
        };
        let mut names: Vec<String> = snapshots
            .iter()
            .map(|s| {
                s.name
                    .clone()
                    .unwrap_or_else(|| s.id.clone().unwrap_or_default())
            })
            .collect();
        if names.is_empty() {
            return refused.about(Object::Volume(name.to_string()));
        }
        names.sort();
        Error::precondition(format!(
            "volume '{name}' has snapshots ({}); remove {} first: volbridge snapshot rm {} \
             (a volume cloned from a snapshot keeps its data)",
            names.join(", "),
            if names.len() == 1 { "it" } else { "them" },
            names.join(" ")
        ))
        .about(Object::Volume(name.to_string()))
    }
}

/// What an expand to a size below the volume's current one gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shrink {
    /// The current volume (CSI: the resizer's retry of a done expand).
    AnswerCurrent,
    /// InvalidArgument with the current size (a person's `volume expand`).
    Refuse,
}

/// How often a waiting caller looks at a running copy.
pub(crate) const POLL: Duration = Duration::from_millis(250);
