//! `cargo bench --bench vm`: the attach + mkfs + mount + unmount + detach cycle over iSCSI
//! (LIO) and NVMe/TCP (nvmet) against the same cycle on a loop device, in the VM lane
//! (`scripts/vm-lane`; this machine's kernel has neither). All three run in one boot, on
//! backing files of the same tmpfs, so the ratios compare the transports, not the disks.
//! The stall of I/O when one of two multipath paths dies is measured by the VM lane's
//! test (`cargo test --test vm_transports`, line `vm-bench multipath-stall`).
//!
//! On the host it boots the VM and runs itself inside; needs root and `scripts/vm-lane
//! setup` (which `scripts/test` runs). Env: VOLBRIDGE_BENCH_ROUNDS (cycles per transport,
//! default 5).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use volbridge::host::transport::TransportConfig;
use volbridge::host::{Host, PublishedVolume, RealHost};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn main() {
    if std::env::var("VOLBRIDGE_IN_VM").as_deref() == Ok("1") {
        guest();
        return;
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "the VM bench needs root (QEMU, the VM lane)"
    );
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(repo().join("scripts/vm-lane"));
    cmd.args(["run", "--timeout", "900", "--"]).arg(&exe);
    if let Ok(r) = std::env::var("VOLBRIDGE_BENCH_ROUNDS") {
        cmd.arg(format!("--rounds={r}"));
    }
    let status = cmd
        .current_dir(repo())
        .status()
        .expect("run scripts/vm-lane");
    assert!(
        status.success(),
        "the VM lane failed ({status}); run scripts/vm-lane setup first"
    );
}

fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tests/vm/targets.sh KIND-up DIR` (`KIND-down` when `up` is false): its KEY=VALUE lines.
fn targets(kind: &str, up: bool, dir: &Path) -> BTreeMap<String, String> {
    let verb = if up { "up" } else { "down" };
    sh(&format!(
        "{} {kind}-{verb} {}",
        repo().join("tests/vm/targets.sh").display(),
        dir.display()
    ))
    .lines()
    .filter_map(|l| l.split_once('='))
    .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
    .collect()
}

fn published(pairs: &[(&str, &str)]) -> PublishedVolume {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    PublishedVolume::parse("vm-bench", &map).unwrap()
}

/// mkfs.ext4, mount, unmount on `dev`: the node's work between attach and detach.
fn format_mount_unmount(dev: &Path, mnt: &Path) {
    sh(&format!(
        "mkfs.ext4 -q -F {d} && mount {d} {m} && umount {m}",
        d = dev.display(),
        m = mnt.display()
    ));
}

/// Each cycle's wall time.
fn cycles(rounds: usize, mut cycle: impl FnMut()) -> Vec<Duration> {
    cycle(); // warm-up: modules loaded, caches filled
    (0..rounds)
        .map(|_| {
            let started = Instant::now();
            cycle();
            started.elapsed()
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn guest() {
    let rounds: usize = std::env::args()
        .find_map(|a| a.strip_prefix("--rounds=")?.parse().ok())
        .unwrap_or(5)
        .max(1);
    let dir = std::env::temp_dir().join("vm-bench");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let host = RealHost;
    let config = TransportConfig {
        device_wait: Duration::from_secs(60),
        ..TransportConfig::default()
    };

    let iscsi_t = targets("iscsi", true, &dir);
    let nvme_t = targets("nvme", true, &dir);
    sh("modprobe -a loop iscsi_tcp nvme_tcp && { pidof iscsid >/dev/null || iscsid; } && sleep 1");

    // The loop baseline: a file of the same size on the same tmpfs as the targets' files.
    let file = Path::new(&iscsi_t["ISCSI_FILE"]).with_file_name("loop.img");
    sh(&format!("truncate -s 64M {}", file.display()));
    let local = cycles(rounds, || {
        let dev = host.loop_attach(&file, false).unwrap();
        format_mount_unmount(&dev, &mnt);
        host.loop_detach(&dev).unwrap();
    });

    let iscsi_ctx = published(&[
        ("accessProtocol", "iscsi"),
        (
            "serialNumber",
            iscsi_t["ISCSI_WWID"].trim_start_matches("naa."),
        ),
        ("targetNames", &iscsi_t["ISCSI_IQN"]),
        ("targetScope", "volume"),
        ("lunId", "0"),
        ("discoveryIps", "127.0.0.1"),
        ("chapUser", &iscsi_t["ISCSI_CHAP_USER"]),
        ("chapPassword", &iscsi_t["ISCSI_CHAP_PASSWORD"]),
    ]);
    let iscsi = iscsi_ctx.target.attacher(&config);
    let iscsi_times = cycles(rounds, || {
        let dev = iscsi.attach(&host).unwrap();
        format_mount_unmount(&dev, &mnt);
        iscsi.detach(&host).unwrap();
    });

    let serial = nvme_t["NVME_NGUID"].replace('-', "").to_ascii_uppercase();
    let nvme_ctx = published(&[
        ("accessProtocol", "nvmetcp"),
        ("serialNumber", &serial),
        ("targetNames", &nvme_t["NVME_NQN"]),
        ("targetScope", "volume"),
        ("lunId", "1"),
        ("discoveryIps", &nvme_t["NVME_ADDR"]),
        ("targetPort", &nvme_t["NVME_PORT"]),
    ]);
    let nvme = nvme_ctx.target.attacher(&config);
    let nvme_times = cycles(rounds, || {
        let dev = nvme.attach(&host).unwrap();
        format_mount_unmount(&dev, &mnt);
        nvme.detach(&host).unwrap();
    });

    targets("nvme", false, &dir);
    targets("iscsi", false, &dir);

    let base = median(local.clone());
    println!();
    println!(
        "attach + mkfs.ext4 + mount + umount + detach, 64 MiB, {rounds} cycles each (median), \
         Debian's kernel under QEMU TCG"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>9}",
        "transport", "median ms", "min ms", "max ms", "vs loop"
    );
    for (name, times) in [
        ("loop (baseline)", local),
        ("iSCSI (LIO, CHAP, 127.0.0.1)", iscsi_times),
        ("NVMe/TCP (nvmet, 127.0.0.1)", nvme_times),
    ] {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (min, max) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
        let m = median(times);
        println!(
            "{:<34} {:>10.0} {:>10.0} {:>10.0} {:>8.2}x",
            name,
            ms(m),
            ms(min),
            ms(max),
            m.as_secs_f64() / base.as_secs_f64()
        );
    }
}
