//! The FlexVolume driver against kubelet's and KCM's contract (flexvolume.md §14): the real
//! `volbridge-flex`, installed by `volbridge flex install`, driven by an emulated kubelet /
//! KCM (`tests/flex_support`) against a real `volbridge serve` with the embedded local CSP,
//! as root, with real loop devices, mkfs and mounts.
//!
//! Every test names the checklist items it covers as `[Cn]`.

mod common;
mod flex_support;

use flex_support::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn uid(n: usize) -> String {
    format!("pod-{n:04}-0000-4000-8000-000000000000")
}

/// [C1] [C2] [C3] [C4] [C5] [C6] [C7] [C8] [C9] [C10] without a daemon: everything the
/// driver answers locally, with the socket absent or a stand-in that counts connections.
#[test]
fn local_answers_probe_and_output_contract() {
    let dir = common::TempDir::new("flex-local");
    let flex = flex_binary();
    let plugindir = dir.path().join("exec");
    std::fs::create_dir_all(&plugindir).unwrap();
    let out = Command::new(common::BIN)
        .args(["flex", "install", "--dir"])
        .arg(&plugindir)
        .arg("--binary")
        .arg(&flex)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let socket = dir.path().join("absent.sock");
    let config = dir.path().join("flex.toml");
    let log = dir.path().join("log/flex.log");
    let write = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "socket = \"{}\"\nlog_file = \"{}\"\n{extra}\n",
                socket.display(),
                log.display()
            ),
        )
        .unwrap()
    };
    write("");
    // Kubelet's plumbing, without the daemon.
    let mut k = Kubelet::existing(&plugindir, &config, &log, &socket);

    // [C1] [C2] init: Success, exit 0, all five keys, attach:false; fast with no daemon.
    let started = Instant::now();
    let init = k.probe();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "init took {:?}",
        started.elapsed()
    );
    init.expect_ok("init");
    let caps = init.json["capabilities"].as_object().unwrap();
    for key in [
        "attach",
        "selinuxRelabel",
        "fsGroup",
        "supportsMetrics",
        "requiresFSResize",
    ] {
        assert!(caps.contains_key(key), "init lacks {key}: {:?}", init.json);
    }
    assert!(!k.caps.attach && k.caps.fs_group && k.caps.supports_metrics);

    // [C3] the config file decides attach and fsGroup.
    write("mode = \"attach\"\nfs_group = \"volbridge\"");
    k.probe().expect_ok("init, attach mode");
    assert!(k.caps.attach && !k.caps.fs_group);
    write("attach = true\nfs_group = \"off\"");
    k.probe().expect_ok("init, attach shorthand");
    assert!(k.caps.attach && !k.caps.fs_group);
    write("mode = \"sideways\"");
    let bad = k.probe();
    bad.expect_failure("init with a bad config", "invalid config");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("sideways"),
        "a bad mode must still be logged in the configured log_file"
    );
    write("");
    k.probe().expect_ok("init again");

    // [C6] getvolumename: Not supported, exit 0.
    let o = k.call(&["getvolumename", &Opts::new("pv").json()]);
    assert_eq!(o.verdict, Verdict::NotSupported);
    // [C7] an unknown command: Not supported, remembered, never run again until a re-probe.
    let before = k.times_executed("frobnicate");
    assert_eq!(
        k.call(&["frobnicate", "a", "b"]).verdict,
        Verdict::NotSupported
    );
    assert_eq!(k.call(&["frobnicate", "a", "b"]).verdict, Verdict::Cached);
    assert_eq!(k.times_executed("frobnicate"), before + 1);
    k.probe();
    assert_eq!(
        k.call(&["frobnicate", "a", "b"]).verdict,
        Verdict::NotSupported
    );
    // Non-attachable mode: the attach family is Not supported, locally.
    for cmd in [
        "attach",
        "isattached",
        "waitforattach",
        "mountdevice",
        "unmountdevice",
        "detach",
    ] {
        assert_eq!(k.call(&[cmd, "x"]).verdict, Verdict::NotSupported, "{cmd}");
    }

    // [C8] no command.
    let e = k.raw(&[]);
    let o = judge("", &e);
    assert_eq!(o.message, "volbridge: invalid arguments: no command given");
    // [C9] wrong argument count names the shape.
    k.call(&["mount", "/var/lib/kubelet/pods/x/volumes/volbridge~csp/v"])
        .expect_failure(
            "mount with one argument",
            "volbridge: invalid arguments: mount expects 2 (<podVolumeDir> <json>), got 1",
        );

    // [C10] malformed options never reach the daemon: a stand-in counts connections.
    let counting = CountingSocket::start(&dir.path().join("counting.sock"));
    std::fs::write(
        &config,
        format!(
            "socket = \"{}\"\nlog_file = \"{}\"\n",
            counting.path.display(),
            log.display()
        ),
    )
    .unwrap();
    let pod = dir.path().join("kubelet/pods/p/volumes/volbridge~csp/v");
    let pod = pod.to_str().unwrap();
    for (json, needle) in [
        (r#"{"a":"#, "volbridge: invalid options JSON: "),
        (r#"["kubernetes.io/pvOrVolumeName"]"#, "volbridge: invalid options JSON: expected an object, found an array"),
        (
            r#"{"kubernetes.io/pvOrVolumeName":"v","nested":{"a":"b"}}"#,
            "volbridge: invalid options JSON: value of \"nested\" must be a string",
        ),
        (
            r#"{"kubernetes.io/pvOrVolumeName":"v","kubernetes.io/secret/password":"***"}"#,
            "volbridge: invalid option: secret \"password\" is not valid base64",
        ),
        (
            r#"{"kubernetes.io/pvOrVolumeName":"v","size":"10GB"}"#,
            "volbridge: invalid option: size=\"10GB\": unknown unit \"GB\"; use bytes or Ki, Mi, Gi, Ti (e.g. size=10Gi)",
        ),
        (r#"{"kubernetes.io/pvOrVolumeName":"../../etc"}"#, "volbridge: invalid name"),
    ] {
        k.call(&["mount", pod, json]).expect_failure(json, needle);
        k.call(&["expandvolume", json, pod, "2147483648", "1073741824"])
            .expect_failure(json, needle);
    }
    k.call(&["mount", "relative/dir", &Opts::new("v").json()])
        .expect_failure("relative target", "volbridge: invalid arguments");
    assert_eq!(counting.count(), 0, "malformed calls contacted the daemon");
    // Positive control: a well-formed call does connect (and fails: the stand-in hangs up).
    k.call(&["mount", pod, &Opts::new("v").json()])
        .expect_failure("mount against a stand-in", "volbridge:");
    assert!(counting.count() >= 1, "the stand-in saw no connection");

    // [C4] [C5] an induced panic and an unwritable log still give one Failure object,
    // nothing on stderr (checked by exec for every call above too).
    let mut env = k.env.clone();
    env.push(("VOLBRIDGE_FLEX_TEST_PANIC".into(), "1".into()));
    let e = exec(&k.exe, &["init"], &env);
    let o = judge("init", &e);
    o.expect_failure("panic", "volbridge: internal error (ref ");
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    std::fs::write(
        &config,
        format!(
            "socket = \"{}\"\nlog_file = \"{}\"\n",
            socket.display(),
            blocker.join("flex.log").display()
        ),
    )
    .unwrap();
    k.probe().expect_ok("init with an unwritable log");
    k.call(&["mount", "/a", "{"])
        .expect_failure("unwritable log", "invalid options JSON");

    // [C34] one log line per invocation that reached the configured log.
    let lines = std::fs::read_to_string(&log).unwrap();
    for l in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v.get("panic").is_some() {
            continue;
        }
        for key in ["ts", "pid", "cmd", "args", "status", "ms"] {
            assert!(v.get(key).is_some(), "log line lacks {key}: {l}");
        }
    }
    assert!(
        !lines.contains("***\""),
        "a malformed secret value reached the log"
    );
}

/// [C12] [C13] [C14] [C34] plus data surviving unmount and remount: the non-attachable
/// happy path, idempotent repeats, unmounts of what was never mounted.
#[test]
fn mount_unmount_lifecycle_idempotency_and_data() {
    let Some(r) = Rig::start("flex-life", RigOptions::default()) else {
        return;
    };
    let k = &r.k;
    let pod = k.pod_dir(&uid(1), "data");
    let opts = Opts::new("pv-life")
        .pod("web-0", "default", &uid(1))
        .user("autoCreate", "true")
        .user("size", "64Mi");
    // [C12] mount makes the pod dir a writable mount of the volume.
    k.mount(&pod, &opts).expect_ok("mount");
    assert_eq!(mount_count(&pod), 1);
    let payload: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(pod.join("payload.bin"), &payload).unwrap();
    // [C13] a repeated mount (kubelet would skip it; the driver must cope) is Success,
    // still one mountinfo entry.
    let again = k.raw(&["mount", &s(&pod), &opts.json()]);
    judge("mount", &again).expect_ok("repeated mount");
    assert_eq!(
        mount_count(&pod),
        1,
        "a repeated mount stacked a second mount"
    );
    // kubelet's own guard: an existing mount point is not passed to the driver.
    assert!(matches!(k.mount(&pod, &opts).verdict, Verdict::Skipped(_)));
    // [C12] unmount leaves the dir unmounted and empty; kubelet's rmdir succeeds.
    k.unmount(&pod).expect_ok("unmount");
    assert!(!pod.exists());
    r.assert_nothing_left();
    assert_eq!(r.volume("pv-life").unwrap()["published"], false);
    // Data survives unmount and remount; the filesystem is not reformatted.
    k.mount(&pod, &opts).expect_ok("remount");
    assert_eq!(std::fs::read(pod.join("payload.bin")).unwrap(), payload);
    k.unmount(&pod).expect_ok("unmount again");
    // [C14] unmount of a dir never mounted, of a nonexistent path, and a second unmount.
    let never = k.pod_dir(&uid(2), "never");
    mkdir_0750(&never);
    k.unmount(&never)
        .expect_ok("unmount of a never-mounted dir");
    let gone = k.pod_dir(&uid(3), "gone");
    judge("unmount", &k.raw(&["unmount", &s(&gone)])).expect_ok("unmount of a missing path");
    judge("unmount", &k.raw(&["unmount", &s(&pod)])).expect_ok("second unmount");
    // A mount point volbridge does not know is refused, never unmounted blindly.
    let foreign = k.pod_dir(&uid(4), "foreign");
    mkdir_0750(&foreign);
    assert!(Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&foreign)
        .status()
        .unwrap()
        .success());
    judge("unmount", &k.raw(&["unmount", &s(&foreign)]))
        .expect_failure("unmount of a foreign mount", "volbridge: in use:");
    assert!(is_mount_point(&foreign), "a foreign mount was unmounted");
    Command::new("umount").arg(&foreign).status().unwrap();
    r.assert_nothing_left();
    // [C34] one log line per invocation, with command, status and duration.
    let records = k.log_records();
    let mounts = records.iter().filter(|l| l["cmd"] == "mount").count();
    let unmounts = records.iter().filter(|l| l["cmd"] == "unmount").count();
    assert_eq!(mounts, k.times_executed("mount"), "{records:?}");
    assert_eq!(unmounts, k.times_executed("unmount"));
    for l in &records {
        assert!(l["ms"].as_f64().is_some() && l["status"].is_string(), "{l}");
    }
    assert!(
        records
            .iter()
            .any(|l| l["cmd"] == "mount"
                && l["request_ids"].as_array().is_some_and(|a| !a.is_empty()))
    );
}

