//! Access protocol `nvmetcp` through nvme-cli: `nvme connect` to the subsystem (NQN in
//! `targetNames`) at every discovery address, then the namespace is found in sysfs by its
//! identifiers. State is read from sysfs rather than `nvme list-subsys -o json`, whose
//! shape changed between nvme-cli 1.x and 2.x; sysfs is kernel ABI:
//!
//! - `/sys/class/nvme-subsystem/nvme-subsysN/subsysnqn`
//! - `…/nvme-subsysN/nvmeC/{transport,address,state}`, one per controller (path);
//!   `address` is `traddr=10.0.0.9,trsvcid=4420[,src_addr=…]`
//! - namespaces `…/nvme-subsysN/nvmeXnY/` (native multipath head) or
//!   `…/nvme-subsysN/nvmeC/nvmeCnY/` (without), with `wwid` (`uuid.…`, `eui.<nguid>`,
//!   `eui.<eui64>`), `nguid` and `uuid` (`%pU`) and `eui` (`%8ph`, bytes and spaces).

use super::multipath;
use super::scsi::{self, BlockDevice};
use super::Transport;
use crate::target::{NvmeTcpTarget, TargetScope};
use crate::{Cmd, CmdOutput, Host};
use std::path::{Path, PathBuf};
use std::time::Duration;
use volbridge_base::error::{Error, ErrorKind, Result};

const NVME: &str = "nvme";
const INSTALL: &str = "nvme-cli";
const SYS_SUBSYSTEMS: &str = "/sys/class/nvme-subsystem";
const TCP_MODULE: &str = "/sys/module/nvme_tcp";

pub struct NvmeTransport {
    device_wait: Duration,
}

