//! volbridge: one volume engine, four front ends. See DESIGN.md in the shared folder.

pub mod conformance;
pub mod error;
pub mod provider;
pub mod tls;

pub use error::{Error, ErrorKind, Result};
