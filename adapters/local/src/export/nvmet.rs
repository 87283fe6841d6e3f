//! `nvmetcp`: one nvmet subsystem per volume (`<prefix>.<volume id>`), namespace 1 on the
//! volume's image with the volume id as NGUID and UUID, only the host NQNs of the hosts the
//! volume is published to allowed, linked to one TCP port per configured address (a port
//! already serving that address is shared).

use super::configfs as cfs;
use super::Wanted;
use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Subsystem NQNs: `nqn.2026-12.io.volbridge:<instance>.<volume id>`.
pub const NQN_PREFIX: &str = "nqn.2026-12.io.volbridge:";
/// The namespace id every volume's subsystem uses.
pub const NSID: u32 = 1;

/// A volume id (32 hex digits) in the kernel's UUID spelling, as nvmet takes NGUIDs.
pub fn as_uuid(id: &str) -> String {
    let h = id.get(..32).unwrap_or(id);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

pub struct Nvmet<'a> {
    pub root: &'a Path,
    pub instance: &'a str,
    pub addresses: &'a [SocketAddr],
}

impl Nvmet<'_> {
    pub fn nqn(&self, volume_id: &str) -> String {
        format!("{NQN_PREFIX}{}.{volume_id}", self.instance)
    }

    fn subsystem(&self, volume_id: &str) -> PathBuf {
        self.root.join("nvmet/subsystems").join(self.nqn(volume_id))
    }

    /// Makes the export match `w`: subsystem, namespace, exactly the wanted hosts, ports.
    pub fn ensure(&self, w: &Wanted) -> io::Result<()> {
        let nqn = self.nqn(&w.volume_id);
        let sub = self.subsystem(&w.volume_id);
        cfs::mkdir(&sub)?;
        cfs::set(&sub.join("attr_allow_any_host"), "0")?;
        // At most 20 characters; only settable before a host connects.
        cfs::set(
            &sub.join("attr_serial"),
            &w.volume_id[..20.min(w.volume_id.len())],
        )?;
        let ns = sub.join("namespaces").join(NSID.to_string());
        cfs::mkdir(&ns)?;
        if cfs::read(&ns.join("enable")).as_deref() != Some("1") {
            cfs::set(&ns.join("device_path"), &w.image.display().to_string())?;
            let id = as_uuid(&w.volume_id);
            cfs::set(&ns.join("device_nguid"), &id)?;
            cfs::set(&ns.join("device_uuid"), &id)?;
            // Through the page cache, flushed on the host's flush commands (nvmet announces
            // a volatile write cache): the image may sit where O_DIRECT is refused.
            cfs::set(&ns.join("buffered_io"), "1")?;
            cfs::write(&ns.join("enable"), "1")?;
        }
        let allowed = sub.join("allowed_hosts");
        for host in &w.initiators {
            let h = self.root.join("nvmet/hosts").join(host);
            cfs::mkdir(&h)?;
            cfs::link(&h, &allowed.join(host))?;
        }
        for stale in cfs::links(&allowed)
            .into_iter()
            .filter(|h| !w.initiators.contains(h))
        {
            cfs::unlink(&allowed.join(&stale))?;
            forget_host(self.root, &stale);
        }
        for addr in self.addresses {
            let port = self.port(addr)?;
            cfs::link(&sub, &port.join("subsystems").join(&nqn))
                .map_err(|e| io::Error::new(e.kind(), format!("NVMe/TCP port {addr}: {e}")))?;
        }
        Ok(())
    }

    /// The port serving `addr`, made when there is none.
    fn port(&self, addr: &SocketAddr) -> io::Result<PathBuf> {
        let ports = self.root.join("nvmet/ports");
        let ip = addr.ip().to_string();
        let svc = addr.port().to_string();
        let mut used = BTreeSet::new();
        for id in cfs::entries(&ports) {
            let p = ports.join(&id);
            if cfs::read(&p.join("addr_trtype")).as_deref() == Some("tcp")
                && cfs::read(&p.join("addr_traddr")).as_deref() == Some(ip.as_str())
                && cfs::read(&p.join("addr_trsvcid")).as_deref() == Some(svc.as_str())
            {
                return Ok(p);
            }
            if let Ok(n) = id.parse::<u32>() {
                used.insert(n);
            }
        }
        let id = (1..).find(|n| !used.contains(n)).unwrap_or(1);
        let p = ports.join(id.to_string());
        cfs::mkdir(&p)?;
        cfs::write(&p.join("addr_trtype"), "tcp")?;
        let family = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
        cfs::write(&p.join("addr_adrfam"), family)?;
        cfs::write(&p.join("addr_traddr"), &ip)?;
        cfs::write(&p.join("addr_trsvcid"), &svc)?;
        Ok(p)
    }

    /// Removes volume `volume_id`'s subsystem; nothing there is success. A port left
    /// serving nothing at one of the configured addresses goes too.
    pub fn withdraw(&self, volume_id: &str) -> io::Result<()> {
        let nqn = self.nqn(volume_id);
        let ports = self.root.join("nvmet/ports");
        for id in cfs::entries(&ports) {
            let subs = ports.join(&id).join("subsystems");
            if subs.join(&nqn).symlink_metadata().is_ok() {
                cfs::unlink(&subs.join(&nqn))?;
                if cfs::links(&subs).is_empty() && self.is_ours(&ports.join(&id)) {
                    let _ = cfs::rmdir(&ports.join(&id));
                }
            }
        }
        let sub = self.subsystem(volume_id);
        if sub.is_dir() {
            for ns in cfs::entries(&sub.join("namespaces")) {
                let ns = sub.join("namespaces").join(ns);
                let _ = cfs::write(&ns.join("enable"), "0");
                cfs::rmdir(&ns)?;
            }
            let allowed = sub.join("allowed_hosts");
            for host in cfs::links(&allowed) {
                cfs::unlink(&allowed.join(&host))?;
                forget_host(self.root, &host);
            }
            cfs::rmdir(&sub)?;
        }
        Ok(())
    }

    fn is_ours(&self, port: &Path) -> bool {
        let ip = cfs::read(&port.join("addr_traddr"));
        let svc = cfs::read(&port.join("addr_trsvcid"));
        self.addresses.iter().any(|a| {
            ip.as_deref() == Some(&a.ip().to_string()) && svc == Some(a.port().to_string())
        })
    }

    /// Tells hosts the namespace grew (nvmet re-reads the image's size).
    pub fn resized(&self, volume_id: &str) -> io::Result<()> {
        let attr = self
            .subsystem(volume_id)
            .join("namespaces")
            .join(NSID.to_string())
            .join("revalidate_size");
        match attr.exists() {
            true => cfs::write(&attr, "1"),
            false => Ok(()),
        }
    }

    /// The volume ids this instance exports, for the start-up pass.
    pub fn exported(&self) -> BTreeSet<String> {
        let prefix = format!("{NQN_PREFIX}{}.", self.instance);
        cfs::entries(&self.root.join("nvmet/subsystems"))
            .into_iter()
            .filter_map(|s| s.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}

/// A host entry no subsystem (of volbridge or anyone) allows any more is removed.
fn forget_host(root: &Path, nqn: &str) {
    let subsystems = root.join("nvmet/subsystems");
    let in_use = cfs::entries(&subsystems).iter().any(|s| {
        subsystems
            .join(s)
            .join("allowed_hosts")
            .join(nqn)
            .symlink_metadata()
            .is_ok()
    });
    if !in_use {
        let _ = std::fs::remove_dir(root.join("nvmet/hosts").join(nqn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nguid_is_the_volume_id() {
        assert_eq!(
            as_uuid("0123456789abcdef0123456789abcdef"),
            "01234567-89ab-cdef-0123-456789abcdef"
        );
    }
}
