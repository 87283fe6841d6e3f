//! From flags to CSI messages: key=value maps, secrets, capabilities, sizes; and the one
//! place that knows which requests carry secrets.

use super::args::{AccessModeArg, CapabilityArgs, SecretArg, TopologyArg};
use crate::engine::size::parse_size;
use crate::error::{Error, Result};
use std::collections::HashMap;
use volbridge_base::redact::{redact_all, redact_secret_entries, secret_entries, secret_values};
use volbridge_proto::csi::{self as pb, volume_capability as vc};

pub type Map = HashMap<String, String>;

/// Repeated `--flag key=value` pairs as a map; a key given twice is refused.
pub fn map(flag: &str, pairs: &[(String, String)]) -> Result<Map> {
    let mut out = Map::with_capacity(pairs.len());
    for (k, v) in pairs {
        if out.insert(k.clone(), v.clone()).is_some() {
            return Err(Error::invalid(flag, format!("key '{k}' is given twice")));
        }
    }
    Ok(out)
}

/// `--secret key=value` flags as the request's `secrets` map. No error names a value: a
/// malformed flag is identified by its position, since its text may be the secret itself.
pub fn secrets(args: &[SecretArg]) -> Result<Map> {
    let mut out = Map::with_capacity(args.len());
    for (i, SecretArg(text)) in args.iter().enumerate() {
        let n = i + 1;
        let Some((k, v)) = text.split_once('=') else {
            return Err(Error::invalid(
                "--secret",
                format!("secret #{n} is not KEY=VALUE (its text is not shown)"),
            ));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(Error::invalid(
                "--secret",
                format!("secret #{n} has an empty key; write KEY=VALUE"),
            ));
        }
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(Error::invalid(
                "--secret",
                format!("key '{k}' is given twice"),
            ));
        }
    }
    Ok(out)
}

pub fn access_mode(mode: AccessModeArg) -> vc::access_mode::Mode {
    use vc::access_mode::Mode;
    match mode {
        AccessModeArg::SingleNodeWriter => Mode::SingleNodeWriter,
        AccessModeArg::SingleNodeReaderOnly => Mode::SingleNodeReaderOnly,
        AccessModeArg::MultiNodeReaderOnly => Mode::MultiNodeReaderOnly,
        AccessModeArg::MultiNodeSingleWriter => Mode::MultiNodeSingleWriter,
        AccessModeArg::MultiNodeMultiWriter => Mode::MultiNodeMultiWriter,
        AccessModeArg::SingleNodeSingleWriter => Mode::SingleNodeSingleWriter,
        AccessModeArg::SingleNodeMultiWriter => Mode::SingleNodeMultiWriter,
    }
}

/// The capability the flags describe: block or mount, single-node-writer unless told.
pub fn capability(a: &CapabilityArgs) -> pb::VolumeCapability {
    let access_type = if a.block {
        vc::AccessType::Block(vc::BlockVolume {})
    } else {
        vc::AccessType::Mount(vc::MountVolume {
            fs_type: a.fs_type.clone().unwrap_or_default(),
            mount_flags: a.mount_flags.clone(),
            volume_mount_group: a.mount_group.clone().unwrap_or_default(),
        })
    };
    let mode = access_mode(a.access_mode.unwrap_or(AccessModeArg::SingleNodeWriter));
    pb::VolumeCapability {
        access_type: Some(access_type),
        access_mode: Some(vc::AccessMode { mode: mode as i32 }),
    }
}

/// The capability, only when some capability flag was given (for RPCs where it is optional).
pub fn optional_capability(a: &CapabilityArgs) -> Option<pb::VolumeCapability> {
    let given = a.block
        || a.fs_type.is_some()
        || !a.mount_flags.is_empty()
        || a.mount_group.is_some()
        || a.access_mode.is_some();
    given.then(|| capability(a))
}

fn size(flag: &str, text: &str) -> Result<i64> {
    // parse_size caps sizes far below i64::MAX.
    Ok(parse_size(flag, text)? as i64)
}

/// `--size` / `--limit` as a `CapacityRange`; none when neither is given. A size above the
/// limit is sent as is: judging it is the plugin's job (and worth testing).
pub fn capacity_range(
    required: Option<&str>,
    limit: Option<&str>,
) -> Result<Option<pb::CapacityRange>> {
    let required_bytes = required.map(|s| size("--size", s)).transpose()?;
    let limit_bytes = limit.map(|s| size("--limit", s)).transpose()?;
    if required_bytes.is_none() && limit_bytes.is_none() {
        return Ok(None);
    }
    Ok(Some(pb::CapacityRange {
        required_bytes: required_bytes.unwrap_or(0),
        limit_bytes: limit_bytes.unwrap_or(0),
    }))
}

