//! What every layer of volbridge shares and nothing protocol-bound: the one error type, the
//! redaction rules, random ids and durable file replacement. The engine, host and provider crates build on it.

pub mod error;
pub mod fs;
pub mod random;
pub mod redact;

pub use error::{Error, ErrorKind, Object, Reason, Result};
