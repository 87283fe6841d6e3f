//! API hygiene against the real daemon (issue 16, defect 11, from a fuzzing campaign): a
//! wrong method is 405 with an `Allow` header, a request hyper refuses itself (a path over
//! 64 KiB, bytes that are not printable ASCII, headers too large) and a name that is not
//! UTF-8 once decoded get the API's JSON error shape, on the admin socket and on the
//! embedded CSP's TCP listener alike; nothing answers 5xx. A volume the CSP accepted under a
//! name the CLI would refuse (`../../evil`, made straight on the CSP's REST API) is removed
//! with `volbridge volume rm`, and nothing is written outside the daemon's dirs. Admin
//! mount options Docker refuses (`bind`, `remount`, `ro`, …) are refused before anything
//! is attached.

mod common;

use common::{free_port, loops_under, mounts_under, run, Daemon, TempDir};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Sends raw bytes (a request hyper may refuse) and returns (status, headers, body).
fn raw_bytes(stream: &mut (impl Read + Write), request: &[u8]) -> (u16, String, String) {
    // hyper may refuse a head (500 KB of headers) before it has read all of it and close
    // the connection while we still write; its answer is read all the same (on a unix
    // socket it stays readable after the close).
    if let Err(e) = stream.write_all(request) {
        use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
        assert!(
            matches!(e.kind(), BrokenPipe | ConnectionReset),
            "sending the request: {e}"
        );
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // hyper closes a connection it refused while unread bytes remain: the answer
            // came before the reset.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn admin_raw(d: &Daemon, request: &[u8]) -> (u16, String, String) {
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    raw_bytes(&mut s, request)
}

fn csp_raw(port: u16, request: &[u8]) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    raw_bytes(&mut s, request)
}

