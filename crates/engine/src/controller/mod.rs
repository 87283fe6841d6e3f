//! The controller side: what the engine asks of a backend's CSP about volumes as objects
//! (create, clone, expand, snapshot, group, grant another node, walk changed blocks). Nothing
//! here touches this machine; the node side is in [`crate::node`].

pub mod backends;
pub mod grants;
mod group_snapshots;
pub mod groups;
pub mod requested;
pub mod snapshot_metadata;
mod snapshots;
pub mod volumes;
