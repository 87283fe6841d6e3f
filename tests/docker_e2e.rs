//! End-to-end with a real, private dockerd (docker-volume-plugin.md §14.1 and the scenarios
//! 23–38 of §14.2): the legacy socket (volbridge as a host daemon), `.spec` discovery, a
//! slow and an unreachable CSP, and the managed (v2) plugin built from `docker-plugin/`.
//! Containers run an offline busybox image with `--network none`.
//!
//! Call traces come from the daemon itself: the number of calls per method from
//! `volbridge_operations_total{frontend="docker"}` at `GET /metrics` on its admin socket
//! (every call is counted, whatever the log level), the mount IDs from its info lines
//! `Docker: Mount volume=… id=…` (the daemons here log at debug). Attaches are the CSP's
//! publish calls (`volbridge_csp_request_duration_seconds_count{route=…/publish}`).
//!
//! A slow or unreachable CSP is a standalone `volbridge csp serve` behind a TCP proxy the
//! test steers (`docker_support::faults`): no test hook in the product.
//!
//! Every scenario is its own test: `cargo test --test docker_e2e s25` runs scenario 25
//! alone. They share one private dockerd and the legacy daemon, started by the first
//! scenario that runs, and run one at a time; each makes its own volumes and leaves none
//! and no container behind (checked after each), so none depends on another. A scenario
//! that fails takes the shared dockerd down with it and the next one starts a fresh one.
//! Scenarios 23 and 33 (a driver's first use) start daemons of their own, the managed
//! plugin's (37, 38) install plugins of their own, all on the shared dockerd.
//!
//! Teardown is by PID and leaves no mount, loop device, socket, discovery file or process
//! behind: checked for the managed plugins in their tests, for the shared dockerd and every
//! daemon when the test binary exits (a leftover then fails the run with exit status 101).

mod common;
mod docker_support;

use common::{loops_under, mounts_under, Daemon, HostCleanup, TempDir};
use docker_support::faults::{CspServer, FaultProxy};
use docker_support::{
    calls, calls_between, eventually, is_hex64, logged_calls, logged_ids, mountinfo_id,
    pids_mentioning, require_dockerd, Dockerd, PluginLoops, Scrape, IMAGE,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The unstage delay of the legacy daemons: it must bridge the copy-up cycle and the start
/// of one `docker run` on a loaded machine, and stays short enough to wait out.
const UNSTAGE_DELAY: u64 = 3;

/// Long enough for the unstage delay plus a teardown.
const UNSTAGED_WITHIN: Duration = Duration::from_secs(UNSTAGE_DELAY + 15);

/// The daemons log at debug here: the `Docker: Mount volume=… id=…` lines (info) are the
/// mount-ID trace, whatever `VOLBRIDGE_TEST_LOG` says.
const LOG_LEVEL: (&str, &str) = ("RUST_LOG", "debug");

/// The Create budget of the daemon behind the slow CSP (scenario 36).
const CREATE_BUDGET: u64 = 5;

/// Removes a host-global file (a plugin socket, a discovery file) even when the test fails.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn driver_name(tag: &str) -> String {
    format!("vb{tag}{}", std::process::id())
}

/// No mount, loop device or socket under `dir`, and no process started there.
fn assert_clean(dir: &Path, files: &[&Path]) {
    assert!(
        eventually(Duration::from_secs(10), || mounts_under(dir).is_empty()),
        "mounts left: {:?}",
        mounts_under(dir)
    );
    assert!(
        loops_under(dir).is_empty(),
        "loop devices left: {:?}",
        loops_under(dir)
    );
    for f in files {
        assert!(!f.exists(), "{} left behind", f.display());
    }
    assert!(
        eventually(Duration::from_secs(10), || pids_mentioning(dir).is_empty()),
        "processes left: {:?}",
        pids_mentioning(dir)
    );
}

fn scrape(d: &Daemon) -> Scrape {
    Scrape::of(&d.socket)
}

/// The daemon log's length now: what is logged later is `log_since(d, mark)`.
fn log_mark(d: &Daemon) -> usize {
    d.log_text().len()
}

fn log_since(d: &Daemon, mark: usize) -> String {
    d.log_text().get(mark..).unwrap_or_default().to_owned()
}

/// `volbridge docker refs VOLUME`: mount ID → count.
fn refs(d: &Daemon, volume: &str) -> BTreeMap<String, u64> {
    let all = d.json(&["docker", "refs", volume]);
    all[0]["refs"]
        .as_object()
        .unwrap_or_else(|| panic!("no refs for {volume}: {all}"))
        .iter()
        .map(|(id, n)| (id.clone(), n.as_u64().unwrap()))
        .collect()
}

