//! The image the chart runs (`scripts/image`), loaded into a private real dockerd and run the
//! way the chart's pods run it: `helm template` renders the chart, `tests/image/pods.py`
//! reads each volbridge container of it (command, args, env from the Secrets, privilege,
//! hostPath/emptyDir/Secret mounts, Bidirectional propagation), and each becomes a
//! `docker run` on the host network. Then a CSI node cycle crosses the containers: create on
//! the controller, publish to the node's id, stage and publish on the node plugin (privileged,
//! host `/dev`), data written and read through the host's view of the target, and all of it
//! undone with nothing left mounted or attached.
//!
//! Needs root, dockerd, the image archive (`scripts/image`) and the chart tools
//! (`scripts/chart-tools`); `scripts/test` provides all of them.

mod common;
mod docker_support;

use common::{loops_under, mounts_under, require_root_and_tools, HostCleanup, TempDir, BIN};
use docker_support::{eventually, require_dockerd, Dockerd};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const IMAGE: &str = concat!("volbridge/volbridge:", env!("CARGO_PKG_VERSION"));
const RELEASE: &str = "vb";
const NAMESPACE: &str = "vb";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path the test needs from the set-up scripts, or a failure that names the script.
fn required(path: PathBuf, made_by: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run {made_by} (scripts/test does)",
        path.display()
    );
    path
}

fn archive() -> PathBuf {
    let name = format!("target/image/volbridge-{}.tar", env!("CARGO_PKG_VERSION"));
    required(repo().join(name), "scripts/image")
}

fn must(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `volbridge csi --endpoint … ARGS --output json`, which must succeed.
fn csi(endpoint: &str, args: &[&str]) -> Value {
    let out = must(
        Command::new(BIN)
            .args(["csi", "--endpoint", endpoint])
            .args(args)
            .args(["--output", "json"]),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("csi {args:?}: {e}: {out}"))
}

/// The chart rendered for this host: every host path under `t`, the local CSP on `port`.
fn rendered_pods(t: &Path, port: u16) -> Vec<Value> {
    let tools = repo().join("target/chart-tools");
    let helm = required(tools.join("bin/helm"), "scripts/chart-tools");
    let python = required(tools.join("venv/bin/python"), "scripts/chart-tools");
    let p = |s: &str| t.join(s).display().to_string();
    let sets = [
        format!("kubeletDir={}", p("kubelet")),
        format!("node.stateDir={}", p("state")),
        format!("node.runDir={}", p("run")),
        format!("localCsp.dataDir={}", p("csp")),
        format!("localCsp.port={port}"),
        "localCsp.enabled=true".to_owned(),
    ];
    let mut helm_cmd = Command::new(helm);
    helm_cmd
        .args(["template", RELEASE])
        .arg(repo().join("charts/volbridge"))
        .args(["--namespace", NAMESPACE]);
    for s in &sets {
        helm_cmd.args(["--set", s]);
    }
    let manifest = must(&mut helm_cmd);
    let rendered = t.join("rendered.yaml");
    std::fs::write(&rendered, &manifest).unwrap();
    let json = must(
        Command::new(python)
            .arg(repo().join("tests/image/pods.py"))
            .arg(IMAGE)
            .arg(t.join("pods"))
            .stdin(std::fs::File::open(&rendered).unwrap()),
    );
    serde_json::from_str::<Vec<Value>>(&json).unwrap()
}

/// `docker run` of one rendered container on the host network, named after its workload:
/// detached (`-d`) for a Deployment or DaemonSet, to its end for a Pod (a `helm test` hook).
fn docker_run_args(c: &Value, service_host: &str) -> Vec<String> {
    let name = c["workload"].as_str().unwrap().to_owned();
    let detach = if c["kind"] == "Pod" { "--rm" } else { "-d" };
    let mut args: Vec<String> = vec![
        "run".into(),
        detach.into(),
        "--name".into(),
        name,
        "--network".into(),
        "host".into(),
        // The Service's DNS name, as cluster DNS would answer it.
        "--add-host".into(),
        format!("{service_host}:127.0.0.1"),
    ];
    if c["privileged"].as_bool().unwrap() {
        args.extend(privileged());
    }
    for m in c["mounts"].as_array().unwrap() {
        let mut opts = Vec::new();
        if m["read_only"].as_bool().unwrap() {
            opts.push("ro");
        }
        if m["bidirectional"].as_bool().unwrap() {
            opts.push("rshared");
        }
        let mut spec = format!(
            "{}:{}",
            m["source"].as_str().unwrap(),
            m["target"].as_str().unwrap()
        );
        if !opts.is_empty() {
            spec = format!("{spec}:{}", opts.join(","));
        }
        args.extend(["-v".into(), spec]);
    }
    for (k, v) in c["env"].as_object().unwrap() {
        args.extend(["-e".into(), format!("{k}={}", v.as_str().unwrap())]);
    }
    let command: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    if let Some(first) = command.first() {
        args.extend(["--entrypoint".into(), (*first).into()]);
    }
    args.push(IMAGE.into());
    args.extend(command.iter().skip(1).map(|s| s.to_string()));
    args.extend(
        c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned()),
    );
    args
}

