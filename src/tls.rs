//! TLS set-up shared by every HTTP client of volbridge (rustls with the ring provider); it
//! lives beside the CSP client's HTTP transport.

pub use volbridge_provider::http_transport::{client_builder, init_tls as init};
