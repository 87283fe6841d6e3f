//! Docker Swarm cluster volumes through the CSI plugin flavour of `docker-plugin/csi/`.
//!
//! The daemon starts the way the plugin's `config.json` starts it (its entrypoint
//! arguments, `CSI_ENDPOINT` in the environment naming the socket Docker dials, the state
//! under a temp dir), with the embedded local CSP, as root with real loop devices, mkfs and
//! mounts. Each test then replays what Swarm's manager (moby/swarmkit `manager/csi`) and
//! agent (`agent/csi`) send, in their order and shapes: requests built the way swarmkit's
//! `makeCreateVolume`, `makeControllerPublishVolumeRequest`, `MakeCapability` and the node
//! plugin build them from `docker volume create --type … --scope … --sharing … --opt …`,
//! staging at `/data/staged/<swarm volume id>` and publishing at `/data/published/<swarm
//! volume id>` of the plugin's rootfs (here: `<temp>/plugin/data/…`), no Kubernetes keys.
//! `docs/swarm.md` lists the facts with their sources.
//!
//! Why a replay and not a real swarm: cluster volumes need Docker Engine 23 or newer (API
//! 1.42), and the test machines run Debian's docker.io 20.10, which has no cluster volumes
//! (`docker volume create --type` and `--mount type=cluster` do not exist there). What
//! 20.10 has is the managed plugin machinery Swarm relies on, unchanged since: the last
//! test runs the bundle of `build-rootfs.sh --csi` as a plugin in a private dockerd and
//! replays the same calls on the socket Docker dials, with the plugin's own paths, and
//! follows the published volume to the host path Swarm bind-mounts into a task.

mod common;
mod csi_support;
mod docker_support;

use csi::controller_client::ControllerClient;
use csi::identity_client::IdentityClient;
use csi::node_client::NodeClient;
use csi::volume_capability::{access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume};
use csi::VolumeCapability;
use csi_support::*;
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use tonic::transport::Channel;
use tonic::Code;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn plugin_config() -> Value {
    let path = repo().join("docker-plugin/csi/config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of an `Env` entry of the plugin's config.
fn env_entry<'a>(cfg: &'a Value, name: &str) -> Option<&'a Value> {
    cfg["Env"]
        .as_array()?
        .iter()
        .find(|e| e["Name"].as_str() == Some(name))
}

/// The value of a `--flag=value` of the entrypoint.
fn entrypoint_flag(cfg: &Value, flag: &str) -> Option<String> {
    strings(&cfg["Entrypoint"])
        .iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")).map(str::to_owned))
}

/// The socket inside the plugin's rootfs that `CSI_ENDPOINT` names.
fn plugin_socket(cfg: &Value) -> PathBuf {
    let value = env_entry(cfg, "CSI_ENDPOINT").expect("CSI_ENDPOINT in Env")["Value"]
        .as_str()
        .expect("CSI_ENDPOINT has a value");
    match volbridge::frontend::csi::Endpoint::parse(value) {
        Ok(volbridge::frontend::csi::Endpoint::Unix(p)) => p,
        other => panic!("CSI_ENDPOINT {value:?} is not a unix socket: {other:?}"),
    }
}

/// The entrypoint's arguments after `volbridge serve`, less the state dir and the admin
/// socket, which the test puts in its temp dir.
fn plugin_serve_args(cfg: &Value) -> Vec<String> {
    let entry = strings(&cfg["Entrypoint"]);
    assert_eq!(
        entry.get(..2),
        Some(&["/usr/bin/volbridge".to_owned(), "serve".to_owned()][..]),
        "the entrypoint runs volbridge serve"
    );
    entry[2..]
        .iter()
        .filter(|a| !a.starts_with("--state-dir=") && !a.starts_with("--admin-socket="))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------
// What swarmkit sends
// ---------------------------------------------------------------------------------------

/// `docker volume create --scope`.
#[derive(Clone, Copy, Debug)]
enum Scope {
    Single,
    Multi,
}

/// `docker volume create --sharing`.
#[derive(Clone, Copy, Debug)]
enum Sharing {
    None,
    ReadOnly,
    OneWriter,
    All,
}

/// The access mode swarmkit derives from scope and sharing (`MakeCapability` in
/// `internal/csi/capability/capability.go`).
fn swarm_mode(scope: Scope, sharing: Sharing) -> Mode {
    match (scope, sharing) {
        (Scope::Single, Sharing::ReadOnly) => Mode::SingleNodeReaderOnly,
        (Scope::Single, _) => Mode::SingleNodeWriter,
        (Scope::Multi, Sharing::ReadOnly) => Mode::MultiNodeReaderOnly,
        (Scope::Multi, Sharing::OneWriter) => Mode::MultiNodeSingleWriter,
        (Scope::Multi, Sharing::All) => Mode::MultiNodeMultiWriter,
        // swarmkit leaves the mode unset for this pair (UNKNOWN).
        (Scope::Multi, Sharing::None) => Mode::Unknown,
    }
}

/// `--type mount` gives an empty mount (the CLI sets no fs type or flags), `--type block`
/// an empty block.
fn swarm_capability(access: Access, scope: Scope, sharing: Sharing) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(match access {
            Access::Mount => AccessType::Mount(MountVolume::default()),
            Access::Block => AccessType::Block(BlockVolume {}),
        }),
        access_mode: Some(AccessMode {
            mode: swarm_mode(scope, sharing) as i32,
        }),
    }
}

