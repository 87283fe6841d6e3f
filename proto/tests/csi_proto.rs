//! Wire facts of `proto/csi.proto` (CSI v1.12.0), checked through the generated types and
//! through the encoded descriptor that the build embeds (`csi::FILE_DESCRIPTOR_SET`).

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use volbridge_proto::csi;

// ---------------------------------------------------------------------------
// Descriptor helpers
// ---------------------------------------------------------------------------

fn file() -> FileDescriptorProto {
    let set = FileDescriptorSet::decode(csi::FILE_DESCRIPTOR_SET).expect("descriptor decodes");
    assert_eq!(set.file.len(), 1, "only csi.proto is embedded");
    set.file.into_iter().next().unwrap()
}

/// A message by dotted path inside the package, e.g. `ListVolumesResponse.VolumeStatus`.
fn message<'a>(file: &'a FileDescriptorProto, path: &str) -> &'a DescriptorProto {
    let mut parts = path.split('.');
    let first = parts.next().unwrap();
    let mut msg = file
        .message_type
        .iter()
        .find(|m| m.name() == first)
        .unwrap_or_else(|| panic!("no message {first}"));
    for part in parts {
        msg = msg
            .nested_type
            .iter()
            .find(|m| m.name() == part)
            .unwrap_or_else(|| panic!("no message {path}"));
    }
    msg
}

fn field<'a>(file: &'a FileDescriptorProto, msg: &str, name: &str) -> &'a FieldDescriptorProto {
    message(file, msg)
        .field
        .iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("no field {msg}.{name}"))
}

// prost-types drops unknown fields, and the custom options are extensions, i.e. unknown
// fields of the google.protobuf.*Options messages. These mirrors of the descriptor messages
// read just what the checks need, the extensions included, from the same bytes.

#[derive(Clone, PartialEq, Message)]
struct RawSet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<RawFile>,
}

#[derive(Clone, PartialEq, Message)]
struct RawFile {
    #[prost(message, repeated, tag = "4")]
    message_type: Vec<RawMessage>,
    #[prost(message, repeated, tag = "5")]
    enum_type: Vec<RawEnum>,
    #[prost(message, repeated, tag = "6")]
    service: Vec<RawService>,
}

#[derive(Clone, PartialEq, Message)]
struct RawMessage {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    field: Vec<RawField>,
    #[prost(message, repeated, tag = "3")]
    nested_type: Vec<RawMessage>,
    #[prost(message, repeated, tag = "4")]
    enum_type: Vec<RawEnum>,
    #[prost(message, optional, tag = "7")]
    options: Option<Alpha>,
}

#[derive(Clone, PartialEq, Message)]
struct RawField {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "8")]
    options: Option<RawFieldOptions>,
}

#[derive(Clone, PartialEq, Message)]
struct RawFieldOptions {
    #[prost(bool, optional, tag = "1059")]
    csi_secret: Option<bool>,
    #[prost(bool, optional, tag = "1060")]
    alpha_field: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct RawEnum {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    value: Vec<RawEnumValue>,
}

#[derive(Clone, PartialEq, Message)]
struct RawEnumValue {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "3")]
    options: Option<Alpha>,
}

#[derive(Clone, PartialEq, Message)]
struct RawService {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    method: Vec<RawMethod>,
    #[prost(message, optional, tag = "3")]
    options: Option<Alpha>,
}

#[derive(Clone, PartialEq, Message)]
struct RawMethod {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "4")]
    options: Option<Alpha>,
}

/// Any `*Options` message, read for its `alpha_*` extension (1060 on every options type).
#[derive(Clone, PartialEq, Message)]
struct Alpha {
    #[prost(bool, optional, tag = "1060")]
    alpha: Option<bool>,
}

fn raw() -> RawFile {
    let set = RawSet::decode(csi::FILE_DESCRIPTOR_SET).expect("descriptor decodes");
    set.file.into_iter().next().unwrap()
}

fn is_alpha(options: &Option<Alpha>) -> bool {
    options.as_ref().and_then(|o| o.alpha) == Some(true)
}