/// [C11] [C16] [C17] [C18] [C19] [C22]: what the options say reaches the daemon, exactly.
#[test]
fn options_reach_the_daemon_exactly() {
    let Some(r) = Rig::start("flex-opts", RigOptions::default()) else {
        return;
    };
    require_tool("mkfs.xfs");
    let k = &r.k;
    // [C18] a missing volume without autoCreate: Failure, nothing mounted, nothing created.
    let pod = k.pod_dir(&uid(1), "missing");
    k.mount(&pod, &Opts::new("pv-missing").user("size", "2Gi")).expect_failure(
        "mount of a missing volume",
        "volbridge: no such volume: \"pv-missing\" on the default backend; create it first or set option autoCreate=true",
    );
    assert!(!is_mount_point(&pod) && dir_is_empty(&pod));
    assert!(r.volume("pv-missing").is_none());
    // [C18] autoCreate=true, size=2Gi: created at 2 GiB and mounted.
    // [C11] [C22] Go escapes decode to the original text; a backend's own setting
    // (`csp.<name>`) reaches the CSP config.
    let opts = Opts::new("pv-missing")
        .user("autoCreate", "true")
        .user("size", "2Gi")
        .user("description", "db <primary> & co")
        .user("csp.performancePolicy", "fast&<safe>");
    assert!(opts.json().contains("\\u003cprimary\\u003e \\u0026 co"));
    k.mount(&pod, &opts).expect_ok("autoCreate mount");
    let v = r.volume("pv-missing").unwrap();
    assert_eq!(v["size_bytes"], 2 * GIB, "{v}");
    assert_eq!(v["description"], "db <primary> & co");
    assert_eq!(v["config"]["performancePolicy"], "fast&<safe>", "{v}");
    assert!(is_mount_point(&pod));
    k.unmount(&pod).expect_ok("unmount");
    // [C22] an invalid size gives the shared option error text.
    k.mount(&k.pod_dir(&uid(9), "x"), &Opts::new("pv-x").user("autoCreate", "true").user("size", "10"))
        .expect_failure(
            "size=10",
            "volbridge: invalid option: size=\"10\" is 10 bytes, below the 1Mi minimum; did you mean size=10Gi?",
        );
    // The one option table: a misspelt option is refused, naming the known ones, and
    // nothing is made.
    k.mount(&k.pod_dir(&uid(9), "x"), &Opts::new("pv-typo").user("autoCreate", "true").user("sise", "2Gi"))
        .expect_failure(
            "sise=2Gi",
            "volbridge: invalid option: unknown option \"sise\" (did you mean size?); known: size, fsType, mkfsOptions, mountOptions, fsOwner, fsMode, description, fromSnapshot, cloneOf, readOnly, backend, thick, destroyOnDelete, volumeName, autoCreate; give a backend's own setting as csp.<name>=<value>",
        );
    assert!(r.volume("pv-typo").is_none());

    // [C17] volumeName selects the backend volume.
    let created =
        r.d.cli(&["volume", "create", "backend-vol", "--size", "64Mi"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let pod2 = k.pod_dir(&uid(2), "named");
    k.mount(
        &pod2,
        &Opts::new("pv-other-name").user("volumeName", "backend-vol"),
    )
    .expect_ok("mount by volumeName");
    let staged = r.staged("backend-vol").expect("backend-vol staged");
    assert_eq!(staged["published_at"][0], s(&pod2));
    assert!(
        r.volume("pv-other-name").is_none(),
        "the PV name was used as volume name"
    );
    // [C16] readwrite absent → read-write; ro → EROFS.
    let rw_opts = Opts::new("pv-other-name")
        .user("volumeName", "backend-vol")
        .without("kubernetes.io/readwrite");
    k.unmount(&pod2).expect_ok("unmount");
    k.mount(&pod2, &rw_opts)
        .expect_ok("mount without readwrite");
    std::fs::write(pod2.join("note"), b"written rw").unwrap();
    k.unmount(&pod2).expect_ok("unmount");
    k.mount(&pod2, &rw_opts.clone().read_only())
        .expect_ok("mount ro");
    let err = std::fs::write(pod2.join("other"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "expected EROFS, got {err}");
    assert_eq!(std::fs::read(pod2.join("note")).unwrap(), b"written rw");
    k.unmount(&pod2).expect_ok("unmount ro");

    // [C19] user fsType beats kubernetes.io/fsType; an existing filesystem is never
    // reformatted (a later, different fsType mounts what is there).
    let pod3 = k.pod_dir(&uid(3), "xfs");
    let xfs = Opts::new("pv-xfs")
        .fs_type("ext4")
        .user("fsType", "xfs")
        .user("autoCreate", "true")
        .user("size", "320Mi");
    k.mount(&pod3, &xfs).expect_ok("mount with fsType=xfs");
    assert_eq!(fs_type_at(&pod3).as_deref(), Some("xfs"));
    std::fs::write(pod3.join("keep"), b"xfs data").unwrap();
    k.unmount(&pod3).expect_ok("unmount xfs");
    let ext4 = Opts::new("pv-xfs").fs_type("ext4");
    k.mount(&pod3, &ext4).expect_ok("remount asking for ext4");
    assert_eq!(
        fs_type_at(&pod3).as_deref(),
        Some("xfs"),
        "the volume was reformatted"
    );
    assert_eq!(std::fs::read(pod3.join("keep")).unwrap(), b"xfs data");
    k.unmount(&pod3).expect_ok("unmount");
    let warned = k
        .log_records()
        .iter()
        .any(|l| l["warnings"].to_string().contains("not used"));
    assert!(warned, "the fsType mismatch was not logged");
    r.assert_nothing_left();
}

/// [C15] two pods, one volume: one stage, two publications; the last unmount releases.
#[test]
fn two_pods_share_one_stage() {
    let Some(r) = Rig::start("flex-share", RigOptions::default()) else {
        return;
    };
    let k = &r.k;
    let opts = Opts::new("pv-shared")
        .user("autoCreate", "true")
        .user("size", "64Mi");
    let a = k.pod_dir(&uid(1), "shared");
    let b = k.pod_dir(&uid(2), "shared");
    k.mount(&a, &opts).expect_ok("pod a");
    k.mount(&b, &opts).expect_ok("pod b");
    let staged = r.staged("pv-shared").unwrap();
    assert_eq!(
        staged["published_at"].as_array().unwrap().len(),
        2,
        "{staged}"
    );
    assert_eq!(r.loops().len(), 1, "{:?}", r.loops());
    std::fs::write(a.join("from-a"), b"a").unwrap();
    k.unmount(&a).expect_ok("unmount a");
    assert_eq!(std::fs::read(b.join("from-a")).unwrap(), b"a");
    std::fs::write(b.join("from-b"), b"b").unwrap();
    assert_eq!(r.loops().len(), 1);
    k.unmount(&b).expect_ok("unmount b");
    assert!(r.staged("pv-shared").is_none());
    r.assert_nothing_left();
}

/// [C22] `mkfsOptions` of the shared option table: kept by autoCreate as the volume's
/// `fsCreateOptions` and used when the node formats it.
#[test]
fn mkfs_options_reach_mkfs() {
    let Some(r) = Rig::start("flex-mkfs", RigOptions::default()) else {
        return;
    };
    let opts = Opts::new("pv-mkfs")
        .user("autoCreate", "true")
        .user("size", "64Mi")
        .user("fsType", "ext4")
        .user("mkfsOptions", "-L flexlabel -m 0");
    let pod = r.k.pod_dir(&uid(1), "mkfs");
    r.k.mount(&pod, &opts).expect_ok("mount with mkfsOptions");
    let device = r.loops()[0].0.clone();
    let label = std::process::Command::new("blkid")
        .args(["-s", "LABEL", "-o", "value", &device])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "flexlabel");
    r.k.unmount(&pod).expect_ok("unmount");
    r.assert_nothing_left();
}

/// [C20] both fsGroup keys under `fs_group = "volbridge"` (mounterArgs.FsGroup wins).
#[test]
fn fs_group_applied_by_volbridge() {
    let Some(mut r) = Rig::start(
        "flex-fsgroup",
        RigOptions {
            flex: "fs_group = \"volbridge\"",
            ..Default::default()
        },
    ) else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    r.k.probe().expect_ok("init");
    assert!(
        !r.k.caps.fs_group,
        "fs_group=volbridge must report fsGroup:false"
    );
    let k = &r.k;
    let both = k.pod_dir(&uid(1), "both");
    let opts = Opts::new("pv-g1")
        .user("autoCreate", "true")
        .user("size", "64Mi")
        .fs_group(1234, false)
        .fs_group(999, true);
    k.mount(&both, &opts).expect_ok("mount with both keys");
    let m = std::fs::metadata(&both).unwrap();
    assert_eq!(m.gid(), 1234, "mounterArgs.FsGroup must win");
    assert_eq!(m.mode() & 0o2070, 0o2070, "mode {:o}", m.mode());
    let legacy = k.pod_dir(&uid(2), "legacy");
    k.mount(
        &legacy,
        &Opts::new("pv-g2")
            .user("autoCreate", "true")
            .user("size", "64Mi")
            .fs_group(4321, true),
    )
    .expect_ok("mount with the legacy key");
    assert_eq!(std::fs::metadata(&legacy).unwrap().gid(), 4321);
    // fsOwner / fsMode at first format.
    let owned = k.pod_dir(&uid(3), "owned");
    k.mount(
        &owned,
        &Opts::new("pv-g3")
            .user("autoCreate", "true")
            .user("size", "64Mi")
            .user("fsOwner", "999:998")
            .user("fsMode", "0770"),
    )
    .expect_ok("mount with fsOwner");
    let m = std::fs::metadata(&owned).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (999, 998, 0o770));
    for p in [&both, &legacy, &owned] {
        k.unmount(p).expect_ok("unmount");
    }
    r.assert_nothing_left();
}

/// The embedded CSP's credentials, as a Secret of type volbridge/csp would carry them.
fn embedded_password(r: &Rig) -> String {
    std::fs::read_to_string(r.d.state.join("local-csp.password"))
        .unwrap()
        .trim()
        .to_owned()
}

/// [C21] base64 secrets reach the CSP decoded and select its backend; invalid base64 is a
/// Failure; no secret value reaches flex.log or the daemon log.
#[test]
fn secrets_select_the_backend_and_never_reach_a_log() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let Some(r) = Rig::start(
        "flex-secrets",
        RigOptions {
            daemon_args: &["--csp-listen", &listen],
            ..Default::default()
        },
    ) else {
        return;
    };
    let k = &r.k;
    let password = embedded_password(&r);
    let planted = format!("planted-Pw-{}", std::process::id());
    let with = |o: Opts, pw: &str| {
        o.secret("backend", "local-by-secret")
            .secret("serviceName", "127.0.0.1")
            .secret("servicePort", &port.to_string())
            .secret("username", "volbridge")
            .secret("password", pw)
    };
    let pod = k.pod_dir(&uid(1), "sec");
    let opts = with(
        Opts::new("pv-sec")
            .pod("db-0", "prod", &uid(1))
            .user("autoCreate", "true")
            .user("size", "64Mi"),
        &password,
    );
    k.mount(&pod, &opts).expect_ok("mount with secrets");
    let staged = r.staged("pv-sec").expect("staged");
    let backend = staged["backend"].as_str().unwrap().to_owned();
    assert!(
        backend != "local" && backend.contains("local-by-secret"),
        "the secrets did not select their backend: {backend}"
    );
    std::fs::write(pod.join("f"), b"x").unwrap();
    // A wrong password fails at the CSP, and the message does not echo it.
    let bad_pod = k.pod_dir(&uid(2), "bad");
    let bad = k.mount(
        &bad_pod,
        &with(Opts::new("pv-sec2").user("autoCreate", "true"), &planted),
    );
    bad.expect_failure("wrong password", "volbridge:");
    assert!(!bad.message.contains(&planted));
    // Invalid base64.
    k.mount(
        &bad_pod,
        &Opts::new("pv-sec3").secret_raw("password", "%%%not-base64"),
    )
    .expect_failure("bad base64", "secret \"password\" is not valid base64");
    // A backend option that disagrees with the secrets.
    k.mount(
        &bad_pod,
        &with(Opts::new("pv-sec").user("backend", "local"), &password),
    )
    .expect_failure(
        "backend disagreeing with secrets",
        "volbridge: invalid option:",
    );
    k.unmount(&pod).expect_ok("unmount (no secrets needed)");
    r.assert_nothing_left();
    let flex_log = std::fs::read_to_string(&k.log).unwrap();
    let daemon_log = r.d.log_text();
    for secret in [password.as_str(), planted.as_str()] {
        for (name, text) in [("flex.log", &flex_log), ("daemon log", &daemon_log)] {
            assert!(!text.contains(secret), "a secret reached the {name}");
            assert!(
                !text.contains(&base64(secret.as_bytes())),
                "a base64 secret reached the {name}"
            );
        }
    }
    assert!(flex_log.contains("<redacted>"));
}

