//! This machine's initiator names, which a CSP needs to let it in: the iSCSI initiator
//! name open-iscsi logs in with, and the NVMe host NQN nvme-cli connects with. An array
//! (the local CSP's LIO and nvmet exports among them) allows a host by exactly these.

use crate::Host;
use std::path::Path;
use volbridge_proto::initiators::{self, InitiatorKind};

pub const ISCSI_INITIATOR_FILE: &str = "/etc/iscsi/initiatorname.iscsi";
pub const NVME_HOSTNQN_FILE: &str = "/etc/nvme/hostnqn";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Initiators {
    /// `InitiatorName=` of /etc/iscsi/initiatorname.iscsi (made by open-iscsi).
    pub iqn: Option<String>,
    /// /etc/nvme/hostnqn (made by nvme-cli), which `nvme connect` sends.
    pub nqn: Option<String>,
}

/// What this machine would log in and connect as; a file missing or unreadable is a name
/// not announced (the publish that needs it says so).
/// A name that is not one (a hand-edited file) is not announced either: an array would
/// refuse the host's registration for it, and the initiator could not log in with it.
pub fn read(host: &dyn Host) -> Initiators {
    let file = |p: &str| host.read_file(Path::new(p)).ok().flatten();
    let valid = |kind, name: String| {
        let verdict = initiators::check(kind, &name);
        if let Err(why) = &verdict {
            tracing::warn!(file = kind.node_file(), name = %name.escape_debug(), %why, "this machine's initiator name is not one; it is not announced");
        }
        verdict.ok().map(|()| name)
    };
    Initiators {
        iqn: file(ISCSI_INITIATOR_FILE)
            .and_then(|text| iscsi_initiator_name(&text))
            .and_then(|n| valid(InitiatorKind::Iqn, n)),
        nqn: file(NVME_HOSTNQN_FILE)
            .map(|s| s.trim().to_owned())
            .and_then(|n| valid(InitiatorKind::Nqn, n)),
    }
}

/// The `InitiatorName=` of an initiatorname.iscsi text (comments and blanks skipped).
pub fn iscsi_initiator_name(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix("InitiatorName="))
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeHost;

    #[test]
    fn names_are_read_from_the_initiator_files() {
        let host = FakeHost::new();
        assert_eq!(read(&host), Initiators::default());
        host.add_file(
            ISCSI_INITIATOR_FILE,
            "## DO NOT EDIT\n#InitiatorName=iqn.old\nInitiatorName=iqn.1993-08.org.debian:01:abc\n",
        );
        host.add_file(NVME_HOSTNQN_FILE, "nqn.2014-08.org.nvmexpress:uuid:1234\n");
        assert_eq!(
            read(&host),
            Initiators {
                iqn: Some("iqn.1993-08.org.debian:01:abc".into()),
                nqn: Some("nqn.2014-08.org.nvmexpress:uuid:1234".into()),
            }
        );
    }

    #[test]
    fn a_name_that_is_not_one_is_not_announced() {
        let host = FakeHost::new();
        host.add_file(ISCSI_INITIATOR_FILE, "InitiatorName=../../etc/x\n");
        host.add_file(NVME_HOSTNQN_FILE, "nqn.2014-08.org.nvmexpress:uuid:a/b\n");
        assert_eq!(read(&host), Initiators::default());
    }

    #[test]
    fn an_empty_name_is_none() {
        assert_eq!(iscsi_initiator_name("InitiatorName=\n"), None);
        assert_eq!(iscsi_initiator_name("# nothing\n"), None);
    }
}
