//! What the VM lane's host-side tests share (`tests/vm_transports.rs`,
//! `tests/vm_reboot.rs`): one run of `scripts/vm-lane`, the verdict on whether it ran the
//! command at all, and the part of its output one check printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether this process is the test binary re-run inside the VM.
pub fn in_vm() -> bool {
    std::env::var("VOLBRIDGE_IN_VM").as_deref() == Ok("1")
}

pub struct VmRun {
    /// The lane's exit status (`None`: killed by a signal).
    pub status: Option<i32>,
    /// The guest's output (stdout and stderr merged by the lane).
    pub stdout: String,
    /// The lane's own messages: boot time, or why the VM did not start.
    pub stderr: String,
    pub took: Duration,
}

/// `scripts/vm-lane run --timeout SECS [--rwdir DIR] -- ARGS…` from the repository root.
pub fn run(timeout_secs: u32, rwdir: Option<&Path>, args: &[&std::ffi::OsStr]) -> VmRun {
    let start = Instant::now();
    let mut cmd = Command::new(repo().join("scripts/vm-lane"));
    cmd.arg("run")
        .args(["--timeout", &timeout_secs.to_string()]);
    if let Some(dir) = rwdir {
        cmd.arg("--rwdir").arg(dir);
    }
    let out = cmd
        .arg("--")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("running scripts/vm-lane");
    VmRun {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

/// Fails (or, with `VOLBRIDGE_ALLOW_SKIP=1`, skips: `false`) when the lane did not run the
/// command: 125 no boot, 124 timeout, 126 died.
pub fn ran(run: &VmRun, which: &str) -> bool {
    if !matches!(run.status, Some(124..=126) | None) {
        return true;
    }
    let why = format!(
        "the VM lane did not run {which} (scripts/vm-lane exit {:?} after {:.0?}):\n{}\n{}",
        run.status,
        run.took,
        run.stderr.trim_end(),
        run.stdout.trim_end()
    );
    if std::env::var("VOLBRIDGE_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("SKIPPED (VOLBRIDGE_ALLOW_SKIP=1): {why}");
        return false;
    }
    panic!("{why}\nset VOLBRIDGE_ALLOW_SKIP=1 to skip on a developer machine");
}

/// The part `name` of a run's output: from `== name` to its `vm-check` line.
pub fn part_of(run: &VmRun, name: &str) -> String {
    let start = format!("== {name}\n");
    let end = format!("vm-check {name}: ");
    let Some(from) = run.stdout.find(&start) else {
        panic!(
            "the VM's output has no part for '{name}' (lane exit {:?}):\n{}\n{}",
            run.status, run.stdout, run.stderr
        );
    };
    let rest = &run.stdout[from..];
    match rest.find(&end) {
        Some(i) => {
            let line_end = rest[i..].find('\n').map_or(rest.len(), |j| i + j);
            rest[..line_end].to_owned()
        }
        None => rest.to_owned(),
    }
}

// Guest side.

/// `sh -c SCRIPT`: its exit status and its stdout and stderr, in that order.
pub fn sh(script: &str) -> (i32, String) {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A progress line with the guest's uptime, which the host test shows.
pub fn step(what: &str) {
    let up = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let up = up.split_whitespace().next().unwrap_or("?");
    println!("  [{up:>7}s] {what}");
}

/// Asserts that part `name` of `run` passed, printing it either way.
pub fn assert_passed(run: &VmRun, name: &str, which: &str) {
    let part = part_of(run, name);
    let lane = run.stderr.lines().last().unwrap_or_default();
    eprintln!("{part}\n{lane}");
    assert!(
        part.contains(&format!("vm-check {name}: ok")),
        "{name} failed in {which}:\n{part}\n(the lane: {})",
        run.stderr.trim_end()
    );
}
