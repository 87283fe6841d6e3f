//! A kubelet / kube-controller-manager emulator for the FlexVolume driver
//! (`tests/flex_contract.rs`, flexvolume.md §14).
//!
//! It installs the real `volbridge-flex` with `volbridge flex install` into a temporary
//! plugin dir, runs it with the exact argv kubelet and KCM use, builds options the way they
//! do (a Go `map[string]string` marshalled: sorted keys, `\u003c`-style escapes, user options
//! last), judges the output like kubelet (stdout and stderr combined must be one JSON value,
//! keys case-insensitive, capabilities merged over kubelet's defaults, "Not supported"
//! remembered until the next probe, Success with a non-zero exit flagged as a driver bug),
//! and applies kubelet's own guards (mkdir 0750 before mount, skip when the target already is
//! a mount point, rmdir after unmount, skip unmountdevice when not a mount point).
//!
//! On top of what kubelet checks, every invocation must leave stderr empty and print exactly
//! one JSON object followed by `\n`, with exit 0 for Success / Not supported and 1 for Failure.
//!
//! Where the driver binary comes from: `volbridge-flex` is another package of the workspace,
//! so `CARGO_BIN_EXE_volbridge-flex` does not exist here. It is built with
//! `cargo build -p volbridge-flex` into the same target dir and profile as the `volbridge`
//! under test (a no-op when `cargo test --workspace` built it already), or taken from
//! `VOLBRIDGE_FLEX_BIN` when set.
#![allow(dead_code)]

use crate::common::{self, Daemon, HostCleanup, TempDir};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const VENDOR: &str = "volbridge";
pub const DRIVER: &str = "csp";
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

// ---------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------

/// The `volbridge-flex` built for this test run (see the module doc).
pub fn flex_binary() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build_flex) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn build_flex() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("VOLBRIDGE_FLEX_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("VOLBRIDGE_FLEX_BIN={} is not a file", p.display()))
        };
    }
    let volbridge = Path::new(common::BIN);
    let out_dir = volbridge
        .parent()
        .ok_or("CARGO_BIN_EXE_volbridge has no parent directory")?;
    let profile = out_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("cannot tell the cargo profile from CARGO_BIN_EXE_volbridge")?;
    let target_dir = out_dir
        .parent()
        .ok_or("cannot tell the target dir from CARGO_BIN_EXE_volbridge")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "--quiet",
        "--locked",
        "-p",
        "volbridge-flex",
        "--bin",
        "volbridge-flex",
    ]);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run {} to build volbridge-flex ({e}); build it with `cargo build -p volbridge-flex` or set VOLBRIDGE_FLEX_BIN",
                Path::new(&cargo).display()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "`cargo build -p volbridge-flex` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let bin = out_dir.join("volbridge-flex");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo built volbridge-flex but {} is missing",
            bin.display()
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Options, as kubelet and KCM build them
// ---------------------------------------------------------------------------------------

/// The options of one call: kubelet's keys plus the user's `flexVolume.options`.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    k8s: BTreeMap<String, String>,
    user: BTreeMap<String, String>,
}

impl Opts {
    /// The keys every call carries: fsType, readwrite, pvOrVolumeName.
    pub fn new(pv: &str) -> Opts {
        let mut o = Opts::default();
        o.k8s.insert("kubernetes.io/fsType".into(), String::new());
        o.k8s.insert("kubernetes.io/readwrite".into(), "rw".into());
        o.k8s
            .insert("kubernetes.io/pvOrVolumeName".into(), pv.into());
        o
    }

    pub fn fs_type(mut self, fs: &str) -> Opts {
        self.k8s.insert("kubernetes.io/fsType".into(), fs.into());
        self
    }

    pub fn read_only(mut self) -> Opts {
        self.k8s
            .insert("kubernetes.io/readwrite".into(), "ro".into());
        self
    }

    pub fn without(mut self, key: &str) -> Opts {
        self.k8s.remove(key);
        self
    }