pub fn content_source(
    snapshot: Option<&str>,
    volume: Option<&str>,
) -> Option<pb::VolumeContentSource> {
    use pb::volume_content_source::{SnapshotSource, Type, VolumeSource};
    let r#type = match (snapshot, volume) {
        (Some(s), _) => Type::Snapshot(SnapshotSource {
            snapshot_id: s.to_owned(),
        }),
        (None, Some(v)) => Type::Volume(VolumeSource {
            volume_id: v.to_owned(),
        }),
        (None, None) => return None,
    };
    Some(pb::VolumeContentSource {
        r#type: Some(r#type),
    })
}

pub fn topology(t: &TopologyArg) -> pb::Topology {
    pb::Topology {
        segments: t.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// Requests that may carry secrets. Every request goes through [`Secrets`] before it is
/// logged, so no RPC can be added that forgets the redaction.
pub trait Secrets: Clone {
    fn secrets_mut(&mut self) -> Option<&mut Map>;

    /// Maps that are not secrets but may hold some (the publish and volume contexts, where
    /// the CSP puts the CHAP password): their entries whose key names a secret count.
    fn contexts_mut(&mut self) -> Vec<&mut Map> {
        Vec::new()
    }

    /// The secret values, to scrub from error text.
    fn secret_values(&self) -> Vec<String> {
        let mut me = self.clone();
        let mut values: Vec<String> = me
            .secrets_mut()
            .map(|m| secret_values(m))
            .unwrap_or_default();
        for m in me.contexts_mut() {
            values.extend(secret_entries(m));
        }
        values
    }

    /// A copy whose secret values read `<redacted>`, fit for `Debug` in a log line.
    fn redacted(&self) -> Self {
        let mut me = self.clone();
        if let Some(m) = me.secrets_mut() {
            redact_all(m);
        }
        for m in me.contexts_mut() {
            redact_secret_entries(m);
        }
        me
    }
}

macro_rules! secrets {
    (with: $($with:ident),* ; without: $($without:ident),* $(,)?) => {
        $(impl Secrets for pb::$with {
            fn secrets_mut(&mut self) -> Option<&mut Map> {
                Some(&mut self.secrets)
            }
        })*
        $(impl Secrets for pb::$without {
            fn secrets_mut(&mut self) -> Option<&mut Map> {
                None
            }
        })*
    };
}

/// The node's requests carry the publish context, with what the CSP put in it.
macro_rules! contexts {
    ($($t:ident),*) => {
        $(impl Secrets for pb::$t {
            fn secrets_mut(&mut self) -> Option<&mut Map> {
                Some(&mut self.secrets)
            }
            fn contexts_mut(&mut self) -> Vec<&mut Map> {
                vec![&mut self.publish_context, &mut self.volume_context]
            }
        })*
    };
}

contexts!(NodeStageVolumeRequest, NodePublishVolumeRequest);

secrets! {
    with: CreateVolumeRequest, DeleteVolumeRequest, ControllerPublishVolumeRequest,
        ControllerUnpublishVolumeRequest, ValidateVolumeCapabilitiesRequest,
        CreateSnapshotRequest, DeleteSnapshotRequest, ListSnapshotsRequest,
        ControllerExpandVolumeRequest, ControllerModifyVolumeRequest, NodeExpandVolumeRequest,
        CreateVolumeGroupSnapshotRequest,
        DeleteVolumeGroupSnapshotRequest, GetVolumeGroupSnapshotRequest;
    without: GetPluginInfoRequest, GetPluginCapabilitiesRequest, ProbeRequest,
        ListVolumesRequest, ControllerGetVolumeRequest, GetCapacityRequest,
        ControllerGetCapabilitiesRequest, NodeUnstageVolumeRequest, NodeUnpublishVolumeRequest,
        NodeGetVolumeStatsRequest, NodeGetCapabilitiesRequest, NodeGetInfoRequest,
        GroupControllerGetCapabilitiesRequest,
}

/// Replaces every secret value in `text` that stands as a whole token (see
/// [`crate::logging::redact_values`]).
pub fn scrub(text: &str, secrets: &[String]) -> String {
    crate::logging::redact_values(text, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `volbridge csi node-stage --publish-context chapPassword=…` logs the request at debug
    /// level: the CHAP password the CSP put in the context is redacted there as a secret is.
    #[test]
    fn node_requests_redact_secrets_in_their_contexts() {
        let req = pb::NodeStageVolumeRequest {
            volume_id: "v".into(),
            publish_context: [
                ("chapPassword".to_owned(), "s3cr3t-chap-pw".to_owned()),
                ("accessProtocol".to_owned(), "iscsi".to_owned()),
            ]
            .into(),
            secrets: [("token".to_owned(), "tok-1".to_owned())].into(),
            ..Default::default()
        };
        let shown = format!("{:?}", req.redacted());
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("tok-1"),
            "{shown}"
        );
        assert!(shown.contains("iscsi"), "{shown}");
        let mut values = req.secret_values();
        values.sort();
        assert_eq!(values, ["s3cr3t-chap-pw", "tok-1"]);
    }
}
