//! The node side through the CLI against a real daemon, as root, with real loop devices,
//! mkfs and mounts: mount, write, unmount, remount, read back; expand online and offline;
//! block publish; bad targets; faults (busy mount point, hanging mkfs, vanished device);
//! the reconciler's orphan sweep; and nothing left behind.

mod common;

use common::{
    loops_under, mounts_under, require_root_and_tools, run, Daemon, HostCleanup, TempDir,
};
use std::path::Path;
use std::process::Command;

struct Rig {
    d: Daemon,
    _cleanup: HostCleanup,
    dir: TempDir,
}

fn rig(tag: &str) -> Option<Rig> {
    if !require_root_and_tools(tag) {
        return None;
    }
    let dir = TempDir::new(tag);
    let cleanup = HostCleanup(dir.path().to_path_buf());
    let d = Daemon::start(dir.path(), &[]);
    Some(Rig {
        d,
        _cleanup: cleanup,
        dir,
    })
}

impl Rig {
    fn path(&self, p: &str) -> String {
        self.dir.path().join(p).display().to_string()
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = run(&self.d, args);
        assert_eq!(
            code,
            0,
            "volbridge {args:?} failed: {err}{out}\nlog:\n{}",
            tail(&self.d)
        );
        out
    }

    fn fails(&self, args: &[&str], code: i32, needle: &str) -> String {
        let (got, out, err) = run(&self.d, args);
        assert_eq!(got, code, "volbridge {args:?}: {err}{out}");
        assert!(
            err.contains(needle),
            "volbridge {args:?}: '{err}' lacks '{needle}'"
        );
        err
    }

    fn assert_nothing_left(&self) {
        assert!(
            loops_under(self.dir.path()).is_empty(),
            "leaked loop devices: {:?}",
            loops_under(self.dir.path())
        );
        assert!(
            mounts_under(self.dir.path()).is_empty(),
            "leaked mounts: {:?}",
            mounts_under(self.dir.path())
        );
    }
}

fn tail(d: &Daemon) -> String {
    let log = d.log_text();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[0] ^ seed)
        .collect()
}

fn df_bytes(path: &str) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=size", path])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn mount_write_unmount_remount_reads_back_and_rm_leaves_nothing() {
    let Some(r) = rig("mount") else { return };
    r.ok(&["volume", "create", "data", "--size", "256Mi"]);
    let mnt = r.path("srv/data");
    let m = r.d.json(&["volume", "mount", "data", &mnt]);
    assert_eq!(m["formatted"], true);
    assert_eq!(m["fs_type"], "ext4");
    let payload = pattern(3 << 20, 7);
    std::fs::write(Path::new(&mnt).join("file.bin"), &payload).unwrap();
    // Mounting again at the same place is success and formats nothing.
    let again = r.d.json(&["volume", "mount", "data", &mnt]);
    assert_eq!(again["formatted"], false);
    r.ok(&["volume", "unmount", "data", &mnt]);
    assert!(!Path::new(&mnt).join("file.bin").exists());
    // The last unmount released the volume: no device, no mount, no CSP grant.
    r.assert_nothing_left();
    assert_eq!(r.d.json(&["volume", "inspect", "data"])["published"], false);
    // Attach and detach the raw device in between: still never reformatted.
    let a = r.d.json(&["volume", "attach", "data"]);
    assert!(a["device"].as_str().unwrap().starts_with("/dev/loop"));
    r.ok(&["volume", "detach", "data"]);
    r.assert_nothing_left();
    let m = r.d.json(&["volume", "mount", "data", &mnt]);
    assert_eq!(
        m["formatted"], false,
        "a filesystem must never be reformatted"
    );
    let back = std::fs::read(Path::new(&mnt).join("file.bin")).unwrap();
    assert!(
        back == payload,
        "data changed across unmount/detach/remount"
    );
    // A second mount point of the same volume, then both go.
    let second = r.path("other");
    r.ok(&["volume", "mount", "data", &second]);
    assert!(Path::new(&second).join("file.bin").exists());
    let node = r.d.json(&["node"]);
    assert_eq!(
        node["volumes"][0]["published_at"].as_array().unwrap().len(),
        2
    );
    r.ok(&["volume", "unmount", "data", &mnt]);
    assert!(
        Path::new(&second).join("file.bin").exists(),
        "the other mount stays"
    );
    // Refused by name, with where it is mounted and the command that frees it.
    let err = r.fails(&["volume", "rm", "data"], 5, "volume 'data' is mounted");
    assert!(
        err.contains(&format!("volbridge volume unmount data {second}")),
        "{err}"
    );
    r.ok(&["volume", "unmount", "data", &second]);
    // Unmounting again, or a path never mounted, is success.
    let out = r.ok(&["volume", "unmount", "data", &second]);
    assert!(out.contains("was not mounted"));
    r.ok(&["volume", "rm", "data"]);
    r.assert_nothing_left();
}

