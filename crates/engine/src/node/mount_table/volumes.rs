//! Docker's volume lifecycle on top of the table: create (or find with the same options),
//! adopt a volume made elsewhere, remove.

use super::{now_secs, DockerCreate, DockerVolume};
use crate::model::{CreateVolume, Volume, VolumeSource};
use crate::names::validate_name;
use crate::{Engine, Wait};
use std::collections::BTreeMap;
use volbridge_base::error::{Error, ErrorKind, Object, Reason, Result};

impl Engine {
    /// A volume the CSP has but this node has no record of (made by the CLI, CSI or
    /// FlexVolume on this node, or by Docker on another node of a `global`-scope backend):
    /// recorded here, so that Docker can use it as it is.
    pub async fn docker_adopt(&self, name: &str, backend: Option<&str>) -> Result<DockerVolume> {
        validate_name("name", name)?;
        let _guard = self.docker_guard(name).await?;
        if let Some(v) = self.docker_get(name)? {
            return Ok(v);
        }
        let found = self.get_volume(name, backend).await?;
        let record = adopted(name, &found);
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
        let created = self
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
            .await;
        let volume = match created {
            Ok(v) => v,
            // Made by another front end (the CLI, CSI, FlexVolume) under the same name.
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                return self.docker_create_existing(&req, e).await;
            }
            Err(e) => return Err(e),
        };
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

    /// A Create whose name the backend already holds with other parameters, and that this
    /// node has no Docker record of: the volume was made by another front end. Without
    /// options (Docker's implicit create of `docker run -v NAME:/path`) it is adopted as it
    /// is; options that ask for something else are refused, naming the volume and the fix.
    async fn docker_create_existing(
        &self,
        req: &DockerCreate,
        conflict: Error,
    ) -> Result<DockerVolume> {
        let found = match self.get_volume(&req.name, req.backend.as_deref()).await {
            Ok(v) => v,
            Err(_) => return Err(conflict),
        };
        let asked: Vec<String> = req
            .options
            .iter()
            .filter(|(k, _)| k.as_str() != "backend")
            .map(|(k, v)| format!("-o {k}={v}"))
            .collect();
        if asked.is_empty() {
            let record = adopted(&req.name, &found);
            self.docker_save(&record)?;
            return Ok(record);
        }
        Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "{:?} on backend {:?} ({}, made outside Docker) does not match {}; leave out the -o options to use it as it is, or choose another name",
                req.name,
                found.backend,
                volbridge_proto::units::human(found.size_bytes),
                asked.join(" ")
            ),
        )
        .about(Object::Volume(req.name.clone())))
    }

    /// Removes a Docker volume: refused while this node holds references. A volume this
    /// node has no record of but the default backend holds (made by the CLI or CSI, never
    /// looked up through Docker) is removed from the backend too, as any volume of the
    /// driver is; an unknown name is success.
    pub async fn docker_remove(&self, name: &str) -> Result<()> {
        if validate_name("name", name).is_err() {
            return Ok(());
        }
        let _guard = self.docker_guard(name).await?;
        let Some(mut v) = self.docker_get(name)? else {
            return self.delete_volume(name, None, Wait::Bounded).await;
        };
        let total = v.total_refs();
        if total > 0 {
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "{name:?} is mounted by {total} container{} on this node",
                    if total == 1 { "" } else { "s" }
                ),
            )
            .with_reason(Reason::InUse)
            .about(Object::Volume(name.to_owned())));
        }
        self.docker_cancel_deferred(name);
        if v.mounted_at.is_some() || v.release_pending || self.docker_published(&v)?.is_some() {
            self.docker_teardown(&mut v).await?;
        }
        self.delete_volume(name, Some(&v.backend), Wait::Bounded)
            .await?;
        self.docker_forget(name)
    }
}

impl Engine {
    /// After a volume was deleted through another front end (the CLI, CSI): a Docker record
    /// of it with no reference left would list a volume that no longer exists. Records with
    /// references are kept (the backend refuses to delete a volume in use anyway).
    pub(crate) fn docker_drop_deleted(&self, backend: &str, name: &str, volume_id: &str) {
        let stale = match self.docker_get(name) {
            Ok(Some(v)) => v.backend == backend && v.volume_id == volume_id && v.total_refs() == 0,
            _ => false,
        };
        if stale {
            self.docker_cancel_deferred(name);
            if let Err(e) = self.docker_forget(name) {
                tracing::warn!(volume = %name, error = %e, "cannot drop the Docker record of a deleted volume");
            }
        }
    }
}

/// The record of a volume made outside Docker: no options, and whatever filesystem it
/// holds (a blank one gets the default at its first mount).
fn adopted(name: &str, found: &Volume) -> DockerVolume {
    DockerVolume {
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
    }
}

/// An existing volume is adopted when every option the caller gave matches the record (a
/// size given now matches the volume's size when none was given at create).
fn check_same_options(existing: &DockerVolume, wanted: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in wanted {
        let same = match existing.options.get(key) {
            Some(have) if key == "size" => {
                let a = crate::size::parse_size("size", have).ok();
                let b = crate::size::parse_size("size", value).ok();
                a.is_some() && a == b
            }
            None if key == "size" => crate::size::parse_size("size", value)
                .ok()
                .and_then(|b| crate::size::align("size", b).ok())
                .is_some_and(|b| b == existing.size_bytes),
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
                field: Some(key.clone()),
                ..Error::new(ErrorKind::AlreadyExists, message)
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::mount_table::tests::volume;

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
        // Made without a size (Docker's default, or adopted): the volume's own size matches.
        let v = volume(&[]);
        assert!(check_same_options(&v, &[("size".into(), "1Gi".into())].into()).is_ok());
        let e = check_same_options(&v, &[("size".into(), "2Gi".into())].into()).unwrap_err();
        assert!(e.message.contains("without size"), "{}", e.message);
    }
}
