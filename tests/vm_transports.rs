//! Kernel storage transports in the VM lane (`scripts/vm-lane`): this machine's kernel has
//! no iSCSI/NVMe-oF modules, so one QEMU VM booting Debian's kernel on the host's root
//! filesystem hosts both the targets (LIO, nvmet, set up over configfs by
//! `tests/vm/targets.sh`) and the initiators.
//!
//! All tests here share one boot (`tests/vm/suite.sh`): it runs the stock-tool checks of
//! `tests/vm/transports.sh`, then this very binary inside the VM for each test of
//! [`GUEST_TESTS`], which takes its in-VM branch (`VOLBRIDGE_IN_VM=1`) and drives
//! volbridge's real `IscsiTransport` / `NvmeTransport` on `RealHost` against those targets.
//! On the host each test asserts on its own part of the VM's output.
//!
//! A VM that cannot boot fails every test here with the lane's reason, unless
//! `VOLBRIDGE_ALLOW_SKIP=1`. Boot and run take one to three minutes under TCG.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use volbridge::host::transport::TransportConfig;
use volbridge::host::{PublishedVolume, RealHost};
use volbridge_base::ErrorKind;

#[path = "vm/two_hosts.rs"]
mod two_hosts;

/// The tests that run inside the VM, by name: each has an in-VM branch.
const GUEST_TESTS: &[&str] = &[
    "volbridge_iscsi_transport_against_lio",
    "volbridge_nvme_transport_against_nvmet",
    "volbridge_never_formats_an_unready_lun",
    "volbridge_two_hosts_over_iscsi_and_nvme",
    // Last: it leaves multipathd running.
    "volbridge_iscsi_multipath_against_lio",
];

#[path = "vm/lane.rs"]
mod lane;
use lane::{in_vm, repo, sh, step};

// ---------------------------------------------------------------------------------------
// Host side: one VM run for the whole binary.

fn vm_run() -> &'static lane::VmRun {
    static RUN: OnceLock<lane::VmRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut args: Vec<&std::ffi::OsStr> = vec!["tests/vm/suite.sh".as_ref(), exe.as_os_str()];
        args.extend(GUEST_TESTS.iter().map(std::ffi::OsStr::new));
        // Boot (15-25 s) and the suite (~3 min) under TCG on a loaded 2-core machine.
        lane::run(600, None, &args)
    })
}

/// Inside the VM, runs test `name`'s guest part; on the host, asserts on its output.
fn guest_or_check(name: &str, guest: fn()) {
    if in_vm() {
        guest();
    } else {
        assert_vm_check(name);
    }
}

fn assert_vm_check(name: &str) {
    let run = vm_run();
    if lane::ran(run, "the checks") {
        lane::assert_passed(run, name, "the VM");
    }
}

// ---------------------------------------------------------------------------------------
// The tests. The first two are the stock-tool checks of tests/vm/transports.sh; the others
// run volbridge's transports inside the VM.

/// LIO iSCSI target with a CHAP ACL; iscsiadm discovery, a refused wrong password, login;
/// the disk found by its WWID; I/O, mkfs, mount; logout.
#[test]
fn iscsi_lio_target_with_iscsiadm() {
    assert!(
        !in_vm(),
        "runs on the host; the VM part is tests/vm/transports.sh"
    );
    assert_vm_check("iscsi");
}

/// nvmet TCP target allowing this host's NQN; a refused foreign NQN, `nvme connect`; the
/// namespace found by NGUID/UUID; I/O, mkfs, mount; disconnect.
#[test]
fn nvme_tcp_nvmet_target_with_nvme_cli() {
    assert!(
        !in_vm(),
        "runs on the host; the VM part is tests/vm/transports.sh"
    );
    assert_vm_check("nvme");
}

/// volbridge's `IscsiTransport` on `RealHost` against a LIO target with CHAP: a wrong CHAP
/// password is refused as a precondition naming CHAP; attach logs in and finds the disk by
/// the WWID; attach again is idempotent; the data reaches the target; detach (volume
/// scope) removes the disk and logs out; detach again is success.
#[test]
fn volbridge_iscsi_transport_against_lio() {
    guest_or_check("volbridge_iscsi_transport_against_lio", guest_iscsi);
}