impl NvmeTransport {
    pub fn new(device_wait: Duration) -> NvmeTransport {
        NvmeTransport { device_wait }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Controller {
    name: String,
    transport: String,
    traddr: String,
    trsvcid: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Namespace {
    name: String,
    /// Every identifier the kernel shows, in [`id_key`] form.
    ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Subsystem {
    nqn: String,
    controllers: Vec<Controller>,
    namespaces: Vec<Namespace>,
}

/// An NVMe identifier in comparable form: lower-case hex without `eui.`/`uuid.`, dashes or
/// the spaces of the `eui` attribute.
fn id_key(id: &str) -> String {
    let lower = id.trim().to_ascii_lowercase();
    let bare = ["eui.", "uuid."]
        .iter()
        .find_map(|p| lower.strip_prefix(p))
        .unwrap_or(&lower);
    bare.chars().filter(|c| *c != '-' && *c != ' ').collect()
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `nvme3`
fn is_controller(name: &str) -> bool {
    name.strip_prefix("nvme").is_some_and(digits)
}

/// `nvme3n1`, not the hidden per-path `nvme3c1n1`.
fn is_namespace(name: &str) -> bool {
    name.strip_prefix("nvme")
        .and_then(|rest| rest.split_once('n'))
        .is_some_and(|(c, n)| digits(c) && digits(n))
}

fn parse_address(address: &str) -> (String, String) {
    let mut traddr = String::new();
    let mut trsvcid = String::new();
    for (key, value) in address
        .trim()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
    {
        match key {
            "traddr" => traddr = value.to_owned(),
            "trsvcid" => trsvcid = value.to_owned(),
            _ => {}
        }
    }
    (traddr, trsvcid)
}

fn read_trimmed(host: &dyn Host, path: &Path) -> Result<Option<String>> {
    Ok(host.read_file(path)?.map(|s| s.trim().to_owned()))
}

fn namespace(host: &dyn Host, dir: &Path, name: &str) -> Result<Namespace> {
    let mut ids = Vec::new();
    for attr in ["wwid", "nguid", "uuid", "eui"] {
        if let Some(value) = host.read_file(&dir.join(attr))? {
            let key = id_key(&value);
            if key.bytes().any(|b| b != b'0') && !ids.contains(&key) {
                ids.push(key);
            }
        }
    }
    Ok(Namespace {
        name: name.to_owned(),
        ids,
    })
}

fn subsystems(host: &dyn Host) -> Result<Vec<Subsystem>> {
    let mut out = Vec::new();
    for name in host.list_dir(Path::new(SYS_SUBSYSTEMS))? {
        let dir = Path::new(SYS_SUBSYSTEMS).join(&name);
        let Some(nqn) = read_trimmed(host, &dir.join("subsysnqn"))? else {
            continue;
        };
        let mut sub = Subsystem {
            nqn,
            controllers: Vec::new(),
            namespaces: Vec::new(),
        };
        for entry in host.list_dir(&dir)? {
            if is_namespace(&entry) {
                sub.namespaces
                    .push(namespace(host, &dir.join(&entry), &entry)?);
            } else if is_controller(&entry) {
                let ctrl = dir.join(&entry);
                let address = read_trimmed(host, &ctrl.join("address"))?.unwrap_or_default();
                let (traddr, trsvcid) = parse_address(&address);
                sub.controllers.push(Controller {
                    name: entry.clone(),
                    transport: read_trimmed(host, &ctrl.join("transport"))?.unwrap_or_default(),
                    traddr,
                    trsvcid,
                });
                // Without native multipath each controller carries its own namespaces.
                for ns in host.list_dir(&ctrl)? {
                    if is_namespace(&ns) && !sub.namespaces.iter().any(|n| n.name == ns) {
                        sub.namespaces.push(namespace(host, &ctrl.join(&ns), &ns)?);
                    }
                }
            }
        }
        out.push(sub);
    }
    Ok(out)
}

/// nvme-cli 2.x says "already connected"; 1.x passes the kernel's EALREADY on
/// ("Failed to write to /dev/nvme-fabrics: Operation already in progress").
fn already_connected(out: &CmdOutput) -> bool {
    let text = format!("{}\n{}", out.stderr, out.stdout).to_ascii_lowercase();
    text.contains("already connected") || text.contains("operation already in progress")
}

impl NvmeTransport {
    fn resolve(
        &self,
        host: &dyn Host,
        target: &NvmeTcpTarget,
    ) -> Result<(BlockDevice, Vec<Subsystem>)> {
        let key = id_key(target.serial.as_str());
        let subs = subsystems(host)?;
        let mut paths = Vec::new();
        for sub in &subs {
            if !target.nqns.contains(&sub.nqn) {
                continue;
            }
            for ns in &sub.namespaces {
                if ns.ids.contains(&key) && !paths.contains(&ns.name) {
                    paths.push(ns.name.clone());
                }
            }
        }
        // dm-multipath instead of native multipath: the map is `mpath-<wwid>`.
        let map = multipath::find_map(host, &paths, &|wwid| id_key(wwid) == key)?;
        Ok((BlockDevice { paths, map }, subs))
    }

    fn connect_error(
        &self,
        host: &dyn Host,
        what: &str,
        cmd: &Cmd,
        out: &CmdOutput,
    ) -> Result<Error> {
        let mut why = out.reason();
        if host.stat(Path::new(TCP_MODULE))?.is_none() {
            why.push_str("; is the nvme-tcp kernel module loaded (modprobe nvme-tcp)?");
        }
        Ok(scsi::tool_error(ErrorKind::Internal, what, cmd, out, &why))
    }
}

impl Transport for NvmeTransport {
    type Target = NvmeTcpTarget;

    fn attach(&self, host: &dyn Host, target: &NvmeTcpTarget) -> Result<PathBuf> {
        scsi::require(host, NVME, INSTALL)?;
        let port = target.port.to_string();
        let port = port.as_str();
        let _lock = scsi::lock_targets(&target.nqns);

        let subs = subsystems(host)?;
        let controllers = |nqn: &str| -> Vec<&Controller> {
            subs.iter()
                .filter(|s| s.nqn == nqn)
                .flat_map(|s| &s.controllers)
                .collect()
        };
        let live = |nqn: &str, ip: &str| {
            controllers(nqn)
                .iter()
                .any(|c| c.transport == "tcp" && c.traddr == ip && c.trsvcid == port)
        };
        let all_live = target
            .nqns
            .iter()
            .all(|nqn| target.addresses.iter().all(|ip| live(nqn, ip)));
        if target.nqns.iter().all(|nqn| !controllers(nqn).is_empty()) {
            if let Some(device) = self.resolve(host, target)?.0.device() {
                return Ok(device);
            }
        }

        for nqn in &target.nqns {
            let mut connected = !controllers(nqn).is_empty();
            let mut failure = None;
            for ip in &target.addresses {
                if live(nqn, ip) {
                    continue;
                }
                let cmd = Cmd::new(NVME).args([
                    "connect",
                    "-t",
                    "tcp",
                    "-n",
                    nqn.as_str(),
                    "-a",
                    ip.as_str(),
                    "-s",
                    port,
                ]);
                let out = host.run(&cmd)?;
                if out.success() || already_connected(&out) {
                    connected = true;
                } else {
                    let what = format!("NVMe/TCP connect to {nqn} at {ip}:{port}");
                    let e = self.connect_error(host, &what, &cmd, &out)?;
                    tracing::warn!(error = %e, "NVMe/TCP path not connected");
                    failure = Some(e);
                }
            }
            if !connected {
                if let Some(e) = failure {
                    return Err(e);
                }
            }
        }
        // Every path was up already: the namespace is new to live controllers, which
        // normally learn of it by an event; ask them to look again in case it was missed.
        if all_live {
            for ctrl in target.nqns.iter().flat_map(|nqn| controllers(nqn)) {
                let cmd = Cmd::new(NVME).args(["ns-rescan", &format!("/dev/{}", ctrl.name)]);
                let out = host.run(&cmd)?;
                if !out.success() {
                    return Err(scsi::tool_error(
                        ErrorKind::Internal,
                        &format!("namespace rescan of {}", ctrl.name),
                        &cmd,
                        &out,
                        &out.reason(),
                    ));
                }
            }
        }

        let found = scsi::wait_for(self.device_wait, || {
            Ok(self.resolve(host, target)?.0.device())
        })?;
        found.ok_or_else(|| {
            scsi::device_timeout(
                target.serial.as_str(),
                self.device_wait,
                &format!(
                    "connecting to {} (namespace {}); check that the namespace is mapped to \
                     this host's NQN",
                    target.nqns.join(", "),
                    target.namespace
                ),
            )
        })
    }

    fn find(&self, host: &dyn Host, target: &NvmeTcpTarget) -> Result<Option<PathBuf>> {
        Ok(self.resolve(host, target)?.0.device())
    }

    fn detach(&self, host: &dyn Host, target: &NvmeTcpTarget) -> Result<()> {
        let _lock = scsi::lock_targets(&target.nqns);
        let (device, subs) = self.resolve(host, target)?;
        if !device.is_empty() {
            // Namespaces cannot be deleted from the host side; they go with the controller
            // or when the array unmaps them. Only a dm map over them is ours to remove.
            scsi::ensure_unused(host, &device)?;
            if let Some(map) = &device.map {
                multipath::flush(host, map)?;
            }
        }
        let volume_scope = target.scope == TargetScope::Volume;
        for nqn in &target.nqns {
            let mine: Vec<&Subsystem> = subs
                .iter()
                .filter(|s| &s.nqn == nqn && !s.controllers.is_empty())
                .collect();
            if mine.is_empty() {
                continue;
            }
            if !volume_scope {
                let other = mine
                    .iter()
                    .flat_map(|s| &s.namespaces)
                    .find(|ns| !device.paths.contains(&ns.name));
                if let Some(other) = other {
                    tracing::debug!(nqn = %nqn, namespace = %other.name,
                        "shared NVMe subsystem still in use; staying connected");
                    continue;
                }
            }
            scsi::require(host, NVME, INSTALL)?;
            let cmd = Cmd::new(NVME).args(["disconnect", "-n", nqn.as_str()]);
            let out = host.run(&cmd)?;
            if !out.success() {
                return Err(scsi::tool_error(
                    ErrorKind::Internal,
                    &format!("NVMe disconnect from {nqn}"),
                    &cmd,
                    &out,
                    &out.reason(),
                ));
            }
        }
        Ok(())
    }

    /// A grown namespace: the array raises an event the kernel handles when it gets to
    /// it, so a filesystem grown at once would find the old size. Asks the array what the
    /// namespace holds now (Identify Namespace), has the controllers rescan, and waits for
    /// the kernel to show it.
    fn refresh_size(&self, host: &dyn Host, target: &NvmeTcpTarget, _: &Path) -> Result<()> {
        let (device, subs) = self.resolve(host, target)?;
        let Some(path) = device.paths.first() else {
            return Ok(());
        };
        let namespace = Path::new("/dev").join(path);
        scsi::require(host, NVME, INSTALL)?;
        let cmd = Cmd::new(NVME).args([
            "id-ns",
            &namespace.display().to_string(),
            "--output-format=json",
        ]);
        let out = host.run(&cmd)?;
        // Without an answer the event is all there is; the grow then finds what it finds.
        let Some(want) = out.success().then(|| id_ns_bytes(&out.stdout)).flatten() else {
            return Ok(());
        };
        if host.device_size(&namespace)? >= want {
            return Ok(());
        }
        for ctrl in subs
            .iter()
            .filter(|s| target.nqns.contains(&s.nqn))
            .flat_map(|s| &s.controllers)
        {
            let cmd = Cmd::new(NVME).args(["ns-rescan", &format!("/dev/{}", ctrl.name)]);
            let _ = host.run(&cmd)?;
        }
        let grown = scsi::wait_for(self.device_wait, || {
            Ok((host.device_size(&namespace)? >= want).then_some(()))
        })?;
        grown.ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{} still shows {} bytes after a rescan while the array reports {want}; \
                     expand the volume on this node again",
                    namespace.display(),
                    host.device_size(&namespace).unwrap_or(0)
                ),
            )
        })
    }
}

/// A namespace's size in bytes from `nvme id-ns --output-format=json`: `nsze` blocks of
/// the size of the LBA format in use (`flbas`' low four bits index `lbafs`; `ds` is a
/// power of two).
fn id_ns_bytes(json: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let nsze = v.get("nsze")?.as_u64()?;
    let format = v.get("flbas")?.as_u64()? & 0xf;
    let ds = v
        .get("lbafs")?
        .get(usize::try_from(format).ok()?)?
        .get("ds")?
        .as_u64()?;
    nsze.checked_mul(1u64.checked_shl(u32::try_from(ds).ok()?)?)
}

#[cfg(test)]
mod tests;