/// [C23] daemon stopped: Failure with the "not running" text after about 10 s; started
/// within that window: the same call succeeds.
#[test]
fn daemon_down_then_up() {
    if !common::require_root_and_tools("flex-down") {
        return;
    }
    let dir = common::TempDir::new("flex-down");
    let _cleanup = common::HostCleanup(dir.path().to_path_buf());
    let socket = dir.path().join("admin.sock");
    let plugindir = dir.path().join("exec");
    std::fs::create_dir_all(&plugindir).unwrap();
    let install = Command::new(common::BIN)
        .args(["flex", "install", "--dir"])
        .arg(&plugindir)
        .arg("--binary")
        .arg(flex_binary())
        .output()
        .unwrap();
    assert!(install.status.success());
    let config = dir.path().join("flex.toml");
    let k = Kubelet::existing(&plugindir, &config, &dir.path().join("flex.log"), &socket);
    k.write_config("");
    let pod = k.pod_dir(&uid(1), "late");
    let opts = Opts::new("pv-late")
        .user("autoCreate", "true")
        .user("size", "64Mi");
    let o = k.mount(&pod, &opts);
    let took = o.exec.as_ref().unwrap().elapsed;
    o.expect_failure(
        "mount with no daemon",
        &format!(
            "volbridge: node daemon not running: no socket at {}; start the volbridge service",
            socket.display()
        ),
    );
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(15)).contains(&took),
        "gave up after {took:?}, expected about 10 s"
    );
    // The daemon comes up 2 s into the next call: the call waits for it and succeeds.
    let started = std::thread::scope(|scope| {
        let call = scope.spawn(|| k.mount(&pod, &opts));
        std::thread::sleep(Duration::from_secs(2));
        let d = common::Daemon::start(dir.path(), &[]);
        let o = call.join().unwrap();
        o.expect_ok("mount while the daemon starts");
        d
    });
    assert!(is_mount_point(&pod));
    k.unmount(&pod).expect_ok("unmount");
    drop(started);
}

