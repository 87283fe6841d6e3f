//! Crash test: `kill -9` the daemon at random points inside mount (attach, mkfs, stage,
//! publish) and unmount (unpublish, unstage, detach), restart it, and check after the
//! start-up reconciliation that no loop device or mount leaked, every record is settled,
//! and the data written before the crashes reads back with the same checksum.
//!
//! `VOLBRIDGE_CRASH_ITERATIONS` (default 50) sets the number of rounds; each round kills
//! once inside a mount and once inside an unmount. The seed is printed so a failure can be
//! replayed with `VOLBRIDGE_CRASH_SEED`.

mod common;

use common::{
    loops_under, mounts_under, require_root_and_tools, run, Daemon, HostCleanup, TempDir,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn checksum(bytes: &[u8]) -> u64 {
    // FNV-1a: enough to tell any change in the test data.
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

fn cli_ok(d: &Daemon, args: &[&str]) {
    let (code, out, err) = run(d, args);
    assert_eq!(
        code,
        0,
        "volbridge {args:?}: {err}{out}\nlog tail:\n{}",
        tail(d)
    );
}

fn tail(d: &Daemon) -> String {
    let log = d.log_text();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Starts a CLI command, kills the daemon after `delay`, and restarts it (the start-up
/// reconciliation runs before the socket answers the next call).
fn crash_during(d: &mut Daemon, args: &[&str], delay: Duration) {
    let mut child = Command::new(common::BIN)
        .args(args)
        .env("VOLBRIDGE_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    d.kill();
    let _ = child.wait();
    d.crash_and_restart();
}

/// Time of one full CLI call, to spread the kill points over it.
fn timed(d: &Daemon, args: &[&str]) -> Duration {
    let start = Instant::now();
    cli_ok(d, args);
    start.elapsed()
}

/// After a restart: no record is half-done, and the kernel holds exactly what the records
/// say (a mounted volume: its loop, staging mount and target; nothing else).
fn check_settled(d: &Daemon, dir: &Path, round: usize) {
    let node = d.json(&["node"]);
    let volumes = node["volumes"].as_array().unwrap();
    for v in volumes {
        assert_eq!(
            v["phase"],
            "ready",
            "round {round}: unsettled record {v}\n{}",
            tail(d)
        );
    }
    let published: usize = volumes
        .iter()
        .map(|v| v["published_at"].as_array().unwrap().len())
        .sum();
    let loops = loops_under(dir);
    let mounts = mounts_under(dir);
    assert_eq!(
        loops.len(),
        volumes.len(),
        "round {round}: loops {loops:?} for records {volumes:?}\n{}",
        tail(d)
    );
    let staged_mounts = volumes.iter().filter(|v| v["block"] == false).count();
    assert_eq!(
        mounts.len(),
        staged_mounts + published,
        "round {round}: mounts {mounts:?} for records {volumes:?}\n{}",
        tail(d)
    );
}

#[test]
fn kill_9_inside_node_operations_leaks_nothing_and_loses_no_data() {
    if !require_root_and_tools("crash test") {
        return;
    }
    let rounds: usize = std::env::var("VOLBRIDGE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("VOLBRIDGE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test: {rounds} rounds, VOLBRIDGE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = TempDir::new("crash");
    let _cleanup = HostCleanup(dir.path().to_path_buf());
    let mut d = Daemon::start(dir.path(), &[]);
    let target = dir.path().join("data").display().to_string();

    cli_ok(&d, &["volume", "create", "data", "--size", "128Mi"]);
    cli_ok(&d, &["volume", "mount", "data", &target]);
    let payload: Vec<u8> = (0..(2u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let sum = checksum(&payload);
    std::fs::write(Path::new(&target).join("payload"), &payload).unwrap();
    Command::new("sync").status().unwrap();
    let unmount_time = timed(&d, &["volume", "unmount", "data", &target]);
    let mount_time = timed(&d, &["volume", "mount", "data", &target]);
    cli_ok(&d, &["volume", "unmount", "data", &target]);
    eprintln!("mount {mount_time:?}, unmount {unmount_time:?}");

    for round in 0..rounds {
        // Every fifth round crashes inside the first mount of a blank volume: mkfs runs.
        let blank = round % 5 == 4;
        let (name, path) = if blank {
            let name = format!("blank{round}");
            cli_ok(&d, &["volume", "create", &name, "--size", "64Mi"]);
            (name, dir.path().join("blank").display().to_string())
        } else {
            ("data".to_owned(), target.clone())
        };
        let span = if blank { mount_time * 3 } else { mount_time };
        let delay = Duration::from_micros(rng.below(span.as_micros() as u64 * 12 / 10));
        crash_during(&mut d, &["volume", "mount", &name, &path], delay);
        check_settled(&d, dir.path(), round);

        // Finish the mount: whatever the crash left, it completes (and never reformats a
        // finished filesystem).
        cli_ok(&d, &["volume", "mount", &name, &path]);
        if blank {
            std::fs::write(Path::new(&path).join("x"), b"x").unwrap();
        } else {
            let back = std::fs::read(Path::new(&path).join("payload")).unwrap();
            assert_eq!(checksum(&back), sum, "round {round}: data changed");
        }

        let delay = Duration::from_micros(rng.below(unmount_time.as_micros() as u64 * 12 / 10));
        crash_during(&mut d, &["volume", "unmount", &name, &path], delay);
        check_settled(&d, dir.path(), round);
        cli_ok(&d, &["volume", "unmount", &name, &path]);
        assert!(
            loops_under(dir.path()).is_empty(),
            "round {round}: {:?}",
            loops_under(dir.path())
        );
        assert!(
            mounts_under(dir.path()).is_empty(),
            "round {round}: {:?}",
            mounts_under(dir.path())
        );
        if blank {
            cli_ok(&d, &["volume", "rm", &name]);
        }
    }

    // The data survived every crash, and the volume is free to delete.
    cli_ok(&d, &["volume", "mount", "data", &target]);
    let back = std::fs::read(Path::new(&target).join("payload")).unwrap();
    assert_eq!(checksum(&back), sum);
    cli_ok(&d, &["volume", "unmount", "data", &target]);
    cli_ok(&d, &["volume", "rm", "data"]);
    assert!(loops_under(dir.path()).is_empty());
    assert!(mounts_under(dir.path()).is_empty());
    assert_eq!(d.json(&["status"])["pending_intents"], 0);
}
