//! Volume endpoints (V1–V5) and the client-side flows around them: create (B10, B14, B39),
//! clone (B16–B18), expand (B19), edit (B20, B21), delete (B35).

use std::collections::BTreeMap;
use std::time::SystemTime;
use volbridge_base::redact::is_secret_key;

use http::{Method, StatusCode};
use serde_json::Value;
use tracing::{debug, warn};
use volbridge_proto::csp::{
    camel_to_snake, Config, CopyProgress, Snapshot, Volume, BACKGROUND_COMPLETED,
    CLONE_SNAPSHOT_PREFIX, EXTENSION_CLONE_FROM_VOLUME, SOURCE_LOST,
};

use super::client::{CspClient, Op};
use volbridge_base::error::{Error, ErrorKind, Result};

/// A volume to create (or to create as a clone).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VolumeCreate {
    pub name: String,
    /// Bytes; required for a plain create, optional on a clone (absent = inherit).
    pub size: Option<u64>,
    pub description: Option<String>,
    /// Engine parameters with camelCase keys; sent as snake_case `config` (B38).
    pub params: BTreeMap<String, String>,
    pub multi_initiator: bool,
}

/// Where a clone comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloneSource {
    /// A snapshot id.
    Snapshot(String),
    /// A volume id; the client makes a temporary snapshot (B16).
    Volume(String),
}

/// A partial update of a volume (V4 edit form).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VolumeEdit {
    pub description: Option<String>,
    /// camelCase keys; `None` removes the key (sent as `null`).
    pub params: BTreeMap<String, Option<String>>,
    /// `None`: unchanged; `Some(None)`: leave the group; `Some(Some(id))`: join or move.
    pub volume_group_id: Option<Option<String>>,
}

/// Engine parameters → CSP `config` (B38), and the `description` found among them.
pub fn params_to_config<'a, V>(
    params: impl IntoIterator<Item = (&'a String, V)>,
    to_value: impl Fn(V) -> Value,
) -> (Config, Option<Value>) {
    let mut config = Config::new();
    let mut description = None;
    for (key, value) in params {
        if key == "description" {
            description = Some(to_value(value));
        } else if is_secret_key(key) {
            debug!(key, "secret-looking parameter not forwarded to the CSP");
        } else {
            config.insert(camel_to_snake(key), to_value(value));
        }
    }
    (config, description)
}

fn create_config(req: &VolumeCreate) -> (Config, Option<String>) {
    let (mut config, described) = params_to_config(&req.params, |v| Value::String(v.clone()));
    if req.multi_initiator {
        config.insert("multi_initiator".into(), Value::Bool(true));
    }
    let description = req.description.clone().or(match described {
        Some(Value::String(s)) => Some(s),
        _ => None,
    });
    (config, description)
}

fn require_id<'a>(field: &str, id: &'a str) -> Result<&'a str> {
    if id.is_empty() {
        Err(Error::invalid(field, "must not be empty"))
    } else {
        Ok(id)
    }
}

fn vol_id(v: &Volume) -> &str {
    v.id.as_deref().unwrap_or("")
}

/// A found volume matches a request when the sizes agree; unknown or 0 reads as equal (B10).
fn same_size(found: &Volume, wanted: Option<u64>) -> bool {
    match (found.size, wanted) {
        (None | Some(0), _) | (_, None | Some(0)) => true,
        (Some(a), Some(b)) => a == b,
    }
}

impl CspClient {
    pub async fn list_volumes(&self) -> Result<Vec<Volume>> {
        self.list(&["volumes"], &[], "volume list").await
    }

    /// V1 `?name=` (B1, B6): 404 or `[]` → `None`.
    pub async fn find_volume(&self, name: &str) -> Result<Option<Volume>> {
        let name = require_id("name", name)?;
        self.lookup(
            &["volumes"],
            &[("name", name)],
            name,
            |v: &Volume| v.name.as_deref(),
            "volume",
        )
        .await
    }