/// Every field of every message (nested ones included) as (`Message.Path`, field).
fn all_fields(raw: &RawFile) -> Vec<(String, RawField)> {
    fn walk(prefix: &str, msg: &RawMessage, out: &mut Vec<(String, RawField)>) {
        let path = if prefix.is_empty() {
            msg.name.clone()
        } else {
            format!("{prefix}.{}", msg.name)
        };
        for f in &msg.field {
            out.push((path.clone(), f.clone()));
        }
        for nested in &msg.nested_type {
            walk(&path, nested, out);
        }
    }
    let mut out = Vec::new();
    for msg in &raw.message_type {
        walk("", msg, &mut out);
    }
    out
}

fn raw_message<'a>(raw: &'a RawFile, path: &str) -> &'a RawMessage {
    let mut parts = path.split('.');
    let first = parts.next().unwrap();
    let mut msg = raw.message_type.iter().find(|m| m.name == first).unwrap();
    for part in parts {
        msg = msg.nested_type.iter().find(|m| m.name == part).unwrap();
    }
    msg
}

// ---------------------------------------------------------------------------
// File-level facts
// ---------------------------------------------------------------------------

#[test]
fn package_imports_and_go_package() {
    let f = file();
    assert_eq!(f.name(), "csi.proto");
    assert_eq!(f.package(), "csi.v1");
    assert_eq!(f.syntax(), "proto3");
    assert_eq!(
        f.dependency,
        [
            "google/protobuf/descriptor.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/wrappers.proto"
        ]
    );
    assert_eq!(
        f.options.as_ref().unwrap().go_package(),
        "github.com/container-storage-interface/spec/lib/go/csi"
    );
}

#[test]
fn custom_option_extensions() {
    let f = file();
    let mut ext: Vec<(String, String, i32)> = f
        .extension
        .iter()
        .map(|e| {
            assert_eq!(e.r#type(), Type::Bool, "{} is a bool", e.name());
            (e.name().to_string(), e.extendee().to_string(), e.number())
        })
        .collect();
    ext.sort();
    let want = [
        ("alpha_enum", ".google.protobuf.EnumOptions", 1060),
        (
            "alpha_enum_value",
            ".google.protobuf.EnumValueOptions",
            1060,
        ),
        ("alpha_field", ".google.protobuf.FieldOptions", 1060),
        ("alpha_message", ".google.protobuf.MessageOptions", 1060),
        ("alpha_method", ".google.protobuf.MethodOptions", 1060),
        ("alpha_service", ".google.protobuf.ServiceOptions", 1060),
        ("csi_secret", ".google.protobuf.FieldOptions", 1059),
    ];
    let want: Vec<(String, String, i32)> = want
        .iter()
        .map(|(n, e, num)| (n.to_string(), e.to_string(), *num))
        .collect();
    assert_eq!(ext, want);
}

// ---------------------------------------------------------------------------
// Services and methods
// ---------------------------------------------------------------------------

#[test]
fn services_and_methods() {
    let f = file();
    let services: Vec<&str> = f.service.iter().map(|s| s.name()).collect();
    assert_eq!(
        services,
        [
            "Identity",
            "Controller",
            "GroupController",
            "SnapshotMetadata",
            "Node"
        ]
    );
    let methods = |svc: &str| -> Vec<(String, String, String, bool)> {
        f.service
            .iter()
            .find(|s| s.name() == svc)
            .unwrap()
            .method
            .iter()
            .map(|m| {
                (
                    m.name().to_string(),
                    m.input_type().to_string(),
                    m.output_type().to_string(),
                    m.server_streaming(),
                )
            })
            .collect()
    };
    let unary = |names: &[&str]| -> Vec<(String, String, String, bool)> {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    format!(".csi.v1.{n}Request"),
                    format!(".csi.v1.{n}Response"),
                    false,
                )
            })
            .collect()
    };
    assert_eq!(
        methods("Identity"),
        unary(&["GetPluginInfo", "GetPluginCapabilities", "Probe"])
    );
    assert_eq!(
        methods("Controller"),
        unary(&[
            "CreateVolume",
            "DeleteVolume",
            "ControllerPublishVolume",
            "ControllerUnpublishVolume",
            "ValidateVolumeCapabilities",
            "ListVolumes",
            "GetCapacity",
            "ControllerGetCapabilities",
            "CreateSnapshot",
            "DeleteSnapshot",
            "ListSnapshots",
            "GetSnapshot",
            "ControllerExpandVolume",
            "ControllerGetVolume",
            "ControllerModifyVolume",
        ])
    );
    assert_eq!(
        methods("GroupController"),
        unary(&[
            "GroupControllerGetCapabilities",
            "CreateVolumeGroupSnapshot",
            "DeleteVolumeGroupSnapshot",
            "GetVolumeGroupSnapshot",
        ])
    );
    assert_eq!(
        methods("Node"),
        unary(&[
            "NodeStageVolume",
            "NodeUnstageVolume",
            "NodePublishVolume",
            "NodeUnpublishVolume",
            "NodeGetVolumeStats",
            "NodeExpandVolume",
            "NodeGetCapabilities",
            "NodeGetInfo",
        ])
    );
    let streaming: Vec<(String, String, String, bool)> =
        unary(&["GetMetadataAllocated", "GetMetadataDelta"])
            .into_iter()
            .map(|(n, i, o, _)| (n, i, o, true))
            .collect();
    assert_eq!(methods("SnapshotMetadata"), streaming);
}

