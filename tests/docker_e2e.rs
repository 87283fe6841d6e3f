//! End-to-end with a real, private dockerd (docker-volume-plugin.md §14.1): the legacy
//! socket (volbridge as a host daemon) and the managed (v2) plugin built from
//! `docker-plugin/`. Containers run an offline busybox image with `--network none`.
//! Teardown is by PID and leaves no mount, loop device, socket or process behind.

mod common;
mod docker_support;

use common::{loops_under, mounts_under, Daemon, HostCleanup, TempDir};
use docker_support::{eventually, pids_mentioning, require_dockerd, Dockerd, IMAGE};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// One private dockerd at a time: both tests use the host-global /run/docker/plugins.
static SERIAL: Mutex<()> = Mutex::new(());

/// Removes a host-global file (the plugin socket) even when the test fails.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn driver_name(tag: &str) -> String {
    format!("vb{tag}{}", std::process::id())
}

/// No mount, loop device or socket under `dir`, and no process started there.
fn assert_clean(dir: &Path, sockets: &[&Path]) {
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
    for s in sockets {
        assert!(!s.exists(), "{} left behind", s.display());
    }
    assert!(
        eventually(Duration::from_secs(10), || pids_mentioning(dir).is_empty()),
        "processes left: {:?}",
        pids_mentioning(dir)
    );
}

