//! The local CSP's pool through the real daemon, as root: on a host filesystem without
//! reflink (CI's ext4) volumes live in an xfs (or btrfs) image pool, so a snapshot and a
//! clone of a volume holding 1 GiB are metadata operations that share its extents; the pool
//! survives kill -9 at any point of its creation, its growth, a snapshot and a clone, and is
//! mounted again after a reboot; a data dir from before pools keeps its volumes; thin
//! provisioning refuses what the over-commit limit does not allow.

mod common;

use common::{require_root_and_tools, run, Daemon, HostCleanup, TempDir, BIN};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

struct Rig {
    d: Daemon,
    _cleanup: HostCleanup,
    dir: TempDir,
}

fn rig(tag: &str, extra: &[&str]) -> Option<Rig> {
    if !require_root_and_tools(tag) || !require_pool_tools(tag) {
        return None;
    }
    let dir = TempDir::new(tag);
    let cleanup = HostCleanup(dir.path().to_path_buf());
    let d = Daemon::start(dir.path(), extra);
    Some(Rig {
        d,
        _cleanup: cleanup,
        dir,
    })
}

fn require_pool_tools(test: &str) -> bool {
    let missing: Vec<&str> = ["mkfs.xfs", "xfs_growfs", "mkfs.btrfs", "btrfs"]
        .into_iter()
        .filter(|t| {
            !["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .any(|d| Path::new(d).join(t).exists())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{test} needs {} (xfsprogs, btrfs-progs, e2fsprogs: scripts/test installs them)",
        missing.join(", ")
    );
    if std::env::var("VOLBRIDGE_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {why}");
        return false;
    }
    panic!("{why}; set VOLBRIDGE_ALLOW_SKIP=1 to skip on a developer machine");
}

impl Rig {
    fn csp(&self) -> PathBuf {
        self.d.state.join("csp")
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = run(&self.d, args);
        assert_eq!(code, 0, "volbridge {args:?} failed: {err}{out}");
        out
    }

    fn pool(&self) -> Value {
        let b = self.d.json(&["backend", "ls"]);
        b.as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == "local")
            .unwrap()["pool"]
            .clone()
    }

    /// The directory holding volumes/ and snapshots/.
    fn images(&self) -> PathBuf {
        if self.csp().join("pool.json").exists() {
            self.csp().join("pool")
        } else {
            self.csp()
        }
    }

    fn volume_image(&self, name: &str) -> PathBuf {
        let id = self.d.json(&["volume", "inspect", name])["id"]
            .as_str()
            .unwrap()
            .to_owned();
        self.images().join(format!("volumes/{id}.img"))
    }

    fn snapshot_image(&self, name: &str) -> PathBuf {
        let all = self.d.json(&["snapshot", "ls"]);
        let id = all
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no snapshot {name}: {all}"))["id"]
            .as_str()
            .unwrap()
            .to_owned();
        self.images().join(format!("snapshots/{id}.img"))
    }

    /// Bytes in use inside the pool's filesystem.
    /// Used bytes once the pool's filesystem has settled its accounting: btrfs counts
    /// extents written or freed only at its next transaction commit, which syncfs forces.
    fn pool_used(&self) -> u64 {
        let dir = std::fs::File::open(self.images()).unwrap();
        rustix::fs::syncfs(&dir).unwrap();
        let st = rustix::fs::statvfs(self.images()).unwrap();
        (st.f_blocks - st.f_bfree) * st.f_frsize
    }

    /// The bytes of data (not metadata) a btrfs pool holds. btrfs's own usage counts the
    /// metadata a reflink writes (an item per extent, twice with DUP metadata), which grows
    /// with how fragmented the source is, not with its size; sharing shows in the data.
    fn btrfs_usage(&self) -> (u64, u64) {
        let dir = std::fs::File::open(self.images()).unwrap();
        rustix::fs::syncfs(&dir).unwrap();
        let out = Command::new("btrfs")
            .args(["filesystem", "df", "-b"])
            .arg(self.images())
            .output()
            .expect("btrfs (btrfs-progs) runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let used = |kind: &str| -> u64 {
            text.lines()
                .find(|l| l.starts_with(kind))
                .and_then(|l| l.rsplit("used=").next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {kind} line in `btrfs filesystem df`: {text}"))
        };
        (used("Data,"), used("Metadata,"))
    }

    /// What a reboot does to the pool: no mount, no loop device (the files stay).
    fn reboot_like(&mut self) {
        self.d.kill();
        drop(HostCleanup(self.dir.path().to_path_buf()));
        assert!(pool_mounts(&self.csp()).is_empty());
    }

    /// The pool is mounted once, over one loop device bound to its image, with no half-made
    /// image left; every image file in it has a record and every record its file.
    fn assert_consistent(&self) {
        let csp = self.csp();
        if csp.join("pool.json").exists() {
            assert_eq!(
                pool_mounts(&csp).len(),
                1,
                "the pool must be mounted exactly once"
            );
            assert_eq!(pool_loops(&csp).len(), 1, "one loop device for the pool");
            assert!(!csp.join("volbridge-pool.img.tmp").exists());
        }
        let vols: BTreeSet<String> = ids(&self.d.json(&["volume", "ls"]));
        let snaps: BTreeSet<String> = ids(&self.d.json(&["snapshot", "ls"]));
        assert_eq!(files(&self.images().join("volumes")), vols, "volume images");
        assert_eq!(
            files(&self.images().join("snapshots")),
            snaps,
            "snapshot images"
        );
    }
}

fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".img")
                .map(str::to_owned)
        })
        .collect()
}

