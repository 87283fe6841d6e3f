//! The CSI front end (spec v1.10.0, package `csi.v1`): Identity, Controller, Node and
//! GroupController over gRPC, translating each RPC into engine calls.
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
//! guard) is a tower layer around every service: see [`layer`].

mod endpoint;

pub use endpoint::Endpoint;

use crate::error::{Error, Result};

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
