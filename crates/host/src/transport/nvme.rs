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
use crate::PublishContext;
use crate::{Cmd, CmdOutput, Host};
use std::path::{Path, PathBuf};
use std::time::Duration;
use volbridge_base::error::{Error, ErrorKind, Result};
use volbridge_proto::publish_context::DEFAULT_NVME_PORT;

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

fn port(ctx: &PublishContext) -> &str {
    match ctx.target_port.trim() {
        "" => DEFAULT_NVME_PORT,
        p => p,
    }
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
        ctx: &PublishContext,
    ) -> Result<(BlockDevice, Vec<Subsystem>)> {
        let key = id_key(scsi::serial_of(ctx)?);
        let subs = subsystems(host)?;
        let mut paths = Vec::new();
        for sub in &subs {
            if !ctx.target_names.is_empty() && !ctx.target_names.contains(&sub.nqn) {
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
    fn attach(&self, host: &dyn Host, ctx: &PublishContext) -> Result<PathBuf> {
        scsi::serial_of(ctx)?;
        if ctx.target_names.is_empty() {
            return Err(Error::invalid(
                "targetNames",
                "the publish context has no NVMe subsystem NQN",
            ));
        }
        if ctx.discovery_ips.is_empty() {
            return Err(Error::invalid(
                "discoveryIps",
                "the publish context has no NVMe/TCP address",
            ));
        }
        scsi::require(host, NVME, INSTALL)?;
        let port = port(ctx);
        let _lock = scsi::lock_targets(&ctx.target_names);

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
        let all_live = ctx
            .target_names
            .iter()
            .all(|nqn| ctx.discovery_ips.iter().all(|ip| live(nqn, ip)));
        if ctx
            .target_names
            .iter()
            .all(|nqn| !controllers(nqn).is_empty())
        {
            if let Some(device) = self.resolve(host, ctx)?.0.device() {
                return Ok(device);
            }
        }

        for nqn in &ctx.target_names {
            let mut connected = !controllers(nqn).is_empty();
            let mut failure = None;
            for ip in &ctx.discovery_ips {
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
            for ctrl in ctx.target_names.iter().flat_map(|nqn| controllers(nqn)) {
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

        let found = scsi::wait_for(self.device_wait, || Ok(self.resolve(host, ctx)?.0.device()))?;
        found.ok_or_else(|| {
            scsi::device_timeout(
                &ctx.serial_number,
                self.device_wait,
                &format!(
                    "connecting to {} (namespace {}); check that the namespace is mapped to \
                     this host's NQN",
                    ctx.target_names.join(", "),
                    ctx.lun_id
                ),
            )
        })
    }

    fn find(&self, host: &dyn Host, ctx: &PublishContext) -> Result<Option<PathBuf>> {
        Ok(self.resolve(host, ctx)?.0.device())
    }

    fn detach(&self, host: &dyn Host, ctx: &PublishContext) -> Result<()> {
        let _lock = scsi::lock_targets(&ctx.target_names);
        let (device, subs) = self.resolve(host, ctx)?;
        if !device.is_empty() {
            // Namespaces cannot be deleted from the host side; they go with the controller
            // or when the array unmaps them. Only a dm map over them is ours to remove.
            scsi::ensure_unused(host, &device)?;
            if let Some(map) = &device.map {
                multipath::flush(host, map)?;
            }
        }
        let volume_scope = ctx.target_scope.trim().eq_ignore_ascii_case("volume");
        for nqn in &ctx.target_names {
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
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::*;
    use super::*;
    use crate::FakeHost;

    const NQN: &str = "nqn.2020-07.com.example:group1";
    const NGUID: &str = "6d0b6a7e-4f2c-11ee-8001-00a098d7c5b1";
    const SERIAL: &str = "6D0B6A7E4F2C11EE800100A098D7C5B1";

    fn ctx(scope: &str) -> PublishContext {
        PublishContext {
            access_protocol: "nvmetcp".into(),
            serial_number: SERIAL.into(),
            target_names: vec![NQN.into()],
            target_scope: scope.into(),
            lun_id: 12,
            discovery_ips: vec!["10.0.0.9".into(), "10.0.1.9".into()],
            target_port: "4420".into(),
            ..PublishContext::default()
        }
    }

    fn transport(wait_ms: u64) -> NvmeTransport {
        NvmeTransport::new(Duration::from_millis(wait_ms))
    }

    fn subsystem(host: &FakeHost, subsys: &str, nqn: &str) {
        host.add_file(
            format!("{SYS_SUBSYSTEMS}/{subsys}/subsysnqn"),
            &format!("{nqn}\n"),
        );
        host.add_file(
            format!("{SYS_SUBSYSTEMS}/{subsys}/model"),
            "Example Array\n",
        );
    }

    fn controller(host: &FakeHost, subsys: &str, ctrl: &str, traddr: &str) {
        let dir = format!("{SYS_SUBSYSTEMS}/{subsys}/{ctrl}");
        host.add_file(format!("{dir}/transport"), "tcp\n");
        host.add_file(
            format!("{dir}/address"),
            &format!("traddr={traddr},trsvcid=4420,src_addr=10.0.0.2\n"),
        );
        host.add_file(format!("{dir}/state"), "live\n");
        host.add_file(format!("{dir}/subsysnqn"), "ignored\n");
    }

    /// A namespace head as native multipath shows it (`dir` relative to the subsystem).
    fn namespace(host: &FakeHost, subsys: &str, rel: &str, nguid: &str, minor: u32) {
        let dir = format!("{SYS_SUBSYSTEMS}/{subsys}/{rel}");
        let name = rel.rsplit('/').next().unwrap_or(rel);
        host.add_file(format!("{dir}/nguid"), &format!("{nguid}\n"));
        host.add_file(format!("{dir}/uuid"), &format!("{nguid}\n"));
        host.add_file(
            format!("{dir}/wwid"),
            &format!("eui.{}\n", nguid.replace('-', "")),
        );
        host.add_file(format!("{dir}/nsid"), "12\n");
        host.add_file(format!("/sys/block/{name}/dev"), &format!("259:{minor}\n"));
        host.add_dir(format!("/sys/block/{name}/holders"));
    }

    #[test]
    fn identifiers_and_names() {
        assert_eq!(
            id_key("eui.6d0b6a7e4f2c11ee800100a098d7c5b1"),
            SERIAL.to_ascii_lowercase()
        );
        assert_eq!(id_key(NGUID), SERIAL.to_ascii_lowercase());
        assert_eq!(
            id_key("uuid.0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n"),
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
        );
        assert_eq!(id_key("00 25 38 5b 71 b0 7e 2f\n"), "0025385b71b07e2f");
        assert!(is_controller("nvme0") && is_controller("nvme12"));
        assert!(!is_controller("nvme0n1") && !is_controller("nvme-subsys0"));
        assert!(is_namespace("nvme0n1") && is_namespace("nvme10n23"));
        assert!(!is_namespace("nvme0c1n1") && !is_namespace("nvme0") && !is_namespace("nvme0n"));
        assert_eq!(
            parse_address("traddr=10.0.0.9,trsvcid=4420,src_addr=10.0.0.2\n"),
            ("10.0.0.9".into(), "4420".into())
        );
        assert_eq!(
            parse_address("traddr=fd00::9,trsvcid=4420"),
            ("fd00::9".into(), "4420".into())
        );
    }

    #[test]
    fn connect_to_every_address_then_find_the_namespace_by_nguid() {
        let host = FakeHost::new();
        host.install(NVME);
        let dev = appear_after(
            &host,
            "-a 10.0.1.9",
            |h| {
                subsystem(h, "nvme-subsys0", NQN);
                controller(h, "nvme-subsys0", "nvme0", "10.0.0.9");
                controller(h, "nvme-subsys0", "nvme1", "10.0.1.9");
                namespace(h, "nvme-subsys0", "nvme0n1", NGUID, 0);
            },
            || transport(5000).attach(&host, &ctx("group")).unwrap(),
        );
        assert_eq!(dev, PathBuf::from("/dev/nvme0n1"));
        assert_eq!(
            host.commands(),
            [
                format!("nvme connect -t tcp -n {NQN} -a 10.0.0.9 -s 4420"),
                format!("nvme connect -t tcp -n {NQN} -a 10.0.1.9 -s 4420"),
            ]
        );
        // Repeat: every path is up and the namespace is there; nothing runs.
        host.clear_calls();
        assert_eq!(transport(5000).attach(&host, &ctx("group")).unwrap(), dev);
        assert!(host.commands().is_empty());
    }

    #[test]
    fn already_connected_is_success_and_port_defaults_to_4420() {
        let host = FakeHost::new();
        host.script(
            NVME,
            &["connect"],
            CmdOutput::failed(1, "already connected\n"),
        );
        subsystem(&host, "nvme-subsys3", NQN);
        controller(&host, "nvme-subsys3", "nvme3", "10.0.0.9");
        let mut c = ctx("group");
        c.target_port = String::new();
        appear_after(
            &host,
            "connect",
            |h| namespace(h, "nvme-subsys3", "nvme3n2", NGUID, 5),
            || transport(5000).attach(&host, &c).unwrap(),
        );
        // Only the address without a live controller is connected.
        assert_eq!(
            host.commands(),
            [format!("nvme connect -t tcp -n {NQN} -a 10.0.1.9 -s 4420")]
        );

        let host = FakeHost::new();
        host.script(
            NVME,
            &["connect"],
            CmdOutput::failed(
                114,
                "Failed to write to /dev/nvme-fabrics: Operation already in progress\n",
            ),
        );
        subsystem(&host, "nvme-subsys0", NQN);
        namespace(&host, "nvme-subsys0", "nvme0n1", NGUID, 0);
        let mut c = ctx("group");
        c.target_port = "8009".into();
        c.discovery_ips.truncate(1);
        transport(5000).attach(&host, &c).unwrap();
        assert_eq!(
            host.commands(),
            [format!("nvme connect -t tcp -n {NQN} -a 10.0.0.9 -s 8009")]
        );
    }

    #[test]
    fn namespace_is_matched_by_uuid_eui_and_nqn() {
        let host = FakeHost::new();
        subsystem(&host, "nvme-subsys0", NQN);
        controller(&host, "nvme-subsys0", "nvme0", "10.0.0.9");
        let ns = format!("{SYS_SUBSYSTEMS}/nvme-subsys0/nvme0n4");
        host.add_file(
            format!("{ns}/wwid"),
            "uuid.0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n",
        );
        host.add_file(
            format!("{ns}/uuid"),
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n",
        );
        host.add_file(format!("{ns}/nguid"), &format!("{NGUID}\n"));
        host.add_file(format!("{ns}/eui"), "00 25 38 5b 71 b0 7e 2f\n");
        // The same identifiers behind another subsystem must not be taken.
        subsystem(&host, "nvme-subsys1", "nqn.2020-07.com.example:other");
        namespace(
            &host,
            "nvme-subsys1",
            "nvme1n1",
            "11111111-2222-3333-4444-555555555555",
            1,
        );
        let t = transport(20);
        for serial in [
            SERIAL,
            "eui.6d0b6a7e4f2c11ee800100a098d7c5b1",
            "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0",
            "0025385B71B07E2F",
        ] {
            let mut c = ctx("group");
            c.serial_number = serial.into();
            assert_eq!(
                t.find(&host, &c).unwrap(),
                Some(PathBuf::from("/dev/nvme0n4")),
                "{serial}"
            );
        }
        let mut c = ctx("group");
        c.serial_number = "111111112222333344445555555555555".into();
        assert_eq!(t.find(&host, &c).unwrap(), None);
        c.serial_number = "11111111222233334444555555555555".into();
        assert_eq!(t.find(&host, &c).unwrap(), None);
        c.target_names = vec!["nqn.2020-07.com.example:other".into()];
        assert_eq!(
            t.find(&host, &c).unwrap(),
            Some(PathBuf::from("/dev/nvme1n1"))
        );
    }

    #[test]
    fn live_paths_without_the_namespace_are_rescanned() {
        let host = FakeHost::new();
        host.install(NVME);
        subsystem(&host, "nvme-subsys0", NQN);
        controller(&host, "nvme-subsys0", "nvme0", "10.0.0.9");
        controller(&host, "nvme-subsys0", "nvme1", "10.0.1.9");
        namespace(
            &host,
            "nvme-subsys0",
            "nvme0n1",
            "11111111-2222-3333-4444-555555555555",
            1,
        );
        let dev = appear_after(
            &host,
            "ns-rescan /dev/nvme1",
            |h| namespace(h, "nvme-subsys0", "nvme0n2", NGUID, 2),
            || transport(5000).attach(&host, &ctx("group")).unwrap(),
        );
        assert_eq!(dev, PathBuf::from("/dev/nvme0n2"));
        assert_eq!(
            host.commands(),
            ["nvme ns-rescan /dev/nvme0", "nvme ns-rescan /dev/nvme1"]
        );
    }

    #[test]
    fn dm_multipath_over_non_native_paths() {
        let host = FakeHost::new();
        host.install(NVME);
        host.install("multipath");
        subsystem(&host, "nvme-subsys0", NQN);
        controller(&host, "nvme-subsys0", "nvme0", "10.0.0.9");
        controller(&host, "nvme-subsys0", "nvme1", "10.0.1.9");
        namespace(&host, "nvme-subsys0", "nvme0/nvme0n1", NGUID, 0);
        namespace(&host, "nvme-subsys0", "nvme1/nvme1n1", NGUID, 1);
        let wwid = format!("eui.{}", SERIAL.to_ascii_lowercase());
        mpath_map(&host, "dm-3", "mpathc", &wwid, &["nvme0n1", "nvme1n1"]);
        let t = transport(20);
        assert_eq!(
            t.attach(&host, &ctx("volume")).unwrap(),
            PathBuf::from("/dev/mapper/mpathc")
        );
        assert!(host.commands().is_empty());
        t.detach(&host, &ctx("volume")).unwrap();
        assert_eq!(
            host.commands(),
            [
                "multipath -f mpathc".to_owned(),
                format!("nvme disconnect -n {NQN}")
            ]
        );
    }

    #[test]
    fn disconnect_only_when_no_other_namespace_uses_a_group_subsystem() {
        let connected = || {
            let host = FakeHost::new();
            host.script(
                NVME,
                &["disconnect"],
                CmdOutput::ok(format!("NQN:{NQN} disconnected 2 controller(s)\n")),
            );
            subsystem(&host, "nvme-subsys0", NQN);
            controller(&host, "nvme-subsys0", "nvme0", "10.0.0.9");
            controller(&host, "nvme-subsys0", "nvme1", "10.0.1.9");
            namespace(&host, "nvme-subsys0", "nvme0n1", NGUID, 0);
            host
        };
        let host = connected();
        namespace(
            &host,
            "nvme-subsys0",
            "nvme0n2",
            "11111111-2222-3333-4444-555555555555",
            2,
        );
        transport(20).detach(&host, &ctx("group")).unwrap();
        assert!(host.commands().is_empty(), "{:?}", host.commands());

        // Volume scope: the subsystem is the volume's own.
        transport(20).detach(&host, &ctx("volume")).unwrap();
        assert_eq!(host.commands(), [format!("nvme disconnect -n {NQN}")]);

        let host = connected();
        transport(20).detach(&host, &ctx("group")).unwrap();
        assert_eq!(host.commands(), [format!("nvme disconnect -n {NQN}")]);

        // Nothing connected any more: nothing to do, nvme-cli not even needed.
        let host = FakeHost::new();
        transport(20).detach(&host, &ctx("volume")).unwrap();
        assert!(host.calls().is_empty());
    }

    #[test]
    fn detach_refuses_a_mounted_namespace() {
        let host = FakeHost::new();
        host.install(NVME);
        subsystem(&host, "nvme-subsys0", NQN);
        controller(&host, "nvme-subsys0", "nvme0", "10.0.0.9");
        namespace(&host, "nvme-subsys0", "nvme0n1", NGUID, 0);
        host.add_mount("/dev/nvme0n1", "/srv/data", "ext4", "259:0");
        let e = transport(20).detach(&host, &ctx("volume")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        assert!(
            e.message
                .contains("/dev/nvme0n1 is still mounted at /srv/data"),
            "{}",
            e.message
        );
        assert!(host.commands().is_empty());
    }

    #[test]
    fn connect_failure_reports_nvme_reason_and_module_hint() {
        let host = FakeHost::new();
        host.script(
            NVME,
            &["connect"],
            CmdOutput::failed(
                1,
                "could not add new controller: failed to write to nvme-fabrics device\n",
            ),
        );
        let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(
            e.message.contains(&format!(
                "NVMe/TCP connect to {NQN} at 10.0.1.9:4420 failed"
            )) && e.message.contains("failed to write to nvme-fabrics device")
                && e.message.contains("modprobe nvme-tcp"),
            "{}",
            e.message
        );

        host.add_dir(TCP_MODULE);
        let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
        assert!(!e.message.contains("modprobe"), "{}", e.message);
    }

    #[test]
    fn missing_nvme_cli_and_missing_namespace() {
        let host = FakeHost::new();
        let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        assert!(
            e.message
                .contains("nvme not found on this node: install nvme-cli"),
            "{}",
            e.message
        );

        host.install(NVME);
        let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DeadlineExceeded);
        assert!(
            e.message.contains(&format!(
                "no device with serial {SERIAL} appeared within 20ms"
            )) && e.message.contains("namespace 12"),
            "{}",
            e.message
        );
    }
}
