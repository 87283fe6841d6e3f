//! Support for the CSI conformance suite (`tests/csi_conformance/`): a real daemon serving
//! CSI on a unix socket in its own temp dir, tonic clients on one channel, request builders
//! in the shapes kubelet and the sidecars send, soft checks that collect every mismatch of a
//! test before failing it, and host probes (loop devices, mounts, block sizes, data).
#![allow(dead_code)]

use crate::common::{
    loops_under, mounts_under, require_root_and_tools, Daemon, HostCleanup, TempDir,
};
use csi::controller_client::ControllerClient;
use csi::group_controller_client::GroupControllerClient;
use csi::identity_client::IdentityClient;
use csi::node_client::NodeClient;
use csi::volume_capability::{access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume};
use csi::VolumeCapability;
use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Code, Response, Status};
pub use volbridge_proto::csi;

pub const MIB: i64 = 1 << 20;
pub const GIB: i64 = 1 << 30;
pub const DRIVER: &str = "csi.volbridge.io";
pub const TOPOLOGY_KEY: &str = "topology.volbridge.io/node";
pub const CONTEXT_BACKEND: &str = "volbridge.io/backend";
pub const EPHEMERAL_KEY: &str = "csi.storage.k8s.io/ephemeral";
/// kubelet gives a call about two minutes; nothing here should come near.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

pub type Map = HashMap<String, String>;
pub type CsiResult<T> = Result<Response<T>, Status>;

pub fn map(pairs: &[(&str, &str)]) -> Map {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Capabilities
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Mount,
    Block,
}

impl Access {
    pub const BOTH: [Access; 2] = [Access::Mount, Access::Block];

    /// SINGLE_NODE_WRITER, ext4 for mount: what a ReadWriteOnce PVC asks for.
    pub fn cap(self) -> VolumeCapability {
        cap(self, Mode::SingleNodeWriter)
    }

    pub fn tag(self) -> &'static str {
        match self {
            Access::Mount => "mnt",
            Access::Block => "blk",
        }
    }
}

pub fn cap(access: Access, mode: Mode) -> VolumeCapability {
    match access {
        Access::Mount => mount_cap("ext4", mode),
        Access::Block => VolumeCapability {
            access_type: Some(AccessType::Block(BlockVolume {})),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        },
    }
}

pub fn mount_cap(fs_type: &str, mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.to_owned(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

pub fn range(required: i64, limit: i64) -> Option<csi::CapacityRange> {
    Some(csi::CapacityRange {
        required_bytes: required,
        limit_bytes: limit,
    })
}

pub fn snapshot_source(id: &str) -> Option<csi::VolumeContentSource> {
    use csi::volume_content_source::{SnapshotSource, Type};
    Some(csi::VolumeContentSource {
        r#type: Some(Type::Snapshot(SnapshotSource {
            snapshot_id: id.to_owned(),
        })),
    })
}

pub fn volume_source(id: &str) -> Option<csi::VolumeContentSource> {
    use csi::volume_content_source::{Type, VolumeSource};
    Some(csi::VolumeContentSource {
        r#type: Some(Type::Volume(VolumeSource {
            volume_id: id.to_owned(),
        })),
    })
}

// ---------------------------------------------------------------------------------------
// Calls and answers
// ---------------------------------------------------------------------------------------

/// Bounds one call: a hung server fails the test instead of hanging the suite.
pub async fn t<F: Future>(f: F) -> F::Output {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(out) => out,
        Err(_) => panic!("a CSI call did not answer within {CALL_TIMEOUT:?}"),
    }
}

/// The answer of a call that must succeed.
#[track_caller]
pub fn ok<T>(r: CsiResult<T>, what: &str) -> T {
    match r {
        Ok(r) => r.into_inner(),
        Err(s) => panic!("{what}: wanted OK, got {:?}: {}", s.code(), s.message()),
    }
}

/// The status of a call that must fail with `want`.
#[track_caller]
pub fn err<T: Debug>(r: CsiResult<T>, want: Code, what: &str) -> Status {
    match r {
        Ok(r) => panic!("{what}: wanted {want:?}, got OK: {:?}", r.get_ref()),
        Err(s) => {
            assert_eq!(
                s.code(),
                want,
                "{what}: wanted {want:?}, got {:?}: {}",
                s.code(),
                s.message()
            );
            s
        }
    }
}

