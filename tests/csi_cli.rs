//! The operator's manual session with `volbridge csi` against a real daemon serving CSI on
//! its unix socket, as root with real loop devices and mounts: the README's session run as
//! written (bash and jq), and the same session with the data checked on the way (create,
//! publish to the node, stage, publish, write, snapshot, clone from the snapshot (same
//! bytes), expand (controller and node), unpublish, unstage, delete in the order the
//! snapshot needs); nothing left mounted or attached. Then `controller delete` against a
//! plugin whose volume ids are not names, and csc's `--publish-context k=v,k2=v2`.

mod common;

use common::{
    loops_under, mounts_under, readme_block, require_root_and_tools, require_tool, run, run_script,
    Daemon, HostCleanup, TempDir,
};
use serde_json::Value;
use std::time::{Duration, Instant};

struct Session {
    d: Daemon,
    endpoint: String,
    dir: TempDir,
    _cleanup: HostCleanup,
}

impl Session {
    fn path(&self, p: &str) -> String {
        self.dir.path().join(p).display().to_string()
    }

    fn csi_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["csi", "--endpoint", self.endpoint.as_str()];
        all.extend_from_slice(args);
        all
    }

    fn json(&self, args: &[&str]) -> Value {
        self.d.json(&self.csi_args(args))
    }

    /// Retries while the plugin answers Aborted (a copy still running when the call's
    /// deadline came), as a CO does.
    fn json_retrying(&self, args: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut all = self.csi_args(args);
            all.extend(["--output", "json"]);
            let (code, out, err) = run(&self.d, &all);
            if code == 0 {
                return serde_json::from_str(&out).unwrap();
            }
            assert!(
                err.contains("Aborted") && Instant::now() < deadline,
                "volbridge {all:?}: exit {code}: {err}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn publish_context_args(&self, volume: &str, node: &str) -> Vec<String> {
        let published = self.json(&["controller", "publish", volume, "--node-id", node]);
        published["publish_context"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(k, v)| {
                [
                    "--publish-context".to_owned(),
                    format!("{k}={}", v.as_str().unwrap()),
                ]
            })
            .collect()
    }

    fn stage_and_publish(&self, volume: &str, node: &str, stage: &str, target: &str) {
        let ctx = self.publish_context_args(volume, node);
        std::fs::create_dir_all(stage).unwrap();
        std::fs::create_dir_all(std::path::Path::new(target).parent().unwrap()).unwrap();
        let mut args = vec!["node", "stage", volume, "--staging-path", stage];
        args.extend(ctx.iter().map(String::as_str));
        self.json(&args);
        let mut args = vec![
            "node",
            "publish",
            volume,
            "--staging-path",
            stage,
            "--target-path",
            target,
        ];
        args.extend(ctx.iter().map(String::as_str));
        self.json(&args);
    }

    fn unpublish_and_unstage(&self, volume: &str, node: &str, stage: &str, target: &str) {
        self.json(&["node", "unpublish", volume, "--target-path", target]);
        assert!(
            !std::path::Path::new(target).exists(),
            "the SP removes the target it made"
        );
        self.json(&["node", "unstage", volume, "--staging-path", stage]);
        self.json(&["controller", "unpublish", volume, "--node-id", node]);
    }
}