/// The manager's ControllerPublishVolume capability: the volume's mode, the access type
/// replaced by an empty mount whatever the volume is (`makeControllerPublishVolumeRequest`).
fn swarm_publish_capability(scope: Scope, sharing: Sharing) -> VolumeCapability {
    swarm_capability(Access::Mount, scope, sharing)
}

/// A swarmkit object id (`identity.NewID`): 25 characters of base 36.
fn swarm_id() -> String {
    let bytes = std::fs::read("/proc/sys/kernel/random/uuid").unwrap();
    let mut n =
        u128::from_str_radix(&String::from_utf8_lossy(&bytes).trim().replace('-', ""), 16).unwrap();
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    for _ in 0..25 {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
    }
    String::from_utf8(out).unwrap()
}

/// `docker volume create` of a cluster volume, as the manager turns it into CreateVolume.
struct ClusterVolume {
    name: String,
    /// `--opt`: `Spec.Driver.Options`, sent as `parameters`.
    opts: Map,
    access: Access,
    scope: Scope,
    sharing: Sharing,
    /// `--required-bytes`, `--limit-bytes`: 0 when not given (the CLI always sends a range).
    required: i64,
    limit: i64,
}

impl ClusterVolume {
    fn create_request(&self) -> csi::CreateVolumeRequest {
        csi::CreateVolumeRequest {
            name: self.name.clone(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: self.required,
                limit_bytes: self.limit,
            }),
            volume_capabilities: vec![self.capability()],
            parameters: self.opts.clone(),
            // The CLI always sends a requirement, empty without `--topology-*`.
            accessibility_requirements: Some(csi::TopologyRequirement::default()),
            // No `--secret`: the default backend serves. No content source, ever.
            ..Default::default()
        }
    }

    fn capability(&self) -> VolumeCapability {
        swarm_capability(self.access, self.scope, self.sharing)
    }
}

/// The CSI socket of one plugin as Swarm reaches it, and where the plugin's rootfs is seen
/// from here: a daemon started like the plugin with a stand-in rootfs under its temp dir
/// (`rig`), or the plugin itself in a real dockerd (its rootfs is `/` to it).
struct SwarmNode {
    rig: Option<Rig>,
    ch: Channel,
    root: PathBuf,
}

/// What a Swarm node keeps about a volume placed on it (a `VolumeAssignment`).
struct Assignment {
    /// The swarm object id: the last component of the staging and publish paths.
    swarm_id: String,
    volume: csi::Volume,
    publish_context: Map,
    capability: VolumeCapability,
}

impl SwarmNode {
    async fn start(tag: &str) -> Option<SwarmNode> {
        let cfg = plugin_config();
        let args = plugin_serve_args(&cfg);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let socket = plugin_socket(&cfg);
        let in_rig = format!("plugin{}", socket.display());
        let rig = Rig::start_with(
            tag,
            RigOptions {
                extra: &argv,
                endpoint_in_env: Some(&in_rig),
                ..Default::default()
            },
        )
        .await?;
        let root = rig.path("plugin");
        // Docker makes the propagated mount before it starts the plugin; the staging root
        // is left to the plugin (swarmkit makes no directory).
        let published = root.join(config_propagated_mount(&cfg));
        std::fs::create_dir_all(&published).unwrap();
        Some(SwarmNode {
            ch: rig.ch.clone(),
            rig: Some(rig),
            root,
        })
    }

    /// The daemon started like the plugin (for the replays that look at the host).
    fn rig(&self) -> &Rig {
        self.rig.as_ref().expect("a daemon started by the test")
    }