pub fn describe<T: Debug>(r: &CsiResult<T>) -> String {
    match r {
        Ok(r) => format!("OK {:?}", r.get_ref()),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

/// Soft assertions: every mismatch of a test is collected and reported together, so that
/// one failing case does not hide the next. A test must end with [`Checks::finish`]: a
/// collector dropped unfinished (an early `return`, a forgotten call) fails the test and
/// names the checks whose results were never reported.
#[derive(Default)]
pub struct Checks {
    failures: Vec<String>,
    /// What each check looked at, in order: the pending ones when dropped unfinished.
    checked: Vec<String>,
    finished: bool,
}

impl Checks {
    pub fn new() -> Checks {
        Checks::default()
    }

    fn record(&mut self, what: &str, failure: Option<String>) {
        self.checked.push(what.to_owned());
        self.failures.extend(failure);
    }

    /// The call must fail with exactly `want`.
    pub fn code<T: Debug>(&mut self, r: CsiResult<T>, want: Code, what: &str) -> Option<Status> {
        match r {
            Ok(r) => {
                let failure = format!("{what}: wanted {want:?}, got OK {:?}", r.get_ref());
                self.record(what, Some(failure));
                None
            }
            Err(s) if s.code() == want => {
                self.record(what, None);
                Some(s)
            }
            Err(s) => {
                let failure = format!(
                    "{what}: wanted {want:?}, got {:?}: {}",
                    s.code(),
                    s.message()
                );
                self.record(what, Some(failure));
                Some(s)
            }
        }
    }

    /// The call must succeed.
    pub fn ok<T>(&mut self, r: CsiResult<T>, what: &str) -> Option<T> {
        match r {
            Ok(r) => {
                self.record(what, None);
                Some(r.into_inner())
            }
            Err(s) => {
                let failure = format!("{what}: wanted OK, got {:?}: {}", s.code(), s.message());
                self.record(what, Some(failure));
                None
            }
        }
    }

    pub fn check(&mut self, cond: bool, what: impl Into<String>) {
        let what = what.into();
        let failure = (!cond).then(|| what.clone());
        self.record(&what, failure);
    }

    pub fn eq<T: PartialEq + Debug>(&mut self, got: T, want: T, what: &str) {
        let failure = (got != want).then(|| format!("{what}: got {got:?}, wanted {want:?}"));
        self.record(what, failure);
    }

    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }

    /// Reports the run: panics with every failure, or passes.
    #[track_caller]
    pub fn finish(mut self) {
        self.finished = true;
        let failures = std::mem::take(&mut self.failures);
        if !failures.is_empty() {
            panic!(
                "{} of {} check(s) failed:\n  - {}",
                failures.len(),
                self.checked.len(),
                failures.join("\n  - ")
            );
        }
    }
}

impl Drop for Checks {
    /// A hard assertion that fails later in the test still shows the soft failures before
    /// it. Dropped unfinished otherwise, the collector fails the test: its results were
    /// never reported.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if std::thread::panicking() {
            if !self.failures.is_empty() {
                eprintln!(
                    "soft check(s) failed before the panic:\n  - {}",
                    self.failures.join("\n  - ")
                );
            }
            return;
        }
        let pending = if self.checked.is_empty() {
            "none recorded yet".to_owned()
        } else {
            format!("\n  - {}", self.checked.join("\n  - "))
        };
        let failed = if self.failures.is_empty() {
            String::new()
        } else {
            format!(
                "\n{} of them failed:\n  - {}",
                self.failures.len(),
                self.failures.join("\n  - ")
            )
        };
        panic!(
            "Checks dropped without finish(): the test ended before reporting its soft \
             checks (an early return?). Pending: {pending}{failed}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The rig: one daemon, one channel
// ---------------------------------------------------------------------------------------

/// A daemon serving CSI in its own temp dir. Fields drop in order: the daemon is killed,
/// then whatever a failed test left mounted or attached is cleaned, then the dir goes.
pub struct Rig {
    pub d: Daemon,
    pub cleanup: HostCleanup,
    pub dir: TempDir,
    pub endpoint: String,
    pub ch: Channel,
    /// This node's id (NodeGetInfo); empty for a controller-only daemon.
    pub node_id: String,
    /// The embedded CSP's port when started with `--csp-listen`.
    pub csp_port: Option<u16>,
}

#[derive(Default)]
pub struct RigOptions<'a> {
    pub extra: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    /// Give the embedded CSP a known port (for secrets that address it).
    pub csp_port: bool,
    /// Name the socket (a path under the rig's dir) in `CSI_ENDPOINT`, as a Docker
    /// managed plugin's config.json does, instead of `--csi-endpoint`.
    pub endpoint_in_env: Option<&'a str>,
    /// Make the default backend a CSP at this loopback port (a config file in the rig's
    /// dir): `(backend name, port, password)`.
    pub default_csp: Option<(&'a str, u16, &'a str)>,
}

impl Rig {
    /// Root and tools or nothing (see `require_root_and_tools`), then a daemon with CSI on.
    pub async fn start(tag: &str) -> Option<Rig> {
        Rig::start_with(tag, RigOptions::default()).await
    }

    pub async fn start_with(tag: &str, opts: RigOptions<'_>) -> Option<Rig> {
        if !require_root_and_tools(tag) {
            return None;
        }
        let dir = TempDir::new(&format!("csi-{tag}"));
        let cleanup = HostCleanup(dir.path().to_path_buf());
        let socket = dir.path().join(opts.endpoint_in_env.unwrap_or("csi.sock"));
        let endpoint = format!("unix://{}", socket.display());
        let mut env = opts.env.to_vec();
        let mut args: Vec<String> = Vec::new();
        match opts.endpoint_in_env {
            Some(_) => env.push(("CSI_ENDPOINT", endpoint.as_str())),
            None => args.extend(["--csi-endpoint".into(), endpoint.clone()]),
        }
        let csp_port = if opts.csp_port {
            let port = free_port();
            args.push("--csp-listen".into());
            args.push(format!("127.0.0.1:{port}"));
            Some(port)
        } else {
            None
        };
        if let Some((name, port, password)) = opts.default_csp {
            let config =
                crate::common::slow_csp::default_backend_config(dir.path(), name, port, password);
            args.extend(["--config".into(), config.display().to_string()]);
        }
        args.extend(opts.extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let d = Daemon::start_with_env(dir.path(), &argv, &env);
        let ch = volbridge::frontend::csi::Endpoint::parse(&endpoint)
            .expect("endpoint parses")
            .channel()
            .expect("channel");
        let mut rig = Rig {
            d,
            cleanup,
            dir,
            endpoint,
            ch,
            node_id: String::new(),
            csp_port,
        };
        let controller_only = opts
            .extra
            .windows(2)
            .any(|w| w[0] == "--csi-mode" && w[1] == "controller");
        if !controller_only {
            let info = t(rig.node().node_get_info(csi::NodeGetInfoRequest {})).await;
            rig.node_id = match info {
                Ok(i) => i.into_inner().node_id,
                Err(s) => panic!(
                    "NodeGetInfo failed ({:?}: {}); log tail:\n{}",
                    s.code(),
                    s.message(),
                    rig.log_tail(40)
                ),
            };
        }
        Some(rig)
    }

    /// A fresh channel (after a daemon restart the old connection is gone).
    pub fn reconnect(&mut self) {
        self.ch = volbridge::frontend::csi::Endpoint::parse(&self.endpoint)
            .expect("endpoint parses")
            .channel()
            .expect("channel");
    }

    pub fn ident(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.ch.clone())
    }
    pub fn ctrl(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.ch.clone())
    }
    pub fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.ch.clone())
    }
    pub fn group(&self) -> GroupControllerClient<Channel> {
        GroupControllerClient::new(self.ch.clone())
    }

    pub fn log_tail(&self, n: usize) -> String {
        let log = self.d.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The staging directory as kubelet makes it (kubelet creates it; so do we).
    pub fn staging(&self, vol: &str) -> String {
        let p = self
            .path("kubelet/plugins/kubernetes.io/csi")
            .join(DRIVER)
            .join(sanitize(vol))
            .join("globalmount");
        std::fs::create_dir_all(&p).unwrap();
        p.display().to_string()
    }

    /// A pod's target path: the parent exists, the target itself does not (the SP makes it).
    pub fn target(&self, vol: &str, pod: &str) -> String {
        let parent = self
            .path("kubelet/pods")
            .join(pod)
            .join("volumes/kubernetes.io~csi")
            .join(sanitize(vol));
        std::fs::create_dir_all(&parent).unwrap();
        parent.join("mount").display().to_string()
    }

    // ---- controller ----

    pub fn create_req(
        &self,
        name: &str,
        size: Option<i64>,
        caps: Vec<VolumeCapability>,
    ) -> csi::CreateVolumeRequest {
        csi::CreateVolumeRequest {
            name: name.to_owned(),
            capacity_range: size.and_then(|s| range(s, 0)),
            volume_capabilities: caps,
            ..Default::default()
        }
    }

    /// CreateVolume without a deadline: a clone answers once its data is complete
    /// (docs/copy-semantics.md rule 3), never with a "still copying" error.
    pub async fn create(
        &self,
        req: csi::CreateVolumeRequest,
    ) -> CsiResult<csi::CreateVolumeResponse> {
        t(self.ctrl().create_volume(req)).await
    }

    /// CreateVolume with a deadline, sent as `grpc-timeout` as a CO's sidecar does.
    pub async fn create_within(
        &self,
        req: csi::CreateVolumeRequest,
        timeout: Duration,
    ) -> CsiResult<csi::CreateVolumeResponse> {
        let mut req = tonic::Request::new(req);
        req.set_timeout(timeout);
        t(self.ctrl().create_volume(req)).await
    }

    /// ListSnapshots with a filter, every page's entries.
    pub async fn list_snapshots(&self, req: csi::ListSnapshotsRequest) -> Vec<csi::Snapshot> {
        let r = t(self.ctrl().list_snapshots(req)).await;
        ok(r, "ListSnapshots")
            .entries
            .into_iter()
            .filter_map(|e| e.snapshot)
            .collect()
    }

    /// A volume that must be created: `size` None means no capacity range.
    pub async fn create_ok(&self, name: &str, size: Option<i64>, access: Access) -> csi::Volume {
        let req = self.create_req(name, size, vec![access.cap()]);
        let r = self.create(req).await;
        let v = ok(r, &format!("CreateVolume {name}"));
        v.volume
            .unwrap_or_else(|| panic!("CreateVolume {name}: no volume in the answer"))
    }

    pub async fn delete_ok(&self, id: &str) {
        let r = t(self.ctrl().delete_volume(csi::DeleteVolumeRequest {
            volume_id: id.to_owned(),
            ..Default::default()
        }))
        .await;
        ok(r, &format!("DeleteVolume {id}"));
    }

    pub fn cpublish_req(
        &self,
        vol: &csi::Volume,
        access: Access,
        readonly: bool,
    ) -> csi::ControllerPublishVolumeRequest {
        csi::ControllerPublishVolumeRequest {
            volume_id: vol.volume_id.clone(),
            node_id: self.node_id.clone(),
            volume_capability: Some(access.cap()),
            readonly,
            volume_context: vol.volume_context.clone(),
            ..Default::default()
        }
    }

    pub async fn cpublish_ok(&self, vol: &csi::Volume, access: Access) -> Map {
        let r = t(self
            .ctrl()
            .controller_publish_volume(self.cpublish_req(vol, access, false)))
        .await;
        ok(r, &format!("ControllerPublishVolume {}", vol.volume_id)).publish_context
    }

    pub async fn cunpublish(
        &self,
        id: &str,
        node: &str,
    ) -> CsiResult<csi::ControllerUnpublishVolumeResponse> {
        t(self
            .ctrl()
            .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
                volume_id: id.to_owned(),
                node_id: node.to_owned(),
                ..Default::default()
            }))
        .await
    }

    pub async fn cunpublish_ok(&self, id: &str) {
        let r = self.cunpublish(id, &self.node_id.clone()).await;
        ok(r, &format!("ControllerUnpublishVolume {id}"));
    }

    pub async fn get_volume(&self, id: &str) -> CsiResult<csi::ControllerGetVolumeResponse> {
        t(self
            .ctrl()
            .controller_get_volume(csi::ControllerGetVolumeRequest {
                volume_id: id.to_owned(),
            }))
        .await
    }

    pub async fn published_nodes(&self, id: &str) -> Vec<String> {
        let v = ok(
            self.get_volume(id).await,
            &format!("ControllerGetVolume {id}"),
        );
        let mut nodes = v.status.map(|s| s.published_node_ids).unwrap_or_default();
        nodes.sort();
        nodes
    }

    /// Every ListVolumes entry, following next_token.
    pub async fn list_volumes(&self) -> Vec<csi::list_volumes_response::Entry> {
        let mut out = Vec::new();
        let mut token = String::new();
        for _ in 0..1000 {
            let r = t(self.ctrl().list_volumes(csi::ListVolumesRequest {
                max_entries: 0,
                starting_token: token.clone(),
            }))
            .await;
            let page = ok(r, "ListVolumes");
            out.extend(page.entries);
            if page.next_token.is_empty() {
                return out;
            }
            token = page.next_token;
        }
        panic!("ListVolumes never ended");
    }

    pub async fn volume_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .list_volumes()
            .await
            .into_iter()
            .filter_map(|e| e.volume.map(|v| v.volume_id))
            .collect();
        ids.sort();
        ids
    }

    pub async fn snapshot_ok(&self, name: &str, source: &str) -> csi::Snapshot {
        let r = t(self.ctrl().create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: source.to_owned(),
            name: name.to_owned(),
            ..Default::default()
        }))
        .await;
        ok(r, &format!("CreateSnapshot {name}"))
            .snapshot
            .unwrap_or_else(|| panic!("CreateSnapshot {name}: no snapshot in the answer"))
    }

    /// Polls ListSnapshots by id until the snapshot is ready to use (a copy may run).
    pub async fn wait_snapshot_ready(&self, id: &str) -> csi::Snapshot {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = t(self.ctrl().list_snapshots(csi::ListSnapshotsRequest {
                snapshot_id: id.to_owned(),
                ..Default::default()
            }))
            .await;
            let page = ok(r, &format!("ListSnapshots snapshot_id={id}"));
            if let Some(s) = page.entries.into_iter().filter_map(|e| e.snapshot).next() {
                if s.ready_to_use {
                    return s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "snapshot {id} never became ready"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn delete_snapshot_ok(&self, id: &str) {
        let r = t(self.ctrl().delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: id.to_owned(),
            ..Default::default()
        }))
        .await;
        ok(r, &format!("DeleteSnapshot {id}"));
    }

    // ---- node ----

    pub fn stage_req(
        &self,
        vol: &csi::Volume,
        ctx: &Map,
        staging: &str,
        access: Access,
    ) -> csi::NodeStageVolumeRequest {
        csi::NodeStageVolumeRequest {
            volume_id: vol.volume_id.clone(),
            publish_context: ctx.clone(),
            staging_target_path: staging.to_owned(),
            volume_capability: Some(access.cap()),
            volume_context: vol.volume_context.clone(),
            ..Default::default()
        }
    }

    pub async fn stage_ok(&self, vol: &csi::Volume, ctx: &Map, staging: &str, access: Access) {
        let r = t(self
            .node()
            .node_stage_volume(self.stage_req(vol, ctx, staging, access)))
        .await;
        ok(
            r,
            &format!("NodeStageVolume {} ({access:?})", vol.volume_id),
        );
    }

    pub async fn unstage(
        &self,
        id: &str,
        staging: &str,
    ) -> CsiResult<csi::NodeUnstageVolumeResponse> {
        t(self
            .node()
            .node_unstage_volume(csi::NodeUnstageVolumeRequest {
                volume_id: id.to_owned(),
                staging_target_path: staging.to_owned(),
            }))
        .await
    }

    pub async fn unstage_ok(&self, id: &str, staging: &str) {
        let r = self.unstage(id, staging).await;
        ok(r, &format!("NodeUnstageVolume {id}"));
    }

    #[allow(clippy::too_many_arguments)]
    pub fn publish_req(
        &self,
        vol: &csi::Volume,
        ctx: &Map,
        staging: &str,
        target: &str,
        access: Access,
        readonly: bool,
    ) -> csi::NodePublishVolumeRequest {
        csi::NodePublishVolumeRequest {
            volume_id: vol.volume_id.clone(),
            publish_context: ctx.clone(),
            staging_target_path: staging.to_owned(),
            target_path: target.to_owned(),
            volume_capability: Some(access.cap()),
            readonly,
            volume_context: vol.volume_context.clone(),
            ..Default::default()
        }
    }

    pub async fn publish_ok(
        &self,
        vol: &csi::Volume,
        ctx: &Map,
        staging: &str,
        target: &str,
        access: Access,
        readonly: bool,
    ) {
        let r = t(self
            .node()
            .node_publish_volume(self.publish_req(vol, ctx, staging, target, access, readonly)))
        .await;
        ok(
            r,
            &format!("NodePublishVolume {} at {target}", vol.volume_id),
        );
    }

    pub async fn unpublish(
        &self,
        id: &str,
        target: &str,
    ) -> CsiResult<csi::NodeUnpublishVolumeResponse> {
        t(self
            .node()
            .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                volume_id: id.to_owned(),
                target_path: target.to_owned(),
            }))
        .await
    }

    pub async fn unpublish_ok(&self, id: &str, target: &str) {
        let r = self.unpublish(id, target).await;
        ok(r, &format!("NodeUnpublishVolume {id} at {target}"));
    }

    /// The whole CO flow up to a usable target: ControllerPublish, NodeStage, NodePublish.
    pub async fn attach(&self, vol: &csi::Volume, access: Access, pod: &str) -> Attached {
        let ctx = self.cpublish_ok(vol, access).await;
        let staging = self.staging(&vol.volume_id);
        self.stage_ok(vol, &ctx, &staging, access).await;
        let target = self.target(&vol.volume_id, pod);
        self.publish_ok(vol, &ctx, &staging, &target, access, false)
            .await;
        Attached {
            id: vol.volume_id.clone(),
            ctx,
            staging,
            target,
        }
    }

    /// And back: NodeUnpublish, NodeUnstage, ControllerUnpublish.
    pub async fn detach(&self, a: &Attached) {
        self.unpublish_ok(&a.id, &a.target).await;
        self.unstage_ok(&a.id, &a.staging).await;
        self.cunpublish_ok(&a.id).await;
    }

    // ---- host ----

    #[track_caller]
    pub fn assert_nothing_left(&self) {
        let loops = loops_under(self.dir.path());
        let mounts = mounts_under(self.dir.path());
        assert!(
            loops.is_empty() && mounts.is_empty(),
            "left behind: loop devices {loops:?}, mounts {mounts:?}"
        );
    }

    pub fn loops(&self) -> Vec<(String, String)> {
        loops_under(self.dir.path())
    }

    /// Loop devices over this publish context's backing file.
    pub fn loops_of(&self, ctx: &Map) -> Vec<String> {
        let file = ctx.get("localPath").cloned().unwrap_or_default();
        let file = std::fs::canonicalize(&file)
            .map(|p| p.display().to_string())
            .unwrap_or(file);
        self.loops()
            .into_iter()
            .filter(|(_, b)| *b == file)
            .map(|(d, _)| d)
            .collect()
    }

    pub fn mounts_at(&self, path: &str) -> usize {
        let want = std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
        mounts_under(self.dir.path())
            .iter()
            .filter(|m| Path::new(m) == want)
            .count()
    }

    /// Where the embedded CSP keeps its images: its image pool's mount when it made one.
    pub fn csp_images(&self) -> PathBuf {
        let data = self.d.state.join("csp");
        if data.join("pool.json").exists() {
            data.join("pool")
        } else {
            data
        }
    }

    /// Backing files of the embedded CSP's volumes.
    pub fn csp_volume_files(&self) -> Vec<PathBuf> {
        files_in(&self.csp_images().join("volumes"))
    }

    pub fn csp_snapshot_files(&self) -> Vec<PathBuf> {
        files_in(&self.csp_images().join("snapshots"))
    }

    pub fn csp_password(&self) -> String {
        std::fs::read_to_string(self.d.state.join("local-csp.password"))
            .expect("local-csp.password")
            .trim()
            .to_owned()
    }

    /// Secrets that address the embedded CSP explicitly, as a CO's Secret would.
    pub fn local_secrets(&self) -> Map {
        let port = self
            .csp_port
            .expect("daemon started with csp_port")
            .to_string();
        map(&[
            ("backend", "local-by-secret"),
            ("serviceName", "127.0.0.1"),
            ("servicePort", &port),
            ("username", "volbridge"),
            ("password", &self.csp_password()),
        ])
    }

    /// Registers another host at the embedded CSP (what a second node looks like to the
    /// controller): returns its uuid.
    pub fn register_other_node(&self) -> String {
        self.register_other_node_as(r#""access_protocol":"local""#)
    }

    /// Registers another host with these extra JSON fields (a protocol, initiators), as
    /// another driver would (the HPE CSI driver sends `iscsi` and the node's IQN).
    pub fn register_other_node_as(&self, fields: &str) -> String {
        let port = self.csp_port.expect("daemon started with csp_port");
        let uuid = random_uuid();
        let login = format!(
            r#"{{"username":"volbridge","password":"{}"}}"#,
            self.csp_password()
        );
        let (status, body) = http(port, "POST", "/containers/v1/tokens", None, &login);
        assert_eq!(status, 200, "CSP login: {body}");
        let token: serde_json::Value = serde_json::from_str(&body).unwrap();
        let token = token["session_token"].as_str().unwrap().to_owned();
        let host = format!(r#"{{"uuid":"{uuid}","name":"other-node",{fields}}}"#);
        let (status, body) = http(port, "POST", "/containers/v1/hosts", Some(&token), &host);
        assert_eq!(status, 200, "CSP host upsert: {body}");
        uuid
    }
}

pub struct Attached {
    pub id: String,
    pub ctx: Map,
    pub staging: String,
    pub target: String,
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn random_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .to_owned()
}

pub fn random_hex() -> String {
    random_uuid().replace('-', "")[..16].to_owned()
}

/// A minimal HTTP/1.1 exchange with the embedded CSP: (status, body).
pub fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect CSP");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("x-auth-token: {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAccept: application/json\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

// ---------------------------------------------------------------------------------------
// Data and host probes
// ---------------------------------------------------------------------------------------

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// Writes at an offset of a file or block device and flushes it to the device.
pub fn write_at(path: &str, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(data)?;
    f.sync_all()
}

pub fn read_at(path: &str, offset: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("read {len} bytes at {offset} of {path}: {e}"));
    buf
}

/// Writes a file inside a mounted volume, durably.
pub fn write_file(dir: &str, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(Path::new(dir).join(name))?;
    f.write_all(data)?;
    f.sync_all()
}

/// Filesystem size as `df` shows it.
pub fn df_bytes(path: &str) -> u64 {
    df_field(path, "size")
}

pub fn df_avail(path: &str) -> u64 {
    df_field(path, "avail")
}

pub fn df_size(path: &str) -> u64 {
    df_field(path, "size")
}

fn df_field(path: &str, field: &str) -> u64 {
    let out = Command::new("df")
        .args(["-B1", &format!("--output={field}"), path])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

/// Size of a block device (or of a file a block device is bound onto).
pub fn blockdev_size(path: &str) -> u64 {
    let out = Command::new("blockdev")
        .args(["--getsize64", path])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "blockdev --getsize64 {path}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// The filesystem type blkid finds on a device ("" when blank).
pub fn blkid_type(dev: &str) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn is_block_device(path: &str) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

pub fn timestamp_set(ts: &Option<prost_types::Timestamp>) -> bool {
    ts.as_ref().is_some_and(|t| t.seconds > 0)
}

/// Whether the top mount at `path` carries the `ro` mount option (mountinfo field 6).
pub fn mount_is_read_only(path: &str) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(path))
        .and_then(|l| l.split(' ').nth(5))
        .is_some_and(|opts| opts.split(',').any(|o| o == "ro"))
}

// ---------------------------------------------------------------------------------------
// A bare HTTP/2 client: any `:authority`, as gRPC clients other than tonic and grpc-go send
// ---------------------------------------------------------------------------------------

/// One HPACK literal without indexing, with a literal name (RFC 7541 §6.2.2).
fn hpack_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    hpack_string(out, name);
    hpack_string(out, value);
}

fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() < 127, "short strings only");
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Two unary calls of `path` on one HTTP/2 connection over `conn`, the way gRPC C-core
/// sends them: the first with `authority` as a literal the server adds to its HPACK table,
/// the second naming that table entry (index 62). Returns the answer message of each call
/// (the gRPC frame's payload), or what the server did instead (RST_STREAM, GOAWAY, a
/// trailers-only answer, silence).
pub fn h2_unary_twice<S: Read + Write>(
    mut conn: S,
    authority: &[u8],
    path: &str,
    message: &[u8],
) -> Result<[Vec<u8>; 2], String> {
    const DATA: u8 = 0x0;
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const ACK: u8 = 0x1;

    let mut grpc = vec![0u8];
    grpc.extend_from_slice(&(message.len() as u32).to_be_bytes());
    grpc.extend_from_slice(message);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(SETTINGS, 0, 0, &[]));
    for (stream, indexed) in [(1u32, false), (3, true)] {
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
        hpack_literal(&mut block, b":path", path.as_bytes());
        if indexed {
            block.push(0xbe); // dynamic table entry 62: the authority of the first call
        } else {
            block.push(0x41); // literal with incremental indexing, name :authority
            hpack_string(&mut block, authority);
        }
        hpack_literal(&mut block, b"content-type", b"application/grpc");
        hpack_literal(&mut block, b"te", b"trailers");
        out.extend(h2_frame(HEADERS, END_HEADERS, stream, &block));
        out.extend(h2_frame(DATA, END_STREAM, stream, &grpc));
    }
    conn.write_all(&out).map_err(|e| format!("send: {e}"))?;

    let mut data: [Vec<u8>; 2] = Default::default();
    let mut ended = [false; 2];
    let slot = |stream: u32| match stream {
        1 => Some(0),
        3 => Some(1),
        _ => None,
    };
    while !ended.iter().all(|e| *e) {
        let mut head = [0u8; 9];
        conn.read_exact(&mut head)
            .map_err(|e| format!("reading a frame (calls ended: {ended:?}): {e}"))?;
        let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload)
            .map_err(|e| format!("reading a frame's payload: {e}"))?;
        match kind {
            SETTINGS if flags & ACK == 0 => conn
                .write_all(&h2_frame(SETTINGS, ACK, 0, &[]))
                .map_err(|e| format!("SETTINGS ACK: {e}"))?,
            PING if flags & ACK == 0 => conn
                .write_all(&h2_frame(PING, ACK, 0, &payload))
                .map_err(|e| format!("PING ACK: {e}"))?,
            RST_STREAM => {
                let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                return Err(format!("RST_STREAM on stream {stream}, error code {code}"));
            }
            GOAWAY => {
                let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                return Err(format!("GOAWAY, error code {code}"));
            }
            DATA => {
                if let Some(i) = slot(stream) {
                    data[i].extend_from_slice(&payload);
                    ended[i] |= flags & END_STREAM != 0;
                }
            }
            HEADERS => {
                if let Some(i) = slot(stream) {
                    ended[i] |= flags & END_STREAM != 0;
                }
            }
            _ => {}
        }
    }
    let mut answers: [Vec<u8>; 2] = Default::default();
    for (i, d) in data.iter().enumerate() {
        if d.len() < 5 {
            return Err(format!(
                "call {} ended without an answer message (a trailers-only status)",
                i + 1
            ));
        }
        answers[i] = d[5..].to_vec();
    }
    Ok(answers)
}
