//! What every benchmark binary needs: percentiles, the machine's load, the clean-up of the
//! mounts and loop devices a run made under its scratch dir, and charts (`plot`). Each bench
//! includes it with `#[path = "support/mod.rs"] mod support;` and uses what it needs.
#![allow(dead_code)]

pub mod daemon;
pub mod plot;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Milliseconds with three decimals, for tables.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// The 1-minute load average, to print beside figures taken on a noisy machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

pub fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    volbridge::host::parse_mountinfo(&text)
        .into_iter()
        .filter(|m| m.target.starts_with(root))
        .map(|m| m.target)
        .collect()
}

/// Loop devices whose backing file is (or was, before deletion) under `root`.
pub fn loops_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
        if Path::new(backing).starts_with(root) {
            out.push(PathBuf::from(format!("/dev/{name}")));
        }
    }
    out
}

/// Best effort: unmounts everything mounted under `root` (last mounted first) and detaches
/// every loop device backed by a file under it. Returns what was left behind.
pub fn sweep(root: &Path) -> (usize, usize) {
    use rustix::mount::{unmount, UnmountFlags};
    for _ in 0..16 {
        let targets = mounts_under(root);
        if targets.is_empty() {
            break;
        }
        for t in targets.iter().rev() {
            if unmount(t, UnmountFlags::NOFOLLOW).is_err() {
                let _ = unmount(t, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH);
            }
        }
    }
    for device in loops_under(root) {
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&device)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    (mounts_under(root).len(), loops_under(root).len())
}

/// Removes a directory tree, but never while anything is mounted inside it.
pub fn remove_tree(dir: &Path, bench: &str) -> bool {
    let mounted = mounts_under(dir);
    if !mounted.is_empty() {
        eprintln!(
            "{bench} bench: leaving {} in place: {} is still mounted",
            dir.display(),
            mounted[0].display()
        );
        return false;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            eprintln!("{bench} bench: cannot remove {}: {e}", dir.display());
            false
        }
    }
}
