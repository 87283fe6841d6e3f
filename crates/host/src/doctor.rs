//! `volbridge doctor`: what this machine needs for the access protocols it will use, and
//! which Debian package provides what is missing. Read-only: it looks, never changes.

use super::Host;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Missing, but only some features need it.
    Warn,
    /// Missing, and volumes cannot be attached or mounted without it.
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

/// (program, package, needed for, required)
const FS_TOOLS: [(&str, &str, &str, bool); 7] = [
    (
        "blkid",
        "util-linux",
        "probing devices before formatting",
        true,
    ),
    ("mkfs.ext4", "e2fsprogs", "ext4 volumes (the default)", true),
    ("e2fsck", "e2fsprogs", "checking ext4 before mount", true),
    ("resize2fs", "e2fsprogs", "growing ext4", true),
    ("mkfs.xfs", "xfsprogs", "xfs volumes", false),
    ("xfs_growfs", "xfsprogs", "growing xfs", false),
    ("mkfs.btrfs", "btrfs-progs", "btrfs volumes", false),
];

pub fn run(host: &dyn Host, protocols: &[String], is_root: bool) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(Check {
        name: "privileges".into(),
        status: if is_root { Status::Ok } else { Status::Fail },
        detail: if is_root {
            "running as root".into()
        } else {
            "mount and loop devices need root (or CAP_SYS_ADMIN); run the daemon as root".into()
        },
    });
    let mountinfo = host.mounts();
    out.push(Check {
        name: "mount table".into(),
        status: if mountinfo.is_ok() {
            Status::Ok
        } else {
            Status::Fail
        },
        detail: match mountinfo {
            Ok(m) => format!("/proc/self/mountinfo readable ({} mounts)", m.len()),
            Err(e) => format!("{e}; is /proc mounted?"),
        },
    });
    for (program, package, what, required) in FS_TOOLS {
        out.push(tool(host, program, package, what, required));
    }
    out.push(tool(host, "btrfs", "btrfs-progs", "growing btrfs", false));
    let wants = |p: &str| protocols.iter().any(|x| x == p);
    if wants("local") {
        let ok = host
            .stat(Path::new("/dev/loop-control"))
            .ok()
            .flatten()
            .is_some();
        out.push(Check {
            name: "loop devices".into(),
            status: if ok { Status::Ok } else { Status::Fail },
            detail: if ok {
                "/dev/loop-control present (local protocol)".into()
            } else {
                "/dev/loop-control is missing: load the loop module (modprobe loop) or, in a container, pass /dev".into()
            },
        });
    }
    if wants("iscsi") {
        out.push(tool(host, "iscsiadm", "open-iscsi", "iSCSI volumes", true));
        let iqn = crate::initiators::read(host).iqn.is_some();
        out.push(Check {
            name: "iSCSI initiator name".into(),
            status: if iqn { Status::Ok } else { Status::Fail },
            detail: if iqn {
                "/etc/iscsi/initiatorname.iscsi has an InitiatorName".into()
            } else {
                "/etc/iscsi/initiatorname.iscsi has no InitiatorName (installing open-iscsi makes one)".into()
            },
        });
    }
    if wants("nvmetcp") {
        out.push(tool(host, "nvme", "nvme-cli", "NVMe/TCP volumes", true));
        let loaded = !host
            .list_dir(Path::new("/sys/module/nvme_tcp"))
            .unwrap_or_default()
            .is_empty();
        out.push(Check {
            name: "nvme_tcp module".into(),
            status: if loaded { Status::Ok } else { Status::Warn },
            detail: if loaded {
                "loaded".into()
            } else {
                "not loaded: modprobe nvme_tcp (nvme connect loads it when allowed)".into()
            },
        });
    }
    if wants("fc") {
        let hbas = host
            .list_dir(Path::new("/sys/class/fc_host"))
            .unwrap_or_default();
        out.push(Check {
            name: "FC host adapters".into(),
            status: if hbas.is_empty() {
                Status::Fail
            } else {
                Status::Ok
            },
            detail: if hbas.is_empty() {
                "no /sys/class/fc_host entries: no FC HBA or its driver is not loaded".into()
            } else {
                format!("{} adapter(s): {}", hbas.len(), hbas.join(", "))
            },
        });
    }
    if wants("iscsi") || wants("fc") || wants("nvmetcp") {
        out.push(tool(
            host,
            "multipath",
            "multipath-tools",
            "dm-multipath maps over several paths",
            false,
        ));
    }
    out
}

fn tool(host: &dyn Host, program: &str, package: &str, what: &str, required: bool) -> Check {
    match host.find_program(program) {
        Some(path) => Check {
            name: program.into(),
            status: Status::Ok,
            detail: path.display().to_string(),
        },
        None => Check {
            name: program.into(),
            status: if required { Status::Fail } else { Status::Warn },
            detail: format!("missing (needed for {what}): apt-get install {package}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FakeHost;

    #[test]
    fn a_bare_machine_says_what_to_install() {
        let host = FakeHost::new();
        let checks = run(&host, &["local".into(), "iscsi".into()], false);
        let get = |n: &str| checks.iter().find(|c| c.name == n).unwrap().clone();
        assert_eq!(get("privileges").status, Status::Fail);
        assert_eq!(get("mkfs.ext4").status, Status::Fail);
        assert!(get("mkfs.ext4")
            .detail
            .contains("apt-get install e2fsprogs"));
        assert_eq!(get("mkfs.xfs").status, Status::Warn);
        assert_eq!(get("loop devices").status, Status::Fail);
        assert!(get("iscsiadm").detail.contains("open-iscsi"));
        assert!(checks.iter().all(|c| c.name != "nvme"));
        // Looking never changes anything.
        assert!(host.calls().is_empty());
    }

    #[test]
    fn a_ready_machine_passes() {
        let host = FakeHost::new();
        for (p, ..) in FS_TOOLS {
            host.install(p);
        }
        host.install("btrfs");
        host.add_file("/dev/loop-control", "");
        let checks = run(&host, &["local".into()], true);
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:?}");
    }
}
