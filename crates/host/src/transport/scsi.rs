//! Finding a volume's block device by its identity, and taking SCSI disks away again.
//!
//! Used by the iSCSI and FC transports (device resolution by WWID) and by NVMe (in-use
//! checks, waiting, per-target locking). Nothing here remembers a device name: `sdX` and
//! `nvmeXnY` are handed out again after a rescan or a reboot, so every call reads sysfs
//! afresh and matches on the identity the array gave (`serialNumber`, csp-api.md §6).

use super::multipath::{self, DmMap, MapOutlook};
use super::sysfs::{serial_key, DESIGNATORS, SYS_BLOCK};
use crate::{Cmd, CmdOutput, Host};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use volbridge_base::error::{Error, ErrorKind, Result};

/// Whether a SCSI WWID (`naa.600a0980…` as in `/sys/block/sdX/device/wwid`) is the
/// volume's serial. The serial may come bare (`600a0980…`), with the designator digit
/// (`3600a0980…`) or with the kernel's prefix (`naa.600a0980…`).
pub(super) fn wwid_matches(wwid: &str, serial: &str) -> bool {
    let key = serial_key(serial);
    if key.is_empty() {
        return false;
    }
    let lower = wwid.trim().to_ascii_lowercase();
    let (digit, body) = DESIGNATORS
        .iter()
        .find_map(|(prefix, digit)| lower.strip_prefix(prefix).map(|b| (Some(*digit), b)))
        .unwrap_or((None, lower.as_str()));
    key == body || digit.is_some_and(|d| key.strip_prefix(d) == Some(body))
}

/// The SCSI disks (`sdX`, one per path) whose WWID is the serial's.
pub(super) fn scsi_paths(host: &dyn Host, serial: &str) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    for name in host.list_dir(Path::new(SYS_BLOCK))? {
        if !name.starts_with("sd") {
            continue;
        }
        let wwid = Path::new(SYS_BLOCK).join(&name).join("device/wwid");
        if let Some(wwid) = host.read_file(&wwid)? {
            if wwid_matches(&wwid, serial) {
                paths.push(name);
            }
        }
    }
    Ok(paths)
}

/// A volume as this host sees it right now: its path devices and the multipath map over
/// them, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct BlockDevice {
    /// Block device names under `/sys/block` (`sdb`, `nvme0n1`).
    pub paths: Vec<String>,
    pub map: Option<DmMap>,
}

impl BlockDevice {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.map.is_none()
    }

    /// The node to format and mount: the map when there is one, since a path claimed by
    /// dm-multipath cannot be opened exclusively.
    pub fn device(&self) -> Option<PathBuf> {
        match &self.map {
            Some(map) => Some(map.device()),
            None => self.paths.first().map(|p| Path::new("/dev").join(p)),
        }
    }
}

/// The device to use for a serial once it is settled: `None` while no path exists, or while
/// multipathd has yet to make the map it will make of the paths (see
/// [`multipath::map_outlook`]) or udev its device node. `undecided` is when multipathd was first seen not to have
/// handled the path yet: past [`MULTIPATHD_GRACE`] the bare path is taken (multipathd
/// never lists a blacklisted path).
pub(super) fn settled_device(
    host: &dyn Host,
    serial: &str,
    undecided: &mut Option<Instant>,
) -> Result<Option<PathBuf>> {
    let dev = resolve_scsi(host, serial)?;
    if let Some(map) = &dev.map {
        // sysfs shows the map before udev has made its /dev/mapper node: seen after a
        // reboot, where the restore's mount found no device to open.
        if host.stat(&map.device())?.is_none() {
            return Ok(None);
        }
    }
    if dev.map.is_none() {
        if let Some(first) = dev.paths.first() {
            match multipath::map_outlook(host, first)? {
                MapOutlook::Coming => return Ok(None),
                MapOutlook::Undecided => {
                    let since = *undecided.get_or_insert_with(Instant::now);
                    if since.elapsed() < MULTIPATHD_GRACE {
                        return Ok(None);
                    }
                }
                MapOutlook::None => {}
            }
        }
    }
    Ok(dev.device())
}

/// How long a running multipathd may take to come to a new path before the bare path is
/// used. Under load (a machine booting) it takes seconds.
pub(super) const MULTIPATHD_GRACE: Duration = Duration::from_secs(5);