    fn ident(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.ch.clone())
    }
    fn ctrl(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.ch.clone())
    }
    fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.ch.clone())
    }

    fn staged(&self, swarm_id: &str) -> String {
        self.root
            .join("data/staged")
            .join(swarm_id)
            .display()
            .to_string()
    }

    fn published(&self, swarm_id: &str) -> String {
        self.root
            .join("data/published")
            .join(swarm_id)
            .display()
            .to_string()
    }

    /// The agent's connection (`nodePlugin.init`), then the node description it reports
    /// (`NodeGetInfo`): the CSI node id the manager publishes to.
    async fn agent_connects(&self) -> String {
        let r = self;
        let probe = ok(
            t(r.ident().probe(csi::ProbeRequest {})).await,
            "agent Probe",
        );
        assert_eq!(probe.ready, Some(true), "agent Probe: ready");
        let caps = ok(
            t(r.node()
                .node_get_capabilities(csi::NodeGetCapabilitiesRequest {}))
            .await,
            "NodeGetCapabilities",
        );
        use csi::node_service_capability::{rpc::Type, Type as T};
        let staging = caps.capabilities.iter().any(
            |c| matches!(&c.r#type, Some(T::Rpc(rpc)) if rpc.r#type() == Type::StageUnstageVolume),
        );
        assert!(
            staging,
            "STAGE_UNSTAGE_VOLUME: the agent stages only when it is offered"
        );
        let info = ok(
            t(r.node().node_get_info(csi::NodeGetInfoRequest {})).await,
            "NodeGetInfo",
        );
        assert!(!info.node_id.is_empty(), "NodeGetInfo: a node id");
        let again = ok(
            t(r.node().node_get_info(csi::NodeGetInfoRequest {})).await,
            "NodeGetInfo again",
        );
        assert_eq!(
            info.node_id, again.node_id,
            "NodeGetInfo: the same id every time"
        );
        info.node_id
    }

    /// The manager's connection (`plugin.init`): Probe, then the capabilities that tell it
    /// to call CreateVolume and ControllerPublishVolume at all.
    async fn manager_connects(&self) {
        let r = self;
        let probe = ok(
            t(r.ident().probe(csi::ProbeRequest {})).await,
            "manager Probe",
        );
        assert_eq!(probe.ready, Some(true), "manager Probe: ready");
        let caps = ok(
            t(r.ident()
                .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {}))
            .await,
            "GetPluginCapabilities",
        );
        use csi::plugin_capability::{service::Type as S, Type as P};
        let controller = caps.capabilities.iter().any(
            |c| matches!(&c.r#type, Some(P::Service(s)) if s.r#type() == S::ControllerService),
        );
        assert!(
            controller,
            "CONTROLLER_SERVICE: without it Swarm never calls CreateVolume"
        );
        let caps = ok(
            t(r.ctrl()
                .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {}))
            .await,
            "ControllerGetCapabilities",
        );
        use csi::controller_service_capability::{rpc::Type as R, Type as C};
        let publisher = caps.capabilities.iter().any(
            |c| matches!(&c.r#type, Some(C::Rpc(rpc)) if rpc.r#type() == R::PublishUnpublishVolume),
        );
        assert!(
            publisher,
            "PUBLISH_UNPUBLISH_VOLUME: without it Swarm sends no publish context"
        );
    }

    /// The manager's CreateVolume; it retries with the same request until it gets an
    /// answer, so a second one must give the same volume.
    async fn create(&self, v: &ClusterVolume) -> csi::Volume {
        let first = ok(
            t(self.ctrl().create_volume(v.create_request())).await,
            "CreateVolume",
        )
        .volume
        .expect("CreateVolume answers a volume");
        let again = ok(
            t(self.ctrl().create_volume(v.create_request())).await,
            "CreateVolume retried",
        )
        .volume
        .expect("a volume");
        assert_eq!(first, again, "the manager's retry gets the same volume");
        first
    }

    /// The manager's ControllerPublishVolume for the node that reported `node_id`.
    async fn controller_publish(
        &self,
        volume: &csi::Volume,
        v: &ClusterVolume,
        node_id: &str,
    ) -> Map {
        let req = csi::ControllerPublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            node_id: node_id.to_owned(),
            volume_capability: Some(swarm_publish_capability(v.scope, v.sharing)),
            volume_context: volume.volume_context.clone(),
            // Swarm never sets `readonly`; a read-only volume says so in its mode.
            ..Default::default()
        };
        ok(
            t(self.ctrl().controller_publish_volume(req)).await,
            "ControllerPublishVolume",
        )
        .publish_context
    }

    async fn controller_unpublish(&self, volume_id: &str, node_id: &str) {
        let req = csi::ControllerUnpublishVolumeRequest {
            volume_id: volume_id.to_owned(),
            node_id: node_id.to_owned(),
            ..Default::default()
        };
        ok(
            t(self.ctrl().controller_unpublish_volume(req)).await,
            "ControllerUnpublishVolume",
        );
    }

    async fn delete(&self, volume_id: &str) {
        let req = csi::DeleteVolumeRequest {
            volume_id: volume_id.to_owned(),
            ..Default::default()
        };
        ok(t(self.ctrl().delete_volume(req)).await, "DeleteVolume");
    }

    fn stage_request(&self, a: &Assignment) -> csi::NodeStageVolumeRequest {
        csi::NodeStageVolumeRequest {
            volume_id: a.volume.volume_id.clone(),
            publish_context: a.publish_context.clone(),
            staging_target_path: self.staged(&a.swarm_id),
            volume_capability: Some(a.capability.clone()),
            volume_context: a.volume.volume_context.clone(),
            ..Default::default()
        }
    }

    /// The agent's `publishVolume`: NodeStageVolume, then NodePublishVolume, every attempt.
    async fn agent_publishes(&self, a: &Assignment) {
        ok(
            t(self.node().node_stage_volume(self.stage_request(a))).await,
            "NodeStageVolume",
        );
        let req = csi::NodePublishVolumeRequest {
            volume_id: a.volume.volume_id.clone(),
            publish_context: a.publish_context.clone(),
            staging_target_path: self.staged(&a.swarm_id),
            target_path: self.published(&a.swarm_id),
            volume_capability: Some(a.capability.clone()),
            volume_context: a.volume.volume_context.clone(),
            ..Default::default()
        };
        ok(
            t(self.node().node_publish_volume(req)).await,
            "NodePublishVolume",
        );
    }

    /// The agent's NodeUnpublishVolume: the volume id and the target, nothing else.
    async fn agent_unpublishes(&self, a: &Assignment) {
        let req = csi::NodeUnpublishVolumeRequest {
            volume_id: a.volume.volume_id.clone(),
            target_path: self.published(&a.swarm_id),
        };
        ok(
            t(self.node().node_unpublish_volume(req)).await,
            "NodeUnpublishVolume",
        );
    }

    /// NodeUnstageVolume, as the agent sends it when it does (see `docs/swarm.md`).
    async fn agent_unstages(&self, a: &Assignment) {
        let req = csi::NodeUnstageVolumeRequest {
            volume_id: a.volume.volume_id.clone(),
            staging_target_path: self.staged(&a.swarm_id),
        };
        ok(
            t(self.node().node_unstage_volume(req)).await,
            "NodeUnstageVolume",
        );
    }

    /// Nothing of the volume is left on the node: no loop device, no mount, neither the
    /// staging nor the publish directory.
    #[track_caller]
    fn assert_node_clean(&self, a: &Assignment) {
        self.rig().assert_nothing_left();
        for dir in [self.staged(&a.swarm_id), self.published(&a.swarm_id)] {
            assert!(!Path::new(&dir).exists(), "{dir} is left behind");
        }
    }
}

