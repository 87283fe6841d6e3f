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
mod registry;
mod snapshot_metadata;
mod snapshots;
mod volumes;

pub use client::{ClientOptions, CspClient};
pub use context::{
    publish_context, volume_context, PublishContext, PublishContextInput, DEFAULT_NVME_PORT,
};
pub use credentials::Credentials;
pub use registry::Provider;
pub use snapshots::SnapshotCreate;
pub use volbridge_proto::csp::{
    AccessToken, Capacity, Host, PublishFileInfo, PublishInfo, ReplicationPartner,
    SecondaryLunInfo, Snapshot, SnapshotGroup, Volume, VolumeGroup,
};
pub use volumes::{progress_text, CloneSource, VolumeCreate, VolumeEdit};

/// The publish-context key names of §6.
pub mod keys {
    pub use super::context::{
        KEY_CHAP_PASSWORD, KEY_CHAP_USER, KEY_DISCOVERY_IPS, KEY_EXPORT_IP, KEY_FS_CREATE_OPTIONS,
        KEY_FS_MODE, KEY_FS_OWNER, KEY_FS_TYPE, KEY_LOCAL_PATH, KEY_LUN, KEY_MOUNT_PATH,
        KEY_PROTOCOL, KEY_READ_ONLY, KEY_SECONDARY, KEY_SERIAL, KEY_TARGET_NAMES, KEY_TARGET_PORT,
        KEY_TARGET_SCOPE,
    };
}
