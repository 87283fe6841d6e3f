//! dm-multipath maps over a volume's paths, as sysfs shows them: `/sys/block/dm-N/dm/uuid`
//! is `mpath-<wwid>` (`mpath-3600a…` for SCSI, `mpath-eui.…` for NVMe), `dm/name` the map
//! name (`mpatha`, or the WWID without user_friendly_names), `slaves/` its paths and each
//! path's `holders/` the map.

use super::sysfs::{serial_key, SYS_BLOCK};
use crate::{Cmd, Host};
use std::path::{Path, PathBuf};
use volbridge_base::error::{Error, Result};

const UUID_PREFIX: &str = "mpath-";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DmMap {
    /// Kernel name (`dm-3`).
    pub dm: String,
    /// Map name (`mpatha`), what `multipath -f` and `/dev/mapper` use.
    pub name: String,
}

impl DmMap {
    pub fn device(&self) -> PathBuf {
        Path::new("/dev/mapper").join(&self.name)
    }
}

/// The dm name of a device-mapper device (`dm-3` → `mpatha`), for messages too.
pub(super) fn dm_name(host: &dyn Host, dm: &str) -> Result<Option<String>> {
    let name = host.read_file(&Path::new(SYS_BLOCK).join(dm).join("dm/name"))?;
    Ok(name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()))
}

/// The multipath WWID of `dm` when it is a multipath map (not LVM, crypt, a partition).
fn mpath_wwid(host: &dyn Host, dm: &str) -> Result<Option<String>> {
    let uuid = host.read_file(&Path::new(SYS_BLOCK).join(dm).join("dm/uuid"))?;
    Ok(uuid.and_then(|u| u.trim().strip_prefix(UUID_PREFIX).map(str::to_owned)))
}

fn map_of(host: &dyn Host, dm: &str) -> Result<Option<DmMap>> {
    if mpath_wwid(host, dm)?.is_none() {
        return Ok(None);
    }
    Ok(Some(DmMap {
        dm: dm.to_owned(),
        name: dm_name(host, dm)?.unwrap_or_else(|| dm.to_owned()),
    }))
}

/// The multipath map holding any of `paths`, else one whose WWID `matches` (a map whose
/// paths have all failed or been removed still has to be found, to be flushed).
pub(super) fn find_map(
    host: &dyn Host,
    paths: &[String],
    matches: &dyn Fn(&str) -> bool,
) -> Result<Option<DmMap>> {
    for path in paths {
        let holders = Path::new(SYS_BLOCK).join(path).join("holders");
        for holder in host.list_dir(&holders)? {
            if let Some(map) = map_of(host, &holder)? {
                return Ok(Some(map));
            }
        }
    }
    for dm in host.list_dir(Path::new(SYS_BLOCK))? {
        if !dm.starts_with("dm-") {
            continue;
        }
        if let Some(wwid) = mpath_wwid(host, &dm)? {
            if matches(&wwid) {
                return map_of(host, &dm);
            }
        }
    }
    Ok(None)
}

/// Whether a SCSI multipath WWID (`3600a0980…`: page-83 designator digit, then the id) is
/// the volume's serial.
pub(super) fn scsi_uuid_matches(wwid: &str, serial: &str) -> bool {
    let key = serial_key(serial);
    let wwid = wwid.trim().to_ascii_lowercase();
    if key.is_empty() {
        return false;
    }
    key == wwid
        || wwid
            .strip_prefix(['1', '2', '3', '8'])
            .is_some_and(|rest| rest == key)
}

/// `multipath -f NAME`: removes the map so its paths can be deleted. Fails while the map
/// is open (mounted, held by LVM), which is the check we want.
pub(super) fn flush(host: &dyn Host, map: &DmMap) -> Result<()> {
    if host.find_program("multipath").is_none() {
        return Err(Error::precondition(format!(
            "{} is a multipath map but multipath is not installed: install multipath-tools \
             (device-mapper-multipath) to flush it",
            map.device().display()
        )));
    }
    let cmd = Cmd::new("multipath").args(["-f", map.name.as_str()]);
    let out = host.run(&cmd)?;
    if out.success() {
        return Ok(());
    }
    Err(Error::precondition(format!(
        "cannot flush multipath map {}: {} (multipath exit status {})",
        map.name,
        out.reason(),
        out.status
    )))
}

/// What multipathd will do with a path (`sdX`) that has no map yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MapOutlook {
    /// No map is coming: multipath-tools are not installed, multipathd is not running, or
    /// multipathd took the path up and left it out of any map.
    None,
    /// multipathd is about to make a map of it.
    Coming,
    /// multipathd has not handled the path yet (or never will: it is blacklisted).
    Undecided,
}

/// Whether multipathd is about to take `path` (`sdX`) into a map that does not exist yet.
/// multipathd makes the map a few seconds after the path appears; a caller that took the
/// bare path meanwhile would format and mount one path that multipathd can then not take
/// over. Without multipath-tools, or with multipathd not running, no map is coming.
pub(super) fn map_outlook(host: &dyn Host, path: &str) -> Result<MapOutlook> {
    if host.find_program("multipathd").is_none() || host.find_program("multipath").is_none() {
        return Ok(MapOutlook::None);
    }
    let daemon = host.run(&Cmd::new("multipathd").args(["show", "daemon"]))?;
    if daemon.status != 0 {
        return Ok(MapOutlook::None);
    }
    // `multipath -c` exits 0 when the path is (or should be) part of a multipath device.
    let dev = format!("/dev/{path}");
    let check = host.run(&Cmd::new("multipath").args(["-c", dev.as_str()]))?;
    if check.status == 0 {
        return Ok(MapOutlook::Coming);
    }
    // Not yet, maybe: for a WWID it has never seen (not in /etc/multipath/wwids, no map),
    // `multipath -c` says no until multipathd has handled the path's uevent, and only then
    // yes (find_multipaths no / greedy). Seen after a reboot, where a restore mounted the
    // bare path a moment before multipathd came to it. Once multipathd lists the path, it
    // has decided: a map holds it, or none will.
    let paths =
        host.run(&Cmd::new("multipathd").args(["show", "paths", "raw", "format", "%d %m"]))?;
    let map = paths
        .stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(p, _)| *p == path)
        .map(|(_, m)| m.trim());
    Ok(match map {
        Some("[orphan]") => MapOutlook::None,
        // Listed in a map sysfs does not show yet.
        Some(_) => MapOutlook::Coming,
        None => MapOutlook::Undecided,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scsi_multipath_wwids() {
        let serial = "600a0980383041334a3f4a6b4a6c4b42";
        assert!(scsi_uuid_matches(
            "3600a0980383041334a3f4a6b4a6c4b42",
            serial
        ));
        assert!(scsi_uuid_matches(
            "3600A0980383041334A3F4A6B4A6C4B42",
            "naa.600a0980383041334a3f4a6b4a6c4b42"
        ));
        assert!(scsi_uuid_matches(
            "3600a0980383041334a3f4a6b4a6c4b42",
            "3600a0980383041334a3f4a6b4a6c4b42"
        ));
        assert!(!scsi_uuid_matches(
            "3600a0980383041334a3f4a6b4a6c4b43",
            serial
        ));
        assert!(!scsi_uuid_matches(
            "600a0980383041334a3f4a6b4a6c4b42",
            "00a0980383041334a3f4a6b4a6c4b42"
        ));
        assert!(!scsi_uuid_matches("3600a", ""));
    }
}
