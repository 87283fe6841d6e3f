//! This node's identity: a UUID made once and kept in the state dir, so that the CSP sees
//! the same host across restarts (CSI NodeGetInfo, CSP host upsert).

use crate::records::store::StateStore;
use serde::{Deserialize, Serialize};
use volbridge_base::error::Result;

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
            uuid: volbridge_base::random::uuid_v4(),
            hostname,
        };
        store.put(COLLECTION, KEY, &id)?;
        Ok(id)
    }
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
