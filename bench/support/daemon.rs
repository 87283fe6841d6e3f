//! A `volbridge serve` process for the benches that drive a real daemon (csi, scale): a
//! scratch state dir, the CSI endpoint `unix://<dir>/csi.sock`, the embedded local CSP on
//! `--csp-listen 127.0.0.1:<free port>` (the default backend), an empty config file, and
//! `RUST_LOG=warn` (VOLBRIDGE_BENCH_LOG overrides it; the log is `<dir>/daemon.log`).
//! Plus what the benches read about it: CPU ticks and `/proc/<pid>/status` values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The running daemon's pid, for panic hooks and Ctrl-C paths (0: none running).
static DAEMON_PID: AtomicU32 = AtomicU32::new(0);

/// SIGKILLs the daemon if one is still running (panic and second Ctrl-C paths), then
/// waits a moment for the kernel to release what it held.
pub fn kill_running() {
    let pid = DAEMON_PID.swap(0, Ordering::Relaxed);
    if pid != 0 {
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

pub struct Daemon {
    child: Child,
    pub pid: u32,
    pub state: PathBuf,
    pub admin_socket: PathBuf,
    pub csi_endpoint: String,
    pub csp_addr: SocketAddr,
    pub log: PathBuf,
}

/// A free loopback port (bound, read, released: the daemon binds it right after).
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free loopback port: {e}"))
}

impl Daemon {
    /// Starts the daemon under `root` and waits until its admin socket answers (CSI binds
    /// before the admin socket, so CSI answers too).
    pub fn start(root: &Path) -> Result<Daemon, String> {
        Daemon::start_with(root, &[])
    }

    /// The same, with more `serve` arguments (a Docker socket, a pool mode…).
    pub fn start_with(root: &Path, extra: &[&str]) -> Result<Daemon, String> {
        let state = root.join("state");
        let admin_socket = root.join("admin.sock");
        let csi_endpoint = format!("unix://{}", root.join("csi.sock").display());
        let csp_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse().unwrap();
        let log = root.join("daemon.log");
        // Our own config file: a stray /etc/volbridge/volbridge.toml must not change the run.
        // No over-commit limit: thousands of 1 GiB thin volumes on a development disk are
        // far past any sane limit, and these benches measure the control path.
        let config = root.join("volbridge.toml");
        std::fs::write(&config, "[local_csp]\novercommit = 0\n")
            .map_err(|e| format!("{}: {e}", config.display()))?;
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(env!("CARGO_BIN_EXE_volbridge"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .arg("--admin-socket")
            .arg(&admin_socket)
            .arg("--csi-endpoint")
            .arg(&csi_endpoint)
            .arg("--csp-listen")
            .arg(csp_addr.to_string())
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("VOLBRIDGE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("VOLBRIDGE_CONFIG")
            .env_remove("VOLBRIDGE_STATE_DIR")
            .env_remove("VOLBRIDGE_ADMIN_SOCKET")
            .env_remove("VOLBRIDGE_CSP_PASSWORD")
            .env_remove("CSI_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", env!("CARGO_BIN_EXE_volbridge")))?;
        let pid = child.id();
        DAEMON_PID.store(pid, Ordering::Relaxed);
        let mut d = Daemon {
            child,
            pid,
            state,
            admin_socket,
            csi_endpoint,
            csp_addr,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&d.admin_socket).is_err() {
            if let Ok(Some(status)) = d.child.try_wait() {
                DAEMON_PID.store(0, Ordering::Relaxed);
                return Err(format!(
                    "volbridge serve exited with {status}; log:\n{}",
                    d.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "volbridge serve did not open {} within 30 s; log:\n{}",
                    d.admin_socket.display(),
                    d.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    /// Runs `volbridge <args>` against this daemon; its stdout, or a panic with stderr.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_volbridge"))
            .args(args)
            .env("VOLBRIDGE_SOCKET", &self.admin_socket)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run volbridge");
        assert!(
            out.status.success(),
            "volbridge {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The embedded CSP's password, generated at the first start.
    pub fn csp_password(&self) -> Result<String, String> {
        let file = self.state.join("local-csp.password");
        std::fs::read_to_string(&file)
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("cannot read {}: {e}", file.display()))
    }

    /// utime + stime of every thread of the daemon, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        proc_cpu_ticks(&self.pid.to_string())
    }

    /// A `/proc/<pid>/status` value in KiB (VmRSS, VmHWM, RssAnon, …).
    pub fn status_kib(&self, key: &str) -> u64 {
        self.status_value(key)
            .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The thread count from `/proc/<pid>/status`.
    pub fn threads(&self) -> u64 {
        self.status_value("Threads")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn status_value(&self, key: &str) -> Option<String> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| Some(l.strip_prefix(key)?.strip_prefix(':')?.trim().to_owned()))
    }

    /// (label, VmRSS, RssAnon) now.
    pub fn memory(&self, label: &'static str) -> (&'static str, u64, u64) {
        (label, self.status_kib("VmRSS"), self.status_kib("RssAnon"))
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then up to 15 s for a clean stop, then SIGKILL.
    pub fn stop(&mut self) -> String {
        DAEMON_PID.store(0, Ordering::Relaxed);
        if !self.alive() {
            return format!("had already exited: {:?}", self.child.try_wait());
        }
        if let Some(p) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return format!("stopped on SIGTERM ({status})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        "did not stop within 15 s of SIGTERM; killed".to_owned()
    }
}

/// utime + stime of every thread of a process (`self` or a pid), in clock ticks.
pub fn proc_cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0) };
    field(14) + field(15)
}

pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}
