//! Volumes served to other machines, as an array serves them: `iscsi` through the kernel's
//! LIO target and `nvmetcp` through nvmet, both set up by writing configfs.
//!
//! The store says which volume is published to which host; configfs is derived from it and
//! never read back as the truth. [`Exports::sync`] makes one volume's export match the
//! store after every publish, unpublish and delete (and is safe to repeat), and
//! [`Exports::reconcile`] does it for every volume at start: after a reboot the kernel's
//! target configuration is empty, after a crash it may hold half a set-up or an export
//! whose unpublish was committed but not carried out. Only objects named with this data
//! dir's instance id are ever touched.

mod configfs;
mod lio;
mod nvmet;

use crate::model::VolumeRec;
use crate::state::State;
use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use volbridge_proto::csp::{PublishInfo, PROTOCOL_LOCAL};
use volbridge_proto::initiators::{self, InitiatorKind};

pub const PROTOCOL_ISCSI: &str = "iscsi";
pub const PROTOCOL_NVME: &str = "nvmetcp";
/// The port iSCSI portals listen on unless told otherwise.
pub const ISCSI_PORT: u16 = 3260;
pub const NVME_PORT: u16 = 4420;

/// What the local CSP serves over the network; empty lists: that protocol is not served.
#[derive(Clone, Default)]
pub struct ExportConfig {
    /// iSCSI portals (`address:port`); the addresses are what publish answers as
    /// discovery IPs, so they must be reachable from the nodes.
    pub iscsi_portals: Vec<SocketAddr>,
    /// NVMe/TCP listeners (`address:port`).
    pub nvme_addresses: Vec<SocketAddr>,
    /// CHAP for every iSCSI ACL; none: initiators are allowed by IQN alone.
    pub chap: Option<Chap>,
    /// Where configfs is mounted (`/sys/kernel/config`).
    pub configfs: PathBuf,
}

impl ExportConfig {
    pub fn is_empty(&self) -> bool {
        self.iscsi_portals.is_empty() && self.nvme_addresses.is_empty()
    }
}

impl std::fmt::Debug for ExportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportConfig")
            .field("iscsi_portals", &self.iscsi_portals)
            .field("nvme_addresses", &self.nvme_addresses)
            .field("chap", &self.chap)
            .field("configfs", &self.configfs)
            .finish()
    }
}

/// A CHAP pair. `Debug` shows the user, never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Chap {
    pub user: String,
    pub password: String,
}

/// The longest CHAP name or secret LIO takes (`MAX_CHAP_SECRET_LEN` is 256 with its NUL).
pub const MAX_CHAP_BYTES: usize = 255;

impl Chap {
    /// Refuses a pair LIO or the initiators' node records cannot carry; the message names the
    /// flag, never the password.
    pub fn check(&self) -> Result<(), String> {
        for (flag, value) in [
            ("--chap-user", &self.user),
            ("--chap-password", &self.password),
        ] {
            if value.is_empty() || value.len() > MAX_CHAP_BYTES {
                return Err(format!(
                    "{flag} must be 1 to {MAX_CHAP_BYTES} bytes (it is {})",
                    value.len()
                ));
            }
            if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!(
                    "{flag} must not hold spaces or control characters (an initiator's node \
                     record keeps it on one line)"
                ));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Chap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chap")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How one volume must be exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub volume_id: String,
    pub image: PathBuf,
    pub size: u64,
    pub protocol: &'static str,
    /// The IQNs (iscsi) or host NQNs (nvmetcp) of the hosts the volume is published to.
    pub initiators: BTreeSet<String>,
}

/// The volume's access protocol as stored at create (`local` when none was asked for).
pub fn protocol_of(v: &VolumeRec) -> String {
    protocol_in(&v.config)
}

/// The access protocol a volume config names (`local` when none).
pub fn protocol_in(config: &volbridge_proto::csp::Config) -> String {
    config
        .get("access_protocol")
        .and_then(|p| p.as_str())
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| PROTOCOL_LOCAL.to_owned())
}

/// How volume `id` must be exported by the store's account: `None` when it is gone, local,
/// or published to no host.
pub fn wanted(s: &State, id: &str, image: PathBuf) -> Option<Wanted> {
    let v = s.volume(id)?;
    let protocol = match protocol_of(v).as_str() {
        PROTOCOL_ISCSI => PROTOCOL_ISCSI,
        PROTOCOL_NVME => PROTOCOL_NVME,
        _ => return None,
    };
    let initiators: BTreeSet<String> = v
        .hosts
        .iter()
        .filter_map(|h| s.host(h))
        .flat_map(|h| match protocol {
            PROTOCOL_ISCSI => h.iqns.clone(),
            _ => h.nqns.clone(),
        })
        .map(|i| i.trim().to_owned())
        .filter(|i| !i.is_empty() && usable_initiator(protocol, id, i))
        .collect();
    if v.hosts.is_empty() {
        return None;
    }
    Some(Wanted {
        volume_id: id.to_owned(),
        image,
        size: v.size,
        protocol,
        initiators,
    })
}