/// [C24] a daemon restart (graceful, then a crash) unmounts nothing; a later unmount tears
/// everything down.
#[test]
fn daemon_restart_keeps_mounts() {
    let Some(mut r) = Rig::start("flex-restart", RigOptions::default()) else {
        return;
    };
    let pod = r.k.pod_dir(&uid(1), "kept");
    let opts = Opts::new("pv-kept")
        .user("autoCreate", "true")
        .user("size", "64Mi");
    r.k.mount(&pod, &opts).expect_ok("mount");
    std::fs::write(pod.join("f"), b"before restart").unwrap();
    r.d.restart();
    assert!(
        is_mount_point(&pod),
        "a graceful restart unmounted the pod dir"
    );
    r.d.crash_and_restart();
    assert!(
        is_mount_point(&pod),
        "a crash and restart unmounted the pod dir"
    );
    assert_eq!(std::fs::read(pod.join("f")).unwrap(), b"before restart");
    r.k.unmount(&pod).expect_ok("unmount after restarts");
    r.assert_nothing_left();
}

/// [C25] 16 parallel mounts of distinct volumes; 2 parallel mounts of one volume to two
/// pod dirs make one attach and one stage.
#[test]
fn parallel_mounts() {
    let Some(r) = Rig::start("flex-parallel", RigOptions::default()) else {
        return;
    };
    let k = &r.k;
    let pods: Vec<_> = (0..16)
        .map(|i| (k.pod_dir(&uid(i), "v"), format!("pv-par-{i}")))
        .collect();
    std::thread::scope(|scope| {
        let calls: Vec<_> = pods
            .iter()
            .map(|(pod, pv)| {
                scope.spawn(move || {
                    k.mount(
                        pod,
                        &Opts::new(pv)
                            .user("autoCreate", "true")
                            .user("size", "32Mi"),
                    )
                })
            })
            .collect();
        for c in calls {
            c.join().unwrap().expect_ok("parallel mount");
        }
    });
    assert_eq!(r.loops().len(), 16);
    let one = Opts::new("pv-par-one")
        .user("autoCreate", "true")
        .user("size", "32Mi");
    let (a, b) = (k.pod_dir(&uid(100), "one"), k.pod_dir(&uid(101), "one"));
    std::thread::scope(|scope| {
        let x = scope.spawn(|| k.mount(&a, &one));
        let y = scope.spawn(|| k.mount(&b, &one));
        x.join().unwrap().expect_ok("mount a");
        y.join().unwrap().expect_ok("mount b");
    });
    assert_eq!(
        r.loops().len(),
        17,
        "two mounts of one volume attached it twice"
    );
    let staged = r.staged("pv-par-one").unwrap();
    assert_eq!(staged["published_at"].as_array().unwrap().len(), 2);
    assert_eq!(
        r.node()["volumes"].as_array().unwrap().len(),
        17,
        "one stage per volume"
    );
    std::thread::scope(|scope| {
        for (pod, _) in &pods {
            scope.spawn(move || {
                k.unmount(pod).expect_ok("parallel unmount");
            });
        }
        scope.spawn(|| {
            k.unmount(&a).expect_ok("unmount a");
        });
        scope.spawn(|| {
            k.unmount(&b).expect_ok("unmount b");
        });
    });
    r.assert_nothing_left();
}

