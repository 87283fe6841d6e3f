//! The CSI front end (spec v1.12.0, package `csi.v1`): Identity, Controller, Node,
//! GroupController and SnapshotMetadata over gRPC, translating each RPC into engine calls.
//!
//! Identifiers the CO sees:
//! - `volume_id` is the volume's name on its backend (the name CreateVolume was given);
//!   the backend comes from the request's `secrets`, or is the default one.
//! - `snapshot_id` is the snapshot's name; a member of a group snapshot, which shares the
//!   group's name at the CSP, is `<group snapshot name>/<CSP snapshot id>`.
//! - `node_id` is the node's persistent UUID; topology key `topology.volbridge.io/node`
//!   carries the same value.
//!
//! Cross-cutting behaviour (request id, redacted logging, validation, the per-volume
//! guard) is a tower layer around every service: see [`layer`]. Every connection is read
//! through [`authority::AnyAuthority`], so that clients that send a socket path as the
//! HTTP/2 `:authority` (gRPC C-core, grpc-java) are served too.

mod authority;
mod capability;
mod controller;
mod controller_list;
mod controller_snapshots;
mod deadline;
mod endpoint;
mod group;
mod hpack;
mod identity;
mod layer;
mod node;
mod orchestrator;
mod paging;
mod rpc;
mod server;
mod snapshot_metadata;
mod status;

pub use server::serve;

pub use endpoint::Endpoint;
pub use orchestrator::Orchestrator;

use crate::engine::Engine;
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use volbridge_proto::csi as pb;

/// The topology segment that pins a volume to one node.
pub const TOPOLOGY_NODE_KEY: &str = "topology.volbridge.io/node";

/// Volume-context key of the backend a volume lives on.
pub const CONTEXT_BACKEND: &str = "volbridge.io/backend";

/// Volume-context key Kubernetes sets on ephemeral inline volumes.
pub const CONTEXT_EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";

/// A CSI driver name: at most 63 characters, a DNS-1123-like name (spec, GetPluginInfo).
pub fn validate_driver_name(name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ends_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 63 || !ok_chars || !ends_ok {
        return Err(Error::invalid(
            "csi.driver_name",
            format!("'{name}' must be 1-63 characters of [a-zA-Z0-9-_.], starting and ending with an alphanumeric"),
        ));
    }
    Ok(())
}

/// The name a CSI `name` (CreateVolume, CreateSnapshot, CreateVolumeGroupSnapshot) is made
/// and stored under, which is also the id the CO gets back (docs/vocabulary.md). CSI allows
/// any text of at most 128 bytes without control characters other than tab, line feed and
/// carriage return. A name that passes the stored-name rule (`volbridge_proto::names`;
/// every name Kubernetes makes) is used as it is; any other is stored under `csi-` and 32
/// hex digits of its SHA-256, so the same name always finds the same volume.
pub fn stored_name(field: &str, name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    let banned = |c: char| c.is_control() && !matches!(c, '\t' | '\n' | '\r');
    if let Some(c) = name.chars().find(|c| banned(*c)) {
        return Err(Error::invalid(
            field,
            format!("contains {c:?}, a control character CSI does not allow"),
        ));
    }
    if name.len() > volbridge_proto::names::MAX_NAME_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes long; CSI's limit is {}",
                name.len(),
                volbridge_proto::names::MAX_NAME_BYTES
            ),
        ));
    }
    if volbridge_proto::names::check_stored_name(name).is_ok() {
        return Ok(name.to_owned());
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("csi-{hex}"))
}

/// Which services a daemon serves besides Identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    All,
    Controller,
    Node,
}

impl Mode {
    pub fn parse(text: &str) -> Result<Mode> {
        match text {
            "all" => Ok(Mode::All),
            "controller" => Ok(Mode::Controller),
            "node" => Ok(Mode::Node),
            other => Err(Error::invalid(
                "csi.mode",
                format!("'{other}' is not one of all, controller, node"),
            )),
        }
    }

