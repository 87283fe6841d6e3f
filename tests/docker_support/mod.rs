//! Test support for the Docker front end: requests byte for byte as dockerd 20.10 sends
//! them (docker-volume-plugin.md §4), a daemon with the Docker socket in a temp dir, and a
//! private dockerd for the end-to-end tests.
#![allow(dead_code)]

pub mod faults;

use crate::common::{Daemon, TempDir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A response: status, headers (lower-case names), body text.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {:?}", self.body))
    }
    pub fn err(&self) -> String {
        self.json()["Err"].as_str().unwrap_or_default().to_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The request dockerd 20.10 sends to a legacy plugin: empty Host, no Content-Type, the
/// plugin Accept header, compact JSON plus a newline.
pub fn docker_request(path: &str, body: Option<&str>) -> Vec<u8> {
    let body = match body {
        Some(b) => format!("{b}\n"),
        None => String::new(),
    };
    format!(
        "POST /{path} HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nAccept-Encoding: gzip\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A persistent connection to the plugin socket (Docker keeps connections alive).
pub struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    pub fn open(socket: &Path) -> Conn {
        let s = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        s.set_read_timeout(Some(Duration::from_secs(150))).unwrap();
        Conn {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// Sends raw bytes and reads one response.
    pub fn raw(&mut self, request: &[u8]) -> Reply {
        self.writer.write_all(request).unwrap();
        self.read_reply()
    }

    pub fn call(&mut self, path: &str, body: Option<&str>) -> Reply {
        self.raw(&docker_request(path, body))
    }

    fn read_reply(&mut self) -> Reply {
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .expect("the plugin answers with a Content-Length");
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    }
}

/// One call on a fresh connection.
pub fn call(socket: &Path, path: &str, body: Option<&str>) -> Reply {
    Conn::open(socket).call(path, body)
}

/// A daemon serving Docker on `<dir>/docker.sock` (unstage delay 0 unless `extra` says).
pub struct Plugin {
    pub daemon: Daemon,
    pub socket: PathBuf,
}

impl Plugin {
    pub fn start(dir: &TempDir, extra: &[&str]) -> Plugin {
        let socket = dir.path().join("docker.sock");
        let mut args = vec!["--docker-socket", socket.to_str().unwrap()];
        if !extra.contains(&"--docker-unstage-delay") {
            args.extend(["--docker-unstage-delay", "0"]);
        }
        args.extend(extra);
        let daemon = Daemon::start(dir.path(), &args);
        Plugin { daemon, socket }
    }

    pub fn call(&self, path: &str, body: &str) -> Reply {
        call(&self.socket, path, Some(body))
    }

    pub fn create(&self, name: &str, opts: &[(&str, &str)]) -> Reply {
        let opts: serde_json::Map<String, Value> = opts
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let body = serde_json::json!({"Name": name, "Opts": opts}).to_string();
        self.call("VolumeDriver.Create", &body)
    }

    pub fn get(&self, name: &str) -> Reply {
        self.call(
            "VolumeDriver.Get",
            &serde_json::json!({ "Name": name }).to_string(),
        )
    }

    pub fn mount(&self, name: &str, id: &str) -> Reply {
        self.call(
            "VolumeDriver.Mount",
            &serde_json::json!({ "Name": name, "ID": id }).to_string(),
        )
    }

    pub fn unmount(&self, name: &str, id: &str) -> Reply {
        self.call(
            "VolumeDriver.Unmount",
            &serde_json::json!({ "Name": name, "ID": id }).to_string(),
        )
    }

    pub fn remove(&self, name: &str) -> Reply {
        self.call(
            "VolumeDriver.Remove",
            &serde_json::json!({ "Name": name }).to_string(),
        )
    }

    pub fn refs(&self, name: &str) -> u64 {
        let r = self.get(name);
        r.json()["Volume"]["Status"]["mountRefs"]
            .as_u64()
            .unwrap_or_else(|| panic!("no mountRefs for {name}: {}", r.body))
    }

    pub fn state(&self, name: &str) -> String {
        self.get(name).json()["Volume"]["Status"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// A Docker-like 64-hex mount ID.
pub fn mount_id(seed: u8) -> String {
    format!("{seed:02x}").repeat(32)
}

/// Whether `path` is a mount point (in this test's mount namespace).
pub fn is_mount_point(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path))
}

/// The mount ID (first mountinfo column) of the mount at `path`.
pub fn mountinfo_id(path: &str) -> Option<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(path))
        .and_then(|l| l.split(' ').next().map(str::to_owned))
}

/// Polls `f` until it is true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the real-dockerd tests can run: dockerd, a docker client and a static busybox.
/// In CI they must (a missing piece fails the test with what to install); a developer can
/// set `VOLBRIDGE_ALLOW_SKIP=1` to skip instead.
pub fn require_dockerd(test: &str) -> bool {
    if !crate::common::require_root_and_tools(test) {
        return false;
    }
    let mut missing = Vec::new();
    if find_tool("dockerd").is_none() {
        missing.push("dockerd (apt-get install docker.io)");
    }
    if docker_client().is_none() {
        missing.push("a docker client (apt-get install docker.io)");
    }
    if static_busybox().is_none() {
        missing.push("a static busybox (apt-get install busybox-static)");
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{test} needs {} (scripts/test installs them)",
        missing.join(", ")
    );
    if std::env::var("VOLBRIDGE_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {why}");
        return false;
    }
    panic!("{why}; set VOLBRIDGE_ALLOW_SKIP=1 to skip on a developer machine");
}

pub fn find_tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Debian's client matches its dockerd; any other client negotiates the API version.
pub fn docker_client() -> Option<PathBuf> {
    find_tool("docker")
}

/// A busybox that runs with no libraries (the image has nothing else).
pub fn static_busybox() -> Option<PathBuf> {
    let p = find_tool("busybox")?;
    let out = std::process::Command::new("ldd").arg(&p).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (text.contains("not a dynamic executable") || text.contains("statically linked")).then_some(p)
}

/// A private dockerd: its own data root, exec root, pid file and API socket in a temp dir,
/// no iptables, no bridge, vfs storage. Stopped by its PID on drop, with its containers.
pub struct Dockerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub data_root: PathBuf,
    pub child: Option<std::process::Child>,
    pub log: PathBuf,
    client: PathBuf,
}

/// The image every container runs: busybox and its applets, imported offline.
pub const IMAGE: &str = "vbtest:local";

impl Dockerd {
    pub fn start(dir: &Path) -> Dockerd {
        let mut d = Dockerd {
            dir: dir.to_path_buf(),
            socket: dir.join("docker.sock"),
            data_root: dir.join("docker-data"),
            child: None,
            log: dir.join("dockerd.log"),
            client: docker_client().unwrap(),
        };
        d.spawn();
        d.import_busybox();
        d
    }

    /// Starts dockerd on this data root, exec root and socket; waits for `docker info`.
    fn spawn(&mut self) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = std::process::Command::new(find_tool("dockerd").unwrap())
            .arg("--data-root")
            .arg(&self.data_root)
            .arg("--exec-root")
            .arg(self.dir.join("docker-exec"))
            .arg("--pidfile")
            .arg(self.dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-forward=false",
                "--ip-masq=false",
                "--storage-driver=vfs",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn dockerd");
        self.child = Some(child);
        let ready = eventually(Duration::from_secs(60), || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "dockerd exited at start ({status}); it cannot run on this machine. Log:\n{}",
                    self.log_tail()
                );
            }
            self.docker(&["info"]).status.success()
        });
        assert!(
            ready,
            "dockerd did not answer `docker info` within 60 s. Log:\n{}",
            self.log_tail()
        );
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// dockerd's own shutdown by its PID (SIGTERM), containers left running: without
    /// live-restore it stops them and unmounts their volumes. Waits up to 30 s.
    pub fn stop_daemon(&mut self) {
        let stopped = self.terminate();
        assert!(stopped, "dockerd did not stop within 30 s of SIGTERM");
    }

    /// dockerd again on the same data root (after [`Dockerd::stop_daemon`]).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "dockerd is running");
        self.spawn();
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Runs the docker client against this dockerd.
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(&self.client)
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.join("docker-client"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run docker")
    }

    /// A docker command that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A docker command that must fail; its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(!out.status.success(), "docker {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn import_busybox(&self) {
        let root = self.dir.join("image-root");
        for d in ["bin", "etc", "tmp", "data"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let busybox = static_busybox().unwrap();
        std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
        let list = std::process::Command::new(&busybox)
            .arg("--list")
            .output()
            .unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" && !applet.is_empty() {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
        }
        let tar = self.dir.join("rootfs.tar");
        let status = std::process::Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        self.ok(&[
            "import",
            "-c",
            "ENV PATH=/bin",
            "-c",
            "CMD [\"/bin/sh\"]",
            tar.to_str().unwrap(),
            IMAGE,
        ]);
    }

    /// dockerd by its PID: TERM, up to 30 s, then KILL; then the containerd and shims it
    /// started, found by the exec root in their command line. Whether TERM was enough.
    fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let stopped = eventually(Duration::from_secs(30), || {
            child.try_wait().ok().flatten().is_some()
        });
        if !stopped {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in pids_mentioning(&self.dir.join("docker-exec")) {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        stopped
    }

    /// Removes containers, then stops dockerd by its PID (TERM, up to 30 s, then KILL).
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        self.terminate();
    }
}

