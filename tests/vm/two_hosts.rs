//! Guest side of `volbridge_two_hosts_over_iscsi_and_nvme` (tests/vm_transports.rs): two
//! hosts in one VM. The array is a network namespace (`vbarray`, 10.99.0.1) running
//! `volbridge csp serve` with iSCSI and NVMe/TCP exports, so its LIO and nvmet listeners
//! live in that namespace; the node is the VM's own namespace (10.99.0.2, across a veth
//! pair) running `volbridge serve` with the array as its only backend and CSI on a unix
//! socket. A whole CSI lifecycle runs for each protocol with `volbridge csi`: create with
//! `accessProtocol`, controller publish (the array makes a target allowing only the node's
//! initiator name, CHAP for iSCSI), stage (discovery and login across the veth), publish,
//! write; growth while published (NVMe/TCP grows online, iSCSI is refused with the way out); the array's CSP killed with -9 and restarted under it, then killed again and the
//! array kernel's targets wiped (as a reboot does) before it starts; unpublish, unstage,
//! controller unpublish (the target is gone from the array's kernel); publish, stage and
//! publish again; the data reads back; then everything is removed and the array's kernel
//! holds no volbridge target.

use super::{sh, step};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ARRAY_IP: &str = "10.99.0.1";
const NODE_IP: &str = "10.99.0.2";
const CSP_PORT: u16 = 8080;
const NETNS: &str = "vbarray";

fn volbridge() -> &'static str {
    env!("CARGO_BIN_EXE_volbridge")
}

fn must(script: &str) -> String {
    let (rc, out) = sh(script);
    assert_eq!(rc, 0, "`{script}` failed: {out}");
    out
}

/// A child process killed (and waited for) when dropped.
struct Proc {
    child: Child,
    what: &'static str,
}

impl Proc {
    fn spawn(what: &'static str, cmd: &mut Command, log: &Path) -> Proc {
        let log = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Proc { child, what }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first: the daemon stops cleanly; then make sure.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill9();
        eprintln!("  ({} stopped)", self.what);
    }
}

struct TwoHosts {
    work: PathBuf,
    chap_password: String,
    array: Option<Proc>,
    node: Option<Proc>,
}

impl TwoHosts {
    fn endpoint(&self) -> String {
        format!("unix://{}", self.work.join("csi.sock").display())
    }

