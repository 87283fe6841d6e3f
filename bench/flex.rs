//! `cargo bench --bench flex`: exec latency of the FlexVolume driver (`volbridge-flex`), the
//! way kubelet pays it: fork, exec, wait, output captured. A table, not a timed test.
//!
//! Rows, interleaved in one run so machine noise hits all of them alike:
//! 1. `exec /bin/true`: the baseline (the cost of any exec on this machine);
//! 2. `volbridge-flex init`: local, reads flex.toml, prints capabilities (goal: p50 < 3 ms);
//! 3. `volbridge-flex mount` of a pod dir the volume is already mounted at: options parsed,
//!    one admin API round trip over the unix socket, the engine finds the publication;
//! 4. `volbridge-flex unmount` of a dir never mounted (one `GET /v1/node`).
//!
//! Rows 3 and 4 need root and a daemon: the bench starts `volbridge serve` on a scratch state
//! dir with the embedded local CSP, mounts one 64 MiB volume, and removes everything at the
//! end (best effort on failure).
//!
//! The driver is built like the tests do: `cargo build --release -p volbridge-flex` into the
//! target dir of this bench (a no-op when fresh), or `VOLBRIDGE_FLEX_BIN`.
//!
//! Env: VOLBRIDGE_BENCH_DIR (scratch dir; default the system temp dir),
//! VOLBRIDGE_BENCH_RUNS (runs per row; default 400).

#[path = "support/mod.rs"]
mod support;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::percentile;

const VOLBRIDGE: &str = env!("CARGO_BIN_EXE_volbridge");
const WARMUP: usize = 20;
const INIT_GOAL: Duration = Duration::from_millis(3);

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

struct Row {
    name: &'static str,
    lat: Vec<Duration>,
    failures: usize,
}

impl Row {
    fn new(name: &'static str) -> Row {
        Row {
            name,
            lat: Vec::new(),
            failures: 0,
        }
    }

    fn p(&self, p: f64) -> Duration {
        let mut s = self.lat.clone();
        s.sort();
        percentile(&s, p)
    }
}

