//! Test support: a real `volbridge serve` on a temp state dir and socket, and the CLI.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod slow_csp;

pub const BIN: &str = env!("CARGO_BIN_EXE_volbridge");

/// A scratch directory removed on drop (kept when `VOLBRIDGE_KEEP_TEST_DIRS=1`).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let base = std::env::var_os("VOLBRIDGE_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!(
            "vbtest-{tag}-{}-{:x}",
            std::process::id(),
            rand_u32()
        ));
        std::fs::create_dir_all(&dir).expect("create test dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("VOLBRIDGE_KEEP_TEST_DIRS").is_none() {
            // A daemon killed by the test leaves its CSP's image pool mounted (as a crash
            // would, for the next start to find): release it before removing the files.
            drop(HostCleanup(self.0.clone()));
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Where a local CSP data dir keeps `volumes/`, `snapshots/` and `retained/`: its image
/// pool's mount when it has one (docs/pool.md), else the data dir itself.
pub fn csp_images(data_dir: &Path) -> PathBuf {
    if data_dir.join("pool.json").exists() {
        data_dir.join("pool")
    } else {
        data_dir.to_path_buf()
    }
}

/// The local CSP's image pool: its image file, and its mount next to it. Not a volume, so
/// the leak checks below leave it out.
fn is_pool_image(backing: &str) -> bool {
    Path::new(backing).file_name() == Some(volbridge_local_csp::POOL_IMAGE.as_ref())
}

fn is_pool_mount(target: &str) -> bool {
    let t = Path::new(target);
    t.file_name() == Some("pool".as_ref())
        && t.parent()
            .is_some_and(|d| d.join(volbridge_local_csp::POOL_IMAGE).exists())
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(7)
}

/// A running daemon; killed (SIGKILL) on drop if still running.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
    /// A program the daemon runs under (`setpriv …`): it execs the daemon, so the pid is
    /// the daemon's.
    pub wrapper: Vec<String>,
}

impl Daemon {
    pub fn start(dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with_env(dir, extra, &[])
    }

    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::launch(dir, extra, env, &[])
    }

    /// A daemon run under `wrapper` (`setpriv …`, which execs the command line after it).
    pub fn start_wrapped(dir: &Path, extra: &[&str], wrapper: &[&str]) -> Daemon {
        Daemon::launch(dir, extra, &[], wrapper)
    }

    fn launch(dir: &Path, extra: &[&str], env: &[(&str, &str)], wrapper: &[&str]) -> Daemon {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        let mut d = Daemon {
            child: None,
            dir: dir.to_path_buf(),
            socket: dir.join("admin.sock"),
            state: dir.join("state"),
            log: dir.join("daemon.log"),
            extra: owned(extra),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            wrapper: owned(wrapper),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = command
            .arg("serve")
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--admin-socket")
            .arg(&self.socket)
            .args(&self.extra)
            .env(
                "RUST_LOG",
                std::env::var("VOLBRIDGE_TEST_LOG").unwrap_or_else(|_| "trace".into()),
            )
            .env_remove("VOLBRIDGE_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn volbridge serve");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "volbridge serve exited with {status}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "volbridge serve did not open {} within 30 s; log:\n{}",
            self.socket.display(),
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("volbridge serve did not stop within 20 s of SIGTERM");
        }
    }

    /// SIGKILL: the crash path.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Runs `volbridge <args>` against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("VOLBRIDGE_SOCKET", &self.socket)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run volbridge")
    }

    /// Runs a CLI command with `--output json` that must succeed; returns its JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "volbridge {args:?} failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "volbridge {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// A raw HTTP/1.1 request on the admin socket: (status, body).
    pub fn raw(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        raw_http(&self.socket, method, path, body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn raw_http(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let s = UnixStream::connect(socket).expect("connect admin socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    exchange(s, method, path, body)
}

/// The same over TCP (the `--metrics-listen` listener).
pub fn raw_tcp(port: u16, method: &str, path: &str) -> (u16, String) {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect over TCP");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    exchange(s, method, path, None)
}

/// One HTTP/1.1 request with `Connection: close`; the status and the body.
fn exchange(
    mut s: impl Read + Write,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: volbridge\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A TCP port nobody listens on right now, below the kernel's ephemeral range: a port the
/// kernel hands to a `:0` bind (another test's embedded CSP, any client socket) could be
/// taken between this answer and the daemon's bind.
pub fn free_port() -> u16 {
    let below = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let span = below.saturating_sub(10_000).max(1);
    for _ in 0..1000 {
        let port = 10_000 + (rand_u64() % u64::from(span)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port between 10000 and {below}");
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).unwrap();
    u64::from_ne_bytes(b)
}

/// Whether this test may touch the kernel (root, loop devices, mkfs). In CI it must: a
/// missing prerequisite fails the test with a message. A developer can set
/// `VOLBRIDGE_ALLOW_SKIP=1` to skip instead.
pub fn require_root_and_tools(test: &str) -> bool {
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("root".to_owned());
    }
    if !Path::new("/dev/loop-control").exists() {
        missing.push("/dev/loop-control".to_owned());
    }
    // mkfs.xfs and xfs_growfs: on this host's ext4 the daemon's default pool is an xfs
    // image; without them it quietly falls back to copying, and tests that expect reflink
    // would fail on their data instead of naming the package.
    for tool in [
        "blkid",
        "mkfs.ext4",
        "e2fsck",
        "resize2fs",
        "losetup",
        "mkfs.xfs",
        "xfs_growfs",
    ] {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        if !found {
            missing.push(tool.to_owned());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{test} needs {} (run scripts/test as root: it installs the tools)",
        missing.join(", ")
    );
    if std::env::var("VOLBRIDGE_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {why}");
        return false;
    }
    panic!("{why}; set VOLBRIDGE_ALLOW_SKIP=1 to skip on a developer machine");
}

/// Loop devices whose backing file lies under `dir`: (device, backing file).
pub fn loops_under(dir: &Path) -> Vec<(String, String)> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut all = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            all.push((format!("/dev/{name}"), b.trim_end().to_owned()));
        }
    }
    // Loops over files under `dir`, and loops over those loops (read-only block views).
    let mut out: Vec<(String, String)> = all
        .iter()
        .filter(|(_, b)| Path::new(b).starts_with(&dir) && !is_pool_image(b))
        .cloned()
        .collect();
    loop {
        let more: Vec<(String, String)> = all
            .iter()
            .filter(|l| !out.contains(l) && out.iter().any(|(d, _)| *d == l.1))
            .cloned()
            .collect();
        if more.is_empty() {
            return out;
        }
        out.extend(more);
    }
}

/// Mount points under `dir` (from /proc/self/mountinfo), the CSP's pool left out.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    all_mounts_under(dir)
        .into_iter()
        .filter(|t| !is_pool_mount(t))
        .collect()
}

