//! What the layer knows about each RPC before the service sees it: the required fields
//! (csi.md rule 1, checked before any state is touched) and a log line with every
//! `csi_secret` field redacted. A busy volume is the engine's to refuse (its guards).

use prost::Message;
use std::collections::HashMap;
use tonic::Status;
use volbridge_base::redact::{redact_all, redact_secret_entries, secret_entries, secret_values};
use volbridge_proto::csi as pb;

/// The request as the layer saw it.
pub struct Inspected {
    /// Short method name (`CreateVolume`).
    pub method: &'static str,
    /// The request, secrets redacted, for debug logs.
    pub summary: String,
    /// Calls that only read, polled by the CO all the time: logged at debug, not info.
    pub quiet: bool,
    /// The request's secret values, to scrub from whatever the answer says.
    pub secrets: Vec<String>,
}

/// Requests with a field marked `csi_secret`: the test checks this list against the
/// descriptor, so a new secret field cannot be forgotten.
pub trait Secrets {
    fn redact(&mut self) {}
    fn values(&self) -> Vec<String> {
        Vec::new()
    }
}

macro_rules! with_secrets {
    ($($t:ident),* $(,)?) => {
        $(impl Secrets for pb::$t {
            fn redact(&mut self) {
                redact_all(&mut self.secrets);
            }
            fn values(&self) -> Vec<String> {
                secret_values(&self.secrets)
            }
        })*
        #[cfg(test)]
        pub const WITH_SECRETS: &[&str] = &[$(stringify!($t)),*];
    };
}

macro_rules! without_secrets {
    ($($t:ident),* $(,)?) => {
        $(impl Secrets for pb::$t {})*
    };
}

/// The node's requests carry the publish context too, with the secrets the CSP put in it.
macro_rules! with_secrets_and_contexts {
    ($($t:ident),* $(,)?) => {
        $(impl Secrets for pb::$t {
            fn redact(&mut self) {
                redact_all(&mut self.secrets);
                redact_secret_entries(&mut self.publish_context);
                redact_secret_entries(&mut self.volume_context);
            }
            fn values(&self) -> Vec<String> {
                self.secrets
                    .values()
                    .filter(|v| !v.is_empty())
                    .cloned()
                    .chain(secret_entries(&self.publish_context))
                    .chain(secret_entries(&self.volume_context))
                    .collect()
            }
        })*
        #[cfg(test)]
        pub const WITH_CONTEXTS: &[&str] = &[$(stringify!($t)),*];
    };
}

with_secrets_and_contexts!(NodeStageVolumeRequest, NodePublishVolumeRequest);

with_secrets!(
    CreateVolumeRequest,
    DeleteVolumeRequest,
    ControllerPublishVolumeRequest,
    ControllerUnpublishVolumeRequest,
    ValidateVolumeCapabilitiesRequest,
    ControllerModifyVolumeRequest,
    CreateSnapshotRequest,
    DeleteSnapshotRequest,
    ListSnapshotsRequest,
    GetSnapshotRequest,
    ControllerExpandVolumeRequest,
    CreateVolumeGroupSnapshotRequest,
    DeleteVolumeGroupSnapshotRequest,
    GetVolumeGroupSnapshotRequest,
    NodeExpandVolumeRequest,
    GetMetadataAllocatedRequest,
    GetMetadataDeltaRequest,
);

without_secrets!(
    GetPluginInfoRequest,
    GetPluginCapabilitiesRequest,
    ProbeRequest,
    ListVolumesRequest,
    ControllerGetVolumeRequest,
    GetCapacityRequest,
    ControllerGetCapabilitiesRequest,
    GroupControllerGetCapabilitiesRequest,
    NodeUnstageVolumeRequest,
    NodeUnpublishVolumeRequest,
    NodeGetVolumeStatsRequest,
    NodeGetCapabilitiesRequest,
    NodeGetInfoRequest,
);