/// One exec with stdout and stderr captured; `Err` when it did not answer Success.
fn timed(cmd: &mut Command, expect: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains(expect) || !out.stderr.is_empty() {
        return Err(format!(
            "{:?}: {} {stdout} {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(took)
}

fn build_flex() -> PathBuf {
    if let Some(p) = std::env::var_os("VOLBRIDGE_FLEX_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let out_dir = Path::new(VOLBRIDGE).parent().expect("target dir");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args([
        "build",
        "--quiet",
        "--locked",
        "-p",
        "volbridge-flex",
        "--bin",
        "volbridge-flex",
    ]);
    match out_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => {}
    }
    if let Some(target) = out_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let status = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo to build volbridge-flex");
    assert!(status.success(), "cargo build -p volbridge-flex failed");
    out_dir.join("volbridge-flex")
}

/// The daemon and everything it mounted under the scratch dir, removed on drop.
struct Scratch {
    root: PathBuf,
    daemon: Option<Child>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &d.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && d.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        let root = self.root.display().to_string();
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut mounts: Vec<&str> = info
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| m.starts_with(&root))
                .collect();
            mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mounts {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
        if let Ok(entries) = std::fs::read_dir("/sys/block") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let backing =
                    std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
                if name.starts_with("loop") && backing.starts_with(&root) {
                    let _ = Command::new("losetup")
                        .args(["-d", &format!("/dev/{name}")])
                        .status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn main() {
    let runs: usize = std::env::var("VOLBRIDGE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let base = std::env::var_os("VOLBRIDGE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let flex = build_flex();
    let mut scratch = Scratch {
        root: base.join(format!("vbbench-flex-{}", std::process::id())),
        daemon: None,
    };
    let root = scratch.root.clone();
    std::fs::create_dir_all(&root).unwrap();
    let socket = root.join("admin.sock");
    let config = root.join("flex.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"{}\"\nlog_file = \"{}\"\n",
            socket.display(),
            root.join("flex.log").display()
        ),
    )
    .unwrap();
    let driver = |args: &[&str]| {
        let mut c = Command::new(&flex);
        c.args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("VOLBRIDGE_FLEX_CONFIG", &config);
        c
    };

    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let pod = root.join("kubelet/pods/bench/volumes/volbridge~csp/data");
    let pod_s = pod.display().to_string();
    let never = root.join("kubelet/pods/never/volumes/volbridge~csp/data");
    let never_s = never.display().to_string();
    let opts = r#"{"autoCreate":"true","kubernetes.io/fsType":"","kubernetes.io/pod.name":"bench-0","kubernetes.io/pod.namespace":"default","kubernetes.io/pod.uid":"bench","kubernetes.io/pvOrVolumeName":"pv-bench","kubernetes.io/readwrite":"rw","kubernetes.io/serviceAccount.name":"default","size":"64Mi"}"#;
    let mut with_daemon = false;
    if is_root {
        let log = std::fs::File::create(root.join("daemon.log")).unwrap();
        let child = Command::new(VOLBRIDGE)
            .arg("serve")
            .arg("--state-dir")
            .arg(root.join("state"))
            .arg("--admin-socket")
            .arg(&socket)
            .env("RUST_LOG", "warn")
            .env_remove("VOLBRIDGE_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn volbridge serve");
        scratch.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "volbridge serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::create_dir_all(&never).unwrap();
        timed(&mut driver(&["mount", &pod_s, opts]), "Success").expect("first mount");
        with_daemon = true;
    } else {
        eprintln!("flex bench: not root; the mount and unmount rows need root and are skipped");
    }

    let mut rows = [
        Row::new("exec /bin/true (baseline)"),
        Row::new("volbridge-flex init"),
        Row::new("volbridge-flex mount, already mounted"),
        Row::new("volbridge-flex unmount, never mounted"),
    ];
    for i in 0..WARMUP + runs {
        let mut cmds = vec![
            (0, Command::new("/bin/true"), ""),
            (1, driver(&["init"]), "Success"),
        ];
        if with_daemon {
            cmds.push((2, driver(&["mount", &pod_s, opts]), "Success"));
            cmds.push((3, driver(&["unmount", &never_s]), "Success"));
        }
        for (row, mut cmd, expect) in cmds {
            match timed(&mut cmd, expect) {
                Ok(d) if i >= WARMUP => rows[row].lat.push(d),
                Ok(_) => {}
                Err(e) => {
                    rows[row].failures += 1;
                    if rows[row].failures <= 3 {
                        eprintln!("flex bench: {e}");
                    }
                }
            }
        }
    }
    if with_daemon {
        timed(&mut driver(&["unmount", &pod_s]), "Success").expect("final unmount");
    }
    drop(scratch);

    let baseline = rows[0].p(0.5);
    println!();
    println!("FlexVolume driver exec latency: {runs} runs per row, interleaved, after {WARMUP} warm-up rounds");
    println!(
        "{:<40} {:>10} {:>10} {:>12} {:>9}",
        "case", "p50", "p99", "p50/baseline", "failures"
    );
    for r in &rows {
        if r.lat.is_empty() {
            println!("{:<40} {:>10}", r.name, "skipped");
            continue;
        }
        println!(
            "{:<40} {:>10} {:>10} {:>11.2}× {:>9}",
            r.name,
            ms(r.p(0.5)),
            ms(r.p(0.99)),
            r.p(0.5).as_secs_f64() / baseline.as_secs_f64().max(1e-9),
            r.failures
        );
    }
    let init = rows[1].p(0.5);
    println!();
    println!(
        "goal: init p50 < {} — {} ({})",
        ms(INIT_GOAL),
        if init < INIT_GOAL { "met" } else { "NOT met" },
        ms(init)
    );
}