#[test]
fn legacy_socket_with_a_real_dockerd() {
    if !require_dockerd("legacy_socket_with_a_real_dockerd") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = TempDir::new("dk-e2e");
    let _cleanup = HostCleanup(dir.path().to_path_buf());
    let drv = driver_name("legacy");
    let socket = Path::new("/run/docker/plugins").join(format!("{drv}.sock"));
    let _socket_guard = RemoveOnDrop(socket.clone());
    let mut daemon = Daemon::start(
        dir.path(),
        &[
            "--docker-socket",
            socket.to_str().unwrap(),
            "--docker-driver-name",
            &drv,
            "--docker-unstage-delay",
            "1",
        ],
    );
    let mut dockerd = Dockerd::start(dir.path());
    let d = &dockerd;
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network", "none"];
        all.extend(args);
        d.ok(&all)
    };

    // Create, then a container writes and a second one reads.
    d.ok(&["volume", "create", "-d", &drv, "-o", "size=64Mi", "vol1"]);
    let ls = d.ok(&["volume", "ls"]);
    assert!(ls.contains(&drv) && ls.contains("vol1"), "{ls}");
    run(&["-v", "vol1:/data", IMAGE, "sh", "-c", "echo hi > /data/f"]);
    assert_eq!(run(&["-v", "vol1:/data", IMAGE, "cat", "/data/f"]), "hi\n");

    // `docker cp` into a running container keeps the volume mounted (same mount ID).
    d.ok(&[
        "run",
        "-d",
        "--name",
        "long",
        "--network",
        "none",
        "-v",
        "vol1:/data",
        IMAGE,
        "sleep",
        "600",
    ]);
    let src = dir.path().join("copied.txt");
    std::fs::write(&src, "copied\n").unwrap();
    d.ok(&["cp", src.to_str().unwrap(), "long:/data/copied.txt"]);
    assert_eq!(
        d.ok(&["exec", "long", "cat", "/data/copied.txt", "/data/f"]),
        "copied\nhi\n"
    );
    let mounted = d.ok(&["exec", "long", "sh", "-c", "grep ' /data ' /proc/mounts"]);
    assert!(mounted.contains("ext4"), "{mounted}");
    let refs = daemon.json(&["docker", "refs", "vol1"]);
    assert_eq!(refs[0]["refs"].as_object().unwrap().len(), 1, "{refs}");
    assert_eq!(refs[0]["state"], "mounted");

    // volbridge restarts (graceful, then kill -9) while the container runs: the data and
    // the container's mount stay, and the later Unmount is processed.
    daemon.restart();
    assert_eq!(d.ok(&["exec", "long", "cat", "/data/f"]), "hi\n");
    daemon.crash_and_restart();
    d.ok(&["exec", "long", "sh", "-c", "echo after-crash >> /data/f"]);
    let ls = d.ok(&["volume", "ls"]);
    assert!(ls.contains("vol1"), "{ls}");
    d.ok(&["rm", "-f", "long"]);
    let refs = daemon.json(&["docker", "refs", "vol1"]);
    assert!(refs[0]["refs"].as_object().unwrap().is_empty(), "{refs}");
    assert_eq!(
        run(&["-v", "vol1:/data:nocopy", IMAGE, "cat", "/data/f"]),
        "hi\nafter-crash\n"
    );

    // inspect shows Docker's options and the plugin's Status.
    let inspect: serde_json::Value =
        serde_json::from_str(&d.ok(&["volume", "inspect", "vol1"])).unwrap();
    let v = &inspect[0];
    assert_eq!(v["Driver"], drv.as_str());
    assert_eq!(v["Options"]["size"], "64Mi");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Status"]["fsType"], "ext4");
    assert_eq!(v["Status"]["sizeBytes"], 64 << 20);
    humantime::parse_rfc3339(v["CreatedAt"].as_str().unwrap()).unwrap();

    // Snapshot and clone through -o fromSnapshot / cloneOf, once the unstage delay has
    // unmounted the volume (a snapshot copies the backing file: flushed data only).
    assert!(eventually(Duration::from_secs(10), || {
        daemon.json(&["docker", "refs", "vol1"])[0]["state"] == "available"
    }));
    let out = daemon.cli(&["snapshot", "create", "snap1", "--volume", "vol1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.ok(&[
        "volume",
        "create",
        "-d",
        &drv,
        "-o",
        "fromSnapshot=snap1",
        "fromsnap",
    ]);
    d.ok(&[
        "volume",
        "create",
        "-d",
        &drv,
        "-o",
        "cloneOf=vol1",
        "clone1",
    ]);
    for name in ["fromsnap", "clone1"] {
        let mount = format!("{name}:/data");
        assert_eq!(
            run(&["-v", &mount, IMAGE, "cat", "/data/f"]),
            "hi\nafter-crash\n",
            "{name}"
        );
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&d.ok(&["volume", "inspect", "fromsnap"])).unwrap();
    assert_eq!(inspect[0]["Options"]["fromSnapshot"], "snap1");
    assert_eq!(inspect[0]["Status"]["source"], "snapshot:snap1");

    // Anonymous volume with --rm: a 64-hex name, removed on exit.
    run(&[
        "--volume-driver",
        &drv,
        "-v",
        "/anon",
        IMAGE,
        "sh",
        "-c",
        "echo x > /anon/x",
    ]);

    // Bad input: the user reads the documented message; nothing is created.
    let err = d.fails(&["volume", "create", "-d", &drv, "-o", "size=10GB", "bad"]);
    assert!(
        err.contains("create bad: volbridge: invalid option: size=\"10GB\": unknown unit \"GB\"; use bytes or Ki, Mi, Gi, Ti (e.g. size=10Gi)"),
        "{err}"
    );
    // Remove everything; `docker volume rm` reaches the CSP. A volume with snapshots is
    // refused with a message that says why.
    d.ok(&["volume", "rm", "fromsnap", "clone1"]);
    let err = d.fails(&["volume", "rm", "vol1"]);
    assert!(
        err.contains("remove vol1: volbridge: ") && err.contains("has snapshots"),
        "{err}"
    );
    let out = daemon.cli(&["snapshot", "rm", "snap1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.ok(&["volume", "rm", "vol1"]);
    let left = daemon.json(&["volume", "ls"]);
    assert_eq!(left.as_array().map(Vec::len), Some(0), "{left}");

    // Teardown by PID: nothing left behind.
    dockerd.stop();
    daemon.stop();
    assert_clean(dir.path(), &[&socket]);
}

#[test]
fn managed_plugin_with_a_real_dockerd() {
    if !require_dockerd("managed_plugin_with_a_real_dockerd") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = TempDir::new("dk-managed");
    let _cleanup = HostCleanup(dir.path().to_path_buf());
    // The bundle from docker-plugin/, around the binary under test.
    let bundle = dir.path().join("bundle");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-plugin/build-rootfs.sh");
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
    let mut dockerd = Dockerd::start(dir.path());
    let d = &dockerd;
    let name = format!("{}:latest", driver_name("managed"));
    let drv = driver_name("managed");
    let state = dir.path().join("plugin-state");
    let run_dir = dir.path().join("plugin-run");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&run_dir).unwrap();
    d.ok(&["plugin", "create", &name, bundle.to_str().unwrap()]);
    d.ok(&[
        "plugin",
        "set",
        &name,
        &format!("state.source={}", state.display()),
        &format!("run.source={}", run_dir.display()),
    ]);
    let started = std::time::Instant::now();
    d.ok(&["plugin", "enable", &name]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "enable took {:?}",
        started.elapsed()
    );

    d.ok(&["volume", "create", "-d", &drv, "-o", "size=64Mi", "mvol1"]);
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
    // The data appears under the plugin's propagated mount on the host.
    let id = d
        .ok(&["plugin", "inspect", &name, "-f", "{{.Id}}"])
        .trim()
        .to_owned();
    let propagated = dockerd
        .data_root
        .join("plugins")
        .join(&id)
        .join("propagated-mount");
    let found = std::fs::read_dir(&propagated)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("f"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no volume under {}", propagated.display()));
    assert_eq!(std::fs::read_to_string(found).unwrap(), "managed\n");
    assert_eq!(d.ok(&["exec", "mlong", "cat", "/data/f"]), "managed\n");
    // The admin socket of the plugin serves the CLI on the host.
    let admin = run_dir.join("volbridge.sock");
    let out = std::process::Command::new(common::BIN)
        .args(["--output", "json", "docker", "refs", "mvol1"])
        .env("VOLBRIDGE_SOCKET", &admin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Disable is refused while a volume exists.
    let err = d.fails(&["plugin", "disable", &name]);
    assert!(err.contains("in use"), "{err}");

    d.ok(&["rm", "-f", "mlong"]);
    d.ok(&["volume", "rm", "mvol1"]);
    d.ok(&["plugin", "disable", &name]);
    d.ok(&["plugin", "rm", &name]);
    dockerd.stop();
    assert_clean(dir.path(), &[]);
}