/// Whether initiator `name` may name an ACL or an allowed host of volume `id`'s export.
/// Hosts are checked when registered; a record stored before that check may still hold a
/// name that is not one, and such a name never becomes a configfs path.
fn usable_initiator(protocol: &str, id: &str, name: &str) -> bool {
    let kind = match protocol {
        PROTOCOL_ISCSI => InitiatorKind::Iqn,
        _ => InitiatorKind::Nqn,
    };
    match initiators::check(kind, name) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(volume = id, initiator = %name.escape_debug(), %why, "a host's initiator name is not one; it is left out of the export");
            false
        }
    }
}

/// The network exports of one data dir.
pub struct Exports {
    cfg: ExportConfig,
    /// Names this data dir's objects in configfs (`<data_dir>/export-id`, made once), so
    /// that two local CSPs on one kernel never touch each other's.
    instance: String,
}

impl Exports {
    /// Loads the kernel's target modules and mounts configfs when a protocol is
    /// configured; refuses to start when the kernel cannot serve it.
    pub fn open(cfg: ExportConfig, data_dir: &Path) -> io::Result<Exports> {
        if let Some(chap) = &cfg.chap {
            chap.check()
                .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
        }
        // Made only where something is exported: a data dir that never serves the network
        // holds nothing of it.
        let instance = match cfg.is_empty() {
            true => String::new(),
            false => instance_id(data_dir)?,
        };
        let exports = Exports { cfg, instance };
        if !exports.cfg.iscsi_portals.is_empty() {
            exports.prepare(
                "target/iscsi",
                &["target_core_mod", "target_core_file", "iscsi_target_mod"],
                "iSCSI (LIO)",
            )?;
        }
        if !exports.cfg.nvme_addresses.is_empty() {
            exports.prepare("nvmet", &["nvmet", "nvmet_tcp"], "NVMe/TCP (nvmet)")?;
        }
        Ok(exports)
    }