    /// `mount` only: the pod's metadata.
    pub fn pod(mut self, name: &str, namespace: &str, uid: &str) -> Opts {
        for (k, v) in [
            ("kubernetes.io/pod.name", name),
            ("kubernetes.io/pod.namespace", namespace),
            ("kubernetes.io/pod.uid", uid),
            ("kubernetes.io/serviceAccount.name", "default"),
        ] {
            self.k8s.insert(k.into(), v.into());
        }
        self
    }

    /// `mount` only: the pod's fsGroup (`legacy`: the pre-1.15 key).
    pub fn fs_group(mut self, gid: u32, legacy: bool) -> Opts {
        let key = if legacy {
            "kubernetes.io/fsGroup"
        } else {
            "kubernetes.io/mounterArgs.FsGroup"
        };
        self.k8s.insert(key.into(), gid.to_string());
        self
    }

    /// `mount` only: one entry of the Secret named by `secretRef`, base64 as kubelet sends it.
    pub fn secret(mut self, key: &str, value: &str) -> Opts {
        self.k8s.insert(
            format!("kubernetes.io/secret/{key}"),
            base64(value.as_bytes()),
        );
        self
    }

    /// A raw (already encoded) secret value.
    pub fn secret_raw(mut self, key: &str, encoded: &str) -> Opts {
        self.k8s
            .insert(format!("kubernetes.io/secret/{key}"), encoded.into());
        self
    }

    pub fn user(mut self, key: &str, value: &str) -> Opts {
        self.user.insert(key.into(), value.into());
        self
    }

    /// Go's `json.Marshal(map[string]string)`: user options copied last (overriding),
    /// keys sorted, `<` `>` `&` escaped as `\u003c` `\u003e` `\u0026`.
    pub fn json(&self) -> String {
        let mut all = self.k8s.clone();
        for (k, v) in &self.user {
            all.insert(k.clone(), v.clone());
        }
        go_escape(&serde_json::to_string(&all).unwrap())
    }
}

/// The HTML-safe escapes of Go's encoding/json (they only occur inside strings).
pub fn go_escape(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Invocation and judgement
// ---------------------------------------------------------------------------------------

/// One run of the driver, as the process left it.
#[derive(Debug, Clone)]
pub struct Exec {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// kubelet's reading of a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Success,
    /// "Not supported": kubelet uses its built-in default and remembers it.
    NotSupported,
    /// kubelet's error text (`<cmd> command failed, status: …, reason: …`, …).
    Failed(String),
    /// A kubelet guard kept the driver from being called.
    Skipped(&'static str),
    /// Not called: remembered as Not supported since the last probe.
    Cached,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: Verdict,
    pub status: String,
    pub message: String,
    pub device: Option<String>,
    pub attached: Option<bool>,
    pub json: Value,
    pub exec: Option<Exec>,
}

impl Outcome {
    fn skipped(why: &'static str, verdict: Verdict) -> Outcome {
        Outcome {
            verdict,
            status: why.into(),
            message: String::new(),
            device: None,
            attached: None,
            json: Value::Null,
            exec: None,
        }
    }

    pub fn ok(&self) -> bool {
        self.verdict == Verdict::Success
    }

    #[track_caller]
    pub fn expect_ok(&self, what: &str) -> &Outcome {
        assert_eq!(
            self.verdict,
            Verdict::Success,
            "{what}: {} {}",
            self.status,
            self.message
        );
        self
    }

    /// A Failure whose message contains `needle`.
    #[track_caller]
    pub fn expect_failure(&self, what: &str, needle: &str) -> &Outcome {
        assert!(
            matches!(self.verdict, Verdict::Failed(_)) && self.status == "Failure",
            "{what}: expected a Failure, got {:?} {}",
            self.verdict,
            self.message
        );
        assert!(
            self.message.contains(needle),
            "{what}: message {:?} lacks {needle:?}",
            self.message
        );
        self
    }
}

/// kubelet's capability defaults, overwritten by what `init` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub attach: bool,
    pub selinux_relabel: bool,
    pub supports_metrics: bool,
    pub fs_group: bool,
    pub requires_fs_resize: bool,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            attach: true,
            selinux_relabel: true,
            supports_metrics: false,
            fs_group: true,
            requires_fs_resize: true,
        }
    }
}

