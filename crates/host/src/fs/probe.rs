//! What is on a device, according to blkid's low-level probe (superblocks and partition
//! tables read from the device, not the udev cache).

use crate::{Cmd, Host};
use std::path::Path;
use std::time::Duration;
use volbridge_base::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// No filesystem, no partition table, nothing blkid recognises: safe to format.
    Blank,
    Filesystem(String),
    /// A partition table or another non-filesystem signature: never formatted.
    Other(String),
}

pub fn probe(host: &dyn Host, device: &Path) -> Result<Probe> {
    let out = host.run(
        &Cmd::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(device.display().to_string())
            .timeout(Duration::from_secs(30)),
    )?;
    match out.status {
        // Exit 2: nothing found, which blkid also answers when it could read nothing.
        2 if out.stdout.trim().is_empty() => {
            readable(host, device)?;
            Ok(Probe::Blank)
        }
        0 | 2 => {
            let value = |key: &str| {
                out.stdout.lines().find_map(|l| {
                    l.strip_prefix(key)
                        .and_then(|r| r.strip_prefix('='))
                        .map(str::to_owned)
                })
            };
            if let Some(t) = value("TYPE") {
                if value("USAGE").as_deref().is_none_or(|u| u == "filesystem") {
                    return Ok(Probe::Filesystem(t));
                }
                return Ok(Probe::Other(t));
            }
            if let Some(pt) = value("PTTYPE") {
                return Ok(Probe::Other(format!("{pt} partition table")));
            }
            Ok(Probe::Other("an unknown signature".into()))
        }
        // Exit 8: several signatures ("ambivalent"): certainly not blank.
        8 => Ok(Probe::Other(format!(
            "several signatures ({})",
            out.reason()
        ))),
        _ => Err(Error::internal(format!(
            "blkid cannot probe {}: {}",
            device.display(),
            out.reason()
        ))),
    }
}

/// Where signatures live: superblocks near the start, GPT backups and RAID metadata near
/// the end.
const SIGNATURE_SPAN: u64 = 64 << 10;

/// blkid answers "nothing found" (exit 2) as well for a device whose every read fails: a
/// LUN that is not ready (ALUA standby, an array still bringing it up) looks blank to it.
/// Blank is believed only once the areas that hold signatures read back; otherwise the
/// volume is not ready here and nothing may be formatted.
fn readable(host: &dyn Host, device: &Path) -> Result<()> {
    let unready = |why: String| {
        Error::unavailable(format!(
            "{} is attached but cannot be read ({why}): the volume is not ready on this \
             node, so nothing was formatted; the stage can be retried once the array \
             serves it",
            device.display()
        ))
    };
    let size = host.device_size(device).map_err(|e| unready(e.message))?;
    let len = SIGNATURE_SPAN.min(size);
    for offset in [0, size - len] {
        match host.read_at(device, offset, len as usize) {
            Ok(bytes) if bytes.len() as u64 == len => {}
            Ok(bytes) => {
                return Err(unready(format!(
                    "{} of {len} bytes at offset {offset}",
                    bytes.len()
                )))
            }
            Err(e) => return Err(unready(e.message)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CmdOutput, FakeHost};

    #[test]
    fn blank_filesystem_and_partition_table() {
        let host = FakeHost::new();
        let dev = Path::new("/dev/loop0");
        host.add_block_device(dev, 7, 0, 1 << 30);
        host.script("blkid", &[], CmdOutput::failed(2, ""));
        assert_eq!(probe(&host, dev).unwrap(), Probe::Blank);
        assert_eq!(host.commands(), ["blkid -p -o export /dev/loop0"]);

        let host = FakeHost::new();
        host.script(
            "blkid",
            &[],
            CmdOutput::ok("DEVNAME=/dev/loop0\nUUID=3b65\nVERSION=1.0\nBLOCK_SIZE=1024\nTYPE=ext4\nUSAGE=filesystem\n"),
        );
        assert_eq!(probe(&host, dev).unwrap(), Probe::Filesystem("ext4".into()));

        let host = FakeHost::new();
        host.script(
            "blkid",
            &[],
            CmdOutput::ok("DEVNAME=/dev/loop0\nPTUUID=ab\nPTTYPE=gpt\n"),
        );
        assert_eq!(
            probe(&host, dev).unwrap(),
            Probe::Other("gpt partition table".into())
        );

        let host = FakeHost::new();
        host.script(
            "blkid",
            &[],
            CmdOutput::ok("TYPE=LVM2_member\nUSAGE=raid\n"),
        );
        assert_eq!(
            probe(&host, dev).unwrap(),
            Probe::Other("LVM2_member".into())
        );

        let host = FakeHost::new();
        host.script("blkid", &[], CmdOutput::failed(8, "ambivalent result"));
        assert!(matches!(probe(&host, dev).unwrap(), Probe::Other(_)));

        let host = FakeHost::new();
        host.script("blkid", &[], CmdOutput::failed(4, "usage"));
        assert!(probe(&host, dev).is_err());
    }

    #[test]
    fn nothing_found_on_a_device_that_cannot_be_read_is_not_blank() {
        let host = FakeHost::new();
        let dev = Path::new("/dev/sdc");
        host.add_block_device(dev, 8, 32, 64 << 20);
        host.make_unreadable(dev);
        // What blkid answers for a LUN in ALUA standby: exit 2, nothing on stdout.
        host.script("blkid", &[], CmdOutput::failed(2, ""));
        let e = probe(&host, dev).unwrap_err();
        assert!(e.is(volbridge_base::ErrorKind::Unavailable), "{e:?}");
        assert!(
            e.message.contains("/dev/sdc") && e.message.contains("nothing was formatted"),
            "{e}"
        );
    }
}