fn run_container(d: &Dockerd, c: &Value, service_host: &str) -> String {
    let args = docker_run_args(c, service_host);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    d.ok(&argv);
    c["workload"].as_str().unwrap().to_owned()
}

/// Capability names by number (linux/capability.h), for `--cap-add`: those Debian's
/// Docker 20.10 knows (up to AUDIT_READ; it refuses PERFMON, BPF, CHECKPOINT_RESTORE).
const CAPS: [&str; 38] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
];

/// `securityContext.privileged: true` as docker flags. `--privileged` asks runc for every
/// capability, which fails where this machine's own bounding set lacks some (a sandbox
/// without CAP_SYS_RESOURCE): then the same thing minus those, spelled out.
fn privileged() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let all = (1u64 << (last + 1)) - 1;
    if bounding & all == all {
        return vec!["--privileged".into()];
    }
    let mut flags: Vec<String> = [
        "--security-opt=seccomp=unconfined",
        "--security-opt=apparmor=unconfined",
        "--device-cgroup-rule=a *:* rwm",
    ]
    .map(String::from)
    .into();
    let missing: Vec<&str> = (0..CAPS.len())
        .filter(|i| bounding & (1 << i) == 0)
        .map(|i| CAPS[i])
        .collect();
    eprintln!("privileged container without {missing:?} (not in this machine's bounding set)");
    for (i, cap) in CAPS.iter().enumerate() {
        if bounding & (1 << i) != 0 {
            flags.push(format!("--cap-add={cap}"));
        }
    }
    flags
}

/// The host path of the CSI socket a rendered container serves (`--csi-endpoint`).
fn socket_of(c: &Value) -> PathBuf {
    let endpoint = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix("--csi-endpoint=unix://"))
        .next()
        .expect("a CSI endpoint");
    let inside = Path::new(endpoint);
    c["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|m| {
            let rest = inside.strip_prefix(m["target"].as_str().unwrap()).ok()?;
            Some(Path::new(m["source"].as_str().unwrap()).join(rest))
        })
        .expect("the socket's directory is a mount")
}

