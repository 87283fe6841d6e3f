//! CSP REST client (csp-api.md): tokens, every endpoint, and the client-side flows.
//!
//! Layout: `credentials` (§1.1, §1.2), `client` (HTTP core, tokens §2, retries, the one
//! error classification B40–B42), one file per resource family with its flows, `context`
//! (B38 volume context, §6 publish context) and `registry` (one client per backend).

mod client;
mod context;
mod credentials;
mod groups;
mod hosts;
#[cfg(feature = "http")]
pub mod http_transport;
#[cfg(feature = "in-process")]
mod in_process;
pub mod observe;
#[cfg(feature = "http")]
mod registry;
mod snapshot_metadata;
mod snapshots;
pub mod transport;
mod volumes;

pub use client::{ClientOptions, CspClient};
pub use context::{publish_context, volume_context, PublishContextInput};
pub use credentials::Credentials;
#[cfg(feature = "http")]
pub use registry::Provider;
pub use snapshots::SnapshotCreate;
pub use transport::{Exchange, Reply, Transport};
pub use volbridge_proto::csp::{
    AccessToken, Capacity, Host, PublishFileInfo, PublishInfo, ReplicationPartner,
    SecondaryLunInfo, Snapshot, SnapshotGroup, Volume, VolumeGroup,
};
pub use volumes::{progress_text, CloneSource, VolumeCreate, VolumeEdit};

/// The publish-context key names of §6 (a wire contract, kept in `volbridge_proto`).
pub use volbridge_proto::publish_context as keys;