/// `available`, `attached`, `mounted` or `release-pending`.
fn vstate(d: &Daemon, volume: &str) -> String {
    d.json(&["docker", "refs", volume])[0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The Docker volumes the daemon has records of.
fn records(d: &Daemon) -> BTreeSet<String> {
    d.json(&["docker", "refs"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until `volume` has no reference and is unmounted and detached.
fn assert_unstaged(d: &Daemon, volume: &str) {
    if !eventually(UNSTAGED_WITHIN, || vstate(d, volume) == "available") {
        let warnings: Vec<String> = d
            .log_text()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(str::to_owned)
            .collect();
        panic!(
            "{volume} is still {} after the unstage delay; the daemon's warnings:\n{}\nmounts: {:?}",
            vstate(d, volume),
            warnings.join("\n"),
            mounts_under(&d.dir)
        );
    }
    let base = d.state.join("mounts");
    assert!(
        mounts_under(&base).is_empty(),
        "mounts left: {:?}",
        mounts_under(&base)
    );
}

fn inspect(d: &Dockerd, volume: &str) -> Value {
    let all: Value = serde_json::from_str(&d.ok(&["volume", "inspect", volume])).unwrap();
    all[0].clone()
}

/// `docker volume ls` as "driver name" lines.
fn volume_ls(d: &Dockerd) -> BTreeSet<String> {
    d.ok(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(v["Labels"].clone()).unwrap_or_default()
}

fn options(v: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(v["Options"].clone()).unwrap_or_default()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The remote daemon: `spec` listen mode (socket outside /run/docker/plugins), every volume
/// on a standalone local CSP reached through a fault proxy, Create budget lowered.
struct Remote {
    // Dropped in this order: the daemon before the CSP it talks to.
    daemon: Daemon,
    proxy: FaultProxy,
    csp: CspServer,
    driver: String,
    socket: PathBuf,
    spec: PathBuf,
    _spec_guard: RemoveOnDrop,
}

impl Remote {
    /// A remote daemon in `dir/<tag>`, its driver named after `tag`.
    fn start(dir: &Path, tag: &str) -> Remote {
        let dir = dir.join(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let csp = CspServer::start(&dir);
        let proxy = FaultProxy::start(csp.addr);
        let driver = driver_name(tag);
        let socket = dir.join("plugin.sock");
        let spec = Path::new("/etc/docker/plugins").join(format!("{driver}.spec"));
        let spec_guard = RemoveOnDrop(spec.clone());
        let config = dir.join("volbridge.toml");
        // The CSP's files are this host's loop backing files: an allowed local root.
        std::fs::write(
            &config,
            format!(
                "default_backend = \"csp\"\n\n[node]\nlocal_roots = [\"{}\"]\n\n[docker]\ncall_budget_seconds = {CREATE_BUDGET}\n\n{}",
                csp.data_dir.display(),
                csp.backend_toml("csp", proxy.port)
            ),
        )
        .unwrap();
        let daemon = Daemon::start_with_env(
            &dir,
            &[
                "--no-local-csp",
                "--config",
                config.to_str().unwrap(),
                "--docker-listen",
                "spec",
                "--docker-socket",
                socket.to_str().unwrap(),
                "--docker-spec-dir",
                "/etc/docker/plugins",
                "--docker-driver-name",
                &driver,
                // Forced: `auto` answers global for a remote CSP, and a global-scope Get
                // miss asks the CSP for up to 5 s (local scope: 2 s), which would blur
                // scenario 36's timing more.
                "--docker-scope",
                "local",
                "--docker-unstage-delay",
                &UNSTAGE_DELAY.to_string(),
            ],
            &[LOG_LEVEL],
        );
        Remote {
            daemon,
            proxy,
            csp,
            driver,
            socket,
            spec,
            _spec_guard: spec_guard,
        }
    }

    /// Volumes the standalone CSP still holds.
    fn csp_volume_files(&self) -> usize {
        std::fs::read_dir(crate::common::csp_images(&self.csp.data_dir).join("volumes"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// What the scenarios share: a private dockerd with the busybox image, the legacy-socket
/// daemon (its socket in /run/docker/plugins) and, started by the first scenario that needs
/// it, the remote daemon. Started by the first scenario that runs; torn down by PID when the
/// test binary exits (see [`teardown_at_exit`]), or at once when a scenario fails.
struct Legacy {
    // Dropped in this order: dockerd (and its containers) before the plugins, the temp dir
    // last.
    dockerd: Dockerd,
    remote: Option<Remote>,
    /// The daemons of scenarios 23 and 33, kept until the teardown: Docker asks every
    /// driver it has used on each `volume ls`, and one that is gone costs each ~15 s.
    first_use: Vec<(Daemon, PathBuf, RemoveOnDrop)>,
    first_use_remotes: Vec<Remote>,
    daemon: Daemon,
    dir: PathBuf,
    drv: String,
    socket: PathBuf,
    /// The managed plugin's bundle (`docker-plugin/build-rootfs.sh`), built once.
    bundle: Option<PathBuf>,
    _socket_guard: RemoveOnDrop,
    _cleanup: HostCleanup,
    _tmp: TempDir,
}

impl Legacy {
    fn start() -> Legacy {
        let tmp = TempDir::new("dk-e2e");
        let cleanup = HostCleanup(tmp.path().to_path_buf());
        let drv = driver_name("legacy");
        let socket = Path::new("/run/docker/plugins").join(format!("{drv}.sock"));
        let socket_guard = RemoveOnDrop(socket.clone());
        let daemon = Daemon::start_with_env(
            tmp.path(),
            &[
                "--docker-socket",
                socket.to_str().unwrap(),
                "--docker-driver-name",
                &drv,
                "--docker-unstage-delay",
                &UNSTAGE_DELAY.to_string(),
            ],
            &[LOG_LEVEL],
        );
        let dockerd = Dockerd::start(tmp.path());
        Legacy {
            dockerd,
            remote: None,
            first_use: Vec::new(),
            first_use_remotes: Vec::new(),
            daemon,
            dir: tmp.path().to_path_buf(),
            drv,
            socket,
            bundle: None,
            _socket_guard: socket_guard,
            _cleanup: cleanup,
            _tmp: tmp,
        }
    }

    /// Teardown by PID: dockerd (its containers first), the remote daemon and its CSP, the
    /// legacy daemon; then nothing may be left behind.
    fn teardown(mut self) {
        let mut files = vec![self.socket.clone()];
        self.dockerd.stop();
        for remote in self.remote.iter_mut().chain(&mut self.first_use_remotes) {
            files.extend([remote.socket.clone(), remote.spec.clone()]);
            remote.daemon.stop();
            remote.csp.stop();
        }
        for (daemon, socket, _) in &mut self.first_use {
            files.push(socket.clone());
            daemon.stop();
        }
        self.daemon.stop();
        let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        assert_clean(&self.dir, &files);
    }

    /// After each scenario: no container, no volume in Docker, the daemons hold no record
    /// and no volume, the standalone CSP no volume file.
    fn assert_nothing_held(&self, scenario: &str) {
        let containers = self.dockerd.ok(&["ps", "-aq"]);
        assert!(
            containers.trim().is_empty(),
            "{scenario} left containers: {containers}"
        );
        let ls = volume_ls(&self.dockerd);
        assert!(ls.is_empty(), "{scenario} left volumes: {ls:?}");
        let remote = self.remote.as_ref();
        for daemon in [Some(&self.daemon), remote.map(|r| &r.daemon)]
            .into_iter()
            .flatten()
        {
            assert!(records(daemon).is_empty(), "{:?}", records(daemon));
            let left = daemon.json(&["volume", "ls"]);
            assert_eq!(left.as_array().map(Vec::len), Some(0), "{left}");
        }
        if let Some(remote) = remote {
            assert_eq!(
                remote.csp_volume_files(),
                0,
                "volumes left in the standalone CSP"
            );
        }
    }

    fn ensure_remote(&mut self) {
        if self.remote.is_none() {
            self.remote = Some(Remote::start(&self.dir, "remote"));
        }
    }

    fn remote(&self) -> &Remote {
        self.remote.as_ref().expect("the remote daemon runs")
    }

    /// `docker volume create -d DRIVER -o size=SIZE NAME`.
    fn create(&self, drv: &str, size: &str, name: &str) {
        let size = format!("size={size}");
        self.dockerd
            .ok(&["volume", "create", "-d", drv, "-o", &size, name]);
    }

    fn remove_volumes(&self, names: &[&str]) {
        let mut all = vec!["volume", "rm"];
        all.extend(names);
        self.dockerd.ok(&all);
    }

    /// vol1 on the legacy daemon, holding `hi` in `f` (what scenario 24 leaves).
    fn vol1_with_hi(&self) {
        self.create(&self.drv, "64Mi", "vol1");
        self.run(&["-v", "vol1:/data", IMAGE, "sh", "-c", "echo hi > /data/f"]);
    }

    fn run(&self, args: &[&str]) -> String {
        let mut all = vec!["run", "--rm", "--network", "none"];
        all.extend(args);
        self.dockerd.ok(&all)
    }

    /// A detached container on `mount` (`vol:/data[:nocopy]`) that sleeps; stops at once.
    fn run_detached(&self, name: &str, mount: &str, command: &[&str]) {
        let mut all = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "--stop-timeout",
            "1",
            "-v",
            mount,
            IMAGE,
        ];
        all.extend(command);
        self.dockerd.ok(&all);
    }

    /// 23: create, ls, inspect, rm, and exactly the calls §8 lists for each.
    fn s23_volume_commands_and_their_calls(&self, daemon: &Daemon, drv: &str) {
        let d = &self.dockerd;
        let s0 = scrape(daemon);
        d.ok(&[
            "volume",
            "create",
            "-d",
            drv,
            "-o",
            "size=10Gi",
            "-o",
            "fsType=xfs",
            "v1",
        ]);
        let s1 = scrape(daemon);
        assert_eq!(
            calls_between(&s0, &s1),
            calls(&[
                ("Activate", 1),
                ("Capabilities", 1),
                ("Get", 1),
                ("Create", 1)
            ]),
            "first use of the driver, then volume create"
        );
        assert!(
            volume_ls(d).contains(&format!("{drv} v1")),
            "{:?}",
            volume_ls(d)
        );
        let s2 = scrape(daemon);
        assert_eq!(calls_between(&s1, &s2), calls(&[("List", 1)]), "volume ls");
        let v = inspect(d, "v1");
        let s3 = scrape(daemon);
        assert_eq!(calls_between(&s2, &s3), calls(&[("Get", 1)]), "inspect");
        assert_eq!(v["Driver"], drv);
        assert_eq!(options(&v), map(&[("size", "10Gi"), ("fsType", "xfs")]));
        assert_eq!(v["Scope"], "local", "auto scope with the embedded CSP");
        assert_eq!(v["Status"]["fsType"], "xfs");
        assert_eq!(v["Status"]["sizeBytes"], 10u64 << 30);
        assert_eq!(v["Status"]["state"], "available");
        humantime::parse_rfc3339(v["CreatedAt"].as_str().unwrap()).unwrap();
        d.ok(&["volume", "rm", "v1"]);
        let s4 = scrape(daemon);
        assert_eq!(
            calls_between(&s3, &s4),
            calls(&[("Get", 2), ("Remove", 1)]),
            "volume rm"
        );
        assert!(!records(daemon).contains("v1"));
        let left = daemon.json(&["volume", "ls"]);
        assert_eq!(left.as_array().map(Vec::len), Some(0), "{left}");
    }

    /// 24: one container writes, a second one reads it back.
    fn s24_write_then_read(&self) {
        let (d, drv) = (&self.dockerd, self.drv.as_str());
        d.ok(&["volume", "create", "-d", drv, "-o", "size=64Mi", "vol1"]);
        assert!(volume_ls(d).contains(&format!("{drv} vol1")));
        self.run(&["-v", "vol1:/data", IMAGE, "sh", "-c", "echo hi > /data/f"]);
        assert_eq!(
            self.run(&["-v", "vol1:/data", IMAGE, "cat", "/data/f"]),
            "hi\n"
        );
    }

    /// 25: without nocopy two Mount/Unmount cycles with distinct IDs and one attach; with
    /// nocopy one cycle; no reference left, unstaged after the delay.
    fn s25_copy_up_cycles_share_one_attach(&self) {
        for (mount, cycles) in [("vol1:/data", 2), ("vol1:/data:nocopy", 1)] {
            assert_unstaged(&self.daemon, "vol1");
            let s0 = scrape(&self.daemon);
            let mark = log_mark(&self.daemon);
            assert_eq!(self.run(&["-v", mount, IMAGE, "cat", "/data/f"]), "hi\n");
            let s1 = scrape(&self.daemon);
            let c = calls_between(&s0, &s1);
            assert_eq!(
                (c.get("Mount"), c.get("Unmount")),
                (Some(&cycles), Some(&cycles)),
                "{mount}: {c:?}"
            );
            assert_eq!(
                s1.docker_result("Mount", "ok") - s0.docker_result("Mount", "ok"),
                cycles
            );
            let log = log_since(&self.daemon, mark);
            let mounted = logged_ids(&log, "Mount", "vol1");
            let unmounted = logged_ids(&log, "Unmount", "vol1");
            assert_eq!(mounted.len() as u64, cycles, "{mount}: {mounted:?}");
            assert!(mounted.iter().all(|id| is_hex64(id)), "{mounted:?}");
            let distinct: BTreeSet<&String> = mounted.iter().collect();
            assert_eq!(distinct.len(), mounted.len(), "distinct IDs: {mounted:?}");
            assert_eq!(unmounted, mounted, "each ID unmounted, in order");
            assert!(refs(&self.daemon, "vol1").is_empty());
            assert_unstaged(&self.daemon, "vol1");
            let s2 = scrape(&self.daemon);
            assert_eq!(
                (
                    s2.csp_actions("local", "publish") - s0.csp_actions("local", "publish"),
                    s2.csp_actions("local", "unpublish") - s0.csp_actions("local", "unpublish"),
                ),
                (1, 1),
                "{mount}: a single attach and detach"
            );
        }
    }

    /// 26: two long-running containers, one stage, refs = 2; stopping one leaves the
    /// other's data path working; stopping both unstages.
    fn s26_two_containers_one_stage(&self) {
        let d = &self.dockerd;
        assert_unstaged(&self.daemon, "vol1");
        let s0 = scrape(&self.daemon);
        self.run_detached("c26a", "vol1:/data", &["sleep", "600"]);
        self.run_detached("c26b", "vol1:/data", &["sleep", "600"]);
        let held = refs(&self.daemon, "vol1");
        assert_eq!(held.len(), 2, "{held:?}");
        assert!(held.values().all(|n| *n == 1), "{held:?}");
        assert_eq!(vstate(&self.daemon, "vol1"), "mounted");
        d.ok(&["exec", "c26a", "sh", "-c", "echo from-a > /data/shared"]);
        assert_eq!(d.ok(&["exec", "c26b", "cat", "/data/shared"]), "from-a\n");
        d.ok(&["stop", "-t", "0", "c26a"]);
        assert!(
            eventually(Duration::from_secs(10), || refs(&self.daemon, "vol1").len()
                == 1),
            "{:?}",
            refs(&self.daemon, "vol1")
        );
        assert_eq!(vstate(&self.daemon, "vol1"), "mounted");
        assert_eq!(
            d.ok(&[
                "exec",
                "c26b",
                "sh",
                "-c",
                "echo from-b >> /data/shared && cat /data/shared"
            ]),
            "from-a\nfrom-b\n"
        );
        let mounted = d.ok(&["exec", "c26b", "sh", "-c", "grep ' /data ' /proc/mounts"]);
        assert!(mounted.contains("ext4"), "{mounted}");
        d.ok(&["stop", "-t", "0", "c26b"]);
        assert_unstaged(&self.daemon, "vol1");
        let s1 = scrape(&self.daemon);
        assert_eq!(
            (
                s1.csp_actions("local", "publish") - s0.csp_actions("local", "publish"),
                s1.csp_actions("local", "unpublish") - s0.csp_actions("local", "unpublish"),
            ),
            (1, 1),
            "one stage for both containers"
        );
        d.ok(&["rm", "c26a", "c26b"]);
    }

    /// A container writing a counter into vol1 every 0.1 s: scenarios 27 and 30.
    fn start_writer(&self) -> String {
        self.run_detached(
            "writer",
            "vol1:/data",
            &[
                "sh",
                "-c",
                "i=0; while true; do i=$((i+1)); echo $i > /data/counter; sleep 0.1; done",
            ],
        );
        let held = refs(&self.daemon, "vol1");
        assert_eq!(held.len(), 1, "{held:?}");
        held.into_keys().next().unwrap()
    }

    fn counter(&self) -> u64 {
        let text = self.dockerd.ok(&["exec", "writer", "cat", "/data/counter"]);
        text.trim().parse().unwrap_or(0)
    }

    /// 27: `docker cp` into the running container: Mount/Unmount with the container's own
    /// ID, the mount stays, refs back to 1.
    fn s27_docker_cp_keeps_the_mount(&self, id: &str) {
        let d = &self.dockerd;
        let mountpoint = self.daemon.json(&["docker", "refs", "vol1"])[0]["mountpoint"]
            .as_str()
            .unwrap()
            .to_owned();
        let stage = mountinfo_id(&mountpoint);
        assert!(stage.is_some(), "{mountpoint} is mounted");
        let s0 = scrape(&self.daemon);
        let mark = log_mark(&self.daemon);
        let src = self.dir.join("copied.txt");
        std::fs::write(&src, "copied\n").unwrap();
        d.ok(&["cp", src.to_str().unwrap(), "writer:/data/copied.txt"]);
        assert_eq!(
            d.ok(&["exec", "writer", "cat", "/data/copied.txt", "/data/f"]),
            "copied\nhi\n"
        );
        let mounted = d.ok(&["exec", "writer", "sh", "-c", "grep ' /data ' /proc/mounts"]);
        assert!(mounted.contains("ext4"), "{mounted}");
        let s1 = scrape(&self.daemon);
        let c = calls_between(&s0, &s1);
        assert_eq!(
            (c.get("Mount"), c.get("Unmount")),
            (Some(&2), Some(&2)),
            "{c:?}"
        );
        let log = log_since(&self.daemon, mark);
        let used: BTreeSet<String> = logged_ids(&log, "Mount", "vol1")
            .into_iter()
            .chain(logged_ids(&log, "Unmount", "vol1"))
            .collect();
        assert_eq!(used, BTreeSet::from([id.to_owned()]), "the container's ID");
        assert_eq!(
            refs(&self.daemon, "vol1"),
            BTreeMap::from([(id.to_owned(), 1)])
        );
        assert_eq!(mountinfo_id(&mountpoint), stage, "never unstaged");
        assert_eq!(
            s1.csp_actions("local", "unpublish"),
            s0.csp_actions("local", "unpublish")
        );
    }

    /// 30 (and a graceful restart): the daemon is killed with -9 while the container
    /// writes and is back within 5 s; the container keeps writing, `volume ls` lists the
    /// volume, the later Unmount is processed.
    fn s30_daemon_restarts_under_a_running_container(&mut self, id: &str) {
        self.daemon.restart();
        assert_eq!(
            self.dockerd.ok(&["exec", "writer", "cat", "/data/f"]),
            "hi\n"
        );
        let before = self.counter();
        let t = Instant::now();
        self.daemon.crash_and_restart();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "restart took {:?}",
            t.elapsed()
        );
        assert!(
            eventually(Duration::from_secs(5), || self.counter() > before + 5),
            "the container stopped writing: {} then {}",
            before,
            self.counter()
        );
        assert_eq!(
            refs(&self.daemon, "vol1"),
            BTreeMap::from([(id.to_owned(), 1)])
        );
        self.dockerd
            .ok(&["exec", "writer", "sh", "-c", "echo after-crash >> /data/f"]);
        assert!(volume_ls(&self.dockerd).contains(&format!("{} vol1", self.drv)));
        let s0 = scrape(&self.daemon);
        let mark = log_mark(&self.daemon);
        self.dockerd.ok(&["rm", "-f", "writer"]);
        assert!(eventually(Duration::from_secs(10), || {
            scrape(&self.daemon).docker_result("Unmount", "ok") > s0.docker_result("Unmount", "ok")
        }));
        assert_eq!(
            logged_ids(&log_since(&self.daemon, mark), "Unmount", "vol1"),
            vec![id.to_owned()]
        );
        assert!(refs(&self.daemon, "vol1").is_empty());
        assert_unstaged(&self.daemon, "vol1");
        assert_eq!(
            self.run(&["-v", "vol1:/data:nocopy", IMAGE, "cat", "/data/f"]),
            "hi\nafter-crash\n"
        );
    }

    /// 28: an anonymous volume: Create with a 64-hex name, Remove on exit; the named volume
    /// used with --rm all along survives.
    fn s28_anonymous_volume_goes_with_the_container(&self) {
        let s0 = scrape(&self.daemon);
        let mark = log_mark(&self.daemon);
        self.run(&[
            "--volume-driver",
            &self.drv,
            "-v",
            "/anon",
            IMAGE,
            "sh",
            "-c",
            "echo x > /anon/x",
        ]);
        assert!(
            eventually(Duration::from_secs(15), || {
                calls_between(&s0, &scrape(&self.daemon)).get("Remove") == Some(&1)
            }),
            "no Remove after --rm: {:?}",
            calls_between(&s0, &scrape(&self.daemon))
        );
        let c = calls_between(&s0, &scrape(&self.daemon));
        assert_eq!(c.get("Create"), Some(&1), "{c:?}");
        let trace = logged_calls(&log_since(&self.daemon, mark));
        let created: Vec<&str> = trace
            .iter()
            .filter(|c| c.method == "Create")
            .map(|c| c.volume.as_str())
            .collect();
        let removed: Vec<&str> = trace
            .iter()
            .filter(|c| c.method == "Remove")
            .map(|c| c.volume.as_str())
            .collect();
        assert_eq!(created.len(), 1, "{trace:?}");
        assert!(is_hex64(created[0]), "{created:?}");
        assert_eq!(removed, created);
        assert!(!records(&self.daemon).contains(created[0]));
        assert!(!volume_ls(&self.dockerd)
            .iter()
            .any(|l| l.contains(created[0])));
        // The named volume was used with --rm throughout and is still there.
        assert!(records(&self.daemon).contains("vol1"));
        assert!(volume_ls(&self.dockerd).contains(&format!("{} vol1", self.drv)));
    }

    /// 29: a bad option: non-zero exit, the documented message, nothing created.
    fn s29_bad_option_message(&self) {
        let s0 = scrape(&self.daemon);
        let out = self.dockerd.docker(&[
            "volume",
            "create",
            "-d",
            &self.drv,
            "-o",
            "size=10GB",
            "bad",
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Error response from daemon: create bad: volbridge: invalid option: size=\"10GB\": unknown unit \"GB\"; use bytes or Ki, Mi, Gi, Ti (e.g. size=10Gi)"),
            "{err}"
        );
        let s1 = scrape(&self.daemon);
        assert_eq!(
            s1.docker_result("Create", "invalid_argument")
                - s0.docker_result("Create", "invalid_argument"),
            1
        );
        assert!(!records(&self.daemon).contains("bad"));
    }

    /// Front ends share volumes (issue 16, defect 8): a volume made with `volbridge volume
    /// create` is used by `docker run --volume-driver … -v NAME:/d` (Docker's lookup finds
    /// it; no Create, so no size refusal), listed by `docker volume ls` and inspected with
    /// its own size, and `docker volume rm` removes it from the backend.
    fn cli_volumes_are_docker_volumes(&self) {
        let (d, drv) = (&self.dockerd, self.drv.as_str());
        let cli_names = || -> BTreeSet<String> {
            self.daemon
                .json(&["volume", "ls"])
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["name"].as_str().unwrap().to_owned())
                .collect()
        };
        self.daemon
            .json(&["volume", "create", "clivol", "--size", "16Mi"]);
        let s0 = scrape(&self.daemon);
        let out = self.run(&[
            "--volume-driver",
            drv,
            "-v",
            "clivol:/d",
            IMAGE,
            "sh",
            "-c",
            "echo from-docker > /d/f && cat /d/f",
        ]);
        assert_eq!(out, "from-docker\n");
        let s1 = scrape(&self.daemon);
        // No Create answered with an error, whatever its kind.
        for kind in [
            "invalid_argument",
            "not_found",
            "already_exists",
            "failed_precondition",
            "unavailable",
            "deadline_exceeded",
            "internal",
        ] {
            assert_eq!(
                s1.docker_result("Create", kind) - s0.docker_result("Create", kind),
                0,
                "Create answered {kind}"
            );
        }
        assert!(volume_ls(d).contains(&format!("{drv} clivol")));
        let v = inspect(d, "clivol");
        assert_eq!(v["Status"]["sizeBytes"], 16u64 << 20, "{v}");
        assert_eq!(
            self.run(&["-v", "clivol:/d", IMAGE, "cat", "/d/f"]),
            "from-docker\n"
        );
        d.ok(&["volume", "rm", "clivol"]);
        assert!(!cli_names().contains("clivol"));

        // Listed before Docker ever named it, removed by `docker volume rm`.
        self.daemon
            .json(&["volume", "create", "clils", "--size", "16Mi"]);
        assert!(volume_ls(d).contains(&format!("{drv} clils")));
        d.ok(&["volume", "rm", "clils"]);
        assert!(cli_names().is_empty(), "{:?}", cli_names());
        assert!(!volume_ls(d).contains(&format!("{drv} clils")));
    }

    /// Snapshot and clone through -o fromSnapshot / cloneOf (a snapshot copies the backing
    /// file: vol1 is unmounted first, so its data is flushed).
    fn snapshot_and_clone(&self) {
        let d = &self.dockerd;
        let drv = self.drv.as_str();
        assert_unstaged(&self.daemon, "vol1");
        let out = self
            .daemon
            .cli(&["snapshot", "create", "snap1", "--volume", "vol1"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        d.ok(&[
            "volume",
            "create",
            "-d",
            drv,
            "-o",
            "fromSnapshot=snap1",
            "fromsnap",
        ]);
        d.ok(&[
            "volume",
            "create",
            "-d",
            drv,
            "-o",
            "cloneOf=vol1",
            "clone1",
        ]);
        for name in ["fromsnap", "clone1"] {
            let mount = format!("{name}:/data");
            assert_eq!(
                self.run(&["-v", &mount, IMAGE, "cat", "/data/f"]),
                "hi\nafter-crash\n",
                "{name}"
            );
        }
        let v = inspect(d, "fromsnap");
        assert_eq!(v["Options"]["fromSnapshot"], "snap1");
        assert_eq!(v["Status"]["source"], "snapshot:snap1");
        // A volume with snapshots is refused with a message that says why.
        d.ok(&["volume", "rm", "fromsnap", "clone1"]);
        let err = d.fails(&["volume", "rm", "vol1"]);
        assert!(
            err.contains("remove vol1: volbridge: ") && err.contains("has snapshots"),
            "{err}"
        );
        let out = self.daemon.cli(&["snapshot", "rm", "snap1"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// 33: `spec` listen mode: the socket outside /run/docker/plugins, found through
    /// /etc/docker/plugins/<name>.spec; scenario 24 on it.
    fn s33_spec_discovery(&self, remote: &Remote) {
        let plugins_dir_socket =
            Path::new("/run/docker/plugins").join(format!("{}.sock", remote.driver));
        assert!(!plugins_dir_socket.exists());
        assert!(!remote.socket.starts_with("/run/docker/plugins"));
        assert_eq!(
            std::fs::read_to_string(&remote.spec).unwrap(),
            format!("unix://{}\n", remote.socket.display())
        );
        let drv = remote.driver.clone();
        let d = &self.dockerd;
        let s0 = scrape(&remote.daemon);
        d.ok(&["volume", "create", "-d", &drv, "-o", "size=64Mi", "rvol"]);
        assert_eq!(
            calls_between(&s0, &scrape(&remote.daemon)),
            calls(&[
                ("Activate", 1),
                ("Capabilities", 1),
                ("Get", 1),
                ("Create", 1)
            ]),
            "Docker found the driver through the .spec file"
        );
        self.run(&[
            "-v",
            "rvol:/data",
            IMAGE,
            "sh",
            "-c",
            "echo remote > /data/f",
        ]);
        assert_eq!(
            self.run(&["-v", "rvol:/data", IMAGE, "cat", "/data/f"]),
            "remote\n"
        );
        let v = inspect(&self.dockerd, "rvol");
        assert_eq!(v["Driver"], drv.as_str());
        assert_eq!(v["Status"]["backend"], "csp");
        assert_unstaged(&remote.daemon, "rvol");
    }

    /// 34: `docker volume prune -f` calls no driver and removes nothing.
    fn s34_prune_calls_no_driver(&self) {
        let remote = self.remote();
        let (before_ls, before_a, before_b) = (
            volume_ls(&self.dockerd),
            records(&self.daemon),
            records(&remote.daemon),
        );
        let (s0, r0) = (scrape(&self.daemon), scrape(&remote.daemon));
        self.dockerd.ok(&["volume", "prune", "-f"]);
        assert_eq!(calls_between(&s0, &scrape(&self.daemon)), calls(&[]));
        assert_eq!(calls_between(&r0, &scrape(&remote.daemon)), calls(&[]));
        assert_eq!(volume_ls(&self.dockerd), before_ls);
        assert_eq!(records(&self.daemon), before_a);
        assert_eq!(records(&remote.daemon), before_b);
    }

    /// 36: the Create budget (5 s here) runs out while the CSP stalls: Docker shows the
    /// `timeout` message, not its own deadline error; once the CSP has finished, the same
    /// command succeeds through Get alone.
    fn s36_create_budget_and_a_slow_csp(&self) {
        let remote = self.remote();
        let (d, drv) = (&self.dockerd, remote.driver.as_str());
        remote.proxy.stall(Duration::from_secs(60));
        let s0 = scrape(&remote.daemon);
        let t = Instant::now();
        let out = d.docker(&["volume", "create", "-d", drv, "-o", "size=32Mi", "slow1"]);
        let took = t.elapsed();
        remote.proxy.pass();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("Error response from daemon: create slow1: volbridge: timeout: create of \"slow1\" did not finish within {CREATE_BUDGET}s; it continues in the background, retry the command")),
            "{err}"
        );
        assert!(
            !err.contains("deadline exceeded") && !err.contains("VolumeDriver.Create"),
            "{err}"
        );
        assert!(
            took >= Duration::from_secs(CREATE_BUDGET) && took < Duration::from_secs(30),
            "create failed after {took:?}"
        );
        let s1 = scrape(&remote.daemon);
        assert_eq!(calls_between(&s0, &s1), calls(&[("Get", 1), ("Create", 1)]));
        assert_eq!(
            s1.docker_result("Create", "deadline_exceeded")
                - s0.docker_result("Create", "deadline_exceeded"),
            1
        );
        // The create goes on in the background once the CSP answers.
        assert!(
            eventually(Duration::from_secs(60), || records(&remote.daemon)
                .contains("slow1")),
            "the background create never finished"
        );
        d.ok(&["volume", "create", "-d", drv, "-o", "size=32Mi", "slow1"]);
        let c = calls_between(&s1, &scrape(&remote.daemon));
        assert_eq!(
            c.keys().collect::<Vec<_>>(),
            vec!["Get"],
            "Get alone: {c:?}"
        );
        assert!(volume_ls(d).contains(&format!("{drv} slow1")));
        assert_eq!(inspect(d, "slow1")["Status"]["sizeBytes"], 32u64 << 20);
    }

    /// 32, first half: with the CSP unreachable, inspect answers at once with the labels
    /// and options.
    fn s32_inspect_while_the_csp_is_unreachable(&self) {
        let remote = self.remote();
        let (d, drv) = (&self.dockerd, remote.driver.as_str());
        d.ok(&[
            "volume",
            "create",
            "-d",
            drv,
            "--label",
            "team=storage",
            "--label",
            "tier=gold",
            "-o",
            "size=32Mi",
            "-o",
            "description=kept",
            "rlab",
        ]);
        remote.proxy.refuse();
        let s0 = scrape(&remote.daemon);
        let t = Instant::now();
        let v = inspect(d, "rlab");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(
            calls_between(&s0, &scrape(&remote.daemon)),
            calls(&[("Get", 1)])
        );
        assert_eq!(labels(&v), map(&[("team", "storage"), ("tier", "gold")]));
        assert_eq!(
            options(&v),
            map(&[("size", "32Mi"), ("description", "kept")])
        );
        assert_eq!(v["Status"]["description"], "kept");
        assert!(volume_ls(d).contains(&format!("{drv} rlab")));
    }

    /// 35: dockerd stops with running containers: one Unmount per active ID, no
    /// reference left, the volumes unstaged.
    fn s35_dockerd_stop_unmounts_every_active_id(&mut self) {
        let (d, drv) = (&self.dockerd, self.drv.as_str());
        d.ok(&[
            "volume",
            "create",
            "-d",
            drv,
            "--label",
            "owner=qa",
            "-o",
            "size=32Mi",
            "-o",
            "description=survives-restart",
            "lab1",
        ]);
        self.run_detached("c35a", "vol1:/data", &["sleep", "600"]);
        self.run_detached("c35b", "vol1:/data", &["sleep", "600"]);
        self.run_detached("c35c", "lab1:/data", &["sleep", "600"]);
        let active: BTreeSet<String> = refs(&self.daemon, "vol1")
            .into_keys()
            .chain(refs(&self.daemon, "lab1").into_keys())
            .collect();
        assert_eq!(active.len(), 3, "{active:?}");
        let s0 = scrape(&self.daemon);
        let mark = log_mark(&self.daemon);
        self.dockerd.stop_daemon();
        let c = calls_between(&s0, &scrape(&self.daemon));
        assert_eq!(c.get("Unmount"), Some(&3), "{c:?}");
        assert_eq!(c.get("Mount"), None, "{c:?}");
        let log = log_since(&self.daemon, mark);
        let unmounted: BTreeSet<String> = logged_ids(&log, "Unmount", "vol1")
            .into_iter()
            .chain(logged_ids(&log, "Unmount", "lab1"))
            .collect();
        assert_eq!(unmounted, active);
        assert!(refs(&self.daemon, "vol1").is_empty());
        assert!(refs(&self.daemon, "lab1").is_empty());
        assert_unstaged(&self.daemon, "vol1");
        assert_unstaged(&self.daemon, "lab1");
    }

    /// 31: dockerd starts again (no live-restore; it was stopped with containers running): the volumes, their options and labels
    /// are all there; the CSP behind the remote daemon is still unreachable.
    fn s31_dockerd_restart_keeps_volumes(&mut self) {
        let (s0, r0) = (scrape(&self.daemon), scrape(&self.remote().daemon));
        self.dockerd.start_again();
        let d = &self.dockerd;
        let (drv, rdrv) = (self.drv.as_str(), self.remote().driver.as_str());
        let ls = volume_ls(d);
        for want in [
            format!("{drv} vol1"),
            format!("{drv} lab1"),
            format!("{rdrv} rvol"),
            format!("{rdrv} rlab"),
            format!("{rdrv} slow1"),
        ] {
            assert!(ls.contains(&want), "{want} lost: {ls:?}");
        }
        let v = inspect(d, "lab1");
        assert_eq!(labels(&v), map(&[("owner", "qa")]));
        assert_eq!(
            options(&v),
            map(&[("size", "32Mi"), ("description", "survives-restart")])
        );
        assert_eq!(v["Status"]["description"], "survives-restart");
        let v = inspect(d, "rlab");
        assert_eq!(labels(&v), map(&[("team", "storage"), ("tier", "gold")]));
        assert_eq!(
            options(&v),
            map(&[("size", "32Mi"), ("description", "kept")])
        );
        // The new dockerd activated both plugins again and asked for their volumes.
        for (before, daemon) in [(&s0, &self.daemon), (&r0, &self.remote().daemon)] {
            let c = calls_between(before, &scrape(daemon));
            assert!(
                c.get("Activate") == Some(&1) && c.get("Get").is_some_and(|n| *n >= 1),
                "{c:?}"
            );
            assert_eq!(c.get("Create"), None, "{c:?}");
        }
        assert!(
            d.ok(&["ps", "-q"]).trim().is_empty(),
            "no container left running"
        );
        d.ok(&["rm", "c31a", "c31b", "c31c"]);
    }

    /// 32, second half: the CSP is back; labels and options are unchanged and the volume
    /// mounts again.
    fn s32_after_the_csp_returns(&self) {
        let remote = self.remote();
        remote.proxy.pass();
        let v = inspect(&self.dockerd, "rlab");
        assert_eq!(labels(&v), map(&[("team", "storage"), ("tier", "gold")]));
        assert_eq!(
            options(&v),
            map(&[("size", "32Mi"), ("description", "kept")])
        );
        assert_eq!(
            self.run(&[
                "-v",
                "rlab:/data",
                IMAGE,
                "sh",
                "-c",
                "echo back > /data/f && cat /data/f"
            ]),
            "back\n"
        );
    }
}

/// The shared fixture; its lock also runs the scenarios one at a time (they use the
/// host-global /run/docker/plugins and /etc/docker/plugins).
static SHARED: Mutex<Option<Legacy>> = Mutex::new(None);

/// Runs one scenario on the shared fixture, starting it if no scenario has yet. The scenario
/// must leave no container and no volume behind. One that fails takes the fixture down with
/// it (whatever it left cannot leak into the next scenario, which starts a fresh one).
fn scenario(test: &str, body: impl FnOnce(&mut Legacy)) {
    if !require_dockerd(test) {
        return;
    }
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    if shared.is_none() {
        static AT_EXIT: std::sync::Once = std::sync::Once::new();
        AT_EXIT.call_once(|| {
            // SAFETY: registers a plain extern "C" function without arguments.
            let rc = unsafe { libc::atexit(teardown_at_exit) };
            assert_eq!(rc, 0, "atexit failed");
        });
        *shared = Some(Legacy::start());
        eprintln!(
            "{test}: dockerd and the daemons started in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let t = shared.as_mut().unwrap();
    let mut checked = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        body(t);
        let check = Instant::now();
        t.assert_nothing_held(test);
        checked = Some(check.elapsed());
    }));
    // Each scenario prints its duration (`cargo test -- --nocapture`).
    eprintln!(
        "{test}: {:.1} s (the check that nothing is left: {:.1} s)",
        started.elapsed().as_secs_f64(),
        checked.unwrap_or_default().as_secs_f64()
    );
    if let Err(panic) = outcome {
        drop(shared.take());
        std::panic::resume_unwind(panic);
    }
}

/// At the exit of the test binary: the shared fixture's teardown by PID, and nothing may be
/// left behind. A leftover fails the run (exit status 101) with what was left.
extern "C" fn teardown_at_exit() {
    let torn_down = std::panic::catch_unwind(|| {
        let fixture = SHARED.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(fixture) = fixture {
            let started = Instant::now();
            fixture.teardown();
            eprintln!(
                "docker_e2e: the shared dockerd and daemons stopped by PID in {:.1} s, nothing left behind",
                started.elapsed().as_secs_f64()
            );
        }
    });
    if torn_down.is_err() {
        eprintln!("docker_e2e: the teardown of the shared dockerd left something behind (above)");
        // SAFETY: ends the process at once; exit() must not run again from an atexit handler.
        unsafe { libc::_exit(101) };
    }
}

#[test]
fn s23_volume_commands_and_their_calls() {
    scenario("s23_volume_commands_and_their_calls", |t| {
        // A daemon of its own: the first use of its driver is part of the scenario.
        let dir = t.dir.join("s23");
        std::fs::create_dir_all(&dir).unwrap();
        let drv = driver_name("s23");
        let socket = Path::new("/run/docker/plugins").join(format!("{drv}.sock"));
        let socket_guard = RemoveOnDrop(socket.clone());
        let daemon = Daemon::start_with_env(
            &dir,
            &[
                "--docker-socket",
                socket.to_str().unwrap(),
                "--docker-driver-name",
                &drv,
            ],
            &[LOG_LEVEL],
        );
        t.s23_volume_commands_and_their_calls(&daemon, &drv);
        t.first_use.push((daemon, socket, socket_guard));
    });
}

#[test]
fn s24_write_then_read() {
    scenario("s24_write_then_read", |t| {
        t.s24_write_then_read();
        t.remove_volumes(&["vol1"]);
    });
}

#[test]
fn s25_copy_up_cycles_share_one_attach() {
    scenario("s25_copy_up_cycles_share_one_attach", |t| {
        t.vol1_with_hi();
        t.s25_copy_up_cycles_share_one_attach();
        t.remove_volumes(&["vol1"]);
    });
}

#[test]
fn s26_two_containers_one_stage() {
    scenario("s26_two_containers_one_stage", |t| {
        t.create(&t.drv, "64Mi", "vol1");
        t.s26_two_containers_one_stage();
        t.remove_volumes(&["vol1"]);
    });
}

#[test]
fn s27_docker_cp_keeps_the_mount() {
    scenario("s27_docker_cp_keeps_the_mount", |t| {
        t.vol1_with_hi();
        let id = t.start_writer();
        t.s27_docker_cp_keeps_the_mount(&id);
        t.dockerd.ok(&["rm", "-f", "writer"]);
        t.remove_volumes(&["vol1"]);
    });
}

#[test]
fn s28_anonymous_volume_goes_with_the_container() {
    scenario("s28_anonymous_volume_goes_with_the_container", |t| {
        t.create(&t.drv, "64Mi", "vol1");
        t.s28_anonymous_volume_goes_with_the_container();
        t.remove_volumes(&["vol1"]);
    });
}

#[test]
fn s29_bad_option_message() {
    scenario("s29_bad_option_message", |t| t.s29_bad_option_message());
}

#[test]
fn s30_daemon_restarts_under_a_running_container() {
    scenario("s30_daemon_restarts_under_a_running_container", |t| {
        t.vol1_with_hi();
        let id = t.start_writer();
        t.s30_daemon_restarts_under_a_running_container(&id);
        t.remove_volumes(&["vol1"]);
    });
}

#[test]
fn s31_dockerd_restart_keeps_volumes() {
    scenario("s31_dockerd_restart_keeps_volumes", |t| {
        t.ensure_remote();
        let (drv, rdrv) = (t.drv.clone(), t.remote().driver.clone());
        let d = &t.dockerd;
        // Volumes with labels and options on both daemons, containers running on two.
        t.create(&drv, "64Mi", "vol1");
        d.ok(&[
            "volume",
            "create",
            "-d",
            &drv,
            "--label",
            "owner=qa",
            "-o",
            "size=32Mi",
            "-o",
            "description=survives-restart",
            "lab1",
        ]);
        t.create(&rdrv, "64Mi", "rvol");
        d.ok(&[
            "volume",
            "create",
            "-d",
            &rdrv,
            "--label",
            "team=storage",
            "--label",
            "tier=gold",
            "-o",
            "size=32Mi",
            "-o",
            "description=kept",
            "rlab",
        ]);
        t.create(&rdrv, "32Mi", "slow1");
        t.run_detached("c31a", "vol1:/data", &["sleep", "600"]);
        t.run_detached("c31b", "vol1:/data", &["sleep", "600"]);
        t.run_detached("c31c", "lab1:/data", &["sleep", "600"]);
        // dockerd stops with them running; the CSP behind the remote daemon goes away.
        t.dockerd.stop_daemon();
        t.remote().proxy.refuse();
        t.s31_dockerd_restart_keeps_volumes();
        t.remote().proxy.pass();
        t.remove_volumes(&["vol1", "lab1", "rvol", "rlab", "slow1"]);
    });
}

#[test]
fn s32_inspect_while_the_csp_is_unreachable_and_after_it_returns() {
    scenario(
        "s32_inspect_while_the_csp_is_unreachable_and_after_it_returns",
        |t| {
            t.ensure_remote();
            t.s32_inspect_while_the_csp_is_unreachable();
            t.s32_after_the_csp_returns();
            t.remove_volumes(&["rlab"]);
        },
    );
}

#[test]
fn s33_spec_discovery() {
    scenario("s33_spec_discovery", |t| {
        // A remote daemon of its own: Docker's first use of its driver is the scenario.
        let remote = Remote::start(&t.dir, "s33");
        t.s33_spec_discovery(&remote);
        t.remove_volumes(&["rvol"]);
        assert!(records(&remote.daemon).is_empty());
        assert_eq!(remote.csp_volume_files(), 0, "volumes left in the CSP");
        t.first_use_remotes.push(remote);
    });
}

#[test]
fn s34_prune_calls_no_driver() {
    scenario("s34_prune_calls_no_driver", |t| {
        t.ensure_remote();
        t.create(&t.drv, "64Mi", "vol1");
        t.create(&t.remote().driver, "64Mi", "rvol");
        t.s34_prune_calls_no_driver();
        t.remove_volumes(&["vol1", "rvol"]);
    });
}

#[test]
fn s35_dockerd_stop_unmounts_every_active_id() {
    scenario("s35_dockerd_stop_unmounts_every_active_id", |t| {
        t.create(&t.drv, "64Mi", "vol1");
        t.s35_dockerd_stop_unmounts_every_active_id();
        // dockerd again for the scenarios after this one (scenario 31 checks the restart).
        t.dockerd.start_again();
        t.dockerd.ok(&["rm", "c35a", "c35b", "c35c"]);
        t.remove_volumes(&["vol1", "lab1"]);
    });
}

#[test]
fn s36_create_budget_and_a_slow_csp() {
    scenario("s36_create_budget_and_a_slow_csp", |t| {
        t.ensure_remote();
        // A driver in use already: Docker has asked its capabilities (once per driver and
        // dockerd start), so that the retried create below asks Get alone.
        t.create(&t.remote().driver, "32Mi", "warm36");
        t.remove_volumes(&["warm36"]);
        t.s36_create_budget_and_a_slow_csp();
        t.remove_volumes(&["slow1"]);
    });
}

#[test]
fn snapshot_and_clone_through_volume_options() {
    scenario("snapshot_and_clone_through_volume_options", |t| {
        // vol1 holds what scenarios 24 and 30 leave in it.
        t.create(&t.drv, "64Mi", "vol1");
        t.run(&[
            "-v",
            "vol1:/data",
            IMAGE,
            "sh",
            "-c",
            "echo hi > /data/f && echo after-crash >> /data/f",
        ]);
        t.snapshot_and_clone();
        t.remove_volumes(&["vol1"]);
    });
}

#[test]
fn volumes_made_by_the_cli_are_docker_volumes() {
    scenario("volumes_made_by_the_cli_are_docker_volumes", |t| {
        t.cli_volumes_are_docker_volumes();
    });
}

/// The managed plugin's process: the `volbridge serve --docker-mode=managed` whose parent
/// (the runtime shim) names the plugin id.
fn plugin_pid(plugin_id: &str) -> Option<u32> {
    let cmdline = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default()
    };
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            cmdline(*pid).contains("--docker-mode=managed")
                && parent(*pid).is_some_and(|pp| cmdline(pp).contains(plugin_id))
        })
}

/// When a process started, as wall-clock time: its start in clock ticks since boot
/// (/proc/<pid>/stat) on top of the boot time (now less /proc/uptime; /proc/stat's btime
/// is rounded to the second).
fn process_start(pid: u32) -> std::time::SystemTime {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Field 22, counted after the command name in parentheses (field 2).
    let ticks: u64 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let boot = std::time::SystemTime::now() - Duration::from_secs_f64(uptime);
    // /proc counts in USER_HZ, 100 on every architecture Docker runs on.
    boot + Duration::from_millis(ticks * 10)
}

/// A managed plugin installed into the shared dockerd from the bundle of `docker-plugin/`,
/// for one scenario: its state, run and config directories in `dir`, and `csp` (a slow CSP
/// for scenario 38, behind `proxy`) in its config file.
struct Managed {
    name: String,
    drv: String,
    id: String,
    /// The plugin's admin socket on the host.
    admin: PathBuf,
    /// How long `docker plugin enable` took, and when the socket was bound after the
    /// plugin's process started.
    enable_took: Duration,
    socket_after_start: Duration,
    proxy: FaultProxy,
    csp: CspServer,
    dir: PathBuf,
    // Last: new loop devices of the plugin are detached once it has stopped.
    plugin_loops: PluginLoops,
}

impl Managed {
    /// Creates, configures and enables the plugin; None when the host has no CA bundle
    /// and skipping is allowed.
    fn install(t: &mut Legacy, tag: &str) -> Option<Managed> {
        let plugin_loops = PluginLoops::snapshot();
        // The bundle from docker-plugin/, around the binary under test: built once.
        if t.bundle.is_none() {
            let bundle = t.dir.join("bundle");
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-plugin/build-rootfs.sh");
            let out = std::process::Command::new("bash")
                .arg(&script)
                .arg("--binary")
                .arg(common::BIN)
                .arg(&bundle)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "build-rootfs.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            t.bundle = Some(bundle);
        }
        let bundle = t.bundle.clone().unwrap();
        // The plugin's CSP client needs CA certificates to start with a remote backend.
        if !bundle
            .join("rootfs/etc/ssl/certs/ca-certificates.crt")
            .exists()
        {
            let why = "the managed plugin needs a CA bundle on this host (apt-get install ca-certificates)";
            if std::env::var("VOLBRIDGE_ALLOW_SKIP").as_deref() == Ok("1") {
                eprintln!("SKIPPED: {why}");
                return None;
            }
            panic!("{why}; set VOLBRIDGE_ALLOW_SKIP=1 to skip on a developer machine");
        }
        let dir = t.dir.join(tag);
        std::fs::create_dir_all(&dir).unwrap();
        // A slow CSP for scenario 38, named `csp` in the plugin's config file.
        let csp = CspServer::start(&dir);
        let proxy = FaultProxy::start(csp.addr);
        let etc = dir.join("plugin-etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("volbridge.toml"),
            csp.backend_toml("csp", proxy.port),
        )
        .unwrap();

        let d = &t.dockerd;
        let drv = driver_name(tag);
        let name = format!("{drv}:latest");
        let state = dir.join("plugin-state");
        let run_dir = dir.join("plugin-run");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&run_dir).unwrap();
        d.ok(&["plugin", "create", &name, bundle.to_str().unwrap()]);
        d.ok(&[
            "plugin",
            "set",
            &name,
            &format!("state.source={}", state.display()),
            &format!("run.source={}", run_dir.display()),
            &format!("config.source={}", etc.display()),
        ]);
        let started = Instant::now();
        d.ok(&["plugin", "enable", &name]);
        let enable_took = started.elapsed();
        let id = d
            .ok(&["plugin", "inspect", &name, "-f", "{{.Id}}"])
            .trim()
            .to_owned();
        let pid = plugin_pid(&id).expect("the plugin's process");
        let socket = plugin_socket(d, &id);
        let bound = std::fs::metadata(&socket).unwrap().modified().unwrap();
        let socket_after_start = bound
            .duration_since(process_start(pid))
            .unwrap_or(Duration::ZERO);
        Some(Managed {
            name,
            drv,
            id,
            admin: run_dir.join("volbridge.sock"),
            enable_took,
            socket_after_start,
            proxy,
            csp,
            dir,
            plugin_loops,
        })
    }

    fn metrics(&self) -> Scrape {
        Scrape::of(&self.admin)
    }

    /// `volbridge docker refs VOLUME` through the plugin's admin socket succeeds.
    fn refs_of(&self, volume: &str) -> bool {
        std::process::Command::new(common::BIN)
            .args(["--output", "json", "docker", "refs", volume])
            .env("VOLBRIDGE_SOCKET", &self.admin)
            .output()
            .unwrap()
            .status
            .success()
    }

    /// Disabled and removed; its CSP stopped: nothing left behind, no loop device of the
    /// plugin left attached.
    fn remove(mut self, d: &Dockerd) {
        d.ok(&["plugin", "disable", &self.name]);
        d.ok(&["plugin", "rm", &self.name]);
        drop(self.proxy);
        self.csp.stop();
        assert_clean(&self.dir, &[]);
        assert!(
            eventually(Duration::from_secs(10), || self
                .plugin_loops
                .attached()
                .is_empty()),
            "loop devices of the plugin left: {:?}",
            self.plugin_loops.attached()
        );
    }
}

#[test]
fn s37_managed_plugin_enable_and_data_path() {
    scenario("s37_managed_plugin_enable_and_data_path", |t| {
        let Some(m) = Managed::install(t, "s37") else {
            return;
        };
        let (d, drv, id) = (&t.dockerd, m.drv.as_str(), m.id.as_str());
        assert!(
            m.enable_took < Duration::from_secs(10),
            "enable took {:?}",
            m.enable_took
        );
        // 37: the socket was live within 1 s of the plugin's start (its file is made by bind).
        assert!(
            m.socket_after_start < Duration::from_secs(1),
            "the plugin socket appeared {:?} after the process started",
            m.socket_after_start
        );
        eprintln!(
            "37: enable {:.1} s, socket bound {} ms after the plugin started",
            m.enable_took.as_secs_f64(),
            m.socket_after_start.as_millis()
        );

        d.ok(&["volume", "create", "-d", drv, "-o", "size=64Mi", "mvol1"]);
        d.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            "mvol1:/data",
            IMAGE,
            "sh",
            "-c",
            "echo managed > /data/f",
        ]);
        d.ok(&[
            "run",
            "-d",
            "--name",
            "mlong",
            "--network",
            "none",
            "-v",
            "mvol1:/data",
            IMAGE,
            "sleep",
            "600",
        ]);
        // The data appears under the plugin's propagated mount on the host, in the volume's
        // own directory, named by its internal id: the Mountpoint the plugin reports (in its
        // namespace, under PropagatedMount) is that directory.
        let propagated = d
            .data_root
            .join("plugins")
            .join(id)
            .join("propagated-mount");
        let v = inspect(d, "mvol1");
        let volume_id = v["Status"]["volumeId"].as_str().unwrap().to_owned();
        let reported = v["Mountpoint"].as_str().unwrap().to_owned();
        let leaf = reported
            .strip_prefix("/mnt/volbridge/")
            .unwrap_or_else(|| panic!("{reported} is not under PropagatedMount"));
        assert!(
            leaf.ends_with(&volume_id) && !leaf.contains('/') && !leaf.contains("mvol1"),
            "{leaf}"
        );
        assert_eq!(
            std::fs::read_to_string(propagated.join(leaf).join("f")).unwrap(),
            "managed\n"
        );
        assert_eq!(d.ok(&["exec", "mlong", "cat", "/data/f"]), "managed\n");
        // The admin socket of the plugin serves the CLI on the host.
        let out = std::process::Command::new(common::BIN)
            .args(["--output", "json", "docker", "refs", "mvol1"])
            .env("VOLBRIDGE_SOCKET", &m.admin)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Managed plugins are never activated; Capabilities came before nearly every call.
        let calls_so_far = m.metrics().docker_calls();
        assert_eq!(calls_so_far.get("Activate"), None, "{calls_so_far:?}");
        assert!(
            calls_so_far.contains_key("Capabilities"),
            "{calls_so_far:?}"
        );
        // The plugin's info lines reach dockerd's log at level=info (its stdout), not as
        // errors (issue 16, defect 9).
        let lines = plugin_log_lines(d, id);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("Docker: Create") && l.contains("level=info")),
            "no info line of the plugin in dockerd's log:\n{}",
            lines.join("\n")
        );
        let misfiled: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(" INFO ") && !l.contains("level=info"))
            .collect();
        assert!(
            misfiled.is_empty(),
            "info lines logged as errors: {misfiled:?}"
        );
        // Disable is refused while a volume exists.
        let err = d.fails(&["plugin", "disable", &m.name]);
        assert!(err.contains("in use"), "{err}");

        d.ok(&["rm", "-f", "mlong"]);
        d.ok(&["volume", "rm", "mvol1"]);
        m.remove(d);
    });
}

#[test]
fn s38_managed_plugin_create_budget_and_a_slow_csp() {
    scenario("s38_managed_plugin_create_budget_and_a_slow_csp", |t| {
        let Some(m) = Managed::install(t, "s38") else {
            return;
        };
        let (d, drv) = (&t.dockerd, m.drv.as_str());
        // 38: budget 25 s (VOLBRIDGE_CALL_BUDGET), a CSP stalled for up to 40 s: the Create
        // fails with the `timeout` message before Docker's 30 s cap of a fresh enable.
        m.proxy.stall(Duration::from_secs(40));
        let started = Instant::now();
        let out = d.docker(&[
            "volume",
            "create",
            "-d",
            drv,
            "-o",
            "backend=csp",
            "-o",
            "size=32Mi",
            "mslow",
        ]);
        let took = started.elapsed();
        m.proxy.pass();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("create mslow: volbridge: timeout: create of \"mslow\" did not finish within 25s; it continues in the background, retry the command"),
            "{err}"
        );
        assert!(!err.contains("deadline exceeded"), "{err}");
        eprintln!("38: {:.1} s: {}", took.as_secs_f64(), err.trim());
        assert!(
            took >= Duration::from_secs(25) && took < Duration::from_secs(30),
            "{took:?}"
        );
        // Once the CSP has answered, the same command succeeds with Get alone.
        assert!(eventually(Duration::from_secs(60), || m.refs_of("mslow")));
        let before = m.metrics();
        d.ok(&[
            "volume",
            "create",
            "-d",
            drv,
            "-o",
            "backend=csp",
            "-o",
            "size=32Mi",
            "mslow",
        ]);
        let c = calls_between(&before, &m.metrics());
        assert_eq!(c.get("Create"), None, "{c:?}");
        assert!(c.contains_key("Get"), "{c:?}");
        d.ok(&["volume", "rm", "mslow"]);
        m.remove(d);
    });
}

/// The managed plugin's socket on the host (`<exec-root>/plugins/<id>/volbridge.sock` or
/// `/run/docker/plugins/<id>/volbridge.sock`).
fn plugin_socket(dockerd: &Dockerd, plugin_id: &str) -> PathBuf {
    let candidates = [
        dockerd
            .dir
            .join("docker-exec/plugins")
            .join(plugin_id)
            .join("volbridge.sock"),
        Path::new("/run/docker/plugins")
            .join(plugin_id)
            .join("volbridge.sock"),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| panic!("no plugin socket at {candidates:?}"))
}

/// dockerd's log lines that carry a managed plugin's output (`plugin=<id>`).
fn plugin_log_lines(dockerd: &Dockerd, plugin_id: &str) -> Vec<String> {
    std::fs::read_to_string(&dockerd.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(plugin_id) && l.contains("msg="))
        .map(str::to_owned)
        .collect()
}
