//! The Docker Volume Plugin wire protocol, checks 1–22 of docker-volume-plugin.md §14:
//! byte-exact requests as dockerd 20.10 sends them, against a real `volbridge serve` with
//! the embedded local CSP (real loop devices, mkfs and mounts, as root). Bad input too.

mod common;
mod docker_support;

use common::{loops_under, mounts_under, require_root_and_tools, Daemon, HostCleanup, TempDir};
use docker_support::{
    call, docker_request, eventually, is_mount_point, mount_id, mountinfo_id, Conn, Plugin,
};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

fn setup(tag: &str) -> Option<(TempDir, HostCleanup)> {
    if !require_root_and_tools(tag) {
        return None;
    }
    let dir = TempDir::new(tag);
    let cleanup = HostCleanup(dir.path().to_path_buf());
    Some((dir, cleanup))
}

/// §13: `volbridge: <kind>: …`, one line, at most 300 bytes.
fn assert_err_shape(err: &str) {
    assert!(err.starts_with("volbridge: "), "{err:?}");
    assert!(!err.contains('\n') && err.len() <= 300, "{err:?}");
}

/// A group of this host other than root's, from `/etc/group`: (name, gid).
fn some_non_root_group() -> (String, u32) {
    std::fs::read_to_string("/etc/group")
        .expect("read /etc/group")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.first()?.to_string(), f.get(2)?.parse::<u32>().ok()?))
        })
        .find(|(name, gid)| *gid != 0 && !name.is_empty())
        .expect("/etc/group lists a group other than root")
}

/// `volbridge serve` on `socket` that must fail; its stderr.
fn serve_fails(dir: &Path, socket: &Path, extra: &[&str]) -> String {
    let other = dir.join(format!("failing-{}", extra.len()));
    std::fs::create_dir_all(&other).unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--state-dir"])
        .arg(other.join("state"))
        .arg("--admin-socket")
        .arg(other.join("admin.sock"))
        .arg("--docker-socket")
        .arg(socket)
        .args(extra)
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve {extra:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn c01_socket_mode_group_stale_socket_replaced_live_one_refused() {
    use std::os::unix::fs::MetadataExt;
    let Some((dir, _c)) = setup("dk-c01") else {
        return;
    };
    let socket = dir.path().join("docker.sock");
    // A stale socket file from a crashed daemon.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let plugin = Plugin::start(&dir, &[]);
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 0, "no socket_group: root's group");
    assert_eq!(
        plugin.call("Plugin.Activate", "").status,
        200,
        "the replaced socket answers"
    );
    // A second instance on the same live socket exits with an error.
    let stderr = serve_fails(dir.path(), &socket, &[]);
    assert!(stderr.contains("listening on"), "{stderr}");
    // The first instance still serves, and removes its socket on a clean exit.
    assert_eq!(plugin.call("Plugin.Activate", "").status, 200);
    let mut plugin = plugin;
    plugin.daemon.stop();
    assert!(!socket.exists(), "socket removed at exit");

    // The configured group, by name (flag) and by gid (config file); the mode stays 0660.
    let (group, gid) = some_non_root_group();
    let mut plugin = Plugin::start(&dir, &["--docker-socket-group", &group]);
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        (meta.gid(), meta.permissions().mode() & 0o777),
        (gid, 0o660),
        "group {group}"
    );
    assert_eq!(plugin.call("Plugin.Activate", "").status, 200);
    plugin.daemon.stop();
    let config = write_config(&dir, "[docker]\nsocket_group = \"4242\"\n");
    let mut plugin = Plugin::start(&dir, &["--config", config.to_str().unwrap()]);
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        (meta.gid(), meta.permissions().mode() & 0o777),
        (4242, 0o660)
    );
    plugin.daemon.stop();

    // A group that does not exist, or is not a group at all: a clear error, no socket.
    let stderr = serve_fails(
        dir.path(),
        &socket,
        &["--docker-socket-group", "no-such-group-vb"],
    );
    assert!(
        stderr.contains("docker.socket_group: no group \"no-such-group-vb\" in /etc/group"),
        "{stderr}"
    );
    let stderr = serve_fails(dir.path(), &socket, &["--docker-socket-group", "a:b"]);
    assert!(
        stderr.contains("docker.socket_group: \"a:b\" is neither a group name nor a numeric gid"),
        "{stderr}"
    );
    assert!(!socket.exists(), "no socket left by a refused start");
}