/// A key looked up case-insensitively (Go's encoding/json matching).
pub fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// Runs the executable once, as kubelet does (no stdin, its environment), and checks the
/// output contract every invocation must keep.
#[track_caller]
pub fn exec(exe: &Path, args: &[&str], env: &[(String, String)]) -> Exec {
    let started = Instant::now();
    let out = Command::new(exe)
        .args(args)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot exec {} {args:?}: {e}", exe.display()));
    let e = Exec {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    };
    check_contract(args, &e);
    e
}

/// Zero bytes on stderr; exactly one JSON object and `\n` on stdout; exit 1 for Failure and
/// 0 otherwise.
#[track_caller]
pub fn check_contract(args: &[&str], e: &Exec) {
    assert!(
        e.stderr.is_empty(),
        "{args:?}: stderr must stay empty, got {:?}",
        e.stderr
    );
    assert!(
        e.stdout.ends_with('\n') && e.stdout.matches('\n').count() == 1,
        "{args:?}: stdout must be one line ending in \\n, got {:?}",
        e.stdout
    );
    let v: Value = serde_json::from_str(&e.stdout).unwrap_or_else(|err| {
        panic!(
            "{args:?}: stdout is not one JSON value ({err}): {:?}",
            e.stdout
        )
    });
    assert!(v.is_object(), "{args:?}: not a JSON object: {}", e.stdout);
    let status = field(&v, "status").and_then(Value::as_str).unwrap_or("");
    let want = if status == "Failure" { 1 } else { 0 };
    assert!(
        matches!(status, "Success" | "Failure" | "Not supported"),
        "{args:?}: unknown status {status:?}"
    );
    assert_eq!(
        e.code, want,
        "{args:?}: exit code {} with status {status}",
        e.code
    );
}

