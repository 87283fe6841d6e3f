//! Names are not paths: no id or name in a request can make a file appear, change or
//! disappear outside the data dir.

mod common;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends a request line verbatim (no client-side URL normalisation); returns the status.
async fn raw_http(s: &Server, method: &str, target: &str, body: &str) -> u16 {
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nx-auth-token: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        s.token,
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    conn.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8_lossy(&resp);
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    if status >= 400 {
        assert!(text.contains("application/json"), "{text}");
        assert!(text.contains("\"errors\""), "{text}");
    }
    status
}

#[tokio::test]
async fn traversal_in_ids_and_names_stays_inside_the_data_dir() {
    let outer = TempDir::new("traversal");
    let data = outer.path().join("data");
    let s = Server::start(&data).await;
    // A file next to the data dir that a traversal would hit.
    let victim = outer.path().join("victim.img");
    std::fs::write(&victim, b"precious").unwrap();

    let ids = [
        "..%2F..%2Fvictim",
        "%2e%2e%2f%2e%2e%2fvictim",
        "%2e%2e",
        "..",
        "%2Fetc%2Fpasswd",
        "..%2Fvictim.img",
        "0123456789ABCDEF0123456789ABCDEF",
        "0123456789abcdef0123456789abcdef%00",
        "%252e%252e%252fvictim",
    ];
    for id in ids {
        for (method, suffix, body) in [
            ("GET", "", ""),
            ("DELETE", "?force=true", ""),
            ("PUT", "", r#"{"size": 1048576}"#),
            ("PUT", "/actions/publish", r#"{"host_uuid": "h"}"#),
            ("PUT", "/actions/unpublish", r#"{"host_uuid": "h"}"#),
        ] {
            let st = raw_http(
                &s,
                method,
                &format!("/containers/v1/volumes/{id}{suffix}"),
                body,
            )
            .await;
            assert_eq!(st, 404, "{method} volumes/{id}{suffix}");
        }
        for method in ["GET", "DELETE"] {
            for coll in ["snapshots", "volume_groups", "snapshot_groups"] {
                let st = raw_http(&s, method, &format!("/containers/v1/{coll}/{id}"), "").await;
                assert_eq!(st, 404, "{method} {coll}/{id}");
            }
        }
        // As a snapshot source or clone source it is simply unknown.
        let (st, _) = s
            .post("/snapshots", json!({"name": "x", "volume_id": id}))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let (st, _) = s
            .post("/volumes", json!({"name": "x", "base_snapshot_id": id}))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
    }
    for target in [
        "/containers/v1/volumes/../../victim.img",
        "/containers/v1/volumes/%2e%2e/%2e%2e/victim.img",
        "/containers/v1/../../victim.img",
        "//etc/passwd",
        "/containers/v1/volumes//etc/passwd",
    ] {
        let st = raw_http(&s, "GET", target, "").await;
        assert!(st == 404 || st == 400, "{target}: {st}");
    }

    // Hostile names are just names.
    let victim_str = victim.to_string_lossy().into_owned();
    let names = [
        "../../victim",
        "/etc/passwd",
        "..",
        "a/b/c",
        "%2e%2e",
        victim_str.as_str(),
        "volumes/../../x",
        "名前",
    ];
    let mut ids = Vec::new();
    for name in names {
        let v = s.volume(name, MIB).await;
        assert_eq!(v["name"], name);
        let id = v["id"].as_str().unwrap().to_owned();
        let snap = s.snapshot(&format!("snap{name}"), &id).await;
        s.wait_ready(snap["id"].as_str().unwrap()).await;
        let (st, _) = s.post("/volume_groups", json!({"name": name})).await;
        assert_eq!(st, StatusCode::OK);
        let (st, _) = s.post("/hosts", json!({"uuid": name, "name": name})).await;
        assert_eq!(st, StatusCode::OK);
        let (st, found) = s
            .client
            .get(s.url("/volumes"))
            .query(&[("name", name)])
            .header("x-auth-token", &s.token)
            .send()
            .await
            .map(|r| (r.status(), r))
            .unwrap();
        assert_eq!(st, StatusCode::OK);
        let found: serde_json::Value = found.json().await.unwrap();
        assert_eq!(found[0]["id"], id.as_str());
        ids.push(id);
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // Every file the server made is inside the data dir and named by an id.
    let outside: Vec<_> = all_files(outer.path())
        .into_iter()
        .filter(|p| !p.starts_with(&data) && *p != victim)
        .collect();
    assert!(
        outside.is_empty(),
        "files outside the data dir: {outside:?}"
    );
    for f in all_files(&data) {
        let rel = f
            .strip_prefix(&data)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let rel = rel
            .strip_prefix("pool/")
            .map(str::to_owned)
            .unwrap_or(rel.clone());
        let ok = [
            "state.json",
            "journal",
            "lock",
            "pool.json",
            "volbridge-pool.img",
        ]
        .contains(&rel.as_str())
            || ["volumes/", "snapshots/", "retained/"].iter().any(|d| {
                rel.strip_prefix(d)
                    .and_then(|n| n.strip_suffix(".img"))
                    .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            });
        assert!(ok, "unexpected file {rel}");
    }
    for id in &ids {
        assert!(images(&data).join(format!("volumes/{id}.img")).exists());
    }
}

#[tokio::test]
async fn oversized_and_garbage_bodies_never_panic() {
    let dir = TempDir::new("garbage");
    let s = Server::start(dir.path()).await;
    let v = s.volume("v", MIB).await;
    let id = v["id"].as_str().unwrap();
    let bodies = [
        "null",
        "1",
        "{\"size\": 1e400}",
        "{\"size\": 18446744073709551616}",
        "{\"size\": 1.5}",
        "{\"config\": []}",
        "{\"config\": {\"thick\": {}}}",
        "{\"volume_group_id\": 5}",
        "{\"name\": null, \"size\": null}",
        "\u{0}",
        "{\"id\": [\"x\"]}",
        "{\"clone\": \"perhaps\"}",
    ];
    for b in bodies {
        for (method, path) in [
            ("POST", "/containers/v1/volumes".to_owned()),
            ("PUT", format!("/containers/v1/volumes/{id}")),
            (
                "PUT",
                format!("/containers/v1/volumes/{id}/actions/publish"),
            ),
            ("POST", "/containers/v1/snapshots".to_owned()),
            ("POST", "/containers/v1/hosts".to_owned()),
            ("POST", "/containers/v1/volume_groups".to_owned()),
            ("POST", "/containers/v1/snapshot_groups".to_owned()),
            ("POST", "/containers/v1/tokens".to_owned()),
        ] {
            let st = raw_http(&s, method, &path, b).await;
            assert!(st == 400 || st == 200, "{method} {path} {b:?}: {st}");
        }
    }
    let big = format!("{{\"name\": \"{}\", \"size\": 512}}", "x".repeat(3 << 20));
    let st = raw_http(&s, "POST", "/containers/v1/volumes", &big).await;
    assert!(st == 413 || st == 400, "{st}");
    // Still serving.
    assert_eq!(s.get(&format!("/volumes/{id}")).await.0, StatusCode::OK);
}
