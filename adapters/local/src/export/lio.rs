//! `iscsi`: one LIO target per volume (`<prefix>.<volume id>`), its LUN 0 a fileio
//! backstore on the volume's image, one portal per configured address, one ACL per
//! initiator IQN of the hosts the volume is published to, CHAP on every ACL when
//! configured. Laid out as `targetcli` would, written to configfs directly.

use super::configfs as cfs;
use super::{Chap, Wanted};
use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The fileio HBA volbridge's backstores live under (an HBA is only a container; other
/// users of LIO keep theirs, `targetcli` uses `fileio_0`).
const HBA: &str = "fileio_7361";
/// Target IQNs: `iqn.2026-12.io.volbridge:<instance>.<volume id>`.
pub const IQN_PREFIX: &str = "iqn.2026-12.io.volbridge:";

/// LIO's fileio WWN for a unit serial (target_core_spc.c, spc_gen_naa_6h_vendor_specific):
/// NAA 6, the OpenFabrics company id 001405, then the serial's first 25 hex digits. This
/// is the WWID the initiator reads, so the serial a publish answers.
pub fn wwid(unit_serial: &str) -> String {
    let digits: String = unit_serial
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(25)
        .collect();
    format!("6001405{}", digits.to_ascii_lowercase())
}

pub struct Lio<'a> {
    pub root: &'a Path,
    pub instance: &'a str,
    pub portals: &'a [SocketAddr],
    pub chap: Option<&'a Chap>,
}

impl Lio<'_> {
    pub fn target_iqn(&self, volume_id: &str) -> String {
        format!("{IQN_PREFIX}{}.{volume_id}", self.instance)
    }

    fn backstore_name(&self, volume_id: &str) -> String {
        format!("vb.{}.{volume_id}", self.instance)
    }

    fn hba(&self) -> PathBuf {
        self.root.join("target/core").join(HBA)
    }

    fn tpg(&self, volume_id: &str) -> PathBuf {
        self.root
            .join("target/iscsi")
            .join(self.target_iqn(volume_id))
            .join("tpgt_1")
    }

    /// Makes the export match `w`: backstore, target, portals, exactly the wanted ACLs.
    pub fn ensure(&self, w: &Wanted) -> io::Result<()> {
        // LIO reads the backstore's settings as one comma-separated line.
        let image = w.image.display().to_string();
        if image.contains([',', '\n']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the image {image} cannot be served over iSCSI: LIO cannot take a path \
                     with a comma or a line break; move the local CSP's data dir to a path \
                     without one"
                ),
            ));
        }
        let name = self.backstore_name(&w.volume_id);
        let bs = self.hba().join(&name);
        if bs.is_dir() && cfs::read(&bs.join("enable")).as_deref() != Some("1") {
            // A set-up cut short: the backstore cannot be configured twice.
            cfs::rmdir(&bs)?;
        }
        if !bs.is_dir() {
            cfs::mkdir_all(&bs)?;
            // Buffered, with the write cache announced: the initiator's cache flushes
            // (SYNCHRONIZE CACHE) reach the image as fsync, as a disk's do.
            cfs::write(
                &bs.join("control"),
                &format!(
                    "fd_dev_name={image},fd_dev_size={},fd_buffered_io=1",
                    w.size
                ),
            )?;
            cfs::write(&bs.join("wwn/vpd_unit_serial"), &w.volume_id)?;
            cfs::write(&bs.join("enable"), "1")?;
        }
        let tpg = self.tpg(&w.volume_id);
        let lun = tpg.join("lun/lun_0");
        cfs::mkdir_all(&lun)?;
        cfs::link(&bs, &lun.join(&name))?;
        for portal in self.portals {
            cfs::mkdir(&tpg.join("np").join(portal.to_string()))?;
        }
        cfs::set(&tpg.join("attrib/generate_node_acls"), "0")?;
        cfs::set(
            &tpg.join("attrib/authentication"),
            if self.chap.is_some() { "1" } else { "0" },
        )?;
        let acls = tpg.join("acls");
        for iqn in &w.initiators {
            let acl = acls.join(iqn);
            cfs::mkdir_all(&acl.join("lun_0"))?;
            cfs::link(&lun, &acl.join("lun_0").join(&name))?;
            if let Some(chap) = self.chap {
                cfs::set_secret(&acl.join("auth/userid"), &chap.user)?;
                cfs::set_secret(&acl.join("auth/password"), &chap.password)?;
            }
        }
        for stale in cfs::entries(&acls)
            .into_iter()
            .filter(|a| !w.initiators.contains(a))
        {
            remove_acl(&acls.join(stale))?;
        }
        cfs::set(&tpg.join("enable"), "1")
    }

    /// Removes volume `volume_id`'s target and backstore; nothing there is success.
    pub fn withdraw(&self, volume_id: &str) -> io::Result<()> {
        let tpg = self.tpg(volume_id);
        if tpg.is_dir() {
            // Disabling first ends the sessions, which would hold the LUN.
            let _ = cfs::write(&tpg.join("enable"), "0");
            for acl in cfs::entries(&tpg.join("acls")) {
                remove_acl(&tpg.join("acls").join(acl))?;
            }
            for np in cfs::entries(&tpg.join("np")) {
                cfs::rmdir(&tpg.join("np").join(np))?;
            }
            for lun in cfs::entries(&tpg.join("lun")) {
                let lun = tpg.join("lun").join(lun);
                for link in cfs::links(&lun) {
                    cfs::unlink(&lun.join(link))?;
                }
                cfs::rmdir(&lun)?;
            }
            cfs::rmdir(&tpg)?;
        }
        if let Some(target) = tpg.parent() {
            cfs::rmdir(target)?;
        }
        cfs::rmdir(&self.hba().join(self.backstore_name(volume_id)))?;
        // Empty once the last volbridge backstore is gone; busy otherwise.
        let _ = std::fs::remove_dir(self.hba());
        Ok(())
    }

    /// The volume ids this instance exports (targets or backstores), for the start-up pass.
    pub fn exported(&self) -> BTreeSet<String> {
        let target_prefix = format!("{IQN_PREFIX}{}.", self.instance);
        let bs_prefix = format!("vb.{}.", self.instance);
        let targets = cfs::entries(&self.root.join("target/iscsi"))
            .into_iter()
            .filter_map(|t| t.strip_prefix(&target_prefix).map(str::to_owned));
        let backstores = cfs::entries(&self.hba())
            .into_iter()
            .filter_map(|b| b.strip_prefix(&bs_prefix).map(str::to_owned));
        targets.chain(backstores).collect()
    }
}