#[test]
fn manual_session_with_volbridge_csi() {
    if !require_root_and_tools("manual_session_with_volbridge_csi") {
        return;
    }
    let dir = TempDir::new("csi-cli");
    let cleanup = HostCleanup(dir.path().to_path_buf());
    let socket = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let d = Daemon::start(dir.path(), &["--csi-endpoint", &endpoint]);
    let s = Session {
        d,
        endpoint,
        dir,
        _cleanup: cleanup,
    };

    let info = s.json(&["identity", "info"]);
    assert_eq!(info["name"], "csi.volbridge.io");
    let node = s.json(&["node", "info"])["node_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The README's session (names, order), with the data checked on the way.
    let created = s.json(&["controller", "create", "data", "--size", "64Mi"]);
    assert_eq!(created["volume_id"], "data");
    assert_eq!(created["capacity_bytes"], 64 << 20);

    let (stage, target) = (s.path("mnt/stage"), s.path("mnt/pod/data"));
    s.stage_and_publish("data", &node, &stage, &target);
    let payload: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(format!("{target}/payload"), &payload).unwrap();
    let stats = s.json(&["node", "stats", "data", "--path", &target]);
    assert!(
        stats["usage"][0]["used"].as_i64().unwrap() >= 3 << 20,
        "{stats}"
    );

    // A snapshot of the published volume holds what was written.
    let snap = s.json(&["controller", "snapshot", "nightly", "--source", "data"]);
    assert_eq!(snap["source_volume_id"], "data");
    let clone = s.json_retrying(&[
        "controller",
        "create",
        "restored",
        "--from-snapshot",
        "nightly",
    ]);
    assert_eq!(
        clone["content_source"]["snapshot"]["snapshot_id"], "nightly",
        "{clone}"
    );
    let (cstage, ctarget) = (s.path("mnt/restored-stage"), s.path("mnt/pod/restored"));
    s.stage_and_publish("restored", &node, &cstage, &ctarget);
    assert!(
        std::fs::read(format!("{ctarget}/payload")).unwrap() == payload,
        "the clone holds the snapshot's bytes"
    );
    s.unpublish_and_unstage("restored", &node, &cstage, &ctarget);

    let grown = s.json(&["controller", "expand", "data", "--size", "128Mi"]);
    assert_eq!(grown["capacity_bytes"], 128 << 20);
    assert_eq!(grown["node_expansion_required"], true);
    let expanded = s.json(&["node", "expand", "data", "--path", &target]);
    assert_eq!(expanded["capacity_bytes"], 128 << 20);
    let stats = s.json(&["node", "stats", "data", "--path", &target]);
    assert!(
        stats["usage"][0]["total"].as_i64().unwrap() > 100 << 20,
        "the filesystem grew: {stats}"
    );
    assert!(std::fs::read(format!("{target}/payload")).unwrap() == payload);
    s.unpublish_and_unstage("data", &node, &stage, &target);

    // The volume cannot go while it has a snapshot: what was made from the snapshot, the
    // snapshot, then the volume.
    let (code, _, err) = run(&s.d, &s.csi_args(&["controller", "delete", "data"]));
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("FailedPrecondition") || err.contains("FAILED_PRECONDITION"),
        "{err}"
    );
    s.json(&["controller", "delete", "restored"]);
    s.json(&["controller", "delete-snapshot", "nightly"]);
    s.json(&["controller", "delete", "data"]);
    let listed = s.json(&["controller", "list"]);
    assert_eq!(
        listed["entries"].as_array().map_or(0, Vec::len),
        0,
        "{listed}"
    );
    assert!(
        mounts_under(s.dir.path()).is_empty(),
        "{:?}",
        mounts_under(s.dir.path())
    );
    assert!(
        loops_under(s.dir.path()).is_empty(),
        "{:?}",
        loops_under(s.dir.path())
    );
}

/// README.md's CSI session, as written, runs to its end: paths under a temp dir, the
/// daemon's socket as CSI_ENDPOINT.
#[test]
fn the_readme_csi_session_runs_as_written() {
    if !require_root_and_tools("the_readme_csi_session_runs_as_written")
        || !require_tool("the_readme_csi_session_runs_as_written", "jq", "jq")
    {
        return;
    }
    let dir = TempDir::new("csi-readme");
    let _cleanup = HostCleanup(dir.path().to_path_buf());
    let socket = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let d = Daemon::start(dir.path(), &["--csi-endpoint", &endpoint]);
    let mnt = dir.path().join("mnt").display().to_string();
    let script = readme_block("`volbridge csi` drives any CSI plugin by hand")
        .replace(
            "unix:///var/lib/kubelet/plugins/csi.volbridge.io/csi.sock",
            &endpoint,
        )
        .replace("/mnt/", &format!("{mnt}/"));
    assert!(script.contains(&endpoint), "{script}");
    let (code, out, err) = run_script(&d, &script, &[]);
    assert_eq!(code, 0, "the README's CSI session stopped:\n{err}\n{out}");
    assert!(out.contains("deleted volume data"), "{out}");
    let listed = d.json(&["csi", "--endpoint", &endpoint, "controller", "list"]);
    assert_eq!(
        listed["entries"].as_array().map_or(0, Vec::len),
        0,
        "{listed}"
    );
    assert!(
        mounts_under(dir.path()).is_empty(),
        "{:?}",
        mounts_under(dir.path())
    );
    assert!(
        loops_under(dir.path()).is_empty(),
        "{:?}",
        loops_under(dir.path())
    );
}

