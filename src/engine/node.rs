//! This node's identity: a UUID made once and kept in the state dir, so that the CSP sees
//! the same host across restarts (CSI NodeGetInfo, CSP host upsert).

use super::store::StateStore;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

const COLLECTION: &str = "node";
const KEY: &str = "identity";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub uuid: String,
    pub hostname: String,
}

impl NodeIdentity {
    /// Loads the identity, or makes and stores one on first start.
    pub fn load_or_create(store: &StateStore) -> Result<NodeIdentity> {
        let hostname = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        if let Some(mut id) = store.get::<NodeIdentity>(COLLECTION, KEY)? {
            if id.hostname != hostname {
                // A renamed host keeps its identity; only the name the CSP shows changes.
                id.hostname = hostname;
                store.put(COLLECTION, KEY, &id)?;
            }
            return Ok(id);
        }
        let id = NodeIdentity {
            uuid: new_uuid()?,
            hostname,
        };
        store.put(COLLECTION, KEY, &id)?;
        Ok(id)
    }
}

/// A random (version 4) UUID from the kernel's random source.
fn new_uuid() -> Result<String> {
    let mut b = [0u8; 16];
    let mut filled = 0;
    while filled < b.len() {
        filled += rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty())
            .map_err(|e| Error::internal(format!("no random source for the node id: {e}")))?;
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_across_loads() {
        let dir = std::env::temp_dir().join(format!("vb-node-{}", std::process::id()));
        let store = StateStore::open(&dir).unwrap();
        let a = NodeIdentity::load_or_create(&store).unwrap();
        let b = NodeIdentity::load_or_create(&StateStore::open(&dir).unwrap()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.uuid.len(), 36);
        assert_eq!(&a.uuid[14..15], "4");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