#[test]
fn owner_and_mode_apply_to_a_new_filesystem_only() {
    let Some(r) = rig("owner") else { return };
    r.ok(&[
        "volume",
        "create",
        "owned",
        "--size",
        "64Mi",
        "-o",
        "fsOwner=1234:2345",
        "-o",
        "fsMode=0710",
    ]);
    let mnt = r.path("owned");
    r.ok(&["volume", "mount", "owned", &mnt]);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&mnt).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1234, 2345, 0o710)
    );
    std::fs::set_permissions(&mnt, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    r.ok(&["volume", "unmount", "owned", &mnt]);
    r.ok(&["volume", "mount", "owned", &mnt]);
    // Not formatted again, so the user's later change stays.
    assert_eq!(std::fs::metadata(&mnt).unwrap().mode() & 0o7777, 0o755);
    r.ok(&["volume", "unmount", "owned", &mnt]);
    r.ok(&["volume", "rm", "owned"]);
    r.assert_nothing_left();
}

#[test]
fn expand_while_mounted_and_offline_grows_the_filesystem() {
    let Some(r) = rig("expand") else { return };
    r.ok(&["volume", "create", "grow", "--size", "256Mi"]);
    let mnt = r.path("grow");
    r.ok(&["volume", "mount", "grow", &mnt]);
    std::fs::write(Path::new(&mnt).join("keep"), b"kept").unwrap();
    let before = df_bytes(&mnt);
    let v = r.d.json(&["volume", "expand", "grow", "--size", "512Mi"]);
    assert_eq!(v["size_bytes"], 512u64 << 20);
    // Online, or offline when the kernel refuses (ext4 without CAP_SYS_RESOURCE): either
    // way the result says which, and the mount is back.
    let how = v["filesystem_resize"].as_str().unwrap();
    assert!(how == "online" || how == "offline", "{how}");
    let after = df_bytes(&mnt);
    assert!(after > before + (200 << 20), "df {before} -> {after}");
    assert_eq!(
        std::fs::read(Path::new(&mnt).join("keep")).unwrap(),
        b"kept"
    );
    // Offline: expanded while not mounted, grown at the next mount.
    r.ok(&["volume", "unmount", "grow", &mnt]);
    let v = r.d.json(&["volume", "expand", "grow", "--size", "768Mi"]);
    assert_eq!(v["filesystem_resize"], "next mount");
    r.ok(&["volume", "mount", "grow", &mnt]);
    let offline = df_bytes(&mnt);
    assert!(offline > after + (200 << 20), "df {after} -> {offline}");
    assert_eq!(
        std::fs::read(Path::new(&mnt).join("keep")).unwrap(),
        b"kept"
    );
    let stats = r.d.json(&["volume", "stats", "grow"]);
    assert_eq!(stats["healthy"], true);
    assert!(stats["total_inodes"].as_u64().unwrap() > 0);
    r.ok(&["volume", "unmount", "grow", &mnt]);
    r.ok(&["volume", "rm", "grow"]);
    r.assert_nothing_left();
}

