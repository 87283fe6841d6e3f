//! Creates keyed by the caller's name, the way CSI asks for them: the same name asked again
//! with the same request answers the volume made the first time; asked with another request
//! it is AlreadyExists. A CSP keeps no requests, so the request's fingerprint is kept as the
//! volume's description. Also here: the size a size range means, the rule that a clone is
//! at least as large as its source, and how a caller names a snapshot.

use crate::model::{CreateVolume, Snapshot, Volume, VolumeSource};
use crate::names::validate_name;
use crate::{size, Engine, Wait};
use std::collections::BTreeMap;
use volbridge_base::{Error, ErrorKind, Object, Result};

/// A size asked as a range: at least `required`, at most `limit`; 0 leaves either unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeRange {
    pub required: u64,
    pub limit: u64,
}

impl SizeRange {
    /// What the range means, rounded up to 1 MiB; `default` when nothing is required.
    /// Checked before any backend call: beyond the largest size volbridge accepts, or a
    /// limit below the rounded size, is OutOfRange.
    pub fn resolve(&self, field: &str, default: u64) -> Result<u64> {
        let size = match (self.required, self.limit) {
            (0, 0) => default,
            (0, l) => default.min(l),
            (r, _) => r,
        };
        let size = size::align(field, size)?;
        if self.limit > 0 && size > self.limit {
            return Err(Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "the smallest size volbridge can make is {size} bytes (1 MiB steps), \
                     above limit_bytes {}",
                    self.limit
                ),
            ));
        }
        Ok(size)
    }
}

/// How a caller names a snapshot: by its name, or as a member of a group snapshot,
/// `<group name>/<CSP snapshot id>` (every member carries the group's name as its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotRef {
    Name(String),
    Member {
        group: String,
        csp_id: String,
    },
    /// Not a form volbridge hands out: it names no snapshot.
    Nothing,
}

impl SnapshotRef {
    pub fn parse(id: &str) -> SnapshotRef {
        match id.split_once('/') {
            Some((group, csp_id)) if validate_name("id", group).is_ok() && !csp_id.is_empty() => {
                SnapshotRef::Member {
                    group: group.to_owned(),
                    csp_id: csp_id.to_owned(),
                }
            }
            Some(_) => SnapshotRef::Nothing,
            None if validate_name("id", id).is_ok() => SnapshotRef::Name(id.to_owned()),
            None => SnapshotRef::Nothing,
        }
    }
}

/// What a create keyed by name asks for.
#[derive(Debug, Clone, Default)]
pub struct RequestedVolume {
    pub name: String,
    pub size: SizeRange,
    pub backend: Option<String>,
    /// The CSP config the volume is made with; part of the request's identity.
    pub params: BTreeMap<String, String>,
    pub source: Option<RequestedSource>,
    pub multi_initiator: bool,
}

/// The content a requested volume starts with, as the caller named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestedSource {
    /// A snapshot id as [`SnapshotRef::parse`] reads it.
    Snapshot(String),
    /// A volume, by name.
    Volume(String),
}

impl RequestedSource {
    fn key(&self) -> String {
        match self {
            RequestedSource::Snapshot(id) => format!("snapshot:{id}"),
            RequestedSource::Volume(name) => format!("volume:{name}"),
        }
    }
}

/// What a request asked for besides its size, as kept in the volume's description.
fn fingerprint(params: &BTreeMap<String, String>, source: Option<&RequestedSource>) -> String {
    let mut text = source.map(RequestedSource::key).unwrap_or_default();
    for (k, v) in params {
        text.push_str(&format!("\n{k}={v}"));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hex: String = digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("csi-request:{hex}")
}

fn missing(what: &str, id: &str) -> Error {
    let object = match what {
        "snapshot" => Object::Snapshot(id.to_owned()),
        _ => Object::Volume(id.to_owned()),
    };
    Error::not_found(format!("{what} '{id}' does not exist")).about(object)
}

impl Engine {
    /// The snapshot a reference names; NotFound, in the caller's words, when it names none
    /// (a member id glued to another group's name, or to a lone snapshot, names nothing).
    pub async fn find_snapshot_ref(&self, id: &str, backend: Option<&str>) -> Result<Snapshot> {
        self.find_parsed_snapshot(id, &SnapshotRef::parse(id), backend)
            .await
    }

    /// [`Self::find_snapshot_ref`] for a caller that has parsed `id` into `r` already.
    pub async fn find_parsed_snapshot(
        &self,
        id: &str,
        r: &SnapshotRef,
        backend: Option<&str>,
    ) -> Result<Snapshot> {
        let gone = |e: Error| match e.kind {
            ErrorKind::NotFound | ErrorKind::InvalidArgument => missing("snapshot", id),
            _ => e,
        };
        match r {
            SnapshotRef::Member { group, csp_id } => {
                let snap = self
                    .get_snapshot_by_id(csp_id, backend)
                    .await
                    .map_err(gone)?;
                if &snap.name != group {
                    return Err(missing("snapshot", id));
                }
                Ok(snap)
            }
            SnapshotRef::Name(name) => self.get_snapshot(name, backend).await.map_err(gone),
            SnapshotRef::Nothing => Err(missing("snapshot", id)),
        }
    }

    /// Creates the volume a request asks for, or answers the one an earlier identical
    /// request made. A clone is at least as large as its source (within the limit).
    pub async fn create_requested(&self, req: RequestedVolume, wait: Wait) -> Result<Volume> {
        check_create_options(&req.params)?;
        let mut size = req.size.resolve(
            "capacity_range.required_bytes",
            self.config.default_volume_size,
        )?;
        let limit = req.size.limit;
        let source = match &req.source {
            None => None,
            Some(RequestedSource::Snapshot(id)) => {
                let parsed = SnapshotRef::parse(id);
                let snap = self
                    .find_parsed_snapshot(id, &parsed, req.backend.as_deref())
                    .await?;
                let by = match parsed {
                    SnapshotRef::Member { csp_id, .. } => VolumeSource::SnapshotId(csp_id),
                    _ => VolumeSource::Snapshot(id.clone()),
                };
                Some((by, snap.size_bytes))
            }
            Some(RequestedSource::Volume(name)) => {
                let parent = match validate_name("id", name) {
                    Ok(()) => self.get_volume(name, req.backend.as_deref()).await,
                    Err(_) => Err(Error::not_found("")),
                };
                let parent = parent.map_err(|e| match e.kind {
                    ErrorKind::NotFound => missing("volume", name),
                    _ => e,
                })?;
                Some((VolumeSource::Volume(name.clone()), parent.size_bytes))
            }
        };
        if let Some((_, source_size)) = &source {
            if *source_size > size {
                if limit > 0 && *source_size > limit {
                    return Err(Error::new(
                        ErrorKind::OutOfRange,
                        format!("the source holds {source_size} bytes, above limit_bytes {limit}"),
                    ));
                }
                size = *source_size;
            }
        }
        let fingerprint = fingerprint(&req.params, req.source.as_ref());
        let create = CreateVolume {
            name: req.name.clone(),
            size: Some(size),
            backend: req.backend.clone(),
            description: Some(fingerprint.clone()),
            params: req.params,
            source: source.map(|(s, _)| s),
            multi_initiator: req.multi_initiator,
        };
        let volume = self.create_volume(create, wait).await?;
        if volume.description.as_deref() != Some(fingerprint.as_str()) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "volume '{}' exists with other parameters or another content source",
                    volume.name
                ),
            ));
        }
        if limit > 0 && volume.size_bytes > limit {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "volume '{}' exists with {} bytes, above limit_bytes {limit}",
                    volume.name, volume.size_bytes
                ),
            ));
        }
        Ok(volume)
    }
}