fn config_propagated_mount(cfg: &Value) -> String {
    cfg["PropagatedMount"]
        .as_str()
        .expect("PropagatedMount")
        .trim_start_matches('/')
        .to_owned()
}

// =======================================================================================
// The plugin's config.json and bundle
// =======================================================================================

/// What moby requires of a CSI plugin's config.json (`docs/cluster_volumes.md`,
/// `daemon/pkg/plugin/v2/plugin_linux.go`, `manager_linux.go`) and what volbridge needs
/// inside it (its state and admin socket on host mounts, CSI on).
#[test]
fn plugin_config_is_what_moby_and_volbridge_need() {
    let cfg = plugin_config();
    let mut c = Checks::new();

    // Interface: both CSI types (a combined plugin); Docker dials Socket in the directory
    // it binds at /run/docker/plugins.
    let types = strings(&cfg["Interface"]["Types"]);
    c.eq(
        types.clone(),
        vec![
            "docker.csicontroller/1.0".to_owned(),
            "docker.csinode/1.0".to_owned(),
        ],
        "Interface.Types",
    );
    let socket = cfg["Interface"]["Socket"].as_str().unwrap_or_default();
    c.check(
        !socket.is_empty() && !socket.contains('/') && socket.ends_with(".sock"),
        format!("Interface.Socket {socket:?} is a file name"),
    );
    c.check(
        cfg["Interface"].get("ProtocolScheme").is_none(),
        "no ProtocolScheme: swarmkit dials the socket with gRPC whatever it says",
    );
    c.eq(
        plugin_socket(&cfg),
        Path::new("/run/docker/plugins").join(socket),
        "CSI_ENDPOINT names Interface.Socket under /run/docker/plugins",
    );
    let endpoint = env_entry(&cfg, "CSI_ENDPOINT").unwrap();
    c.check(
        strings(&endpoint["Settable"]).is_empty(),
        "CSI_ENDPOINT is not settable: it must match Interface.Socket",
    );

    // The published path swarmkit hard-codes is the propagated mount.
    c.eq(
        cfg["PropagatedMount"].as_str(),
        Some("/data/published"),
        "PropagatedMount",
    );
    c.eq(
        strings(&cfg["Linux"]["Capabilities"]),
        vec!["CAP_SYS_ADMIN".to_owned()],
        "Linux.Capabilities",
    );
    c.eq(
        cfg["Linux"]["AllowAllDevices"].as_bool(),
        Some(true),
        "Linux.AllowAllDevices (loop devices appear at attach time)",
    );
    c.eq(
        cfg["Network"]["Type"].as_str(),
        Some("host"),
        "Network.Type (remote CSPs, iSCSI, NVMe/TCP)",
    );

    // Mounts: every one has a source (moby refuses one without), none hides what Docker
    // mounts itself, and the daemon's state and admin socket live on host mounts.
    let mounts = cfg["Mounts"].as_array().cloned().unwrap_or_default();
    let dest_of = |name: &str| {
        mounts
            .iter()
            .find(|m| m["Name"].as_str() == Some(name))
            .and_then(|m| m["Destination"].as_str())
            .map(PathBuf::from)
    };
    for m in &mounts {
        let name = m["Name"].as_str().unwrap_or("?");
        let dest = m["Destination"].as_str().unwrap_or_default();
        c.check(
            m["Source"].as_str().is_some_and(|s| s.starts_with('/')),
            format!("mount {name}: an absolute Source"),
        );
        c.check(
            dest.starts_with('/')
                && !Path::new(dest).starts_with("/run/docker/plugins")
                && !Path::new(dest).starts_with("/data"),
            format!("mount {name}: Destination {dest} clashes with Docker's own mounts"),
        );
        c.eq(
            m["Type"].as_str(),
            Some("bind"),
            &format!("mount {name}: Type"),
        );
    }
    c.eq(dest_of("dev"), Some(PathBuf::from("/dev")), "the dev mount");
    let state_dir = entrypoint_flag(&cfg, "--state-dir").map(PathBuf::from);
    c.eq(
        dest_of("state"),
        state_dir,
        "the state mount holds --state-dir",
    );
    let admin = entrypoint_flag(&cfg, "--admin-socket").map(PathBuf::from);
    c.eq(
        dest_of("run"),
        admin
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf),
        "the run mount holds --admin-socket",
    );
    let volume_plugin: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docker-plugin/config.json")).unwrap(),
    )
    .unwrap();
    let source = |cfg: &Value, name: &str| {
        cfg["Mounts"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["Name"].as_str() == Some(name)))
            .map(|m| m["Source"].clone())
    };
    for name in ["state", "run"] {
        c.check(
            source(&cfg, name) != source(&volume_plugin, name),
            format!("mount {name}: a host Source apart from the volume plugin's (two daemons cannot share one)"),
        );
    }

    // The entrypoint starts CSI for Swarm, and nothing else: `config show` with the same
    // arguments and environment is the daemon's configuration.
    let dir = common::TempDir::new("swarm-config");
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let endpoint_value = endpoint["Value"].as_str().unwrap();
    let out = Command::new(common::BIN)
        .args(["-O", "json", "config", "show", "--config"])
        .arg(&empty)
        .args(&strings(&cfg["Entrypoint"])[2..])
        .env("CSI_ENDPOINT", endpoint_value)
        .env_remove("VOLBRIDGE_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "volbridge config show with the entrypoint's arguments: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).expect("config show prints JSON");
    c.eq(
        shown["csi"]["endpoint"].as_str(),
        Some(endpoint_value),
        "csi.endpoint from CSI_ENDPOINT",
    );
    c.eq(
        shown["csi"]["orchestrator"].as_str(),
        Some("swarm"),
        "csi.orchestrator",
    );
    c.eq(shown["csi"]["mode"].as_str(), Some("all"), "csi.mode");
    c.eq(
        shown["docker"]["enabled"].as_bool(),
        Some(false),
        "the Docker volume front end stays off",
    );
    c.finish();
}