#[test]
fn block_mode_publishes_a_device_file_blkid_reads() {
    let Some(r) = rig("block") else { return };
    // xfs needs at least 300 MB.
    r.ok(&["volume", "create", "raw", "--size", "320Mi"]);
    let mnt = r.path("fs");
    r.ok(&["volume", "mount", "raw", &mnt, "--fs-type", "xfs"]);
    r.ok(&["volume", "unmount", "raw", &mnt]);
    let dev = r.path("dev/raw");
    let m = r.d.json(&["volume", "mount", "raw", &dev, "--block"]);
    assert!(m["fs_type"].is_null());
    let out = Command::new("blkid")
        .args(["-o", "value", "-s", "TYPE", &dev])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "xfs");
    let s = r.d.json(&["volume", "stats", "raw"]);
    assert_eq!(s["total_bytes"], 320u64 << 20);
    // A second block target, read-only.
    let ro = r.path("dev/raw-ro");
    r.ok(&["volume", "unmount", "raw", &dev]);
    r.ok(&["volume", "mount", "raw", &ro, "--block", "--read-only"]);
    // The device itself is read-only (the open may succeed; every write fails).
    let write = std::fs::OpenOptions::new()
        .write(true)
        .open(&ro)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, &[0u8; 4096]).and_then(|_| f.sync_all())
        });
    assert!(
        write.is_err(),
        "a read-only block publish must refuse writes"
    );
    r.ok(&["volume", "unmount", "raw", &ro]);
    assert!(
        !Path::new(&ro).exists(),
        "the block file is removed on unmount"
    );
    r.ok(&["volume", "rm", "raw"]);
    r.assert_nothing_left();
}

#[test]
fn bad_targets_and_busy_mount_points_are_refused_without_leaks() {
    let Some(r) = rig("badtarget") else { return };
    r.ok(&["volume", "create", "v", "--size", "64Mi"]);
    for (bad, needle) in [
        ("relative/dir", "relative"),
        ("/srv/../etc", ".."),
        ("/proc/volbridge", "/proc"),
        ("/sys/volbridge", "/sys"),
        ("/dev/volbridge", "/dev"),
        ("/", "over /"),
    ] {
        r.fails(&["volume", "mount", "v", bad], 2, needle);
    }
    r.fails(
        &["volume", "mount", "nosuch", &r.path("x")],
        3,
        "does not exist",
    );
    r.fails(
        &["volume", "mount", "v", &r.path("x"), "--fs-type", "ntfs"],
        2,
        "ext4, xfs, btrfs",
    );
    r.assert_nothing_left();
    // A mount point something else already uses.
    let busy = r.path("busy");
    std::fs::create_dir_all(&busy).unwrap();
    assert!(Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs", &busy])
        .status()
        .unwrap()
        .success());
    r.fails(
        &["volume", "mount", "v", &busy],
        5,
        "already used by another mount",
    );
    assert_eq!(mounts_under(r.dir.path()), vec![busy.clone()]);
    assert!(loops_under(r.dir.path()).is_empty());
    assert_eq!(r.d.json(&["volume", "inspect", "v"])["published"], false);
    Command::new("umount").arg(&busy).status().unwrap();
    // The record of the failed mount is gone: the volume mounts fine now.
    r.ok(&["volume", "mount", "v", &busy]);
    r.ok(&["volume", "unmount", "v", &busy]);
    r.ok(&["volume", "rm", "v"]);
    r.assert_nothing_left();
}

