//! Access protocol `iscsi` through open-iscsi's `iscsiadm`: SendTargets discovery, node
//! records (manual startup, CHAP), login, LUN rescan, logout; the disk itself is found by
//! its WWID (see `scsi`).
//!
//! Target scope (csp-api.md §6): `volume` targets belong to one volume and are logged out
//! on detach; `group` targets (the default) are shared, so they are logged out only when
//! no other LUN of the session is left.

use super::scsi::{self, BlockDevice};
use super::Transport;
use crate::target::{IscsiArray, IscsiTarget, TargetScope};
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
const ERR_IDBM: i32 = 6;
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
    multipath_replacement_timeout: Duration,
}

impl IscsiTransport {
    pub fn new(device_wait: Duration) -> IscsiTransport {
        IscsiTransport {
            device_wait,
            multipath_replacement_timeout: super::MULTIPATH_REPLACEMENT_TIMEOUT,
        }
    }

    /// How long a session that lost its connection holds I/O before failing it, when the
    /// volume has more than one path (see [`super::MULTIPATH_REPLACEMENT_TIMEOUT`]).
    pub fn with_multipath_replacement_timeout(mut self, timeout: Duration) -> IscsiTransport {
        self.multipath_replacement_timeout = timeout;
        self
    }
}

/// The targets of one array: the primary, or a peer (replication, peer persistence) whose
/// paths are welcome but not required.
struct Targets<'a> {
    array: &'a IscsiArray,
    required: bool,
}

fn target_sets(target: &IscsiTarget) -> Vec<Targets<'_>> {
    std::iter::once(Targets {
        array: &target.primary,
        required: true,
    })
    .chain(target.peers.iter().map(|array| Targets {
        array,
        required: false,
    }))
    .collect()
}

