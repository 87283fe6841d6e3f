//! The engine's node flows (stage, publish, the mount table, the node reconciler) run on the
//! recording `FakeHost` against the real embedded local CSP called in-process, so they run
//! as any user: the CSP keeps its images in a temp dir (`dir` pool: no root, no loop device
//! of its own) and everything that would touch the machine goes to the fake.
//!
//! The fake and the CSP do not share a filesystem: each new volume's image is mirrored into
//! the fake (same path, as a sparse image) so the node side finds the file the CSP names.
//! Every path the flows use on the node lies under the rig's temp dir too, though none of
//! them reaches the real machine: the engine's only direct file system calls are its state
//! store's, under the rig's `state` dir.

mod formatting;
mod group_snapshots;
mod guards;
mod mount_table;
mod mounts;
mod reconcile;
mod staging;

use crate::Access;
use crate::{
    Backend, Backends, CreateVolume, Engine, EngineConfig, GrantRequest, NodeConfig, PublishVolume,
    StageVolume, StateStore, Volume, Wait,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use volbridge_host::transport::TransportConfig;
use volbridge_host::{Call, FakeHost, MountSpec};
use volbridge_local_csp::{LocalCsp, LocalCspConfig, PoolChoice};
use volbridge_provider::{ClientOptions, Credentials, CspClient};

const BACKEND: &str = "local";
const VOLUME_SIZE: u64 = 64 << 20;

/// A directory under the system temp dir, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "vb-flows-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) struct Rig {
    pub engine: Arc<Engine>,
    pub host: Arc<FakeHost>,
    backends: Backends,
    /// Where the CSP keeps volume images (canonical: the form it reports in `localPath`).
    images: PathBuf,
    /// Virtual node paths (staging, targets) live under here.
    node_root: PathBuf,
    dir: TempDir,
}

impl Rig {
    pub async fn new() -> Rig {
        let dir = TempDir::new();
        let data_dir = dir.0.join("csp");
        let mut csp_config = LocalCspConfig::new(&data_dir, "rig", "rig-password");
        csp_config.pool = PoolChoice::Dir;
        let csp = tokio::task::spawn_blocking(move || LocalCsp::open(csp_config))
            .await
            .unwrap()
            .expect("local CSP opens in a temp dir");
        // The address is only shown to operators: calls go straight to the router.
        let addr = "127.0.0.1:9".parse().unwrap();
        let creds = Credentials::service(BACKEND, addr, "rig", "rig-password").unwrap();
        let client = CspClient::in_process(creds, ClientOptions::default(), csp.router()).unwrap();
        let mut backends = Backends::new(BACKEND);
        backends.add(Backend {
            name: BACKEND.to_owned(),
            client,
            embedded: true,
        });
        let data_dir = std::fs::canonicalize(&data_dir).unwrap();
        let host = Arc::new(FakeHost::new());
        host.simulate_filesystems();
        for tool in ["blkid", "mkfs.ext4", "mkfs.xfs", "e2fsck"] {
            host.install(tool);
        }
        let node_root = dir.0.join("node");
        let engine = Arc::new(build_engine(&backends, &dir.0, &data_dir, &host));
        Rig {
            engine,
            host,
            backends,
            images: data_dir.join("volumes"),
            node_root,
            dir,
        }
    }

    /// A daemon restart: a new engine on the same state dir, CSP and (fake) kernel state.
    pub fn restart(&mut self) {
        let data_dir = self.images.parent().unwrap().to_path_buf();
        self.engine = Arc::new(build_engine(
            &self.backends,
            &self.dir.0,
            &data_dir,
            &self.host,
        ));
    }

    /// A path on the (fake) node, e.g. a pod's target.
    pub fn node_path(&self, rel: &str) -> PathBuf {
        self.node_root.join(rel)
    }

    /// Mirrors a CSP volume's (blank, sparse) image into the fake, where the node looks.
    pub fn mirror_image(&self, volume_id: &str, size: u64) -> PathBuf {
        let image = self.images.join(format!("{volume_id}.img"));
        assert!(image.is_file(), "the CSP made {}", image.display());
        self.host.add_image(&image, size);
        image
    }

    /// Creates a volume at the CSP and mirrors its image into the fake.
    pub async fn volume(&self, name: &str) -> Volume {
        let v = self
            .engine
            .create_volume(
                CreateVolume {
                    name: name.to_owned(),
                    size: Some(VOLUME_SIZE),
                    backend: None,
                    description: None,
                    params: Default::default(),
                    source: None,
                    multi_initiator: false,
                },
                Wait::No,
            )
            .await
            .unwrap();
        self.mirror_image(&v.id, v.size_bytes);
        v
    }

