//! The node reconciler after a reboot, against real kernel targets in the VM lane
//! (`scripts/vm-lane`): two boots of the VM share a directory (`target/vm-reboot`, passed
//! with `--rwdir`) that holds what a machine's disks keep across a reboot: volbridge's
//! state dir, the staging directories, and the targets' identities and backing files.
//!
//! Boot one (`tests/vm/reboot.sh 1`) stages volumes through the engine on `RealHost` and
//! then the machine dies: iSCSI with CHAP (`ready`) and NVMe/TCP (`nvready`) stages are
//! left ready and mounted, holding data; the stage record of `removing` is left as an
//! unstage interrupted by the crash leaves it (phase removing), that of `creating` as an
//! interrupted stage leaves it (phase creating).
//!
//! Boot two (`tests/vm/reboot.sh 2`) brings the same targets back from the kept backing
//! files, lets iscsid log in by itself (`node.startup = automatic`) to `removing`,
//! `creating` and `foreign` (a target no record of volbridge names), then runs the
//! reconciler of a fresh engine on the kept state dir once, with no other help, and checks
//! each outcome as its own part (`vm-check NAME: ok`), which the host tests below assert on.
//!
//! A VM that cannot boot fails every test here with the lane's reason, unless
//! `VOLBRIDGE_ALLOW_SKIP=1`. Both boots take two to four minutes under TCG.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use volbridge::engine::node_records::STAGES;
use volbridge::engine::{
    Access, Backends, Engine, EngineConfig, NodeConfig, Owner, Phase, StageRecord, StageVolume,
    StateStore, Wait,
};
use volbridge::host::transport::TransportConfig;
use volbridge::host::RealHost;

#[path = "vm/lane.rs"]
mod lane;
use lane::{in_vm, repo, sh, step, VmRun};

// ---------------------------------------------------------------------------------------
// Host side: two VM runs for the whole binary.

struct Boots {
    first: VmRun,
    /// `None` when the first boot did not run its part (nothing to reboot into).
    second: Option<VmRun>,
}

fn boot(n: u32, dir: &Path) -> VmRun {
    let exe = std::env::current_exe().expect("the test binary's path");
    let n_arg = n.to_string();
    // Boot (20-40 s under TCG on a loaded 2-core machine) and the boot's work.
    let run = lane::run(
        240,
        Some(dir),
        &[
            "tests/vm/reboot.sh".as_ref(),
            n_arg.as_ref(),
            exe.as_os_str(),
            dir.as_os_str(),
        ],
    );
    eprintln!(
        "boot {n}: lane exit {:?} after {:.0?}",
        run.status, run.took
    );
    run
}

fn boots() -> &'static Boots {
    static BOOTS: OnceLock<Boots> = OnceLock::new();
    BOOTS.get_or_init(|| {
        // What the "disks" keep: fresh for each run of this binary.
        let dir = repo().join("target/vm-reboot");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating target/vm-reboot");
        let first = boot(1, &dir);
        let second = first
            .stdout
            .contains("vm-check boot1: ok")
            .then(|| boot(2, &dir));
        Boots { first, second }
    })
}

/// Asserts that part `name` of boot `n` passed.
fn assert_part(n: u32, name: &str) {
    let boots = boots();
    if !lane::ran(&boots.first, "the first boot") {
        return;
    }
    let run = if n == 1 {
        &boots.first
    } else {
        match &boots.second {
            Some(run) => run,
            None => panic!(
                "the first boot failed, so there was no reboot:\n{}\n{}",
                lane::part_of(&boots.first, "boot1"),
                boots.first.stderr.trim_end()
            ),
        }
    };
    if !lane::ran(run, &format!("boot {n}")) {
        return;
    }
    lane::assert_passed(run, name, &format!("boot {n}"));
}

// ---------------------------------------------------------------------------------------
// The tests. The first two are each a whole boot in the VM; the others assert on one part
// of the second boot.

/// Boot one: the volumes staged through the engine; the machine then dies with them staged.
#[test]
fn boot_one_stages_then_the_machine_dies() {
    if in_vm() {
        guest_boot_one();
    } else {
        assert_part(1, "boot1");
    }
}

/// Boot two: the reconciler of a fresh engine on the kept state dir, once; every part ok,
/// and a second pass finds nothing left to do.
#[test]
fn boot_two_reconciles() {
    if in_vm() {
        guest_boot_two();
    } else {
        assert_part(2, "boot2");
    }
}

/// The iSCSI stage (CHAP) ready before the reboot: logged in again, the disk found by its
/// WWID (whatever `sdX` it got), mounted at the same staging path, the data read back.
#[test]
fn iscsi_stage_is_restored_after_a_reboot() {
    assert!(!in_vm(), "host side of tests/vm/reboot.sh");
    assert_part(2, "iscsi_restored");
}