/// [C26] [C27] a slow daemon (mkfs takes 4 s): a mount past a lowered budget fails with
/// `timeout` and the retry succeeds with no second attach or stage; a driver killed
/// mid-mount does not stop the daemon, and the retry finds the work done.
#[test]
fn budgets_and_killed_callers() {
    if !common::require_root_and_tools("flex-slow") {
        return;
    }
    let bin = common::TempDir::new("flex-slow-bin");
    let real = ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("mkfs.ext4");
    make_executable(
        &bin.path().join("mkfs.ext4"),
        &format!("#!/bin/sh\nsleep 4\nexec {real} \"$@\"\n"),
    );
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let Some(r) = Rig::start(
        "flex-slow",
        RigOptions {
            daemon_env: &[("PATH", &path)],
            flex: "[budgets]\nmount = 1",
            ..Default::default()
        },
    ) else {
        return;
    };
    let k = &r.k;
    // [C26]
    let pod = k.pod_dir(&uid(1), "slow");
    let opts = Opts::new("pv-slow")
        .user("autoCreate", "true")
        .user("size", "64Mi");
    let o = k.mount(&pod, &opts);
    o.expect_failure(
        "mount past its budget",
        "volbridge: timeout: node daemon did not finish mount of \"pv-slow\" within 1s",
    );
    assert!(o.exec.unwrap().elapsed < Duration::from_secs(4));
    k.write_config(&format!(
        "attach_dir = \"{}\"",
        r.path("attached").display()
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = k.mount(&pod, &opts);
        if o.ok() || matches!(o.verdict, Verdict::Skipped(_)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retry never succeeded: {o:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(mount_count(&pod), 1);
    assert_eq!(r.loops().len(), 1, "a second attach: {:?}", r.loops());
    assert_eq!(r.node()["volumes"].as_array().unwrap().len(), 1);
    // [C27] SIGKILL mid-mount: the daemon finishes; the retry is Success, one mount.
    let pod2 = k.pod_dir(&uid(2), "killed");
    mkdir_0750(&pod2);
    let opts2 = Opts::new("pv-killed")
        .user("autoCreate", "true")
        .user("size", "64Mi");
    let mut child = Command::new(&k.exe)
        .args(["mount", &s(&pod2), &opts2.json()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(k.env.iter().map(|(a, b)| (a.as_str(), b.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_mount_point(&pod2) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not finish the killed caller's mount:\n{}",
            r.daemon_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    judge("mount", &k.raw(&["mount", &s(&pod2), &opts2.json()])).expect_ok("retry after kill");
    assert_eq!(mount_count(&pod2), 1);
    assert_eq!(r.loops().len(), 2);
    k.unmount(&pod).expect_ok("unmount");
    k.unmount(&pod2).expect_ok("unmount");
    r.assert_nothing_left();
}

/// [C28] [C29] the attachable flow, step by step, with idempotent repeats.
#[test]
fn attachable_flow() {
    let Some(mut r) = Rig::start(
        "flex-attach",
        RigOptions {
            flex: "mode = \"attach\"",
            ..Default::default()
        },
    ) else {
        return;
    };
    r.k.probe().expect_ok("init");
    assert!(r.k.caps.attach);
    let node = r.hostname();
    let k = &r.k;
    let pv = "pv-att";
    let opts = Opts::new(pv)
        .user("autoCreate", "true")
        .user("size", "64Mi");
    // Not this node: refused (the daemon attaches only its own host).
    k.attach(&opts, "some-other-node").expect_failure(
        "attach to another node",
        "volbridge: no such node: \"some-other-node\"",
    );
    // A pod mount before the device is staged: refused.
    let early = k.pod_dir(&uid(9), "early");
    k.mount(&early, &opts)
        .expect_failure("mount before mountdevice", "volbridge: not staged:");
    std::fs::remove_dir(&early).unwrap();
    // [C28] attach → isattached → waitforattach → mountdevice → mount → unmount →
    // unmountdevice → detach → isattached false.
    let a = k.attach(&opts, &node);
    a.expect_ok("attach");
    let hint = a.device.clone().unwrap_or_default();
    // [C29] attach again.
    k.attach(&opts, &node).expect_ok("attach again");
    assert_eq!(
        k.is_attached(&opts, &node).expect_ok("isattached").attached,
        Some(true)
    );
    let w = k.wait_for_attach(&hint, &opts);
    w.expect_ok("waitforattach");
    let device = w.device.clone().expect("waitforattach gives a device");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata(&device)
            .unwrap()
            .file_type()
            .is_block_device(),
        "{device} is not a block device"
    );
    let dmp = k.device_mount_path(pv);
    k.mount_device(&dmp, &device, &opts)
        .expect_ok("mountdevice");
    assert!(is_mount_point(&dmp));
    // [C29] mountdevice again (kubelet would skip it).
    judge(
        "mountdevice",
        &k.raw(&["mountdevice", &s(&dmp), &device, &opts.json()]),
    )
    .expect_ok("mountdevice again");
    assert_eq!(mount_count(&dmp), 1);
    let pod = k.pod_dir(&uid(1), "att");
    k.mount(&pod, &opts.clone().pod("app-0", "default", &uid(1)))
        .expect_ok("mount");
    std::fs::write(pod.join("f"), b"attached data").unwrap();
    assert_eq!(std::fs::read(dmp.join("f")).unwrap(), b"attached data");
    k.unmount(&pod).expect_ok("unmount");
    k.unmount_device(&dmp).expect_ok("unmountdevice");
    assert!(!dmp.exists());
    // [C29] unmountdevice of a path that is not mounted.
    mkdir_0750(&dmp);
    judge("unmountdevice", &k.raw(&["unmountdevice", &s(&dmp)])).expect_ok("unmountdevice again");
    std::fs::remove_dir(&dmp).unwrap();
    // Still attached until KCM detaches.
    assert_eq!(r.loops().len(), 1);
    assert_eq!(k.is_attached(&opts, &node).attached, Some(true));
    k.detach(pv, &node).expect_ok("detach");
    // [C29] detach again.
    k.detach(pv, &node).expect_ok("detach again");
    assert_eq!(
        k.is_attached(&opts, &node).expect_ok("isattached").attached,
        Some(false)
    );
    r.assert_nothing_left();
    // Data is still there for the next attach.
    k.attach(&opts, &node).expect_ok("attach once more");
    k.mount_device(&dmp, "", &opts).expect_ok("mountdevice");
    assert_eq!(std::fs::read(dmp.join("f")).unwrap(), b"attached data");
    k.unmount_device(&dmp).expect_ok("unmountdevice");
    k.detach(pv, &node).expect_ok("detach");
    r.assert_nothing_left();
}

/// [C30] [C31] attachable mode against a CSP that refuses connections (isattached must
/// fail, never say false) and one that never answers (waitforattach fails within its
/// lowered budget, far below kubelet's 600 s).
#[test]
fn attachable_faults() {
    let hole = BlackHole::start();
    let dead = free_port();
    let config = format!(
        "[backends.dead]\nbackend = \"dead\"\nserviceName = \"127.0.0.1\"\nservicePort = \"{dead}\"\nusername = \"u\"\npassword = \"p\"\n\n\
         [backends.hung]\nbackend = \"hung\"\nserviceName = \"127.0.0.1\"\nservicePort = \"{}\"\nusername = \"u\"\npassword = \"p\"\n",
        hole.port
    );
    let Some(r) = Rig::start(
        "flex-faults",
        RigOptions {
            daemon_config: Some(&config),
            flex: "mode = \"attach\"\n[budgets]\nwaitforattach = 3\nisattached = 60",
            ..Default::default()
        },
    ) else {
        return;
    };
    let node = r.hostname();
    let k = &r.k;
    // [C30]
    let o = k.is_attached(&Opts::new("pv-dead").user("backend", "dead"), &node);
    o.expect_failure("isattached with the CSP down", "volbridge:");
    assert_eq!(
        o.attached, None,
        "isattached answered attached with the CSP down"
    );
    // [C31]
    let o = k.wait_for_attach("", &Opts::new("pv-hung").user("backend", "hung"));
    o.expect_failure(
        "waitforattach with a hung CSP",
        "volbridge: timeout: node daemon did not finish waitforattach of \"pv-hung\" within 3s",
    );
    let took = o.exec.unwrap().elapsed;
    assert!(took < Duration::from_secs(10), "took {took:?}");
    r.assert_nothing_left();
}

/// [C32] expandvolume then expandfs grow the filesystem; repeating both is Success.
#[test]
fn expand_volume_and_filesystem() {
    let Some(r) = Rig::start("flex-expand", RigOptions::default()) else {
        return;
    };
    let k = &r.k;
    let pod = k.pod_dir(&uid(1), "grow");
    let opts = Opts::new("pv-grow")
        .user("autoCreate", "true")
        .user("size", "64Mi");
    k.mount(&pod, &opts).expect_ok("mount");
    let before = fs_bytes(&pod);
    assert!(before < 64 * MIB);
    let dmp = k.device_mount_path("pv-grow");
    let (new, old) = (256 * MIB, 64 * MIB);
    for round in 0..2 {
        k.expand_volume(&opts, &dmp, new, old)
            .expect_ok(&format!("expandvolume, round {round}"));
        k.expand_fs(&opts, "", &dmp, new, old)
            .expect_ok(&format!("expandfs, round {round}"));
    }
    assert_eq!(r.volume("pv-grow").unwrap()["size_bytes"], new);
    let after = fs_bytes(&pod);
    assert!(
        after > 200 * MIB,
        "filesystem is {after} bytes after growing to {new}"
    );
    k.expand_volume(&Opts::new("pv-nope"), &dmp, new, old)
        .expect_failure("expand of a missing volume", "volbridge: no such volume");
    k.unmount(&pod).expect_ok("unmount");
    r.assert_nothing_left();
}

/// [C33] `volbridge flex install` while a kubelet-like prober re-probes on every inotify
/// event: never a partial executable (no ENOEXEC / ETXTBSY / bad output), identical bytes
/// produce no event, nothing but the executable in the driver dir. Also: without
/// `--binary`, the driver next to `volbridge` is installed and runs.
#[test]
fn atomic_install_under_probing() {
    let dir = common::TempDir::new("flex-install");
    let plugindir = dir.path().join("exec");
    std::fs::create_dir_all(&plugindir).unwrap();
    let config = dir.path().join("flex.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"{}\"\nlog_file = \"{}\"\n",
            dir.path().join("none.sock").display(),
            dir.path().join("flex.log").display()
        ),
    )
    .unwrap();
    let env = vec![("VOLBRIDGE_FLEX_CONFIG".to_owned(), s(&config))];
    let v1 = flex_binary();
    // A second, different but valid build of the same driver: trailing bytes after the ELF
    // image change the file, not the program.
    let v2 = dir.path().join("volbridge-flex-v2");
    let mut bytes = std::fs::read(&v1).unwrap();
    bytes.extend_from_slice(&[0x5a; 4096]);
    std::fs::write(&v2, &bytes).unwrap();
    let install = |binary: Option<&Path>| {
        let mut c = Command::new(common::BIN);
        c.args(["--output", "json", "flex", "install", "--dir"])
            .arg(&plugindir);
        if let Some(b) = binary {
            c.arg("--binary").arg(b);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["action"].as_str().unwrap().to_owned()
    };
    let prober = Prober::start(&plugindir, env.clone());
    // Another prober-like loop runs init as fast as it can, to hit any window.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let exe = plugindir.join("volbridge~csp/csp");
    let spin_errors = std::thread::scope(|scope| {
        let spinner = scope.spawn(|| {
            let mut errors = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if !exe.exists() {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                match Command::new(&exe)
                    .arg("init")
                    .env_clear()
                    .envs(env.clone())
                    .output()
                {
                    Ok(o) if o.status.success() && o.stderr.is_empty() => {}
                    Ok(o) => errors.push(format!("init: {o:?}")),
                    Err(e) => errors.push(format!("exec: {e}")),
                }
            }
            errors
        });
        assert_eq!(install(Some(&v1)), "installed");
        prober.settle(Duration::from_millis(300));
        let events = prober.events();
        assert!(events > 0, "the first install made no event");
        assert_eq!(install(Some(&v1)), "unchanged");
        prober.settle(Duration::from_millis(300));
        assert_eq!(
            prober.events(),
            events,
            "reinstalling identical bytes made events"
        );
        for round in 0..3 {
            assert_eq!(install(Some(&v2)), "upgraded", "round {round}");
            assert_eq!(install(Some(&v1)), "upgraded", "round {round}");
        }
        prober.settle(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        spinner.join().unwrap()
    });
    let log = prober.stop();
    assert!(spin_errors.is_empty(), "{spin_errors:?}");
    assert!(log.errors.is_empty(), "probe errors: {:?}", log.errors);
    assert!(log.probes >= 2, "{log:?}");
    let names = |p: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&plugindir), ["volbridge~csp"]);
    assert_eq!(names(&plugindir.join("volbridge~csp")), ["csp"]);
    // Without --binary: the volbridge-flex next to this volbridge, at <vendor>~<driver>/<driver>.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let out = Command::new(common::BIN)
        .args(["flex", "install", "--dir"])
        .arg(&other)
        .args(["--vendor", "acme", "--driver", "blocks"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = other.join("acme~blocks/blocks");
    let e = exec(&installed, &["init"], &env);
    judge("init", &e).expect_ok("init of the default-binary install");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&v1).unwrap()
    );
    // A missing plugin dir is an error, not created.
    let out = Command::new(common::BIN)
        .args(["flex", "install", "--dir"])
        .arg(dir.path().join("nope"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!dir.path().join("nope").exists());
}

/// [C35] A volume mounted with secrets-only credentials, then a daemon restart: the
/// credentials lived in memory only. `unmount` still succeeds and leaves no host mount or
/// loop device; the CSP grant is marked release-pending and ended by the next mount that
/// brings the same secrets.
#[test]
fn secrets_only_backend_across_a_daemon_restart() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let Some(mut r) = Rig::start(
        "flex-sec-restart",
        RigOptions {
            daemon_args: &["--csp-listen", &listen],
            ..Default::default()
        },
    ) else {
        return;
    };
    let password = embedded_password(&r);
    let with = |o: Opts| {
        o.secret("backend", "local-by-secret")
            .secret("serviceName", "127.0.0.1")
            .secret("servicePort", &port.to_string())
            .secret("username", "volbridge")
            .secret("password", &password)
            .user("autoCreate", "true")
            .user("size", "64Mi")
    };
    let pod = r.k.pod_dir(&uid(1), "sec");
    r.k.mount(&pod, &with(Opts::new("pv-sec-r")))
        .expect_ok("mount with secrets");
    r.d.restart();
    // The credentials are gone with the restart: the node side is torn down anyway, and
    // the CSP grant waits (release pending).
    r.k.unmount(&pod)
        .expect_ok("unmount after the credentials are gone");
    assert!(!is_mount_point(&pod), "the pod dir is released");
    let node = r.d.json(&["node"]);
    let pending = node["pending_releases"].to_string();
    assert!(pending.contains("pv-sec-r"), "release pending: {node}");
    assert!(
        node["volumes"].as_array().is_none_or(|v| v.is_empty()),
        "nothing staged: {node}"
    );
    // The next mount that brings the same secrets ends the pending grant.
    let other = r.k.pod_dir(&uid(2), "sec");
    r.k.mount(&other, &with(Opts::new("pv-sec-other")))
        .expect_ok("mount bringing the secrets");
    let node = r.d.json(&["node"]);
    assert!(
        node["pending_releases"]
            .as_array()
            .is_none_or(|p| p.is_empty()),
        "the pending release is done: {node}"
    );
    r.k.unmount(&other).expect_ok("last unmount");
    r.assert_nothing_left();
}