    pub fn image_of(&self, v: &Volume) -> PathBuf {
        self.images.join(format!("{}.img", v.id))
    }

    /// What a CO sends to stage, after NodeGetInfo registered this node and
    /// ControllerPublish granted it the volume (a grant, which this node's reconciler never
    /// reaps); the volume is keyed by its CSI-style id.
    pub async fn stage_request(&self, v: &Volume, access: Access, read_only: bool) -> StageVolume {
        self.engine.register_node().await.unwrap();
        let grant = self
            .engine
            .grant(
                GrantRequest {
                    volume: v.name.clone(),
                    node_id: self.engine.node().uuid.clone(),
                    read_only,
                    access: format!("{access:?}"),
                    fs_type: (!access.is_block()).then(String::new),
                    ..GrantRequest::default()
                },
                Wait::No,
            )
            .await
            .unwrap();
        StageVolume {
            volume_key: csi_key(v),
            backend: v.backend.clone(),
            volume_name: v.name.clone(),
            owner: crate::Owner::Co,
            pinned: false,
            context: grant.context,
            staging_path: self
                .node_path(&format!("staging/{}", v.name))
                .display()
                .to_string(),
            access,
            read_only,
        }
    }

    /// How many recorded calls match.
    pub fn count(&self, matches: impl Fn(&Call) -> bool) -> usize {
        self.host.calls().iter().filter(|c| matches(c)).count()
    }

    /// The commands run whose argv starts with `prefix` (`"mkfs"`, `"blkid"`).
    pub fn commands(&self, prefix: &str) -> Vec<String> {
        self.host
            .commands()
            .into_iter()
            .filter(|c| c.starts_with(prefix))
            .collect()
    }

    /// The mount(2) calls recorded, in order.
    pub fn mount_calls(&self) -> Vec<MountSpec> {
        self.host
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// The umount(2) targets recorded, in order.
    pub fn unmount_calls(&self) -> Vec<PathBuf> {
        self.host
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Unmount(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    pub fn is_mounted(&self, path: &Path) -> bool {
        use volbridge_host::Host;
        self.host.mounts().unwrap().iter().any(|m| m.target == path)
    }

    /// Loop devices bound to a volume's image now.
    pub fn loops_of(&self, v: &Volume) -> Vec<PathBuf> {
        use volbridge_host::Host;
        let image = self.image_of(v);
        self.host
            .loops()
            .unwrap()
            .into_iter()
            .filter(|l| l.backing_file == image)
            .map(|l| l.device)
            .collect()
    }
}

fn build_engine(backends: &Backends, root: &Path, csp_data: &Path, host: &Arc<FakeHost>) -> Engine {
    let store = StateStore::open(root.join("state")).unwrap();
    let config = EngineConfig {
        guard_wait: Duration::from_secs(5),
        ..EngineConfig::default()
    };
    Engine::new(backends.clone(), store, config)
        .unwrap()
        .with_node(
            host.clone(),
            NodeConfig {
                transport: TransportConfig {
                    local_roots: vec![csp_data.to_path_buf()],
                    device_wait: Duration::from_secs(1),
                },
                tool_timeout: Duration::from_secs(5),
                staging_root: Some(root.join("node/engine-staging")),
            },
        )
}

/// The key a CO would use for the volume (CSI volume id).
pub(super) fn csi_key(v: &Volume) -> String {
    format!("csi-{}", v.id)
}

pub(super) fn filesystem() -> Access {
    Access::Mount {
        fs_type: String::new(),
        mount_options: Vec::new(),
    }
}

/// A CSI-style publish of a staged volume at `target`.
pub(super) fn publish_request(v: &Volume, target: &Path, read_only: bool) -> PublishVolume {
    PublishVolume {
        volume_key: csi_key(v),
        target_path: target.display().to_string(),
        read_only,
        mount_options: Vec::new(),
        remove_target: true,
        single_writer: false,
    }
}

pub(super) fn is_loop_attach(c: &Call) -> bool {
    matches!(c, Call::LoopAttach { .. })
}

pub(super) fn is_loop_detach(c: &Call) -> bool {
    matches!(c, Call::LoopDetach(_))
}