/// The NVMe/TCP stage ready before the reboot: connected again, the namespace found by its
/// NGUID, mounted at the same staging path, the data read back.
#[test]
fn nvme_stage_is_restored_after_a_reboot() {
    assert!(!in_vm(), "host side of tests/vm/reboot.sh");
    assert_part(2, "nvme_restored");
}

/// The stage whose unstage the crash interrupted (phase removing): though iscsid logged in
/// again at boot, its session is logged out, its disk gone, its node record deleted (no
/// login at the next boot either) and its record dropped.
#[test]
fn interrupted_unstage_is_finished_after_a_reboot() {
    assert!(!in_vm(), "host side of tests/vm/reboot.sh");
    assert_part(2, "removing_cleared");
}

/// The stage the crash interrupted (phase creating): rolled back the same way.
#[test]
fn interrupted_stage_is_rolled_back_after_a_reboot() {
    assert!(!in_vm(), "host side of tests/vm/reboot.sh");
    assert_part(2, "creating_cleared");
}

/// A session to a target no record names (someone else's) keeps its session and disk.
#[test]
fn sessions_volbridge_never_made_are_left_alone() {
    assert!(!in_vm(), "host side of tests/vm/reboot.sh");
    assert_part(2, "foreign_left_alone");
}

// ---------------------------------------------------------------------------------------
// Guest side.

const BACKEND: &str = "vm";

fn shared_dir() -> PathBuf {
    PathBuf::from(std::env::var("VOLBRIDGE_REBOOT_DIR").expect("VOLBRIDGE_REBOOT_DIR"))
}

