//! What the engine keeps on disk: the store itself, intent records of multi-step operations,
//! and the node's stage and publish records.

pub mod intent;
pub mod node;
pub mod store;