/// `build-rootfs.sh --csi` makes a bundle with this config and the directories it names.
#[test]
fn plugin_bundle_has_the_csi_config_and_directories() {
    let dir = common::TempDir::new("swarm-bundle");
    let out = dir.path().join("bundle");
    let run = Command::new("bash")
        .arg(repo().join("docker-plugin/build-rootfs.sh"))
        .args(["--binary", common::BIN, "--csi"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "build-rootfs.sh --csi failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let bundled: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(bundled, plugin_config(), "the bundle's config.json");
    let rootfs = out.join("rootfs");
    for d in [
        "data/published",
        "data/staged",
        "run/docker/plugins",
        "var/lib/volbridge",
    ] {
        assert!(rootfs.join(d).is_dir(), "rootfs/{d} is missing");
    }
    assert!(
        !rootfs.join("mnt/volbridge").exists(),
        "the volume plugin's propagated mount does not belong in the CSI bundle"
    );
    assert!(
        rootfs.join("usr/bin/volbridge").is_file(),
        "rootfs/usr/bin/volbridge"
    );

    let bad = Command::new("bash")
        .arg(repo().join("docker-plugin/build-rootfs.sh"))
        .arg("--csi")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("usage: build-rootfs.sh"),
        "--csi without OUT: {err}"
    );
}

// =======================================================================================
// Replays
// =======================================================================================

/// The plugin connects as both the manager and the agent see it; GetPluginInfo is not in
/// Swarm's sequence (the driver name is the plugin's name) but `docker plugin` users see it.
#[tokio::test]
async fn swarm_connects_as_manager_and_agent() {
    let Some(n) = SwarmNode::start("swarm-connect").await else {
        return;
    };
    n.agent_connects().await;
    n.manager_connects().await;
    let info = ok(
        t(n.ident().get_plugin_info(csi::GetPluginInfoRequest {})).await,
        "GetPluginInfo",
    );
    assert_eq!(info.name, DRIVER);
    let socket = n.rig().path(&format!(
        "plugin{}",
        plugin_socket(&plugin_config()).display()
    ));
    let mode = std::fs::metadata(&socket).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o660, "{} mode", socket.display());
}

/// `docker volume create --type mount --scope single --sharing none --required-bytes 64M
/// --opt fsOwner=… --opt fsMode=…`, a service task placed on this node, the task removed,
/// the volume removed; the agent sends NodeUnstageVolume (as swarmkit does after an agent
/// restart, and everywhere once moby/swarmkit#3178 is merged).
#[tokio::test]
async fn swarm_mount_volume_cycle() {
    let Some(n) = SwarmNode::start("swarm-mount").await else {
        return;
    };
    let node_id = n.agent_connects().await;
    n.manager_connects().await;
    let v = ClusterVolume {
        name: "pgdata".into(),
        opts: map(&[("fsOwner", "1000:1000"), ("fsMode", "2770")]),
        access: Access::Mount,
        scope: Scope::Single,
        sharing: Sharing::None,
        required: 64 * MIB,
        limit: 0,
    };
    let volume = n.create(&v).await;
    assert_eq!(volume.volume_id, "pgdata");
    assert!(volume.capacity_bytes >= 64 * MIB, "{volume:?}");
    let a = Assignment {
        swarm_id: swarm_id(),
        publish_context: n.controller_publish(&volume, &v, &node_id).await,
        capability: v.capability(),
        volume,
    };
    // The agent retries publishVolume until it succeeds, so it may repeat both calls.
    n.agent_publishes(&a).await;
    n.agent_publishes(&a).await;
    let staged = n.staged(&a.swarm_id);
    let published = n.published(&a.swarm_id);
    assert_eq!(n.rig().mounts_at(&staged), 1, "one mount at {staged}");
    assert_eq!(n.rig().mounts_at(&published), 1, "one mount at {published}");
    assert_eq!(
        n.rig().loops_of(&a.publish_context).len(),
        1,
        "one loop device"
    );

    // The task writes through the published path; the options reached the filesystem.
    let meta = std::fs::metadata(&published).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000), "--opt fsOwner");
    assert_eq!(meta.mode() & 0o7777, 0o2770, "--opt fsMode");
    let data = pattern(1 << 20, 7);
    write_file(&published, "table.dat", &data).unwrap();
    assert_eq!(
        std::fs::read(Path::new(&published).join("table.dat")).unwrap(),
        data
    );
    assert_eq!(
        std::fs::read(Path::new(&staged).join("table.dat")).unwrap(),
        data,
        "the published path is the staged filesystem"
    );

    n.agent_unpublishes(&a).await;
    // Swarm rule 1 (docs/swarm.md): the last unpublish has unstaged the volume already.
    assert!(
        n.rig().loops_of(&a.publish_context).is_empty(),
        "still attached after the last NodeUnpublishVolume"
    );
    n.agent_unstages(&a).await;
    n.controller_unpublish(&a.volume.volume_id, &node_id).await;
    n.delete(&a.volume.volume_id).await;
    n.assert_node_clean(&a);
    assert!(
        n.rig().csp_volume_files().is_empty(),
        "the CSP still holds a volume file"
    );
}

