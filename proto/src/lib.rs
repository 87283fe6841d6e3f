//! Wire contracts of volbridge, shared by both sides of every API: the CSP REST models
//! (used by the client in `volbridge` and by the embedded local CSP) and the admin API
//! models (used by the daemon, the CLI and the FlexVolume binary).
//!
//! The OpenAPI documents beside this crate (`proto/openapi/`) describe the same shapes.

pub mod admin;
pub mod csp;
pub mod lenient;

/// The OpenAPI document of the admin REST API, served at `GET /openapi.yaml`.
pub const ADMIN_OPENAPI: &str = include_str!("../openapi/admin.yaml");
/// The OpenAPI document of the CSP REST API as volbridge speaks and serves it.
pub const CSP_OPENAPI: &str = include_str!("../openapi/csp.yaml");