/// Processes whose command line mentions `path`.
pub fn pids_mentioning(path: &Path) -> Vec<u32> {
    let needle = path.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(&needle) {
                out.push(pid);
            }
        }
    }
    out
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One sample: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// One scrape of a daemon's `GET /metrics` (admin socket): samples by family name.
#[derive(Debug, Clone, Default)]
pub struct Scrape(BTreeMap<String, Vec<Sample>>);

impl Scrape {
    pub fn of(admin_socket: &Path) -> Scrape {
        let (status, body) = crate::common::raw_http(admin_socket, "GET", "/metrics", None);
        assert_eq!(status, 200, "GET /metrics: {body}");
        Scrape::parse(&body)
    }

    /// The text format: `name{k="v",…} value`; label values may hold `{`, `}` and `,`.
    fn parse(text: &str) -> Scrape {
        let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}').unwrap_or(rest))),
                None => (series, BTreeMap::new()),
            };
            out.entry(name.to_owned())
                .or_default()
                .push((labels, value));
        }
        Scrape(out)
    }

    /// The sum of a family's samples whose labels include `with`.
    pub fn sum(&self, family: &str, with: &[(&str, &str)]) -> u64 {
        self.0
            .get(family)
            .map(|samples| {
                samples
                    .iter()
                    .filter(|(labels, _)| {
                        with.iter()
                            .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
                    })
                    .map(|(_, v)| *v as u64)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Docker calls answered, by method (`Get`, `Mount`, …), every result counted.
    pub fn docker_calls(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (labels, v) in self
            .0
            .get("volbridge_operations_total")
            .into_iter()
            .flatten()
        {
            if labels.get("frontend").map(String::as_str) == Some("docker") {
                *out.entry(labels["operation"].clone()).or_insert(0) += *v as u64;
            }
        }
        out
    }

    /// Docker calls of one method with one result (`ok`, `error`).
    pub fn docker_result(&self, method: &str, result: &str) -> u64 {
        self.sum(
            "volbridge_operations_total",
            &[
                ("frontend", "docker"),
                ("operation", method),
                ("result", result),
            ],
        )
    }

    /// CSP calls to `backend` on the route `volumes/{id}/actions/<action>` (publish = one
    /// attach to this host, unpublish = one detach).
    pub fn csp_actions(&self, backend: &str, action: &str) -> u64 {
        let route = format!("volumes/{{id}}/actions/{action}");
        self.sum(
            "volbridge_csp_request_duration_seconds_count",
            &[("backend", backend), ("route", &route)],
        )
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    out
}

/// Docker calls made between two scrapes, by method; methods not called are left out.
pub fn calls_between(before: &Scrape, after: &Scrape) -> BTreeMap<String, u64> {
    let b = before.docker_calls();
    after
        .docker_calls()
        .into_iter()
        .map(|(m, n)| {
            let d = n - b.get(&m).copied().unwrap_or(0);
            (m, d)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// `[("Get", 1), ("Create", 1)]` as the map [`calls_between`] returns.
pub fn calls(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
    list.iter().map(|(m, n)| (m.to_string(), *n)).collect()
}

/// A Docker call as the daemon logs it at info level (`Docker: Mount volume=v id=X`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedCall {
    pub method: String,
    pub volume: String,
    pub id: Option<String>,
}

/// The Docker calls the daemon logged in `text`, in order (failure lines left out).
pub fn logged_calls(text: &str) -> Vec<LoggedCall> {
    text.lines()
        .filter_map(|line| {
            let rest = line.split_once(" Docker: ")?.1;
            let mut words = rest.split_whitespace();
            let method = words.next()?.to_owned();
            let mut volume = None;
            let mut id = None;
            for w in words {
                if let Some(v) = w.strip_prefix("volume=") {
                    volume = Some(v.to_owned());
                } else if let Some(v) = w.strip_prefix("id=") {
                    id = Some(v.to_owned());
                } else if !w.contains('=') {
                    // "Docker: Mount failed …" and other sentences.
                    return None;
                }
            }
            Some(LoggedCall {
                method,
                volume: volume?,
                id,
            })
        })
        .collect()
}

/// The mount IDs of the `method` calls (`Mount`, `Unmount`) on `volume` in `text`.
pub fn logged_ids(text: &str, method: &str, volume: &str) -> Vec<String> {
    logged_calls(text)
        .into_iter()
        .filter(|c| c.method == method && c.volume == volume)
        .filter_map(|c| c.id)
        .collect()
}

/// A Docker mount ID: 64 lower-case hex digits.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Loop devices now: device → backing file as the kernel shows it.
pub fn loop_devices() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            out.insert(format!("/dev/{name}"), b.trim_end().to_owned());
        }
    }
    out
}

/// The loop devices a managed plugin attaches: the kernel shows their backing files as the
/// plugin saw them (`/var/lib/volbridge/csp/volumes/…`, or `/csp/volumes/…` once the
/// plugin's namespace is gone), so [`crate::common::loops_under`] cannot find them. This
/// guard knows the devices that existed before the test; the new ones over a local CSP
/// volume file are the plugin's, detached on drop (after dockerd stopped the plugin).
pub struct PluginLoops {
    before: BTreeMap<String, String>,
}

impl PluginLoops {
    pub fn snapshot() -> PluginLoops {
        PluginLoops {
            before: loop_devices(),
        }
    }

    /// New loop devices over a local CSP volume file.
    pub fn attached(&self) -> Vec<(String, String)> {
        loop_devices()
            .into_iter()
            .filter(|(dev, file)| {
                self.before.get(dev) != Some(file)
                    && (file.contains("/csp/volumes/") || file.contains("/csp/pool/volumes/"))
            })
            .collect()
    }
}

impl Drop for PluginLoops {
    fn drop(&mut self) {
        for (dev, _) in self.attached() {
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(&dev)
                .status();
        }
    }
}