/// The KEY=VALUE identities of a target (`tests/vm/reboot.sh` keeps them).
fn identity(dir: &Path, name: &str) -> BTreeMap<String, String> {
    let path = dir.join("targets").join(format!("{name}.env"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// The publish context an array's CSP would send for iSCSI target `name` (CHAP; the
/// default target scope, `group`).
fn iscsi_context(dir: &Path, name: &str) -> BTreeMap<String, String> {
    let t = identity(dir, name);
    [
        ("accessProtocol", "iscsi"),
        // What an array's CSP reports: the NAA-6 designator's hex, without the `naa.`.
        ("serialNumber", t["WWID"].trim_start_matches("naa.")),
        ("targetNames", &t["IQN"]),
        ("lunId", "0"),
        ("discoveryIps", "127.0.0.1"),
        ("chapUser", &t["CHAP_USER"]),
        ("chapPassword", &t["CHAP_PASSWORD"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn nvme_context(dir: &Path, name: &str) -> BTreeMap<String, String> {
    let t = identity(dir, name);
    let serial = t["NGUID"].replace('-', "").to_ascii_uppercase();
    [
        ("accessProtocol", "nvmetcp"),
        ("serialNumber", serial.as_str()),
        ("targetNames", &t["NQN"]),
        ("targetScope", "volume"),
        ("lunId", "1"),
        ("discoveryIps", "127.0.0.1"),
        ("targetPort", "4420"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The engine as the daemon builds it, on the kept state dir and the real machine.
fn engine(dir: &Path) -> Engine {
    let store = StateStore::open(dir.join("state")).unwrap();
    Engine::new(Backends::new(BACKEND), store, EngineConfig::default())
        .unwrap()
        .with_node(
            Arc::new(RealHost),
            NodeConfig {
                transport: TransportConfig {
                    device_wait: Duration::from_secs(60),
                    ..TransportConfig::default()
                },
                tool_timeout: Duration::from_secs(60),
                staging_root: Some(dir.join("engine-staging")),
            },
        )
}

fn staging(dir: &Path, name: &str) -> PathBuf {
    dir.join("staging").join(name)
}

fn key(name: &str) -> String {
    format!("csi-{name}")
}

fn stage_request(dir: &Path, name: &str, context: BTreeMap<String, String>) -> StageVolume {
    // Kubelet makes the staging directory before NodeStageVolume.
    std::fs::create_dir_all(staging(dir, name)).unwrap();
    StageVolume {
        volume_key: key(name),
        backend: BACKEND.to_owned(),
        volume_name: name.to_owned(),
        owner: Owner::Co,
        pinned: false,
        context,
        staging_path: staging(dir, name).display().to_string(),
        access: Access::Mount {
            fs_type: "ext4".to_owned(),
            mount_options: Vec::new(),
        },
        read_only: false,
    }
}

/// The data a volume holds: 1 MiB, different per volume.
fn payload(name: &str) -> Vec<u8> {
    let seed = name
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    (0..1usize << 20)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

fn write_payload(dir: &Path, name: &str) {
    use std::io::Write;
    let path = staging(dir, name).join("payload");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&payload(name)).unwrap();
    f.sync_all().unwrap();
    std::fs::File::open(staging(dir, name))
        .unwrap()
        .sync_all()
        .unwrap();
}

/// The SCSI disks (`sdX`) whose WWID is `wwid`.
fn scsi_disks(wwid: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let id = std::fs::read_to_string(e.path().join("device/wwid")).unwrap_or_default();
        if name.starts_with("sd") && id.trim() == wwid {
            found.push(name);
        }
    }
    found
}

/// The NVMe namespaces (`nvmeXnY`) whose NGUID is `nguid`.
fn nvme_namespaces(nguid: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let id = std::fs::read_to_string(e.path().join("nguid")).unwrap_or_default();
        // `nvmeXcYnZ` are native multipath's hidden per-controller nodes.
        let hidden = name.trim_start_matches("nvme").contains('c');
        if name.starts_with("nvme") && !hidden && id.trim() == nguid {
            found.push(name);
        }
    }
    found
}

/// The dm-multipath map (`dm-N`) of a SCSI WWID (`naa.6001405…`), if any.
fn mpath_map(wwid: &str) -> Option<String> {
    let uuid = format!("mpath-3{}", wwid.trim_start_matches("naa."));
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| {
            std::fs::read_to_string(Path::new("/sys/block").join(name).join("dm/uuid"))
                .is_ok_and(|u| u.trim() == uuid)
        })
}

/// The iSCSI sessions to `iqn` (lines of `iscsiadm -m session`).
fn sessions_to(iqn: &str) -> Vec<String> {
    let (_, out) = sh("iscsiadm -m session 2>/dev/null");
    out.lines()
        .filter(|l| l.split_whitespace().any(|w| w == iqn))
        .map(str::to_owned)
        .collect()
}

/// The `major:minor` of what is mounted at `path` (mountinfo), if anything.
fn mounted_dev(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 4 && Path::new(f[4]) == path).then(|| f[2].to_owned())
        })
        .next_back()
}

fn dev_number(block: &str) -> String {
    std::fs::read_to_string(Path::new("/sys/block").join(block).join("dev"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn guest_boot_one() {
    let dir = shared_dir();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = engine(&dir);
    rt.block_on(async {
        for name in ["ready", "removing", "creating"] {
            let staged = engine
                .node_stage(
                    stage_request(&dir, name, iscsi_context(&dir, name)),
                    Wait::No,
                )
                .await
                .unwrap_or_else(|e| panic!("stage of {name}: {e}"));
            step(&format!(
                "staged {name} (iSCSI, CHAP) on {} at {}",
                staged.device.display(),
                staging(&dir, name).display()
            ));
            write_payload(&dir, name);
        }
        let staged = engine
            .node_stage(
                stage_request(&dir, "nvready", nvme_context(&dir, "nvready")),
                Wait::No,
            )
            .await
            .unwrap_or_else(|e| panic!("stage of nvready: {e}"));
        step(&format!(
            "staged nvready (NVMe/TCP) on {} at {}",
            staged.device.display(),
            staging(&dir, "nvready").display()
        ));
        write_payload(&dir, "nvready");
    });
    // The crash: an unstage of `removing` and a stage of `creating` were under way. Their
    // records say so as the engine writes them before it touches the machine.
    let store = StateStore::open(dir.join("state")).unwrap();
    for (name, phase) in [("removing", Phase::Removing), ("creating", Phase::Creating)] {
        let mut record: StageRecord = store.get(STAGES, &key(name)).unwrap().unwrap();
        record.phase = phase;
        store.put(STAGES, &key(name), &record).unwrap();
    }
    step("records of removing/creating left as a crash leaves them; the machine dies");
}

/// Runs one check; prints `== NAME`, what it saw and `vm-check NAME: ok|FAILED`.
fn part(name: &str, failed: &mut Vec<String>, check: impl FnOnce()) {
    println!("== {name}");
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
        Ok(()) => println!("vm-check {name}: ok"),
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            println!("vm-check {name}: FAILED {}", msg.replace('\n', " | "));
            failed.push(name.to_owned());
        }
    }
}

fn guest_boot_two() {
    let dir = shared_dir();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ready = identity(&dir, "ready");
    let removing = identity(&dir, "removing");
    let creating = identity(&dir, "creating");
    let foreign = identity(&dir, "foreign");
    let nvready = identity(&dir, "nvready");
    // What the boot left: sessions iscsid made by itself, maps multipathd made of their
    // disks, nothing mounted.
    for t in [&removing, &creating, &foreign] {
        assert_eq!(
            sessions_to(&t["IQN"]).len(),
            1,
            "iscsid's login to {}",
            t["IQN"]
        );
        assert_eq!(scsi_disks(&t["WWID"]).len(), 1, "disk of {}", t["WWID"]);
        assert!(mpath_map(&t["WWID"]).is_some(), "map of {}", t["WWID"]);
    }
    assert!(sessions_to(&ready["IQN"]).is_empty());
    assert!(mounted_dev(&staging(&dir, "ready")).is_none());
    let foreign_disk = scsi_disks(&foreign["WWID"]).remove(0);
    let foreign_map = mpath_map(&foreign["WWID"]).unwrap();
    step(&format!(
        "after the reboot: sessions {:?}",
        sh("iscsiadm -m session").1.lines().collect::<Vec<_>>()
    ));

    let engine = engine(&dir);
    let started = Instant::now();
    let report = rt.block_on(engine.reconcile());
    step(&format!(
        "reconciler pass took {:.1?}: pending {}",
        started.elapsed(),
        report.pending
    ));
    for action in &report.actions {
        println!("    reconciler: {action}");
    }

    let mut failed = Vec::new();
    part("iscsi_restored", &mut failed, || {
        let disks = scsi_disks(&ready["WWID"]);
        assert_eq!(
            disks.len(),
            1,
            "disks with WWID {}: {disks:?}",
            ready["WWID"]
        );
        assert_eq!(sessions_to(&ready["IQN"]).len(), 1, "session to ready");
        // multipathd runs: the map over the disk, not the disk itself.
        let map = mpath_map(&ready["WWID"]);
        assert!(map.is_some(), "no multipath map over {}", disks[0]);
        check_restored(&dir, "ready", map.as_deref().unwrap());
    });
    part("nvme_restored", &mut failed, || {
        let nss = nvme_namespaces(&nvready["NGUID"]);
        assert_eq!(
            nss.len(),
            1,
            "namespaces with NGUID {}: {nss:?}",
            nvready["NGUID"]
        );
        check_restored(&dir, "nvready", &nss[0]);
    });
    for (name, t) in [("removing", &removing), ("creating", &creating)] {
        part(&format!("{name}_cleared"), &mut failed, || {
            let store = StateStore::open(dir.join("state")).unwrap();
            let record: Option<StageRecord> = store.get(STAGES, &key(name)).unwrap();
            assert!(record.is_none(), "the {name} record is left: {record:?}");
            let left = sessions_to(&t["IQN"]);
            assert!(left.is_empty(), "{name}: sessions left: {left:?}");
            let disks = scsi_disks(&t["WWID"]);
            assert!(disks.is_empty(), "{name}: disks left: {disks:?}");
            let map = mpath_map(&t["WWID"]);
            assert!(map.is_none(), "{name}: multipath map left: {map:?}");
            let (rc, out) = sh(&format!("iscsiadm -m node -T {}", t["IQN"]));
            assert_eq!(
                rc, 21,
                "{name}: the node record is left (iscsid would log in at the next boot): {out}"
            );
            assert!(mounted_dev(&staging(&dir, name)).is_none());
            step(&format!(
                "{name}: map flushed, logged out, disk gone, node record and stage record deleted"
            ));
        });
    }
    part("foreign_left_alone", &mut failed, || {
        assert_eq!(
            sessions_to(&foreign["IQN"]).len(),
            1,
            "the foreign session was logged out"
        );
        assert_eq!(
            scsi_disks(&foreign["WWID"]),
            vec![foreign_disk.clone()],
            "the foreign disk is gone"
        );
        assert_eq!(
            mpath_map(&foreign["WWID"]).as_ref(),
            Some(&foreign_map),
            "the foreign map is gone"
        );
        step(&format!(
            "foreign: session, {foreign_disk} and its map {foreign_map} left alone"
        ));
    });
    part("second_pass", &mut failed, || {
        let again = rt.block_on(engine.reconcile());
        assert!(
            again.actions.is_empty() && again.pending == 0,
            "a second pass found work: {:?}",
            again.actions
        );
    });
    assert!(failed.is_empty(), "failed: {failed:?}");
}

/// The stage of `name` is mounted again at its staging path from `block`, and holds its
/// data.
fn check_restored(dir: &Path, name: &str, block: &str) {
    let path = staging(dir, name);
    let mounted = mounted_dev(&path);
    assert_eq!(
        mounted.as_deref(),
        Some(dev_number(block).as_str()),
        "{} is not mounted from {block}",
        path.display()
    );
    let data = std::fs::read(path.join("payload")).unwrap();
    assert!(data == payload(name), "{name}: the data read back differs");
    let store = StateStore::open(dir.join("state")).unwrap();
    let record: StageRecord = store.get(STAGES, &key(name)).unwrap().unwrap();
    assert_eq!(record.phase, Phase::Ready);
    step(&format!(
        "{name}: mounted again from {block} at {}, 1 MiB read back",
        path.display()
    ));
}