#[test]
fn alpha_markers_on_services_and_methods() {
    let raw = raw();
    let svc = |name: &str| raw.service.iter().find(|s| s.name == name).unwrap();
    // The group controller is GA since v1.11; SnapshotMetadata is still alpha in v1.12.
    for name in ["Identity", "Controller", "GroupController", "Node"] {
        assert!(!is_alpha(&svc(name).options), "{name} is GA");
    }
    assert!(is_alpha(&svc("SnapshotMetadata").options));

    let alpha_methods: Vec<String> = raw
        .service
        .iter()
        .flat_map(|s| {
            s.method
                .iter()
                .filter(|m| is_alpha(&m.options))
                .map(move |m| format!("{}.{}", s.name, m.name))
        })
        .collect();
    assert_eq!(
        alpha_methods,
        ["Controller.GetSnapshot", "Controller.ControllerGetVolume"]
    );
    let mut alpha_messages: Vec<&str> = raw
        .message_type
        .iter()
        .filter(|m| is_alpha(&m.options))
        .map(|m| m.name.as_str())
        .collect();
    alpha_messages.sort();
    assert_eq!(
        alpha_messages,
        [
            "ControllerGetVolumeRequest",
            "ControllerGetVolumeResponse",
            "GetSnapshotRequest",
            "GetSnapshotResponse",
            "VolumeCondition",
        ]
    );
    assert!(!is_alpha(&raw_message(&raw, "VolumeGroupSnapshot").options));
    assert!(!is_alpha(
        &raw_message(&raw, "ControllerModifyVolumeRequest").options
    ));
    assert!(is_alpha(&raw_message(&raw, "VolumeCondition").options));
    assert!(!is_alpha(&raw_message(&raw, "CreateVolumeRequest").options));
}

// ---------------------------------------------------------------------------
// Fields
// ---------------------------------------------------------------------------