    pub fn controller(self) -> bool {
        self != Mode::Node
    }

    pub fn node(self) -> bool {
        self != Mode::Controller
    }
}

#[derive(Debug, Clone)]
pub struct CsiConfig {
    pub driver_name: String,
    pub mode: Mode,
    /// 0: no limit.
    pub max_volumes_per_node: i64,
    /// Who calls: the rules that differ for Docker Swarm (see [`orchestrator`]).
    pub orchestrator: Orchestrator,
}

/// The state every CSI service shares: the engine and the settings.
#[derive(Clone)]
pub struct Csi {
    engine: Arc<Engine>,
    config: Arc<CsiConfig>,
    /// True once the start-up reconciliation is done (see [`Csi::with_ready`]).
    ready: tokio::sync::watch::Receiver<bool>,
    /// Volume listings kept for the later pages of a ListVolumes walk.
    volume_listings: Arc<paging::Listings<crate::engine::Volume>>,
    /// Every call's work, which runs to its end even when its caller gives up or is
    /// answered early; the server waits for it before the daemon stops.
    tasks: tokio_util::task::TaskTracker,
}

impl Csi {
    pub fn new(engine: Arc<Engine>, config: CsiConfig) -> Csi {
        let (_, ready) = tokio::sync::watch::channel(true);
        Csi {
            engine,
            config: Arc::new(config),
            ready,
            volume_listings: Arc::default(),
            tasks: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Calls other than Identity wait until `ready` turns true, as admin API calls do, so
    /// that no CSI call races the start-up reconciliation of the node's records; Probe
    /// answers `ready: false` until then.
    pub fn with_ready(mut self, ready: tokio::sync::watch::Receiver<bool>) -> Csi {
        self.ready = ready;
        self
    }

    /// The backend `secrets` name (None: the default one).
    fn backend(
        &self,
        secrets: &HashMap<String, String>,
    ) -> std::result::Result<Option<String>, tonic::Status> {
        let map: BTreeMap<String, String> = secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.engine
            .backends()
            .from_credentials(&map)
            .map_err(status::status)
    }

    fn node_id(&self) -> &str {
        &self.engine.node().uuid
    }

    /// This node as a topology segment.
    fn topology(&self) -> pb::Topology {
        pb::Topology {
            segments: [(TOPOLOGY_NODE_KEY.to_owned(), self.node_id().to_owned())].into(),
        }
    }
}

#[cfg(test)]
mod name_tests {
    use super::stored_name;

    #[test]
    fn csi_names_are_taken_as_csi_allows() {
        for n in [
            "pvc-0b1c2d3e-aaaa-bbbb-cccc-123456789abc",
            "my vol",
            "snap.1",
        ] {
            assert_eq!(stored_name("name", n).unwrap(), n);
        }
        // Outside the stored-name rule: one safe key per name, always the same.
        let a = stored_name("name", "ns/claim").unwrap();
        assert_eq!(a.len(), 4 + 32);
        assert!(a.starts_with("csi-"), "{a}");
        assert_eq!(stored_name("name", "ns/claim").unwrap(), a);
        assert_ne!(stored_name("name", "ns/claim2").unwrap(), a);
        volbridge_proto::names::check_user_name(&a).unwrap();
        for n in ["..", "-x", "a\tb", "a\\b", "."] {
            assert!(stored_name("name", n).unwrap().starts_with("csi-"), "{n:?}");
        }
        for (n, says) in [
            ("", "name: must not be empty"),
            (
                "a\u{1}b",
                "name: contains '\\u{1}', a control character CSI does not allow",
            ),
        ] {
            assert_eq!(stored_name("name", n).unwrap_err().message, says);
        }
        let long = "x".repeat(129);
        assert!(stored_name("name", &long)
            .unwrap_err()
            .message
            .ends_with("CSI's limit is 128"));
    }
}
