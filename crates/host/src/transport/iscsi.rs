//! Access protocol `iscsi` through open-iscsi's `iscsiadm`: SendTargets discovery, node
//! records (manual startup, CHAP), login, LUN rescan, logout; the disk itself is found by
//! its WWID (see `scsi`).
//!
//! Target scope (csp-api.md §6): `volume` targets belong to one volume and are logged out
//! on detach; `group` targets (the default) are shared, so they are logged out only when
//! no other LUN of the session is left.

use super::scsi::{self, BlockDevice};
use super::Transport;
use crate::PublishContext;
use crate::{Cmd, CmdOutput, Host};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use volbridge_base::error::{Error, ErrorKind, Result};

const ISCSIADM: &str = "iscsiadm";
const INSTALL: &str = "open-iscsi (iscsi-initiator-utils) and start iscsid";
const ISCSI_PORT: &str = "3260";
const SYS_SESSIONS: &str = "/sys/class/iscsi_session";

// iscsiadm exit codes, open-iscsi include/iscsi_err.h.
const ERR_TRANS: i32 = 4;
const ERR_TRANS_TIMEOUT: i32 = 8;
const ERR_PDU_TIMEOUT: i32 = 11;
const ERR_SESS_EXISTS: i32 = 15;
const ERR_ISCSID_COMM: i32 = 18;
const ERR_ISCSID_NOTCONN: i32 = 20;
const ERR_NO_OBJS_FOUND: i32 = 21;
const ERR_LOGIN_AUTH_FAILED: i32 = 24;
const ERR_AGAIN: i32 = 29;

pub struct IscsiTransport {
    device_wait: Duration,
}

impl IscsiTransport {
    pub fn new(device_wait: Duration) -> IscsiTransport {
        IscsiTransport { device_wait }
    }
}

/// The targets of one array: the primary, or a peer (replication, peer persistence) whose
/// paths are welcome but not required. No `Debug`: it holds the CHAP secret.
struct Targets {
    iqns: Vec<String>,
    discovery_ips: Vec<String>,
    chap: Option<(String, String)>,
    required: bool,
}

fn target_sets(ctx: &PublishContext) -> Result<Vec<Targets>> {
    let chap =
        (!ctx.chap_user.is_empty()).then(|| (ctx.chap_user.clone(), ctx.chap_password.clone()));
    let mut sets = vec![Targets {
        iqns: ctx.target_names.clone(),
        discovery_ips: ctx.discovery_ips.clone(),
        chap: chap.clone(),
        required: true,
    }];
    for peer in ctx.peers()? {
        // A peer array without its own CHAP pair takes the host's, which the CSP set on
        // both arrays.
        let peer_chap = peer
            .chap_user
            .filter(|u| !u.is_empty())
            .map(|u| (u, peer.chap_password.unwrap_or_default()))
            .or_else(|| chap.clone());
        sets.push(Targets {
            iqns: peer.target_names,
            discovery_ips: peer.discovery_ips,
            chap: peer_chap,
            required: false,
        });
    }
    Ok(sets)
}

fn all_iqns(sets: &[Targets]) -> BTreeSet<String> {
    sets.iter().flat_map(|s| s.iqns.iter().cloned()).collect()
}

/// One line of `iscsiadm -m session`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    sid: u32,
    /// `10.0.0.5:3260`, `[fd00::5]:3260`: usable as `-p`.
    portal: String,
    iqn: String,
}

/// `tcp: [1] 10.0.0.5:3260,1 iqn.2000-05.com.example:tgt1 (non-flash)`
fn parse_sessions(stdout: &str) -> Vec<Session> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let _transport = words.next().filter(|w| w.ends_with(':'))?;
            let sid = words
                .next()?
                .strip_prefix('[')?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            let (portal, _tpgt) = words.next()?.rsplit_once(',')?;
            let iqn = words.next()?;
            Some(Session {
                sid,
                portal: portal.to_owned(),
                iqn: iqn.to_owned(),
            })
        })
        .collect()
}

/// `10.0.0.5:3260,1 iqn.2000-05.com.example:tgt1` → (`10.0.0.5:3260`, iqn); other lines
/// (warnings) are skipped.
fn parse_discovery(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (portal, tpgt) = words.next()?.rsplit_once(',')?;
            tpgt.parse::<i64>().ok()?;
            let iqn = words.next()?;
            (portal.contains(':') && words.next().is_none())
                .then(|| (portal.to_owned(), iqn.to_owned()))
        })
        .collect()
}

