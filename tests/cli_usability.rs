//! What a new user meets with the CLI (issue 16), through the real binary against a real
//! daemon: the README's node examples run as written; a second mount of a volume either
//! works or says the rule, where the volume is and what to run; no silent no-ops (`rm` of a
//! name that does not exist, a shrinking expand, a misspelt `-o`); errors name volumes by
//! name and path, never by id; expand says how the filesystem grew, in the table too; a user
//! who may not open the admin socket is told so.

mod common;

use common::{
    loops_under, mounts_under, readme_block, require_root_and_tools, run, run_script, Daemon,
    HostCleanup, TempDir,
};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

struct Rig {
    d: Daemon,
    dir: TempDir,
    _cleanup: HostCleanup,
}

impl Rig {
    fn start(tag: &str, extra: &[&str]) -> Rig {
        let dir = TempDir::new(tag);
        let cleanup = HostCleanup(dir.path().to_path_buf());
        let d = Daemon::start(dir.path(), extra);
        Rig {
            d,
            dir,
            _cleanup: cleanup,
        }
    }

    fn path(&self, p: &str) -> String {
        self.dir.path().join(p).display().to_string()
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = run(&self.d, args);
        assert_eq!(code, 0, "volbridge {args:?} failed: {err}{out}");
        out
    }

    /// Runs a command that must fail with `code`; its stderr, one line, `volbridge: …`.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let (got, out, err) = run(&self.d, args);
        assert_eq!(got, code, "volbridge {args:?}: {err}{out}");
        assert!(err.starts_with("volbridge: "), "{err}");
        err
    }

    fn id_of(&self, volume: &str) -> String {
        self.d.json(&["volume", "inspect", volume])["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn assert_nothing_left(&self) {
        assert!(
            loops_under(self.dir.path()).is_empty(),
            "leaked loop devices: {:?}",
            loops_under(self.dir.path())
        );
        assert!(
            mounts_under(self.dir.path()).is_empty(),
            "leaked mounts: {:?}",
            mounts_under(self.dir.path())
        );
    }
}

/// Every word of a message must be the user's: no volume id.
fn assert_no_id(err: &str, id: &str) {
    assert!(
        !err.contains(id),
        "the message names the internal id {id}: {err}"
    );
}

/// README.md's "Using it" blocks, as written: the volume commands, then the node ones
/// ("On this machine") with `/srv` under a temp dir.
#[test]
fn the_readme_node_examples_run_as_written() {
    if !require_root_and_tools("the_readme_node_examples_run_as_written") {
        return;
    }
    let r = Rig::start("readme-node", &[]);
    let volumes = readme_block("With the daemon running, in another shell");
    assert!(
        volumes.contains("volbridge volume clone restored"),
        "{volumes}"
    );
    let (code, out, err) = run_script(&r.d, &volumes, &[]);
    assert_eq!(
        code, 0,
        "the README's volume examples failed:\n{err}\n{out}"
    );
    let srv = r.path("srv");
    let script = readme_block("On this machine (as root):").replace("/srv/", &format!("{srv}/"));
    assert!(
        script.contains("--read-only") && script.contains("--block"),
        "{script}"
    );
    let (code, out, err) = run_script(&r.d, &script, &[]);
    assert_eq!(code, 0, "the README's node examples failed:\n{err}\n{out}");
    assert!(out.contains(", read-only"), "{out}");
    assert!(out.contains("(block device)"), "{out}");
    // The block ends with every mount gone and the device detached.
    r.assert_nothing_left();
    r.ok(&["volume", "rm", "data", "raw"]);
}