/// volbridge's `NvmeTransport` on `RealHost` against an nvmet TCP subsystem: attach
/// connects and finds the namespace by its NGUID; idempotent; the data reaches the target;
/// detach (volume scope) disconnects and the namespace is gone.
#[test]
fn volbridge_nvme_transport_against_nvmet() {
    guest_or_check("volbridge_nvme_transport_against_nvmet", guest_nvme);
}

/// A LUN that is not ready (LIO's ALUA state standby: every read answers NOT READY) holds
/// an ext4 filesystem. blkid answers "nothing found" for it, exactly as for a blank disk;
/// volbridge's stage must refuse (UNAVAILABLE, "nothing was formatted"), never call mkfs,
/// and leave the filesystem as it was. Once the LUN is active, the same stage mounts the
/// existing filesystem without formatting.
#[test]
fn volbridge_never_formats_an_unready_lun() {
    guest_or_check("volbridge_never_formats_an_unready_lun", guest_unready_lun);
}

/// Two hosts: the array (a network namespace running `volbridge csp serve`, which exports
/// volumes through LIO with CHAP and through nvmet) and the node (`volbridge serve` with
/// the array as its backend, CSI on a unix socket) across a veth pair. For iSCSI and for
/// NVMe/TCP: create, controller publish (a target for the node's initiator only), stage,
/// publish, write; the array's CSP killed -9 and restarted under it; detach (the target
/// withdrawn, the session gone), attach again, the data reads back; delete; nothing left
/// in the array's kernel. See tests/vm/two_hosts.rs.
#[test]
fn volbridge_two_hosts_over_iscsi_and_nvme() {
    guest_or_check(
        "volbridge_two_hosts_over_iscsi_and_nvme",
        two_hosts::guest_two_hosts,
    );
}

/// volbridge's `IscsiTransport` with dm-multipath: a LIO target with two portals
/// (127.0.0.1 and 127.0.0.2) and multipathd running; attach logs in on both, the
/// dm-multipath map over the two paths is found by the WWID (`/dev/mapper/…`); the data
/// reaches the target through it. Then one path dies (its portal's traffic dropped) while a
/// writer keeps going: the path is failed, I/O goes on over the other one after a bounded
/// stall (printed as `vm-bench multipath-stall`), the path comes back and is reinstated,
/// and every block written reads back and is in the target's file. Detach flushes the map,
/// removes both paths and logs out of both sessions.
#[test]
fn volbridge_iscsi_multipath_against_lio() {
    guest_or_check(
        "volbridge_iscsi_multipath_against_lio",
        guest_iscsi_multipath,
    );
}

// ---------------------------------------------------------------------------------------
// Guest side.

/// A work directory under the VM's /tmp, and the targets made in it removed at the end.
struct Targets {
    dir: PathBuf,
    kinds: Vec<&'static str>,
}