fn request(method: &str, target: &[u8], extra: &str, body: &str) -> Vec<u8> {
    let mut r = format!("{method} ").into_bytes();
    r.extend_from_slice(target);
    r.extend_from_slice(
        format!(
            " HTTP/1.1\r\nHost: volbridge\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    r
}

/// The admin API's error shape: `{"error": {"kind", "message"[, "field"]}}`.
fn admin_error(what: &str, head: &str, body: &str) -> Value {
    assert!(
        head.contains("content-type: application/json"),
        "{what}: {head}"
    );
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
    assert!(v["error"]["kind"].is_string(), "{what}: {body}");
    assert!(
        !v["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{what}: {body}"
    );
    v
}

/// The CSP's error shape: `{"errors": [{"code", "message"}]}`.
fn csp_error(what: &str, head: &str, body: &str) -> Value {
    assert!(
        head.contains("content-type: application/json"),
        "{what}: {head}"
    );
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
    assert!(v["errors"][0]["code"].is_string(), "{what}: {body}");
    assert!(v["errors"][0]["message"].is_string(), "{what}: {body}");
    v
}

fn walk(dir: &Path, skip: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.starts_with(skip) {
                continue;
            }
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p, skip));
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn wrong_methods_long_paths_and_bad_bytes_get_json_errors() {
    if !common::require_root_and_tools("wrong_methods_long_paths_and_bad_bytes_get_json_errors") {
        return;
    }
    let dir = TempDir::new("hygiene");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let d = Daemon::start(dir.path(), &["--csp-listen", &listen]);

    // 405 with Allow, naming the methods, never 501.
    for (method, path, allow) in [
        ("PUT", "/v1/volumes", "GET,HEAD,POST"),
        ("PATCH", "/v1/volumes/data", "GET,HEAD,DELETE"),
        ("GET", "/v1/volumes/data/mount", "POST"),
        ("DELETE", "/v1/reconcile", "GET,HEAD,POST"),
        ("POST", "/healthz", "GET,HEAD"),
    ] {
        let (status, head, body) = admin_raw(&d, &request(method, path.as_bytes(), "", ""));
        assert_eq!(status, 405, "{method} {path}: {head}\n{body}");
        let allowed: Vec<&str> = allow.split(',').collect();
        let got = head
            .lines()
            .find_map(|l| l.strip_prefix("allow: "))
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header: {head}"));
        let mut got: Vec<String> = got.split(',').map(|m| m.trim().to_uppercase()).collect();
        got.sort();
        let mut want = allowed.clone();
        want.sort();
        assert_eq!(got, want, "{method} {path}");
        let v = admin_error(path, &head, &body);
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{method} is not allowed on {path}; it takes ")),
            "{message}"
        );
        assert!(head.contains("x-request-id: "), "{head}");
    }
    for (method, path) in [
        ("PUT", "/containers/v1/volumes"),
        ("POST", "/containers/v1/capacity"),
        ("PATCH", "/csp/containers/v1/tokens"),
    ] {
        let (status, head, body) = csp_raw(port, &request(method, path.as_bytes(), "", ""));
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert!(head.contains("\r\nallow: "), "{head}");
        let v = csp_error(path, &head, &body);
        let message = v["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!(
                "method {method} is not allowed on {path}; it takes "
            )),
            "{message}"
        );
    }

    // Requests hyper refuses before any handler: the server's own JSON shape all the same.
    let long = format!("/v1/volumes/{}", "a".repeat(70_000));
    let long_csp = format!("/containers/v1/volumes/{}", "a".repeat(70_000));
    let huge_header = format!("X-Fill: {}\r\n", "h".repeat(500_000));
    // Over the server's 64 KiB but under what hyper reads: refused all the same, every time.
    let big_header = format!("X-Fill: {}\r\n", "h".repeat(100_000));
    let fine_header = format!("X-Fill: {}\r\n", "h".repeat(60_000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("414", request("GET", long.as_bytes(), "", ""), 414),
        (
            "raw non-UTF-8 path",
            request("GET", b"/v1/volumes/\xff\xfe", "", ""),
            400,
        ),
        ("bad method", request("G@T", b"/v1/volumes", "", ""), 400),
        ("431", request("GET", b"/v1/volumes", &huge_header, ""), 431),
        (
            "431 at 100 KB",
            request("GET", b"/v1/volumes", &big_header, ""),
            431,
        ),
    ];
    for (what, req, want) in &cases {
        let (status, head, body) = admin_raw(&d, req);
        assert_eq!(status, *want, "{what}: {head}\n{body}");
        let v = admin_error(what, &head, &body);
        assert_eq!(v["error"]["kind"], "InvalidArgument", "{what}: {body}");
    }
    let (status, _, body) = admin_raw(&d, &request("GET", b"/v1/volumes", &fine_header, ""));
    assert_eq!(status, 200, "60 KB of headers: {body}");
    for (what, req, want) in [
        ("414", request("GET", long_csp.as_bytes(), "", ""), 414),
        (
            "431 at 100 KB",
            request("GET", b"/containers/v1/volumes", &big_header, ""),
            431,
        ),
        (
            "raw non-UTF-8 path",
            request("GET", b"/containers/v1/volumes/\xff", "", ""),
            400,
        ),
    ] {
        let (status, head, body) = csp_raw(port, &req);
        assert_eq!(status, want, "{what}: {head}\n{body}");
        csp_error(what, &head, &body);
    }
    // A name that is not UTF-8 once percent-decoded, a query that does not decode.
    for target in [
        &b"/v1/volumes/%FF%FE"[..],
        b"/v1/volumes/%C3%28/stats",
        b"/v1/snapshots/%80",
    ] {
        let (status, head, body) = admin_raw(&d, &request("GET", target, "", ""));
        assert_eq!(status, 400, "{}: {body}", String::from_utf8_lossy(target));
        let v = admin_error("percent-encoded", &head, &body);
        assert_eq!(v["error"]["field"], "name", "{body}");
    }
    let (status, head, body) =
        admin_raw(&d, &request("GET", b"/v1/volumes/x/stats?path=%", "", ""));
    assert!(status == 400 || status == 404, "{status}: {body}");
    admin_error("query", &head, &body);
    // Still serving.
    assert_eq!(d.raw("GET", "/healthz", None).0, 200);
    let ls = d.json(&["volume", "ls"]);
    assert_eq!(ls.as_array().map(Vec::len), Some(0), "{ls}");
}

