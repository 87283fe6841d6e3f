//! Access protocol `fc`: the fabric is zoned and the LUN mapped by the array, so attaching
//! is a SCSI rescan of every Fibre Channel HBA (`/sys/class/fc_host/hostN` →
//! `/sys/class/scsi_host/hostN/scan`) and a wait for the disk with the volume's WWID.
//! There is no session to end: detaching deletes the disks (and flushes their map).

use super::scsi;
use super::Transport;
use crate::target::FcTarget;
use crate::Host;
use std::path::{Path, PathBuf};
use std::time::Duration;
use volbridge_base::error::{Error, Result};

const SYS_FC_HOSTS: &str = "/sys/class/fc_host";
const SYS_SCSI_HOSTS: &str = "/sys/class/scsi_host";

pub struct FcTransport {
    device_wait: Duration,
}

impl FcTransport {
    pub fn new(device_wait: Duration) -> FcTransport {
        FcTransport { device_wait }
    }

    fn rescan(&self, host: &dyn Host) -> Result<()> {
        let hosts: Vec<String> = host
            .list_dir(Path::new(SYS_FC_HOSTS))?
            .into_iter()
            .filter(|h| {
                h.strip_prefix("host")
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .collect();
        if hosts.is_empty() {
            return Err(Error::precondition(format!(
                "no Fibre Channel HBA on this node ({SYS_FC_HOSTS} is empty); check the HBA \
                 driver is loaded"
            )));
        }
        let mut scanned = false;
        let mut failure = None;
        for h in hosts {
            // Channel, target, LUN all wildcards: the LUN may sit behind any target port.
            let scan = Path::new(SYS_SCSI_HOSTS).join(&h).join("scan");
            match host.write_file(&scan, "- - -") {
                Ok(()) => scanned = true,
                Err(e) => {
                    tracing::warn!(hba = %h, error = %e, "SCSI rescan failed");
                    failure = Some(e.context(format!("rescan of {h}")));
                }
            }
        }
        match failure {
            Some(e) if !scanned => Err(e),
            _ => Ok(()),
        }
    }
}

impl Transport for FcTransport {
    type Target = FcTarget;

    fn attach(&self, host: &dyn Host, target: &FcTarget) -> Result<PathBuf> {
        let serial = target.serial.as_str();
        let mut undecided = None;
        if let Some(device) = scsi::settled_device(host, serial, &mut undecided)? {
            return Ok(device);
        }
        self.rescan(host)?;
        let found = scsi::wait_for(self.device_wait, || {
            scsi::settled_device(host, serial, &mut undecided)
        })?;
        found.ok_or_else(|| {
            scsi::device_timeout(
                serial,
                self.device_wait,
                &format!(
                    "rescanning the Fibre Channel HBAs (LUN {}); check the zoning and that the \
                     LUN is mapped to this host's WWPNs",
                    target.lun
                ),
            )
        })
    }

    fn find(&self, host: &dyn Host, target: &FcTarget) -> Result<Option<PathBuf>> {
        Ok(scsi::resolve_scsi(host, target.serial.as_str())?.device())
    }

    fn detach(&self, host: &dyn Host, target: &FcTarget) -> Result<()> {
        let device = scsi::resolve_scsi(host, target.serial.as_str())?;
        if device.is_empty() {
            return Ok(());
        }
        scsi::remove_scsi(host, &device)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::*;
    use super::*;
    use crate::target::Serial;
    use crate::{Call, FakeHost};
    use volbridge_base::ErrorKind;

    const WWID: &str = "naa.624a93704b1f4c3d8e2f000000011a2b";

    fn ctx() -> FcTarget {
        FcTarget {
            serial: Serial::new("624A93704B1F4C3D8E2F000000011A2B").unwrap(),
            lun: 4,
        }
    }

    fn hbas(host: &FakeHost) {
        for h in ["host1", "host2"] {
            host.add_file(
                format!("{SYS_FC_HOSTS}/{h}/port_name"),
                "0x10000090fa1b2c3d\n",
            );
            host.add_file(format!("{SYS_FC_HOSTS}/{h}/port_state"), "Online\n");
            host.add_file(format!("{SYS_SCSI_HOSTS}/{h}/proc_name"), "lpfc\n");
        }
        // A SCSI host without FC (the local SATA controller) is not scanned.
        host.add_file(format!("{SYS_SCSI_HOSTS}/host0/proc_name"), "ahci\n");
    }

    #[test]
    fn attach_rescans_every_fc_host_then_finds_the_disk() {
        let host = FakeHost::new();
        hbas(&host);
        let dev = std::thread::scope(|s| {
            s.spawn(|| {
                // The kernel adds the disks once both scans were written.
                let started = std::time::Instant::now();
                while started.elapsed() < Duration::from_secs(5)
                    && host
                        .calls()
                        .iter()
                        .filter(|c| matches!(c, Call::WriteFile { .. }))
                        .count()
                        < 2
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                scsi_disk(&host, "sdk", WWID, "8:160");
                scsi_disk(&host, "sdl", WWID, "8:176");
            });
            FcTransport::new(Duration::from_secs(5))
                .attach(&host, &ctx())
                .unwrap()
        });
        assert_eq!(dev, PathBuf::from("/dev/sdk"));
        assert_eq!(
            host.calls(),
            [
                write("/sys/class/scsi_host/host1/scan", "- - -"),
                write("/sys/class/scsi_host/host2/scan", "- - -"),
            ]
        );
        // Present already: no rescan.
        host.clear_calls();
        let t = FcTransport::new(Duration::from_secs(5));
        assert_eq!(t.attach(&host, &ctx()).unwrap(), dev);
        assert_eq!(t.find(&host, &ctx()).unwrap(), Some(dev));
        assert!(host.calls().is_empty());
    }

    #[test]
    fn no_hba_or_no_disk_are_clear_errors() {
        let host = FakeHost::new();
        let e = FcTransport::new(Duration::from_millis(10))
            .attach(&host, &ctx())
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        assert!(e.message.contains("no Fibre Channel HBA"), "{}", e.message);

        hbas(&host);
        let e = FcTransport::new(Duration::from_millis(10))
            .attach(&host, &ctx())
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::DeadlineExceeded);
        assert!(
            e.message.contains("within 10ms") && e.message.contains("LUN 4"),
            "{}",
            e.message
        );
    }

    #[test]
    fn detach_flushes_the_map_and_deletes_every_path() {
        let host = FakeHost::new();
        host.install("multipath");
        scsi_disk(&host, "sdk", WWID, "8:160");
        scsi_disk(&host, "sdl", WWID, "8:176");
        scsi_disk(
            &host,
            "sdm",
            "naa.624a93704b1f4c3d8e2f0000000199ff",
            "8:192",
        );
        mpath_map(
            &host,
            "dm-4",
            "3624a93704b1f4c3d8e2f000000011a2b",
            "3624a93704b1f4c3d8e2f000000011a2b",
            &["sdk", "sdl"],
        );
        let t = FcTransport::new(Duration::from_millis(10));
        assert_eq!(
            t.find(&host, &ctx()).unwrap(),
            Some(PathBuf::from(
                "/dev/mapper/3624a93704b1f4c3d8e2f000000011a2b"
            ))
        );
        t.detach(&host, &ctx()).unwrap();
        assert_eq!(
            host.calls(),
            [
                run("multipath -f 3624a93704b1f4c3d8e2f000000011a2b"),
                write("/sys/block/sdk/device/delete", "1"),
                write("/sys/block/sdl/device/delete", "1"),
            ]
        );
        // Nothing there: success, nothing done.
        let empty = FakeHost::new();
        t.detach(&empty, &ctx()).unwrap();
        assert!(empty.calls().is_empty());
    }
}
