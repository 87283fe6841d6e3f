//! The embedded local CSP: a CSP REST API server (csp-api.md §3, §8) that keeps volumes as
//! sparse image files under a data directory.
//!
//! # Layout
//!
//! ```text
//! <pool>/volumes/<id>.img         volume images (sparse; `thick` ones fallocated)
//! <pool>/snapshots/<id>.img       snapshot images (reflinked, or a sparse copy)
//! <pool>/retained/<id>.img        volumes deleted with destroy_on_delete=false
//! <data_dir>/volbridge-pool.img   an image pool's image, mounted at <data_dir>/pool
//! <data_dir>/pool.json            an image pool's mode, kept
//! <data_dir>/state.json           metadata snapshot
//! <data_dir>/journal              metadata changes since that snapshot
//! <data_dir>/lock                 flock'd while a server owns the directory
//! ```
//!
//! `<pool>` is the data dir itself or, where its filesystem cannot reflink, the mounted image
//! pool `<data_dir>/pool` ([`pool`]).
//!
//! Files are named only by random ids (32 lower-case hex); no name from a request ever
//! reaches a path.
//!
//! # Durability
//!
//! The published design rewrites one state file atomically per change (about 1 ms of
//! fsyncs each). This crate instead keeps a state file plus an append-only journal with
//! group commit ([`store`], [`journal`]): every acknowledged change is on disk after one
//! shared `fdatasync`, at a fraction of the cost, and the journal is folded into a new
//! state file when it grows and at every open.
//!
//! Ordering between image files and metadata makes every crash recoverable ([`recovery`]):
//! * create: the sparse file is made before its journal record. A crash in between leaves
//!   an image without metadata, which recovery removes (the create was never answered). A
//!   record whose file is missing or short (the sparse creation was not flushed) gets the
//!   file recreated or extended: it cannot have held acknowledged data.
//! * delete: the record is committed before the file is unlinked (or moved to
//!   `retained/`); recovery removes (or moves) images left behind.
//! * snapshot and clone data are fsynced before the record that marks them complete;
//!   recovery drops snapshots whose copy had not finished and restarts clone copies.

mod auth;
mod block_map;
mod config;
mod copies;
mod errors;
mod export;
mod extract;
pub mod fiemap;
mod files;
mod ids;
mod journal;
mod locks;
mod model;
mod pool;
mod provision;
mod recovery;
pub mod refusals;
mod routes;
mod server;
mod shared;
mod state;
mod store;
pub mod to_the_end;
mod views;

pub use config::{
    load_or_generate_password, LocalCspConfig, DEFAULT_OVERCOMMIT, DEFAULT_POOL_INITIAL_SIZE,
    DEFAULT_TOKEN_TTL,
};
pub use export::{Chap as ExportChap, ExportConfig, ISCSI_PORT, NVME_PORT};
pub use pool::{preview as preview_pool, PoolChoice, PoolMode, POOL_IMAGE};
pub use server::LocalCsp;