fn remove_acl(acl: &Path) -> io::Result<()> {
    for lun in cfs::entries(acl)
        .into_iter()
        .filter(|e| e.starts_with("lun_"))
    {
        let lun = acl.join(lun);
        for link in cfs::links(&lun) {
            cfs::unlink(&lun.join(link))?;
        }
        cfs::rmdir(&lun)?;
    }
    cfs::rmdir(acl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wwid_is_what_the_initiator_reads() {
        // As tests/vm/targets.sh's lio_naa, checked against a real LIO in the VM lane.
        assert_eq!(
            wwid("0123456789abcdef0123456789abcdef"),
            "60014050123456789abcdef012345678"
        );
        assert_eq!(wwid("0123456789abcdef0123456789abcdef").len(), 32);
    }

    #[test]
    fn a_path_lio_cannot_take_is_refused_before_anything_is_made() {
        let root = std::env::temp_dir().join(format!("vb-lio-{}", crate::ids::new_id()));
        let lio = Lio {
            root: &root,
            instance: "1a2b3c4d",
            portals: &[],
            chap: None,
        };
        let e = lio
            .ensure(&Wanted {
                volume_id: "0123456789abcdef0123456789abcdef".into(),
                image: PathBuf::from("/srv/a,b/volumes/x.img"),
                size: 1 << 20,
                protocol: super::super::PROTOCOL_ISCSI,
                initiators: BTreeSet::new(),
            })
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("comma"), "{e}");
        assert!(!root.exists(), "nothing made");
    }

    #[test]
    fn names_carry_the_instance_and_the_volume() {
        let lio = Lio {
            root: Path::new("/sys/kernel/config"),
            instance: "1a2b3c4d",
            portals: &[],
            chap: None,
        };
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            lio.target_iqn(id),
            "iqn.2026-12.io.volbridge:1a2b3c4d.0123456789abcdef0123456789abcdef"
        );
        assert!(lio.target_iqn(id).len() <= 223, "RFC 3720's limit");
    }
}
