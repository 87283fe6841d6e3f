//! Sysfs layouts as the kernel shows them, built inside a [`FakeHost`], and a way to make
//! a device appear only once a given command has run (as the kernel does after a login).
//! Symlinks are flattened: the fake has none, and every path used here resolves through
//! them on a real host.

use crate::{Call, FakeHost};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A SCSI disk: `/sys/block/<name>/{dev,device/wwid,holders/}`.
pub fn scsi_disk(host: &FakeHost, name: &str, wwid: &str, devno: &str) {
    host.add_file(
        format!("/sys/block/{name}/device/wwid"),
        &format!("{wwid}\n"),
    );
    host.add_file(format!("/sys/block/{name}/dev"), &format!("{devno}\n"));
    host.add_dir(format!("/sys/block/{name}/holders"));
}

/// A dm-multipath map `dm` named `name` over `slaves`; `wwid` as multipath writes it
/// (`3600a…`, `eui.…`); with its `/dev/mapper` node, as udev makes it.
pub fn mpath_map(host: &FakeHost, dm: &str, name: &str, wwid: &str, slaves: &[&str]) {
    mpath_map_sysfs(host, dm, name, wwid, slaves);
    let minor: u32 = dm.trim_start_matches("dm-").parse().unwrap_or(0);
    host.add_block_device(format!("/dev/mapper/{name}"), 253, minor, 64 << 20);
}

/// The map as sysfs shows it, before udev has made its `/dev/mapper` node.
pub fn mpath_map_sysfs(host: &FakeHost, dm: &str, name: &str, wwid: &str, slaves: &[&str]) {
    let minor: u32 = dm.trim_start_matches("dm-").parse().unwrap_or(0);
    host.add_file(
        format!("/sys/block/{dm}/dm/uuid"),
        &format!("mpath-{wwid}\n"),
    );
    host.add_file(format!("/sys/block/{dm}/dm/name"), &format!("{name}\n"));
    host.add_file(format!("/sys/block/{dm}/dev"), &format!("253:{minor}\n"));
    host.add_dir(format!("/sys/block/{dm}/holders"));
    for slave in slaves {
        host.add_dir(format!("/sys/block/{dm}/slaves/{slave}"));
        host.add_dir(format!("/sys/block/{slave}/holders/{dm}"));
    }
}

/// A LUN of iSCSI session `sid` on SCSI host `hostno`, as under
/// `/sys/class/iscsi_session/sessionN/device/targetH:0:0/H:0:0:L/block/sdX`.
pub fn iscsi_lun(host: &FakeHost, sid: u32, hostno: u32, lun: u32, disk: Option<&str>) {
    let dir = format!(
        "/sys/class/iscsi_session/session{sid}/device/target{hostno}:0:0/{hostno}:0:0:{lun}"
    );
    match disk {
        Some(d) => host.add_dir(format!("{dir}/block/{d}")),
        None => host.add_file(format!("{dir}/type"), "12\n"),
    };
}

pub fn write(path: &str, contents: &str) -> Call {
    Call::WriteFile {
        path: PathBuf::from(path),
        contents: contents.into(),
    }
}

pub fn run(line: &str) -> Call {
    let mut words = line.split(' ').map(str::to_owned);
    Call::Run {
        program: words.next().unwrap_or_default(),
        args: words.collect(),
    }
}

/// Runs `body` while a helper thread waits for a command line containing `needle` to be
/// recorded, then calls `appear` (adds the device the kernel would now show). Keyed on the
/// command, not on time, so the recorded sequence does not depend on scheduling.
pub fn appear_after<R>(
    host: &FakeHost,
    needle: &str,
    appear: impl FnOnce(&FakeHost) + Send,
    body: impl FnOnce() -> R,
) -> R {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                if host.commands().iter().any(|c| c.contains(needle)) {
                    appear(host);
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let result = body();
        done.store(true, Ordering::SeqCst);
        result
    })
}
