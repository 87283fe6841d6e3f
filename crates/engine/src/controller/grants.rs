//! Access grants to other nodes: the controller side of CSI ControllerPublishVolume. The
//! CSP grants a node (by its persistent UUID) access to a volume; a durable record keeps
//! which node, how (read-only, access mode) and the publish context the node needs.
//! Unlike [`crate::node::attachments`] (this node, engine flows), grants name any node and are
//! never reaped by this node's reconciler: only the CO ends them.

use crate::names::validate_name;
use crate::{Engine, Wait};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use volbridge_base::error::{Error, ErrorKind, Result};
use volbridge_provider::{self, Host, PublishContextInput};

pub const GRANTS: &str = "grants";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub backend: String,
    pub volume_name: String,
    pub volume_id: String,
    pub node_id: String,
    pub read_only: bool,
    /// How the node will use the volume (the front end's words, e.g. an access mode and
    /// access type); a second grant with other words is refused.
    pub access: String,
    /// The publish context (csp-api.md §6). May hold CHAP secrets: the record is 0600.
    pub context: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct GrantRequest {
    pub volume: String,
    pub backend: Option<String>,
    pub node_id: String,
    pub read_only: bool,
    pub access: String,
    /// Only one node may hold a grant.
    pub single_node: bool,
    /// Refuse a node that already holds this many grants (0: no limit).
    pub max_per_node: usize,
    /// `Some` for filesystem access (the fs type, may be empty), `None` for raw block.
    pub fs_type: Option<String>,
}

fn grant_key(backend: &str, volume: &str, node: &str) -> String {
    format!("{backend}/{volume}/{node}")
}

/// Node ids are the UUIDs volbridge nodes make for themselves (NodeIdentity).
fn check_node_id(node_id: &str) -> Result<()> {
    let hex_groups: Vec<&str> = node_id.split('-').collect();
    let shape = [8, 4, 4, 4, 12];
    let ok = hex_groups.len() == 5
        && hex_groups
            .iter()
            .zip(shape)
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if !ok {
        return Err(Error::not_found(format!(
            "node '{node_id}' is not a volbridge node (node ids are the UUIDs NodeGetInfo reports)"
        )));
    }
    Ok(())
}

