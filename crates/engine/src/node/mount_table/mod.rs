//! Docker mounts: the engine's record of the volumes Docker knows through the volume plugin,
//! and their mount references keyed by (volume, mount ID) with a counter
//! (docker-volume-plugin.md §7). The first reference mounts the volume at a per-volume
//! path (through the engine's own mount flow: CSP grant, stage, bind), the last one
//! unmounts and detaches it, after an optional delay that lets the copy-up cycle and the
//! start of one `docker run` share a single attach.
//!
//! Records are one durable JSON document per volume (collection `docker-volumes`), kept in
//! memory as well so that Get, List and Path never wait for a disk or a CSP. The kernel
//! boot ID is stored too: after a reboot no container holds a reference any more.
//!
//! Crash safety: a mount is made (and recorded by the engine's own phase records) before
//! its reference is counted, so a crash in between leaves a mount with no reference, which
//! the reconciler pass here tears down; a reference is never counted for a mount that was
//! not made. Over-counting (a crash after persisting, then Docker's re-send) only delays a
//! teardown; `volbridge docker release` repairs it.

use crate::model::{CreateVolume, VolumeSource};
use crate::names::validate_name;
use crate::records::node::{engine_volume_key, path_component, PublishRecord, PUBLISHES};
use crate::ReconcileReport;
use crate::{Engine, MountVolume, OpGuard, Wait};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use volbridge_base::error::{Error, ErrorKind, Result};

pub const DOCKER_VOLUMES: &str = "docker-volumes";
const DOCKER_NODE: &str = "docker-node";
const BOOT_KEY: &str = "boot";
const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";
/// How long a mount that finished after its caller gave up is kept for a retrying Mount.
pub const LATE_MOUNT_KEEP: Duration = Duration::from_secs(60);

/// `field` marker of FailedPrecondition errors that mean "the volume is in use here".
pub const IN_USE: &str = "in_use";

/// One volume as Docker knows it: its options and this node's mount references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerVolume {
    /// The Docker name (also the CSP volume name).
    pub name: String,
    pub backend: String,
    /// The CSP volume id.
    pub volume_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The options the user gave, under their canonical spelling.
    pub options: BTreeMap<String, String>,
    pub size_bytes: u64,
    /// `""`: whatever the volume holds (clones), else the filesystem made on first mount.
    pub fs_type: String,
    pub read_only: bool,
    #[serde(default)]
    pub mount_options: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// `snapshot:<name>` or `volume:<name>` for clones.
    #[serde(default)]
    pub source: Option<String>,
    /// Mount ID → count.
    #[serde(default)]
    pub refs: BTreeMap<String, u32>,
    /// Where the volume is mounted for Docker, while it is.
    #[serde(default)]
    pub mounted_at: Option<PathBuf>,
    /// The last teardown failed; the reconciler retries it.
    #[serde(default)]
    pub release_pending: bool,
}

impl DockerVolume {
    pub fn total_refs(&self) -> u64 {
        self.refs.values().map(|n| u64::from(*n)).sum()
    }

    /// `available`, `mounted` or `release-pending`.
    pub fn state(&self) -> &'static str {
        if self.total_refs() > 0 {
            "mounted"
        } else if self.release_pending {
            "release-pending"
        } else if self.mounted_at.is_some() {
            // Zero references inside the unstage delay: still attached here.
            "attached"
        } else {
            "available"
        }
    }

    /// The mount point Docker is given, while this node holds references.
    pub fn mountpoint(&self) -> Option<&Path> {
        if self.total_refs() > 0 {
            self.mounted_at.as_deref()
        } else {
            None
        }
    }
}

/// What Create needs; the front end has parsed and checked the user's options.
#[derive(Debug, Clone, Default)]
pub struct DockerCreate {
    pub name: String,
    pub backend: Option<String>,
    pub size: Option<u64>,
    pub description: Option<String>,
    /// CSP config, camelCase keys (`fsType`, `fsCreateOptions`, `fsOwner`, pass-through keys).
    pub params: BTreeMap<String, String>,
    pub source: Option<VolumeSource>,
    pub fs_type: String,
    pub read_only: bool,
    pub mount_options: Vec<String>,
    /// The options as given (canonical key spelling), for idempotence and `inspect`.
    pub options: BTreeMap<String, String>,
}

/// What `volbridge docker release` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerRelease {
    pub volume: String,
    /// References dropped.
    pub dropped: u64,
    /// References left (another ID kept, with `--id`).
    pub remaining: u64,
    /// The volume was unmounted and detached.
    pub unmounted: bool,
}