/// kubelet's judgement of an invocation (driver-call.go): the combined output parsed as one
/// JSON value; Success with a non-zero exit is a driver bug.
pub fn judge(cmd: &str, e: &Exec) -> Outcome {
    let combined = format!("{}{}", e.stdout, e.stderr);
    let json: Value = match serde_json::from_str(&combined) {
        Ok(v) => v,
        Err(err) => {
            let why = format!(
                "Failed to unmarshal output for command: {cmd}, output: {combined:?}, error: {err}"
            );
            return Outcome {
                verdict: Verdict::Failed(why),
                status: String::new(),
                message: String::new(),
                device: None,
                attached: None,
                json: Value::Null,
                exec: Some(e.clone()),
            };
        }
    };
    let text = |k: &str| {
        field(&json, k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let status = text("status");
    let message = text("message");
    let verdict = match status.as_str() {
        "Success" if e.code != 0 => Verdict::Failed(format!(
            "driver bug: exec error (exit {}) but no error in response",
            e.code
        )),
        "Success" => Verdict::Success,
        "Not supported" => Verdict::NotSupported,
        other => Verdict::Failed(format!(
            "{cmd} command failed, status: {other}, reason: {message}"
        )),
    };
    Outcome {
        verdict,
        device: field(&json, "device")
            .and_then(Value::as_str)
            .map(str::to_owned),
        attached: field(&json, "attached").and_then(Value::as_bool),
        status,
        message,
        json,
        exec: Some(e.clone()),
    }
}

// ---------------------------------------------------------------------------------------
// The emulated kubelet / KCM
// ---------------------------------------------------------------------------------------

pub struct Kubelet {
    /// The temporary kubelet root (`/var/lib/kubelet`).
    pub root: PathBuf,
    pub plugindir: PathBuf,
    pub exe: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub socket: PathBuf,
    pub caps: Caps,
    unsupported: Mutex<BTreeSet<String>>,
    /// Commands actually executed since the start.
    pub executed: Mutex<Vec<String>>,
    pub env: Vec<(String, String)>,
}

impl Kubelet {
    /// Installs the driver with `volbridge flex install` under `dir`, writes its flex.toml
    /// (socket, log file, `extra`), and probes it.
    pub fn new(dir: &Path, socket: &Path, extra: &str) -> Kubelet {
        let plugindir = dir.join("exec");
        std::fs::create_dir_all(&plugindir).unwrap();
        let out = Command::new(common::BIN)
            .args(["flex", "install", "--dir"])
            .arg(&plugindir)
            .arg("--binary")
            .arg(flex_binary())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "volbridge flex install: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.join("flex.toml");
        let mut k = Kubelet {
            root: dir.join("kubelet"),
            exe: plugindir.join(format!("{VENDOR}~{DRIVER}")).join(DRIVER),
            plugindir,
            log: dir.join("log/flex.log"),
            socket: socket.to_path_buf(),
            env: vec![(
                "VOLBRIDGE_FLEX_CONFIG".to_owned(),
                config.display().to_string(),
            )],
            config,
            caps: Caps::default(),
            unsupported: Mutex::default(),
            executed: Mutex::default(),
        };
        k.write_config(extra);
        let init = k.probe();
        assert!(init.ok(), "init: {init:?}");
        k
    }

    /// A kubelet for a driver already installed in `plugindir`, configured by `config`
    /// (written by the caller); not probed yet.
    pub fn existing(plugindir: &Path, config: &Path, log: &Path, socket: &Path) -> Kubelet {
        Kubelet {
            root: plugindir.parent().unwrap_or(plugindir).join("kubelet"),
            plugindir: plugindir.to_path_buf(),
            exe: plugindir.join(format!("{VENDOR}~{DRIVER}")).join(DRIVER),
            config: config.to_path_buf(),
            log: log.to_path_buf(),
            socket: socket.to_path_buf(),
            caps: Caps::default(),
            unsupported: Mutex::default(),
            executed: Mutex::default(),
            env: vec![(
                "VOLBRIDGE_FLEX_CONFIG".to_owned(),
                config.display().to_string(),
            )],
        }
    }

    /// Rewrites flex.toml (the driver reads it on every invocation).
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            "socket = \"{}\"\nlog_file = \"{}\"\n{extra}\n",
            self.socket.display(),
            self.log.display()
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// Runs the driver and checks the contract, without kubelet's judgement or guards.
    #[track_caller]
    pub fn raw(&self, args: &[&str]) -> Exec {
        if let Some(c) = args.first() {
            self.executed.lock().unwrap().push(c.to_string());
        }
        exec(&self.exe, args, &self.env)
    }

    /// `init`: capabilities merged over kubelet's defaults; the Not supported memory reset.
    #[track_caller]
    pub fn probe(&mut self) -> Outcome {
        let o = judge("init", &self.raw(&["init"]));
        self.unsupported.lock().unwrap().clear();
        if o.ok() {
            let mut caps = Caps::default();
            if let Some(c) = field(&o.json, "capabilities") {
                let flag = |k: &str, d: bool| field(c, k).and_then(Value::as_bool).unwrap_or(d);
                caps = Caps {
                    attach: flag("attach", caps.attach),
                    selinux_relabel: flag("selinuxRelabel", caps.selinux_relabel),
                    supports_metrics: flag("supportsMetrics", caps.supports_metrics),
                    fs_group: flag("fsGroup", caps.fs_group),
                    requires_fs_resize: flag("requiresFSResize", caps.requires_fs_resize),
                };
            }
            self.caps = caps;
        }
        o
    }

    /// A driver call as kubelet makes it: skipped when remembered as unsupported.
    #[track_caller]
    pub fn call(&self, args: &[&str]) -> Outcome {
        let cmd = args[0];
        if self.unsupported.lock().unwrap().contains(cmd) {
            return Outcome::skipped("cached Not supported", Verdict::Cached);
        }
        let o = judge(cmd, &self.raw(args));
        if o.verdict == Verdict::NotSupported {
            self.unsupported.lock().unwrap().insert(cmd.to_owned());
        }
        o
    }

    pub fn times_executed(&self, cmd: &str) -> usize {
        self.executed
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == cmd)
            .count()
    }

    /// `/var/lib/kubelet/pods/<uid>/volumes/<vendor>~<driver>/<volume>`.
    pub fn pod_dir(&self, uid: &str, volume: &str) -> PathBuf {
        self.root
            .join("pods")
            .join(uid)
            .join("volumes")
            .join(format!("{VENDOR}~{DRIVER}"))
            .join(volume)
    }

    /// `/var/lib/kubelet/plugins/kubernetes.io/flexvolume/<vendor>/<driver>/mounts/<pv>`.
    pub fn device_mount_path(&self, pv: &str) -> PathBuf {
        self.root
            .join("plugins/kubernetes.io/flexvolume")
            .join(VENDOR)
            .join(DRIVER)
            .join("mounts")
            .join(pv)
    }

    /// kubelet SetUp: mkdir 0750; skipped when the dir already is a mount point.
    #[track_caller]
    pub fn mount(&self, pod_dir: &Path, opts: &Opts) -> Outcome {
        mkdir_0750(pod_dir);
        if is_mount_point(pod_dir) {
            return Outcome::skipped("already a mount point", Verdict::Skipped("mounted"));
        }
        self.call(&["mount", &s(pod_dir), &opts.json()])
    }

    /// kubelet TearDown: skipped when the dir is gone; rmdir after success.
    #[track_caller]
    pub fn unmount(&self, pod_dir: &Path) -> Outcome {
        if !pod_dir.exists() {
            return Outcome::skipped("no such dir", Verdict::Skipped("absent"));
        }
        let o = self.call(&["unmount", &s(pod_dir)]);
        if o.ok() {
            std::fs::remove_dir(pod_dir).unwrap_or_else(|e| {
                panic!(
                    "kubelet's rmdir of {} after unmount failed: {e}",
                    pod_dir.display()
                )
            });
        }
        o
    }

    /// kubelet MountDevice: mkdir 0750; skipped when already a mount point.
    #[track_caller]
    pub fn mount_device(&self, dmp: &Path, device: &str, opts: &Opts) -> Outcome {
        mkdir_0750(dmp);
        if is_mount_point(dmp) {
            return Outcome::skipped("already a mount point", Verdict::Skipped("mounted"));
        }
        self.call(&["mountdevice", &s(dmp), device, &opts.json()])
    }

    /// kubelet UnmountDevice: skipped unless the path exists and is a mount point; the
    /// dir is removed after success.
    #[track_caller]
    pub fn unmount_device(&self, dmp: &Path) -> Outcome {
        if !dmp.exists() || !is_mount_point(dmp) {
            return Outcome::skipped("not a mount point", Verdict::Skipped("not mounted"));
        }
        let o = self.call(&["unmountdevice", &s(dmp)]);
        if o.ok() {
            std::fs::remove_dir(dmp).unwrap();
        }
        o
    }

    /// KCM attach.
    #[track_caller]
    pub fn attach(&self, opts: &Opts, node: &str) -> Outcome {
        self.call(&["attach", &opts.json(), node])
    }

    #[track_caller]
    pub fn is_attached(&self, opts: &Opts, node: &str) -> Outcome {
        self.call(&["isattached", &opts.json(), node])
    }

    #[track_caller]
    pub fn wait_for_attach(&self, device: &str, opts: &Opts) -> Outcome {
        self.call(&["waitforattach", device, &opts.json()])
    }

    #[track_caller]
    pub fn detach(&self, pv: &str, node: &str) -> Outcome {
        self.call(&["detach", pv, node])
    }

    #[track_caller]
    pub fn expand_volume(&self, opts: &Opts, dmp: &Path, new: u64, old: u64) -> Outcome {
        self.call(&[
            "expandvolume",
            &opts.json(),
            &s(dmp),
            &new.to_string(),
            &old.to_string(),
        ])
    }

    #[track_caller]
    pub fn expand_fs(&self, opts: &Opts, device: &str, dmp: &Path, new: u64, old: u64) -> Outcome {
        self.call(&[
            "expandfs",
            &opts.json(),
            device,
            &s(dmp),
            &new.to_string(),
            &old.to_string(),
        ])
    }

    /// The driver's log, one JSON object per line.
    pub fn log_records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
            .collect()
    }
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

pub fn mkdir_0750(p: &Path) {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(p)
        .unwrap();
}

/// Mount points equal to `p`, from /proc/self/mountinfo (one per stacked mount).
pub fn mount_count(p: &Path) -> usize {
    let p = s(p);
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(p.as_str()))
        .count()
}

