//! What the engine keeps on disk: the store itself, intent records of multi-step operations,
//! and the node's stage and publish records.

pub mod intent;
pub mod node;
pub mod store;

/// The SHA-256 of `text`, in lower-case hex: a stable name for a key too long or too odd to
/// be a file name itself.
pub(crate) fn sha256_hex(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