#[test]
fn a_hanging_mkfs_times_out_and_leaks_nothing() {
    if !require_root_and_tools("hanging_mkfs") {
        return;
    }
    let dir = TempDir::new("hangmkfs");
    let _cleanup = HostCleanup(dir.path().to_path_buf());
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("mkfs.ext4");
    std::fs::write(&fake, "#!/bin/sh\nsleep 300\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("volbridge.toml");
    std::fs::write(&config, "[node]\ntool_timeout_seconds = 2\n").unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let d = Daemon::start_with_env(
        dir.path(),
        &["--config", &config.display().to_string()],
        &[("PATH", &path)],
    );
    assert_eq!(
        run(&d, &["volume", "create", "slow", "--size", "64Mi"]).0,
        0
    );
    let target = dir.path().join("m").display().to_string();
    let (code, _, err) = run(&d, &["volume", "mount", "slow", &target]);
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("did not finish within 2s"), "{err}");
    assert!(
        loops_under(dir.path()).is_empty(),
        "{:?}",
        loops_under(dir.path())
    );
    assert!(mounts_under(dir.path()).is_empty());
    let sleeping = Command::new("pgrep")
        .args(["-f", &fake.display().to_string()])
        .output()
        .unwrap();
    assert!(sleeping.stdout.is_empty(), "the hung mkfs was not killed");
    assert_eq!(d.json(&["volume", "inspect", "slow"])["published"], false);
}

#[test]
fn a_vanished_device_is_reported_and_detach_still_works() {
    let Some(r) = rig("vanish") else { return };
    r.ok(&["volume", "create", "gone", "--size", "64Mi"]);
    let a = r.d.json(&["volume", "attach", "gone"]);
    let dev = a["device"].as_str().unwrap().to_owned();
    assert!(Command::new("losetup")
        .args(["-d", &dev])
        .status()
        .unwrap()
        .success());
    let s = r.d.json(&["volume", "stats", "gone"]);
    assert_eq!(s["healthy"], false);
    assert!(s["message"].as_str().unwrap().contains("gone"));
    r.ok(&["volume", "detach", "gone"]);
    r.ok(&["volume", "rm", "gone"]);
    r.assert_nothing_left();
}

#[test]
fn restart_keeps_mounts_and_the_reconciler_detaches_orphaned_loops() {
    let Some(mut r) = rig("orphan") else { return };
    r.ok(&["volume", "create", "kept", "--size", "64Mi"]);
    r.ok(&["volume", "create", "orphan", "--size", "64Mi"]);
    let mnt = r.path("kept");
    r.ok(&["volume", "mount", "kept", &mnt]);
    std::fs::write(Path::new(&mnt).join("f"), b"still here").unwrap();
    r.d.kill();
    // A loop device on one of our files that no record explains (a crash of an older
    // version, or a hand-made losetup).
    let id = {
        let files =
            std::fs::read_dir(common::csp_images(&r.d.state.join("csp")).join("volumes")).unwrap();
        let kept_loops: Vec<String> = loops_under(r.dir.path()).into_iter().map(|l| l.1).collect();
        files
            .flatten()
            .map(|e| e.path().display().to_string())
            .find(|p| !kept_loops.iter().any(|k| k == p))
            .unwrap()
    };
    let out = Command::new("losetup")
        .args(["--find", "--show", &id])
        .output()
        .unwrap();
    let orphan_dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(orphan_dev.starts_with("/dev/loop"));
    r.d.crash_and_restart();
    let status = r.d.json(&["status"]);
    let actions = status["reconciled"].to_string();
    assert!(
        actions.contains("detached orphaned loop device"),
        "{actions}"
    );
    let loops = loops_under(r.dir.path());
    assert_eq!(loops.len(), 1, "{loops:?}");
    assert_eq!(
        std::fs::read(Path::new(&mnt).join("f")).unwrap(),
        b"still here"
    );
    r.ok(&["volume", "unmount", "kept", &mnt]);
    r.ok(&["volume", "rm", "kept"]);
    r.ok(&["volume", "rm", "orphan"]);
    r.assert_nothing_left();
}

#[test]
fn doctor_passes_on_this_machine_and_changes_nothing() {
    if !require_root_and_tools("doctor") {
        return;
    }
    let out = Command::new(common::BIN)
        .args(["doctor", "--output", "json"])
        .env_remove("VOLBRIDGE_CONFIG")
        .output()
        .unwrap();
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<_> = checks
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(out.status.success());
}

