//! Wire contracts of volbridge, shared by both sides of every API: the CSP REST models
//! (used by the client in `volbridge` and by the embedded local CSP) and the admin API
//! models (used by the daemon, the CLI and the FlexVolume binary).
//!
//! The OpenAPI documents beside this crate (`proto/openapi/`) describe the same shapes.

pub mod admin;
pub mod csp;
pub mod initiators;
pub mod lenient;
pub mod mkfs_args;
pub mod names;
pub mod options;
pub mod publish_context;
pub mod ranges;
pub mod units;

/// The OpenAPI document of the admin REST API, served at `GET /openapi.yaml`.
pub const ADMIN_OPENAPI: &str = include_str!("../openapi/admin.yaml");
/// The OpenAPI document of the CSP REST API as volbridge speaks and serves it.
pub const CSP_OPENAPI: &str = include_str!("../openapi/csp.yaml");

/// Container Storage Interface v1.12.0 (`csi.v1`), generated at build time from
/// `proto/csi.proto` (protox + tonic-prost-build; no system `protoc`): the messages, a client
/// per service (`identity_client::IdentityClient`, …) and a server trait per service
/// (`identity_server::Identity`, …).
#[cfg(feature = "csi")]
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    missing_docs,
    rustdoc::all,
    unreachable_pub
)]
pub mod csi {
    tonic::include_proto!("csi.v1");

    /// Encoded `FileDescriptorSet` of `csi.proto`, custom options (`csi_secret` = 1059,
    /// `alpha_*` = 1060) included; usable for gRPC reflection and for checking wire facts.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/csi_descriptor.bin"));
}