/// A discovery address (given without port, §4.5) as an iscsiadm portal.
fn portal_of(ip: &str) -> String {
    let ip = ip.trim();
    let colons = ip.matches(':').count();
    if ip.starts_with('[') {
        if ip.contains("]:") {
            ip.to_owned()
        } else {
            format!("{ip}:{ISCSI_PORT}")
        }
    } else if colons == 0 {
        format!("{ip}:{ISCSI_PORT}")
    } else if colons == 1 {
        // host:port already
        ip.to_owned()
    } else {
        format!("[{ip}]:{ISCSI_PORT}")
    }
}

/// The useful line of iscsiadm's complaint: it ends most failures with a generic summary
/// ("Could not log into all portals") after the real reason.
fn reason(out: &CmdOutput) -> String {
    let text = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    text.lines()
        .map(|l| l.trim().trim_start_matches("iscsiadm:").trim())
        .rfind(|l| {
            !l.is_empty()
                && !l.starts_with("Could not log into all portals")
                && !l.starts_with("Could not login to [")
        })
        .map(str::to_owned)
        .unwrap_or_else(|| out.reason())
}

fn iscsiadm_error(what: &str, cmd: &Cmd, out: &CmdOutput) -> Error {
    let (kind, hint) = match out.status {
        ERR_LOGIN_AUTH_FAILED => (
            ErrorKind::FailedPrecondition,
            "; check the CHAP credentials of this host on the array",
        ),
        ERR_ISCSID_COMM | ERR_ISCSID_NOTCONN => (
            ErrorKind::FailedPrecondition,
            "; is iscsid running (systemctl start iscsid)?",
        ),
        ERR_TRANS | ERR_TRANS_TIMEOUT | ERR_PDU_TIMEOUT | ERR_AGAIN => (ErrorKind::Unavailable, ""),
        _ => (ErrorKind::Internal, ""),
    };
    scsi::tool_error(kind, what, cmd, out, &format!("{}{hint}", reason(out)))
}

fn iscsiadm<I, S>(args: I) -> Cmd
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Cmd::new(ISCSIADM).args(args)
}

fn node(iqn: &str, portal: &str) -> Cmd {
    iscsiadm(["-m", "node", "-T", iqn, "-p", portal])
}

fn run_checked(host: &dyn Host, what: &str, cmd: &Cmd) -> Result<CmdOutput> {
    let out = host.run(cmd)?;
    if out.success() {
        Ok(out)
    } else {
        Err(iscsiadm_error(what, cmd, &out))
    }
}

fn sessions(host: &dyn Host) -> Result<Vec<Session>> {
    let cmd = iscsiadm(["-m", "session"]);
    let out = host.run(&cmd)?;
    match out.status {
        0 => Ok(parse_sessions(&out.stdout)),
        // "iscsiadm: No active sessions."
        ERR_NO_OBJS_FOUND => Ok(Vec::new()),
        _ => Err(iscsiadm_error("listing iSCSI sessions", &cmd, &out)),
    }
}

/// Whether a session still carries a disk other than `removed` (another volume of a
/// shared target). LUNs without a block device (an array's controller LUN) do not count.
fn session_in_use(host: &dyn Host, sid: u32, removed: &[String]) -> Result<Option<String>> {
    let base = Path::new(SYS_SESSIONS).join(format!("session{sid}/device"));
    for target in host.list_dir(&base)? {
        if !target.starts_with("target") {
            continue;
        }
        for lun in host.list_dir(&base.join(&target))? {
            if lun.split(':').count() != 4 || !lun.split(':').all(|n| n.parse::<u64>().is_ok()) {
                continue;
            }
            for disk in host.list_dir(&base.join(&target).join(&lun).join("block"))? {
                if !removed.contains(&disk) {
                    return Ok(Some(disk));
                }
            }
        }
    }
    Ok(None)
}

impl IscsiTransport {
    fn resolve(&self, host: &dyn Host, ctx: &PublishContext) -> Result<BlockDevice> {
        scsi::resolve_scsi(host, scsi::serial_of(ctx)?)
    }

