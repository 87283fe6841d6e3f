//! volbridge: one volume engine, four front ends. See DESIGN.md in the shared folder.

pub mod cli;
pub mod config;
pub mod conformance;
pub mod daemon;
pub mod engine;
pub mod error;
pub mod frontend;
pub mod host;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod provider;
pub mod random;
pub mod tls;

pub use error::{Error, ErrorKind, Result};