impl Engine {
    /// Grants `node_id` access to a volume (idempotent) and returns the publish context.
    pub async fn grant(&self, req: GrantRequest, wait: Wait) -> Result<Grant> {
        validate_name("volume", &req.volume)
            .map_err(|_| Error::not_found(format!("volume '{}' does not exist", req.volume)))?;
        check_node_id(&req.node_id)?;
        // Nodes register at the default backend (NodeGetInfo); a CSP that lists its hosts
        // tells a node that never did from one that did.
        let default = self.backends.resolve(None)?;
        if default.client.host_registered(&req.node_id).await? == Some(false) {
            return Err(Error::not_found(format!(
                "node {} never registered with backend '{}'",
                req.node_id, default.name
            )));
        }
        let backend = self.backends.resolve(req.backend.as_deref())?;
        let _guard = self.guard(&backend.name, &req.volume, wait).await?;
        let client = &backend.client;
        let volume = client
            .find_volume(&req.volume)
            .await?
            .ok_or_else(|| Error::not_found(format!("volume '{}' does not exist", req.volume)))?;
        let volume_id = volume.id.clone().unwrap_or_default();
        let held = self.grants_of(&backend.name, &req.volume)?;
        if let Some(g) = held.iter().find(|g| g.node_id == req.node_id) {
            if g.read_only != req.read_only || g.access != req.access {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "volume '{}' is already published to node {} with read_only={} and {}",
                        req.volume, g.node_id, g.read_only, g.access
                    ),
                ));
            }
            if g.volume_id == volume_id {
                return Ok(g.clone());
            }
        }
        let others: Vec<&Grant> = held.iter().filter(|g| g.node_id != req.node_id).collect();
        if (req.single_node || others.iter().any(|g| g.access.contains("SINGLE_NODE")))
            && !others.is_empty()
        {
            return Err(Error::precondition(format!(
                "volume '{}' allows one node and is published to node {}",
                req.volume, others[0].node_id
            )));
        }
        if req.max_per_node > 0 {
            let on_node = self
                .grants()?
                .into_iter()
                .filter(|g| g.node_id == req.node_id)
                .count();
            if on_node >= req.max_per_node {
                return Err(Error::new(
                    ErrorKind::ResourceExhausted,
                    format!(
                        "node {} already has {on_node} volumes published, its limit",
                        req.node_id
                    ),
                ));
            }
        }
        // The node registered itself with its initiator names (NodeGetInfo); publishing
        // upserts the host, so send that record back, not a bare one that would drop them.
        let host = match client.registered_host(&req.node_id).await {
            // The protocol is this publish's (the volume's), not whatever was stored.
            Ok(Some(host)) => Host {
                id: None,
                access_protocol: None,
                ..host
            },
            _ => Host {
                uuid: Some(req.node_id.clone()),
                name: Some(req.node_id.clone()),
                ..Host::default()
            },
        };
        let info = client.publish_volume(&volume_id, &host, None).await?;
        let volume_context = volbridge_provider::volume_context(&volume);
        let context = volbridge_provider::publish_context(&PublishContextInput {
            info: &info,
            volume: &volume,
            read_only: req.read_only,
            fs_type: req.fs_type.as_deref(),
            volume_context: &volume_context,
        })?;
        let grant = Grant {
            backend: backend.name.clone(),
            volume_name: req.volume.clone(),
            volume_id,
            node_id: req.node_id.clone(),
            read_only: req.read_only,
            access: req.access,
            context,
        };
        // After the CSP call: a crash before this line leaves a grant the CO will publish
        // again (it got no answer), which the CSP treats as the same grant.
        self.store.put(
            GRANTS,
            &grant_key(&grant.backend, &grant.volume_name, &grant.node_id),
            &grant,
        )?;
        Ok(grant)
    }

    /// Registers this node as a host at the default backend, so that controllers may grant
    /// it volumes (idempotent: an upsert by uuid).
    pub async fn register_node(&self) -> Result<()> {
        let backend = self.backends.resolve(None)?;
        let host = self.this_host().await;
        backend.client.upsert_host(&host).await
    }

    /// This node's host record: its uuid, name and initiator names (an array allows the
    /// node by these when it exports a volume over iSCSI or NVMe/TCP).
    pub(crate) async fn this_host(&self) -> Host {
        let initiators = self
            .on_host(|h| Ok(volbridge_host::initiators::read(h)))
            .await
            .unwrap_or_default();
        Host {
            uuid: Some(self.node.uuid.clone()),
            name: Some(self.node.hostname.clone()),
            iqns: initiators.iqn.into_iter().collect(),
            nqns: initiators.nqn.into_iter().collect(),
            ..Host::default()
        }
    }

    /// Ends the grant of one node (or of every node, `None`); nothing to end is success.
    pub async fn revoke(
        &self,
        volume: &str,
        backend: Option<&str>,
        node_id: Option<&str>,
        wait: Wait,
    ) -> Result<()> {
        if validate_name("volume", volume).is_err() {
            return Ok(());
        }
        let backend = self.backends.resolve(backend)?;
        let _guard = self.guard(&backend.name, volume, wait).await?;
        let held: Vec<Grant> = self
            .grants_of(&backend.name, volume)?
            .into_iter()
            .filter(|g| node_id.is_none_or(|n| n == g.node_id))
            .collect();
        let found = backend.client.find_volume(volume).await?;
        let volume_id = found.and_then(|v| v.id);
        let nodes: Vec<String> = match node_id {
            Some(n) => vec![n.to_owned()],
            None => held.iter().map(|g| g.node_id.clone()).collect(),
        };
        if let Some(id) = &volume_id {
            for n in &nodes {
                backend.client.unpublish_volume(id, n).await?;
            }
        }
        for g in held {
            self.store
                .remove(GRANTS, &grant_key(&g.backend, &g.volume_name, &g.node_id))?;
        }
        Ok(())
    }

    /// Every grant this controller holds.
    pub fn grants(&self) -> Result<Vec<Grant>> {
        Ok(self
            .store
            .list::<Grant>(GRANTS)?
            .into_iter()
            .filter_map(|(_, g)| g.ok())
            .collect())
    }

    /// The grants of one volume.
    pub fn grants_of(&self, backend: &str, volume: &str) -> Result<Vec<Grant>> {
        Ok(self
            .grants()?
            .into_iter()
            .filter(|g| g.backend == backend && g.volume_name == volume)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_uuids() {
        assert!(check_node_id("0f8b5a7e-2b0c-4c1e-9d3a-6f1e2d3c4b5a").is_ok());
        for bad in [
            "",
            "node-1",
            "0f8b5a7e-2b0c-4c1e-9d3a-6f1e2d3c4b5",
            "../../etc",
        ] {
            assert_eq!(
                check_node_id(bad).unwrap_err().kind,
                ErrorKind::NotFound,
                "{bad}"
            );
        }
    }
}