#[test]
fn field_numbers_and_types() {
    let f = file();
    let num = |msg: &str, name: &str| field(&f, msg, name).number();

    assert_eq!(num("CreateVolumeRequest", "mutable_parameters"), 8);
    assert_eq!(num("CreateVolumeRequest", "secrets"), 5);
    assert_eq!(num("CreateVolumeRequest", "accessibility_requirements"), 7);
    assert_eq!(
        num("ValidateVolumeCapabilitiesRequest", "mutable_parameters"),
        6
    );
    assert_eq!(
        num(
            "ValidateVolumeCapabilitiesResponse.Confirmed",
            "mutable_parameters"
        ),
        4
    );
    assert_eq!(
        num("ControllerModifyVolumeRequest", "mutable_parameters"),
        3
    );
    assert_eq!(num("NodeStageVolumeRequest", "secrets"), 5);
    assert_eq!(num("NodeStageVolumeRequest", "staging_target_path"), 3);
    assert_eq!(num("NodePublishVolumeRequest", "secrets"), 7);
    assert_eq!(num("NodePublishVolumeRequest", "target_path"), 4);
    assert_eq!(num("NodeExpandVolumeRequest", "secrets"), 6);
    assert_eq!(num("Snapshot", "group_snapshot_id"), 6);
    assert_eq!(num("VolumeGroupSnapshot", "ready_to_use"), 4);
    assert_eq!(num("NodeGetVolumeStatsResponse", "volume_condition"), 2);
    assert_eq!(
        num("ListVolumesResponse.VolumeStatus", "volume_condition"),
        2
    );
    assert_eq!(num("VolumeCapability.MountVolume", "volume_mount_group"), 3);
    assert_eq!(num("GetMetadataDeltaRequest", "secrets"), 5);
    assert_eq!(num("GetSnapshotRequest", "snapshot_id"), 1);
    assert_eq!(num("GetSnapshotRequest", "secrets"), 2);
    assert_eq!(num("GetSnapshotResponse", "snapshot"), 1);
    assert_eq!(
        field(&f, "GetSnapshotResponse", "snapshot").type_name(),
        ".csi.v1.Snapshot"
    );

    let max = field(&f, "GetCapacityResponse", "maximum_volume_size");
    let min = field(&f, "GetCapacityResponse", "minimum_volume_size");
    assert_eq!((max.number(), min.number()), (2, 3));
    assert_eq!(max.type_name(), ".google.protobuf.Int64Value");
    assert_eq!(min.type_name(), ".google.protobuf.Int64Value");
    assert_eq!(
        field(&f, "ProbeResponse", "ready").type_name(),
        ".google.protobuf.BoolValue"
    );
    assert_eq!(
        field(&f, "Snapshot", "creation_time").type_name(),
        ".google.protobuf.Timestamp"
    );
    assert_eq!(
        field(&f, "ListVolumesRequest", "max_entries").r#type(),
        Type::Int32
    );
    assert_eq!(
        field(&f, "NodeGetInfoResponse", "max_volumes_per_node").r#type(),
        Type::Int64
    );
    let ids = field(&f, "CreateVolumeGroupSnapshotRequest", "source_volume_ids");
    assert_eq!((ids.r#type(), ids.label()), (Type::String, Label::Repeated));
}

#[test]
fn secrets_carry_csi_secret_and_nothing_else_does() {
    let raw = raw();
    let fields = all_fields(&raw);
    let mut marked: Vec<String> = Vec::new();
    for (msg, f) in &fields {
        let secret = f.options.as_ref().and_then(|o| o.csi_secret) == Some(true);
        if f.name == "secrets" {
            assert!(secret, "{msg}.secrets lacks csi_secret");
        }
        if secret {
            marked.push(format!("{msg}.{}", f.name));
        }
    }
    marked.sort();
    let mut want = vec![
        "ControllerExpandVolumeRequest.secrets",
        "ControllerModifyVolumeRequest.secrets",
        "ControllerPublishVolumeRequest.secrets",
        "ControllerUnpublishVolumeRequest.secrets",
        "CreateSnapshotRequest.secrets",
        "CreateVolumeGroupSnapshotRequest.secrets",
        "CreateVolumeRequest.secrets",
        "DeleteSnapshotRequest.secrets",
        "DeleteVolumeGroupSnapshotRequest.secrets",
        "DeleteVolumeRequest.secrets",
        "GetMetadataAllocatedRequest.secrets",
        "GetMetadataDeltaRequest.secrets",
        "GetSnapshotRequest.secrets",
        "GetVolumeGroupSnapshotRequest.secrets",
        "ListSnapshotsRequest.secrets",
        "NodeExpandVolumeRequest.secrets",
        "NodePublishVolumeRequest.secrets",
        "NodeStageVolumeRequest.secrets",
        "ValidateVolumeCapabilitiesRequest.secrets",
    ];
    want.sort();
    assert_eq!(marked, want);
}

#[test]
fn alpha_fields() {
    let raw = raw();
    let mut alpha: Vec<String> = all_fields(&raw)
        .into_iter()
        .filter(|(_, f)| f.options.as_ref().and_then(|o| o.alpha_field) == Some(true))
        .map(|(msg, f)| format!("{msg}.{}", f.name))
        .collect();
    alpha.sort();
    assert_eq!(
        alpha,
        [
            "GetCapacityResponse.minimum_volume_size",
            "ListVolumesResponse.VolumeStatus.volume_condition",
            "NodeExpandVolumeRequest.secrets",
            "NodeGetVolumeStatsResponse.volume_condition",
        ]
    );
}

// ---------------------------------------------------------------------------
// Enums
// ---------------------------------------------------------------------------

#[test]
fn capability_enum_values() {
    use csi::controller_service_capability::rpc::Type as Ctrl;
    use csi::node_service_capability::rpc::Type as NodeCap;
    use csi::plugin_capability::service::Type as Plugin;
    use csi::volume_capability::access_mode::Mode;

    assert_eq!(Plugin::ControllerService as i32, 1);
    assert_eq!(Plugin::VolumeAccessibilityConstraints as i32, 2);
    assert_eq!(Plugin::GroupControllerService as i32, 3);
    assert_eq!(Plugin::SnapshotMetadataService as i32, 4);
    assert_eq!(
        csi::plugin_capability::volume_expansion::Type::Online as i32,
        1
    );
    assert_eq!(
        csi::plugin_capability::volume_expansion::Type::Offline as i32,
        2
    );

    let ctrl = [
        (Ctrl::CreateDeleteVolume, 1, "CREATE_DELETE_VOLUME"),
        (Ctrl::PublishUnpublishVolume, 2, "PUBLISH_UNPUBLISH_VOLUME"),
        (Ctrl::ListVolumes, 3, "LIST_VOLUMES"),
        (Ctrl::GetCapacity, 4, "GET_CAPACITY"),
        (Ctrl::CreateDeleteSnapshot, 5, "CREATE_DELETE_SNAPSHOT"),
        (Ctrl::ListSnapshots, 6, "LIST_SNAPSHOTS"),
        (Ctrl::CloneVolume, 7, "CLONE_VOLUME"),
        (Ctrl::PublishReadonly, 8, "PUBLISH_READONLY"),
        (Ctrl::ExpandVolume, 9, "EXPAND_VOLUME"),
        (
            Ctrl::ListVolumesPublishedNodes,
            10,
            "LIST_VOLUMES_PUBLISHED_NODES",
        ),
        (Ctrl::VolumeCondition, 11, "VOLUME_CONDITION"),
        (Ctrl::GetVolume, 12, "GET_VOLUME"),
        (Ctrl::SingleNodeMultiWriter, 13, "SINGLE_NODE_MULTI_WRITER"),
        (Ctrl::ModifyVolume, 14, "MODIFY_VOLUME"),
        (Ctrl::GetSnapshot, 15, "GET_SNAPSHOT"),
    ];
    for (v, n, name) in ctrl {
        assert_eq!((v as i32, v.as_str_name()), (n, name));
    }
    // Nothing past GET_SNAPSHOT exists in v1.12: a v1.12 client rejects unknown values.
    assert!(Ctrl::try_from(16).is_err());

    let node = [
        (NodeCap::StageUnstageVolume, 1),
        (NodeCap::GetVolumeStats, 2),
        (NodeCap::ExpandVolume, 3),
        (NodeCap::VolumeCondition, 4),
        (NodeCap::SingleNodeMultiWriter, 5),
        (NodeCap::VolumeMountGroup, 6),
    ];
    for (v, n) in node {
        assert_eq!(v as i32, n);
    }
    assert!(NodeCap::try_from(7).is_err());

    assert_eq!(Mode::MultiNodeMultiWriter as i32, 5);
    assert_eq!(Mode::SingleNodeSingleWriter as i32, 6);
    assert_eq!(Mode::SingleNodeMultiWriter as i32, 7);
    assert_eq!(
        csi::group_controller_service_capability::rpc::Type::CreateDeleteGetVolumeGroupSnapshot
            as i32,
        1
    );
    assert_eq!(csi::volume_usage::Unit::Inodes as i32, 2);
    assert_eq!(csi::BlockMetadataType::VariableLength as i32, 2);
}

#[test]
fn alpha_enum_values() {
    let raw = raw();
    fn walk(prefix: &str, msg: &RawMessage, out: &mut Vec<String>) {
        let path = format!("{prefix}{}", msg.name);
        for e in &msg.enum_type {
            for v in e.value.iter().filter(|v| is_alpha(&v.options)) {
                out.push(format!("{path}.{}.{}", e.name, v.name));
            }
        }
        for nested in &msg.nested_type {
            walk(&format!("{path}."), nested, out);
        }
    }
    let mut alpha = Vec::new();
    for msg in &raw.message_type {
        walk("", msg, &mut alpha);
    }
    assert!(raw
        .enum_type
        .iter()
        .all(|e| e.value.iter().all(|v| !is_alpha(&v.options))));
    alpha.sort();
    assert_eq!(
        alpha,
        [
            "ControllerServiceCapability.RPC.Type.GET_SNAPSHOT",
            "ControllerServiceCapability.RPC.Type.GET_VOLUME",
            "ControllerServiceCapability.RPC.Type.SINGLE_NODE_MULTI_WRITER",
            "ControllerServiceCapability.RPC.Type.VOLUME_CONDITION",
            "NodeServiceCapability.RPC.Type.SINGLE_NODE_MULTI_WRITER",
            "NodeServiceCapability.RPC.Type.VOLUME_CONDITION",
            "PluginCapability.Service.Type.SNAPSHOT_METADATA_SERVICE",
            "VolumeCapability.AccessMode.Mode.SINGLE_NODE_MULTI_WRITER",
            "VolumeCapability.AccessMode.Mode.SINGLE_NODE_SINGLE_WRITER",
        ]
    );
}

// ---------------------------------------------------------------------------
// Encoding through the generated types
// ---------------------------------------------------------------------------

#[test]
fn generated_types_encode_with_spec_tags() {
    // Field 6, wire type 2 (length-delimited): tag byte 0x32.
    let snap = csi::Snapshot {
        group_snapshot_id: "g".into(),
        ..Default::default()
    };
    assert_eq!(snap.encode_to_vec(), [0x32, 1, b'g']);

    // Map entry of field 8 (0x42) holding key "k" (0x0a) and value "v" (0x12).
    let mut req = csi::CreateVolumeRequest::default();
    req.mutable_parameters.insert("k".into(), "v".into());
    assert_eq!(req.encode_to_vec(), [0x42, 6, 0x0a, 1, b'k', 0x12, 1, b'v']);

    // Secrets of NodeStageVolumeRequest are field 5 (0x2a).
    let mut stage = csi::NodeStageVolumeRequest::default();
    stage.secrets.insert("k".into(), "v".into());
    assert_eq!(stage.encode_to_vec()[0], 0x2a);

    // Int64Value and BoolValue wrappers map to Option<i64> / Option<bool>.
    let cap = csi::GetCapacityResponse {
        available_capacity: 1,
        maximum_volume_size: Some(2),
        minimum_volume_size: Some(0),
    };
    let back = csi::GetCapacityResponse::decode(cap.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back, cap);
    let probe = csi::ProbeResponse { ready: Some(false) };
    assert_eq!(probe.encode_to_vec(), [0x0a, 0]);
}

// ---------------------------------------------------------------------------
// Server and client code, end to end over loopback
// ---------------------------------------------------------------------------

struct TestIdentity;

#[tonic::async_trait]
impl csi::identity_server::Identity for TestIdentity {
    async fn get_plugin_info(
        &self,
        _req: tonic::Request<csi::GetPluginInfoRequest>,
    ) -> Result<tonic::Response<csi::GetPluginInfoResponse>, tonic::Status> {
        Ok(tonic::Response::new(csi::GetPluginInfoResponse {
            name: "csi.volbridge.io".into(),
            vendor_version: "test".into(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _req: tonic::Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<tonic::Response<csi::GetPluginCapabilitiesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }

    async fn probe(
        &self,
        _req: tonic::Request<csi::ProbeRequest>,
    ) -> Result<tonic::Response<csi::ProbeResponse>, tonic::Status> {
        Ok(tonic::Response::new(csi::ProbeResponse {
            ready: Some(true),
        }))
    }
}

#[tokio::test]
async fn identity_round_trip_over_loopback() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(csi::identity_server::IdentityServer::new(TestIdentity))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            }),
    );

    let mut client = csi::identity_client::IdentityClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let info = client
        .get_plugin_info(csi::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "csi.volbridge.io");
    let ready = client
        .probe(csi::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ready.ready, Some(true));
    let err = client
        .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    // The other services' server wrappers and clients exist with the expected names.
    let _ = std::any::type_name::<csi::controller_server::ControllerServer<()>>();
    let _ = std::any::type_name::<csi::group_controller_server::GroupControllerServer<()>>();
    let _ = std::any::type_name::<csi::node_server::NodeServer<()>>();
    let _ = std::any::type_name::<csi::snapshot_metadata_server::SnapshotMetadataServer<()>>();
    let _ = std::any::type_name::<
        csi::controller_client::ControllerClient<tonic::transport::Channel>,
    >();
    let _ = std::any::type_name::<csi::node_client::NodeClient<tonic::transport::Channel>>();
    let _ = std::any::type_name::<
        csi::group_controller_client::GroupControllerClient<tonic::transport::Channel>,
    >();

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