fn logs(d: &Dockerd, names: &[String]) -> String {
    names
        .iter()
        .map(|n| {
            let out = d.docker(&["logs", "--tail", "30", n]);
            format!(
                "--- {n}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .collect()
}

#[test]
fn the_image_has_the_node_tools_and_both_binaries() {
    if !require_dockerd("the_image_has_the_node_tools_and_both_binaries") {
        return;
    }
    let archive = archive();
    let dk = TempDir::new("image-tools");
    let d = Dockerd::start(dk.path());
    must(d_cmd(&d).args(["load", "-i"]).arg(&archive));
    let version = d.ok(&["run", "--rm", "--network", "none", IMAGE, "--version"]);
    assert!(
        version.contains(env!("CARGO_PKG_VERSION")),
        "volbridge --version in the image: {version}"
    );
    let tools = "blkid mkfs.ext4 e2fsck resize2fs mkfs.xfs xfs_growfs mkfs.btrfs btrfs losetup \
                 mount umount iscsiadm nvme multipath multipathd modprobe volbridge-flex";
    let script = format!(
        "for t in {tools}; do command -v $t >/dev/null || echo missing $t; done; \
         test -s /etc/ssl/certs/ca-certificates.crt || echo missing CA roots"
    );
    let missing = d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        IMAGE,
        "-c",
        &script,
    ]);
    assert!(missing.trim().is_empty(), "the image lacks: {missing}");
}

fn d_cmd(d: &Dockerd) -> Command {
    let mut c = Command::new(docker_support::docker_client().unwrap());
    c.env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
        .env("DOCKER_CONFIG", d.dir.join("docker-client"));
    c
}

#[test]
fn the_chart_s_pods_run_the_image_through_a_csi_node_cycle() {
    let test = "the_chart_s_pods_run_the_image_through_a_csi_node_cycle";
    if !require_dockerd(test) || !require_root_and_tools(test) {
        return;
    }
    let archive = archive();
    let dk = TempDir::new("image-dockerd");
    let t = TempDir::new("image-host");
    let _cleanup = HostCleanup(t.path().to_path_buf());
    // Bidirectional propagation needs a shared mount under the host paths, as on a node.
    must(
        Command::new("mount")
            .arg("--bind")
            .arg(t.path())
            .arg(t.path()),
    );
    must(Command::new("mount").arg("--make-rshared").arg(t.path()));
    for dir in ["kubelet/plugins_registry", "kubelet/pods"] {
        std::fs::create_dir_all(t.path().join(dir)).unwrap();
    }

    let d = Dockerd::start(dk.path());
    must(d_cmd(&d).args(["load", "-i"]).arg(&archive));
    let pods = rendered_pods(t.path(), common::free_port());
    let workload = |suffix: &str| {
        pods.iter()
            .find(|c| c["workload"] == format!("{RELEASE}-volbridge-{suffix}"))
            .unwrap_or_else(|| panic!("the chart renders no {suffix} container: {pods:#?}"))
    };
    let (csp, controller, node) = (workload("csp"), workload("controller"), workload("node"));
    assert_eq!(node["kind"], "DaemonSet");
    assert!(
        node["privileged"].as_bool().unwrap(),
        "the node plugin is privileged"
    );
    let service_host = format!("{RELEASE}-volbridge-csp.{NAMESPACE}.svc");
    let names: Vec<String> = [csp, controller, node]
        .iter()
        .map(|c| run_container(&d, c, &service_host))
        .collect();

    let controller_ep = format!("unix://{}", socket_of(controller).display());
    let node_ep = format!("unix://{}", socket_of(node).display());
    for ep in [&controller_ep, &node_ep] {
        let ready = eventually(Duration::from_secs(90), || {
            let out = Command::new(BIN)
                .args([
                    "csi",
                    "--endpoint",
                    ep,
                    "identity",
                    "probe",
                    "--output",
                    "json",
                ])
                .output()
                .unwrap();
            out.status.success()
                && serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| v["ready"] != false)
        });
        assert!(ready, "{ep} not ready within 90 s:\n{}", logs(&d, &names));
    }

    // `helm test`: the chart's hook pod checks the CSP with the chart's credentials.
    let hook = workload("csp-check");
    let args = docker_run_args(hook, &service_host);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let checked = d.docker(&argv);
    assert!(
        checked.status.success(),
        "the chart's helm test pod failed ({}):\n{}{}\n{}",
        checked.status,
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr),
        logs(&d, &names)
    );

    let node_id = csi(&node_ep, &["node", "info"])["node_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = csi(
        &controller_ep,
        &["controller", "create", "img-data", "--size", "64Mi"],
    );
    assert_eq!(created["capacity_bytes"], 64 << 20);
    let published = csi(
        &controller_ep,
        &["controller", "publish", "img-data", "--node-id", &node_id],
    );
    let ctx: Vec<String> = published["publish_context"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(k, v)| {
            [
                "--publish-context".to_owned(),
                format!("{k}={}", v.as_str().unwrap()),
            ]
        })
        .collect();
    let kubelet = t.path().join("kubelet");
    let stage = kubelet.join("plugins/kubernetes.io/csi/csi.volbridge.io/img/globalmount");
    let target = kubelet.join("pods/p1/volumes/kubernetes.io~csi/img-data/mount");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let (stage_s, target_s) = (stage.display().to_string(), target.display().to_string());
    let mut args = vec!["node", "stage", "img-data", "--staging-path", &stage_s];
    args.extend(ctx.iter().map(String::as_str));
    csi(&node_ep, &args);
    let mut args = vec![
        "node",
        "publish",
        "img-data",
        "--staging-path",
        &stage_s,
        "--target-path",
        &target_s,
    ];
    args.extend(ctx.iter().map(String::as_str));
    csi(&node_ep, &args);

    // The container's mount reached the host (Bidirectional): write and read through it.
    let payload: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(target.join("payload"), &payload).unwrap_or_else(|e| {
        panic!(
            "writing into the published target from the host: {e}\n{}",
            logs(&d, &names)
        )
    });
    must(&mut Command::new("sync"));
    assert_eq!(std::fs::read(target.join("payload")).unwrap(), payload);
    let stats = csi(
        &node_ep,
        &["node", "stats", "img-data", "--path", &target_s],
    );
    let bytes = &stats["usage"][0];
    assert!(
        bytes["unit"] == "BYTES" && bytes["used"].as_u64().unwrap() >= 1 << 20,
        "NodeGetVolumeStats counts the 1 MiB written: {stats}"
    );

    csi(
        &node_ep,
        &["node", "unpublish", "img-data", "--target-path", &target_s],
    );
    csi(
        &node_ep,
        &["node", "unstage", "img-data", "--staging-path", &stage_s],
    );
    csi(
        &controller_ep,
        &["controller", "unpublish", "img-data", "--node-id", &node_id],
    );
    csi(&controller_ep, &["controller", "delete", "img-data"]);
    let listed = csi(&controller_ep, &["controller", "list"]);
    assert!(
        !listed.to_string().contains("img-data"),
        "deleted volume still listed: {listed}"
    );
    let left_mounts = mounts_under(&kubelet);
    let left_loops = loops_under(t.path());
    assert!(
        left_mounts.is_empty() && left_loops.is_empty(),
        "left behind: mounts {left_mounts:?}, loops {left_loops:?}\n{}",
        logs(&d, &names)
    );
    drop(d);
}