    /// Logs in to every target of `set` that has no session yet; returns the sessions that
    /// already existed, which need a rescan to show a newly mapped LUN.
    fn log_in(&self, host: &dyn Host, set: &Targets, existing: &[Session]) -> Result<Vec<u32>> {
        let (present, missing): (Vec<&String>, Vec<&String>) = set
            .iqns
            .iter()
            .partition(|iqn| existing.iter().any(|s| &s.iqn == *iqn));
        let rescan = existing
            .iter()
            .filter(|s| present.contains(&&s.iqn))
            .map(|s| s.sid)
            .collect();
        if missing.is_empty() {
            return Ok(rescan);
        }
        let records = self.discover(host, set, &missing)?;
        for iqn in missing {
            let portals: Vec<&str> = records
                .iter()
                .filter(|(_, i)| i == iqn)
                .map(|(p, _)| p.as_str())
                .collect();
            if portals.is_empty() {
                return Err(Error::precondition(format!(
                    "target {iqn} is not offered to this node by discovery portal(s) {}; \
                     is the volume exported to this host's initiator name?",
                    set.discovery_ips.join(", ")
                )));
            }
            // One reachable portal is enough; multipath takes whatever paths come up.
            let mut failure = None;
            let mut logged_in = false;
            for portal in portals {
                match self.log_in_portal(host, set, iqn, portal) {
                    Ok(()) => logged_in = true,
                    Err(e) => {
                        tracing::warn!(target_iqn = %iqn, portal, error = %e, "iSCSI login failed");
                        failure = Some(e);
                    }
                }
            }
            if !logged_in {
                if let Some(e) = failure {
                    return Err(e);
                }
            }
        }
        Ok(rescan)
    }

    /// SendTargets discovery on each address, without touching the node database (the
    /// default would create records for every target of the array and delete others):
    /// records are made only for the wanted targets.
    fn discover(
        &self,
        host: &dyn Host,
        set: &Targets,
        wanted: &[&String],
    ) -> Result<Vec<(String, String)>> {
        if set.discovery_ips.is_empty() {
            return Err(Error::invalid(
                "discoveryIps",
                "the publish context has no iSCSI discovery address",
            ));
        }
        let mut records: Vec<(String, String)> = Vec::new();
        let mut failures = Vec::new();
        for ip in &set.discovery_ips {
            let portal = portal_of(ip);
            let cmd = iscsiadm([
                "-m",
                "discovery",
                "-t",
                "sendtargets",
                "-p",
                portal.as_str(),
                "-o",
                "nonpersistent",
            ]);
            let out = host.run(&cmd)?;
            if !out.success() {
                failures.push(iscsiadm_error(
                    &format!("iSCSI discovery at {portal}"),
                    &cmd,
                    &out,
                ));
                continue;
            }
            for record in parse_discovery(&out.stdout) {
                if wanted.contains(&&record.1) && !records.contains(&record) {
                    records.push(record);
                }
            }
        }
        if records.is_empty() && failures.len() == set.discovery_ips.len() {
            if let Some(first) = failures.into_iter().next() {
                return Err(first);
            }
        }
        Ok(records)
    }

    fn log_in_portal(&self, host: &dyn Host, set: &Targets, iqn: &str, portal: &str) -> Result<()> {
        let what = format!("iSCSI login to {iqn} at {portal}");
        run_checked(host, &what, &node(iqn, portal).args(["-o", "new"]))?;
        let update = |name: &str| node(iqn, portal).args(["-o", "update", "-n", name, "-v"]);
        // Manual: the daemon must not log in at boot before volbridge decides to.
        run_checked(host, &what, &update("node.startup").arg("manual"))?;
        if let Some((user, password)) = &set.chap {
            run_checked(
                host,
                &what,
                &update("node.session.auth.authmethod").arg("CHAP"),
            )?;
            run_checked(
                host,
                &what,
                &update("node.session.auth.username").arg(user.as_str()),
            )?;
            run_checked(
                host,
                &what,
                &update("node.session.auth.password").secret_arg(password.as_str()),
            )?;
        }
        let cmd = node(iqn, portal).arg("--login");
        let out = host.run(&cmd)?;
        // A concurrent login (or iscsid's own recovery) got there first.
        let exists = out.status == ERR_SESS_EXISTS || out.stderr.contains("already present");
        if out.success() || exists {
            Ok(())
        } else {
            Err(iscsiadm_error(&what, &cmd, &out))
        }
    }

    fn log_out(&self, host: &dyn Host, session: &Session) -> Result<()> {
        let what = format!("iSCSI logout from {} at {}", session.iqn, session.portal);
        let cmd = node(&session.iqn, &session.portal).arg("--logout");
        let out = host.run(&cmd)?;
        // "No matching sessions found": someone else logged out already.
        if !out.success() && out.status != ERR_NO_OBJS_FOUND {
            return Err(iscsiadm_error(&what, &cmd, &out));
        }
        let cmd = node(&session.iqn, &session.portal).args(["-o", "delete"]);
        let out = host.run(&cmd)?;
        if !out.success() && out.status != ERR_NO_OBJS_FOUND {
            return Err(iscsiadm_error(&what, &cmd, &out));
        }
        Ok(())
    }
}