impl Targets {
    fn new(name: &str) -> Targets {
        let dir = std::env::temp_dir().join(format!("vm-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Targets {
            dir,
            kinds: Vec::new(),
        }
    }

    /// `targets.sh KIND-up DIR`: its KEY=VALUE lines.
    fn up(&mut self, kind: &'static str) -> BTreeMap<String, String> {
        self.up_with(kind, &[])
    }

    fn up_with(&mut self, kind: &'static str, env: &[(&str, &str)]) -> BTreeMap<String, String> {
        let out = Command::new(repo().join("tests/vm/targets.sh"))
            .envs(env.iter().copied())
            .arg(format!("{kind}-up"))
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "targets.sh {kind}-up: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.kinds.push(kind);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect()
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        for kind in self.kinds.iter().rev() {
            let _ = Command::new(repo().join("tests/vm/targets.sh"))
                .arg(format!("{kind}-down"))
                .arg(&self.dir)
                .status();
        }
    }
}

/// 1 MiB of a pattern written with O_DIRECT at 4 MiB into `dev`, read back the same way,
/// and found at the same offset of the target's backing `file`.
fn io_through(dev: &Path, file: &Path, seed: u8) {
    const LEN: usize = 1 << 20;
    const AT: u64 = 4 << 20;
    // O_DIRECT wants the buffer aligned to the logical block size: 4096 covers all.
    let mut raw = vec![0u8; LEN + 4096];
    let off = raw.as_ptr().align_offset(4096);
    let buf = &mut raw[off..off + LEN];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    let want = buf.to_vec();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .unwrap();
    f.seek(SeekFrom::Start(AT)).unwrap();
    f.write_all(buf).unwrap();
    f.sync_all().unwrap();
    buf.fill(0);
    f.seek(SeekFrom::Start(AT)).unwrap();
    f.read_exact(buf).unwrap();
    assert!(
        buf == &want[..],
        "data read back from {} differs",
        dev.display()
    );
    let mut backing = File::open(file).unwrap();
    backing.seek(SeekFrom::Start(AT)).unwrap();
    let mut got = vec![0u8; LEN];
    backing.read_exact(&mut got).unwrap();
    assert!(
        got == want,
        "the target's backing file lacks the data written to {}",
        dev.display()
    );
    step(&format!(
        "1 MiB of direct I/O through {} reached {}",
        dev.display(),
        file.display()
    ));
}

fn sys_block(dev: &Path, attr: &str) -> String {
    let name = dev.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::read_to_string(Path::new("/sys/block").join(name).join(attr))
        .unwrap_or_else(|e| panic!("/sys/block/{}/{attr}: {e}", dev.display()))
        .trim()
        .to_owned()
}

fn start_iscsid() {
    let (rc, out) = sh(
        "modprobe iscsi_tcp && { pidof iscsid >/dev/null || iscsid; } && \
         for i in $(seq 100); do iscsiadm -m session >/dev/null 2>&1; \
         case $? in 0|21) exit 0;; esac; sleep 0.1; done; exit 1",
    );
    assert_eq!(rc, 0, "iscsid: {out}");
}

/// The publish context an array's CSP would send for the LIO target of `t`.
/// A publish context as the wire carries it, parsed as a node does.
fn published(pairs: &[(&str, &str)]) -> PublishedVolume {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    PublishedVolume::parse("vm-lane", &map).unwrap()
}

/// The publish context an array's CSP would send for the LIO target of `t`, with its CHAP
/// password.
fn iscsi_context(t: &BTreeMap<String, String>, chap_password: &str) -> PublishedVolume {
    published(&[
        ("accessProtocol", "iscsi"),
        // What an array's CSP reports: the NAA-6 designator's hex, without the `naa.`.
        ("serialNumber", t["ISCSI_WWID"].trim_start_matches("naa.")),
        ("targetNames", &t["ISCSI_IQN"]),
        ("targetScope", "volume"),
        ("lunId", "0"),
        ("discoveryIps", "127.0.0.1"),
        ("chapUser", &t["ISCSI_CHAP_USER"]),
        ("chapPassword", chap_password),
    ])
}

fn guest_iscsi() {
    let mut targets = Targets::new("iscsi");
    let t = targets.up("iscsi");
    let wwid = &t["ISCSI_WWID"];
    step(&format!("LIO target {} (WWID {wwid})", t["ISCSI_IQN"]));
    start_iscsid();

    let ctx = iscsi_context(&t, &t["ISCSI_CHAP_PASSWORD"]);
    let config = TransportConfig {
        device_wait: Duration::from_secs(60),
        ..TransportConfig::default()
    };
    let host = RealHost;
    let iscsi = ctx.target.attacher(&config);

    let wrong_password = format!("wrong-{}", t["ISCSI_CHAP_PASSWORD"]);
    let wrong = iscsi_context(&t, &wrong_password);
    let err = wrong.target.attacher(&config).attach(&host).unwrap_err();
    let msg = err.to_string();
    assert!(
        err.is(ErrorKind::FailedPrecondition) && msg.contains("CHAP"),
        "a wrong CHAP password: {err:?}"
    );
    assert!(
        !msg.contains(&wrong_password),
        "the error shows the password: {msg}"
    );
    step(&format!("wrong CHAP password refused: {msg}"));

    let dev = iscsi.attach(&host).unwrap();
    assert_eq!(sys_block(&dev, "device/wwid"), *wwid);
    step(&format!("attached {} (WWID {wwid})", dev.display()));
    assert_eq!(iscsi.find(&host).unwrap(), Some(dev.clone()));
    assert_eq!(iscsi.attach(&host).unwrap(), dev, "attach again");
    step("find and a second attach give the same device");

    io_through(&dev, Path::new(&t["ISCSI_FILE"]), 7);

    iscsi.detach(&host).unwrap();
    assert!(!Path::new("/sys/block")
        .join(dev.file_name().unwrap())
        .exists());
    let (rc, out) = sh("iscsiadm -m session");
    assert_eq!(rc, 21, "a session is left after detach: {out}");
    assert_eq!(iscsi.find(&host).unwrap(), None);
    iscsi.detach(&host).unwrap();
    step("detached: disk removed, logged out; detach again is success");
    drop(targets);
    step("target removed");
}

fn guest_nvme() {
    let mut targets = Targets::new("nvme");
    let t = targets.up("nvme");
    let nguid = &t["NVME_NGUID"];
    step(&format!(
        "nvmet subsystem {} (NGUID {nguid})",
        t["NVME_NQN"]
    ));
    let (rc, out) = sh("modprobe nvme_tcp");
    assert_eq!(rc, 0, "modprobe nvme_tcp: {out}");

    // The NGUID as an array reports it: 32 hex digits.
    let serial = nguid.replace('-', "").to_ascii_uppercase();
    let ctx = published(&[
        ("accessProtocol", "nvmetcp"),
        ("serialNumber", &serial),
        ("targetNames", &t["NVME_NQN"]),
        ("targetScope", "volume"),
        ("lunId", "1"),
        ("discoveryIps", &t["NVME_ADDR"]),
        ("targetPort", &t["NVME_PORT"]),
    ]);
    let config = TransportConfig {
        device_wait: Duration::from_secs(60),
        ..TransportConfig::default()
    };
    let host = RealHost;
    let nvme = ctx.target.attacher(&config);

    let dev = nvme.attach(&host).unwrap();
    assert_eq!(sys_block(&dev, "nguid"), *nguid);
    assert_eq!(sys_block(&dev, "uuid"), t["NVME_UUID"]);
    step(&format!("attached {} (NGUID {nguid})", dev.display()));
    assert_eq!(nvme.find(&host).unwrap(), Some(dev.clone()));
    assert_eq!(nvme.attach(&host).unwrap(), dev, "attach again");
    step("find and a second attach give the same device");

    io_through(&dev, Path::new(&t["NVME_FILE"]), 11);

    nvme.detach(&host).unwrap();
    let gone = Instant::now() + Duration::from_secs(10);
    while Path::new("/sys/block")
        .join(dev.file_name().unwrap())
        .exists()
    {
        assert!(
            Instant::now() < gone,
            "{} still present after detach",
            dev.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(nvme.find(&host).unwrap(), None);
    nvme.detach(&host).unwrap();
    step("detached: disconnected, namespace gone; detach again is success");
    drop(targets);
    step("target removed");
}

/// The ext4 UUID blkid reads from a file or device (empty when none).
fn fs_uuid(path: &Path) -> String {
    sh(&format!("blkid -p -s UUID -o value {}", path.display()))
        .1
        .trim()
        .to_owned()
}

fn guest_unready_lun() {
    use volbridge::host::stage::{self, Access, StageRequest};
    let mut targets = Targets::new("unready");
    let t = targets.up("iscsi");
    let file = Path::new(&t["ISCSI_FILE"]);
    let (rc, out) = sh(&format!("mkfs.ext4 -q -F {}", file.display()));
    assert_eq!(rc, 0, "mkfs.ext4 on the LUN's file: {out}");
    let uuid = fs_uuid(file);
    assert!(!uuid.is_empty());
    let alua = "/sys/kernel/config/target/core/fileio_0/vmlane/alua/default_tg_pt_gp/\
                alua_access_state";
    // 2: standby. Reads and writes answer NOT READY, "target port in standby state".
    std::fs::write(alua, "2").unwrap();
    step(&format!("LUN holds ext4 {uuid}; ALUA state standby"));
    start_iscsid();

    let ctx = iscsi_context(&t, &t["ISCSI_CHAP_PASSWORD"]);
    let config = TransportConfig {
        device_wait: Duration::from_secs(60),
        ..TransportConfig::default()
    };
    let host = RealHost;
    let attacher = ctx.target.attacher(&config);
    let staging = targets.dir.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let access = Access::Mount {
        fs_type: "ext4".into(),
        mount_options: Vec::new(),
    };
    let formats = std::cell::Cell::new(0);
    let before_format = || {
        formats.set(formats.get() + 1);
        Ok(())
    };
    let request = StageRequest {
        attacher: attacher.as_ref(),
        filesystem: &ctx.filesystem,
        staging_path: &staging,
        access: &access,
        read_only: false,
        tool_timeout: Duration::from_secs(60),
        redo_format: false,
        before_format: &before_format,
    };
    let err = stage::stage(&host, &request).unwrap_err();
    step(&format!("stage on the unready LUN: {err}"));
    assert!(
        err.is(ErrorKind::Unavailable) && err.to_string().contains("nothing was formatted"),
        "{err:?}"
    );
    assert_eq!(formats.get(), 0, "mkfs was about to run on an unready LUN");
    assert_eq!(fs_uuid(file), uuid, "the LUN's filesystem changed");
    let (rc, out) = sh("iscsiadm -m session");
    assert_eq!(rc, 21, "the failed stage left a session: {out}");
    step("refused, nothing formatted, nothing left attached");

    std::fs::write(alua, "0").unwrap();
    let staged = stage::stage(&host, &request).unwrap();
    assert!(!staged.formatted, "{staged:?}");
    assert_eq!(staged.fs_type.as_deref(), Some("ext4"));
    assert_eq!(fs_uuid(&staged.device), uuid);
    step(&format!(
        "ALUA active: staged {} at {} without formatting (ext4 {uuid})",
        staged.device.display(),
        staging.display()
    ));
    stage::unstage(&host, attacher.as_ref(), &staging).unwrap();
    assert_eq!(formats.get(), 0);
    step("unstaged");
}

/// The `sdX` names under `/sys/block/<dm>/slaves`.
fn slaves(dm: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new("/sys/block").join(dm).join("slaves"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn guest_iscsi_multipath() {
    let mut targets = Targets::new("mpath");
    let t = targets.up_with(
        "iscsi",
        &[("VM_ISCSI_PORTALS", "127.0.0.1:3260 127.0.0.2:3260")],
    );
    let wwid = &t["ISCSI_WWID"];
    step(&format!(
        "LIO target {} on portals {} (WWID {wwid})",
        t["ISCSI_IQN"], t["ISCSI_PORTALS"]
    ));
    start_iscsid();
    // Every SCSI disk is multipathed (Debian's default, find_multipaths strict, would
    // wait for the WWID to be listed in /etc/multipath/wwids).
    std::fs::write(
        "/etc/multipath.conf",
        "defaults {\n    user_friendly_names yes\n    find_multipaths no\n}\n",
    )
    .unwrap();
    let (rc, out) = sh(
        "modprobe dm_multipath && { pidof multipathd >/dev/null || multipathd; } && \
         for i in $(seq 100); do multipathd show daemon 2>/dev/null | grep -q 'idle\\|running' \
         && exit 0; sleep 0.1; done; exit 1",
    );
    assert_eq!(rc, 0, "multipathd: {out}");
    step("multipathd running (find_multipaths no)");

    let ctx = iscsi_context(&t, &t["ISCSI_CHAP_PASSWORD"]);
    let config = TransportConfig {
        device_wait: Duration::from_secs(60),
        ..TransportConfig::default()
    };
    let host = RealHost;
    let iscsi = ctx.target.attacher(&config);

    let attached = iscsi.attach(&host).unwrap();
    // What attach returned right away: a path, if the map was not there yet.
    step(&format!("attach returned {}", attached.display()));
    let (_, sessions) = sh("iscsiadm -m session");
    assert_eq!(
        sessions.lines().count(),
        2,
        "one session per portal: {sessions}"
    );

    // The map over both paths, as find sees it once multipathd has built it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (dev, dm) = loop {
        if let Some(dev) = iscsi.find(&host).unwrap() {
            if let Ok(real) = std::fs::canonicalize(&dev) {
                let name = real.file_name().unwrap().to_string_lossy().into_owned();
                if name.starts_with("dm-") && slaves(&name).len() == 2 {
                    break (dev, name);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no multipath map over two paths for {wwid}; multipath -ll:\n{}",
            sh("multipath -ll").1
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(dev.starts_with("/dev/mapper"), "{}", dev.display());
    let uuid = sys_block(Path::new(&dm), "dm/uuid");
    assert_eq!(uuid, format!("mpath-3{}", wwid.trim_start_matches("naa.")));
    let paths = slaves(&dm);
    step(&format!(
        "find gives {} ({dm}, {uuid}) over {}",
        dev.display(),
        paths.join(" + ")
    ));
    assert_eq!(
        attached,
        dev,
        "attach returned {} before multipathd made the map: a caller would have used one path",
        attached.display()
    );

    io_through(&dev, Path::new(&t["ISCSI_FILE"]), 23);
    path_loss_and_return(&dev, &dm, Path::new(&t["ISCSI_FILE"]));

    iscsi.detach(&host).unwrap();
    assert!(
        !Path::new("/sys/block").join(&dm).exists(),
        "{dm} left after detach"
    );
    for p in &paths {
        assert!(
            !Path::new("/sys/block").join(p).exists(),
            "{p} left after detach"
        );
    }
    let (rc, out) = sh("iscsiadm -m session");
    assert_eq!(rc, 21, "a session is left after detach: {out}");
    iscsi.detach(&host).unwrap();
    step("detached: map flushed, both paths removed, both sessions logged out");
    drop(targets);
    step("target removed");
}

/// `multipath -ll` lines of paths in each state: (active, failed).
fn path_states() -> (usize, usize, String) {
    let (_, out) = sh("multipath -ll");
    // Path lines: `` `- 0:0:0:0 sda 8:0  active ready  running`` (dm state, checker state).
    let active = out.lines().filter(|l| l.contains(" active ready")).count();
    let failed = out.lines().filter(|l| l.contains(" failed ")).count();
    (active, failed, out)
}

fn portal_traffic(addr: &str, dropped: bool) {
    let op = if dropped { "-I" } else { "-D" };
    let (rc, out) = sh(&format!(
        "iptables {op} INPUT -p tcp -d {addr} --dport 3260 -j DROP && \
         iptables {op} INPUT -p tcp -s {addr} --sport 3260 -j DROP"
    ));
    assert_eq!(rc, 0, "iptables {op} for {addr}: {out}");
}

/// A writer of 4 KiB direct blocks over 16 MiB at 8 MiB of `dev`, round and round, each
/// block stamped with its index and round; it records the slowest write.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<(Duration, u64)>,
}

const W_AT: u64 = 8 << 20;
const W_BLOCKS: u64 = 4096;

fn block(index: u64, round: u64) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    for (i, chunk) in b.chunks_mut(16).enumerate() {
        chunk[..8].copy_from_slice(&index.to_le_bytes());
        chunk[8..].copy_from_slice(&(round ^ i as u64).to_le_bytes());
    }
    b
}

impl Writer {
    fn start(dev: &Path) -> Writer {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let done = std::sync::Arc::new(AtomicU64::new(0));
        let (s, d) = (stop.clone(), done.clone());
        let dev = dev.to_path_buf();
        let thread = std::thread::spawn(move || {
            let mut f = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
                .open(&dev)
                .unwrap();
            let mut raw = vec![0u8; 8192];
            let off = raw.as_ptr().align_offset(4096);
            let mut slowest = Duration::ZERO;
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                let (index, round) = (n % W_BLOCKS, n / W_BLOCKS);
                raw[off..off + 4096].copy_from_slice(&block(index, round));
                let started = Instant::now();
                f.seek(SeekFrom::Start(W_AT + index * 4096)).unwrap();
                f.write_all(&raw[off..off + 4096])
                    .unwrap_or_else(|e| panic!("write {n} through the map failed: {e}"));
                slowest = slowest.max(started.elapsed());
                n += 1;
                d.store(n, Ordering::Relaxed);
            }
            (slowest, n)
        });
        Writer { stop, done, thread }
    }

    fn written(&self) -> u64 {
        self.done.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops it; (slowest write, writes done).
    fn finish(self) -> (Duration, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the writer panicked")
    }
}

/// Every block the writer wrote last, read back through `dev` and found in `file`.
fn verify_writer_blocks(dev: &Path, file: &Path, writes: u64) {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .unwrap();
    let mut backing = File::open(file).unwrap();
    let mut raw = vec![0u8; 8192];
    let off = raw.as_ptr().align_offset(4096);
    let mut from_file = vec![0u8; 4096];
    for index in 0..W_BLOCKS.min(writes) {
        // The last round that reached this index.
        let round = (writes - 1 - index) / W_BLOCKS;
        let want = block(index, round);
        f.seek(SeekFrom::Start(W_AT + index * 4096)).unwrap();
        f.read_exact(&mut raw[off..off + 4096]).unwrap();
        assert!(
            raw[off..off + 4096] == want[..],
            "block {index} read back differs"
        );
        backing.seek(SeekFrom::Start(W_AT + index * 4096)).unwrap();
        backing.read_exact(&mut from_file).unwrap();
        assert!(
            from_file == want,
            "block {index} is not in the target's file"
        );
    }
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !ok() {
        assert!(
            started.elapsed() < limit,
            "{what} not within {limit:?}; multipath -ll:\n{}",
            path_states().2
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    started.elapsed()
}

/// One of the two paths dies under a running writer and comes back (see the test's doc).
fn path_loss_and_return(dev: &Path, dm: &str, file: &Path) {
    wait_for("two active paths", Duration::from_secs(60), || {
        path_states().0 == 2
    });
    let writer = Writer::start(dev);
    wait_for("writes flowing", Duration::from_secs(30), || {
        writer.written() > 200
    });
    step(&format!("writer running on {} ({dm})", dev.display()));

    portal_traffic("127.0.0.2", true);
    let lost = Instant::now();
    let noticed = wait_for("the dead path failed", Duration::from_secs(180), || {
        path_states().1 >= 1
    });
    step(&format!("path via 127.0.0.2 failed after {noticed:.1?}"));
    let before = writer.written();
    wait_for(
        "writes going on over one path",
        Duration::from_secs(120),
        || writer.written() > before + 200,
    );
    let one_path = path_states();
    assert_eq!(one_path.0, 1, "one active path left:\n{}", one_path.2);
    step(&format!(
        "{} writes went on over the other path ({:.1?} after the loss)",
        writer.written() - before,
        lost.elapsed()
    ));

    portal_traffic("127.0.0.2", false);
    let back = wait_for("the path reinstated", Duration::from_secs(180), || {
        path_states().0 == 2
    });
    step(&format!("path via 127.0.0.2 active again after {back:.1?}"));
    let again = writer.written();
    wait_for("writes after the return", Duration::from_secs(60), || {
        writer.written() > again + 200
    });
    let (slowest, writes) = writer.finish();
    println!(
        "vm-bench multipath-stall: {:.1}s (slowest write while one of two paths died; {writes} writes)",
        slowest.as_secs_f64()
    );
    assert!(
        slowest < Duration::from_secs(60),
        "I/O stalled {slowest:.1?} when a path died: replacement_timeout is not in effect"
    );
    verify_writer_blocks(dev, file, writes);
    step(&format!(
        "all {} blocks read back and are in the target's file",
        W_BLOCKS.min(writes)
    ));
}
