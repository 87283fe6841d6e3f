//! Flags to requests, replies to JSON, errors to kinds, and secrets kept out of sight.

use super::args::{parse_kv, parse_topology, ControllerCommand, CsiCommand, NodeCommand};
use super::call::status_error;
use super::convert::{self, scrub, Secrets};
use super::{controller, node, CsiArgs};
use crate::cli::args::Command;
use crate::cli::Cli;
use crate::error::ErrorKind;
use clap::Parser;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use volbridge_proto::csi as pb;
use volbridge_proto::csi::volume_capability::{access_mode::Mode, AccessType};

const SECRET: &str = "hunter2-very-secret";

fn try_parse(args: &[&str]) -> Result<CsiArgs, clap::Error> {
    let argv = ["volbridge", "csi", "--endpoint", "unix:///tmp/none.sock"]
        .into_iter()
        .chain(args.iter().copied());
    match Cli::try_parse_from(argv)?.command {
        Command::Csi(a) => Ok(a),
        other => panic!("not a csi command: {other:?}"),
    }
}

fn parse(args: &[&str]) -> CsiArgs {
    try_parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn create(args: &[&str]) -> pb::CreateVolumeRequest {
    let mut argv = vec!["controller", "create"];
    argv.extend_from_slice(args);
    match parse(&argv).command {
        CsiCommand::Controller {
            command: ControllerCommand::Create(a),
        } => controller::create_request(&a).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn create_err(args: &[&str]) -> crate::Error {
    let mut argv = vec!["controller", "create"];
    argv.extend_from_slice(args);
    match parse(&argv).command {
        CsiCommand::Controller {
            command: ControllerCommand::Create(a),
        } => controller::create_request(&a).unwrap_err(),
        other => panic!("{other:?}"),
    }
}

fn mode_of(c: &pb::VolumeCapability) -> Mode {
    Mode::try_from(c.access_mode.unwrap().mode).unwrap()
}

#[test]
fn key_value_flags() {
    assert_eq!(parse_kv("a=b").unwrap(), ("a".into(), "b".into()));
    assert_eq!(parse_kv(" a =b=c").unwrap(), ("a".into(), "b=c".into()));
    assert_eq!(parse_kv("a=").unwrap(), ("a".into(), String::new()));
    assert!(parse_kv("novalue").unwrap_err().contains("KEY=VALUE"));
    assert!(parse_kv("=v").unwrap_err().contains("empty key"));
    assert!(parse_kv(" =v").is_err());

    // Through clap: a malformed pair is a usage error.
    assert!(try_parse(&["controller", "create", "v", "--param", "x"]).is_err());
    // Twice the same key is refused when the request is built.
    let e = create_err(&["v", "--param", "a=1", "--param", "a=2"]);
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(
        e.message.contains("--param") && e.message.contains("'a'"),
        "{e}"
    );

    let t = parse_topology("zone=a, rack=r1").unwrap();
    assert_eq!(t.0.len(), 2);
    assert_eq!(t.0["rack"], "r1");
    assert!(parse_topology("zone=a,zone=b").is_err());
    assert!(parse_topology("").is_err());
    assert!(parse_topology("zone=a,").is_err());
}

#[test]
fn default_capability_is_mount_single_node_writer() {
    let r = create(&["v1"]);
    assert_eq!(r.name, "v1");
    assert_eq!(r.capacity_range, None);
    assert_eq!(r.volume_capabilities.len(), 1);
    let c = &r.volume_capabilities[0];
    assert_eq!(mode_of(c), Mode::SingleNodeWriter);
    match &c.access_type {
        Some(AccessType::Mount(m)) => {
            assert_eq!(m.fs_type, "");
            assert!(m.mount_flags.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(r.secrets.is_empty() && r.parameters.is_empty());
    assert_eq!(r.volume_content_source, None);
    assert_eq!(r.accessibility_requirements, None);
}

#[test]
fn capability_flags() {
    let r = create(&[
        "v1",
        "--fs-type",
        "xfs",
        "--mount-flag",
        "noatime",
        "--mount-flag",
        "discard",
        "--mount-group",
        "1000",
        "--access-mode",
        "multi-node-reader-only",
    ]);
    let c = &r.volume_capabilities[0];
    assert_eq!(mode_of(c), Mode::MultiNodeReaderOnly);
    match &c.access_type {
        Some(AccessType::Mount(m)) => {
            assert_eq!(m.fs_type, "xfs");
            assert_eq!(m.mount_flags, ["noatime", "discard"]);
            assert_eq!(m.volume_mount_group, "1000");
        }
        other => panic!("{other:?}"),
    }

    let r = create(&["v1", "--block"]);
    assert!(matches!(
        r.volume_capabilities[0].access_type,
        Some(AccessType::Block(_))
    ));
    // Block and filesystem flags exclude each other.
    assert!(try_parse(&["controller", "create", "v", "--block", "--fs-type", "ext4"]).is_err());
    assert!(try_parse(&["controller", "create", "v", "--block", "--mount-flag", "ro"]).is_err());
}

#[test]
fn access_mode_names() {
    let names = [
        ("single-node-writer", Mode::SingleNodeWriter),
        ("single-node-reader-only", Mode::SingleNodeReaderOnly),
        ("multi-node-reader-only", Mode::MultiNodeReaderOnly),
        ("multi-node-single-writer", Mode::MultiNodeSingleWriter),
        ("multi-node-multi-writer", Mode::MultiNodeMultiWriter),
        ("single-node-single-writer", Mode::SingleNodeSingleWriter),
        ("single-node-multi-writer", Mode::SingleNodeMultiWriter),
    ];
    for (name, mode) in names {
        let r = create(&["v", "--access-mode", name]);
        assert_eq!(mode_of(&r.volume_capabilities[0]), mode, "{name}");
        // The proto spelling works too.
        let r = create(&["v", "--access-mode", mode.as_str_name()]);
        assert_eq!(mode_of(&r.volume_capabilities[0]), mode, "{name}");
    }
    assert!(try_parse(&["controller", "create", "v", "--access-mode", "rwx"]).is_err());
}

#[test]
fn create_sizes_sources_topology() {
    let r = create(&["v", "--size", "1Gi", "--limit", "2Gi"]);
    assert_eq!(
        r.capacity_range,
        Some(pb::CapacityRange {
            required_bytes: 1 << 30,
            limit_bytes: 2 << 30,
        })
    );
    let r = create(&["v", "--limit", "500Mi"]);
    assert_eq!(
        r.capacity_range,
        Some(pb::CapacityRange {
            required_bytes: 0,
            limit_bytes: 500 << 20,
        })
    );
    // Sent as is: the plugin must refuse it, and one may want to check that it does.
    let r = create(&["v", "--size", "2Gi", "--limit", "1Gi"]);
    assert_eq!(r.capacity_range.unwrap().required_bytes, 2 << 30);
    let e = create_err(&["v", "--size", "lots"]);
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.starts_with("--size"), "{e}");

    use pb::volume_content_source::Type;
    let r = create(&["v", "--from-snapshot", "s1"]);
    assert!(matches!(
        r.volume_content_source.unwrap().r#type,
        Some(Type::Snapshot(s)) if s.snapshot_id == "s1"
    ));
    let r = create(&["v", "--from-volume", "v0"]);
    assert!(matches!(
        r.volume_content_source.unwrap().r#type,
        Some(Type::Volume(v)) if v.volume_id == "v0"
    ));
    assert!(try_parse(&[
        "controller",
        "create",
        "v",
        "--from-snapshot",
        "s",
        "--from-volume",
        "v0"
    ])
    .is_err());

    let r = create(&[
        "v",
        "--requisite-topology",
        "zone=a,rack=1",
        "--requisite-topology",
        "zone=b",
        "--preferred-topology",
        "zone=b",
        "--param",
        "csi.storage.k8s.io/fstype=ext4",
        "--mutable-param",
        "iops=100",
    ]);
    let t = r.accessibility_requirements.unwrap();
    assert_eq!(t.requisite.len(), 2);
    assert_eq!(t.requisite[0].segments["rack"], "1");
    assert_eq!(t.preferred[0].segments["zone"], "b");
    assert_eq!(r.parameters["csi.storage.k8s.io/fstype"], "ext4");
    assert_eq!(r.mutable_parameters["iops"], "100");
}

#[test]
fn other_requests() {
    let a = parse(&[
        "controller",
        "publish",
        "v1",
        "--node-id",
        "n1",
        "--read-only",
        "--block",
        "--access-mode",
        "multi-node-reader-only",
        "--volume-context",
        "k=v",
    ]);
    let CsiCommand::Controller {
        command: ControllerCommand::Publish(p),
    } = a.command
    else {
        panic!()
    };
    let r = controller::publish_request(&p).unwrap();
    assert_eq!((r.volume_id.as_str(), r.node_id.as_str()), ("v1", "n1"));
    assert!(r.readonly);
    assert_eq!(r.volume_context["k"], "v");
    assert_eq!(
        mode_of(r.volume_capability.as_ref().unwrap()),
        Mode::MultiNodeReaderOnly
    );

    // Unpublish names a node, or says --all-nodes.
    assert!(try_parse(&["controller", "unpublish", "v1"]).is_err());
    assert!(try_parse(&[
        "controller",
        "unpublish",
        "v1",
        "--node-id",
        "n",
        "--all-nodes"
    ])
    .is_err());
    let CsiCommand::Controller {
        command: ControllerCommand::Unpublish(u),
    } = parse(&["controller", "unpublish", "v1", "--all-nodes"]).command
    else {
        panic!()
    };
    assert_eq!(controller::unpublish_request(&u).unwrap().node_id, "");

    // Expand sends a capability only when asked to.
    let CsiCommand::Controller {
        command: ControllerCommand::Expand(x),
    } = parse(&["controller", "expand", "v1", "--size", "3Gi"]).command
    else {
        panic!()
    };
    let r = controller::expand_request(&x).unwrap();
    assert_eq!(r.capacity_range.unwrap().required_bytes, 3 << 30);
    assert_eq!(r.volume_capability, None);
    let CsiCommand::Controller {
        command: ControllerCommand::Expand(x),
    } = parse(&["controller", "expand", "v1", "--size", "3Gi", "--block"]).command
    else {
        panic!()
    };
    assert!(controller::expand_request(&x)
        .unwrap()
        .volume_capability
        .is_some());

    let CsiCommand::Node {
        command: NodeCommand::Publish(p),
    } = parse(&[
        "node",
        "publish",
        "v1",
        "--target-path",
        "/t",
        "--staging-path",
        "/s",
        "--publish-context",
        "dev=/dev/loop0",
        "--fs-type",
        "ext4",
    ])
    .command
    else {
        panic!()
    };
    let r = node::publish_request(&p).unwrap();
    assert_eq!(r.target_path, "/t");
    assert_eq!(r.staging_target_path, "/s");
    assert_eq!(r.publish_context["dev"], "/dev/loop0");
    assert!(!r.readonly);

    let CsiCommand::Node {
        command: NodeCommand::Stage(s),
    } = parse(&[
        "node",
        "stage",
        "v1",
        "--staging-path",
        "/s",
        "--secret",
        "a=b",
    ])
    .command
    else {
        panic!()
    };
    let r = node::stage_request(&s).unwrap();
    assert_eq!(r.staging_target_path, "/s");
    assert_eq!(r.secrets["a"], "b");
    assert!(
        try_parse(&["node", "stage", "v1"]).is_err(),
        "--staging-path is required"
    );

    let CsiCommand::Node {
        command: NodeCommand::Expand(x),
    } = parse(&["node", "expand", "v1", "--path", "/t"]).command
    else {
        panic!()
    };
    let r = node::expand_request(&x).unwrap();
    assert_eq!((r.volume_path.as_str(), r.capacity_range), ("/t", None));

    let CsiCommand::Controller {
        command: ControllerCommand::ListSnapshots(l),
    } = parse(&[
        "controller",
        "list-snapshots",
        "--source",
        "v1",
        "--max-entries",
        "5",
        "--starting-token",
        "t",
    ])
    .command
    else {
        panic!()
    };
    let r = controller::list_snapshots_request(&l).unwrap();
    assert_eq!(
        (
            r.source_volume_id.as_str(),
            r.max_entries,
            r.starting_token.as_str()
        ),
        ("v1", 5, "t")
    );
    assert!(try_parse(&["controller", "list", "--max-entries", "-1"]).is_err());

    // Timeouts are humantime; zero is refused.
    assert_eq!(
        parse(&["--timeout", "90s", "identity", "probe"]).timeout,
        Duration::from_secs(90)
    );
    assert_eq!(
        parse(&["identity", "probe"]).timeout,
        Duration::from_secs(60)
    );
    assert!(try_parse(&["--timeout", "0s", "identity", "probe"]).is_err());
    assert!(try_parse(&["--timeout", "soon", "identity", "probe"]).is_err());
}

#[test]
fn secrets_are_never_shown() {
    let argv = [
        "volbridge",
        "csi",
        "--endpoint",
        "/tmp/x.sock",
        "controller",
        "create",
        "v1",
        "--secret",
        &format!("password={SECRET}"),
        "--secret",
        "username=admin",
    ];
    let cli = Cli::try_parse_from(argv).unwrap();
    let debug = format!("{cli:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("password"), "the key may show: {debug}");

    let Command::Csi(CsiArgs {
        command:
            CsiCommand::Controller {
                command: ControllerCommand::Create(a),
            },
        ..
    }) = cli.command
    else {
        panic!()
    };
    let req = controller::create_request(&a).unwrap();
    assert_eq!(req.secrets["password"], SECRET);
    assert_eq!(req.secrets["username"], "admin");
    // The debug line of a call uses the redacted copy.
    let logged = format!("{:?}", req.redacted());
    assert!(
        !logged.contains(SECRET) && !logged.contains("admin"),
        "{logged}"
    );
    assert!(logged.contains("password"));
    let mut values = req.secret_values();
    values.sort();
    assert_eq!(values, ["admin", SECRET]);
    assert!(pb::ProbeRequest {}.secret_values().is_empty());

    // A malformed --secret is named by its position, never by its text.
    for bad in [SECRET.to_owned(), format!("={SECRET}")] {
        let a = parse(&[
            "controller",
            "delete",
            "v",
            "--secret",
            "a=b",
            "--secret",
            &bad,
        ]);
        let CsiCommand::Controller {
            command: ControllerCommand::Delete { secrets, .. },
        } = a.command
        else {
            panic!()
        };
        let e = convert::secrets(&secrets.secrets).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(!e.message.contains(SECRET), "{e}");
        assert!(e.message.contains("#2"), "{e}");
    }
    let e = convert::secrets(&[
        super::args::SecretArg(format!("k={SECRET}")),
        super::args::SecretArg("k=other".into()),
    ])
    .unwrap_err();
    assert!(
        !e.message.contains(SECRET) && e.message.contains("'k'"),
        "{e}"
    );

    // Error text from the plugin is scrubbed of every secret value.
    let status = tonic::Status::permission_denied(format!("login as admin/{SECRET} refused"));
    let e = status_error("CreateVolume", &status, &req.secret_values());
    assert_eq!(
        e.message,
        "CreateVolume: PermissionDenied: login as <redacted>/<redacted> refused"
    );
    assert_eq!(
        scrub("abcabc", &["abc".into(), "abcabc".into()]),
        "<redacted>"
    );
    assert_eq!(
        scrub("x-é-y", &["é".into(), String::new()]),
        "x-<redacted>-y"
    );
}

#[test]
fn status_codes_map_to_kinds() {
    use tonic::Code;
    let cases = [
        (Code::InvalidArgument, ErrorKind::InvalidArgument),
        (Code::NotFound, ErrorKind::NotFound),
        (Code::AlreadyExists, ErrorKind::AlreadyExists),
        (Code::FailedPrecondition, ErrorKind::FailedPrecondition),
        (Code::Aborted, ErrorKind::Aborted),
        (Code::ResourceExhausted, ErrorKind::ResourceExhausted),
        (Code::OutOfRange, ErrorKind::OutOfRange),
        (Code::Unavailable, ErrorKind::Unavailable),
        (Code::DeadlineExceeded, ErrorKind::DeadlineExceeded),
        (Code::Unimplemented, ErrorKind::Unimplemented),
        (Code::Internal, ErrorKind::Internal),
        (Code::Unknown, ErrorKind::Internal),
        (Code::PermissionDenied, ErrorKind::Internal),
        (Code::DataLoss, ErrorKind::Internal),
    ];
    for (code, kind) in cases {
        let e = status_error("DeleteVolume", &tonic::Status::new(code, "it\nbroke"), &[]);
        assert_eq!(e.kind, kind, "{code:?}");
        assert_eq!(e.message, format!("DeleteVolume: {code:?}: it broke"));
    }
    let e = status_error("Probe", &tonic::Status::not_found(""), &[]);
    assert_eq!(e.message, "Probe: NotFound: (no message)");
}

#[tokio::test]
async fn pages_follow_next_token() {
    use super::args::ListArgs;
    let page = |all| ListArgs {
        max_entries: 2,
        starting_token: None,
        all,
    };
    let fetch = |token: String| async move {
        Ok(match token.as_str() {
            "" => (vec![1, 2], "p2".to_owned()),
            "p2" => (vec![3, 4], "p3".to_owned()),
            _ => (vec![5], String::new()),
        })
    };
    assert_eq!(
        controller::pages("ListVolumes", &page(false), fetch)
            .await
            .unwrap(),
        (vec![1, 2], "p2".to_owned())
    );
    assert_eq!(
        controller::pages("ListVolumes", &page(true), fetch)
            .await
            .unwrap(),
        (vec![1, 2, 3, 4, 5], String::new())
    );
    let stuck = |_t: String| async { Ok((vec![0], "same".to_owned())) };
    let e = controller::pages("ListVolumes", &page(true), stuck)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal);
}

#[test]
fn json_shapes() {
    let stats = pb::NodeGetVolumeStatsResponse {
        usage: vec![
            pb::VolumeUsage {
                available: 6,
                total: 10,
                used: 4,
                unit: pb::volume_usage::Unit::Bytes as i32,
            },
            pb::VolumeUsage {
                available: 90,
                total: 100,
                used: 10,
                unit: pb::volume_usage::Unit::Inodes as i32,
            },
        ],
        volume_condition: Some(pb::VolumeCondition {
            abnormal: false,
            message: "ok".into(),
        }),
    };
    assert_eq!(
        node::stats_reply(&stats).json,
        json!({
            "usage": [
                {"unit": "BYTES", "total": 10, "available": 6, "used": 4},
                {"unit": "INODES", "total": 100, "available": 90, "used": 10},
            ],
            "volume_condition": {"abnormal": false, "message": "ok"},
        })
    );

    let volume = pb::Volume {
        capacity_bytes: 1 << 30,
        volume_id: "v1".into(),
        volume_context: HashMap::from([("volbridge.io/backend".into(), "local".into())]),
        content_source: convert::content_source(Some("s1"), None),
        accessible_topology: vec![pb::Topology {
            segments: HashMap::from([("topology.volbridge.io/node".into(), "n1".into())]),
        }],
    };
    let entries = vec![pb::list_volumes_response::Entry {
        volume: Some(volume),
        status: Some(pb::list_volumes_response::VolumeStatus {
            published_node_ids: vec!["n1".into()],
            volume_condition: None,
        }),
    }];
    assert_eq!(
        controller::list_volumes_reply(&entries, "tok").json,
        json!({
            "entries": [{
                "volume": {
                    "capacity_bytes": 1073741824,
                    "volume_id": "v1",
                    "volume_context": {"volbridge.io/backend": "local"},
                    "content_source": {"snapshot": {"snapshot_id": "s1"}},
                    "accessible_topology": [{"segments": {"topology.volbridge.io/node": "n1"}}],
                },
                "status": {"published_node_ids": ["n1"], "volume_condition": null},
            }],
            "next_token": "tok",
        })
    );

    let snap = pb::Snapshot {
        size_bytes: 5,
        snapshot_id: "s1".into(),
        source_volume_id: "v1".into(),
        creation_time: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    };
    assert_eq!(
        super::render::snapshot(&snap),
        json!({
            "size_bytes": 5,
            "snapshot_id": "s1",
            "source_volume_id": "v1",
            "creation_time": "2023-11-14T22:13:20Z",
            "ready_to_use": true,
            "group_snapshot_id": "",
        })
    );

    let cap = convert::capability(&Default::default());
    assert_eq!(
        super::render::capability(&cap),
        json!({
            "mount": {"fs_type": "", "mount_flags": [], "volume_mount_group": ""},
            "access_mode": {"mode": "SINGLE_NODE_WRITER"},
        })
    );
    // An enum value this client does not know stays a number.
    assert_eq!(
        super::render::enum_json(99, |m: Mode| m.as_str_name()),
        json!(99)
    );
}