/// `../../evil`, accepted by the CSP's REST API, refused by the CLI's name rule: listed,
/// and removed with `volbridge volume rm`; nothing written outside the daemon's dirs.
#[test]
fn a_volume_under_a_name_the_cli_refuses_is_removed_with_the_cli() {
    if !common::require_root_and_tools(
        "a_volume_under_a_name_the_cli_refuses_is_removed_with_the_cli",
    ) {
        return;
    }
    let dir = TempDir::new("evilname");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let d = Daemon::start(dir.path(), &["--csp-listen", &listen]);
    let before = walk(dir.path(), &d.state);
    let password = std::fs::read_to_string(d.state.join("local-csp.password")).unwrap();
    let login = format!(
        "{{\"username\":\"volbridge\",\"password\":\"{}\"}}",
        password.trim()
    );
    let (status, _, body) = csp_raw(
        port,
        &request(
            "POST",
            b"/containers/v1/tokens",
            "Content-Type: application/json\r\n",
            &login,
        ),
    );
    assert_eq!(status, 200, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    let token = token["session_token"].as_str().unwrap().to_owned();
    let auth = format!("x-auth-token: {token}\r\nContent-Type: application/json\r\n");
    let names = ["../../evil", "..\\evil", "-rf", "a/b"];
    for name in names {
        let body = serde_json::json!({ "name": name, "size": 16 << 20 }).to_string();
        let (status, _, answer) = csp_raw(
            port,
            &request("POST", b"/containers/v1/volumes", &auth, &body),
        );
        assert_eq!(status, 200, "{name}: {answer}");
    }
    let listed: Vec<String> = d
        .json(&["volume", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    for name in names {
        assert!(listed.contains(&name.to_owned()), "{listed:?}");
    }
    // Creating under such a name stays refused: the rule is for new names.
    let (code, _, err) = run(&d, &["volume", "create", "../../evil2", "--size", "16Mi"]);
    assert_eq!(code, 2, "{err}");
    for name in names {
        let (code, out, err) = run(&d, &["volume", "rm", "--", name]);
        assert_eq!(code, 0, "rm {name}: {out}{err}");
        assert!(out.contains(&format!("removed volume {name}")), "{out}");
    }
    let ls = d.json(&["volume", "ls"]);
    assert_eq!(ls.as_array().map(Vec::len), Some(0), "{ls}");
    // A second removal finds nothing to remove; it never fails on the name.
    let (code, _, err) = run(&d, &["volume", "rm", "--", "../../evil"]);
    assert!(code == 0 || code == 3, "{err}");
    // Nothing outside the state dir changed, and nothing named evil anywhere near it.
    let after = walk(dir.path(), &d.state);
    let new: Vec<&PathBuf> = after
        .iter()
        .filter(|p| !before.contains(p) && !p.starts_with(&d.log))
        .collect();
    assert!(new.is_empty(), "written outside the state dir: {new:?}");
    for p in [
        dir.path().join("evil"),
        dir.path().parent().unwrap().join("evil"),
    ] {
        assert!(!p.exists(), "{}", p.display());
    }
}

/// Mount options Docker refuses are refused by the admin API too, before anything is
/// attached, with a sentence naming the option and the fix (exit 2, not a late exit 1).
#[test]
fn admin_mount_options_docker_refuses_are_refused_up_front() {
    if !common::require_root_and_tools("admin_mount_options_docker_refuses_are_refused_up_front") {
        return;
    }
    let dir = TempDir::new("mountopts");
    let d = Daemon::start(dir.path(), &[]);
    let target = dir.path().join("mnt");
    std::fs::create_dir_all(&target).unwrap();
    let target = target.to_str().unwrap();
    d.json(&["volume", "create", "m1", "--size", "16Mi"]);
    for (option, says) in [
        ("bind", "binds it onto the path itself"),
        ("rbind", "binds it onto the path itself"),
        ("remount", "unmount it and mount it again"),
        ("noatime,remount", "unmount it and mount it again"),
        ("RO", "use --read-only"),
        ("rw", "use --read-only"),
        ("no atime", "comma-separated list"),
    ] {
        let (code, _, err) = run(&d, &["volume", "mount", "m1", target, "-m", option]);
        assert_eq!(code, 2, "-m {option}: {err}");
        assert!(
            err.contains("is not allowed") && err.contains(says),
            "-m {option}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(loops_under(&d.state).is_empty(), "nothing attached");
    assert!(mounts_under(dir.path()).is_empty(), "nothing mounted");
    // The same through the API: a JSON error naming the field.
    let body = format!(r#"{{"path":"{target}","mount_options":["bind"]}}"#);
    let (status, answer) = d.raw("POST", "/v1/volumes/m1/mount", Some(&body));
    assert_eq!(status, 400, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["error"]["field"], "mount_options", "{answer}");
    // Options a filesystem takes still work.
    let (code, _, err) = run(&d, &["volume", "mount", "m1", target, "-m", "noatime"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&d, &["volume", "unmount", "m1", target]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&d, &["volume", "rm", "m1"]);
    assert_eq!(code, 0, "{err}");
    assert!(loops_under(&d.state).is_empty());
}