/// A Controller plugin whose volume ids are not the names given to create (as the
/// reference host-path driver's): ListVolumes lists one volume by its UUID; DeleteVolume
/// of anything succeeds, as CSI wants for an unknown id. `lists` turns LIST_VOLUMES off.
/// Node publish requests are kept to check how contexts arrived.
struct UuidPlugin {
    lists: bool,
    deleted: std::sync::Mutex<Vec<String>>,
}

const PLUGIN_VOLUME: &str = "cb9b68d3-5f1c-11ef-8a2e-0242ac120002";

/// The RPCs a fake does not serve, written as `#[async_trait]` expands an `async fn` (the
/// attribute does not see into a macro's output).
macro_rules! unimplemented_rpcs {
    ($($rpc:ident: $req:ident => $resp:ident;)*) => {
        $(
            fn $rpc<'life0, 'async_trait>(
                &'life0 self,
                _: tonic::Request<csi::$req>,
            ) -> std::pin::Pin<
                Box<
                    dyn std::future::Future<
                            Output = Result<tonic::Response<csi::$resp>, tonic::Status>,
                        > + Send
                        + 'async_trait,
                >,
            >
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async { Err(tonic::Status::unimplemented(stringify!($rpc))) })
            }
        )*
    };
}

use volbridge_proto::csi;

#[tonic::async_trait]
impl csi::controller_server::Controller for UuidPlugin {
    async fn delete_volume(
        &self,
        request: tonic::Request<csi::DeleteVolumeRequest>,
    ) -> Result<tonic::Response<csi::DeleteVolumeResponse>, tonic::Status> {
        self.deleted
            .lock()
            .unwrap()
            .push(request.into_inner().volume_id);
        Ok(tonic::Response::new(csi::DeleteVolumeResponse {}))
    }