fn all_mounts_under(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|t| Path::new(t).starts_with(&dir))
        .collect()
}

/// Loop devices over files under `dir`, the pool's own included.
fn all_loops_under(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            let b = b.trim_end();
            if Path::new(b.strip_suffix(" (deleted)").unwrap_or(b)).starts_with(&dir) {
                out.push(format!("/dev/{name}"));
            }
        }
    }
    out
}

/// Unmounts and detaches whatever a failed test left under `dir`, so one failure does not
/// leak into the machine.
pub struct HostCleanup(pub PathBuf);

impl Drop for HostCleanup {
    fn drop(&mut self) {
        // The loops are listed while their files are still reachable: after the pool is
        // unmounted, a volume loop's backing file no longer reads as a path under `dir`.
        // Volume loops go first (views over them first of all), then the pool's own.
        let mut loops: Vec<String> = loops_under(&self.0).into_iter().map(|(d, _)| d).collect();
        loops.reverse();
        for dev in all_loops_under(&self.0) {
            if !loops.contains(&dev) {
                loops.push(dev);
            }
        }
        let mut mounts = all_mounts_under(&self.0);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        for dev in loops {
            let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        }
    }
}

/// Runs the CLI and returns (exit code, stdout, stderr).
pub fn run(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let out = d.cli(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The first ```sh block of README.md after the line that starts with `marker`: the README's
/// own words, so a test that runs them keeps the README true.
pub fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let after = readme
        .lines()
        .skip_while(|l| !l.starts_with(marker))
        .skip_while(|l| l.trim() != "```sh")
        .skip(1);
    let block: Vec<&str> = after.take_while(|l| l.trim() != "```").collect();
    assert!(
        !block.is_empty(),
        "README.md has no ```sh block after a line starting with {marker:?}"
    );
    block.join("\n") + "\n"
}

/// Runs a README block with bash (`set -euo pipefail`, each command echoed), the
/// `volbridge` under test first on PATH and talking to `d`: (exit code, stdout, stderr).
pub fn run_script(d: &Daemon, script: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -xeuo pipefail\n{script}"))
        .env("PATH", path)
        .env("VOLBRIDGE_SOCKET", &d.socket)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tool the test needs: in CI it must be there (scripts/test installs it); a developer may
/// set `VOLBRIDGE_ALLOW_SKIP=1` to skip instead.
pub fn require_tool(test: &str, tool: &str, package: &str) -> bool {
    let found = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .any(|d| Path::new(d).join(tool).exists());
    if found {
        return true;
    }
    let why = format!("{test} needs {tool} (Debian package {package}; scripts/test installs it)");
    if std::env::var("VOLBRIDGE_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {why}");
        return false;
    }
    panic!("{why}; set VOLBRIDGE_ALLOW_SKIP=1 to skip on a developer machine");
}

/// Runs `args` (with `-O json`) again while it exits 8 ("still running"), each time with the
/// sentence that says so, up to `tries` times; the JSON of the run that finished (exit 0).
pub fn rerun_while_still_running(d: &Daemon, args: &[&str], tries: usize) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-O", "json"]);
    for _ in 0..tries {
        let again = d.cli(&all);
        match again.status.code() {
            Some(0) => return serde_json::from_slice(&again.stdout).unwrap(),
            Some(8) => {
                let err = String::from_utf8_lossy(&again.stderr);
                assert!(
                    err.trim_end()
                        .ends_with("run the same command again to keep waiting"),
                    "{err}"
                );
            }
            other => panic!("exit {other:?}: {}", String::from_utf8_lossy(&again.stderr)),
        }
    }
    panic!("volbridge {args:?} did not finish within {tries} reruns");
}
