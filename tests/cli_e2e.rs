//! The issue's walk-through, through the real binary: `volbridge serve` on the embedded local
//! CSP, driven by the CLI with `--output json`, restarted gracefully and by SIGKILL.

mod common;

use common::{Daemon, TempDir};
use serde_json::Value;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};

const GI: u64 = 1 << 30;

fn names(list: &Value) -> Vec<String> {
    let mut n: Vec<String> = list
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn volume_lifecycle_through_the_cli_survives_restarts() {
    let dir = TempDir::new("e2e");
    let mut daemon = Daemon::start(dir.path(), &[]);

    let created = daemon.json(&[
        "volume",
        "create",
        "data",
        "--size",
        "1Gi",
        "-o",
        "destroyOnDelete=true",
        "-d",
        "first",
    ]);
    assert_eq!(created["name"], "data");
    assert_eq!(created["size_bytes"], GI);
    assert_eq!(created["backend"], "local");
    assert_eq!(created["published"], false);
    assert_eq!(created["description"], "first");
    let id = created["id"].as_str().unwrap().to_owned();

    // The same name twice is one volume.
    let again = daemon.json(&["volume", "create", "data", "--size", "1Gi"]);
    assert_eq!(again["id"], id.as_str());
    // A different size under the same name is refused, exit code 4 (AlreadyExists).
    let clash = daemon.cli(&["volume", "create", "data", "--size", "2Gi"]);
    assert_eq!(
        clash.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&clash.stderr)
    );

    assert_eq!(names(&daemon.json(&["volume", "ls"])), ["data"]);
    let inspected = daemon.json(&["volume", "inspect", "data"]);
    assert_eq!(inspected["id"], id.as_str());

    let snap = daemon.json(&["snapshot", "create", "snap1", "--volume", "data"]);
    assert_eq!(snap["name"], "snap1");
    assert_eq!(snap["volume_id"], id.as_str());
    assert_eq!(snap["ready_to_use"], true);

    let clone = daemon.json(&["volume", "clone", "copy", "--from-snapshot", "snap1"]);
    assert_eq!(clone["size_bytes"], GI);
    assert_eq!(clone["status"], "ready");
    assert_eq!(clone["source"]["kind"], "snapshot");

    let grown = daemon.json(&["volume", "expand", "copy", "--size", "2Gi"]);
    assert_eq!(grown["size_bytes"], 2 * GI);
    // The same size again is the retry of a done expand; a smaller one is refused.
    let same = daemon.json(&["volume", "expand", "copy", "--size", "2Gi"]);
    assert_eq!(same["size_bytes"], 2 * GI);
    let smaller = daemon.cli(&["volume", "expand", "copy", "--size", "1Gi"]);
    assert_eq!(smaller.status.code(), Some(2));

    // Clone from a volume: the temporary snapshot does not outlive it.
    let twin = daemon.json(&["volume", "clone", "twin", "--from-volume", "data"]);
    assert_eq!(twin["size_bytes"], GI);
    assert_eq!(names(&daemon.json(&["snapshot", "ls"])), ["snap1"]);

    // A volume with snapshots cannot go (exit 5, FailedPrecondition) and stays.
    let refused = daemon.cli(&["volume", "rm", "data"]);
    assert_eq!(
        refused.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    daemon.restart();
    assert_eq!(
        names(&daemon.json(&["volume", "ls"])),
        ["copy", "data", "twin"]
    );
    assert_eq!(
        names(&daemon.json(&["snapshot", "ls", "--volume", "data"])),
        ["snap1"]
    );
    assert_eq!(
        daemon.json(&["volume", "inspect", "copy"])["size_bytes"],
        2 * GI
    );

    // A crash keeps every acknowledged volume too.
    daemon.json(&["volume", "create", "late", "--size", "64Mi"]);
    daemon.crash_and_restart();
    assert_eq!(
        names(&daemon.json(&["volume", "ls"])),
        ["copy", "data", "late", "twin"]
    );

    for name in ["copy", "twin", "late"] {
        assert_eq!(daemon.json(&["volume", "rm", name])["removed"], true);
    }
    assert_eq!(daemon.json(&["snapshot", "rm", "snap1"])["removed"], true);
    daemon.json(&["volume", "rm", "data"]);
    // Removing what is gone says so: exit 3 (not found), naming it.
    let gone = daemon.cli(&["volume", "rm", "data"]);
    assert_eq!(gone.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("volume 'data' does not exist"));
    assert_eq!(names(&daemon.json(&["volume", "ls"])), Vec::<String>::new());
    assert_eq!(
        names(&daemon.json(&["snapshot", "ls"])),
        Vec::<String>::new()
    );

    let backends = daemon.json(&["backend", "ls"]);
    assert_eq!(backends[0]["name"], "local");
    assert_eq!(backends[0]["default"], true);
    assert_eq!(backends[0]["reachable"], true);
    daemon.stop();
    assert!(!daemon.socket.exists(), "the socket is removed on exit");
}

#[test]
fn table_output_is_for_people() {
    let dir = TempDir::new("table");
    let daemon = Daemon::start(dir.path(), &[]);
    let out = daemon.cli(&["volume", "create", "shown", "--size", "500Mi"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("500Mi"), "{text}");
    let out = daemon.cli(&["volume", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(text.contains("shown"), "{text}");
}

#[test]
fn bad_input_is_refused_clearly_and_creates_nothing() {
    let dir = TempDir::new("badinput");
    let daemon = Daemon::start(dir.path(), &[]);
    let long = "x".repeat(129);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["volume", "create", "", "--size", "1Gi"], "name"),
        (vec!["volume", "create", &long, "--size", "1Gi"], "name"),
        (vec!["volume", "create", "a/b", "--size", "1Gi"], "name"),
        (vec!["volume", "create", "..", "--size", "1Gi"], "name"),
        (
            vec!["volume", "create", "../escape", "--size", "1Gi"],
            "name",
        ),
        (vec!["volume", "create", "v", "--size=-1"], "size"),
        (vec!["volume", "create", "v", "--size", "12Zi"], "size"),
        (vec!["volume", "create", "v", "--size", "0"], "size"),
        // One size grammar with Docker and FlexVolume: decimal units are refused with the
        // binary one, and a bare number is bytes (below the 1Mi minimum here).
        (
            vec!["volume", "create", "v", "--size", "10GB"],
            "did you mean 10Gi?",
        ),
        (
            vec!["volume", "create", "v", "--size", "10G"],
            "did you mean 10Gi?",
        ),
        (
            vec!["volume", "create", "v", "--size", "100"],
            "did you mean 100Gi?",
        ),
        (
            vec![
                "volume",
                "create",
                "v",
                "--size",
                "1Gi",
                "--backend",
                "nope",
            ],
            "backend",
        ),
        (vec!["volume", "expand", "v", "--size", "lots"], "size"),
        (vec!["snapshot", "create", "s", "--volume", "a/b"], "volume"),
    ];
    for (args, field) in cases {
        let out = daemon.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(field), "{args:?} should name '{field}': {err}");
        assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    }
    // The one name rule, worded as in every front end (docs/vocabulary.md).
    for (args, want) in [
        (
            vec!["volume", "create", "my vol", "--size", "1Gi"],
            "volbridge: name: \"my vol\" may contain only letters, digits, '_', '.', '-'",
        ),
        (
            vec!["volume", "create", ".hidden", "--size", "1Gi"],
            "volbridge: name: \".hidden\" must start with a letter or a digit",
        ),
        (
            vec!["snapshot", "create", "a..b", "--volume", "v"],
            "volbridge: name: \"a..b\" must not contain '..'",
        ),
    ] {
        let out = daemon.cli(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end(), want);
    }
    // Not found is its own exit code.
    let out = daemon.cli(&["volume", "inspect", "ghost"]);
    assert_eq!(out.status.code(), Some(3));
    let out = daemon.cli(&["volume", "clone", "c", "--from-snapshot", "ghost"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(names(&daemon.json(&["volume", "ls"])), Vec::<String>::new());

    // Malformed bodies on the admin API: JSON errors naming the problem, never a 5xx.
    for (method, path, body) in [
        ("POST", "/v1/volumes", "{not json"),
        ("POST", "/v1/volumes", "[]"),
        ("POST", "/v1/volumes", r#"{"size":"1Gi"}"#),
        ("POST", "/v1/volumes", r#"{"name":"v","size":true}"#),
        ("POST", "/v1/volumes", r#"{"name":"v","size":-5}"#),
        ("POST", "/v1/volumes/v/expand", "{}"),
        ("POST", "/v1/snapshots", r#"{"name":1}"#),
    ] {
        let (status, body) = daemon.raw(method, path, Some(body));
        assert_eq!(status, 400, "{method} {path}: {body}");
        let v: Value = serde_json::from_str(&body).expect("a JSON error body");
        assert_eq!(v["error"]["kind"], "InvalidArgument", "{body}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, body) = daemon.raw("GET", "/v1/nothing", None);
    assert_eq!(status, 404);
    assert!(serde_json::from_str::<Value>(&body).is_ok(), "{body}");
    let (status, _) = daemon.raw("PUT", "/v1/volumes", Some("{}"));
    assert_eq!(status, 405);
    let (status, body) = daemon.raw("GET", "/openapi.yaml", None);
    assert_eq!(status, 200);
    assert!(body.contains("openapi:"));
    assert_eq!(names(&daemon.json(&["volume", "ls"])), Vec::<String>::new());
    // Nothing was written outside the daemon's own dirs.
    assert!(!dir.path().join("escape").exists());
}

/// A name the user-name rule refuses but the stored-name rule takes (made through CSI, or
/// before the rule existed) is still listed, inspected and removed; CSI names outside the
/// stored-name rule are kept under a safe key (docs/vocabulary.md).
#[test]
fn names_outside_the_user_rule_are_not_locked_out() {
    let dir = TempDir::new("names");
    let socket = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let daemon = Daemon::start(dir.path(), &["--csi-endpoint", &endpoint]);
    let csi = |args: &[&str]| {
        let mut all = vec!["csi", "--endpoint", endpoint.as_str()];
        all.extend_from_slice(args);
        daemon.json(&all)
    };
    let made = csi(&["controller", "create", "my vol", "--size", "8Mi"]);
    assert_eq!(made["volume_id"], "my vol", "{made}");
    let keyed = csi(&["controller", "create", "team/claim", "--size", "8Mi"]);
    let key = keyed["volume_id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("csi-") && key.len() == 36, "{keyed}");
    let again = csi(&["controller", "create", "team/claim", "--size", "8Mi"]);
    assert_eq!(
        again["volume_id"],
        key.as_str(),
        "the same CSI name, the same volume"
    );

    let listed = names(&daemon.json(&["volume", "ls"]));
    assert!(listed.contains(&"my vol".to_owned()), "{listed:?}");
    assert_eq!(
        daemon.json(&["volume", "inspect", "my vol"])["name"],
        "my vol"
    );
    let out = daemon.cli(&["volume", "create", "my vol", "--size", "8Mi"]);
    assert_eq!(out.status.code(), Some(2));
    let out = daemon.cli(&["volume", "rm", "my vol", &key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(names(&daemon.json(&["volume", "ls"])), Vec::<String>::new());
}

#[test]
fn socket_is_0660_and_secrets_stay_out_of_the_log() {
    let dir = TempDir::new("secrets");
    let daemon = Daemon::start(dir.path(), &[]);
    let meta = std::fs::metadata(&daemon.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let pw_file = daemon.state.join("local-csp.password");
    assert_eq!(
        std::fs::metadata(&pw_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let password = std::fs::read_to_string(&pw_file).unwrap();
    let password = password.trim();
    assert!(password.len() >= 16);

    daemon.json(&["volume", "create", "s1", "--size", "16Mi"]);
    daemon.json(&["snapshot", "create", "s1-snap", "--volume", "s1"]);
    daemon.json(&["volume", "clone", "s1-clone", "--from-volume", "s1"]);
    daemon.json(&["backend", "ls"]);
    let log = daemon.log_text();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log ran at trace level"
    );
    assert!(
        !log.contains(password),
        "the local CSP password leaked into the log"
    );
}

#[test]
fn unreachable_daemon_says_what_to_do() {
    let dir = TempDir::new("nodaemon");
    let out = std::process::Command::new(common::BIN)
        .args(["volume", "ls", "--socket"])
        .arg(dir.path().join("none.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("volbridge serve"), "{err}");
    assert!(err.contains("none.sock"), "{err}");
}

#[test]
fn a_live_socket_is_not_stolen_and_a_stale_one_is_replaced() {
    let dir = TempDir::new("sockets");
    let mut first = Daemon::start(dir.path(), &[]);
    let second = std::process::Command::new(common::BIN)
        .arg("serve")
        .arg("--state-dir")
        .arg(dir.path().join("state2"))
        .arg("--admin-socket")
        .arg(&first.socket)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another volbridge daemon"));
    // After a crash the socket file stays behind; the next start replaces it.
    first.kill();
    assert!(first.socket.exists());
    first.crash_and_restart();
    first.json(&["volume", "ls"]);
}

/// A plain-HTTP backend needs no CA bundle: the daemon starts (and lists its backends) on a
/// machine without one, as in a minimal container image.
#[test]
fn plain_http_backends_need_no_ca_bundle() {
    let dir = TempDir::new("no-ca");
    let config = dir.path().join("volbridge.toml");
    std::fs::write(
        &config,
        "[backends.array]\nbackend = \"127.0.0.1\"\nserviceName = \"127.0.0.1\"\n\
         servicePort = \"1\"\nusername = \"u\"\npassword = \"p\"\n",
    )
    .unwrap();
    let d = Daemon::start_with_env(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--csp-listen",
            "127.0.0.1:0",
        ],
        &[
            ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
    );
    let (status, body) = d.raw("GET", "/v1/backends", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("array"), "{body}");
}

/// docs/copy-semantics.md rules 3 and 4 through the CLI, on a `dir` pool (background
/// copies): a clone that outlasts `limits.copy_wait_seconds` exits with code 8 and says
/// what to do; `volume inspect` shows the copy's bytes meanwhile; the same command again
/// goes on with the same copy until the data is complete; then no copy is shown and no
/// temporary snapshot is left.
#[test]
fn a_clone_longer_than_copy_wait_is_timed_out_and_the_same_command_finishes_it() {
    let dir = TempDir::new("copywait");
    let config = dir.path().join("volbridge.toml");
    std::fs::write(
        &config,
        "[limits]\ncopy_wait_seconds = 1\n\n[local_csp]\npool = \"dir\"\n",
    )
    .unwrap();
    let daemon = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let created = daemon.json(&["volume", "create", "data", "--size", "1Gi"]);
    let id = created["id"].as_str().unwrap().to_owned();
    let img = daemon.state.join(format!("csp/volumes/{id}.img"));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8 | 1).collect();
        for i in 0..384u64 {
            f.write_all_at(&chunk, i << 20).unwrap();
        }
        f.sync_all().unwrap();
    }
    let first = daemon.cli(&["volume", "clone", "copy", "--from-volume", "data"]);
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    assert_eq!(first.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains("still being copied"), "{stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");
    // The clone exists, not ready; inspect shows how far its copy is (when it runs yet:
    // it may still wait for the temporary snapshot's copy).
    let inspected = daemon.json(&["volume", "inspect", "copy"]);
    if inspected["status"] != "ready" {
        if let Some(p) = inspected.get("copy_progress") {
            assert!(
                p["bytes_done"].as_u64().unwrap() <= p["bytes_total"].as_u64().unwrap(),
                "{inspected}"
            );
            let table = daemon.cli(&["volume", "inspect", "copy"]);
            let text = String::from_utf8_lossy(&table.stdout);
            assert!(
                text.lines()
                    .any(|l| l.starts_with("copy ") && l.contains(" of ")),
                "{text}"
            );
        }
    }
    let done = common::rerun_while_still_running(
        &daemon,
        &["volume", "clone", "copy", "--from-volume", "data"],
        120,
    );
    assert_eq!(done["status"], "ready", "{done}");
    assert_eq!(
        done["id"], inspected["id"],
        "the same clone, not a second one"
    );
    assert!(done.get("copy_progress").is_none(), "{done}");
    let snaps = daemon.json(&["snapshot", "ls"]);
    assert_eq!(
        snaps,
        serde_json::json!([]),
        "no temporary snapshot is left"
    );
    let clone_img = daemon
        .state
        .join(format!("csp/volumes/{}.img", done["id"].as_str().unwrap()));
    let (a, b) = (
        std::fs::read(&img).unwrap(),
        std::fs::read(&clone_img).unwrap(),
    );
    assert!(a == b, "the clone holds the volume's data");
    // snapshot create waits as long; past it, exit 8, and the same command again waits
    // for the same snapshot. snapshot inspect: a table of fields, the copy's bytes while
    // it runs.
    let mut ids = Vec::new();
    for _ in 0..120 {
        let out = daemon.cli(&["snapshot", "create", "s", "--volume", "data", "-O", "json"]);
        let code = out.status.code();
        if code == Some(8) {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("run the same command again"), "{err}");
            let s = daemon.json(&["snapshot", "inspect", "s"]);
            ids.push(s["id"].as_str().unwrap().to_owned());
            if s["ready_to_use"] == false {
                let text =
                    String::from_utf8_lossy(&daemon.cli(&["snapshot", "inspect", "s"]).stdout)
                        .into_owned();
                // The copy may finish between the two inspects: the table then says ready.
                let copying = text
                    .lines()
                    .any(|l| l.starts_with("ready ") && l.contains("false"));
                assert!(
                    !copying
                        || text
                            .lines()
                            .any(|l| l.starts_with("copy ") && l.contains(" of ")),
                    "{text}"
                );
            }
            continue;
        }
        assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(s["ready_to_use"], true);
        ids.push(s["id"].as_str().unwrap().to_owned());
        break;
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one snapshot, waited for: {ids:?}");
    let table = daemon.cli(&["snapshot", "inspect", "s"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("ready ") && l.ends_with("true")),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("copy ")), "{text}");
}