#[test]
fn c02_spec_and_tcp_listen_modes_write_discovery_files() {
    let Some((dir, _c)) = setup("dk-c02") else {
        return;
    };
    let spec_dir = dir.path().join("plugins.d");
    let name = format!("vbspec{}", std::process::id());
    let socket = dir.path().join("elsewhere.sock");
    let mut d = Daemon::start(
        dir.path(),
        &[
            "--docker-listen",
            "spec",
            "--docker-socket",
            socket.to_str().unwrap(),
            "--docker-spec-dir",
            spec_dir.to_str().unwrap(),
            "--docker-driver-name",
            &name,
        ],
    );
    let spec = spec_dir.join(format!("{name}.spec"));
    assert_eq!(
        std::fs::read_to_string(&spec).unwrap(),
        format!("unix://{}\n", socket.display())
    );
    // Written by rename: no temp file is left beside it.
    assert_eq!(std::fs::read_dir(&spec_dir).unwrap().count(), 1);
    assert_eq!(call(&socket, "Plugin.Activate", None).status, 200);
    d.stop();
    assert!(
        !spec.exists() && !socket.exists(),
        "discovery file and socket removed"
    );

    // tcp: a .json file with the address.
    let mut d = Daemon::start(
        dir.path(),
        &[
            "--docker-listen",
            "tcp",
            "--docker-spec-dir",
            spec_dir.to_str().unwrap(),
            "--docker-driver-name",
            &name,
            "--config",
            write_config(&dir, "[docker]\ntcp_addr = \"127.0.0.1:0\"\n")
                .to_str()
                .unwrap(),
        ],
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(spec_dir.join(format!("{name}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(json["Name"], name.as_str());
    let addr = json["Addr"]
        .as_str()
        .unwrap()
        .strip_prefix("tcp://")
        .unwrap()
        .to_owned();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains(r#"{"Implements":["VolumeDriver"]}"#),
        "{text}"
    );
    d.stop();

    // A same-named socket in /run/docker/plugins would shadow the file: refused.
    let shadow = Path::new("/run/docker/plugins").join(format!("{name}.sock"));
    std::fs::create_dir_all("/run/docker/plugins").unwrap();
    std::fs::write(&shadow, b"").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--docker-listen",
            "spec",
            "--docker-driver-name",
            &name,
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--admin-socket")
        .arg(dir.path().join("admin.sock"))
        .arg("--docker-socket")
        .arg(&socket)
        .arg("--docker-spec-dir")
        .arg(&spec_dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&shadow);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shadow"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!spec_dir.join(format!("{name}.spec")).exists());
}

fn write_config(dir: &TempDir, text: &str) -> std::path::PathBuf {
    let p = dir.path().join("volbridge.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn c03_activate_with_an_empty_body() {
    let Some((dir, _c)) = setup("dk-c03") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    let r = call(&plugin.socket, "Plugin.Activate", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.trim_end(), r#"{"Implements":["VolumeDriver"]}"#);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.docker.plugins.v1+json")
    );
}

#[test]
fn c04_docker_exact_requests_any_host_keep_alive() {
    let Some((dir, _c)) = setup("dk-c04") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    // One persistent connection, as Docker keeps it: empty Host, no Content-Type, the
    // plugin Accept header, a body ending in a newline.
    let mut conn = Conn::open(&plugin.socket);
    let r = conn.call(
        "VolumeDriver.Create",
        Some(r#"{"Name":"db1","Opts":{"size":"16Mi"}}"#),
    );
    assert_eq!((r.status, r.err()), (200, String::new()), "{}", r.body);
    let r = conn.call("VolumeDriver.Get", Some(r#"{"Name":"db1"}"#));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["Volume"]["Name"], "db1");
    // Newer daemons: Host: plugin.moby.localhost.
    let body = "{\"Name\":\"db1\"}\n";
    let req = format!(
        "POST /VolumeDriver.Get HTTP/1.1\r\nHost: plugin.moby.localhost\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\r\n{body}",
        body.len()
    );
    let r = conn.raw(req.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.err(), "");
    // Chunked bodies are accepted too, and surrounding whitespace.
    let req = "POST /VolumeDriver.Get HTTP/1.1\r\nHost: \r\nTransfer-Encoding: chunked\r\n\r\n11\r\n {\"Name\":\"db1\"} \n\r\n0\r\n\r\n";
    let r = conn.raw(req.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["Volume"]["Name"], "db1");
    // Unknown request fields are ignored.
    let r = conn.call(
        "VolumeDriver.Get",
        Some(r#"{"Name":"db1","Future":{"x":1}}"#),
    );
    assert_eq!(r.err(), "");
    assert_eq!(
        conn.call("VolumeDriver.Remove", Some(r#"{"Name":"db1"}"#))
            .err(),
        ""
    );
}

#[test]
fn c05_list_and_capabilities_accept_empty_bodies() {
    let Some((dir, _c)) = setup("dk-c05") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    for body in [Some("{}"), None] {
        let r = call(&plugin.socket, "VolumeDriver.List", body);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.trim_end(), r#"{"Err":"","Volumes":[]}"#);
        let r = call(&plugin.socket, "VolumeDriver.Capabilities", body);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.trim_end(), r#"{"Capabilities":{"Scope":"local"}}"#);
    }
}

#[test]
fn c06_create_with_null_or_missing_opts_takes_defaults() {
    let Some((dir, _c)) = setup("dk-c06") else {
        return;
    };
    let plugin = Plugin::start(
        &dir,
        &[
            "--config",
            write_config(&dir, "default_volume_size = \"32Mi\"\n")
                .to_str()
                .unwrap(),
        ],
    );
    let r = plugin.call("VolumeDriver.Create", r#"{"Name":"nul","Opts":null}"#);
    assert_eq!(r.err(), "", "{}", r.body);
    let r = plugin.call("VolumeDriver.Create", r#"{"Name":"missing"}"#);
    assert_eq!(r.err(), "", "{}", r.body);
    for name in ["nul", "missing"] {
        let s = &plugin.get(name).json()["Volume"]["Status"];
        assert_eq!(s["sizeBytes"], 32 << 20, "{name}: {s}");
        assert_eq!(s["fsType"], "ext4");
        assert_eq!(s["readOnly"], false);
    }
}

#[test]
fn c07_every_option_is_parsed_as_specified() {
    let Some((dir, _c)) = setup("dk-c07") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    for (i, size) in ["1048576", "10Gi", "10gi", "1Ti"].iter().enumerate() {
        let name = format!("ok{i}");
        let r = plugin.create(&name, &[("size", size)]);
        assert_eq!(r.err(), "", "size={size}: {}", r.body);
        let want = match *size {
            "1048576" => 1u64 << 20,
            "1Ti" => 1 << 40,
            _ => 10 << 30,
        };
        assert_eq!(
            plugin.get(&name).json()["Volume"]["Status"]["sizeBytes"],
            want
        );
        assert_eq!(plugin.remove(&name).err(), "");
    }
    let hint = "use bytes or Ki, Mi, Gi, Ti (e.g. size=10Gi)";
    for (size, want) in [
        ("10GB", format!("volbridge: invalid option: size=\"10GB\": unknown unit \"GB\"; {hint}")),
        ("10G", format!("volbridge: invalid option: size=\"10G\": unknown unit \"G\"; {hint}")),
        ("1.5Gi", format!("volbridge: invalid option: size=\"1.5Gi\" is not a whole number; {hint}")),
        ("10GiB", format!("volbridge: invalid option: size=\"10GiB\": unknown unit \"GiB\"; {hint}")),
        ("10", "volbridge: invalid option: size=\"10\" is 10 bytes, below the 1Mi minimum; did you mean size=10Gi?".to_owned()),
        ("99999999999999999999Ti", "volbridge: invalid option: size=\"99999999999999999999Ti\" is too large; the limit is 1Ei".to_owned()),
    ] {
        let r = plugin.create("bad", &[("size", size)]);
        assert_eq!(r.status, 200);
        assert_eq!(r.err(), want);
    }
    // The other keys: accepted forms reach the volume, wrong values are named.
    let r = plugin.create(
        "full",
        &[
            ("size", "320Mi"),
            ("FSTYPE", "xfs"),
            ("mkfsOptions", "-m crc=1"),
            ("mountOptions", "noatime"),
            ("fsOwner", "999:998"),
            ("fsMode", "0770"),
            ("description", "orders db"),
            ("readOnly", "false"),
        ],
    );
    assert_eq!(r.err(), "", "{}", r.body);
    let v = plugin.get("full").json();
    let s = &v["Volume"]["Status"];
    assert_eq!(s["fsType"], "xfs");
    assert_eq!(s["description"], "orders db");
    let r = plugin.mount("full", &mount_id(1));
    assert_eq!(r.err(), "", "{}", r.body);
    let mp = r.json()["Mountpoint"].as_str().unwrap().to_owned();
    let meta = std::fs::metadata(&mp).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (999, 998, 0o770)
    );
    let line = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mp.as_str()))
        .unwrap()
        .to_owned();
    assert!(line.contains(" - xfs "), "{line}");
    assert!(line.contains("noatime"), "{line}");
    assert_eq!(plugin.unmount("full", &mount_id(1)).err(), "");
    for (k, v, says) in [
        (
            "fsType",
            "zfs",
            "fsType=\"zfs\": accepted values are ext4, xfs, btrfs",
        ),
        ("mountOptions", "rw", "use readOnly=true"),
        (
            "fsOwner",
            "me",
            "fsOwner=\"me\": accepted values are uid:gid",
        ),
        (
            "fsMode",
            "8",
            "fsMode=\"8\": accepted values are octal modes",
        ),
        (
            "readOnly",
            "maybe",
            "readOnly=\"maybe\": accepted values are true, false, 1, 0",
        ),
    ] {
        let e = plugin.create("bad", &[(k, v)]).err();
        assert!(
            e.starts_with("volbridge: invalid option: ") && e.contains(says),
            "{k}={v}: {e}"
        );
    }
    let e = plugin
        .create("bad", &[("fromSnapshot", "s"), ("cloneOf", "full")])
        .err();
    assert_eq!(
        e,
        "volbridge: invalid option: fromSnapshot and cloneOf cannot be combined"
    );
    let e = plugin
        .create("bad", &[("cloneOf", "full"), ("mkfsOptions", "-K")])
        .err();
    assert!(e.contains("mkfsOptions cannot be combined"), "{e}");
    assert!(plugin.get("bad").err() == "no such volume");
}

#[test]
fn c08_backend_settings_reach_the_csp_config_and_unknown_keys_are_refused() {
    let Some((dir, _c)) = setup("dk-c08") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    let r = plugin.create(
        "pt",
        &[
            ("size", "8Mi"),
            ("csp.performancePolicy", "fast"),
            ("thick", "false"),
        ],
    );
    assert_eq!(r.err(), "", "{}", r.body);
    let v = plugin.daemon.json(&["volume", "inspect", "pt"]);
    assert_eq!(v["config"]["performancePolicy"], "fast", "{v}");
    assert_eq!(v["config"]["thick"], "false", "{v}");
    // A misspelt option makes nothing (not a default-size volume, not a stored key).
    let known = "known: size, fsType, mkfsOptions, mountOptions, fsOwner, fsMode, \
                 description, fromSnapshot, cloneOf, readOnly, backend, thick, destroyOnDelete; \
                 give a backend's own setting as csp.<name>=<value>";
    for (key, want) in [
        (
            "sise",
            format!(
                "volbridge: invalid option: unknown option \"sise\" (did you mean size?); {known}"
            ),
        ),
        (
            "thik",
            format!(
                "volbridge: invalid option: unknown option \"thik\" (did you mean thick?); {known}"
            ),
        ),
        (
            "performancePolicy",
            format!("volbridge: invalid option: unknown option \"performancePolicy\"; {known}"),
        ),
    ] {
        let r = plugin.create("typo", &[(key, "1Gi")]);
        assert_eq!(r.err(), want, "{key}");
        assert_eq!(plugin.get("typo").err(), "no such volume", "{key}");
    }
    // docker volume inspect shows the options under their given names (Docker keeps them);
    // the plugin shows its own Status.
    for (opts, says) in [
        (vec![("volbridge.internal", "1")], "reserved"),
        (vec![("fsType", "xfs"), ("fstype", "ext4")], "given twice"),
        (
            vec![("csp.perfPolicy", "a"), ("CSP.PERFPOLICY", "b")],
            "given twice",
        ),
        (
            vec![("backend", "array9")],
            "backend=\"array9\" is not a configured backend; configured: local",
        ),
    ] {
        let e = plugin.create("bad", &opts).err();
        assert!(
            e.starts_with("volbridge: invalid option: ") && e.contains(says),
            "{opts:?}: {e}"
        );
    }
    let r = plugin.create("be", &[("size", "8Mi"), ("backend", "local")]);
    assert_eq!(r.err(), "");
}

#[test]
fn c09_create_is_idempotent() {
    let Some((dir, _c)) = setup("dk-c09") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    assert_eq!(
        plugin
            .create("db1", &[("size", "16Mi"), ("fsType", "ext4")])
            .err(),
        ""
    );
    assert_eq!(
        plugin
            .create("db1", &[("size", "16Mi"), ("fsType", "ext4")])
            .err(),
        ""
    );
    assert_eq!(plugin.create("db1", &[("size", "16384Ki")]).err(), "");
    assert_eq!(
        plugin
            .call("VolumeDriver.Create", r#"{"Name":"db1","Opts":null}"#)
            .err(),
        ""
    );
    assert_eq!(
        plugin.create("db1", &[("size", "32Mi")]).err(),
        "volbridge: already exists: \"db1\" has size=16Mi, request asks for 32Mi"
    );
    assert_eq!(
        plugin.create("db1", &[("readOnly", "true")]).err(),
        "volbridge: already exists: \"db1\" was created without readOnly, request asks for readOnly=true"
    );
    let list = plugin.call("VolumeDriver.List", "{}").json();
    assert_eq!(list["Volumes"].as_array().unwrap().len(), 1);
}

#[test]
fn c10_get_echoes_the_name_with_rfc3339_and_mountpoint_only_while_mounted() {
    let Some((dir, _c)) = setup("dk-c10") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    let name = "a".repeat(64); // anonymous volumes have 64-hex names
    assert_eq!(plugin.create(&name, &[("size", "8Mi")]).err(), "");
    let v = plugin.get(&name).json();
    assert_eq!(v["Volume"]["Name"], name.as_str());
    let created = v["Volume"]["CreatedAt"].as_str().unwrap();
    humantime::parse_rfc3339(created).unwrap_or_else(|e| panic!("{created}: {e}"));
    assert!(created.ends_with('Z') && created.len() == 20, "{created}");
    assert!(v["Volume"].get("Mountpoint").is_none(), "{v}");
    assert_eq!(v["Volume"]["Status"]["state"], "available");
    let mp = plugin.mount(&name, &mount_id(1)).json()["Mountpoint"].clone();
    let v = plugin.get(&name).json();
    assert_eq!(v["Volume"]["Mountpoint"], mp);
    assert_eq!(v["Volume"]["Status"]["state"], "mounted");
    assert_eq!(v["Volume"]["Status"]["mountRefs"], 1);
    let listed = plugin.call("VolumeDriver.List", "{}").json();
    assert_eq!(listed["Volumes"][0]["Mountpoint"], mp);
    assert!(listed["Volumes"][0].get("Status").is_none());
    let path = plugin
        .call("VolumeDriver.Path", &format!("{{\"Name\":\"{name}\"}}"))
        .json();
    assert_eq!(path["Mountpoint"], mp);
    assert_eq!(plugin.unmount(&name, &mount_id(1)).err(), "");
    let v = plugin.get(&name).json();
    assert!(v["Volume"].get("Mountpoint").is_none(), "{v}");
    let path = plugin.call("VolumeDriver.Path", &format!("{{\"Name\":\"{name}\"}}"));
    assert_eq!(path.body.trim_end(), r#"{"Err":"","Mountpoint":""}"#);
}

#[test]
fn c11_get_of_an_unknown_volume() {
    let Some((dir, _c)) = setup("dk-c11") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    for name in ["nope", "", "../etc", &"x".repeat(300)] {
        let r = plugin.get(name);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.trim_end(), r#"{"Err":"no such volume"}"#, "{name}");
    }
    let r = plugin.call("VolumeDriver.Path", r#"{"Name":"nope"}"#);
    assert_eq!(r.err(), "volbridge: no such volume: \"nope\"");
    assert_eq!(r.json()["Mountpoint"], "");
}

#[test]
fn c12_get_and_list_survive_a_csp_outage() {
    let Some((dir, _c)) = setup("dk-c12") else {
        return;
    };
    let mut plugin = Plugin::start(&dir, &[]);
    for i in 0..3 {
        assert_eq!(
            plugin.create(&format!("keep{i}"), &[("size", "8Mi")]).err(),
            ""
        );
    }
    plugin.daemon.stop();
    // Restart with no reachable CSP at all: the default backend refuses connections.
    let config = write_config(
        &dir,
        "default_backend = \"dead\"\n[backends.dead]\nbackend = \"127.0.0.1\"\nserviceName = \"127.0.0.1\"\nservicePort = \"1\"\nusername = \"u\"\npassword = \"p\"\n",
    );
    let plugin = Plugin::start(
        &dir,
        &["--no-local-csp", "--config", config.to_str().unwrap()],
    );
    for _ in 0..5 {
        let t = Instant::now();
        let r = plugin.get("keep1");
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(r.err(), "", "{}", r.body);
        assert_eq!(r.json()["Volume"]["Name"], "keep1");
        let t = Instant::now();
        let r = plugin.call("VolumeDriver.List", "{}");
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(r.err(), "");
        assert_eq!(r.json()["Volumes"].as_array().unwrap().len(), 3);
    }
    // A remote default backend makes the automatic scope global.
    assert_eq!(
        plugin.call("VolumeDriver.Capabilities", "{}").json()["Capabilities"]["Scope"],
        "global"
    );
    // Node work reports the outage in words a user understands.
    let e = plugin.create("new1", &[("size", "8Mi")]).err();
    assert!(e.starts_with("volbridge: backend unavailable: "), "{e}");
}

#[test]
fn c13_capabilities_answer_the_configured_scope() {
    let Some((dir, _c)) = setup("dk-c13") else {
        return;
    };
    let plugin = Plugin::start(&dir, &["--docker-scope", "global"]);
    let mut conn = Conn::open(&plugin.socket);
    for _ in 0..20 {
        let r = conn.call("VolumeDriver.Capabilities", Some("{}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body.trim_end(), r#"{"Capabilities":{"Scope":"global"}}"#);
    }
}

#[test]
fn c14_mount_returns_a_mount_point_and_stages_once() {
    let Some((dir, _c)) = setup("dk-c14") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    assert_eq!(plugin.create("db1", &[("size", "16Mi")]).err(), "");
    let r = plugin.mount("db1", &mount_id(1));
    assert_eq!(r.status, 200);
    assert_eq!(r.err(), "", "{}", r.body);
    let mp = r.json()["Mountpoint"].as_str().unwrap().to_owned();
    assert!(
        Path::new(&mp).is_absolute() && Path::new(&mp).is_dir(),
        "{mp}"
    );
    assert!(
        mp.starts_with(plugin.daemon.state.to_str().unwrap()),
        "{mp}"
    );
    assert!(is_mount_point(&mp), "{mp} is a mount point");
    let first = mountinfo_id(&mp);
    std::fs::write(Path::new(&mp).join("f"), b"data").unwrap();
    let r = plugin.mount("db1", &mount_id(2));
    assert_eq!(r.json()["Mountpoint"], mp.as_str());
    assert_eq!(mountinfo_id(&mp), first, "no second stage");
    assert_eq!(loops_under(&plugin.daemon.state).len(), 1);
    assert_eq!(plugin.refs("db1"), 2);
    // The CLI's rm of a volume Docker mounts says so, and what to do (issue 16).
    let out = plugin.daemon.cli(&["volume", "rm", "db1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains(&format!(
            "volume 'db1' is mounted by Docker at {mp} for 2 container reference(s)"
        )) && err.contains("volbridge docker release db1"),
        "{err}"
    );
    assert_eq!(plugin.unmount("db1", &mount_id(1)).err(), "");
    assert!(is_mount_point(&mp));
    assert_eq!(plugin.unmount("db1", &mount_id(2)).err(), "");
    assert!(!is_mount_point(&mp));
    assert!(loops_under(&plugin.daemon.state).is_empty());
    assert!(mounts_under(&plugin.daemon.state).is_empty());
}

#[test]
fn c15_mount_of_an_unknown_volume() {
    let Some((dir, _c)) = setup("dk-c15") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    let r = plugin.mount("db9", &mount_id(1));
    assert_eq!(r.status, 200);
    assert_eq!(r.err(), "volbridge: no such volume: \"db9\"");
    assert_eq!(r.json()["Mountpoint"], "");
    // No implicit create.
    assert_eq!(plugin.get("db9").err(), "no such volume");
}

#[test]
fn c16_same_id_refcount_and_the_unstage_delay() {
    let Some((dir, _c)) = setup("dk-c16") else {
        return;
    };
    let plugin = Plugin::start(&dir, &["--docker-unstage-delay", "2"]);
    assert_eq!(plugin.create("db1", &[("size", "16Mi")]).err(), "");
    let x = mount_id(7);
    let mp = plugin.mount("db1", &x).json()["Mountpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(plugin.mount("db1", &x).err(), "");
    assert_eq!(plugin.refs("db1"), 2);
    assert_eq!(plugin.unmount("db1", &x).err(), "");
    assert!(is_mount_point(&mp), "still staged with one reference");
    assert_eq!(plugin.unmount("db1", &x).err(), "");
    assert_eq!(plugin.state("db1"), "attached");
    assert!(is_mount_point(&mp), "kept for the unstage delay");
    // A Mount inside the delay reuses the stage and cancels the teardown.
    let id = mountinfo_id(&mp);
    assert_eq!(plugin.mount("db1", &mount_id(8)).err(), "");
    std::thread::sleep(Duration::from_secs(3));
    assert!(is_mount_point(&mp), "the teardown was cancelled");
    assert_eq!(mountinfo_id(&mp), id);
    // The last Unmount tears down after the delay.
    assert_eq!(plugin.unmount("db1", &mount_id(8)).err(), "");
    assert!(is_mount_point(&mp));
    assert!(eventually(Duration::from_secs(10), || !is_mount_point(&mp)));
    assert!(eventually(Duration::from_secs(5), || loops_under(
        &plugin.daemon.state
    )
    .is_empty()));
    assert!(eventually(Duration::from_secs(10), || plugin.state("db1")
        == "available"));
}

#[test]
fn c17_unmount_of_unknown_ids_and_volumes_succeeds() {
    let Some((dir, _c)) = setup("dk-c17") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    assert_eq!(plugin.create("db1", &[("size", "8Mi")]).err(), "");
    for (name, id) in [
        ("db1", mount_id(3)),
        ("nope", mount_id(3)),
        ("", String::new()),
        ("../x", "y".into()),
    ] {
        let r = plugin.unmount(name, &id);
        assert_eq!(
            (r.status, r.body.trim_end()),
            (200, r#"{"Err":""}"#),
            "{name}"
        );
    }
    assert_eq!(plugin.refs("db1"), 0);
}

#[test]
fn c18_refs_survive_a_restart_graceful_and_kill_9() {
    let Some((dir, _c)) = setup("dk-c18") else {
        return;
    };
    let mut plugin = Plugin::start(&dir, &[]);
    assert_eq!(plugin.create("db1", &[("size", "16Mi")]).err(), "");
    let mp = plugin.mount("db1", &mount_id(1)).json()["Mountpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(plugin.mount("db1", &mount_id(2)).err(), "");
    std::fs::write(Path::new(&mp).join("f"), b"kept").unwrap();
    let id = mountinfo_id(&mp);
    // Graceful: no staged volume is unmounted by the shutdown.
    plugin.daemon.restart();
    assert_eq!(
        mountinfo_id(&mp),
        id,
        "the mount was kept across a graceful stop"
    );
    assert_eq!(plugin.refs("db1"), 2);
    // kill -9.
    plugin.daemon.crash_and_restart();
    assert_eq!(mountinfo_id(&mp), id, "the mount was kept across kill -9");
    assert_eq!(plugin.refs("db1"), 2);
    assert_eq!(std::fs::read(Path::new(&mp).join("f")).unwrap(), b"kept");
    // A pre-restart ID decrements correctly.
    assert_eq!(plugin.unmount("db1", &mount_id(1)).err(), "");
    assert_eq!(plugin.refs("db1"), 1);
    assert!(is_mount_point(&mp));
    assert_eq!(plugin.unmount("db1", &mount_id(2)).err(), "");
    assert!(!is_mount_point(&mp));
    assert!(loops_under(&plugin.daemon.state).is_empty());
}

#[test]
fn c19_a_changed_boot_id_clears_all_refs() {
    let Some((dir, _c)) = setup("dk-c19") else {
        return;
    };
    let mut plugin = Plugin::start(&dir, &[]);
    assert_eq!(plugin.create("db1", &[("size", "16Mi")]).err(), "");
    let mp = plugin.mount("db1", &mount_id(1)).json()["Mountpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    plugin.daemon.stop();
    // As if the machine had rebooted: the stored boot ID is another one.
    let boot = plugin.daemon.state.join("docker-node/boot.json");
    let text = std::fs::read_to_string(&boot).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["boot_id"].is_string());
    std::fs::write(
        &boot,
        r#"{"boot_id":"00000000-0000-0000-0000-000000000000"}"#,
    )
    .unwrap();
    plugin.daemon.restart();
    assert_eq!(plugin.refs("db1"), 0);
    // The start-up reconciliation unmounted the volume no container can hold any more.
    assert!(eventually(Duration::from_secs(10), || !is_mount_point(&mp)));
    assert!(eventually(Duration::from_secs(5), || loops_under(
        &plugin.daemon.state
    )
    .is_empty()));
    assert!(eventually(Duration::from_secs(10), || plugin.state("db1")
        == "available"));
}

#[test]
fn c20_release_pending_reconciler_and_docker_release() {
    let Some((dir, _c)) = setup("dk-c20") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    assert_eq!(plugin.create("db1", &[("size", "16Mi")]).err(), "");
    let mp = plugin.mount("db1", &mount_id(1)).json()["Mountpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    // A process whose working directory is inside the mount makes the unmount fail (EBUSY).
    let mut busy = std::process::Command::new("sleep")
        .arg("60")
        .current_dir(&mp)
        .spawn()
        .unwrap();
    let r = plugin.unmount("db1", &mount_id(1));
    assert_eq!(r.err(), "", "the decrement stands");
    assert_eq!(plugin.refs("db1"), 0);
    assert_eq!(plugin.state("db1"), "release-pending");
    assert!(is_mount_point(&mp));
    let _ = busy.kill();
    let _ = busy.wait();
    // The reconciler completes it.
    let out = plugin.daemon.cli(&["reconcile"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mount_point(&mp));
    assert!(eventually(Duration::from_secs(10), || plugin.state("db1")
        == "available"));
    assert!(loops_under(&plugin.daemon.state).is_empty());

    // Refs Docker never released: `volbridge docker release`.
    assert_eq!(plugin.mount("db1", &mount_id(2)).err(), "");
    assert_eq!(plugin.mount("db1", &mount_id(3)).err(), "");
    let refs = plugin.daemon.json(&["docker", "refs", "db1"]);
    assert_eq!(refs[0]["refs"].as_object().unwrap().len(), 2, "{refs}");
    let one = plugin
        .daemon
        .json(&["docker", "release", "db1", "--id", &mount_id(2)]);
    assert_eq!(
        (
            one["dropped"].as_u64(),
            one["remaining"].as_u64(),
            one["unmounted"].as_bool()
        ),
        (Some(1), Some(1), Some(false))
    );
    assert!(is_mount_point(&mp));
    let all = plugin.daemon.json(&["docker", "release", "db1"]);
    assert_eq!(all["unmounted"], true, "{all}");
    assert!(!is_mount_point(&mp));
    assert!(loops_under(&plugin.daemon.state).is_empty());
    assert!(mounts_under(&plugin.daemon.state).is_empty());
    let out = plugin.daemon.cli(&["docker", "release", "nope"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn c21_remove_refuses_a_mounted_volume_and_accepts_unknown_names() {
    let Some((dir, _c)) = setup("dk-c21") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    assert_eq!(plugin.create("db1", &[("size", "8Mi")]).err(), "");
    assert_eq!(plugin.mount("db1", &mount_id(1)).err(), "");
    assert_eq!(plugin.mount("db1", &mount_id(2)).err(), "");
    assert_eq!(
        plugin.remove("db1").err(),
        "volbridge: in use: \"db1\" is mounted by 2 containers on this node"
    );
    assert_eq!(plugin.get("db1").err(), "");
    assert_eq!(plugin.remove("nope").err(), "");
    assert_eq!(plugin.unmount("db1", &mount_id(1)).err(), "");
    assert_eq!(plugin.unmount("db1", &mount_id(2)).err(), "");
    assert_eq!(plugin.remove("db1").err(), "");
    assert_eq!(plugin.remove("db1").err(), "", "a repeated Remove succeeds");
    assert_eq!(plugin.get("db1").err(), "no such volume");
    let out = plugin.daemon.cli(&["volume", "inspect", "db1"]);
    assert_eq!(out.status.code(), Some(3), "deleted at the CSP too");
}

#[test]
fn c22_error_bodies_status_codes_and_no_secrets() {
    let Some((dir, _c)) = setup("dk-c22") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    let s = &plugin.socket;
    // Unknown paths 404, other methods 405, malformed JSON 400: each with an Err body.
    let r = call(s, "VolumeDriver.Frobnicate", Some("{}"));
    assert_eq!(r.status, 404);
    assert_eq!(
        r.err(),
        "volbridge: unknown endpoint /VolumeDriver.Frobnicate"
    );
    let mut conn = Conn::open(s);
    let r = conn.raw(b"GET /VolumeDriver.Get HTTP/1.1\r\nHost: \r\n\r\n");
    assert_eq!(r.status, 405);
    assert_err_shape(&r.err());
    let r = conn.raw(&docker_request("VolumeDriver.Create", Some("{\"Name\":")));
    assert_eq!(r.status, 400);
    assert!(
        r.err().starts_with("volbridge: malformed request: "),
        "{}",
        r.err()
    );
    let r = conn.raw(&docker_request("VolumeDriver.Mount", Some("[1,2]")));
    assert_eq!(r.status, 400);
    let r = conn.raw(&docker_request(
        "VolumeDriver.Create",
        Some(r#"{"Name":"x","Opts":{"size":5}}"#),
    ));
    assert_eq!(r.status, 400);
    // Logical errors: 200, the documented shape, no secret values.
    let secret = "hunter2-s3cr3t";
    let mut errors = vec![
        plugin
            .create("x", &[("size", "10GB"), ("csp.password", secret)])
            .err(),
        plugin.create("my vol", &[]).err(),
        plugin
            .create(
                "x",
                &[("fromSnapshot", "nightly"), ("csp.chapPassword", secret)],
            )
            .err(),
        plugin.mount("nope", &mount_id(1)).err(),
        plugin.create(&"y".repeat(129), &[]).err(),
        plugin
            .create("x", &[("description", &"d".repeat(400))])
            .err(),
    ];
    errors.push(plugin.create("x", &[("cloneOf", "nothere")]).err());
    for e in &errors {
        assert_err_shape(e);
        assert!(!e.contains(secret), "{e}");
    }
    assert!(
        errors[2].starts_with("volbridge: no such snapshot: "),
        "{}",
        errors[2]
    );
    assert!(
        errors[6].starts_with("volbridge: no such volume: "),
        "{}",
        errors[6]
    );
    assert!(
        !plugin.daemon.log_text().contains(secret),
        "secrets never in the log"
    );
}

#[test]
fn bad_input_is_refused_and_the_server_stays_up() {
    let Some((dir, _c)) = setup("dk-bad") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    let before: Vec<_> = walk(dir.path());
    let long = "n".repeat(129);
    for (name, says) in [
        ("", "a volume name is required"),
        (long.as_str(), "the limit is 128"),
        ("a/b", "may contain only"),
        ("..", "must start with a letter or a digit"),
        ("a..b", "must not contain '..'"),
        ("../../etc/passwd", "must start with a letter or a digit"),
        ("x/../../y", "may contain only"),
    ] {
        let r = plugin.create(name, &[("size", "8Mi")]);
        assert_eq!(r.status, 200);
        let e = r.err();
        assert!(
            e.starts_with("volbridge: invalid name: ") && e.contains(says),
            "{name:?}: {e}"
        );
        assert_eq!(
            plugin.mount(name, &mount_id(1)).err(),
            format!("volbridge: no such volume: {name:?}")
        );
        assert_eq!(plugin.remove(name).err(), "");
    }
    for size in ["", "-1", "0", "ten", "1e9", "0x10"] {
        let e = plugin.create("v1", &[("size", size)]).err();
        assert!(
            e.starts_with("volbridge: invalid option: size="),
            "{size}: {e}"
        );
    }
    for body in [
        "{",
        "null",
        "\"Name\"",
        "{\"Name\":5}",
        "\u{0}\u{1}",
        "{\"Opts\":[]}",
    ] {
        let r = call(&plugin.socket, "VolumeDriver.Create", Some(body));
        assert_eq!(r.status, 400, "{body:?}: {}", r.body);
        assert!(r.err().starts_with("volbridge: malformed request: "));
    }
    // Still serving, and nothing was created: no volume, no file outside the state dir.
    assert_eq!(call(&plugin.socket, "Plugin.Activate", None).status, 200);
    assert_eq!(
        plugin.call("VolumeDriver.List", "{}").json()["Volumes"],
        serde_json::json!([])
    );
    let after: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| !p.starts_with(&plugin.daemon.state))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|p| !p.starts_with(&plugin.daemon.state))
        .collect();
    assert_eq!(before, after);
    assert!(!Path::new("/etc/passwd.json").exists());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn snapshot_and_clone_through_options() {
    let Some((dir, _c)) = setup("dk-clone") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    assert_eq!(plugin.create("src1", &[("size", "16Mi")]).err(), "");
    let mp = plugin.mount("src1", &mount_id(1)).json()["Mountpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(Path::new(&mp).join("f"), b"original").unwrap();
    assert_eq!(plugin.unmount("src1", &mount_id(1)).err(), "");
    let out = plugin
        .daemon
        .cli(&["snapshot", "create", "snap1", "--volume", "src1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        plugin
            .create("fromsnap", &[("fromSnapshot", "snap1")])
            .err(),
        ""
    );
    assert_eq!(plugin.create("cloned", &[("cloneOf", "src1")]).err(), "");
    for name in ["fromsnap", "cloned"] {
        let v = plugin.get(name).json();
        assert!(v["Volume"]["Status"]["source"].is_string(), "{v}");
        let mp = plugin.mount(name, &mount_id(2)).json()["Mountpoint"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            std::fs::read(Path::new(&mp).join("f")).unwrap(),
            b"original",
            "{name}"
        );
        assert_eq!(plugin.unmount(name, &mount_id(2)).err(), "");
        assert_eq!(plugin.remove(name).err(), "");
    }
    let e = plugin
        .create("x", &[("cloneOf", "src1"), ("fsType", "xfs")])
        .err();
    assert!(e.contains("differs from the source"), "{e}");
    assert!(mounts_under(&plugin.daemon.state).is_empty());
    assert!(loops_under(&plugin.daemon.state).is_empty());
}

#[test]
fn a_mount_whose_count_was_lost_in_a_crash_is_torn_down() {
    let Some((dir, _c)) = setup("dk-crash") else {
        return;
    };
    let mut plugin = Plugin::start(&dir, &[]);
    assert_eq!(plugin.create("db1", &[("size", "16Mi")]).err(), "");
    let mp = plugin.mount("db1", &mount_id(1)).json()["Mountpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    plugin.daemon.kill();
    // As if kill -9 had struck after the mount and before its reference was written.
    let record = plugin.daemon.state.join("docker-volumes/db1.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    v["refs"] = serde_json::json!({});
    v["mounted_at"] = serde_json::Value::Null;
    std::fs::write(&record, v.to_string()).unwrap();
    assert!(is_mount_point(&mp));
    plugin.daemon.crash_and_restart();
    assert!(eventually(Duration::from_secs(10), || !is_mount_point(&mp)));
    assert!(eventually(Duration::from_secs(5), || loops_under(
        &plugin.daemon.state
    )
    .is_empty()));
    assert!(eventually(Duration::from_secs(10), || plugin.state("db1")
        == "available"));
    // Docker's re-sent Mount (it retries after EOF) mounts it again.
    assert_eq!(plugin.mount("db1", &mount_id(1)).err(), "");
    assert!(is_mount_point(&mp));
    assert_eq!(plugin.unmount("db1", &mount_id(1)).err(), "");
    assert!(mounts_under(&plugin.daemon.state).is_empty());
}

/// Front ends share volumes (issue 16, defect 8): a volume made with the CLI is listed by
/// List, found by Get, adopted by a Create without options (Docker's implicit create of
/// `docker run -v NAME:/path`), mounted, and removed by Remove; a Create whose options ask
/// for another size is refused with a sentence naming the volume and the fix. A volume the
/// CLI deletes leaves Docker's list.
#[test]
fn volumes_made_by_the_cli_are_listed_adopted_and_removed() {
    let Some((dir, _c)) = setup("dk-shared") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    let cli = |args: &[&str]| {
        let out = plugin.daemon.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let listed = || -> Vec<String> {
        plugin.call("VolumeDriver.List", "{}").json()["Volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["Name"].as_str().unwrap().to_owned())
            .collect()
    };
    cli(&["volume", "create", "clivol", "--size", "16Mi"]);
    cli(&["volume", "create", "other", "--size", "16Mi"]);
    assert_eq!(listed(), ["clivol", "other"]);

    let e = plugin.create("clivol", &[("size", "1Gi")]).err();
    assert_eq!(
        e,
        "volbridge: already exists: \"clivol\" on backend \"local\" (16Mi, made outside Docker) does not match -o size=1Gi; leave out the -o options to use it as it is, or choose another name"
    );
    assert_eq!(plugin.create("clivol", &[]).err(), "");
    let v = plugin.get("clivol").json();
    assert_eq!(v["Volume"]["Status"]["sizeBytes"], 16u64 << 20, "{v}");
    let mp = plugin.mount("clivol", &mount_id(1)).json()["Mountpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(Path::new(&mp).join("f"), b"shared").unwrap();
    assert_eq!(plugin.unmount("clivol", &mount_id(1)).err(), "");
    assert_eq!(listed(), ["clivol", "other"], "listed once");
    assert_eq!(plugin.remove("clivol").err(), "");
    let left = plugin.daemon.json(&["volume", "ls"]);
    let left: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["other"]);

    // Found by Get (Docker's lookup before inspect, rm, run), then deleted by the CLI.
    assert_eq!(plugin.get("other").err(), "");
    cli(&["volume", "rm", "other"]);
    assert_eq!(listed(), Vec::<String>::new());
    assert_eq!(plugin.get("other").err(), "no such volume");
    assert!(mounts_under(&plugin.daemon.state).is_empty());
    assert!(loops_under(&plugin.daemon.state).is_empty());
}

/// A request hyper refuses before the plugin sees it (a path over 64 KiB, bytes that are
/// not printable ASCII), or with headers over 64 KiB, gets `{"Err": …}` like every other
/// answer.
#[test]
fn requests_hyper_refuses_get_an_err_body() {
    let Some((dir, _c)) = setup("dk-refused") else {
        return;
    };
    let plugin = Plugin::start(&dir, &[]);
    let long = format!("/VolumeDriver.{}", "a".repeat(70_000));
    let fill = format!("X-Fill: {}\r\n", "h".repeat(100_000));
    for (target, extra, status) in [
        (long.as_bytes(), "", 414),
        (&b"/VolumeDriver.\xff"[..], "", 400),
        (&b"/VolumeDriver.List"[..], fill.as_str(), 431),
    ] {
        let mut req = b"POST ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\n");
        req.extend_from_slice(extra.as_bytes());
        req.extend_from_slice(b"\r\n");
        let r = Conn::open(&plugin.socket).raw(&req);
        assert_eq!(r.status, status, "{}", r.body);
        assert!(
            r.err().starts_with("volbridge: malformed request: "),
            "{}",
            r.body
        );
    }
    assert_eq!(call(&plugin.socket, "Plugin.Activate", None).status, 200);
}