impl Transport for IscsiTransport {
    fn attach(&self, host: &dyn Host, ctx: &PublishContext) -> Result<PathBuf> {
        let sets = target_sets(ctx)?;
        if ctx.target_names.is_empty() {
            return Err(Error::invalid(
                "targetNames",
                "the publish context has no iSCSI target",
            ));
        }
        scsi::serial_of(ctx)?;
        scsi::require(host, ISCSIADM, INSTALL)?;
        let _lock = scsi::lock_targets(all_iqns(&sets));

        let existing = sessions(host)?;
        let logged_in = |set: &Targets| {
            set.iqns
                .iter()
                .all(|iqn| existing.iter().any(|s| &s.iqn == iqn))
        };
        if sets.iter().filter(|s| s.required).all(logged_in) {
            if let Some(device) = self.resolve(host, ctx)?.device() {
                return Ok(device);
            }
        }

        let mut rescan = BTreeSet::new();
        for set in &sets {
            match self.log_in(host, set, &existing) {
                Ok(sids) => rescan.extend(sids),
                Err(e) if !set.required => {
                    tracing::warn!(error = %e, "peer array paths not available");
                }
                Err(e) => return Err(e),
            }
        }
        for sid in rescan {
            let sid = sid.to_string();
            run_checked(
                host,
                &format!("rescan of iSCSI session {sid}"),
                &iscsiadm(["-m", "session", "-r", sid.as_str(), "--rescan"]),
            )?;
        }

        let found = scsi::wait_for(self.device_wait, || Ok(self.resolve(host, ctx)?.device()))?;
        found.ok_or_else(|| {
            scsi::device_timeout(
                &ctx.serial_number,
                self.device_wait,
                &format!(
                    "logging in to {} (LUN {}); check that the LUN is mapped to this host",
                    ctx.target_names.join(", "),
                    ctx.lun_id
                ),
            )
        })
    }

    fn find(&self, host: &dyn Host, ctx: &PublishContext) -> Result<Option<PathBuf>> {
        Ok(self.resolve(host, ctx)?.device())
    }

