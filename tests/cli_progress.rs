//! Issue 16, "Progress": what the CLI shows while it waits for a copy on a `dir` pool
//! (background copies, docs/copy-semantics.md): a moving bar on a terminal (driven through a
//! pty with util-linux's `script`), one final line otherwise, exit code 8 with "run the same
//! command again to keep waiting" past `limits.copy_wait_seconds`, and no temporary
//! snapshot in `snapshot ls` at any time.

mod common;

use common::{Daemon, TempDir, BIN};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const MI: u64 = 1 << 20;

/// A daemon on a `dir` pool with volume `data` holding `mib` MiB of data (no holes).
fn daemon_with_data(dir: &TempDir, copy_wait: u64, mib: u64) -> Daemon {
    let config = dir.path().join("volbridge.toml");
    std::fs::write(
        &config,
        format!("[limits]\ncopy_wait_seconds = {copy_wait}\n\n[local_csp]\npool = \"dir\"\n"),
    )
    .unwrap();
    let daemon = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let created = daemon.json(&["volume", "create", "data", "--size", "1Gi"]);
    let id = created["id"].as_str().unwrap();
    let img = daemon.state.join(format!("csp/volumes/{id}.img"));
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let chunk: Vec<u8> = (0..MI as u32).map(|i| (i % 251) as u8 | 1).collect();
    for i in 0..mib {
        f.write_all_at(&chunk, i * MI).unwrap();
    }
    f.sync_all().unwrap();
    daemon
}

/// Runs `volbridge ARGS` on a pty (`script`), returning (exit code, the terminal's bytes).
fn on_a_terminal(daemon: &Daemon, args: &str) -> (i32, String) {
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &format!("{BIN} {args}"), "/dev/null"])
        .env("VOLBRIDGE_SOCKET", &daemon.socket)
        .env("TERM", "xterm")
        .env("COLUMNS", "160")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The byte counts the bar showed (`120.00 MiB/384.00 MiB`), in order.
fn bar_counts(terminal: &str) -> Vec<String> {
    terminal
        .split(['\r', '\n'])
        .filter(|l| l.contains('[') && l.contains("ETA"))
        .filter_map(|l| {
            let after = l.split("] ").nth(1)?;
            Some(after.split(" (").next()?.to_owned())
        })
        .collect()
}

/// Polls `snapshot ls` until `done`; panics when a temporary snapshot shows.
fn watch_snapshot_ls(daemon: &Daemon, done: Arc<AtomicBool>) -> usize {
    let mut looks = 0;
    while !done.load(Ordering::Relaxed) {
        let list = daemon.json(&["snapshot", "ls"]);
        let shown: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect();
        assert!(
            shown.iter().all(|n| !n.starts_with("snap-for-clone-")),
            "a temporary snapshot is visible: {shown:?}"
        );
        looks += 1;
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    looks
}

#[test]
fn a_long_clone_on_a_terminal_draws_a_moving_bar() {
    if !common::require_tool("cli_progress", "script", "bsdutils") {
        return;
    }
    let dir = TempDir::new("progress-tty");
    let daemon = daemon_with_data(&dir, 300, 768);
    let done = Arc::new(AtomicBool::new(false));
    let (code, terminal) = std::thread::scope(|s| {
        let watcher = s.spawn(|| watch_snapshot_ls(&daemon, done.clone()));
        let r = on_a_terminal(&daemon, "volume clone copy --from-volume data");
        done.store(true, Ordering::Relaxed);
        assert!(watcher.join().unwrap() > 0);
        r
    });
    assert_eq!(code, 0, "{terminal}");
    let counts = bar_counts(&terminal);
    eprintln!("bar counts: {counts:?}");
    let distinct: BTreeSet<&String> = counts.iter().filter(|c| !c.starts_with("0 B/")).collect();
    assert!(
        distinct.len() >= 2,
        "the bar should move (two byte counts above 0 at least): {counts:?}\n{terminal:?}"
    );
    assert!(
        terminal.contains("snapshotting 'data' for 'copy'")
            || terminal.contains("copying into 'copy'"),
        "{terminal:?}"
    );
    assert!(terminal.contains("ETA"), "{terminal:?}");
    // The table follows the bar on stdout; nothing temporary is left.
    assert!(terminal.contains("copy"), "{terminal}");
    assert_eq!(daemon.json(&["snapshot", "ls"]), serde_json::json!([]));
}

#[test]
fn a_long_clone_off_a_terminal_prints_one_final_line_and_pure_json() {
    let dir = TempDir::new("progress-pipe");
    let daemon = daemon_with_data(&dir, 300, 384);
    let done = Arc::new(AtomicBool::new(false));
    let out = std::thread::scope(|s| {
        let watcher = s.spawn(|| watch_snapshot_ls(&daemon, done.clone()));
        let out = daemon.cli(&[
            "volume",
            "clone",
            "copy",
            "--from-volume",
            "data",
            "-O",
            "json",
        ]);
        done.store(true, Ordering::Relaxed);
        watcher.join().unwrap();
        out
    });
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is pure JSON");
    assert_eq!(v["status"], "ready", "{v}");
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "{stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one final line: {stderr:?}");
    assert!(
        lines[0].starts_with("cloning 'copy' from volume 'data': copied ")
            && lines[0].contains(" in ")
            && lines[0].ends_with("/s)"),
        "{stderr:?}"
    );
    // A snapshot created in the table format off a terminal: the same one line.
    let out = daemon.cli(&["snapshot", "create", "s", "--volume", "data"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    assert!(stderr.lines().count() <= 1, "{stderr:?}");
    if let Some(line) = stderr.lines().next() {
        assert!(
            line.starts_with("snapshotting 'data' as 's': copied "),
            "{stderr:?}"
        );
    }
    let names: Vec<Value> = daemon.json(&["snapshot", "ls"]).as_array().unwrap().clone();
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(names[0]["name"], "s");
}

#[test]
fn past_the_wait_the_clone_exits_8_and_the_same_command_keeps_waiting() {
    let dir = TempDir::new("progress-wait");
    let daemon = daemon_with_data(&dir, 1, 512);
    let first = daemon.cli(&["volume", "clone", "copy", "--from-volume", "data"]);
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    assert_eq!(
        first.status.code(),
        Some(8),
        "timed out, not unavailable: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("volbridge: ")
            && last.contains("copy")
            && last.contains("still being copied"),
        "the error names the clone and says why: {stderr}"
    );
    assert!(
        last.ends_with("run the same command again to keep waiting"),
        "{stderr}"
    );
    let id = daemon.json(&["volume", "inspect", "copy"])["id"].clone();
    assert_eq!(daemon.json(&["snapshot", "ls"]), serde_json::json!([]));
    let finished = common::rerun_while_still_running(
        &daemon,
        &["volume", "clone", "copy", "--from-volume", "data"],
        120,
    );
    assert_eq!(finished["id"], id, "the rerun waited for the same clone");
    assert_eq!(finished["status"], "ready");
    assert_eq!(daemon.json(&["snapshot", "ls"]), serde_json::json!([]));
}
