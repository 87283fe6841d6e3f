//! The node side: what this machine holds of a volume, each step recorded before and after
//! it touches the host (through `Host`), so the reconciler can tell an interrupted step
//! from a finished one.
//!
//! The layers, bottom up: `staging` (device attached, filesystem at a staging path) and
//! `publishing` (a bind of it onto a target) are the CSI node calls; `attachments` is this
//! node's own grant at the CSP; `mounts` chains grant, stage and publish into one call for
//! front ends that say "mount this volume here"; `mount_table` counts references to such
//! mounts (Docker's mount IDs) so the last one tears the mount down. `reconcile` compares
//! the records with the kernel.

pub mod attachments;
pub mod identity;
pub mod mount_table;
pub mod mounts;
pub mod publishing;
mod reconcile;
pub mod staging;
mod usage;