fn all_iqns(sets: &[Targets]) -> BTreeSet<String> {
    sets.iter()
        .flat_map(|s| s.array.iqns.iter().cloned())
        .collect()
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

/// Runs iscsiadm once more when it lost the race to make its own lock directory: on a
/// fresh /run, iscsiadm checks for the directory and then makes it, so two at once (two
/// volumes attached in parallel after boot) leave one failing with "Could not open
/// /run/lock/iscsi: File exists" (exit 6). The directory exists by the second try.
fn run_iscsiadm(host: &dyn Host, cmd: &Cmd) -> Result<CmdOutput> {
    let out = host.run(cmd)?;
    let lost_lock_race = out.status == ERR_IDBM
        && out.stderr.contains("Could not open")
        && out.stderr.contains("File exists");
    if lost_lock_race {
        host.run(cmd)
    } else {
        Ok(out)
    }
}

fn run_checked(host: &dyn Host, what: &str, cmd: &Cmd) -> Result<CmdOutput> {
    let out = run_iscsiadm(host, cmd)?;
    if out.success() {
        Ok(out)
    } else {
        Err(iscsiadm_error(what, cmd, &out))
    }
}

fn sessions(host: &dyn Host) -> Result<Vec<Session>> {
    let cmd = iscsiadm(["-m", "session"]);
    let out = run_iscsiadm(host, &cmd)?;
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
    fn resolve(&self, host: &dyn Host, target: &IscsiTarget) -> Result<BlockDevice> {
        scsi::resolve_scsi(host, target.serial.as_str())
    }

    /// Logs in to every target of `set` that has no session yet; returns the sessions that
    /// already existed, which need a rescan to show a newly mapped LUN.
    fn log_in(&self, host: &dyn Host, set: &Targets, existing: &[Session]) -> Result<Vec<u32>> {
        let (present, missing): (Vec<&String>, Vec<&String>) = set
            .array
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
        // More than one path to this array's LUN: dm-multipath must hear of a dead path
        // soon, not after iscsid's default two minutes of queued I/O.
        let paths = present.len() + records.iter().filter(|(_, i)| missing.contains(&i)).count();
        let multipath = paths > 1;
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
                    set.array.portals.join(", ")
                )));
            }
            // One reachable portal is enough; multipath takes whatever paths come up.
            let mut failure = None;
            let mut logged_in = false;
            for portal in portals {
                match self.log_in_portal(host, set, iqn, portal, multipath) {
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
        if set.array.portals.is_empty() {
            return Err(Error::invalid(
                "discoveryIps",
                "the publish context has no iSCSI discovery address",
            ));
        }
        let mut records: Vec<(String, String)> = Vec::new();
        let mut failures = Vec::new();
        for ip in &set.array.portals {
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
            let out = run_iscsiadm(host, &cmd)?;
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
        if records.is_empty() && failures.len() == set.array.portals.len() {
            if let Some(first) = failures.into_iter().next() {
                return Err(first);
            }
        }
        Ok(records)
    }

    fn log_in_portal(
        &self,
        host: &dyn Host,
        set: &Targets,
        iqn: &str,
        portal: &str,
        multipath: bool,
    ) -> Result<()> {
        let what = format!("iSCSI login to {iqn} at {portal}");
        run_checked(host, &what, &node(iqn, portal).args(["-o", "new"]))?;
        let update = |name: &str| node(iqn, portal).args(["-o", "update", "-n", name, "-v"]);
        // Manual: the daemon must not log in at boot before volbridge decides to.
        run_checked(host, &what, &update("node.startup").arg("manual"))?;
        if multipath {
            let secs = self
                .multipath_replacement_timeout
                .as_secs()
                .max(1)
                .to_string();
            run_checked(
                host,
                &what,
                &update("node.session.timeo.replacement_timeout").arg(secs.as_str()),
            )?;
        }
        if let Some(chap) = &set.array.chap {
            run_checked(
                host,
                &what,
                &update("node.session.auth.authmethod").arg("CHAP"),
            )?;
            run_checked(
                host,
                &what,
                &update("node.session.auth.username").arg(chap.user.as_str()),
            )?;
            run_checked(
                host,
                &what,
                &update("node.session.auth.password").secret_arg(chap.password.as_str()),
            )?;
        }
        let cmd = node(iqn, portal).arg("--login");
        let out = run_iscsiadm(host, &cmd)?;
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
        let out = run_iscsiadm(host, &cmd)?;
        // "No matching sessions found": someone else logged out already.
        if !out.success() && out.status != ERR_NO_OBJS_FOUND {
            return Err(iscsiadm_error(&what, &cmd, &out));
        }
        let cmd = node(&session.iqn, &session.portal).args(["-o", "delete"]);
        let out = run_iscsiadm(host, &cmd)?;
        if !out.success() && out.status != ERR_NO_OBJS_FOUND {
            return Err(iscsiadm_error(&what, &cmd, &out));
        }
        Ok(())
    }
}

impl Transport for IscsiTransport {
    type Target = IscsiTarget;

    fn attach(&self, host: &dyn Host, target: &IscsiTarget) -> Result<PathBuf> {
        let sets = target_sets(target);
        scsi::require(host, ISCSIADM, INSTALL)?;
        let _lock = scsi::lock_targets(all_iqns(&sets));

        let existing = sessions(host)?;
        let logged_in = |set: &Targets| {
            set.array
                .iqns
                .iter()
                .all(|iqn| existing.iter().any(|s| &s.iqn == iqn))
        };
        if sets.iter().filter(|s| s.required).all(logged_in) {
            if let Some(device) = self.resolve(host, target)?.device() {
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

        let serial = target.serial.as_str();
        let mut undecided = None;
        let found = scsi::wait_for(self.device_wait, || {
            scsi::settled_device(host, serial, &mut undecided)
        })?;
        found.ok_or_else(|| {
            scsi::device_timeout(
                serial,
                self.device_wait,
                &format!(
                    "logging in to {} (LUN {}); check that the LUN is mapped to this host",
                    target.primary.iqns.join(", "),
                    target.lun
                ),
            )
        })
    }

    fn find(&self, host: &dyn Host, target: &IscsiTarget) -> Result<Option<PathBuf>> {
        Ok(self.resolve(host, target)?.device())
    }

    fn detach(&self, host: &dyn Host, target: &IscsiTarget) -> Result<()> {
        let iqns = all_iqns(&target_sets(target));
        let _lock = scsi::lock_targets(&iqns);
        let device = self.resolve(host, target)?;
        if !device.is_empty() {
            scsi::remove_scsi(host, &device)?;
        }
        if host.find_program(ISCSIADM).is_none() {
            // Without iscsiadm there are no open-iscsi sessions to end.
            return Ok(());
        }
        let volume_scope = target.scope == TargetScope::Volume;
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
mod tests;