/// The SCSI disks and multipath map of a serial.
pub(super) fn resolve_scsi(host: &dyn Host, serial: &str) -> Result<BlockDevice> {
    let paths = scsi_paths(host, serial)?;
    let map = multipath::find_map(host, &paths, &|uuid| {
        multipath::scsi_uuid_matches(uuid, serial)
    })?;
    Ok(BlockDevice { paths, map })
}

/// `major:minor` of a block device and of its partitions, to match against mountinfo.
fn device_numbers(host: &dyn Host, name: &str) -> Result<Vec<String>> {
    let dir = Path::new(SYS_BLOCK).join(name);
    let mut numbers = Vec::new();
    if let Some(dev) = host.read_file(&dir.join("dev"))? {
        numbers.push(dev.trim().to_owned());
    }
    for part in host.list_dir(&dir)? {
        if part.len() > name.len() && part.starts_with(name) {
            if let Some(dev) = host.read_file(&dir.join(&part).join("dev"))? {
                numbers.push(dev.trim().to_owned());
            }
        }
    }
    Ok(numbers)
}

/// Refuses to take away a device that is mounted or held by something other than its own
/// multipath map (LVM, a partition map, another dm target): removing it would lose data.
pub(super) fn ensure_unused(host: &dyn Host, dev: &BlockDevice) -> Result<()> {
    let mounts = host.mounts()?;
    let mut names: Vec<(&str, PathBuf)> = dev
        .paths
        .iter()
        .map(|p| (p.as_str(), Path::new("/dev").join(p)))
        .collect();
    if let Some(map) = &dev.map {
        names.push((map.dm.as_str(), map.device()));
    }
    let own_map = dev.map.as_ref().map(|m| m.dm.as_str());
    for (name, shown) in names {
        for number in device_numbers(host, name)? {
            if let Some(m) = mounts.iter().find(|m| m.dev == number) {
                return Err(Error::precondition(format!(
                    "{} is still mounted at {}",
                    shown.display(),
                    m.target.display()
                )));
            }
        }
        let holders = Path::new(SYS_BLOCK).join(name).join("holders");
        for holder in host.list_dir(&holders)? {
            if Some(holder.as_str()) != own_map {
                let label = multipath::dm_name(host, &holder)?.unwrap_or(holder);
                return Err(Error::precondition(format!(
                    "{} is in use by {label}; release it first",
                    shown.display()
                )));
            }
        }
    }
    Ok(())
}

/// Takes a volume's SCSI disks away: checks nothing uses them, flushes the multipath map,
/// then deletes every path, so that no stale `sdX` stays behind to be reused.
pub(super) fn remove_scsi(host: &dyn Host, dev: &BlockDevice) -> Result<()> {
    ensure_unused(host, dev)?;
    if let Some(map) = &dev.map {
        multipath::flush(host, map)?;
    }
    for path in &dev.paths {
        host.write_file(&Path::new(SYS_BLOCK).join(path).join("device/delete"), "1")?;
    }
    Ok(())
}