    /// V3; 404 → NotFound.
    pub async fn get_volume(&self, id: &str) -> Result<Volume> {
        self.get_volume_opt(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("volume {id} not found")))
    }

    pub(crate) async fn get_volume_opt(&self, id: &str) -> Result<Option<Volume>> {
        let id = require_id("volumeId", id)?;
        self.get_opt(&["volumes", id], "volume").await
    }

    /// B39: a volume is usable once its background operation completed. A failed one is
    /// destroyed (it can never become usable) and reported as Internal.
    async fn settled(&self, v: Volume) -> Result<Volume> {
        match v.background_status() {
            None | Some(BACKGROUND_COMPLETED) => Ok(v),
            Some(s) if s.starts_with("Failed") => {
                let msg = format!(
                    "CSP failed to create volume {}: {s}",
                    v.name.as_deref().unwrap_or(vol_id(&v))
                );
                if let Err(e) = self.destroy_volume(vol_id(&v)).await {
                    warn!(volume = vol_id(&v), error = %e.message, "cannot remove failed volume");
                }
                Err(Error::internal(msg))
            }
            Some(s) => Err(in_progress(format!(
                "volume {} is still being copied by the CSP ({s}{})",
                v.name.as_deref().unwrap_or(vol_id(&v)),
                progress_text(v.copy_progress)
            ))),
        }
    }

    /// B10/B14/B39: lookup by name, reuse on equal size, otherwise V2.
    pub async fn create_volume(&self, req: &VolumeCreate) -> Result<Volume> {
        require_id("name", &req.name)?;
        let size = match req.size {
            Some(s) if s > 0 => s,
            _ => return Err(Error::invalid("size", "a new volume needs a size above 0")),
        };
        if let Some(found) = self.find_volume(&req.name).await? {
            if !same_size(&found, Some(size)) {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "volume {} exists with size {} (requested {size})",
                        req.name,
                        found.size.unwrap_or(0)
                    ),
                ));
            }
            return self.settled(found).await;
        }
        let (config, description) = create_config(req);
        let body = Volume {
            name: Some(req.name.clone()),
            size: Some(size),
            description,
            config: Some(config),
            ..Volume::default()
        };
        let v: Volume = self
            .send_json(Method::POST, &["volumes"], &body, Op::Create, "volume")
            .await?;
        self.settled(v).await
    }

    /// B16/B17/B18, idempotent by name like [`Self::create_volume`].
    pub async fn clone_volume(&self, req: &VolumeCreate, source: &CloneSource) -> Result<Volume> {
        require_id("name", &req.name)?;
        let wanted = req.size.filter(|s| *s > 0);
        if let Some(found) = self.find_volume(&req.name).await? {
            return self.reuse_clone(req, source, found).await;
        }
        match source {
            CloneSource::Snapshot(snap_id) => {
                let snap = self.source_snapshot(snap_id).await?;
                check_clone_size(wanted, snap.size, "snapshot", snap_id)?;
                if snap.ready_to_use == Some(false) {
                    return Err(in_progress(format!(
                        "snapshot {snap_id} is not ready to use yet (its data is still being copied{})",
                        progress_text(snap.copy_progress)
                    )));
                }
                let v = self.post_clone(req, snap_id).await?;
                self.settled(v).await
            }
            CloneSource::Volume(parent_id) => self.clone_from_volume(req, parent_id, wanted).await,
        }
    }

    async fn source_snapshot(&self, id: &str) -> Result<Snapshot> {
        self.get_snapshot_opt(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("source snapshot {id} not found")))
    }

    async fn reuse_clone(
        &self,
        req: &VolumeCreate,
        source: &CloneSource,
        found: Volume,
    ) -> Result<Volume> {
        let conflict = |why: String| {
            Error::new(
                ErrorKind::AlreadyExists,
                format!("volume {} exists {why}", req.name),
            )
        };
        if !same_size(&found, req.size) {
            return Err(conflict(format!(
                "with size {} (requested {})",
                found.size.unwrap_or(0),
                req.size.unwrap_or(0)
            )));
        }
        let base = found.base_snapshot_id.clone().unwrap_or_default();
        let base = base.as_str();
        match source {
            CloneSource::Snapshot(snap_id) if base != snap_id => {
                return Err(conflict(format!("with another source (snapshot '{base}')")));
            }
            CloneSource::Volume(parent_id) => {
                let parent = found.parent_volume_id.as_deref().unwrap_or("");
                let one_step = found.base_volume_id.as_deref() == Some(parent_id.as_str());
                if !one_step && (base.is_empty() || (!parent.is_empty() && parent != parent_id)) {
                    return Err(conflict("with another source".into()));
                }
            }
            CloneSource::Snapshot(_) => {}
        }
        if let CloneSource::Volume(parent_id) = source {
            // Its temporary snapshot's copy was lost (the CSP restarted during it): nothing
            // was handed out yet and the source volume is still there, so start over.
            let lost = found
                .background_status()
                .is_some_and(|s| s.starts_with("Failed") && s.contains(SOURCE_LOST));
            if lost {
                warn!(clone = %req.name, "the clone's temporary snapshot was lost; cloning again");
                self.destroy_volume(vol_id(&found)).await?;
                return self
                    .clone_from_volume(req, parent_id, req.size.filter(|s| *s > 0))
                    .await;
            }
        }
        let v = self.settled(found).await?;
        if matches!(source, CloneSource::Volume(_)) && !base.is_empty() {
            // A retry after an in-progress clone: the temporary snapshot may now go.
            if let Ok(Some(s)) = self.get_snapshot_opt(base).await {
                if s.name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(CLONE_SNAPSHOT_PREFIX))
                {
                    self.drop_temp_snapshot(base).await;
                }
            }
        }
        Ok(v)
    }

    async fn post_clone(&self, req: &VolumeCreate, snapshot_id: &str) -> Result<Volume> {
        let (config, description) = create_config(req);
        let body = Volume {
            name: Some(req.name.clone()),
            size: req.size.filter(|s| *s > 0),
            description,
            base_snapshot_id: Some(snapshot_id.to_owned()),
            clone: Some(true),
            config: Some(config),
            ..Volume::default()
        };
        self.send_json(Method::POST, &["volumes"], &body, Op::Create, "volume")
            .await
    }

    async fn clone_from_volume(
        &self,
        req: &VolumeCreate,
        parent_id: &str,
        wanted: Option<u64>,
    ) -> Result<Volume> {
        let parent = self
            .get_volume_opt(parent_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("source volume {parent_id} not found")))?;
        check_clone_size(wanted, parent.size, "volume", parent_id)?;
        // A CSP whose capacity cannot be read now gets the standard form (B16).
        if self
            .lists_extension(EXTENSION_CLONE_FROM_VOLUME)
            .await
            .unwrap_or(false)
        {
            let (config, description) = create_config(req);
            let body = Volume {
                name: Some(req.name.clone()),
                size: wanted,
                description,
                base_volume_id: Some(parent_id.to_owned()),
                clone: Some(true),
                config: Some(config),
                ..Volume::default()
            };
            let v = self
                .send_json(Method::POST, &["volumes"], &body, Op::Create, "volume")
                .await?;
            return self.settled(v).await;
        }
        // An attempt of this same clone that stopped while the temporary snapshot was still
        // being copied left it in place: go on with it, never start a second copy.
        let snap = match self.copying_temp_snapshot(parent_id, &req.name).await? {
            Some(s) => s,
            None => {
                let stamp = humantime::format_rfc3339_seconds(SystemTime::now());
                let snap_name = format!(
                    "{CLONE_SNAPSHOT_PREFIX}{stamp}-{}",
                    volbridge_base::random::hex(4)
                );
                let body = Snapshot {
                    name: Some(snap_name),
                    description: Some(req.name.clone()),
                    volume_id: Some(parent_id.to_owned()),
                    ..Snapshot::default()
                };
                self.send_json(Method::POST, &["snapshots"], &body, Op::Create, "snapshot")
                    .await?
            }
        };
        let snap_id = snap
            .id
            .clone()
            .ok_or_else(|| Error::internal("CSP created a snapshot without an id"))?;
        // A CSP that clones from a snapshot still being copied (the local CSP does: the
        // clone's copy waits for it) gets the clone at once, so that a retry finds it by
        // name (B10). One that refuses keeps the snapshot for the retry.
        let not_ready = snap.ready_to_use == Some(false);
        let v = match self.post_clone(req, &snap_id).await {
            Ok(v) => v,
            Err(e)
                if not_ready
                    && (e.is(ErrorKind::InvalidArgument)
                        || e.is(ErrorKind::AlreadyExists)
                        || e.is(ErrorKind::FailedPrecondition)) =>
            {
                debug!(snapshot = %snap_id, error = %e.message, "the CSP does not clone a snapshot still being copied; waiting");
                return Err(in_progress(format!(
                    "the temporary snapshot for clone {} is still being copied{}",
                    req.name,
                    progress_text(snap.copy_progress)
                )));
            }
            Err(e) => {
                self.drop_temp_snapshot(&snap_id).await;
                return Err(e);
            }
        };
        let complete = v
            .background_status()
            .is_none_or(|s| s == BACKGROUND_COMPLETED);
        let failed = v
            .background_status()
            .is_some_and(|s| s.starts_with("Failed"));
        let result = self.settled(v).await;
        if complete || failed {
            self.drop_temp_snapshot(&snap_id).await;
        }
        result
    }

    /// The temporary snapshot (B16: name prefix, description = the clone's name) of clone
    /// `clone` of volume `parent_id` whose data is still being copied, if there is one.
    async fn copying_temp_snapshot(
        &self,
        parent_id: &str,
        clone: &str,
    ) -> Result<Option<Snapshot>> {
        let all = match self.list_snapshots(Some(parent_id)).await {
            Ok(all) => all,
            Err(e) if e.is(ErrorKind::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(all.into_iter().find(|s| {
            s.ready_to_use == Some(false)
                && s.description.as_deref() == Some(clone)
                && s.name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(CLONE_SNAPSHOT_PREFIX))
        }))
    }

    /// S4 of a temporary snapshot, best effort; 409 means the CSP still needs it (B16).
    async fn drop_temp_snapshot(&self, id: &str) {
        match self
            .call(Method::DELETE, &["snapshots", id], &[], None)
            .await
        {
            Ok(r) if r.status.is_success() || r.status == StatusCode::NOT_FOUND => {}
            Ok(r) if r.status == StatusCode::CONFLICT => {
                debug!(snapshot = id, "temporary snapshot still in use, kept")
            }
            Ok(r) => warn!(
                snapshot = id,
                status = r.status.as_u16(),
                "cannot remove temporary snapshot"
            ),
            Err(e) => warn!(snapshot = id, error = %e.message, "cannot remove temporary snapshot"),
        }
    }

    /// B19: never sends a shrink; a size not above the current one answers the volume as is.
    pub async fn expand_volume(&self, id: &str, size: u64) -> Result<Volume> {
        let current = self.get_volume(id).await?;
        if current.size.is_some_and(|s| size <= s) {
            return Ok(current);
        }
        let body = Volume {
            id: Some(id.to_owned()),
            size: Some(size),
            ..Volume::default()
        };
        self.send_json(Method::PUT, &["volumes", id], &body, Op::Other, "volume")
            .await
    }

    /// B20/B21: partial update; a `None` param value removes the key.
    pub async fn edit_volume(&self, id: &str, edit: &VolumeEdit) -> Result<Volume> {
        let id = require_id("volumeId", id)?;
        let (config, described) = params_to_config(&edit.params, |v| {
            v.clone().map_or(Value::Null, Value::String)
        });
        let description = edit.description.clone().or(match described {
            Some(Value::String(s)) => Some(s),
            _ => None,
        });
        let body = Volume {
            id: Some(id.to_owned()),
            description,
            volume_group_id: edit.volume_group_id.clone(),
            config: (!config.is_empty()).then_some(config),
            ..Volume::default()
        };
        self.send_json(Method::PUT, &["volumes", id], &body, Op::Other, "volume")
            .await
    }

    /// B35: refuses while published or while snapshots exist; gone counts as deleted.
    pub async fn delete_volume(&self, id: &str) -> Result<()> {
        match self.get_volume_opt(id).await? {
            None => Ok(()),
            Some(v) => self.delete_found_volume(&v).await,
        }
    }

    /// B35 after its first step: `v` is what V3 (or a lookup by name) answered just now.
    pub async fn delete_found_volume(&self, v: &Volume) -> Result<()> {
        let id = require_id("volumeId", vol_id(v))?;
        let named = v.name.as_deref().filter(|n| !n.is_empty()).unwrap_or(id);
        if v.published == Some(true) {
            return Err(Error::precondition(format!(
                "volume '{named}' is still published; unpublish it first"
            )));
        }
        let probe = self
            .call(
                Method::GET,
                &["snapshots"],
                &[("volume_id", id), ("mode", "exists")],
                None,
            )
            .await?;
        if probe.status == StatusCode::NOT_FOUND {
            if self.get_volume_opt(id).await?.is_none() {
                return Ok(());
            }
        } else {
            let probe = self.check(probe, Op::Other)?;
            let snaps: Vec<Snapshot> = self.decode_list(&probe, "snapshot list")?;
            if !snaps.is_empty() {
                return Err(Error::precondition(format!(
                    "volume '{named}' has snapshots; delete them first"
                )));
            }
        }
        self.remove_volume(id, false).await
    }

    /// V5 `force=true`: destroy now, bypassing retention; gone counts as destroyed.
    pub async fn destroy_volume(&self, id: &str) -> Result<()> {
        let id = require_id("volumeId", id)?;
        self.remove_volume(id, true).await
    }

    async fn remove_volume(&self, id: &str, force: bool) -> Result<()> {
        let force = if force { "true" } else { "false" };
        let reply = self
            .call(Method::DELETE, &["volumes", id], &[("force", force)], None)
            .await?;
        match reply.status {
            StatusCode::NOT_FOUND => Ok(()),
            StatusCode::BAD_REQUEST | StatusCode::CONFLICT => {
                let e = self.check(reply, Op::Other).unwrap_err();
                Err(Error::precondition(e.message))
            }
            _ => self.check(reply, Op::Other).map(drop),
        }
    }
}

/// A copy the CSP is still making (B39, ready_to_use false): the engine waits for it
/// within the caller's deadline, and a caller that cannot wait retries with the same name.
pub(crate) fn in_progress(message: String) -> Error {
    Error::new(ErrorKind::Aborted, message)
}

/// `", 120 MiB of 500 MiB copied"` when the CSP reports a copy's progress (ext).
pub fn progress_text(p: Option<CopyProgress>) -> String {
    match p {
        Some(p) => format!(
            ", {} of {} copied",
            volbridge_proto::units::human(p.bytes_done),
            volbridge_proto::units::human(p.bytes_total)
        ),
        None => String::new(),
    }
}

fn check_clone_size(wanted: Option<u64>, source: Option<u64>, what: &str, id: &str) -> Result<()> {
    match (wanted, source) {
        (Some(w), Some(s)) if w < s => Err(Error::invalid(
            "size",
            format!("{w} bytes is smaller than the source {what} {id} ({s} bytes)"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