/// Settings of the Docker mount flow.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// Directory the per-volume mount points live in (default `<state dir>/mounts`).
    pub mount_base: Option<PathBuf>,
    /// How long a volume stays mounted after its last reference is gone.
    pub unstage_delay: Duration,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            mount_base: None,
            unstage_delay: Duration::from_secs(5),
        }
    }
}

/// The in-memory side of the records (loaded on first use).
#[derive(Default)]
pub struct MountTable {
    volumes: RwLock<Option<BTreeMap<String, DockerVolume>>>,
    settings: RwLock<DockerSettings>,
    /// Volumes whose teardown waits for the unstage delay, with the generation that armed it.
    deferred: std::sync::Mutex<HashMap<String, u64>>,
    generation: AtomicU64,
    /// What the load found worth reporting (boot change), for the first reconcile report.
    load_notes: std::sync::Mutex<Vec<String>>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string(BOOT_ID_FILE)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BootRecord {
    boot_id: String,
}

fn no_such_volume(name: &str) -> Error {
    Error::not_found(format!("no such volume: {name:?}"))
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

    fn docker_mount_base(&self) -> PathBuf {
        self.mount_table
            .settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .mount_base
            .clone()
            .unwrap_or_else(|| self.store.root().join("mounts"))
    }

    fn docker_delay(&self) -> Duration {
        self.mount_table
            .settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .unstage_delay
    }

    /// Runs `f` on the loaded table (loading it first when needed).
    fn docker_with<T>(
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

    fn docker_load(&self) -> Result<BTreeMap<String, DockerVolume>> {
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
        // After a reboot no container holds a mount: every reference is stale.
        if let Some(now) = boot_id() {
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
    fn docker_save(&self, v: &DockerVolume) -> Result<()> {
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

    fn docker_forget(&self, name: &str) -> Result<()> {
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
    async fn docker_guard(&self, name: &str) -> Result<OpGuard> {
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

    /// A volume the CSP has but this node has no record of (a `global`-scope backend: made
    /// on another node): recorded here, so that Docker can use it.
    pub async fn docker_adopt(&self, name: &str, backend: Option<&str>) -> Result<DockerVolume> {
        validate_name("name", name)?;
        let _guard = self.docker_guard(name).await?;
        if let Some(v) = self.docker_get(name)? {
            return Ok(v);
        }
        let found = self.get_volume(name, backend).await?;
        let record = DockerVolume {
            name: name.to_owned(),
            backend: found.backend.clone(),
            volume_id: found.id.clone(),
            created_at: now_secs(),
            options: BTreeMap::new(),
            size_bytes: found.size_bytes,
            fs_type: String::new(),
            read_only: false,
            mount_options: Vec::new(),
            description: found.description.clone(),
            source: None,
            refs: BTreeMap::new(),
            mounted_at: None,
            release_pending: false,
        };
        self.docker_save(&record)?;
        Ok(record)
    }

    /// Creates a volume for Docker, or finds it: an existing record whose options agree
    /// with every option given is success; a differing option is AlreadyExists.
    pub async fn docker_create(&self, req: DockerCreate) -> Result<DockerVolume> {
        validate_name("name", &req.name)?;
        let _guard = self.docker_guard(&req.name).await?;
        if let Some(existing) = self.docker_get(&req.name)? {
            check_same_options(&existing, &req.options)?;
            return Ok(existing);
        }
        let source = req.source.as_ref().map(|s| match s {
            VolumeSource::Snapshot(n) => format!("snapshot:{n}"),
            VolumeSource::Volume(n) => format!("volume:{n}"),
            VolumeSource::SnapshotId(id) => format!("snapshot-id:{id}"),
        });
        let volume = self
            .create_volume(
                CreateVolume {
                    name: req.name.clone(),
                    size: req.size,
                    backend: req.backend.clone(),
                    description: req.description.clone(),
                    params: req.params.clone(),
                    source: req.source.clone(),
                    multi_initiator: false,
                },
                Wait::Bounded,
            )
            .await?;
        let record = DockerVolume {
            name: req.name.clone(),
            backend: volume.backend.clone(),
            volume_id: volume.id.clone(),
            created_at: now_secs(),
            options: req.options.clone(),
            size_bytes: volume.size_bytes,
            fs_type: req.fs_type.clone(),
            read_only: req.read_only,
            mount_options: req.mount_options.clone(),
            description: req.description.clone(),
            source,
            refs: BTreeMap::new(),
            mounted_at: None,
            release_pending: false,
        };
        self.docker_save(&record)?;
        Ok(record)
    }

    /// Removes a Docker volume: refused while this node holds references; an unknown name
    /// is success.
    pub async fn docker_remove(&self, name: &str) -> Result<()> {
        if validate_name("name", name).is_err() {
            return Ok(());
        }
        let _guard = self.docker_guard(name).await?;
        let Some(mut v) = self.docker_get(name)? else {
            return Ok(());
        };
        let total = v.total_refs();
        if total > 0 {
            return Err(Error {
                kind: ErrorKind::FailedPrecondition,
                message: format!(
                    "{name:?} is mounted by {total} container{} on this node",
                    if total == 1 { "" } else { "s" }
                ),
                field: Some(IN_USE.to_owned()),
            });
        }
        self.docker_cancel_deferred(name);
        if v.mounted_at.is_some() || v.release_pending || self.docker_published(&v)?.is_some() {
            self.docker_teardown(&mut v).await?;
        }
        self.delete_volume(name, Some(&v.backend), Wait::Bounded)
            .await?;
        self.docker_forget(name)
    }

    /// Where a volume is mounted for Docker.
    fn docker_target(&self, v: &DockerVolume) -> PathBuf {
        self.docker_mount_base()
            .join(path_component(&engine_volume_key(&v.backend, &v.volume_id)))
    }

    /// The engine's publish record of the volume's Docker mount point, if any.
    fn docker_published(&self, v: &DockerVolume) -> Result<Option<PathBuf>> {
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

    /// Tears the volume down after `delay` unless a Mount comes first.
    fn docker_arm_teardown(self: &Arc<Self>, name: &str, delay: Duration) {
        let generation = self.mount_table.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.mount_table
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), generation);
        let engine = self.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            engine.docker_deferred_teardown(&name, generation).await;
        });
    }

    fn docker_cancel_deferred(&self, name: &str) -> bool {
        self.mount_table
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some()
    }

    fn docker_is_deferred(&self, name: &str) -> bool {
        self.mount_table
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    async fn docker_deferred_teardown(&self, name: &str, generation: u64) {
        let Ok(_guard) = self.docker_guard(name).await else {
            return;
        };
        {
            let mut deferred = self
                .mount_table
                .deferred
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if deferred.get(name) != Some(&generation) {
                return;
            }
            deferred.remove(name);
        }
        let Ok(Some(mut v)) = self.docker_get(name) else {
            return;
        };
        if v.total_refs() > 0 {
            return;
        }
        if let Err(e) = self.docker_teardown(&mut v).await {
            tracing::warn!(volume = %name, error = %e, "Docker unmount: teardown failed; release pending");
        }
    }

    /// Unmounts and detaches a volume with no references (the caller holds its guard).
    /// A failure marks it release-pending.
    async fn docker_teardown(&self, v: &mut DockerVolume) -> Result<()> {
        let target = self
            .docker_published(v)?
            .or_else(|| v.mounted_at.clone())
            .unwrap_or_else(|| self.docker_target(v));
        let result = self
            .unmount_volume(
                &v.name,
                Some(&v.backend),
                &target.display().to_string(),
                Wait::Bounded,
            )
            .await;
        match result {
            Ok(_) => {
                // The mount point directory goes too (only when empty: never data).
                let _ = std::fs::remove_dir(&target);
                v.mounted_at = None;
                v.release_pending = false;
                self.docker_save(v)
            }
            Err(e) => {
                v.release_pending = true;
                self.docker_save(v)?;
                Err(e)
            }
        }
    }

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
                        Ok(dev.map(|d| processes_mounting(&d)).unwrap_or_default())
                    })
                    .await?;
                if let Some(pid) = users.first() {
                    return Err(Error {
                        kind: ErrorKind::FailedPrecondition,
                        message: format!(
                            "{name:?} is still mounted in another mount namespace (process {pid}, likely a running container); stop it first or use --force"
                        ),
                        field: Some(IN_USE.to_owned()),
                    });
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

    /// The reconciler's Docker pass: volumes mounted with no reference (a crash inside the
    /// unstage delay or between mount and count, a failed teardown) are unmounted and
    /// detached. Volumes in their unstage delay and busy volumes are left alone.
    pub(crate) async fn reconcile_docker(&self, report: &mut ReconcileReport) {
        let notes: Vec<String> = std::mem::take(
            &mut *self
                .mount_table
                .load_notes
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let volumes = match self.docker_list() {
            Ok(v) => v,
            Err(e) => {
                report
                    .actions
                    .push(format!("cannot read Docker volume records: {e}"));
                return;
            }
        };
        report.actions.extend(notes);
        for v in volumes {
            if v.total_refs() > 0 || self.docker_is_deferred(&v.name) {
                continue;
            }
            let published = match self.docker_published(&v) {
                Ok(p) => p,
                Err(e) => {
                    report.settle(&format!("Docker volume '{}'", v.name), Err(e));
                    continue;
                }
            };
            if published.is_none() && !v.release_pending && v.mounted_at.is_none() {
                continue;
            }
            let Ok(_guard) = self.guards.try_lock(&format!("@docker/{}", v.name)) else {
                continue;
            };
            // Read again under the guard: a Mount may have finished meanwhile.
            let Ok(Some(mut v)) = self.docker_get(&v.name) else {
                continue;
            };
            if v.total_refs() > 0 {
                continue;
            }
            let what = format!("Docker volume '{}' with no mount reference", v.name);
            let outcome = self
                .docker_teardown(&mut v)
                .await
                .map(|()| Some("unmounted and detached".to_owned()));
            report.settle(&what, outcome);
        }
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

/// An existing volume is adopted when every option the caller gave matches the record.
fn check_same_options(existing: &DockerVolume, wanted: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in wanted {
        let same = match existing.options.get(key) {
            Some(have) if key == "size" => {
                let a = crate::size::parse_size("size", have).ok();
                let b = crate::size::parse_size("size", value).ok();
                a.is_some() && a == b
            }
            Some(have) => have == value,
            None => false,
        };
        if !same {
            let message = match existing.options.get(key) {
                Some(have) => format!(
                    "{:?} has {key}={have}, request asks for {value}",
                    existing.name
                ),
                None => format!(
                    "{:?} was created without {key}, request asks for {key}={value}",
                    existing.name
                ),
            };
            return Err(Error {
                kind: ErrorKind::AlreadyExists,
                message,
                field: Some(key.clone()),
            });
        }
    }
    Ok(())
}

/// Processes in other mount namespaces that have device `dev` (`major:minor`) mounted:
/// one per namespace.
fn processes_mounting(dev: &str) -> Vec<u32> {
    let own = std::fs::read_link("/proc/self/ns/mnt").ok();
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(ns) = std::fs::read_link(e.path().join("ns/mnt")) else {
            continue;
        };
        if Some(&ns) == own.as_ref() || !seen.insert(ns) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path().join("mountinfo")) else {
            continue;
        };
        if text.lines().any(|l| l.split(' ').nth(2) == Some(dev)) {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(options: &[(&str, &str)]) -> DockerVolume {
        DockerVolume {
            name: "db1".into(),
            backend: "local".into(),
            volume_id: "abc".into(),
            created_at: 0,
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            size_bytes: 1 << 30,
            fs_type: "ext4".into(),
            read_only: false,
            mount_options: Vec::new(),
            description: None,
            source: None,
            refs: BTreeMap::new(),
            mounted_at: None,
            release_pending: false,
        }
    }

    #[test]
    fn options_must_match_to_adopt() {
        let v = volume(&[("size", "5Gi"), ("fsType", "xfs")]);
        let ask = |pairs: &[(&str, &str)]| {
            let m: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            check_same_options(&v, &m)
        };
        assert!(ask(&[]).is_ok());
        assert!(ask(&[("size", "5120Mi")]).is_ok());
        let e = ask(&[("size", "10Gi")]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists);
        assert_eq!(e.message, "\"db1\" has size=5Gi, request asks for 10Gi");
        let e = ask(&[("readOnly", "true")]).unwrap_err();
        assert!(e.message.contains("without readOnly"), "{}", e.message);
    }

    #[test]
    fn state_and_mountpoint_follow_refs() {
        let mut v = volume(&[]);
        assert_eq!(v.state(), "available");
        v.mounted_at = Some("/m/x".into());
        assert_eq!(v.state(), "attached");
        assert_eq!(v.mountpoint(), None);
        v.refs.insert("a".into(), 2);
        v.refs.insert("b".into(), 1);
        assert_eq!(v.total_refs(), 3);
        assert_eq!(v.state(), "mounted");
        assert_eq!(v.mountpoint(), Some(Path::new("/m/x")));
        v.refs.clear();
        v.release_pending = true;
        assert_eq!(v.state(), "release-pending");
    }

    #[test]
    fn mount_ids_are_checked() {
        assert!(check_mount_id(&"a".repeat(64)).is_ok());
        assert!(check_mount_id("").is_err());
        assert!(check_mount_id("a\nb").is_err());
    }
}