/// The sequence swarmkit sends today: its agent returns from NodeUnstageVolume without
/// calling the plugin (moby/swarmkit#3178), so the manager's ControllerUnpublishVolume
/// follows NodeUnpublishVolume directly. The task is then placed again (the data is still
/// there) and the volume removed; nothing stays attached or mounted.
#[tokio::test]
async fn swarm_cycle_without_node_unstage() {
    let Some(n) = SwarmNode::start("swarm-nounstage").await else {
        return;
    };
    let node_id = n.agent_connects().await;
    n.manager_connects().await;
    let v = ClusterVolume {
        name: "cache".into(),
        opts: map(&[("description", "swarm cache")]),
        access: Access::Mount,
        scope: Scope::Single,
        sharing: Sharing::OneWriter,
        required: 32 * MIB,
        limit: 64 * MIB,
    };
    let volume = n.create(&v).await;
    assert!(
        (32 * MIB..=64 * MIB).contains(&volume.capacity_bytes),
        "{volume:?}"
    );
    let data = pattern(64 << 10, 3);
    let mut last = None;
    for round in 0..2 {
        let a = Assignment {
            swarm_id: swarm_id(),
            publish_context: n.controller_publish(&volume, &v, &node_id).await,
            capability: v.capability(),
            volume: volume.clone(),
        };
        n.agent_publishes(&a).await;
        let published = n.published(&a.swarm_id);
        if round == 0 {
            write_file(&published, "kept", &data).unwrap();
        } else {
            assert_eq!(
                std::fs::read(Path::new(&published).join("kept")).unwrap(),
                data,
                "the data of the first placement"
            );
        }
        n.agent_unpublishes(&a).await;
        n.controller_unpublish(&a.volume.volume_id, &node_id).await;
        n.assert_node_clean(&a);
        last = Some(a);
    }
    let a = last.unwrap();
    n.delete(&a.volume.volume_id).await;
    n.assert_node_clean(&a);
    assert!(
        n.rig().csp_volume_files().is_empty(),
        "the CSP still holds a volume file"
    );
}

/// `docker volume create --type block --scope multi --sharing all` (the CLI's default type
/// is block): MULTI_NODE_MULTI_WRITER with block access. The manager's
/// ControllerPublishVolume says "mount" for it (Swarm rule 2); the node gets a device file
/// at the published path. A mount capability of that mode is still refused where a
/// filesystem would be mounted.
#[tokio::test]
async fn swarm_block_volume_for_many_nodes() {
    let Some(n) = SwarmNode::start("swarm-block").await else {
        return;
    };
    let node_id = n.agent_connects().await;
    n.manager_connects().await;
    let v = ClusterVolume {
        name: "raw".into(),
        opts: Map::new(),
        access: Access::Block,
        scope: Scope::Multi,
        sharing: Sharing::All,
        required: 0,
        limit: 0,
    };
    let volume = n.create(&v).await;
    assert_eq!(
        volume.capacity_bytes, GIB,
        "no --required-bytes: the default size"
    );
    let a = Assignment {
        swarm_id: swarm_id(),
        publish_context: n.controller_publish(&volume, &v, &node_id).await,
        capability: v.capability(),
        volume,
    };

    let mut as_mount = n.stage_request(&a);
    as_mount.volume_capability = Some(swarm_capability(Access::Mount, v.scope, v.sharing));
    let refused = err(
        t(n.node().node_stage_volume(as_mount)).await,
        Code::InvalidArgument,
        "NodeStageVolume of MULTI_NODE_MULTI_WRITER as a mount",
    );
    assert!(
        refused.message().contains("shared filesystem"),
        "{}",
        refused.message()
    );

    n.agent_publishes(&a).await;
    let published = n.published(&a.swarm_id);
    assert!(is_block_device(&published), "{published} is a block device");
    let block = pattern(4096 * 3, 9);
    write_at(&published, 5 * MIB as u64, &block).unwrap();
    assert_eq!(read_at(&published, 5 * MIB as u64, block.len()), block);

    n.agent_unpublishes(&a).await;
    n.controller_unpublish(&a.volume.volume_id, &node_id).await;
    n.delete(&a.volume.volume_id).await;
    n.assert_node_clean(&a);
}