fn pool_mounts(csp: &Path) -> Vec<String> {
    let target = csp.join("pool");
    let target = std::fs::canonicalize(&target).unwrap_or(target);
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(target.to_str().unwrap()))
        .map(str::to_owned)
        .collect()
}

fn pool_loops(csp: &Path) -> Vec<String> {
    let image = std::fs::canonicalize(csp.join("volbridge-pool.img")).unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            if Path::new(b.trim_end()) == image {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// A chunk of data that cannot be compressed or deduplicated, the same for a seed.
fn chunk(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `len` bytes of random data from offset 0, in 1 MiB chunks, and flushes.
fn fill(path: &Path, len: u64, seed: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    for i in 0..len / MIB {
        f.write_all_at(&chunk(seed + i, MIB as usize), i * MIB)
            .unwrap();
    }
    f.sync_all().unwrap();
}

/// The files are equal, byte for byte.
fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba);
        let m = read_full(&mut fb, &mut bb);
        if n != m || ba[..n] != bb[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..]).unwrap() {
            0 => break,
            n => done += n,
        }
    }
    done
}

/// The bytes of `file`'s extents that FIEMAP reports as shared with another file (the
/// local CSP's own FIEMAP reader, which also compares snapshots).
fn shared_bytes(file: &Path) -> u64 {
    let f = std::fs::File::open(file).unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
    volbridge_local_csp::fiemap::shared_bytes(&f)
        .unwrap_or_else(|e| panic!("FIEMAP of {}: {e}", file.display()))
}

fn timed(r: &Rig, args: &[&str]) -> Duration {
    let t = Instant::now();
    r.ok(args);
    t.elapsed()
}