    fn start_array(&mut self) {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{NETNS}"))
            .arg(volbridge())
            .args(["csp", "serve", "--pool", "dir", "--password", "array-pw"])
            .arg("--data-dir")
            .arg(self.work.join("array/csp"))
            .args(["--listen", &format!("{ARRAY_IP}:{CSP_PORT}")])
            .args(["--iscsi-portal", ARRAY_IP, "--nvme-address", ARRAY_IP])
            .args(["--chap-user", "vbnode"])
            .env("VOLBRIDGE_CHAP_PASSWORD", &self.chap_password);
        let log = self.work.join("array.log");
        self.array = Some(Proc::spawn("array CSP", &mut cmd, &log));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect((ARRAY_IP, CSP_PORT)).is_err() {
            let up = self.array.as_mut().unwrap().alive();
            assert!(
                up && Instant::now() < deadline,
                "the array's CSP did not come up: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn start_node(&mut self) {
        let config = self.work.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{state}\"\nadmin_socket = \"{admin}\"\ndefault_backend = \"array\"\n\
                 [local_csp]\nenabled = false\n\
                 [csi]\nendpoint = \"{endpoint}\"\n\
                 [node]\nprotocols = [\"iscsi\", \"nvmetcp\"]\n\
                 [backends.array]\nbackend = \"{ARRAY_IP}\"\nserviceName = \"{ARRAY_IP}\"\n\
                 servicePort = \"{CSP_PORT}\"\nusername = \"volbridge\"\npassword = \"array-pw\"\n",
                state = self.work.join("node/state").display(),
                admin = self.work.join("node/admin.sock").display(),
                endpoint = self.endpoint(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(volbridge());
        cmd.arg("serve").arg("--config").arg(&config);
        let log = self.work.join("node.log");
        self.node = Some(Proc::spawn("node daemon", &mut cmd, &log));
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.csi(&["identity", "probe"]).0 != 0 {
            let up = self.node.as_mut().unwrap().alive();
            assert!(
                up && Instant::now() < deadline,
                "the node's daemon did not come up: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn csi(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(volbridge())
            .args(["csi", "--endpoint", &self.endpoint()])
            .args(args)
            // Discovery, login and mkfs under software emulation take their time.
            .args(["--timeout", "180s"])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn csi_ok(&self, args: &[&str]) -> String {
        let (rc, out) = self.csi(args);
        assert_eq!(
            rc,
            0,
            "volbridge csi {args:?}: {out}\n-- node log:\n{}\n-- array log:\n{}",
            tail(&self.work.join("node.log")),
            tail(&self.work.join("array.log"))
        );
        out
    }

    fn csi_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.csi_ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        self.node.take();
        self.array.take();
        let _ = sh(&format!(
            "umount -R {w}/array 2>/dev/null; ip netns del {NETNS} 2>/dev/null; \
             ip link del vb-node 2>/dev/null; true",
            w = self.work.display()
        ));
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The volbridge objects in the kernel's target configuration (configfs).
fn kernel_exports() -> Vec<String> {
    let mut found = Vec::new();
    for dir in [
        "/sys/kernel/config/target/iscsi",
        "/sys/kernel/config/nvmet/subsystems",
    ] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains("io.volbridge") {
                    found.push(name);
                }
            }
        }
    }
    found.sort();
    found
}

/// What the node is connected to across the veth: iSCSI sessions and NVMe controllers
/// whose address is the array's.
fn sessions_to_array() -> String {
    let (_, iscsi) = sh("iscsiadm -m session 2>/dev/null");
    let (_, nvme) = sh("cat /sys/class/nvme/*/address 2>/dev/null");
    iscsi
        .lines()
        .chain(nvme.lines())
        .filter(|l| l.contains(ARRAY_IP))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn guest_two_hosts() {
    let work = std::env::temp_dir().join(format!("vm-two-hosts-{}", std::process::id()));
    std::fs::create_dir_all(work.join("array")).unwrap();
    let mut hosts = TwoHosts {
        chap_password: format!("chap-{}", std::process::id() * 7919),
        work: work.clone(),
        array: None,
        node: None,
    };
    // The array's images on a tmpfs: the VM's /tmp is an overlay, on which the kernel
    // targets' file back-ends misbehave (tests/vm/README.md).
    must(&format!(
        "mount -t tmpfs -o size=600m vbarray {}",
        work.join("array").display()
    ));
    must(&format!(
        "ip netns add {NETNS} && ip link add vb-node type veth peer name vb-array && \
         ip link set vb-array netns {NETNS} && \
         ip -n {NETNS} addr add {ARRAY_IP}/24 dev vb-array && ip -n {NETNS} link set vb-array up && \
         ip -n {NETNS} link set lo up && \
         ip addr add {NODE_IP}/24 dev vb-node && ip link set vb-node up"
    ));
    // Two hosts: the array's address is not one of the node's.
    let (_, local) = sh("ip -o addr show");
    assert!(!local.contains(&format!("{ARRAY_IP}/")), "{local}");
    step(&format!(
        "array namespace {NETNS} at {ARRAY_IP}, node at {NODE_IP} across a veth pair"
    ));
    super::start_iscsid();
    must("modprobe nvme_tcp");

    hosts.start_array();
    let log = std::fs::read_to_string(work.join("array.log")).unwrap_or_default();
    assert!(
        log.contains("iscsi at 10.99.0.1:3260, nvmetcp at 10.99.0.1:4420"),
        "the CSP does not say what it serves: {log}"
    );
    step("array: volbridge csp serve with iSCSI (CHAP) and NVMe/TCP exports");
    hosts.start_node();
    step("node: volbridge serve, CSI on a unix socket, the array as its backend");
    let info = hosts.csi_json(&["node", "info"]);
    let node_id = info["node_id"].as_str().unwrap().to_owned();

    // xfs wants 300 MB at least; the images are sparse.
    for (protocol, fs, size) in [("iscsi", "ext4", "64Mi"), ("nvmetcp", "xfs", "320Mi")] {
        lifecycle(&mut hosts, &node_id, protocol, fs, size);
    }
    for log in ["node.log", "array.log"] {
        let text = std::fs::read_to_string(work.join(log)).unwrap_or_default();
        assert!(
            !text.contains(&hosts.chap_password),
            "the CHAP secret is in the {log}"
        );
    }
    assert_eq!(
        kernel_exports(),
        Vec::<String>::new(),
        "left in the array's kernel"
    );
    assert_eq!(sessions_to_array(), "", "node still connected to the array");
    step("nothing left: no volbridge target in the array's kernel, no session on the node");
    drop(hosts);
    let _ = std::fs::remove_dir_all(&work);
}

/// The size of the filesystem mounted at `path` as df shows it (xfs leaves its log out).
fn df_size(path: &str) -> u64 {
    must(&format!("df -B1 --output=size {path} | tail -n 1"))
        .trim()
        .parse()
        .unwrap()
}

fn publish_context(hosts: &TwoHosts, volume: &str, node_id: &str) -> BTreeMap<String, String> {
    let out = hosts.csi_json(&["controller", "publish", volume, "--node-id", node_id]);
    out["publish_context"]
        .as_object()
        .unwrap_or_else(|| panic!("publish answer without a context: {out}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

fn as_arg(ctx: &BTreeMap<String, String>) -> String {
    ctx.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn lifecycle(hosts: &mut TwoHosts, node_id: &str, protocol: &str, fs: &str, size: &str) {
    let volume = format!("net-{protocol}");
    let stage = hosts.work.join(format!("stage-{protocol}"));
    let pod = hosts.work.join(format!("pod-{protocol}"));
    let (stage_s, pod_s) = (stage.display().to_string(), pod.display().to_string());
    hosts.csi_ok(&[
        "controller",
        "create",
        &volume,
        "--size",
        size,
        "--param",
        &format!("accessProtocol={protocol}"),
    ]);
    let ctx = publish_context(hosts, &volume, node_id);
    assert_eq!(ctx["accessProtocol"], protocol, "{ctx:?}");
    assert_eq!(ctx["discoveryIps"], ARRAY_IP, "{ctx:?}");
    assert_eq!(ctx["targetScope"], "volume", "{ctx:?}");
    if protocol == "iscsi" {
        assert_eq!(ctx["chapUser"], "vbnode", "{ctx:?}");
    }
    let exported = kernel_exports();
    assert_eq!(exported.len(), 1, "one target on the array: {exported:?}");
    assert!(exported[0].ends_with(&ctx["targetNames"]) || ctx["targetNames"] == exported[0]);
    step(&format!(
        "{protocol}: controller publish made {} on the array",
        ctx["targetNames"]
    ));
    let mount_cap = format!("--fs-type={fs}");
    let attach = |hosts: &TwoHosts, ctx: &BTreeMap<String, String>| {
        let ctx_arg = as_arg(ctx);
        let publish_context = ["--publish-context", ctx_arg.as_str()];
        let staging = ["--staging-path", stage_s.as_str()];
        let stage = [
            &["node", "stage", &volume][..],
            &staging,
            &[&mount_cap],
            &publish_context,
        ];
        hosts.csi_ok(&stage.concat());
        let target = ["--target-path", pod_s.as_str()];
        let publish = [
            &["node", "publish", &volume][..],
            &staging,
            &target,
            &publish_context,
        ];
        hosts.csi_ok(&publish.concat());
    };
    attach(hosts, &ctx);
    let connected = sessions_to_array();
    assert!(!connected.is_empty(), "no session to {ARRAY_IP}");
    must(&format!(
        "head -c 4194304 /dev/urandom > {w}/{protocol}.want && cp {w}/{protocol}.want {pod_s}/data && sync",
        w = hosts.work.display()
    ));
    step(&format!(
        "{protocol}: staged ({fs}) and published across the veth ({}); 4 MiB written",
        connected.lines().next().unwrap_or_default().trim()
    ));

    // Growth while published: nvmet re-reads the image's size, LIO's file backstore
    // cannot, so an iSCSI volume is refused with the way out.
    let bigger = if protocol == "iscsi" {
        "128Mi"
    } else {
        "384Mi"
    };
    let before = df_size(&pod_s);
    let (rc, out) = hosts.csi(&["controller", "expand", &volume, "--size", bigger]);
    if protocol == "iscsi" {
        assert!(
            rc != 0 && out.contains("unpublish it, expand it, then publish it again"),
            "exit {rc}: {out}"
        );
        step("iscsi: growth while published refused, naming the way out");
    } else {
        assert_eq!(rc, 0, "controller expand: {out}");
        hosts.csi_ok(&["node", "expand", &volume, "--path", &pod_s]);
        let size = df_size(&pod_s);
        assert!(
            size >= before + (64 << 20),
            "filesystem of {size} bytes after growing by 64 MiB (was {before})"
        );
        step(&format!(
            "nvmetcp: grown online to 384Mi ({fs} now {size} bytes)"
        ));
    }

    // The array's CSP dies and comes back while the volume is in use: its start-up pass
    // keeps the export as the store has it, and I/O goes on.
    hosts.array.as_mut().unwrap().kill9();
    hosts.array = None;
    hosts.start_array();
    assert_eq!(
        kernel_exports(),
        exported,
        "exports after the CSP's restart"
    );
    must(&format!(
        "dd if=/dev/urandom of={pod_s}/after-restart bs=64k count=4 conv=fsync status=none"
    ));
    step(&format!(
        "{protocol}: array CSP killed -9 and restarted; export kept, I/O goes on"
    ));

    // The array's kernel loses its targets (as in a reboot) while the CSP is down: the
    // start-up pass makes them again from the store, and the node's session recovers.
    hosts.array.as_mut().unwrap().kill9();
    hosts.array = None;
    must(&format!(
        "{} wipe",
        super::repo().join("tests/vm/kernel-exports.sh").display()
    ));
    assert_eq!(kernel_exports(), Vec::<String>::new());
    hosts.start_array();
    assert_eq!(
        kernel_exports(),
        exported,
        "exports rebuilt at the CSP's start"
    );
    must(&format!(
        "dd if=/dev/urandom of={pod_s}/after-reboot bs=64k count=4 conv=fsync status=none"
    ));
    step(&format!(
        "{protocol}: the array's kernel lost its targets; its CSP's start made them again, \
         and the node's session came back"
    ));

    let tear_down = |hosts: &TwoHosts| {
        hosts.csi_ok(&["node", "unpublish", &volume, "--target-path", &pod_s]);
        hosts.csi_ok(&["node", "unstage", &volume, "--staging-path", &stage_s]);
        hosts.csi_ok(&["controller", "unpublish", &volume, "--node-id", node_id]);
    };
    tear_down(hosts);
    assert_eq!(
        kernel_exports(),
        Vec::<String>::new(),
        "target left after unpublish"
    );
    assert_eq!(sessions_to_array(), "", "session left after unstage");
    step(&format!(
        "{protocol}: unpublished, unstaged, logged out; the array withdrew the target"
    ));

    let ctx = publish_context(hosts, &volume, node_id);
    attach(hosts, &ctx);
    must(&format!(
        "cmp {w}/{protocol}.want {pod_s}/data && test -s {pod_s}/after-restart && \
         test -s {pod_s}/after-reboot",
        w = hosts.work.display()
    ));
    step(&format!("{protocol}: attached again; the data reads back"));
    tear_down(hosts);
    hosts.csi_ok(&["controller", "delete", &volume]);
    step(&format!("{protocol}: detached and deleted"));
}