    fn prepare(&self, dir: &str, modules: &[&str], what: &str) -> io::Result<()> {
        let root = &self.cfg.configfs;
        if root.join(dir).is_dir() {
            return Ok(());
        }
        let modprobe = std::process::Command::new("modprobe")
            .arg("-a")
            .args(modules)
            .output();
        if !root.join("target").exists() && !root.join("nvmet").exists() {
            // configfs itself may not be mounted yet (it is a module on some kernels).
            let _ = std::process::Command::new("modprobe")
                .arg("configfs")
                .status();
            let _ = std::process::Command::new("mount")
                .args(["-t", "configfs", "configfs"])
                .arg(root)
                .output();
        }
        // LIO makes a fabric's group when it is first asked for (targetcli's mkdir).
        if !root.join(dir).is_dir() && root.join(dir).parent().is_some_and(Path::is_dir) {
            let _ = std::fs::create_dir(root.join(dir));
        }
        if root.join(dir).is_dir() {
            return Ok(());
        }
        let why = match modprobe {
            Ok(out) if !out.status.success() => {
                String::from_utf8_lossy(&out.stderr).trim().to_owned()
            }
            Ok(_) => format!("{} did not appear", root.join(dir).display()),
            Err(e) => format!("modprobe: {e}"),
        };
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "cannot serve {what}: this kernel has no target for it ({why}); load the \
                 modules ({}) or remove the export from the local CSP's configuration",
                modules.join(", ")
            ),
        ))
    }

    /// The protocols served: `local` always, then those configured.
    pub fn protocols(&self) -> Vec<&'static str> {
        let mut p = vec![PROTOCOL_LOCAL];
        if !self.cfg.iscsi_portals.is_empty() {
            p.push(PROTOCOL_ISCSI);
        }
        if !self.cfg.nvme_addresses.is_empty() {
            p.push(PROTOCOL_NVME);
        }
        p
    }

    pub fn serves(&self, protocol: &str) -> bool {
        self.protocols().contains(&protocol)
    }

    fn lio(&self) -> lio::Lio<'_> {
        lio::Lio {
            root: &self.cfg.configfs,
            instance: &self.instance,
            portals: &self.cfg.iscsi_portals,
            chap: self.cfg.chap.as_ref(),
        }
    }

    fn nvmet(&self) -> nvmet::Nvmet<'_> {
        nvmet::Nvmet {
            root: &self.cfg.configfs,
            instance: &self.instance,
            addresses: &self.cfg.nvme_addresses,
        }
    }

    /// Volume `volume_id`'s publish answer over a network protocol (csp-api.md §4.5).
    pub fn publish_info(&self, volume_id: &str, protocol: &str) -> PublishInfo {
        match protocol {
            PROTOCOL_ISCSI => PublishInfo {
                serial_number: lio::wwid(volume_id),
                access_protocol: PROTOCOL_ISCSI.to_owned(),
                lun_id: Some(0),
                target_names: vec![self.lio().target_iqn(volume_id)],
                discovery_ips: self
                    .cfg
                    .iscsi_portals
                    .iter()
                    .map(|p| match p.port() {
                        ISCSI_PORT => p.ip().to_string(),
                        _ => p.to_string(),
                    })
                    .collect(),
                chap_user: self.cfg.chap.as_ref().map(|c| c.user.clone()),
                chap_password: self.cfg.chap.as_ref().map(|c| c.password.clone()),
                ..PublishInfo::default()
            },
            _ => PublishInfo {
                serial_number: volume_id.to_owned(),
                access_protocol: PROTOCOL_NVME.to_owned(),
                lun_id: Some(i64::from(nvmet::NSID)),
                target_names: vec![self.nvmet().nqn(volume_id)],
                discovery_ips: self
                    .cfg
                    .nvme_addresses
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect(),
                target_port: self
                    .cfg
                    .nvme_addresses
                    .first()
                    .map(|a| a.port().to_string()),
                ..PublishInfo::default()
            },
        }
    }

    /// Makes volume `volume_id`'s export match `wanted` (`None`: not exported at all).
    pub fn sync(&self, volume_id: &str, wanted: Option<&Wanted>) -> io::Result<()> {
        if self.cfg.is_empty() {
            return Ok(());
        }
        let (lio, nvmet) = (self.lio(), self.nvmet());
        match wanted {
            Some(w) if w.protocol == PROTOCOL_ISCSI && self.serves(PROTOCOL_ISCSI) => {
                self.withdraw_nvme(&nvmet, volume_id)?;
                lio.ensure(w)
            }
            Some(w) if w.protocol == PROTOCOL_NVME && self.serves(PROTOCOL_NVME) => {
                self.withdraw_iscsi(&lio, volume_id)?;
                nvmet.ensure(w)
            }
            _ => {
                self.withdraw_iscsi(&lio, volume_id)?;
                self.withdraw_nvme(&nvmet, volume_id)
            }
        }
    }

    fn withdraw_iscsi(&self, lio: &lio::Lio, volume_id: &str) -> io::Result<()> {
        match self.cfg.configfs.join("target/iscsi").is_dir() {
            true => lio.withdraw(volume_id),
            false => Ok(()),
        }
    }

    fn withdraw_nvme(&self, nvmet: &nvmet::Nvmet, volume_id: &str) -> io::Result<()> {
        match self.cfg.configfs.join("nvmet").is_dir() {
            true => nvmet.withdraw(volume_id),
            false => Ok(()),
        }
    }

    /// A published volume grew: hosts must see the new size. LIO's fileio backstore keeps
    /// the size it was made with, so an iSCSI volume is refused growth while published
    /// (the caller checks [`Exports::grows_online`] first).
    pub fn resized(&self, volume_id: &str) -> io::Result<()> {
        match self.cfg.configfs.join("nvmet").is_dir() {
            true => self.nvmet().resized(volume_id),
            false => Ok(()),
        }
    }

    /// Whether a published volume of `protocol` can grow while hosts use it.
    pub fn grows_online(protocol: &str) -> bool {
        protocol != PROTOCOL_ISCSI
    }

    /// Every export made to match the store: wanted ones ensured, those of this instance
    /// that nothing wants removed. Returns one line per failure (the others go on).
    pub fn reconcile(&self, wanted: &[Wanted]) -> Vec<String> {
        if self.cfg.is_empty() {
            return Vec::new();
        }
        let mut failures = Vec::new();
        let mut present = BTreeSet::new();
        if self.cfg.configfs.join("target/iscsi").is_dir() {
            present.extend(self.lio().exported());
        }
        if self.cfg.configfs.join("nvmet").is_dir() {
            present.extend(self.nvmet().exported());
        }
        for w in wanted {
            if let Err(e) = self.sync(&w.volume_id, Some(w)) {
                failures.push(format!("volume {}: {e}", w.volume_id));
            }
            present.remove(&w.volume_id);
        }
        for stale in present {
            if let Err(e) = self.sync(&stale, None) {
                failures.push(format!("stale export of volume {stale}: {e}"));
            }
        }
        failures
    }
}

/// This data dir's instance id: 8 hex digits made on first use and kept.
fn instance_id(data_dir: &Path) -> io::Result<String> {
    let path = data_dir.join("export-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() == 8 && s.trim().bytes().all(|b| b.is_ascii_hexdigit()) => {
            return Ok(s.trim().to_ascii_lowercase())
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = crate::ids::random_hex(4);
    crate::files::write_atomic(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests;