/// The status with every secret value cut out of its message, as whole tokens (see
/// [`crate::logging::redact_values`]): a backend may echo what it was sent (a user name, a
/// CHAP secret) in an error, and a short value must not garble the words around it.
pub fn scrub(status: Status, secrets: &[String]) -> Status {
    let message = crate::logging::redact_values(status.message(), secrets);
    if message == status.message() {
        return status;
    }
    Status::new(status.code(), message)
}

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    Ok(())
}

/// A capability must say block or mount, and a known access mode.
pub fn check_capability(field: &str, cap: Option<&pb::VolumeCapability>) -> Result<(), Status> {
    let cap = cap.ok_or_else(|| Status::invalid_argument(format!("{field} is required")))?;
    if cap.access_type.is_none() {
        return Err(Status::invalid_argument(format!(
            "{field}: access_type (block or mount) is required"
        )));
    }
    let mode = cap.access_mode.as_ref().map(|m| m.mode).unwrap_or(0);
    match pb::volume_capability::access_mode::Mode::try_from(mode) {
        Ok(pb::volume_capability::access_mode::Mode::Unknown) | Err(_) => {
            Err(Status::invalid_argument(format!(
                "{field}: access_mode is required and must be known"
            )))
        }
        Ok(_) => Ok(()),
    }
}

fn check_capabilities(field: &str, caps: &[pb::VolumeCapability]) -> Result<(), Status> {
    if caps.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    caps.iter()
        .try_for_each(|c| check_capability(field, Some(c)))
}

fn check_range(range: Option<&pb::CapacityRange>) -> Result<(), Status> {
    let Some(r) = range else { return Ok(()) };
    if r.required_bytes < 0 || r.limit_bytes < 0 {
        return Err(Status::invalid_argument(
            "capacity_range: bytes must not be negative",
        ));
    }
    if r.limit_bytes > 0 && r.required_bytes > r.limit_bytes {
        return Err(Status::invalid_argument(format!(
            "capacity_range: required_bytes {} exceeds limit_bytes {}",
            r.required_bytes, r.limit_bytes
        )));
    }
    Ok(())
}

fn check_entries(max_entries: i32) -> Result<(), Status> {
    if max_entries < 0 {
        return Err(Status::invalid_argument("max_entries must not be negative"));
    }
    Ok(())
}

/// SnapshotMetadata: a negative offset is OUT_OF_RANGE (the spec's error table names it
/// with offsets beyond the volume, which only the service can tell); a negative
/// `max_results` is no count at all.
fn check_window(starting_offset: i64, max_results: i32) -> Result<(), Status> {
    if starting_offset < 0 {
        return Err(Status::out_of_range(format!(
            "starting_offset {starting_offset} is negative; start from 0, or from the end of \
             the last range received"
        )));
    }
    if max_results < 0 {
        return Err(Status::invalid_argument(format!(
            "max_results {max_results} is negative; send 0 to let the plugin choose"
        )));
    }
    Ok(())
}

fn ephemeral(context: &HashMap<String, String>) -> bool {
    context.get(super::CONTEXT_EPHEMERAL).map(String::as_str) == Some("true")
}

