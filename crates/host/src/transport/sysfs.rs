//! What the SCSI path finder and the multipath code both read: where block devices show in
//! sysfs, and the form a device serial is compared in. Kept apart so that neither of the two
//! imports the other for it.

pub(super) const SYS_BLOCK: &str = "/sys/block";

/// The WWID types the kernel writes into `device/wwid` (scsi_vpd_lun_id) and the page-83
/// designator digit udev and multipath put in front of the same hex (`scsi-3600a…`,
/// `mpath-3600a…`). SCSI name strings are written raw and have no digit here.
pub(super) const DESIGNATORS: [(&str, char); 3] = [("naa.", '3'), ("eui.", '2'), ("t10.", '1')];

/// The serial in the form that is compared: lower-case, without a `naa.`-style prefix.
pub(super) fn serial_key(serial: &str) -> String {
    let lower = serial.trim().to_ascii_lowercase();
    DESIGNATORS
        .iter()
        .find_map(|(prefix, _)| lower.strip_prefix(prefix).map(str::to_owned))
        .unwrap_or(lower)
}