/// `--type mount --scope multi` (read-write or `--sharing readonly`): a filesystem on many
/// nodes at once, which no volbridge backend can share. The manager's CreateVolume gets a
/// reason and what to use instead.
#[tokio::test]
async fn swarm_mount_volume_for_many_nodes_is_refused_with_a_reason() {
    let Some(n) = SwarmNode::start("swarm-multimount").await else {
        return;
    };
    n.manager_connects().await;
    for (sharing, mode) in [
        (Sharing::All, "MULTI_NODE_MULTI_WRITER"),
        (Sharing::ReadOnly, "MULTI_NODE_READER_ONLY"),
    ] {
        let v = ClusterVolume {
            name: "shared".into(),
            opts: Map::new(),
            access: Access::Mount,
            scope: Scope::Multi,
            sharing,
            required: 0,
            limit: 0,
        };
        let refused = err(
            t(n.ctrl().create_volume(v.create_request())).await,
            Code::InvalidArgument,
            &format!("CreateVolume --type mount --scope multi --sharing {sharing:?}"),
        );
        let msg = refused.message();
        assert!(msg.contains(mode) && msg.contains("block"), "{msg}");
    }
    assert!(n.rig().csp_volume_files().is_empty(), "nothing was created");
}

/// The bundle as a managed plugin in a real (private) dockerd: Docker starts it with
/// `CSI_ENDPOINT` and finds the socket it dials (`/run/docker/plugins/<id>/<Socket>`); the
/// replay stages and publishes at the plugin's `/data/staged/<id>` and
/// `/data/published/<id>`; the volume shows on the host at
/// `<data-root>/plugins/<id>/propagated-mount/<id>` (moby's `ScopedPath`), and a container
/// bound to that path, as Swarm's executor binds it, sees the data. The plugin restarts
/// meanwhile and the agent's retry finds the volume whole; at the end the plugin leaves
/// nothing attached or mounted.
#[tokio::test]
async fn plugin_in_a_real_dockerd_publishes_where_swarm_looks() {
    let test = "plugin_in_a_real_dockerd_publishes_where_swarm_looks";
    if !docker_support::require_dockerd(test) {
        return;
    }
    let dir = common::TempDir::new("swarm-dockerd");
    let _cleanup = common::HostCleanup(dir.path().to_path_buf());
    let bundle = dir.path().join("bundle");
    let built = Command::new("bash")
        .arg(repo().join("docker-plugin/build-rootfs.sh"))
        .args(["--binary", common::BIN, "--csi"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "build-rootfs.sh --csi: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let mut dockerd = docker_support::Dockerd::start(dir.path());
    let d = &dockerd;
    let name = "vbswarm:latest";
    let (state, run, etc) = (
        dir.path().join("plugin-state"),
        dir.path().join("plugin-run"),
        dir.path().join("plugin-etc"),
    );
    for p in [&state, &run, &etc] {
        std::fs::create_dir_all(p).unwrap();
    }
    d.ok(&["plugin", "create", name, bundle.to_str().unwrap()]);
    d.ok(&[
        "plugin",
        "set",
        name,
        &format!("state.source={}", state.display()),
        &format!("run.source={}", run.display()),
        &format!("config.source={}", etc.display()),
    ]);
    d.ok(&["plugin", "enable", name]);
    let id = d
        .ok(&["plugin", "inspect", name, "-f", "{{.Id}}"])
        .trim()
        .to_owned();
    let cfg = plugin_config();
    let socket_name = cfg["Interface"]["Socket"].as_str().unwrap();
    // On Linux the plugins' exec root is static, whatever dockerd's --exec-root (moby
    // `daemon/daemon_linux.go`, `getPluginExecRoot`: socket paths are limited to 108 bytes).
    let socket = Path::new("/run/docker/plugins").join(&id).join(socket_name);
    let plugin_log = || {
        std::fs::read_to_string(&d.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&id))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        docker_support::eventually(std::time::Duration::from_secs(15), || socket.exists()),
        "Docker's socket path {} does not exist; the plugin's log:\n{}",
        socket.display(),
        plugin_log()
    );
    let n = SwarmNode {
        rig: None,
        ch: volbridge::frontend::csi::Endpoint::Unix(socket.clone())
            .channel()
            .unwrap(),
        root: PathBuf::from("/"),
    };
    let node_id = n.agent_connects().await;
    n.manager_connects().await;
    let v = ClusterVolume {
        name: "web".into(),
        opts: map(&[("fsMode", "0777")]),
        access: Access::Mount,
        scope: Scope::Single,
        sharing: Sharing::None,
        required: 32 * MIB,
        limit: 0,
    };
    let volume = n.create(&v).await;
    let a = Assignment {
        swarm_id: swarm_id(),
        publish_context: n.controller_publish(&volume, &v, &node_id).await,
        capability: v.capability(),
        volume,
    };
    // The plugin's loop device, known by the image's file name (the kernel shows the
    // backing file as the plugin sees it).
    let image = Path::new(&a.publish_context["localPath"])
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let loops_of_image = || {
        docker_support::loop_devices()
            .into_iter()
            .filter(|(_, file)| file.ends_with(&image))
            .map(|(dev, _)| dev)
            .collect::<Vec<_>>()
    };
    n.agent_publishes(&a).await;
    assert_eq!(
        n.staged(&a.swarm_id),
        format!("/data/staged/{}", a.swarm_id)
    );
    let host_path = dockerd
        .data_root
        .join("plugins")
        .join(&id)
        .join("propagated-mount")
        .join(&a.swarm_id);
    assert!(
        common::mounts_under(dir.path())
            .iter()
            .any(|m| Path::new(m) == host_path),
        "{} is not a mount on the host: the publish did not propagate",
        host_path.display()
    );
    let bind = format!("{}:/data", host_path.display());
    d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &bind,
        docker_support::IMAGE,
        "sh",
        "-c",
        "echo from-a-task > /data/f",
    ]);
    assert_eq!(
        std::fs::read_to_string(host_path.join("f")).unwrap(),
        "from-a-task\n"
    );
    assert_eq!(loops_of_image().len(), 1, "one loop device for the volume");

    // Docker restarts the plugin (its container, and the staging mount inside it, go;
    // the publish stays on the host side of the propagated mount). The agent's next
    // attempt stages and publishes again; the volume is whole and attached once.
    d.ok(&["plugin", "disable", "-f", name]);
    d.ok(&["plugin", "enable", name]);
    let n = SwarmNode {
        rig: None,
        ch: volbridge::frontend::csi::Endpoint::Unix(socket)
            .channel()
            .unwrap(),
        root: PathBuf::from("/"),
    };
    n.agent_connects().await;
    n.agent_publishes(&a).await;
    assert_eq!(
        std::fs::read_to_string(host_path.join("f")).unwrap(),
        "from-a-task\n",
        "the data after a plugin restart"
    );
    assert_eq!(
        loops_of_image().len(),
        1,
        "one loop device after the restart"
    );

    n.agent_unpublishes(&a).await;
    assert!(
        !common::mounts_under(dir.path())
            .iter()
            .any(|m| Path::new(m) == host_path),
        "{} is still mounted after NodeUnpublishVolume",
        host_path.display()
    );
    assert!(
        loops_of_image().is_empty(),
        "still attached after the last unpublish"
    );
    n.agent_unstages(&a).await;
    n.controller_unpublish(&a.volume.volume_id, &node_id).await;
    n.delete(&a.volume.volume_id).await;
    d.ok(&["plugin", "disable", name]);
    d.ok(&["plugin", "rm", name]);
    dockerd.stop();
    assert!(
        docker_support::eventually(std::time::Duration::from_secs(10), || {
            common::mounts_under(dir.path()).is_empty()
        }),
        "mounts left: {:?}",
        common::mounts_under(dir.path())
    );
    assert!(
        loops_of_image().is_empty(),
        "the volume's loop device is left"
    );
}