/// Decodes the message and checks it, before the service runs.
fn look<T, F>(method: &'static str, body: &[u8], quiet: bool, check: F) -> Result<Inspected, Status>
where
    T: Message + Default + Secrets + std::fmt::Debug,
    F: FnOnce(&T) -> Result<(), Status>,
{
    let mut msg = T::decode(body)
        .map_err(|e| Status::invalid_argument(format!("malformed {method} request: {e}")))?;
    let secrets = msg.values();
    check(&msg).map_err(|s| scrub(s, &secrets))?;
    msg.redact();
    Ok(Inspected {
        method,
        summary: format!("{msg:?}"),
        quiet,
        secrets,
    })
}

/// `path` is `/csi.v1.<Service>/<Method>`; `body` the message without its gRPC frame.
/// Unknown methods pass through (tonic answers Unimplemented).
pub fn inspect(path: &str, body: &[u8]) -> Option<Result<Inspected, Status>> {
    let method = path.rsplit('/').next().unwrap_or_default();
    Some(match method {
        "GetPluginInfo" => {
            look::<pb::GetPluginInfoRequest, _>("GetPluginInfo", body, true, |_| Ok(()))
        }
        "GetPluginCapabilities" => {
            look::<pb::GetPluginCapabilitiesRequest, _>("GetPluginCapabilities", body, true, |_| {
                Ok(())
            })
        }
        "Probe" => look::<pb::ProbeRequest, _>("Probe", body, true, |_| Ok(())),
        "CreateVolume" => look::<pb::CreateVolumeRequest, _>("CreateVolume", body, false, |m| {
            required("name", &m.name)?;
            check_capabilities("volume_capabilities", &m.volume_capabilities)?;
            check_range(m.capacity_range.as_ref())?;
            Ok(())
        }),
        "DeleteVolume" => look::<pb::DeleteVolumeRequest, _>("DeleteVolume", body, false, |m| {
            required("volume_id", &m.volume_id)?;
            Ok(())
        }),
        "ControllerPublishVolume" => look::<pb::ControllerPublishVolumeRequest, _>(
            "ControllerPublishVolume",
            body,
            false,
            |m| {
                required("volume_id", &m.volume_id)?;
                required("node_id", &m.node_id)?;
                check_capability("volume_capability", m.volume_capability.as_ref())?;
                Ok(())
            },
        ),
        "ControllerUnpublishVolume" => look::<pb::ControllerUnpublishVolumeRequest, _>(
            "ControllerUnpublishVolume",
            body,
            false,
            |m| {
                required("volume_id", &m.volume_id)?;
                Ok(())
            },
        ),
        "ValidateVolumeCapabilities" => look::<pb::ValidateVolumeCapabilitiesRequest, _>(
            "ValidateVolumeCapabilities",
            body,
            true,
            |m| {
                required("volume_id", &m.volume_id)?;
                if m.volume_capabilities.is_empty() {
                    return Err(Status::invalid_argument("volume_capabilities is required"));
                }
                Ok(())
            },
        ),
        "ListVolumes" => look::<pb::ListVolumesRequest, _>("ListVolumes", body, true, |m| {
            check_entries(m.max_entries)?;
            Ok(())
        }),
        "GetCapacity" => look::<pb::GetCapacityRequest, _>("GetCapacity", body, true, |_| Ok(())),
        "ControllerGetCapabilities" => look::<pb::ControllerGetCapabilitiesRequest, _>(
            "ControllerGetCapabilities",
            body,
            true,
            |_| Ok(()),
        ),
        "CreateSnapshot" => {
            look::<pb::CreateSnapshotRequest, _>("CreateSnapshot", body, false, |m| {
                required("source_volume_id", &m.source_volume_id)?;
                required("name", &m.name)?;
                Ok(())
            })
        }
        "DeleteSnapshot" => {
            look::<pb::DeleteSnapshotRequest, _>("DeleteSnapshot", body, false, |m| {
                required("snapshot_id", &m.snapshot_id)?;
                Ok(())
            })
        }
        "ListSnapshots" => look::<pb::ListSnapshotsRequest, _>("ListSnapshots", body, true, |m| {
            check_entries(m.max_entries)?;
            Ok(())
        }),
        "GetSnapshot" => look::<pb::GetSnapshotRequest, _>("GetSnapshot", body, true, |m| {
            required("snapshot_id", &m.snapshot_id)?;
            Ok(())
        }),
        "ControllerExpandVolume" => look::<pb::ControllerExpandVolumeRequest, _>(
            "ControllerExpandVolume",
            body,
            false,
            |m| {
                required("volume_id", &m.volume_id)?;
                if m.capacity_range.is_none() {
                    return Err(Status::invalid_argument("capacity_range is required"));
                }
                check_range(m.capacity_range.as_ref())?;
                Ok(())
            },
        ),
        "ControllerGetVolume" => {
            look::<pb::ControllerGetVolumeRequest, _>("ControllerGetVolume", body, true, |m| {
                required("volume_id", &m.volume_id)?;
                Ok(())
            })
        }
        "ControllerModifyVolume" => look::<pb::ControllerModifyVolumeRequest, _>(
            "ControllerModifyVolume",
            body,
            false,
            |m| {
                // An empty `mutable_parameters` asks for no change: OK once the volume is
                // found (csi-sanity's default run sends it and expects NOT_FOUND or OK).
                required("volume_id", &m.volume_id)?;
                Ok(())
            },
        ),
        "GroupControllerGetCapabilities" => look::<pb::GroupControllerGetCapabilitiesRequest, _>(
            "GroupControllerGetCapabilities",
            body,
            true,
            |_| Ok(()),
        ),
        "CreateVolumeGroupSnapshot" => look::<pb::CreateVolumeGroupSnapshotRequest, _>(
            "CreateVolumeGroupSnapshot",
            body,
            false,
            |m| {
                required("name", &m.name)?;
                if m.source_volume_ids.is_empty()
                    || m.source_volume_ids.iter().any(String::is_empty)
                {
                    return Err(Status::invalid_argument("source_volume_ids is required"));
                }
                Ok(())
            },
        ),
        "DeleteVolumeGroupSnapshot" => look::<pb::DeleteVolumeGroupSnapshotRequest, _>(
            "DeleteVolumeGroupSnapshot",
            body,
            false,
            |m| {
                required("group_snapshot_id", &m.group_snapshot_id)?;
                Ok(())
            },
        ),
        "GetVolumeGroupSnapshot" => look::<pb::GetVolumeGroupSnapshotRequest, _>(
            "GetVolumeGroupSnapshot",
            body,
            true,
            |m| {
                required("group_snapshot_id", &m.group_snapshot_id)?;
                Ok(())
            },
        ),
        "NodeStageVolume" => {
            look::<pb::NodeStageVolumeRequest, _>("NodeStageVolume", body, false, |m| {
                required("volume_id", &m.volume_id)?;
                required("staging_target_path", &m.staging_target_path)?;
                check_capability("volume_capability", m.volume_capability.as_ref())?;
                Ok(())
            })
        }
        "NodeUnstageVolume" => {
            look::<pb::NodeUnstageVolumeRequest, _>("NodeUnstageVolume", body, false, |m| {
                required("volume_id", &m.volume_id)?;
                required("staging_target_path", &m.staging_target_path)?;
                Ok(())
            })
        }
        "NodePublishVolume" => {
            look::<pb::NodePublishVolumeRequest, _>("NodePublishVolume", body, false, |m| {
                required("volume_id", &m.volume_id)?;
                required("target_path", &m.target_path)?;
                check_capability("volume_capability", m.volume_capability.as_ref())?;
                // STAGE_UNSTAGE_VOLUME is advertised, so the CO stages first, except for an
                // ephemeral inline volume, which this call creates and stages itself.
                if !ephemeral(&m.volume_context) {
                    required("staging_target_path", &m.staging_target_path)?;
                }
                Ok(())
            })
        }
        "NodeUnpublishVolume" => {
            look::<pb::NodeUnpublishVolumeRequest, _>("NodeUnpublishVolume", body, false, |m| {
                required("volume_id", &m.volume_id)?;
                required("target_path", &m.target_path)?;
                Ok(())
            })
        }
        "NodeGetVolumeStats" => {
            look::<pb::NodeGetVolumeStatsRequest, _>("NodeGetVolumeStats", body, true, |m| {
                required("volume_id", &m.volume_id)?;
                required("volume_path", &m.volume_path)?;
                Ok(())
            })
        }
        "NodeExpandVolume" => {
            look::<pb::NodeExpandVolumeRequest, _>("NodeExpandVolume", body, false, |m| {
                required("volume_id", &m.volume_id)?;
                required("volume_path", &m.volume_path)?;
                check_range(m.capacity_range.as_ref())?;
                Ok(())
            })
        }
        "NodeGetCapabilities" => {
            look::<pb::NodeGetCapabilitiesRequest, _>("NodeGetCapabilities", body, true, |_| Ok(()))
        }
        "NodeGetInfo" => look::<pb::NodeGetInfoRequest, _>("NodeGetInfo", body, true, |_| Ok(())),
        "GetMetadataAllocated" => {
            look::<pb::GetMetadataAllocatedRequest, _>("GetMetadataAllocated", body, false, |m| {
                required("snapshot_id", &m.snapshot_id)?;
                check_window(m.starting_offset, m.max_results)?;
                Ok(())
            })
        }
        "GetMetadataDelta" => {
            look::<pb::GetMetadataDeltaRequest, _>("GetMetadataDelta", body, false, |m| {
                required("base_snapshot_id", &m.base_snapshot_id)?;
                required("target_snapshot_id", &m.target_snapshot_id)?;
                check_window(m.starting_offset, m.max_results)?;
                Ok(())
            })
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::FileDescriptorSet;
    use volbridge_base::redact::REDACTED;

    #[test]
    fn every_secret_field_is_redacted() {
        let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
        let mut with_secret: Vec<String> = Vec::new();
        for file in set.file.iter().filter(|f| f.package() == "csi.v1") {
            for msg in &file.message_type {
                // proto/tests/csi_proto.rs proves that `csi_secret` marks exactly the fields
                // named `secrets`.
                if msg.field.iter().any(|f| f.name() == "secrets") {
                    with_secret.push(msg.name().to_owned());
                }
            }
        }
        with_secret.sort();
        let mut listed: Vec<String> = WITH_SECRETS
            .iter()
            .chain(WITH_CONTEXTS)
            .map(|s| s.to_string())
            .collect();
        listed.sort();
        assert!(!with_secret.is_empty());
        assert_eq!(with_secret, listed);
    }

    #[test]
    fn secrets_are_redacted_in_the_summary() {
        let req = pb::CreateVolumeRequest {
            name: "v".into(),
            volume_capabilities: vec![pb::VolumeCapability {
                access_type: Some(pb::volume_capability::AccessType::Mount(Default::default())),
                access_mode: Some(pb::volume_capability::AccessMode { mode: 1 }),
            }],
            secrets: [("password".to_owned(), "hunter2".to_owned())].into(),
            ..Default::default()
        };
        let seen = inspect("/csi.v1.Controller/CreateVolume", &req.encode_to_vec())
            .unwrap()
            .unwrap();
        assert!(!seen.summary.contains("hunter2"), "{}", seen.summary);
        assert!(seen.summary.contains(REDACTED));
    }

    /// The CSP's CHAP password travels in the publish context (and a peer array's details
    /// in `secondaryArrayDetailsKey`): the node's requests are logged without them, and an
    /// answer that echoes them loses them.
    #[test]
    fn publish_context_secrets_are_redacted_in_node_requests() {
        let context = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let req = pb::NodeStageVolumeRequest {
            volume_id: "v".into(),
            staging_target_path: "/staging/v".into(),
            volume_capability: Some(pb::VolumeCapability {
                access_type: Some(pb::volume_capability::AccessType::Mount(Default::default())),
                access_mode: Some(pb::volume_capability::AccessMode { mode: 1 }),
            }),
            publish_context: context(&[
                ("accessProtocol", "iscsi"),
                ("chapUser", "chap-user-7"),
                ("chapPassword", "s3cr3t-chap-pw"),
                (
                    "secondaryArrayDetailsKey",
                    "{\"chap_password\":\"peer-pw-9\"}",
                ),
            ]),
            volume_context: context(&[("fsType", "ext4")]),
            ..Default::default()
        };
        let seen = inspect("/csi.v1.Node/NodeStageVolume", &req.encode_to_vec())
            .unwrap()
            .unwrap();
        for secret in ["s3cr3t-chap-pw", "peer-pw-9", "chap-user-7"] {
            assert!(!seen.summary.contains(secret), "{secret}: {}", seen.summary);
        }
        assert!(seen.summary.contains("iscsi") && seen.summary.contains("ext4"));
        assert!(seen.secrets.iter().any(|s| s == "s3cr3t-chap-pw"));
        let echoed = Status::internal("iscsiadm: login failed with s3cr3t-chap-pw");
        assert!(!scrub(echoed, &seen.secrets).message().contains("s3cr3t"));
    }

    #[test]
    fn answers_lose_short_secrets_as_tokens_and_keep_their_words() {
        let secrets: Vec<String> = ["u", "p", "1", "127.0.0.1"].map(String::from).to_vec();
        let status = Status::unavailable(
            "cannot connect to the CSP: error sending request for url \
             (https://127.0.0.1:1/csp/containers/v1/tokens); login u/p",
        );
        let scrubbed = scrub(status, &secrets);
        assert_eq!(scrubbed.code(), tonic::Code::Unavailable);
        assert_eq!(
            scrubbed.message(),
            "cannot connect to the CSP: error sending request for url \
             (https://<redacted>:<redacted>/csp/containers/v1/tokens); login \
             <redacted>/<redacted>"
        );
        let clean = Status::not_found("volume 'up1' does not exist");
        assert_eq!(
            scrub(clean, &secrets).message(),
            "volume 'up1' does not exist"
        );
    }

    #[test]
    fn missing_fields_are_invalid_argument() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "/csi.v1.Controller/CreateVolume",
                pb::CreateVolumeRequest::default().encode_to_vec(),
            ),
            (
                "/csi.v1.Controller/DeleteVolume",
                pb::DeleteVolumeRequest::default().encode_to_vec(),
            ),
            (
                "/csi.v1.Node/NodeStageVolume",
                pb::NodeStageVolumeRequest {
                    volume_id: "v".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "/csi.v1.Controller/ListVolumes",
                pb::ListVolumesRequest {
                    max_entries: -1,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "/csi.v1.Controller/GetSnapshot",
                pb::GetSnapshotRequest::default().encode_to_vec(),
            ),
            (
                "/csi.v1.Node/NodeGetVolumeStats",
                pb::NodeGetVolumeStatsRequest {
                    volume_id: "v".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "/csi.v1.SnapshotMetadata/GetMetadataAllocated",
                pb::GetMetadataAllocatedRequest::default().encode_to_vec(),
            ),
            (
                "/csi.v1.SnapshotMetadata/GetMetadataDelta",
                pb::GetMetadataDeltaRequest {
                    target_snapshot_id: "t".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "/csi.v1.SnapshotMetadata/GetMetadataDelta",
                pb::GetMetadataDeltaRequest {
                    base_snapshot_id: "b".into(),
                    target_snapshot_id: "t".into(),
                    max_results: -1,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ];
        for (path, body) in cases {
            let e = inspect(path, &body)
                .unwrap()
                .err()
                .unwrap_or_else(|| panic!("{path}"));
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{path}");
        }
        let negative = pb::GetMetadataAllocatedRequest {
            snapshot_id: "s".into(),
            starting_offset: -1,
            ..Default::default()
        };
        let e = inspect(
            "/csi.v1.SnapshotMetadata/GetMetadataAllocated",
            &negative.encode_to_vec(),
        )
        .unwrap()
        .err()
        .unwrap();
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        assert!(inspect("/csi.v1.Controller/NoSuchMethod", &[]).is_none());
        let garbage = inspect("/csi.v1.Controller/DeleteVolume", &[0xff, 0xff]).unwrap();
        assert_eq!(garbage.err().unwrap().code(), tonic::Code::InvalidArgument);
    }
}