/// Defect 2: after `volume mount data DIR`, a `--read-only` mount elsewhere is a read-only
/// view of the same volume; `--block` is refused with the rule, the place and the fix; so
/// is a read-write mount of a volume attached read-only; a file is no mount point.
#[test]
fn second_mounts_work_or_explain_the_rule() {
    if !require_root_and_tools("second_mounts_work_or_explain_the_rule") {
        return;
    }
    let r = Rig::start("second-mounts", &[]);
    r.ok(&["volume", "create", "data", "--size", "64Mi"]);
    let id = r.id_of("data");
    let (rw, ro, raw) = (r.path("srv/data"), r.path("srv/ro"), r.path("srv/raw.dev"));
    r.ok(&["volume", "mount", "data", &rw]);
    std::fs::write(Path::new(&rw).join("hello"), b"hi").unwrap();
    let out = r.ok(&["volume", "mount", "data", &ro, "--read-only"]);
    assert!(out.contains(", read-only"), "{out}");
    assert_eq!(std::fs::read(Path::new(&ro).join("hello")).unwrap(), b"hi");
    assert!(
        std::fs::write(Path::new(&ro).join("nope"), b"x").is_err(),
        "the read-only mount refuses writes"
    );
    // The same again is a repeat; the same path read-write is refused.
    r.ok(&["volume", "mount", "data", &ro, "--read-only"]);
    let err = r.fails(&["volume", "mount", "data", &ro], 5);
    assert!(
        err.contains(&format!("already mounted at {ro} read-only")),
        "{err}"
    );
    assert!(
        err.contains(&format!("volbridge volume unmount data {ro}")),
        "{err}"
    );

    // --block while the filesystem is mounted: the rule, both places, the commands.
    let err = r.fails(&["volume", "mount", "data", &raw, "--block"], 5);
    for needle in [
        "volume 'data' is mounted at",
        rw.as_str(),
        ro.as_str(),
        "raw device cannot be published while the filesystem is mounted",
        &format!("volbridge volume unmount data {rw}"),
        "use another volume for --block",
    ] {
        assert!(err.contains(needle), "'{err}' lacks '{needle}'");
    }
    assert_no_id(&err, &id);
    assert!(!Path::new(&raw).exists(), "a refused mount makes nothing");

    // Defect 7: rm while mounted names the volume, where, and the fix.
    let err = r.fails(&["volume", "rm", "data"], 5);
    for needle in [
        "volume 'data' is mounted on this node at",
        &format!("volbridge volume unmount data {rw}"),
        &format!("volbridge volume unmount data {ro}"),
    ] {
        assert!(err.contains(needle), "'{err}' lacks '{needle}'");
    }
    assert_no_id(&err, &id);

    // Read-only first, then read-write: refused with the rule.
    r.ok(&["volume", "unmount", "data", &rw]);
    r.ok(&["volume", "unmount", "data", &ro]);
    r.assert_nothing_left();
    r.ok(&["volume", "mount", "data", &ro, "--read-only"]);
    let err = r.fails(&["volume", "mount", "data", &rw], 5);
    for needle in [
        &format!("volume 'data' is mounted at {ro} read-only"),
        "a volume is attached read-only or read-write as a whole",
        &format!("unmount it from {ro} first: volbridge volume unmount data {ro}"),
        "or mount it with --read-only too",
    ] {
        assert!(err.contains(needle), "'{err}' lacks '{needle}'");
    }
    r.ok(&["volume", "unmount", "data", &ro]);

    // An attached raw device, then a filesystem mount: detach first.
    r.ok(&["volume", "attach", "data"]);
    let err = r.fails(&["volume", "mount", "data", &rw], 5);
    assert!(
        err.contains("attached to this node (volume attach) as a raw device")
            && err.contains("volbridge volume detach data"),
        "{err}"
    );
    let err = r.fails(&["volume", "rm", "data"], 5);
    assert!(
        err.contains("volume 'data' is attached to this node")
            && err.contains("volbridge volume detach data"),
        "{err}"
    );
    r.ok(&["volume", "detach", "data"]);

    // Defect 7: a regular file is no mount point for a filesystem (was: exit 1 "File exists").
    let file = r.path("srv/file");
    std::fs::write(&file, b"mine").unwrap();
    let err = r.fails(&["volume", "mount", "data", &file], 5);
    assert!(
        err.contains(&format!("{file} exists and is not a directory"))
            && err.contains("give a directory"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"mine",
        "the file is left alone"
    );
    // And a directory is no target for --block.
    let err = r.fails(&["volume", "mount", "data", &rw, "--block"], 5);
    assert!(err.contains("is a directory; --block binds"), "{err}");
    r.assert_nothing_left();
    assert_eq!(r.d.json(&["volume", "inspect", "data"])["published"], false);

    // The README's block example: another volume.
    r.ok(&["volume", "create", "raw", "--size", "16Mi"]);
    let out = r.ok(&["volume", "mount", "raw", &raw, "--block"]);
    assert!(out.contains("(block device)"), "{out}");
    r.ok(&["volume", "unmount", "raw", &raw]);
    r.ok(&["volume", "rm", "data", "raw"]);
    r.assert_nothing_left();
}

/// Defect 4: what does nothing says so, with the exit code of the README's table.
#[test]
fn no_silent_no_ops() {
    let r = Rig::start("noops", &[]);
    // rm of a name that does not exist: exit 3, naming it; the other names still go.
    let err = r.fails(&["volume", "rm", "nosuch"], 3);
    assert_eq!(
        err.trim_end(),
        "volbridge: volume 'nosuch' does not exist on backend 'local'; nothing was removed \
         (volbridge volume ls shows what there is)"
    );
    r.ok(&["volume", "create", "a", "--size", "8Mi"]);
    r.ok(&["volume", "create", "b", "--size", "8Mi"]);
    let (code, out, err) = run(&r.d, &["volume", "rm", "a", "nosuch", "b"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        out.contains("removed volume a") && out.contains("removed volume b"),
        "{out}"
    );
    assert!(err.contains("volume 'nosuch' does not exist"), "{err}");
    assert!(err.contains("1 of 3 volumes not removed"), "{err}");
    assert_eq!(r.d.json(&["volume", "ls"]), serde_json::json!([]));
    let err = r.fails(&["snapshot", "rm", "nosuch"], 3);
    assert!(err.contains("snapshot 'nosuch' does not exist"), "{err}");

    // A shrinking expand: exit 2, the current size, nothing changed; the same size is a
    // retry and succeeds.
    r.ok(&["volume", "create", "data", "--size", "1Gi"]);
    let id = r.id_of("data");
    let err = r.fails(&["volume", "expand", "data", "--size", "512Mi"], 2);
    for needle in [
        "volume 'data' is 1Gi",
        "shrinking a volume is not supported",
        "above 1Gi",
    ] {
        assert!(err.contains(needle), "'{err}' lacks '{needle}'");
    }
    assert_no_id(&err, &id);
    assert_eq!(
        r.d.json(&["volume", "inspect", "data"])["size_bytes"],
        1u64 << 30
    );
    let same = r.d.json(&["volume", "expand", "data", "--size", "1Gi"]);
    assert_eq!(same["size_bytes"], 1u64 << 30);

    // -o: the table's CSP settings and csp.<name>; typos refused with the nearest name,
    // the table's other options pointed at their flags; nothing is made.
    let err = r.fails(
        &["volume", "create", "x", "--size", "8Mi", "-o", "thik=true"],
        2,
    );
    assert!(
        err.contains("unknown option \"thik\" (did you mean thick?)")
            && err.contains("csp.<name>=<value>"),
        "{err}"
    );
    let err = r.fails(&["volume", "create", "x", "-o", "sise=1Gi"], 2);
    assert!(
        err.contains("did you mean size? give it as --size"),
        "{err}"
    );
    let err = r.fails(&["volume", "create", "x", "-o", "size=1Gi"], 2);
    assert!(
        err.contains("size is not an -o option of the CLI: give it as --size"),
        "{err}"
    );
    let err = r.fails(&["volume", "create", "x", "-o", "readOnly=true"], 2);
    assert!(
        err.contains("volbridge volume mount NAME PATH --read-only"),
        "{err}"
    );
    let err = r.fails(
        &[
            "volume",
            "clone",
            "x",
            "--from-volume",
            "data",
            "-o",
            "performancePolicy=fast",
        ],
        2,
    );
    assert!(err.contains("csp.<name>=<value>"), "{err}");
    assert_eq!(r.d.json(&["volume", "ls"]).as_array().unwrap().len(), 1);
    let made = r.d.json(&[
        "volume",
        "create",
        "x",
        "--size",
        "8Mi",
        "-o",
        "thick=1",
        "-o",
        "csp.performancePolicy=fast",
    ]);
    assert_eq!(made["config"]["thick"], "true", "{made}");
    assert_eq!(made["config"]["performancePolicy"], "fast", "{made}");
    assert!(made["config"].get("thik").is_none());

    // A volume with snapshots: named, with the command that frees it.
    r.ok(&["snapshot", "create", "nightly", "--volume", "data"]);
    let err = r.fails(&["volume", "rm", "data"], 5);
    assert!(
        err.contains("volume 'data' has snapshots (nightly)")
            && err.contains("volbridge snapshot rm nightly"),
        "{err}"
    );
    assert_no_id(&err, &id);
    r.ok(&["snapshot", "rm", "nightly"]);
    r.ok(&["volume", "rm", "data", "x"]);
}

/// Defect 5: expand says how the filesystem grew in the table as in JSON, and neither the
/// answer nor the log tells the user to do what volbridge did. The daemon runs without
/// CAP_SYS_RESOURCE, so ext4 grows offline (as in many containers).
#[test]
fn expand_says_how_the_filesystem_grew() {
    if !require_root_and_tools("expand_says_how_the_filesystem_grew") {
        return;
    }
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("this test needs setpriv (util-linux) to drop CAP_SYS_RESOURCE");
    let dir = TempDir::new("expand-table");
    let cleanup = HostCleanup(dir.path().to_path_buf());
    let d = Daemon::start_wrapped(
        dir.path(),
        &[],
        &[setpriv, "--bounding-set=-sys_resource", "--"],
    );
    let r = Rig {
        d,
        dir,
        _cleanup: cleanup,
    };
    r.ok(&["volume", "create", "grow", "--size", "64Mi"]);
    let mnt = r.path("grow");
    r.ok(&["volume", "mount", "grow", &mnt]);
    let table = r.ok(&["volume", "expand", "grow", "--size", "128Mi"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("filesystem "))
        .unwrap_or_else(|| panic!("no filesystem row: {table}"));
    assert!(
        row.contains(
            "grown offline: the kernel refused to grow it mounted, so volbridge \
                      unmounted it, checked and grew it, and mounted it again"
        ),
        "{row}"
    );
    let v: Value = r.d.json(&["volume", "expand", "grow", "--size", "192Mi"]);
    assert_eq!(v["filesystem_resize"], "offline", "{v}");
    assert!(Path::new(&mnt).join("lost+found").exists(), "mounted again");
    let log = r.d.log_text();
    assert!(
        log.contains("growing offline"),
        "the log says what volbridge does"
    );
    for by_hand in ["expand it again", "unmount the volume and"] {
        assert!(
            !log.contains(by_hand),
            "the log tells the user to do by hand what volbridge did ('{by_hand}')"
        );
        assert!(!table.contains(by_hand), "{table}");
    }
    r.ok(&["volume", "unmount", "grow", &mnt]);
    let table = r.ok(&["volume", "expand", "grow", "--size", "256Mi"]);
    assert!(
        table.contains("not mounted here: grows at its next mount on this node"),
        "{table}"
    );
    r.ok(&["volume", "rm", "grow"]);
    r.assert_nothing_left();
}

/// Defect 7: a user who may not open the 0660 admin socket is told that, and how to get
/// in, not to start the daemon that is running.
#[test]
fn a_user_without_access_to_the_socket_is_told_why() {
    if !rustix::process::geteuid().is_root() {
        if std::env::var("VOLBRIDGE_ALLOW_SKIP").as_deref() == Ok("1") {
            eprintln!("SKIPPED: needs root to run the CLI as another user");
            return;
        }
        panic!("a_user_without_access_to_the_socket_is_told_why needs root (setpriv to another user); set VOLBRIDGE_ALLOW_SKIP=1 to skip");
    }
    let r = Rig::start("socket-perm", &[]);
    // The binary may sit under a directory nobody cannot enter: run a copy.
    let copy = r.dir.path().join("volbridge");
    std::fs::copy(common::BIN, &copy).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(["volume", "ls", "--socket"])
        .arg(&r.d.socket)
        .env_remove("RUST_LOG")
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let socket = r.d.socket.display().to_string();
    for needle in [
        format!("permission denied on {socket}: the daemon is running"),
        "group root, mode 0660".to_owned(),
        "run the command with sudo".to_owned(),
    ] {
        assert!(err.contains(&needle), "'{err}' lacks '{needle}'");
    }
    assert!(!err.contains("volbridge serve"), "{err}");
    // A socket left by a daemon that stopped: no daemon, said as such.
    let mut d = r.d;
    d.kill();
    let out = Command::new(common::BIN)
        .args(["volume", "ls", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("no volbridge daemon listens on"), "{err}");
}