    fn detach(&self, host: &dyn Host, ctx: &PublishContext) -> Result<()> {
        let sets = target_sets(ctx)?;
        let iqns = all_iqns(&sets);
        let _lock = scsi::lock_targets(&iqns);
        let device = self.resolve(host, ctx)?;
        if !device.is_empty() {
            scsi::remove_scsi(host, &device)?;
        }
        if host.find_program(ISCSIADM).is_none() {
            // Without iscsiadm there are no open-iscsi sessions to end.
            return Ok(());
        }
        let volume_scope = ctx.target_scope.trim().eq_ignore_ascii_case("volume");
        for session in sessions(host)? {
            if !iqns.contains(&session.iqn) {
                continue;
            }
            if !volume_scope {
                if let Some(other) = session_in_use(host, session.sid, &device.paths)? {
                    tracing::debug!(
                        target_iqn = %session.iqn,
                        disk = %other,
                        "shared iSCSI target still in use; staying logged in"
                    );
                    continue;
                }
            }
            self.log_out(host, &session)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::*;
    use super::*;
    use crate::{Call, FakeHost};

    const IQN: &str = "iqn.2000-05.com.example:tgt1";
    const WWID: &str = "naa.600a0980383041334a3f4a6b4a6c4b42";
    const SERIAL: &str = "600A0980383041334A3F4A6B4A6C4B42";

    fn ctx(scope: &str) -> PublishContext {
        PublishContext {
            access_protocol: "iscsi".into(),
            serial_number: SERIAL.into(),
            target_names: vec![IQN.into()],
            target_scope: scope.into(),
            lun_id: 3,
            discovery_ips: vec!["10.0.0.5".into()],
            ..PublishContext::default()
        }
    }

    fn transport(wait_ms: u64) -> IscsiTransport {
        IscsiTransport::new(Duration::from_millis(wait_ms))
    }

    fn no_sessions(host: &FakeHost) {
        host.script(
            ISCSIADM,
            &["-m", "session"],
            CmdOutput::failed(21, "iscsiadm: No active sessions.\n"),
        );
    }

    fn discovery(host: &FakeHost, portal: &str, stdout: &str) {
        host.script(
            ISCSIADM,
            &["-m", "discovery", "-t", "sendtargets", "-p", portal],
            CmdOutput::ok(stdout),
        );
    }

    fn login_ok(iqn: &str, ip: &str) -> CmdOutput {
        CmdOutput::ok(format!(
            "Logging in to [iface: default, target: {iqn}, portal: {ip},3260]\n\
             Login to [iface: default, target: {iqn}, portal: {ip},3260] successful.\n"
        ))
    }

    fn commands(host: &FakeHost) -> Vec<String> {
        host.commands()
    }

    #[test]
    fn parses_real_iscsiadm_output() {
        let sessions = parse_sessions(
            "tcp: [1] 10.0.0.5:3260,1 iqn.2000-05.com.example:tgt1 (non-flash)\n\
             tcp: [12] [fd00::5]:3260,2 iqn.2000-05.com.example:tgt2 (non-flash)\n\
             iser: [3] 10.1.0.5:3260,1 iqn.2000-05.com.example:tgt3\n\
             garbage line\n",
        );
        assert_eq!(
            sessions,
            [
                Session {
                    sid: 1,
                    portal: "10.0.0.5:3260".into(),
                    iqn: "iqn.2000-05.com.example:tgt1".into()
                },
                Session {
                    sid: 12,
                    portal: "[fd00::5]:3260".into(),
                    iqn: "iqn.2000-05.com.example:tgt2".into()
                },
                Session {
                    sid: 3,
                    portal: "10.1.0.5:3260".into(),
                    iqn: "iqn.2000-05.com.example:tgt3".into()
                },
            ]
        );
        assert_eq!(
            parse_discovery(
                "10.0.0.5:3260,1 iqn.2000-05.com.example:tgt1\n\
                 [fd00::5]:3260,1 iqn.2000-05.com.example:tgt1\n\
                 iscsiadm: some warning, ignored\n\
                 10.0.1.5:3260,2 iqn.2016-09.com.openebs.jiva:store1\n"
            ),
            [
                (
                    "10.0.0.5:3260".into(),
                    "iqn.2000-05.com.example:tgt1".into()
                ),
                (
                    "[fd00::5]:3260".into(),
                    "iqn.2000-05.com.example:tgt1".into()
                ),
                (
                    "10.0.1.5:3260".into(),
                    "iqn.2016-09.com.openebs.jiva:store1".into()
                ),
            ]
        );
        assert_eq!(portal_of("10.0.0.5"), "10.0.0.5:3260");
        assert_eq!(portal_of("fd00::5"), "[fd00::5]:3260");
        assert_eq!(portal_of("[fd00::5]"), "[fd00::5]:3260");
        assert_eq!(portal_of("array.example:3261"), "array.example:3261");
    }

    #[test]
    fn fresh_login_runs_discovery_node_setup_login_then_waits() {
        let host = FakeHost::new();
        no_sessions(&host);
        discovery(
            &host,
            "10.0.0.5:3260",
            "10.0.0.5:3260,1 iqn.2000-05.com.example:tgt1\n\
             10.0.1.5:3260,2 iqn.2000-05.com.example:tgt1\n\
             10.0.0.5:3260,1 iqn.2000-05.com.example:other-volume\n",
        );
        host.script(
            ISCSIADM,
            &["-m", "node", "-T", IQN, "-p", "10.0.0.5:3260", "--login"],
            login_ok(IQN, "10.0.0.5"),
        );
        let dev = appear_after(
            &host,
            "10.0.1.5:3260 --login",
            |h| {
                scsi_disk(h, "sdc", WWID, "8:32");
                scsi_disk(h, "sdd", WWID, "8:48");
            },
            || transport(5000).attach(&host, &ctx("group")).unwrap(),
        );
        assert_eq!(dev, PathBuf::from("/dev/sdc"));
        let node =
            |portal: &str, rest: &str| format!("iscsiadm -m node -T {IQN} -p {portal} {rest}");
        let mut expected = vec![
            "iscsiadm -m session".to_owned(),
            "iscsiadm -m discovery -t sendtargets -p 10.0.0.5:3260 -o nonpersistent".to_owned(),
        ];
        for portal in ["10.0.0.5:3260", "10.0.1.5:3260"] {
            expected.push(node(portal, "-o new"));
            expected.push(node(portal, "-o update -n node.startup -v manual"));
            expected.push(node(portal, "--login"));
        }
        assert_eq!(commands(&host), expected);
        assert!(!commands(&host).iter().any(|c| c.contains("other-volume")));
    }

    #[test]
    fn chap_password_is_passed_but_never_recorded() {
        let host = FakeHost::new();
        no_sessions(&host);
        discovery(
            &host,
            "10.0.0.5:3260",
            "10.0.0.5:3260,1 iqn.2000-05.com.example:tgt1\n",
        );
        let mut c = ctx("volume");
        c.chap_user = "chapuser".into();
        c.chap_password = "s3cret-chap-pw".into();
        appear_after(
            &host,
            "--login",
            |h| scsi_disk(h, "sdb", WWID, "8:16"),
            || transport(5000).attach(&host, &c).unwrap(),
        );
        let node = |rest: &str| format!("iscsiadm -m node -T {IQN} -p 10.0.0.5:3260 {rest}");
        assert_eq!(
            commands(&host)[2..],
            [
                node("-o new"),
                node("-o update -n node.startup -v manual"),
                node("-o update -n node.session.auth.authmethod -v CHAP"),
                node("-o update -n node.session.auth.username -v chapuser"),
                node("-o update -n node.session.auth.password -v <redacted>"),
                node("--login"),
            ]
        );
        assert!(!format!("{:?}", host.calls()).contains("s3cret-chap-pw"));
    }

    #[test]
    fn already_logged_in_group_target_is_rescanned_not_logged_in_again() {
        let host = FakeHost::new();
        host.script(
            ISCSIADM,
            &["-m", "session"],
            CmdOutput::ok(format!(
                "tcp: [4] 10.0.0.5:3260,1 {IQN} (non-flash)\n\
                 tcp: [5] 10.0.0.9:3260,1 iqn.2000-05.com.example:unrelated (non-flash)\n"
            )),
        );
        host.script(
            ISCSIADM,
            &["-m", "session", "-r"],
            CmdOutput::ok(format!(
                "Rescanning session [sid: 4, target: {IQN}, portal: 10.0.0.5,3260]\n"
            )),
        );
        // Another volume of the same target is already attached.
        scsi_disk(&host, "sdb", "naa.600a0980383041334a3f4a6b4a6c0001", "8:16");
        let dev = appear_after(
            &host,
            "--rescan",
            |h| scsi_disk(h, "sdc", WWID, "8:32"),
            || transport(5000).attach(&host, &ctx("group")).unwrap(),
        );
        assert_eq!(dev, PathBuf::from("/dev/sdc"));
        assert_eq!(
            commands(&host),
            ["iscsiadm -m session", "iscsiadm -m session -r 4 --rescan"]
        );

        // Idempotent repeat: the device is there, nothing else runs.
        host.clear_calls();
        let again = transport(5000).attach(&host, &ctx("group")).unwrap();
        assert_eq!(again, dev);
        assert_eq!(commands(&host), ["iscsiadm -m session"]);
    }

    #[test]
    fn session_exists_on_login_counts_as_success() {
        let host = FakeHost::new();
        no_sessions(&host);
        discovery(
            &host,
            "10.0.0.5:3260",
            "10.0.0.5:3260,1 iqn.2000-05.com.example:tgt1\n",
        );
        host.script(
            ISCSIADM,
            &["-m", "node", "-T", IQN, "-p", "10.0.0.5:3260", "--login"],
            CmdOutput::failed(
                15,
                "iscsiadm: default: 1 session requested, but 1 already present.\n\
                 iscsiadm: Could not log into all portals\n",
            ),
        );
        scsi_disk(&host, "sdb", WWID, "8:16");
        assert_eq!(
            transport(5000).attach(&host, &ctx("group")).unwrap(),
            PathBuf::from("/dev/sdb")
        );
    }

    #[test]
    fn multipath_map_is_returned_when_present() {
        let host = FakeHost::new();
        host.script(
            ISCSIADM,
            &["-m", "session"],
            CmdOutput::ok(format!(
                "tcp: [1] 10.0.0.5:3260,1 {IQN} (non-flash)\ntcp: [2] 10.0.1.5:3260,2 {IQN} (non-flash)\n"
            )),
        );
        scsi_disk(&host, "sdc", WWID, "8:32");
        scsi_disk(&host, "sdd", WWID, "8:48");
        mpath_map(
            &host,
            "dm-0",
            "mpatha",
            "3600a0980383041334a3f4a6b4a6c4b42",
            &["sdc", "sdd"],
        );
        let t = transport(5000);
        assert_eq!(
            t.attach(&host, &ctx("group")).unwrap(),
            PathBuf::from("/dev/mapper/mpatha")
        );
        assert_eq!(
            t.find(&host, &ctx("group")).unwrap(),
            Some(PathBuf::from("/dev/mapper/mpatha"))
        );
    }

    #[test]
    fn device_that_never_appears_is_a_deadline_error() {
        let host = FakeHost::new();
        no_sessions(&host);
        discovery(
            &host,
            "10.0.0.5:3260",
            "10.0.0.5:3260,1 iqn.2000-05.com.example:tgt1\n",
        );
        let started = std::time::Instant::now();
        let e = transport(20).attach(&host, &ctx("volume")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DeadlineExceeded);
        assert!(
            e.message.contains(&format!(
                "no device with serial {SERIAL} appeared within 20ms"
            )) && e.message.contains(IQN)
                && e.message.contains("LUN 3"),
            "{}",
            e.message
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn missing_iscsiadm_says_what_to_install() {
        let host = FakeHost::new();
        let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        assert!(e.message.contains("iscsiadm not found"), "{}", e.message);
        assert!(e.message.contains("install open-iscsi"), "{}", e.message);
        assert!(host.commands().is_empty());
    }

    #[test]
    fn login_failure_reports_iscsiadm_reason() {
        let host = FakeHost::new();
        no_sessions(&host);
        discovery(
            &host,
            "10.0.0.5:3260",
            "10.0.0.5:3260,1 iqn.2000-05.com.example:tgt1\n",
        );
        host.script(
            ISCSIADM,
            &["-m", "node", "-T", IQN, "-p", "10.0.0.5:3260", "--login"],
            CmdOutput::failed(
                24,
                format!(
                    "iscsiadm: Could not login to [iface: default, target: {IQN}, portal: 10.0.0.5,3260].\n\
                     iscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)\n\
                     iscsiadm: Could not log into all portals\n"
                ),
            ),
        );
        let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        assert!(
            e.message
                .contains(&format!("iSCSI login to {IQN} at 10.0.0.5:3260 failed"))
                && e.message
                    .contains("login failed due to authorization failure")
                && e.message.contains("exit status 24")
                && e.message.contains("CHAP"),
            "{}",
            e.message
        );
    }

    #[test]
    fn discovery_failure_reports_iscsiadm_reason() {
        let host = FakeHost::new();
        no_sessions(&host);
        host.script(
            ISCSIADM,
            &["-m", "discovery"],
            CmdOutput::failed(
                4,
                "iscsiadm: cannot make connection to 10.0.0.5: Connection refused\n\
                 iscsiadm: connection login retries (reopen_max) 5 exceeded\n\
                 iscsiadm: Could not perform SendTargets discovery: encountered connection failure\n",
            ),
        );
        let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(
            e.message
                .contains("iSCSI discovery at 10.0.0.5:3260 failed")
                && e.message
                    .contains("Could not perform SendTargets discovery"),
            "{}",
            e.message
        );

        // Discovery works but the array does not offer the target to this initiator.
        let host = FakeHost::new();
        no_sessions(&host);
        discovery(
            &host,
            "10.0.0.5:3260",
            "10.0.0.5:3260,1 iqn.2000-05.com.example:someone-else\n",
        );
        let e = transport(20).attach(&host, &ctx("group")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        assert!(e.message.contains("not offered"), "{}", e.message);
        assert!(!host.commands().iter().any(|c| c.contains("--login")));
    }

    #[test]
    fn peer_array_paths_are_best_effort() {
        let host = FakeHost::new();
        no_sessions(&host);
        discovery(
            &host,
            "10.0.0.5:3260",
            "10.0.0.5:3260,1 iqn.2000-05.com.example:tgt1\n",
        );
        host.script(
            ISCSIADM,
            &[
                "-m",
                "discovery",
                "-t",
                "sendtargets",
                "-p",
                "10.9.0.5:3260",
            ],
            CmdOutput::failed(
                4,
                "iscsiadm: cannot make connection to 10.9.0.5: No route to host\n",
            ),
        );
        let mut c = ctx("group");
        c.secondary_array_details = serde_json::json!({"PeerArrayDetails": [{
            "lun_id": 3, "target_names": ["iqn.2000-05.com.example:peer1"],
            "discovery_ips": ["10.9.0.5"]
        }]})
        .to_string();
        let dev = appear_after(
            &host,
            "--login",
            |h| scsi_disk(h, "sdb", WWID, "8:16"),
            || transport(5000).attach(&host, &c).unwrap(),
        );
        assert_eq!(dev, PathBuf::from("/dev/sdb"));
        assert!(commands(&host).contains(
            &"iscsiadm -m discovery -t sendtargets -p 10.9.0.5:3260 -o nonpersistent".to_owned()
        ));
    }

    fn attached(host: &FakeHost, sessions: &str) {
        host.install("multipath");
        host.script(ISCSIADM, &["-m", "session"], CmdOutput::ok(sessions));
        scsi_disk(host, "sdc", WWID, "8:32");
        iscsi_lun(host, 4, 6, 3, Some("sdc"));
        iscsi_lun(host, 4, 6, 0, None);
    }

    #[test]
    fn detach_of_group_target_with_another_lun_keeps_the_session() {
        let host = FakeHost::new();
        attached(
            &host,
            &format!("tcp: [4] 10.0.0.5:3260,1 {IQN} (non-flash)\n"),
        );
        scsi_disk(&host, "sdd", "naa.600a0980383041334a3f4a6b4a6c0002", "8:48");
        iscsi_lun(&host, 4, 6, 7, Some("sdd"));
        transport(20).detach(&host, &ctx("group")).unwrap();
        assert_eq!(
            host.calls(),
            [
                write("/sys/block/sdc/device/delete", "1"),
                run("iscsiadm -m session"),
            ]
        );
    }

    #[test]
    fn detach_of_last_lun_of_group_target_logs_out() {
        let host = FakeHost::new();
        attached(
            &host,
            &format!("tcp: [4] 10.0.0.5:3260,1 {IQN} (non-flash)\n"),
        );
        transport(20).detach(&host, &ctx("")).unwrap();
        let node = |rest: &str| format!("iscsiadm -m node -T {IQN} -p 10.0.0.5:3260 {rest}");
        assert_eq!(
            host.calls(),
            [
                write("/sys/block/sdc/device/delete", "1"),
                run("iscsiadm -m session"),
                run(&node("--logout")),
                run(&node("-o delete")),
            ]
        );
    }

    #[test]
    fn detach_of_volume_target_flushes_map_deletes_paths_and_logs_out() {
        let host = FakeHost::new();
        attached(
            &host,
            &format!(
                "tcp: [4] 10.0.0.5:3260,1 {IQN} (non-flash)\n\
                 tcp: [5] 10.0.1.5:3260,2 {IQN} (non-flash)\n\
                 tcp: [6] 10.0.0.5:3260,1 iqn.2000-05.com.example:unrelated (non-flash)\n"
            ),
        );
        scsi_disk(&host, "sdd", WWID, "8:48");
        iscsi_lun(&host, 5, 7, 3, Some("sdd"));
        mpath_map(
            &host,
            "dm-1",
            "mpathb",
            "3600a0980383041334a3f4a6b4a6c4b42",
            &["sdc", "sdd"],
        );
        // Volume scope: logged out even though the session shows another LUN.
        iscsi_lun(&host, 4, 6, 9, Some("sde"));
        transport(20).detach(&host, &ctx("volume")).unwrap();
        let node =
            |portal: &str, rest: &str| format!("iscsiadm -m node -T {IQN} -p {portal} {rest}");
        assert_eq!(
            host.calls(),
            [
                run("multipath -f mpathb"),
                write("/sys/block/sdc/device/delete", "1"),
                write("/sys/block/sdd/device/delete", "1"),
                run("iscsiadm -m session"),
                run(&node("10.0.0.5:3260", "--logout")),
                run(&node("10.0.0.5:3260", "-o delete")),
                run(&node("10.0.1.5:3260", "--logout")),
                run(&node("10.0.1.5:3260", "-o delete")),
            ]
        );

        // Repeat after the kernel removed the disks: nothing left but the logouts, which
        // iscsiadm answers with "no matching sessions".
        let host = FakeHost::new();
        host.script(
            ISCSIADM,
            &["-m", "session"],
            CmdOutput::failed(21, "iscsiadm: No active sessions.\n"),
        );
        transport(20).detach(&host, &ctx("volume")).unwrap();
        assert_eq!(commands(&host), ["iscsiadm -m session"]);
    }

    #[test]
    fn detach_refuses_a_mounted_device() {
        let host = FakeHost::new();
        attached(
            &host,
            &format!("tcp: [4] 10.0.0.5:3260,1 {IQN} (non-flash)\n"),
        );
        host.add_mount("/dev/sdc", "/mnt/data", "xfs", "8:32");
        let e = transport(20).detach(&host, &ctx("volume")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        assert!(
            e.message.contains("still mounted at /mnt/data"),
            "{}",
            e.message
        );
        assert!(host.calls().is_empty(), "{:?}", host.calls());
    }

    #[test]
    fn logout_failure_reports_reason() {
        let host = FakeHost::new();
        attached(
            &host,
            &format!("tcp: [4] 10.0.0.5:3260,1 {IQN} (non-flash)\n"),
        );
        host.script(
            ISCSIADM,
            &["-m", "node", "-T", IQN, "-p", "10.0.0.5:3260", "--logout"],
            CmdOutput::failed(
                10,
                "iscsiadm: Could not logout of [sid: 4, target: iqn.2000-05.com.example:tgt1, portal: 10.0.0.5,3260].\n\
                 iscsiadm: initiator reported error (10 - iSCSI logout failed)\n",
            ),
        );
        let e = transport(20).detach(&host, &ctx("volume")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.contains("iSCSI logout failed"), "{}", e.message);
        assert!(!host.commands().iter().any(|c| c.contains("-o delete")));
    }

    #[test]
    fn find_never_reuses_a_device_name() {
        let host = FakeHost::new();
        let t = transport(20);
        assert_eq!(t.find(&host, &ctx("group")).unwrap(), None);
        scsi_disk(&host, "sdf", WWID, "8:80");
        assert_eq!(
            t.find(&host, &ctx("group")).unwrap(),
            Some(PathBuf::from("/dev/sdf"))
        );
        let e = t.find(&host, &PublishContext::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(!host.calls().iter().any(|c| matches!(c, Call::Run { .. })));
    }
}