/// The must-show of issue 12: 1 GiB written into a volume; its snapshot and its clones are
/// made in under a second each (a copy of 1 GiB takes several seconds on any disk CI has,
/// so the bound tells sharing from copying; speed itself is measured by `bench/pool.rs`),
/// the extents are shared, the pool grows by less than 1 %, and the data match.
fn snapshot_and_clone_share_extents(pool: &str) {
    // The two pools' runs take turns: one's 1 GiB of writes and byte-for-byte compare on
    // the other's timed calls made a snapshot take 1.3 s on a loaded CI host.
    static ONE_GIB_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_GIB_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(r) = rig(&format!("share-{pool}"), &["--csp-pool", pool]) else {
        return;
    };
    let p = r.pool();
    assert_eq!(p["reflink"], true, "{p}");
    assert_eq!(p["mode"], pool, "{p}");
    r.ok(&["volume", "create", "data", "--size", "2Gi"]);
    let dev = r.d.json(&["volume", "attach", "data"])["device"]
        .as_str()
        .unwrap()
        .to_owned();
    fill(Path::new(&dev), GIB, 1);
    let before = r.pool_used();
    let btrfs_before = (pool == "btrfs-image").then(|| r.btrfs_usage());
    let image = r.csp().join("volbridge-pool.img");
    let host_alloc =
        |f: &Path| std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(f).unwrap()) * 512;
    let filled = host_alloc(&image);

    let snap = timed(&r, &["snapshot", "create", "nightly", "--volume", "data"]);
    let clone = timed(
        &r,
        &["volume", "clone", "restored", "--from-snapshot", "nightly"],
    );
    let from_volume = timed(&r, &["volume", "clone", "copy", "--from-volume", "data"]);
    eprintln!("{pool}: snapshot {snap:?}, clone {clone:?}, clone from volume {from_volume:?}");
    // xfs (what `auto` picks) clones 1 GiB in milliseconds. btrfs's reflink costs about a
    // millisecond per extent item, and it writes a new item for every direct write the
    // loop device passes down, so 1 GiB written in 1 MiB pieces can take seconds under load
    // (docs/pool.md); there FIEMAP and the pool's growth below are the proof of sharing.
    let bound = if pool == "xfs-image" {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    for (what, t) in [
        ("snapshot", snap),
        ("clone", clone),
        ("clone from volume", from_volume),
    ] {
        assert!(t < bound, "{what} took {t:?}: not shared");
    }
    let grown = match btrfs_before {
        Some((data, meta)) => {
            let (data_now, meta_now) = r.btrfs_usage();
            eprintln!(
                "btrfs-image: metadata grew by {} bytes",
                meta_now.saturating_sub(meta)
            );
            data_now.saturating_sub(data)
        }
        None => r.pool_used().saturating_sub(before),
    };
    assert!(
        grown < GIB / 100,
        "the pool's data grew by {grown} bytes for a snapshot and two clones of 1 GiB"
    );
    // No temporary snapshot stays visible after the clone from a volume.
    let snaps = r.d.json(&["snapshot", "ls"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");

    let source = r.volume_image("data");
    for clone in ["restored", "copy"] {
        let img = r.volume_image(clone);
        let shared = shared_bytes(&img);
        assert!(
            shared >= GIB * 99 / 100,
            "{clone}: FIEMAP shows {shared} shared bytes of 1 GiB written"
        );
        assert!(same_content(&img, &source), "{clone} differs from data");
    }
    assert!(same_content(&r.snapshot_image("nightly"), &source));
    r.ok(&["volume", "detach", "data"]);
    r.ok(&["volume", "rm", "restored", "copy"]);
    r.ok(&["snapshot", "rm", "nightly"]);
    r.ok(&["volume", "rm", "data"]);
    r.assert_consistent();
    // The freed gigabyte goes back to the host filesystem (a trim after the deletes).
    let deadline = Instant::now() + Duration::from_secs(30);
    while host_alloc(&image) + GIB / 2 > filled {
        assert!(
            Instant::now() < deadline,
            "the pool image still holds {} bytes after the volumes went ({filled} when full)",
            host_alloc(&image)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn xfs_pool_snapshot_and_clones_of_1gib_share_extents() {
    snapshot_and_clone_share_extents("xfs-image");
}

#[test]
fn btrfs_pool_snapshot_and_clones_of_1gib_share_extents() {
    snapshot_and_clone_share_extents("btrfs-image");
}

#[test]
fn auto_picks_an_image_pool_where_the_data_dir_cannot_reflink_and_says_why() {
    let Some(r) = rig("auto", &[]) else { return };
    let p = r.pool();
    assert_eq!(p["reflink"], true, "{p}");
    if p["mode"] == "dir" {
        // The test dir's own filesystem reflinks (xfs or btrfs): the data dir is the pool.
        assert!(p["reason"].as_str().unwrap().contains("clones by reflink"));
        return;
    }
    assert_eq!(p["mode"], "xfs-image", "{p}");
    assert!(
        p["reason"].as_str().unwrap().contains("cannot reflink"),
        "{p}"
    );
    let table = r.ok(&["backend", "ls"]);
    assert!(table.contains("xfs-image (reflink)"), "{table}");
    assert!(table.contains("cannot reflink"), "{table}");
    let doctor = Command::new(BIN)
        .args(["doctor", "--output", "json"])
        .env("VOLBRIDGE_STATE_DIR", &r.d.state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(text.contains("local CSP pool"), "{text}");
    // Capacity counts the room the pool can still grow into, not only the image's size.
    let cap = &r.d.json(&["backend", "ls"])[0]["capacity"];
    let image_len = std::fs::metadata(r.csp().join("volbridge-pool.img"))
        .unwrap()
        .len();
    assert!(cap["total_bytes"].as_u64().unwrap() >= image_len, "{cap}");
}

#[test]
fn the_pool_is_mounted_again_after_a_stop_and_after_a_reboot() {
    let Some(mut r) = rig("remount", &[]) else {
        return;
    };
    if !r.csp().join("pool.json").exists() {
        return; // the data dir reflinks: no image pool to remount
    }
    r.ok(&["volume", "create", "data", "--size", "64Mi"]);
    let img = r.volume_image("data");
    fill(&img, 16 * MIB, 7);
    let want = std::fs::read(&img).unwrap();
    // A clean stop unmounts the idle pool and frees its loop device.
    r.d.stop();
    assert!(
        pool_mounts(&r.csp()).is_empty(),
        "an idle pool stays mounted"
    );
    assert!(pool_loops(&r.csp()).is_empty());
    r.d.restart();
    assert_eq!(std::fs::read(&img).unwrap(), want);
    r.assert_consistent();
    // A volume in use keeps the pool mounted across a stop.
    r.ok(&["volume", "attach", "data"]);
    r.d.stop();
    assert_eq!(pool_mounts(&r.csp()).len(), 1);
    r.d.restart();
    r.ok(&["volume", "detach", "data"]);
    r.assert_consistent();
    // A reboot: nothing mounted, nothing attached.
    r.reboot_like();
    r.d.restart();
    assert_eq!(std::fs::read(&img).unwrap(), want);
    r.assert_consistent();
}

/// A SIGTERM the moment the admin socket answers (a supervisor that stops what it just
/// started) is a graceful stop: the handlers are in place before any socket exists, so the
/// signal's default action never kills the daemon with its pool mounted.
#[test]
fn a_stop_right_after_the_start_is_graceful() {
    let Some(mut r) = rig("early-stop", &[]) else {
        return;
    };
    for round in 0..3 {
        r.d.stop();
        let log = r.d.log_text();
        assert_eq!(
            log.matches("volbridge stopped").count(),
            round + 1,
            "round {round}: not a graceful stop; log:\n{log}"
        );
        assert!(
            pool_mounts(&r.csp()).is_empty(),
            "round {round}: pool left mounted"
        );
        assert!(
            pool_loops(&r.csp()).is_empty(),
            "round {round}: loop device left"
        );
        r.d.restart();
    }
}

/// `volbridge serve` on the rig's state dir and socket with `extra` flags, not started.
fn serve(r: &Rig, extra: &[String]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--state-dir")
        .arg(&r.d.state)
        .arg("--admin-socket")
        .arg(&r.d.socket)
        .args(extra)
        .env_remove("VOLBRIDGE_CONFIG")
        .stdin(Stdio::null());
    cmd
}

/// Starts `volbridge serve` without waiting for it, and kills it after `delay`.
fn start_and_kill(r: &Rig, delay: Duration) {
    let mut child = serve(r, &r.d.extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn kill_9_during_pool_creation_is_finished_by_the_next_start() {
    let Some(mut r) = rig("kill-create", &["--csp-pool", "xfs-image"]) else {
        return;
    };
    r.d.kill();
    for delay_ms in [0u64, 5, 15, 30, 60, 100, 200] {
        drop(HostCleanup(r.dir.path().to_path_buf()));
        std::fs::remove_dir_all(r.csp()).unwrap();
        start_and_kill(&r, Duration::from_millis(delay_ms));
        r.d.restart();
        r.assert_consistent();
        r.ok(&["volume", "create", "v", "--size", "16Mi"]);
        let img = r.volume_image("v");
        fill(&img, 4 * MIB, delay_ms);
        r.d.kill();
    }
}

/// Runs a CLI command in the background, kills the daemon after `delay`, and restarts it.
fn crash_during(r: &mut Rig, args: &[&str], delay: Duration) {
    let mut cli = Command::new(BIN)
        .args(args)
        .env("VOLBRIDGE_SOCKET", &r.d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    r.d.kill();
    let _ = cli.wait();
    r.d.restart();
}

#[test]
fn kill_9_during_snapshots_and_clones_leaks_nothing_and_loses_nothing() {
    let Some(mut r) = rig("kill-copy", &[]) else {
        return;
    };
    r.ok(&["volume", "create", "data", "--size", "256Mi"]);
    let img = r.volume_image("data");
    fill(&img, 128 * MIB, 3);
    r.ok(&["snapshot", "create", "base", "--volume", "data"]);
    for (i, delay_ms) in [0u64, 2, 5, 10, 20, 40].into_iter().enumerate() {
        let delay = Duration::from_millis(delay_ms);
        let (s, c, cv) = (format!("s{i}"), format!("c{i}"), format!("cv{i}"));
        crash_during(
            &mut r,
            &["snapshot", "create", &s, "--volume", "data"],
            delay,
        );
        crash_during(
            &mut r,
            &["volume", "clone", &c, "--from-snapshot", "base"],
            delay,
        );
        crash_during(
            &mut r,
            &["volume", "clone", &cv, "--from-volume", "data"],
            delay,
        );
        r.assert_consistent();
        // Whatever exists is complete; a retry of what was cut off succeeds.
        r.ok(&["snapshot", "create", &s, "--volume", "data"]);
        r.ok(&["volume", "clone", &c, "--from-snapshot", "base"]);
        r.ok(&["volume", "clone", &cv, "--from-volume", "data"]);
        assert!(same_content(&r.snapshot_image(&s), &img), "{s}");
        for name in [&c, &cv] {
            assert!(same_content(&r.volume_image(name), &img), "{name}");
        }
    }
    r.assert_consistent();
}

#[test]
fn kill_9_during_pool_growth_leaves_a_pool_that_fills_its_image() {
    let dir_config = TempDir::new("grow-config");
    let config = dir_config.path().join("volbridge.toml");
    std::fs::write(
        &config,
        "[local_csp]\npool = \"xfs-image\"\npool_initial_size = \"1Gi\"\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let Some(mut r) = rig("kill-grow", &["--config", &config]) else {
        return;
    };
    r.ok(&["volume", "create", "data", "--size", "64Mi"]);
    let img = r.volume_image("data");
    fill(&img, 32 * MIB, 11);
    let want = std::fs::read(&img).unwrap();
    for (i, delay_ms) in [0u64, 10, 30, 60, 120, 250].into_iter().enumerate() {
        // A thick volume larger than the pool's free space makes it grow first.
        let name = format!("thick{i}");
        crash_during(
            &mut r,
            &[
                "volume",
                "create",
                &name,
                "--size",
                "1536Mi",
                "-o",
                "thick=true",
            ],
            Duration::from_millis(delay_ms),
        );
        r.assert_consistent();
        let image_len = std::fs::metadata(r.csp().join("volbridge-pool.img"))
            .unwrap()
            .len();
        let st = rustix::fs::statvfs(r.images()).unwrap();
        let fs_size = st.f_blocks * st.f_frsize;
        // The log and metadata take a few percent; an unfinished growth would leave the
        // filesystem at the old size, a third or less of the image.
        assert!(
            fs_size >= image_len / 100 * 85,
            "the pool's filesystem ({fs_size}) does not fill its image ({image_len})"
        );
        assert_eq!(std::fs::read(&img).unwrap(), want, "data changed");
        // The killed create may not have made the volume: removing nothing is exit 3.
        let (code, out, err) = run(&r.d, &["volume", "rm", &name]);
        assert!(code == 0 || code == 3, "volume rm {name}: {err}{out}");
    }
}

#[test]
fn a_data_dir_from_before_pools_keeps_serving_its_volumes() {
    let Some(mut r) = rig("legacy", &["--csp-pool", "dir"]) else {
        return;
    };
    r.ok(&["volume", "create", "old", "--size", "32Mi"]);
    let img = r.volume_image("old");
    assert!(img.starts_with(r.csp().join("volumes")));
    fill(&img, 8 * MIB, 5);
    let want = std::fs::read(&img).unwrap();
    r.d.stop();
    // The default (auto) keeps them where they are, and says so.
    r.d.extra.clear();
    r.d.restart();
    let p = r.pool();
    assert_eq!(p["mode"], "dir", "{p}");
    if p["reflink"] == false {
        assert!(
            p["reason"].as_str().unwrap().contains("from before pools"),
            "{p}"
        );
    }
    assert_eq!(std::fs::read(r.volume_image("old")).unwrap(), want);
    r.ok(&["snapshot", "create", "s", "--volume", "old"]);
    r.d.stop();
    // Asking for an image pool on it is refused with the way out.
    let out = serve(&r, &["--csp-pool".into(), "xfs-image".into()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a new data dir"), "{err}");
}

#[test]
fn over_commit_beyond_the_limit_is_refused_with_exit_9() {
    let dir_config = TempDir::new("overcommit-config");
    let config = dir_config.path().join("volbridge.toml");
    std::fs::write(&config, "[local_csp]\novercommit = 0.001\n").unwrap();
    let config = config.display().to_string();
    let Some(r) = rig("overcommit", &["--config", &config]) else {
        return;
    };
    let cap = &r.d.json(&["backend", "ls"])[0]["capacity"];
    let limit = cap["provisioned_limit_bytes"].as_u64().unwrap();
    assert!(limit > 0 && limit < 100 * GIB, "{cap}");
    let too_big = format!("{}Mi", limit / MIB + 64);
    let (code, _, err) = run(&r.d, &["volume", "create", "big", "--size", &too_big]);
    assert_eq!(code, 9, "{err}");
    assert!(err.contains("insufficient storage space"), "{err}");
    assert!(err.contains("overcommit"), "{err}");
    // The limit follows the disk the pool can use, so a small volume fits it on any machine.
    let small = (limit / MIB).clamp(1, 16);
    r.ok(&["volume", "create", "small", "--size", &format!("{small}Mi")]);
    let cap = &r.d.json(&["backend", "ls"])[0]["capacity"];
    assert_eq!(cap["provisioned_bytes"], small * MIB, "{cap}");
    let (code, _, err) = run(&r.d, &["volume", "expand", "small", "--size", &too_big]);
    assert_eq!(code, 9, "{err}");
    r.assert_consistent();
}