/// The staging-directory rule is the same for every CO: one the CO made (kubelet) is left
/// for it after NodeUnstageVolume; one it did not make (Swarm) is made by the stage and
/// removed by the unstage. Here the CO makes it first, as kubelet does.
#[tokio::test]
async fn a_staging_directory_the_co_made_is_left_to_it() {
    let Some(n) = SwarmNode::start("swarm-codir").await else {
        return;
    };
    let node_id = n.agent_connects().await;
    let v = ClusterVolume {
        name: "kept-dir".into(),
        opts: Map::new(),
        access: Access::Mount,
        scope: Scope::Single,
        sharing: Sharing::None,
        required: 16 * MIB,
        limit: 0,
    };
    let volume = n.create(&v).await;
    let a = Assignment {
        swarm_id: swarm_id(),
        publish_context: n.controller_publish(&volume, &v, &node_id).await,
        capability: v.capability(),
        volume,
    };
    let staged = n.staged(&a.swarm_id);
    std::fs::create_dir_all(&staged).unwrap();
    n.agent_publishes(&a).await;
    n.agent_unpublishes(&a).await;
    n.agent_unstages(&a).await;
    assert!(
        Path::new(&staged).is_dir(),
        "{staged}, made by the CO, was removed"
    );
    assert_eq!(n.rig().mounts_at(&staged), 0, "{staged} is still mounted");
    std::fs::remove_dir(&staged).unwrap();
    n.controller_unpublish(&a.volume.volume_id, &node_id).await;
    n.delete(&a.volume.volume_id).await;
    n.assert_node_clean(&a);
}

/// `--opt fsOwner=alice`: the stage fails with the option's name and what it accepts, and
/// leaves neither a mount, a loop device nor the staging directory it made (the agent's
/// retry must not find a directory it would take for its own).
#[tokio::test]
async fn a_bad_opt_fails_the_stage_by_name_and_leaves_nothing() {
    let Some(n) = SwarmNode::start("swarm-badopt").await else {
        return;
    };
    let node_id = n.agent_connects().await;
    let v = ClusterVolume {
        name: "badowner".into(),
        opts: map(&[("fsOwner", "alice")]),
        access: Access::Mount,
        scope: Scope::Single,
        sharing: Sharing::None,
        required: 16 * MIB,
        limit: 0,
    };
    let volume = n.create(&v).await;
    let a = Assignment {
        swarm_id: swarm_id(),
        publish_context: n.controller_publish(&volume, &v, &node_id).await,
        capability: v.capability(),
        volume,
    };
    for attempt in 0..2 {
        let r = t(n.node().node_stage_volume(n.stage_request(&a))).await;
        let msg = match r {
            Ok(_) => panic!("attempt {attempt}: NodeStageVolume with fsOwner=alice succeeded"),
            Err(s) => s.message().to_owned(),
        };
        assert!(
            msg.contains("fsOwner") && msg.contains("uid:gid"),
            "attempt {attempt}: {msg}"
        );
        n.rig().assert_nothing_left();
        let staged = n.staged(&a.swarm_id);
        assert!(
            !Path::new(&staged).exists(),
            "attempt {attempt}: {staged} left"
        );
    }
    n.controller_unpublish(&a.volume.volume_id, &node_id).await;
    n.delete(&a.volume.volume_id).await;
    n.assert_node_clean(&a);
}