pub fn is_mount_point(p: &Path) -> bool {
    mount_count(p) > 0
}

/// The filesystem type mounted at `p`.
pub fn fs_type_at(p: &Path) -> Option<String> {
    let p = s(p);
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(p.as_str()))
        .filter_map(|l| l.split(" - ").nth(1))
        .filter_map(|rest| rest.split(' ').next().map(str::to_owned))
        .next_back()
}

pub fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

/// Bytes of the filesystem at `p` (statvfs through df).
pub fn fs_bytes(p: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=size"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn make_executable(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Which tool a test needs beyond `require_root_and_tools` (fails clearly when missing).
pub fn require_tool(tool: &str) {
    let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists());
    assert!(
        found,
        "this test needs {tool} (scripts/test installs it); it is not on this machine"
    );
}

// ---------------------------------------------------------------------------------------
// A rig: daemon + emulated kubelet in one temp dir
// ---------------------------------------------------------------------------------------

pub struct Rig {
    pub k: Kubelet,
    pub d: Daemon,
    _cleanup: HostCleanup,
    pub dir: TempDir,
}

#[derive(Default)]
pub struct RigOptions<'a> {
    pub daemon_args: &'a [&'a str],
    pub daemon_env: &'a [(&'a str, &'a str)],
    /// Extra flex.toml lines.
    pub flex: &'a str,
    /// A daemon config file's text (`--config`).
    pub daemon_config: Option<&'a str>,
}