#[test]
fn a_snapshot_of_a_mounted_volume_holds_writes_not_yet_synced() {
    let Some(r) = rig("snapflush") else { return };
    r.ok(&["volume", "create", "live", "--size", "128Mi"]);
    let mnt = r.path("srv/live");
    r.ok(&["volume", "mount", "live", &mnt]);
    // Written and left in the page cache: no fsync, no sync.
    let payload = pattern(1 << 20, 3);
    std::fs::write(Path::new(&mnt).join("cached.bin"), &payload).unwrap();
    r.ok(&["snapshot", "create", "live-snap", "--volume", "live"]);
    r.ok(&["volume", "clone", "copy", "--from-snapshot", "live-snap"]);
    let copy = r.path("srv/copy");
    r.ok(&["volume", "mount", "copy", &copy]);
    let read = std::fs::read(Path::new(&copy).join("cached.bin"))
        .expect("the file written before the snapshot is in it");
    assert!(read == payload, "the snapshot holds the file's bytes");
    r.ok(&["volume", "unmount", "copy", &copy]);
    r.ok(&["volume", "unmount", "live", &mnt]);
    r.ok(&["volume", "rm", "copy"]);
    r.ok(&["snapshot", "rm", "live-snap"]);
    r.ok(&["volume", "rm", "live"]);
    r.assert_nothing_left();
}

#[test]
fn read_only_block_targets_refuse_writes_and_orphaned_views_are_detached() {
    let Some(mut r) = rig("roview") else { return };
    r.ok(&["volume", "create", "raw", "--size", "64Mi"]);
    let rw = r.path("pods/rw/dev");
    let ro = r.path("pods/ro/dev");
    r.ok(&["volume", "mount", "raw", &rw, "--block"]);
    std::fs::write(&rw, pattern(4096, 9)).expect("the read-write target writes");
    r.ok(&["volume", "unmount", "raw", &rw]);
    // (Through the admin API a volume is attached read-only or not as a whole; CSI's
    // conformance suite covers a read-write and a read-only target of one stage.)
    r.ok(&["volume", "mount", "raw", &ro, "--block", "--read-only"]);
    let refused = std::fs::OpenOptions::new()
        .write(true)
        .open(&ro)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &[0u8; 4096]));
    assert!(
        refused.is_err(),
        "a write through the read-only target succeeded"
    );
    let mut head = vec![0u8; 4096];
    std::io::Read::read_exact(&mut std::fs::File::open(&ro).unwrap(), &mut head).unwrap();
    assert_eq!(
        head,
        pattern(4096, 9),
        "the read-only target shows the volume"
    );
    // The staged loop, and the view the read-only target binds.
    assert_eq!(
        loops_under(r.dir.path()).len(),
        2,
        "{:?}",
        loops_under(r.dir.path())
    );

    // A crash between making a view and binding it leaves a view nothing binds.
    r.d.kill();
    let staged = loops_under(r.dir.path())
        .into_iter()
        .find(|(_, backing)| !backing.starts_with("/dev/"))
        .unwrap()
        .0;
    let out = Command::new("losetup")
        .args(["--find", "--show", "--read-only", &staged])
        .output()
        .unwrap();
    let orphan = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(orphan.starts_with("/dev/loop"), "{out:?}");
    r.d.crash_and_restart();
    let actions = r.d.json(&["status"])["reconciled"].to_string();
    assert!(actions.contains(&orphan), "{actions}");
    let loops = loops_under(r.dir.path());
    assert_eq!(loops.len(), 2, "only the orphaned view goes: {loops:?}");
    assert!(loops.iter().all(|(d, _)| *d != orphan), "{loops:?}");
    assert!(
        std::fs::OpenOptions::new()
            .write(true)
            .open(&ro)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &[0u8; 4096]))
            .is_err(),
        "the bound view survived the restart"
    );

    r.ok(&["volume", "unmount", "raw", &ro]);
    r.ok(&["volume", "rm", "raw"]);
    r.assert_nothing_left();
}
