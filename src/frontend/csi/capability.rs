//! A volume capability as volbridge reads it: block or mount (fs type, flags), and the
//! access mode.

use volbridge_proto::csi as pb;
use volbridge_proto::csi::volume_capability::access_mode::Mode;
use volbridge_proto::csi::volume_capability::AccessType;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    pub block: bool,
    pub fs_type: String,
    pub mount_flags: Vec<String>,
    pub mode: Mode,
}

impl Cap {
    /// The layer has already checked that access type and mode are present.
    pub fn of(c: &pb::VolumeCapability) -> Cap {
        let mode = c
            .access_mode
            .as_ref()
            .and_then(|m| Mode::try_from(m.mode).ok())
            .unwrap_or(Mode::Unknown);
        match &c.access_type {
            Some(AccessType::Mount(m)) => Cap {
                block: false,
                fs_type: m.fs_type.clone(),
                mount_flags: m.mount_flags.clone(),
                mode,
            },
            _ => Cap {
                block: true,
                fs_type: String::new(),
                mount_flags: Vec::new(),
                mode,
            },
        }
    }

    /// The capability of a request that carries one (the layer checked it is there), or
    /// INVALID_ARGUMENT when volbridge cannot serve it.
    pub fn usable(c: Option<&pb::VolumeCapability>) -> Result<Cap, tonic::Status> {
        let cap = Cap::of(
            c.ok_or_else(|| tonic::Status::invalid_argument("volume_capability is required"))?,
        );
        match cap.unsupported() {
            Some(why) => Err(tonic::Status::invalid_argument(why)),
            None => Ok(cap),
        }
    }

    /// A capability whose access type is not the volume's (Docker Swarm's
    /// ControllerPublishVolume always says "mount, no fs type": see `orchestrator`): only
    /// the access mode is checked. It is kept as a mount, so that the publish context
    /// still carries the volume's filesystem settings (`fsType`, `fsOwner`, … from its
    /// parameters) for a node that mounts it; the node calls check the real access type.
    pub fn mode_only(c: Option<&pb::VolumeCapability>) -> Result<Cap, tonic::Status> {
        let cap = Cap::of(
            c.ok_or_else(|| tonic::Status::invalid_argument("volume_capability is required"))?,
        );
        if cap.mode == Mode::Unknown {
            return Err(tonic::Status::invalid_argument(
                "the access mode is unknown",
            ));
        }
        Ok(cap)
    }

    pub fn single_node(&self) -> bool {
        matches!(
            self.mode,
            Mode::SingleNodeWriter
                | Mode::SingleNodeReaderOnly
                | Mode::SingleNodeSingleWriter
                | Mode::SingleNodeMultiWriter
        )
    }

    pub fn multi_node(&self) -> bool {
        matches!(
            self.mode,
            Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter
        )
    }

    pub fn read_only_mode(&self) -> bool {
        matches!(
            self.mode,
            Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly
        )
    }

    /// Why volbridge cannot serve this capability, if it cannot. A filesystem mounted on
    /// two nodes at once would be corrupted: no backend here offers a shared filesystem.
    pub fn unsupported(&self) -> Option<String> {
        if self.mode == Mode::Unknown {
            return Some("the access mode is unknown".into());
        }
        if !self.block && !self.single_node() {
            return Some(format!(
                "{} needs a shared filesystem, which no volbridge backend offers; use block access",
                self.mode.as_str_name()
            ));
        }
        if !self.block && !matches!(self.fs_type.as_str(), "" | "ext4" | "xfs" | "btrfs") {
            return Some(format!(
                "fs_type '{}' is not one of ext4, xfs, btrfs",
                self.fs_type
            ));
        }
        None
    }

    /// How a grant remembers the capability, to refuse an incompatible second publish.
    pub fn fingerprint(&self) -> String {
        let access = if self.block {
            "block".to_owned()
        } else {
            format!("mount:{}", self.fs_type)
        };
        format!("{}/{access}", self.mode.as_str_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(block: bool, mode: Mode, fs: &str) -> Cap {
        Cap {
            block,
            fs_type: fs.into(),
            mount_flags: vec![],
            mode,
        }
    }

    #[test]
    fn what_is_supported() {
        assert!(cap(false, Mode::SingleNodeWriter, "ext4")
            .unsupported()
            .is_none());
        assert!(cap(false, Mode::MultiNodeReaderOnly, "")
            .unsupported()
            .is_some());
        assert!(cap(true, Mode::MultiNodeMultiWriter, "")
            .unsupported()
            .is_none());
        assert!(cap(false, Mode::MultiNodeMultiWriter, "ext4")
            .unsupported()
            .is_some());
        assert!(cap(false, Mode::MultiNodeSingleWriter, "ext4")
            .unsupported()
            .is_some());
        assert!(cap(false, Mode::SingleNodeWriter, "ntfs")
            .unsupported()
            .is_some());
        assert_eq!(
            cap(true, Mode::SingleNodeWriter, "").fingerprint(),
            "SINGLE_NODE_WRITER/block"
        );
    }
}