impl Rig {
    /// Needs root, loop devices and the mkfs tools (fails clearly otherwise, skips only
    /// with `VOLBRIDGE_ALLOW_SKIP=1`).
    pub fn start(tag: &str, o: RigOptions<'_>) -> Option<Rig> {
        if !common::require_root_and_tools(tag) {
            return None;
        }
        let dir = TempDir::new(tag);
        let cleanup = HostCleanup(dir.path().to_path_buf());
        let mut args: Vec<String> = o.daemon_args.iter().map(|a| a.to_string()).collect();
        if let Some(text) = o.daemon_config {
            let path = dir.path().join("volbridge.toml");
            std::fs::write(&path, text).unwrap();
            args.push("--config".into());
            args.push(s(&path));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let d = Daemon::start_with_env(dir.path(), &args, o.daemon_env);
        let flex = format!(
            "attach_dir = \"{}\"\n{}",
            dir.path().join("attached").display(),
            o.flex
        );
        let k = Kubelet::new(dir.path(), &d.socket, &flex);
        Some(Rig {
            k,
            d,
            _cleanup: cleanup,
            dir,
        })
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `GET /v1/node`.
    pub fn node(&self) -> Value {
        let (status, body) = self.d.raw("GET", "/v1/node", None);
        assert_eq!(status, 200, "GET /v1/node: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn hostname(&self) -> String {
        self.node()["hostname"].as_str().unwrap().to_owned()
    }

    /// The node's entry for a volume (staged here), if any.
    pub fn staged(&self, volume: &str) -> Option<Value> {
        self.node()["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["volume"] == volume)
            .cloned()
    }

    /// `GET /v1/volumes/<name>` (`None` when it does not exist).
    pub fn volume(&self, name: &str) -> Option<Value> {
        let (status, body) = self.d.raw("GET", &format!("/v1/volumes/{name}"), None);
        match status {
            200 => Some(serde_json::from_str(&body).unwrap()),
            404 => None,
            _ => panic!("GET /v1/volumes/{name}: {status} {body}"),
        }
    }

    pub fn loops(&self) -> Vec<(String, String)> {
        common::loops_under(self.dir.path())
    }

    pub fn mounts(&self) -> Vec<String> {
        common::mounts_under(self.dir.path())
    }

    #[track_caller]
    pub fn assert_nothing_left(&self) {
        assert!(
            self.loops().is_empty(),
            "leaked loop devices: {:?}",
            self.loops()
        );
        assert!(
            self.mounts().is_empty(),
            "leaked mounts: {:?}",
            self.mounts()
        );
    }

    pub fn daemon_tail(&self) -> String {
        let log = self.d.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

// ---------------------------------------------------------------------------------------
// Plugin-dir prober (inotify), for the atomic install check
// ---------------------------------------------------------------------------------------

/// What the prober saw.
#[derive(Debug, Default)]
pub struct ProbeLog {
    /// Relevant events (path relative to the plugin dir).
    pub events: Vec<String>,
    /// Successful `init` runs.
    pub probes: usize,
    /// Probe failures: exec errors (ENOEXEC, ETXTBSY, …) or bad output.
    pub errors: Vec<String>,
}

/// kubelet's flexvolume prober: watches the plugin dir and its driver dirs (names starting
/// with `.` ignored), and on every create / write / remove / rename / chmod event inside a
/// driver dir runs that driver's `init` at once.
pub struct Prober {
    pub log: Arc<Mutex<ProbeLog>>,
    stop: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    pub fn start(plugindir: &Path, env: Vec<(String, String)>) -> Prober {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).unwrap();
        let mask = WatchFlags::CREATE
            | WatchFlags::MOVED_TO
            | WatchFlags::MOVED_FROM
            | WatchFlags::MODIFY
            | WatchFlags::DELETE
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ATTRIB;
        let mut watches: BTreeMap<i32, PathBuf> = BTreeMap::new();
        let root = plugindir.to_path_buf();
        watches.insert(inotify::add_watch(&fd, &root, mask).unwrap(), root.clone());
        for e in std::fs::read_dir(&root).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && !name.starts_with('.') {
                watches.insert(inotify::add_watch(&fd, e.path(), mask).unwrap(), e.path());
            }
        }
        let log = Arc::new(Mutex::new(ProbeLog::default()));
        let stop = Arc::new(AtomicUsize::new(0));
        let (log2, stop2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
            while stop2.load(Ordering::SeqCst) == 0 {
                let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
                {
                    let mut reader = inotify::Reader::new(&fd, &mut buf);
                    while let Ok(ev) = reader.next() {
                        let Some(dir) = watches.get(&ev.wd()).cloned() else {
                            continue;
                        };
                        let name = ev
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let path = if name.is_empty() {
                            dir.clone()
                        } else {
                            dir.join(&name)
                        };
                        if path
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                        {
                            continue;
                        }
                        let rel = path.strip_prefix(&root).unwrap_or(&path).to_path_buf();
                        log2.lock().unwrap().events.push(rel.display().to_string());
                        let created = ev
                            .events()
                            .intersects(inotify::ReadFlags::CREATE | inotify::ReadFlags::MOVED_TO);
                        if created && path.is_dir() {
                            if let Ok(wd) = inotify::add_watch(&fd, &path, mask) {
                                watches.insert(wd, path.clone());
                            }
                        }
                        if let Some(first) = rel.components().next() {
                            touched.insert(root.join(first.as_os_str()));
                        }
                    }
                }
                for driver_dir in touched {
                    probe_driver_dir(&driver_dir, &env, &log2);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Prober {
            log,
            stop,
            thread: Some(thread),
        }
    }

    pub fn events(&self) -> usize {
        self.log.lock().unwrap().events.len()
    }

    /// Waits until no event arrived for `quiet`.
    pub fn settle(&self, quiet: Duration) {
        let mut last = self.events();
        let mut since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(30);
        while since.elapsed() < quiet && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.events();
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
    }

    pub fn stop(mut self) -> ProbeLog {
        self.stop.store(1, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// Probes one driver dir the way kubelet does after an event: the executable is the text
/// after the last `~`; a driver dir without it is skipped (a removal); anything else must
/// run and answer.
fn probe_driver_dir(dir: &Path, env: &[(String, String)], log: &Mutex<ProbeLog>) {
    let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let exe_name = name.rsplit('~').next().unwrap_or(&name).to_owned();
    let exe = dir.join(&exe_name);
    if !dir.exists() {
        return;
    }
    if !exe.exists() {
        log.lock()
            .unwrap()
            .errors
            .push(format!("{} has no executable {exe_name}", dir.display()));
        return;
    }
    let out = Command::new(&exe)
        .arg("init")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output();
    let mut l = log.lock().unwrap();
    match out {
        Err(e) => l.errors.push(format!("exec {}: {e}", exe.display())),
        Ok(o) => {
            let combined = [o.stdout.as_slice(), o.stderr.as_slice()].concat();
            match serde_json::from_slice::<Value>(&combined) {
                Ok(v) if field(&v, "status").and_then(Value::as_str) == Some("Success") => {
                    l.probes += 1
                }
                _ => l.errors.push(format!(
                    "init of {} answered {:?}",
                    exe.display(),
                    String::from_utf8_lossy(&combined)
                )),
            }
        }
    }
}

/// A TCP port where a "CSP" accepts connections and never answers (a hung array).
pub struct BlackHole {
    pub port: u16,
    stop: Arc<AtomicUsize>,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicUsize::new(0));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while stop2.load(Ordering::SeqCst) == 0 {
                match l.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        BlackHole { port, stop }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(1, Ordering::SeqCst);
    }
}

/// A unix socket that counts connections and closes each at once (a stand-in daemon that
/// proves whether the driver contacted it).
pub struct CountingSocket {
    pub path: PathBuf,
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicUsize>,
}

impl CountingSocket {
    pub fn start(path: &Path) -> CountingSocket {
        let l = std::os::unix::net::UnixListener::bind(path).unwrap();
        l.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicUsize::new(0));
        let (a2, s2) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            while s2.load(Ordering::SeqCst) == 0 {
                match l.accept() {
                    Ok((c, _)) => {
                        a2.fetch_add(1, Ordering::SeqCst);
                        drop(c);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CountingSocket {
            path: path.to_path_buf(),
            accepted,
            stop,
        }
    }

    pub fn count(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CountingSocket {
    fn drop(&mut self) {
        self.stop.store(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_look_like_kubelets() {
        let o = Opts::new("pv-1")
            .user("note", "a<b>&c")
            .user("kubernetes.io/fsType", "xfs");
        assert_eq!(
            o.json(),
            r#"{"kubernetes.io/fsType":"xfs","kubernetes.io/pvOrVolumeName":"pv-1","kubernetes.io/readwrite":"rw","note":"a\u003cb\u003e\u0026c"}"#
        );
        assert_eq!(base64(b"hunter2"), "aHVudGVyMg==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}