/// Polls `probe` until it finds something or `wait` has passed. The delay starts at 1ms and
/// doubles up to 200ms: devices usually appear within milliseconds of a login, and a tiny
/// `wait` still fails fast.
pub(super) fn wait_for<T>(
    wait: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let deadline = Instant::now() + wait;
    let mut delay = Duration::from_millis(1);
    loop {
        if let Some(found) = probe()? {
            return Ok(Some(found));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(delay.min(deadline - now));
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// The error for a device that did not show up in time.
pub(super) fn device_timeout(serial: &str, wait: Duration, after: &str) -> Error {
    Error::new(
        ErrorKind::DeadlineExceeded,
        format!(
            "no device with serial {serial} appeared within {} after {after}",
            humantime::format_duration(wait)
        ),
    )
}

/// A program the transport needs; the message says what to install.
pub(super) fn require(host: &dyn Host, program: &str, install: &str) -> Result<()> {
    match host.find_program(program) {
        Some(_) => Ok(()),
        None => Err(Error::precondition(format!(
            "{program} not found on this node: install {install}"
        ))),
    }
}

/// An error for a failed tool run, with the tool's own reason (secrets removed).
pub(super) fn tool_error(
    kind: ErrorKind,
    what: &str,
    cmd: &Cmd,
    out: &CmdOutput,
    reason: &str,
) -> Error {
    Error::new(
        kind,
        format!(
            "{what} failed: {} ({} exit status {})",
            cmd.redact(reason),
            cmd.program,
            out.status
        ),
    )
}

/// Targets (IQNs, NQNs) some operation of this process is logging in to or out of.
static BUSY_TARGETS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static TARGET_FREED: Condvar = Condvar::new();

/// Held while a transport logs in, waits for its device, or decides to log out of shared
/// targets: otherwise a detach that sees no other LUN could log out of a group target
/// another volume has just logged in to and is still waiting on.
pub(super) struct TargetLock {
    keys: Vec<String>,
}

pub(super) fn lock_targets<I, S>(targets: I) -> TargetLock
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let keys: BTreeSet<String> = targets
        .into_iter()
        .map(|t| t.as_ref().to_ascii_lowercase())
        .collect();
    let mut busy = BUSY_TARGETS.lock().unwrap_or_else(|p| p.into_inner());
    // All keys at once: taking them one by one could deadlock two volumes with
    // overlapping target lists.
    while keys.iter().any(|k| busy.contains(k)) {
        busy = TARGET_FREED.wait(busy).unwrap_or_else(|p| p.into_inner());
    }
    busy.extend(keys.iter().cloned());
    TargetLock {
        keys: keys.into_iter().collect(),
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        let mut busy = BUSY_TARGETS.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            busy.remove(k);
        }
        TARGET_FREED.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::*;
    use super::*;
    use crate::{Call, FakeHost};

    const WWID: &str = "naa.600a0980383041334a3f4a6b4a6c4b42";

    fn with_multipathd(host: &FakeHost, claims: bool) {
        host.install("multipathd").install("multipath");
        host.script(
            "multipathd",
            &["show", "daemon"],
            CmdOutput::ok("pid 42 idle\n"),
        );
        let check = if claims {
            CmdOutput::ok("/dev/sdc is a valid multipath device path\n")
        } else {
            CmdOutput {
                status: 1,
                stdout: "/dev/sdc is not a valid multipath device path\n".into(),
                stderr: String::new(),
            }
        };
        host.script("multipath", &["-c"], check);
    }

    /// What `multipathd show paths raw format "%d %m"` answers, one listing per call.
    fn multipathd_paths(host: &FakeHost, listings: &[&str]) {
        for listing in listings {
            host.script("multipathd", &["show", "paths"], CmdOutput::ok(*listing));
        }
    }

    fn settled(host: &FakeHost) -> Option<PathBuf> {
        settled_device(host, WWID, &mut None).unwrap()
    }

    /// Seen against LIO with multipathd running: the bare path shows seconds before the map
    /// multipathd makes of it. Until the map exists, the path is not the device to use.
    #[test]
    fn a_path_multipathd_will_claim_waits_for_its_map() {
        let host = FakeHost::new();
        scsi_disk(&host, "sdc", WWID, "8:32");
        with_multipathd(&host, true);
        assert_eq!(settled(&host), None);
        let found = appear_after(
            &host,
            "multipath -c",
            |h| {
                mpath_map(
                    h,
                    "dm-3",
                    "mpatha",
                    "3600a0980383041334a3f4a6b4a6c4b42",
                    &["sdc"],
                )
            },
            || {
                let mut undecided = None;
                wait_for(Duration::from_secs(5), || {
                    settled_device(&host, WWID, &mut undecided)
                })
                .unwrap()
            },
        );
        assert_eq!(found, Some(PathBuf::from("/dev/mapper/mpatha")));
    }

    /// Seen after a reboot of the VM lane: for a WWID multipathd has never seen,
    /// `multipath -c` says no until multipathd has handled the new path, then yes; a
    /// restore that took the bare path at once mounted it, and multipathd could make no
    /// map of it. Until multipathd lists the path, it has not decided.
    #[test]
    fn a_path_multipathd_has_not_handled_yet_waits() {
        let host = FakeHost::new();
        scsi_disk(&host, "sdc", WWID, "8:32");
        with_multipathd(&host, false);
        // multipathd answers "ok" when it lists nothing; then the path is listed in a map
        // that sysfs does not show yet; a blacklisted path is never listed.
        multipathd_paths(&host, &["ok\n", "sdb mpatha\nsdc mpathb\n", "ok\n"]);
        assert_eq!(settled(&host), None);
        assert_eq!(settled(&host), None);
        // Past the grace, the bare path.
        let mut undecided = Some(Instant::now() - MULTIPATHD_GRACE);
        assert_eq!(
            settled_device(&host, WWID, &mut undecided).unwrap(),
            Some(PathBuf::from("/dev/sdc"))
        );
    }

    /// Seen after a reboot: the map is in sysfs before udev has made `/dev/mapper/NAME`;
    /// the mount that followed found no device to open.
    #[test]
    fn a_map_is_settled_once_its_node_exists() {
        let host = FakeHost::new();
        scsi_disk(&host, "sdc", WWID, "8:32");
        with_multipathd(&host, true);
        mpath_map_sysfs(
            &host,
            "dm-3",
            "mpatha",
            "3600a0980383041334a3f4a6b4a6c4b42",
            &["sdc"],
        );
        assert_eq!(settled(&host), None);
        host.add_block_device("/dev/mapper/mpatha", 253, 3, 64 << 20);
        assert_eq!(settled(&host), Some(PathBuf::from("/dev/mapper/mpatha")));
    }

    #[test]
    fn a_path_multipath_leaves_alone_is_the_device() {
        let host = FakeHost::new();
        scsi_disk(&host, "sdc", WWID, "8:32");
        with_multipathd(&host, false);
        // multipathd took it up and put it in no map.
        multipathd_paths(&host, &["sdc [orphan]\n"]);
        assert_eq!(settled(&host), Some(PathBuf::from("/dev/sdc")));
        // Without multipath-tools there is no map to wait for, and nothing is run.
        let bare = FakeHost::new();
        scsi_disk(&bare, "sdc", WWID, "8:32");
        assert_eq!(settled(&bare), Some(PathBuf::from("/dev/sdc")));
        assert!(bare.commands().is_empty());
    }

    #[test]
    fn wwid_matches_every_serial_spelling() {
        for serial in [
            "600a0980383041334a3f4a6b4a6c4b42",
            "600A0980383041334A3F4A6B4A6C4B42",
            "3600a0980383041334a3f4a6b4a6c4b42",
            "naa.600a0980383041334a3f4a6b4a6c4b42",
            " NAA.600A0980383041334A3F4A6B4A6C4B42\n",
        ] {
            assert!(wwid_matches(WWID, serial), "{serial}");
        }
        for serial in [
            "",
            "600a0980383041334a3f4a6b4a6c4b4",
            "2600a0980383041334a3f4a6b4a6c4b42",
            "00a0980383041334a3f4a6b4a6c4b42",
        ] {
            assert!(!wwid_matches(WWID, serial), "{serial}");
        }
        assert!(wwid_matches("eui.0025385b71b07e2f", "20025385b71b07e2f"));
        assert!(!wwid_matches("eui.0025385b71b07e2f", "30025385b71b07e2f"));
        assert!(wwid_matches(
            "t10.ATA     QEMU HARDDISK                           QM00003",
            "t10.ata     qemu harddisk                           qm00003"
        ));
    }

    #[test]
    fn device_found_by_wwid_among_several_disks() {
        let host = FakeHost::new();
        scsi_disk(&host, "sda", "t10.ATA     QEMU HARDDISK   QM00001", "8:0");
        scsi_disk(&host, "sdb", "naa.6001405aaaaaaaaaaaaaaaaaaaaaaaaa", "8:16");
        scsi_disk(&host, "sdc", WWID, "8:32");
        scsi_disk(&host, "sdd", WWID, "8:48");
        host.add_file("/sys/block/loop0/dev", "7:0\n");
        host.add_file("/sys/block/nvme0n1/wwid", &format!("{WWID}\n"));
        let dev = resolve_scsi(&host, "3600A0980383041334A3F4A6B4A6C4B42").unwrap();
        assert_eq!(dev.paths, ["sdc", "sdd"]);
        assert_eq!(dev.map, None);
        assert_eq!(dev.device(), Some(PathBuf::from("/dev/sdc")));
        assert!(resolve_scsi(&host, "600a0980ffff").unwrap().is_empty());
    }

    #[test]
    fn multipath_map_is_preferred_and_found_without_paths() {
        let host = FakeHost::new();
        scsi_disk(&host, "sdc", WWID, "8:32");
        scsi_disk(&host, "sdd", WWID, "8:48");
        mpath_map(
            &host,
            "dm-2",
            "mpatha",
            &format!("3{}", &WWID[4..]),
            &["sdc", "sdd"],
        );
        let dev = resolve_scsi(&host, &WWID[4..]).unwrap();
        assert_eq!(dev.device(), Some(PathBuf::from("/dev/mapper/mpatha")));
        assert_eq!(dev.map.as_ref().unwrap().dm, "dm-2");

        // Paths already gone (failed or deleted): the map must still be found to be flushed.
        let host = FakeHost::new();
        mpath_map(&host, "dm-0", "mpathb", &format!("3{}", &WWID[4..]), &[]);
        host.add_file("/sys/block/dm-1/dm/uuid", "LVM-abc\n");
        let dev = resolve_scsi(&host, &WWID[4..]).unwrap();
        assert!(dev.paths.is_empty());
        assert_eq!(dev.device(), Some(PathBuf::from("/dev/mapper/mpathb")));
    }

    #[test]
    fn removal_flushes_the_map_then_deletes_each_path() {
        let host = FakeHost::new();
        host.install("multipath");
        scsi_disk(&host, "sdc", WWID, "8:32");
        scsi_disk(&host, "sdd", WWID, "8:48");
        mpath_map(
            &host,
            "dm-2",
            "mpatha",
            &format!("3{}", &WWID[4..]),
            &["sdc", "sdd"],
        );
        let dev = resolve_scsi(&host, &WWID[4..]).unwrap();
        remove_scsi(&host, &dev).unwrap();
        assert_eq!(
            host.calls(),
            [
                Call::Run {
                    program: "multipath".into(),
                    args: vec!["-f".into(), "mpatha".into()]
                },
                write("/sys/block/sdc/device/delete", "1"),
                write("/sys/block/sdd/device/delete", "1"),
            ]
        );
    }

    #[test]
    fn removal_refuses_mounted_or_held_devices() {
        let host = FakeHost::new();
        host.install("multipath");
        scsi_disk(&host, "sdc", WWID, "8:32");
        host.add_file("/sys/block/sdc/sdc1/dev", "8:33\n");
        host.add_mount("/dev/sdc1", "/var/lib/kubelet/x", "ext4", "8:33");
        let dev = resolve_scsi(&host, WWID).unwrap();
        let e = remove_scsi(&host, &dev).unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        assert!(e
            .message
            .contains("/dev/sdc is still mounted at /var/lib/kubelet/x"));

        let host = FakeHost::new();
        scsi_disk(&host, "sdc", WWID, "8:32");
        host.add_dir("/sys/block/sdc/holders/dm-7");
        host.add_file("/sys/block/dm-7/dm/name", "vg0-data\n");
        let dev = resolve_scsi(&host, WWID).unwrap();
        let e = remove_scsi(&host, &dev).unwrap_err();
        assert!(e.message.contains("in use by vg0-data"), "{}", e.message);
        assert!(host.calls().is_empty(), "{:?}", host.calls());
    }

    #[test]
    fn a_busy_map_is_not_flushed_without_multipath() {
        let host = FakeHost::new();
        scsi_disk(&host, "sdc", WWID, "8:32");
        mpath_map(
            &host,
            "dm-2",
            "mpatha",
            &format!("3{}", &WWID[4..]),
            &["sdc"],
        );
        let dev = resolve_scsi(&host, WWID).unwrap();
        let e = remove_scsi(&host, &dev).unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        assert!(
            e.message.contains("install multipath-tools"),
            "{}",
            e.message
        );

        host.script(
            "multipath",
            &["-f"],
            CmdOutput::failed(1, "Jun 01 10:00:00 | mpatha: map in use\n"),
        );
        let e = remove_scsi(&host, &dev).unwrap_err();
        assert!(e.message.contains("mpatha: map in use"), "{}", e.message);
        assert!(!host
            .calls()
            .iter()
            .any(|c| matches!(c, Call::WriteFile { .. })));
    }

    #[test]
    fn wait_gives_up_at_the_deadline() {
        let started = Instant::now();
        let mut probes = 0;
        let found: Option<()> = wait_for(Duration::from_millis(15), || {
            probes += 1;
            Ok(None)
        })
        .unwrap();
        assert!(found.is_none());
        assert!(probes >= 2);
        assert!(started.elapsed() < Duration::from_secs(1));
        let mut n = 0;
        assert_eq!(
            wait_for(Duration::from_secs(5), || {
                n += 1;
                Ok((n == 3).then_some(n))
            })
            .unwrap(),
            Some(3)
        );
    }

    #[test]
    fn target_locks_exclude_overlapping_sets_only() {
        let a = lock_targets(["iqn.lock-test:a", "iqn.lock-test:b"]);
        let other = lock_targets(["iqn.lock-test:c"]);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _b = lock_targets(["IQN.lock-test:B"]);
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(20));
            assert!(!done.load(std::sync::atomic::Ordering::SeqCst));
            drop(a);
        });
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
        drop(other);
    }
}