    async fn list_volumes(
        &self,
        _: tonic::Request<csi::ListVolumesRequest>,
    ) -> Result<tonic::Response<csi::ListVolumesResponse>, tonic::Status> {
        Ok(tonic::Response::new(csi::ListVolumesResponse {
            entries: vec![csi::list_volumes_response::Entry {
                volume: Some(csi::Volume {
                    volume_id: PLUGIN_VOLUME.into(),
                    capacity_bytes: 1 << 20,
                    ..Default::default()
                }),
                status: None,
            }],
            next_token: String::new(),
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: tonic::Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<tonic::Response<csi::ControllerGetCapabilitiesResponse>, tonic::Status> {
        use csi::controller_service_capability::{rpc::Type as Rpc, Rpc as RpcCap, Type};
        let mut rpcs = vec![Rpc::CreateDeleteVolume];
        if self.lists {
            rpcs.push(Rpc::ListVolumes);
        }
        Ok(tonic::Response::new(
            csi::ControllerGetCapabilitiesResponse {
                capabilities: rpcs
                    .into_iter()
                    .map(|t| csi::ControllerServiceCapability {
                        r#type: Some(Type::Rpc(RpcCap { r#type: t as i32 })),
                    })
                    .collect(),
            },
        ))
    }

    unimplemented_rpcs! {
        create_volume: CreateVolumeRequest => CreateVolumeResponse;
        controller_publish_volume: ControllerPublishVolumeRequest => ControllerPublishVolumeResponse;
        controller_unpublish_volume: ControllerUnpublishVolumeRequest => ControllerUnpublishVolumeResponse;
        validate_volume_capabilities: ValidateVolumeCapabilitiesRequest => ValidateVolumeCapabilitiesResponse;
        get_capacity: GetCapacityRequest => GetCapacityResponse;
        create_snapshot: CreateSnapshotRequest => CreateSnapshotResponse;
        delete_snapshot: DeleteSnapshotRequest => DeleteSnapshotResponse;
        list_snapshots: ListSnapshotsRequest => ListSnapshotsResponse;
        get_snapshot: GetSnapshotRequest => GetSnapshotResponse;
        controller_expand_volume: ControllerExpandVolumeRequest => ControllerExpandVolumeResponse;
        controller_get_volume: ControllerGetVolumeRequest => ControllerGetVolumeResponse;
        controller_modify_volume: ControllerModifyVolumeRequest => ControllerModifyVolumeResponse;
    }
}

/// A Node plugin that records the publish context NodeStageVolume got, then refuses.
struct ContextRecorder(
    std::sync::Arc<std::sync::Mutex<Vec<std::collections::BTreeMap<String, String>>>>,
);

#[tonic::async_trait]
impl csi::node_server::Node for ContextRecorder {
    async fn node_stage_volume(
        &self,
        request: tonic::Request<csi::NodeStageVolumeRequest>,
    ) -> Result<tonic::Response<csi::NodeStageVolumeResponse>, tonic::Status> {
        let ctx = request.into_inner().publish_context.into_iter().collect();
        self.0.lock().unwrap().push(ctx);
        Ok(tonic::Response::new(csi::NodeStageVolumeResponse {}))
    }

    unimplemented_rpcs! {
        node_unstage_volume: NodeUnstageVolumeRequest => NodeUnstageVolumeResponse;
        node_publish_volume: NodePublishVolumeRequest => NodePublishVolumeResponse;
        node_unpublish_volume: NodeUnpublishVolumeRequest => NodeUnpublishVolumeResponse;
        node_get_volume_stats: NodeGetVolumeStatsRequest => NodeGetVolumeStatsResponse;
        node_expand_volume: NodeExpandVolumeRequest => NodeExpandVolumeResponse;
        node_get_capabilities: NodeGetCapabilitiesRequest => NodeGetCapabilitiesResponse;
        node_get_info: NodeGetInfoRequest => NodeGetInfoResponse;
    }
}

/// Serves `plugin` (and a context-recording Node service) on a unix socket in `dir` on a
/// runtime of its own; the runtime goes with the returned guard.
fn serve_plugin(
    dir: &std::path::Path,
    plugin: UuidPlugin,
    contexts: std::sync::Arc<std::sync::Mutex<Vec<std::collections::BTreeMap<String, String>>>>,
) -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sock = dir.join("plugin.sock");
    let listener = rt.block_on(async { tokio::net::UnixListener::bind(&sock).unwrap() });
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(csi::controller_server::ControllerServer::new(plugin))
            .add_service(csi::node_server::NodeServer::new(ContextRecorder(contexts)))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    (rt, format!("unix://{}", sock.display()))
}

fn csi_cli(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(common::BIN)
        .args(["csi", "--endpoint", endpoint])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Defect 10: `controller delete NAME` against a driver whose ids are not names says that
/// no listed volume had that id (nothing was deleted) instead of "deleted volume NAME".
#[test]
fn delete_of_an_id_no_volume_has_says_so() {
    let dir = TempDir::new("csi-uuid");
    let contexts = Default::default();
    let (rt, endpoint) = serve_plugin(
        dir.path(),
        UuidPlugin {
            lists: true,
            deleted: Default::default(),
        },
        contexts,
    );
    let (code, out, err) = csi_cli(&endpoint, &["controller", "delete", "vbtest"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim_end(),
        "no volume has id 'vbtest': nothing was deleted"
    );
    assert!(!out.contains("deleted volume"), "{out}");
    for needle in [
        "volbridge: warning: DeleteVolume answered success",
        "none of the 1 volume(s) ListVolumes lists has id 'vbtest'",
        "volbridge csi controller list",
    ] {
        assert!(err.contains(needle), "'{err}' lacks '{needle}'");
    }
    // JSON stays the reply ({}); the warning still reaches a person on stderr.
    let (code, out, err) = csi_cli(&endpoint, &["-O", "json", "controller", "delete", "vbtest"]);
    assert_eq!((code, out.trim()), (0, "{}"), "{err}");
    assert!(err.contains("volbridge: warning:"), "{err}");
    // The plugin's own id: deleted, said plainly.
    let (code, out, err) = csi_cli(&endpoint, &["controller", "delete", PLUGIN_VOLUME]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim_end(), format!("deleted volume {PLUGIN_VOLUME}"));
    assert!(err.is_empty(), "{err}");
    drop(rt);

    // A plugin that cannot list: the client says it cannot tell.
    let dir = TempDir::new("csi-uuid-nolist");
    let (rt, endpoint) = serve_plugin(
        dir.path(),
        UuidPlugin {
            lists: false,
            deleted: Default::default(),
        },
        Default::default(),
    );
    let (code, out, err) = csi_cli(&endpoint, &["controller", "delete", "vbtest"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("DeleteVolume of volume id vbtest succeeded")
            && out.contains("cannot list volumes"),
        "{out}"
    );
    drop(rt);
}

/// Defect 10: csc's `--publish-context k=v,k2=v2` is split into pairs; one pair per flag
/// still works; a comma inside a list value stays; `\,` never splits.
#[test]
fn publish_context_takes_csc_pairs_and_one_pair_per_flag() {
    let dir = TempDir::new("csi-ctx");
    let contexts: std::sync::Arc<
        std::sync::Mutex<Vec<std::collections::BTreeMap<String, String>>>,
    > = Default::default();
    let (rt, endpoint) = serve_plugin(
        dir.path(),
        UuidPlugin {
            lists: true,
            deleted: Default::default(),
        },
        contexts.clone(),
    );
    let stage = dir.path().join("stage").display().to_string();
    let stage_with = |ctx: &[&str]| {
        let mut args = vec!["node", "stage", "v", "--staging-path", stage.as_str()];
        for c in ctx {
            args.extend(["--publish-context", c]);
        }
        let (code, _, err) = csi_cli(&endpoint, &args);
        assert_eq!(code, 0, "{ctx:?}: {err}");
        contexts.lock().unwrap().pop().unwrap()
    };
    let map = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        stage_with(&["accessProtocol=local,localPath=/srv/v.img,readOnly=false"]),
        map(&[
            ("accessProtocol", "local"),
            ("localPath", "/srv/v.img"),
            ("readOnly", "false")
        ])
    );
    assert_eq!(
        stage_with(&["accessProtocol=local", "localPath=/srv/v.img"]),
        map(&[("accessProtocol", "local"), ("localPath", "/srv/v.img")])
    );
    assert_eq!(
        stage_with(&["targetNames=iqn.a,iqn.b,discoveryIps=10.0.0.1,10.0.0.2"]),
        map(&[
            ("targetNames", "iqn.a,iqn.b"),
            ("discoveryIps", "10.0.0.1,10.0.0.2")
        ])
    );
    assert_eq!(
        stage_with(&["fsCreateOptions=-E a=1\\,b=2,fsType=ext4"]),
        map(&[("fsCreateOptions", "-E a=1,b=2"), ("fsType", "ext4")])
    );
    // A key twice, across flags or within one, is refused.
    let (code, _, err) = csi_cli(
        &endpoint,
        &[
            "node",
            "stage",
            "v",
            "--staging-path",
            &stage,
            "--publish-context",
            "a=1,a=2",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("key 'a' is given twice"), "{err}");
    drop(rt);
}
