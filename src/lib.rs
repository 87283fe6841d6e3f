//! volbridge: one volume engine, four front ends. See DESIGN.md in the shared folder.

pub mod build_info;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod daemon;
pub mod frontend;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod tls;

// The layers below the front ends are crates of their own (ARCHITECTURE.md); these names
// keep `volbridge::engine::…` and friends the paths front ends, tests and benches use.
pub use volbridge_base::{error, random};
pub use volbridge_engine as engine;
pub use volbridge_host as host;
pub use volbridge_provider as provider;

pub use error::{Error, ErrorKind, Result};