/// `fsCreateOptions` run as root on the node at the first stage; when the parameters name the
/// filesystem too, they are checked here, before anything is made, by the rule the node
/// applies ([`volbridge_proto::mkfs_args`]). Without `fsType` the filesystem is the one the
/// node is asked for at publish, and the node checks them then.
fn check_create_options(params: &BTreeMap<String, String>) -> Result<()> {
    let (Some(options), Some(fs_type)) = (params.get("fsCreateOptions"), params.get("fsType"))
    else {
        return Ok(());
    };
    let fs_type = match fs_type.trim().to_ascii_lowercase() {
        t if t.is_empty() => volbridge_proto::options::DEFAULT_FS_TYPE.to_owned(),
        t => t,
    };
    volbridge_proto::mkfs_args::check(&fs_type, options)
        .map(|_| ())
        .map_err(|why| Error::invalid("fsCreateOptions", why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_references() {
        assert_eq!(
            SnapshotRef::parse("nightly"),
            SnapshotRef::Name("nightly".into())
        );
        assert_eq!(
            SnapshotRef::parse("grp/0a1b"),
            SnapshotRef::Member {
                group: "grp".into(),
                csp_id: "0a1b".into()
            }
        );
        for nothing in ["grp/", "/0a1b", "", "a/b/c/../x y"] {
            assert!(
                matches!(
                    SnapshotRef::parse(nothing),
                    SnapshotRef::Nothing | SnapshotRef::Member { .. }
                ),
                "{nothing}"
            );
        }
        assert_eq!(SnapshotRef::parse("grp/"), SnapshotRef::Nothing);
        assert_eq!(SnapshotRef::parse(""), SnapshotRef::Nothing);
    }

    #[test]
    fn create_options_are_checked_when_the_filesystem_is_named() {
        let params = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let e = check_create_options(&params(&[
            ("fsType", "ext4"),
            ("fsCreateOptions", "-L /etc/kubernetes"),
        ]))
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("'/' is not allowed"), "{}", e.message);
        let e = check_create_options(&params(&[("fsType", ""), ("fsCreateOptions", "-qF")]))
            .unwrap_err();
        assert!(e.message.contains("mkfs.ext4"), "{}", e.message);
        assert!(check_create_options(&params(&[
            ("fsType", "XFS"),
            ("fsCreateOptions", "-m reflink=1")
        ]))
        .is_ok());
        // Without fsType the node checks them against the filesystem it is asked for.
        assert!(check_create_options(&params(&[("fsCreateOptions", "-p x")])).is_ok());
    }

    #[test]
    fn size_ranges() {
        let mib = 1 << 20;
        let r = |required, limit| SizeRange { required, limit };
        assert_eq!(r(0, 0).resolve("f", 5 * mib).unwrap(), 5 * mib);
        assert_eq!(r(0, 2 * mib).resolve("f", 5 * mib).unwrap(), 2 * mib);
        assert_eq!(r(mib + 1, 0).resolve("f", 0).unwrap(), 2 * mib);
        let e = r(mib + 1, mib + 1).resolve("f", 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::OutOfRange);
        let e = r(i64::MAX as u64, 0).resolve("f", 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::OutOfRange);
    }

    #[test]
    fn fingerprints_cover_parameters_and_source() {
        let p = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        let plain = fingerprint(&p("a", "1"), None);
        assert_eq!(plain, fingerprint(&p("a", "1"), None));
        assert_ne!(plain, fingerprint(&p("a", "2"), None));
        assert_ne!(
            plain,
            fingerprint(&p("a", "1"), Some(&RequestedSource::Volume("v".into())))
        );
        assert!(plain.starts_with("csi-request:"));
    }
}
