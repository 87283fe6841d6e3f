//! Which container orchestrator drives the CSI socket, and the rules that differ for it.
//!
//! `generic` follows the CSI spec as written: Kubernetes, Nomad and csi-sanity behave so.
//! `swarm` is Docker Swarm (Engine 23+ cluster volumes, served by the managed plugin of
//! `docker-plugin/csi/`), whose manager and agent (moby/swarmkit, `manager/csi/plugin.go`,
//! `agent/csi/plugin/plugin.go`) depart from the spec in two places; `docs/swarm.md` has
//! the facts and their sources. For Swarm:
//!
//! 1. **NodeUnpublishVolume also unstages** when it removes the volume's last publish on
//!    this node. Swarm's agent skips NodeUnstageVolume while it remembers the stage (it
//!    returns early: moby/swarmkit#3178), so without this the volume would stay attached
//!    and mounted after its task left, and the CSP would delete it from under the loop
//!    device. A NodeUnstageVolume that does come later finds nothing staged: OK. The agent
//!    sends NodeStageVolume before every NodePublishVolume, so nothing relies on the stage
//!    outliving the publish.
//! 2. **ControllerPublishVolume reads only the access mode** of its capability. The manager
//!    replaces the access type with an empty mount for every volume, block ones included,
//!    so a `--type block --scope multi` volume would be refused as a shared filesystem.
//!    The node calls carry the volume's real access type, and the shared-filesystem rule
//!    is enforced there (NodeStageVolume, NodePublishVolume), before any filesystem is
//!    mounted.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Orchestrator {
    #[default]
    Generic,
    Swarm,
}

impl Orchestrator {
    pub fn parse(text: &str) -> Result<Orchestrator> {
        match text {
            "generic" => Ok(Orchestrator::Generic),
            "swarm" => Ok(Orchestrator::Swarm),
            other => Err(Error::invalid(
                "csi.orchestrator",
                format!(
                    "'{other}' is not one of generic, swarm (swarm: Docker Swarm cluster volumes; generic: Kubernetes and any other CO)"
                ),
            )),
        }
    }

    /// Rule 1: the last NodeUnpublishVolume of a volume on this node unstages it too.
    pub fn unstage_on_last_unpublish(self) -> bool {
        self == Orchestrator::Swarm
    }

    /// Rule 2: ControllerPublishVolume's access type is not the volume's.
    pub fn trusts_publish_access_type(self) -> bool {
        self == Orchestrator::Generic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_the_choices() {
        assert_eq!(Orchestrator::parse("swarm").unwrap(), Orchestrator::Swarm);
        assert_eq!(
            Orchestrator::parse("generic").unwrap(),
            Orchestrator::Generic
        );
        let e = Orchestrator::parse("kubernetes").unwrap_err();
        assert!(e.message.contains("generic, swarm"), "{}", e.message);
        assert_eq!(e.field.as_deref(), Some("csi.orchestrator"));
    }
}
