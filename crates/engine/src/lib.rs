//! The volume engine: idempotent operations keyed by name, a per-volume guard, per-backend
//! CSP clients, durable intent records and their replay. No protocol types in or out.

mod controller;
#[cfg(test)]
mod flows_tests;
mod guard;
mod model;
pub mod names;
mod node;
mod reconcile;
mod records;
pub mod size;

// Module paths front ends name (`volbridge_engine::store::…`), kept where the folders moved
// them.
pub use node::attachments;
pub use node::mount_table;
pub use records::node as node_records;
pub use records::{intent, store};

pub use controller::backends::{Backend, Backends, Connector};
pub use controller::grants::{Grant, GrantRequest};
pub use controller::groups::{SnapshotGroup, VolumeGroup};
pub use controller::requested::{RequestedSource, RequestedVolume, SizeRange, SnapshotRef};
pub use controller::snapshot_metadata::{ByteRange, RangeWalk, SnapshotKey};
pub use controller::volumes::Shrink;
pub(crate) use guard::{OpGuard, OpGuards};
pub use model::{Access, BackendStatus, CreateVolume, Snapshot, Volume, VolumeSource};
pub use node::attachments::Attachment;
pub use node::identity::NodeIdentity;
pub use node::mount_table::{DockerCreate, DockerRelease, DockerSettings, DockerVolume};
pub use node::mounts::{MountVolume, Mounted};
pub use node::publishing::PublishVolume;
pub use node::staging::StageVolume;
pub use reconcile::ReconcileReport;
pub use records::node::{Owner, Phase, PublishRecord, StageRecord};
pub use records::store::StateStore;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use volbridge_base::error::Result;
use volbridge_host::transport::TransportConfig;
use volbridge_host::{Host, RealHost};

/// How the engine behaves; front ends pick their waiting policy per call.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Size of a volume created without one (CSI: no capacity range).
    pub default_volume_size: u64,
    /// How long a waiting caller (CLI, Docker, Flex) waits for another operation on the same
    /// volume before it gets Aborted.
    pub guard_wait: Duration,
    /// How long a waiting caller waits for a background copy (clone, snapshot) to finish.
    pub copy_wait: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_volume_size: 1 << 30,
            guard_wait: Duration::from_secs(30),
            copy_wait: Duration::from_secs(120),
        }
    }
}

/// How this node attaches and mounts volumes.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub transport: TransportConfig,
    /// Limit for each external tool (mkfs, e2fsck, resize2fs, iscsiadm…).
    pub tool_timeout: Duration,
    /// Where the engine's own flows stage filesystems; default `<state dir>/staging`.
    pub staging_root: Option<PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            transport: TransportConfig::default(),
            tool_timeout: Duration::from_secs(120),
            staging_root: None,
        }
    }
}

/// Whether a caller waits for busy volumes and background copies, or answers at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Aborted at once when another operation runs or a copy is still being made.
    No,
    /// CLI, Docker, Flex: wait within the configured bounds (`guard_wait`, `copy_wait`);
    /// a copy still running after `copy_wait` is DeadlineExceeded.
    Bounded,
    /// CSI: Aborted at once when another operation runs; a copy the answer needs (a clone's
    /// data) is waited for until this instant, then Aborted: the CO retries with the same
    /// name and the retry waits for the same copy (docs/copy-semantics.md rule 3).
    Until(std::time::Instant),
}

pub struct Engine {
    backends: Backends,
    guards: OpGuards,
    store: StateStore,
    config: EngineConfig,
    node: NodeIdentity,
    host: Arc<dyn Host>,
    node_config: NodeConfig,
    /// Orphaned loop devices seen by the last reconciler pass (device, backing file).
    orphans_seen: std::sync::Mutex<std::collections::BTreeSet<(PathBuf, PathBuf)>>,
    reconciled_once: std::sync::atomic::AtomicBool,
    /// Whether an attachment record may be release-pending: true at start (records from
    /// before), set when a release is deferred, cleared by a scan that finds none. Spares
    /// every mount a listing of the attachment records.
    releases_pending: std::sync::atomic::AtomicBool,
    /// Docker's volumes and mount references, in memory (loaded on first use).
    mount_table: node::mount_table::MountTable,
}

impl Engine {
    /// Builds the engine; loads (or makes, on first start) this node's identity.
    pub fn new(backends: Backends, store: StateStore, config: EngineConfig) -> Result<Engine> {
        let node = NodeIdentity::load_or_create(&store)?;
        Ok(Engine {
            backends,
            guards: OpGuards::default(),
            store,
            config,
            node,
            host: Arc::new(RealHost),
            node_config: NodeConfig::default(),
            orphans_seen: Default::default(),
            reconciled_once: Default::default(),
            releases_pending: std::sync::atomic::AtomicBool::new(true),
            mount_table: Default::default(),
        })
    }

    /// Replaces the host (a fake in unit tests) and the node settings.
    pub fn with_node(mut self, host: Arc<dyn Host>, node_config: NodeConfig) -> Engine {
        self.host = host;
        self.node_config = node_config;
        self
    }

    pub fn node_config(&self) -> &NodeConfig {
        &self.node_config
    }

    /// Where the engine's own flows stage volumes.
    pub fn staging_root(&self) -> PathBuf {
        self.node_config
            .staging_root
            .clone()
            .unwrap_or_else(|| self.store.root().join("staging"))
    }

    /// Runs host work (syscalls, mkfs) off the async workers.
    async fn on_host<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Host) -> Result<T> + Send + 'static,
    {
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || work(host.as_ref()))
            .await
            .map_err(|e| volbridge_base::Error::internal(format!("host task failed: {e}")))?
    }

    pub fn node(&self) -> &NodeIdentity {
        &self.node
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Takes the operation guard of one object, waiting or not as the caller asks.
    async fn guard(&self, backend: &str, object: &str, wait: Wait) -> Result<OpGuard> {
        let key = format!("{backend}/{object}");
        match wait {
            Wait::No | Wait::Until(_) => self.guards.try_lock(&key),
            Wait::Bounded => self.guards.lock(&key, self.config.guard_wait).await,
        }
    }

    /// Status of every backend (reachability, capacity).
    pub async fn backend_status(&self) -> Vec<BackendStatus> {
        self.backends.status().await
    }

    /// Logs out of every backend (daemon shutdown), best effort: an unreachable backend
    /// does not hold the shutdown up for more than a moment.
    pub async fn shutdown(&self) {
        for b in self.backends.all() {
            let _ = tokio::time::timeout(Duration::from_secs(2), b.client.logout()).await;
        }
    }
}
