//! Every endpoint's success and error statuses.

mod common;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn tokens_login_logout_and_revoke() {
    let dir = TempDir::new("tokens");
    let s = Server::start(dir.path()).await;

    let (st, t) = s
        .raw(
            Method::POST,
            "/tokens",
            Some(json!({"username": USER, "password": PASSWORD})),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(t["session_token"].as_str().unwrap().len(), 64);
    assert!(t.get("password").is_none());
    assert!(t["expiry_time"].as_i64().unwrap() - t["creation_time"].as_i64().unwrap() == 1800);

    let (st, _) = s
        .raw(
            Method::POST,
            "/tokens",
            Some(json!({"username": USER, "password": "wrong"})),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s
        .raw(
            Method::POST,
            "/tokens",
            Some(json!({"username": USER})),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s
        .raw(
            Method::POST,
            "/tokens",
            Some(json!({"password": PASSWORD})),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // No token, bad token → 401; x-array-ip is accepted and ignored.
    let (st, _) = s.raw(Method::GET, "/volumes", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s.raw(Method::GET, "/volumes", None, Some("made-up")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let resp = s
        .client
        .get(s.url("/volumes"))
        .header("x-auth-token", &s.token)
        .header("x-array-ip", "10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // T2: logout with the token id; the token is dead afterwards; unknown id → 404.
    let other = t["session_token"].as_str().unwrap();
    let id = t["id"].as_str().unwrap();
    let (st, _) = s
        .raw(Method::DELETE, &format!("/tokens/{id}"), None, Some(other))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.raw(Method::GET, "/volumes", None, Some(other)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s.delete(&format!("/tokens/{id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s
        .raw(Method::DELETE, &format!("/tokens/{id}"), None, None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // revoke_tokens invalidates everything; a new login works.
    s.csp.revoke_tokens();
    let (st, _) = s.get("/volumes").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let fresh = s.login().await;
    let (st, _) = s.raw(Method::GET, "/volumes", None, Some(&fresh)).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn volumes_create_get_list_edit_delete() {
    let dir = TempDir::new("volumes");
    let s = Server::start(dir.path()).await;

    let (st, list) = s.get("/volumes").await;
    assert_eq!((st, list), (StatusCode::OK, json!([])));
    let (st, _) = s.get("/volumes?name=nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let (st, v) = s
        .post(
            "/volumes",
            json!({"name": "v1", "size": GIB, "volume_group_id": "", "description": "d",
                   "config": {"custom": "x", "destroy_on_delete": "true"}, "probe": 1}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(v["name"], "v1");
    assert_eq!(v["size"], GIB);
    assert_eq!(v["published"], false);
    assert_eq!(v["clone"], false);
    assert_eq!(v["base_snapshot_id"], "");
    assert_eq!(v["config"]["custom"], "x");
    let img = images(dir.path()).join(format!("volumes/{id}.img"));
    assert_eq!(std::fs::metadata(&img).unwrap().len(), GIB);

    // B11: same size → same volume; other size → 409. Size given as a string is accepted.
    let (st, again) = s
        .post("/volumes", json!({"name": "v1", "size": GIB.to_string()}))
        .await;
    assert_eq!(
        (st, again["id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );
    let (st, _) = s
        .post("/volumes", json!({"name": "v1", "size": 2 * GIB}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);

    // Size and name validation.
    for bad in [
        json!({"name": "x", "size": 0}),
        json!({"name": "x", "size": 1000}),
        json!({"name": "x"}),
        json!({"size": GIB}),
        json!({"name": "", "size": GIB}),
        json!({"name": "x", "size": -512}),
        json!({"name": "x", "size": "big"}),
        json!({"name": "a\u{1}b", "size": GIB}),
        json!({"name": "x".repeat(1025), "size": GIB}),
        json!({"name": "x", "size": GIB, "clone": true}),
        json!({"name": "x", "size": GIB, "config": {"access_protocol": "iscsi"}}),
        json!({"name": "x", "size": GIB, "config": {"thick": "maybe"}}),
        json!({"name": "x", "size": GIB, "volume_group_id": "nogroup"}),
    ] {
        let (st, e) = s.post("/volumes", bad.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad} → {e}");
    }
    let (st, e) = s.post("/volumes", json!({"name": "x", "size": 1000})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e["errors"][0]["message"].as_str().unwrap().contains("512"));
    let (st, e) = s.post("/volumes", json!({"size": GIB})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("volume name"));

    let (st, got) = s.get(&format!("/volumes/{id}")).await;
    assert_eq!((st, &got["id"]), (StatusCode::OK, &json!(id)));
    let (st, byname) = s.get("/volumes?name=v1").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(byname.as_array().unwrap().len(), 1);
    let (st, _) = s.get("/volumes/0123456789abcdef0123456789abcdef").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s.get("/volumes/not-an-id").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Expand: bigger → 200; equal → 200; smaller → 400; "" group → unchanged.
    let p = format!("/volumes/{id}");
    let (st, e) = s
        .put(
            &p,
            json!({"id": id, "size": 2 * GIB, "volume_group_id": ""}),
        )
        .await;
    assert_eq!((st, &e["size"]), (StatusCode::OK, &json!(2 * GIB)), "{e}");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 2 * GIB);
    let (st, _) = s.put(&p, json!({"id": id, "size": 2 * GIB})).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s.put(&p, json!({"id": id, "size": GIB})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s.put(&p, json!({"id": id, "size": 2 * GIB + 100})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(s.get(&p).await.1["size"], 2 * GIB);

    // Edit: description, config merge and removal, immutable and read-only keys.
    let (st, e) = s
        .put(&p, json!({"id": id, "description": "new", "config": {"custom": null, "k": "v", "multi_initiator": true}}))
        .await;
    assert_eq!(st, StatusCode::OK, "{e}");
    assert_eq!(e["description"], "new");
    assert!(e["config"].get("custom").is_none());
    assert_eq!(e["config"]["k"], "v");
    assert_eq!(e["size"], 2 * GIB);
    for (bad, key) in [
        (json!({"config": {"thick": "true"}}), "thick"),
        (
            json!({"config": {"access_protocol": "iscsi"}}),
            "access_protocol",
        ),
        (json!({"name": "renamed"}), "name"),
        (json!({"clone": true}), "clone"),
        (json!({"id": "0123456789abcdef0123456789abcdef"}), "id"),
        (json!({"volume_group_id": "nogroup"}), "nogroup"),
    ] {
        let (st, err) = s.put(&p, bad.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            err["errors"][0]["message"].as_str().unwrap().contains(key),
            "{err}"
        );
    }
    // Re-sending current immutable values is fine; an edit+expand with a bad key applies nothing.
    let (st, _) = s
        .put(
            &p,
            json!({"config": {"thick": "false", "access_protocol": "local"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .put(&p, json!({"size": 4 * GIB, "config": {"thick": true}}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(s.get(&p).await.1["size"], 2 * GIB);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 2 * GIB);
    // Both forms at once, atomically.
    let (st, e) = s
        .put(&p, json!({"size": 3 * GIB, "description": "both"}))
        .await;
    assert_eq!(
        (st, &e["size"], &e["description"]),
        (StatusCode::OK, &json!(3 * GIB), &json!("both"))
    );
    let (st, _) = s
        .put(
            "/volumes/0123456789abcdef0123456789abcdef",
            json!({"size": GIB}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Delete: 204, then 404 everywhere; the image is gone.
    let (st, _) = s.delete(&format!("{p}?force=maybe")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s.delete(&format!("{p}?force=false")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(!img.exists());
    assert_eq!(s.get(&p).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.get("/volumes?name=v1").await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.delete(&p).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn thick_volumes_are_allocated() {
    let dir = TempDir::new("thick");
    let s = Server::start(dir.path()).await;
    let (st, v) = s
        .post(
            "/volumes",
            json!({"name": "t", "size": 8 * MIB, "config": {"thick": "true"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["used_bytes"].as_u64().unwrap() >= 8 * MIB, "{v}");
    let (st, v) = s
        .put(
            &format!("/volumes/{}", v["id"].as_str().unwrap()),
            json!({"size": 16 * MIB}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(v["used_bytes"].as_u64().unwrap() >= 16 * MIB, "{v}");
    let (_, sparse) = s
        .post("/volumes", json!({"name": "s", "size": 8 * MIB}))
        .await;
    assert_eq!(sparse["used_bytes"], 0);
}

#[tokio::test]
async fn retention_moves_images_to_retained() {
    let dir = TempDir::new("retain");
    let s = Server::start(dir.path()).await;
    let (_, v) = s
        .post(
            "/volumes",
            json!({"name": "keep", "size": MIB, "config": {"destroy_on_delete": "false"}}),
        )
        .await;
    let id = v["id"].as_str().unwrap();
    assert_eq!(
        s.delete(&format!("/volumes/{id}?force=false")).await.0,
        StatusCode::NO_CONTENT
    );
    assert!(images(dir.path())
        .join(format!("retained/{id}.img"))
        .exists());
    assert_eq!(
        s.get(&format!("/volumes/{id}")).await.0,
        StatusCode::NOT_FOUND
    );

    let (_, v) = s
        .post(
            "/volumes",
            json!({"name": "gone", "size": MIB, "config": {"destroy_on_delete": false}}),
        )
        .await;
    let id = v["id"].as_str().unwrap();
    assert_eq!(
        s.delete(&format!("/volumes/{id}?force=true")).await.0,
        StatusCode::NO_CONTENT
    );
    assert!(!images(dir.path())
        .join(format!("retained/{id}.img"))
        .exists());
    assert!(!images(dir.path())
        .join(format!("volumes/{id}.img"))
        .exists());
}

/// A host's IQNs and NQNs name the directories of the targets made for it, so anything that
/// is not an initiator name (a path above all) is refused with the reason, and nothing is
/// stored.
#[tokio::test]
async fn host_initiators_must_be_initiator_names_not_paths() {
    let dir = TempDir::new("hosts-names");
    let s = Server::start(dir.path()).await;
    for (field, name, reason) in [
        (
            "iqns",
            "../../../../etc/cron.d/x",
            "does not start with iqn.",
        ),
        ("iqns", "/etc/passwd", "does not start with iqn."),
        ("iqns", "iqn.2026-12.x:a/../../b", "a '/'"),
        ("nqns", "nqn.2014-08.x:a b", "a space"),
        (
            "nqns",
            "iqn.1993-08.org.debian:01:abc",
            "does not start with nqn.",
        ),
    ] {
        let (st, body) = s
            .post("/hosts", json!({"uuid": "node-1", field: [name]}))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{name}: {body}");
        let msg = body.to_string();
        assert!(
            msg.contains("host 'node-1'") && msg.contains(reason),
            "{msg}"
        );
        assert!(
            msg.contains(if field == "iqns" {
                "/etc/iscsi/initiatorname.iscsi"
            } else {
                "/etc/nvme/hostnqn"
            }),
            "{msg}"
        );
    }
    let (_, all) = s.get("/hosts").await;
    assert_eq!(all, json!([]), "nothing stored");
    let (st, h) = s
        .post(
            "/hosts",
            json!({"uuid": "node-1", "access_protocol": "iscsi",
                   "iqns": ["iqn.1993-08.org.debian:01:6e2b4b1c9f3", ""],
                   "nqns": ["nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{h}");
}

#[tokio::test]
async fn hosts_upsert_get_and_delete() {
    let dir = TempDir::new("hosts");
    let s = Server::start(dir.path()).await;
    let (st, h) = s
        .post(
            "/hosts",
            json!({"uuid": "u1", "name": "n1", "iqns": ["iqn.a"], "networks": ["10.0.0.1/24"],
                               "chap_user": "cu", "chap_password": "secret", "vbcheck_probe": 1}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{h}");
    assert_eq!(h["id"], "u1");
    assert_eq!(h["access_protocol"], "local");
    assert!(h.get("chap_password").is_none());
    let (st, h) = s.post("/hosts", json!({"uuid": "u1", "name": "n1b", "networks": ["10.0.0.2/24"], "access_protocol": "LOCAL"})).await;
    assert_eq!(st, StatusCode::OK, "{h}");
    let (_, all) = s.get("/hosts").await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["name"], "n1b");
    assert_eq!(all[0]["networks"], json!(["10.0.0.2/24"]));
    let (st, one) = s.get("/hosts/u1").await;
    assert_eq!((st, &one["uuid"]), (StatusCode::OK, &json!("u1")));
    assert_eq!(s.get("/hosts/nope").await.0, StatusCode::NOT_FOUND);

    // Initiator owned by another uuid → 409 (B24); no uuid → 400.
    assert_eq!(
        s.post("/hosts", json!({"uuid": "u2", "nqns": ["nqn.x"]}))
            .await
            .0,
        StatusCode::OK
    );
    let (st, _) = s
        .post("/hosts", json!({"uuid": "u3", "nqns": ["nqn.x"]}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(
        s.post("/hosts", json!({"name": "x"})).await.0,
        StatusCode::BAD_REQUEST
    );

    // A host is information about the host: any protocol is stored as sent (lower case),
    // with its initiators, as the HPE CSI driver registers a node that has open-iscsi.
    for (uuid, protocol, key, initiator) in [
        ("u4", "iscsi", "iqns", "iqn.1994-05.com.redhat:node4"),
        (
            "u5",
            "NVMeTCP",
            "nqns",
            "nqn.2014-08.org.nvmexpress:uuid:u5",
        ),
        ("u6", "fc", "wwpns", "10000090fa000006"),
    ] {
        let (st, h) = s
            .post(
                "/hosts",
                json!({"uuid": uuid, "name": uuid, "access_protocol": protocol, key: [initiator]}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{protocol}: {h}");
        let (_, got) = s.get(&format!("/hosts/{uuid}")).await;
        assert_eq!(got["access_protocol"], protocol.to_ascii_lowercase());
        assert_eq!(got[key], json!([initiator]));
    }
    // B24 holds whatever the protocol.
    assert_eq!(
        s.post(
            "/hosts",
            json!({"uuid": "u7", "access_protocol": "iscsi", "iqns": ["iqn.1994-05.com.redhat:node4"]})
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    // The refusal is at publish: 400 naming what this CSP serves; `local` still works.
    let w = s.volume("pw", MIB).await;
    let wid = w["id"].as_str().unwrap();
    let (st, e) = s
        .put(
            &format!("/volumes/{wid}/actions/publish"),
            json!({"host_uuid": "u4", "access_protocol": "iscsi"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let msg = e["errors"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("'iscsi'") && msg.contains("serves only 'local'"),
        "{msg}"
    );
    assert_eq!(
        s.get(&format!("/volumes/{wid}")).await.1["published"],
        false
    );
    let (st, info) = s
        .put(
            &format!("/volumes/{wid}/actions/publish"),
            json!({"host_uuid": "u4", "access_protocol": "local"}),
        )
        .await;
    assert_eq!(
        (st, &info["access_protocol"]),
        (StatusCode::OK, &json!("local"))
    );
    assert_eq!(
        s.put(
            &format!("/volumes/{wid}/actions/unpublish"),
            json!({"host_uuid": "u4"})
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );

    // Delete: published → 409, unknown → 404, missing uuid → 400.
    let v = s.volume("pv", MIB).await;
    let vid = v["id"].as_str().unwrap();
    let (st, _) = s
        .put(
            &format!("/volumes/{vid}/actions/publish"),
            json!({"host_uuid": "u2", "access_protocol": "local"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(s.delete("/hosts/u2").await.0, StatusCode::CONFLICT);
    assert_eq!(s.delete("/hosts?uuid=u2").await.0, StatusCode::CONFLICT);
    assert_eq!(s.delete("/hosts").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(s.delete("/hosts?uuid=nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.delete("/hosts/nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.delete("/hosts?uuid=u1").await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        s.put(
            &format!("/volumes/{vid}/actions/unpublish"),
            json!({"host_uuid": "u2"})
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.delete("/hosts/u2").await.0, StatusCode::NO_CONTENT);
    for uuid in ["u4", "u5", "u6"] {
        assert_eq!(
            s.delete(&format!("/hosts/{uuid}")).await.0,
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(s.get("/hosts").await.1, json!([]));
}

#[tokio::test]
async fn publish_and_unpublish() {
    let dir = TempDir::new("publish");
    let s = Server::start(dir.path()).await;
    s.host("h1").await;
    s.host("h2").await;
    let v = s.volume("pub", 16 * MIB).await;
    let id = v["id"].as_str().unwrap();
    let pubp = format!("/volumes/{id}/actions/publish");
    let unp = format!("/volumes/{id}/actions/unpublish");

    let (st, info) = s
        .put(
            &pubp,
            json!({"host_uuid": "h1", "access_protocol": "local"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{info}");
    assert_eq!(info["serial_number"], id);
    assert_eq!(info["access_protocol"], "local");
    assert_eq!(info["lun_id"], 0);
    assert_eq!(info["target_names"], json!([]));
    assert_eq!(info["discovery_ips"], json!([]));
    let lp = std::path::PathBuf::from(info["local_path"].as_str().unwrap());
    assert!(lp.is_absolute());
    assert_eq!(std::fs::canonicalize(&lp).unwrap(), lp);
    assert_eq!(
        std::fs::canonicalize(images(dir.path()).join(format!("volumes/{id}.img"))).unwrap(),
        lp
    );
    // Idempotent; absent protocol → local.
    let (st, again) = s.put(&pubp, json!({"host_uuid": "h1"})).await;
    assert_eq!((st, &again), (StatusCode::OK, &info));
    assert_eq!(s.get(&format!("/volumes/{id}")).await.1["published"], true);

    // Second host without multi_initiator → 409; errors for bad bodies.
    assert_eq!(
        s.put(&pubp, json!({"host_uuid": "h2"})).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        s.put(&pubp, json!({"host_uuid": "nohost"})).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.put(
            &pubp,
            json!({"host_uuid": "h1", "access_protocol": "iscsi"})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.put(
            &pubp,
            json!({"name": "pub", "access_protocol": "nfs", "access_control_list": "10.0.0.0/8"})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(s.put(&pubp, json!({})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        s.put(
            "/volumes/0123456789abcdef0123456789abcdef/actions/publish",
            json!({"host_uuid": "h1"})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );

    // Published volumes cannot be deleted (400), even with force.
    assert_eq!(
        s.delete(&format!("/volumes/{id}?force=true")).await.0,
        StatusCode::BAD_REQUEST
    );

    // Multi-initiator: refcount per host.
    let (st, _) = s
        .put(
            &format!("/volumes/{id}"),
            json!({"config": {"multi_initiator": true}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        s.put(&pubp, json!({"host_uuid": "h2"})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        s.put(&unp, json!({"host_uuid": "h1"})).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.get(&format!("/volumes/{id}")).await.1["published"], true);
    assert_eq!(
        s.put(&unp, json!({"host_uuid": "h2", "access_protocol": "local"}))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.get(&format!("/volumes/{id}")).await.1["published"], false);
    // Idempotent unpublish; unknown host fine; unknown volume 404; file form 400.
    assert_eq!(
        s.put(&unp, json!({"host_uuid": "h2"})).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.put(&unp, json!({"host_uuid": "whoever"})).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.put(
            "/volumes/0123456789abcdef0123456789abcdef/actions/unpublish",
            json!({"host_uuid": "h1"})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.put(&unp, json!({"name": "pub", "access_control_list": "x"}))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn snapshots_list_get_and_delete_rules() {
    let dir = TempDir::new("snaps");
    let s = Server::start(dir.path()).await;
    let v = s.volume("src", 4 * MIB).await;
    let vid = v["id"].as_str().unwrap();
    let (st, l) = s.get(&format!("/snapshots?volume_id={vid}")).await;
    assert_eq!((st, l), (StatusCode::OK, json!([])));
    let (st, l) = s
        .get(&format!("/snapshots/?volume_id={vid}&mode=exists"))
        .await;
    assert_eq!((st, l), (StatusCode::OK, json!([])));
    // A filter that matches nothing lists nothing: an unknown volume is 200 [] (the HPE
    // CSI driver fails ListSnapshots on a 404), with or without mode=exists.
    for q in ["", "&mode=exists"] {
        let (st, l) = s
            .get(&format!(
                "/snapshots?volume_id=0123456789abcdef0123456789abcdef{q}"
            ))
            .await;
        assert_eq!((st, l), (StatusCode::OK, json!([])), "{q}");
    }
    let (st, l) = s.get("/snapshots?volume_id=not-an-id").await;
    assert_eq!((st, l), (StatusCode::OK, json!([])));
    // A name is a lookup: no match is 404 (B1, C27), whatever the volume filter.
    assert_eq!(
        s.get("/snapshots?volume_id=0123456789abcdef0123456789abcdef&name=s1")
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let snap = s.snapshot("s1", vid).await;
    let sid = snap["id"].as_str().unwrap().to_owned();
    assert_eq!(snap["volume_id"], vid);
    assert_eq!(snap["volume_name"], "src");
    assert_eq!(snap["size"], 4 * MIB);
    assert!(snap["creation_time"].as_i64().unwrap() > 0);
    s.wait_ready(&sid).await;
    // Same name + volume → same snapshot; other volume → 409; bad bodies → 400.
    assert_eq!(s.snapshot("s1", vid).await["id"], sid);
    let v2 = s.volume("other", MIB).await;
    let v2id = v2["id"].as_str().unwrap();
    assert_eq!(
        s.post("/snapshots", json!({"name": "s1", "volume_id": v2id}))
            .await
            .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        s.post(
            "/snapshots",
            json!({"name": "x", "volume_id": "0123456789abcdef0123456789abcdef"})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.post("/snapshots", json!({"name": "x"})).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.post("/snapshots", json!({"volume_id": vid})).await.0,
        StatusCode::BAD_REQUEST
    );

    s.snapshot("s2", vid).await;
    let (_, all) = s.get(&format!("/snapshots?volume_id={vid}")).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let (_, one) = s
        .get(&format!("/snapshots?volume_id={vid}&mode=exists"))
        .await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    let (_, every) = s.get("/snapshots").await;
    assert_eq!(every.as_array().unwrap().len(), 2);
    let (st, named) = s.get(&format!("/snapshots?volume_id={vid}&name=s1")).await;
    assert_eq!((st, named.as_array().unwrap().len()), (StatusCode::OK, 1));
    assert_eq!(s.get("/snapshots?name=s1").await.0, StatusCode::OK);
    assert_eq!(
        s.get(&format!("/snapshots?volume_id={vid}&name=nope"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get(&format!("/snapshots?volume_id={v2id}&name=s1"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/snapshots/0123456789abcdef0123456789abcdef").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(s.get(&format!("/snapshots/{sid}")).await.0, StatusCode::OK);

    // Volume with snapshots → 409.
    assert_eq!(
        s.delete(&format!("/volumes/{vid}?force=false")).await.0,
        StatusCode::CONFLICT
    );
    // S4 → 204, 404 after; file removed.
    assert_eq!(
        s.delete(&format!("/snapshots/{sid}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert!(!images(dir.path())
        .join(format!("snapshots/{sid}.img"))
        .exists());
    assert_eq!(
        s.get(&format!("/snapshots/{sid}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.delete(&format!("/snapshots/{sid}")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn clones_and_temporary_snapshots() {
    let dir = TempDir::new("clones");
    let s = Server::start(dir.path()).await;
    let v = s.volume("parent", 8 * MIB).await;
    let vid = v["id"].as_str().unwrap();
    // B16: snapshot then clone immediately (the copy may still be running).
    let snap = s
        .snapshot("snap-for-clone-2024-01-01T00:00:00Z-abcd1234", vid)
        .await;
    let sid = snap["id"].as_str().unwrap();
    let (st, c) = s
        .post(
            "/volumes",
            json!({"name": "c1", "base_snapshot_id": sid, "clone": true, "config": {}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert_eq!(c["clone"], true);
    assert_eq!(c["base_snapshot_id"], sid);
    assert_eq!(c["parent_volume_id"], vid);
    assert_eq!(c["size"], 8 * MIB);
    let cid = c["id"].as_str().unwrap().to_owned();
    let done = s.wait_clone(&cid).await;
    assert_eq!(done["config"]["background_operation_status"], "Completed");
    // B11 for clones: same source, no size → same; other source → 409.
    let (st, again) = s
        .post("/volumes", json!({"name": "c1", "base_snapshot_id": sid}))
        .await;
    assert_eq!(
        (st, again["id"].as_str()),
        (StatusCode::OK, Some(cid.as_str()))
    );
    assert_eq!(
        s.post("/volumes", json!({"name": "c1", "size": 8 * MIB}))
            .await
            .0,
        StatusCode::CONFLICT
    );

    // Clone errors: smaller size, unknown snapshot, clone=false with a snapshot.
    assert_eq!(
        s.post(
            "/volumes",
            json!({"name": "c2", "base_snapshot_id": sid, "size": MIB})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.post(
            "/volumes",
            json!({"name": "c2", "base_snapshot_id": "0123456789abcdef0123456789abcdef"})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.post(
            "/volumes",
            json!({"name": "c2", "base_snapshot_id": sid, "clone": false})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    // A bigger clone is fine.
    let (st, big) = s
        .post(
            "/volumes",
            json!({"name": "c3", "base_snapshot_id": sid, "clone": true, "size": 16 * MIB}),
        )
        .await;
    assert_eq!((st, &big["size"]), (StatusCode::OK, &json!(16 * MIB)));
    let bid = big["id"].as_str().unwrap().to_owned();
    s.wait_clone(&bid).await;

    // Clones never depend on the snapshot after the copy: the snapshot is not in use.
    let (_, sn) = s.get(&format!("/snapshots/{sid}")).await;
    assert_eq!(sn["in_use"], false);
    // Deleting one clone keeps the temporary snapshot (another clone remains)…
    assert_eq!(
        s.delete(&format!("/volumes/{bid}?force=false")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.get(&format!("/snapshots/{sid}")).await.0, StatusCode::OK);
    // …deleting the last one removes it (§8.5), and the parent becomes deletable.
    assert_eq!(
        s.delete(&format!("/volumes/{cid}?force=false")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.get(&format!("/snapshots/{sid}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(!images(dir.path())
        .join(format!("snapshots/{sid}.img"))
        .exists());
    assert_eq!(
        s.delete(&format!("/volumes/{vid}?force=false")).await.0,
        StatusCode::NO_CONTENT
    );

    // An ordinary snapshot survives its clones.
    let v = s.volume("p2", MIB).await;
    let vid = v["id"].as_str().unwrap();
    let snap = s.snapshot("keep-me", vid).await;
    let sid = snap["id"].as_str().unwrap();
    let (_, c) = s
        .post(
            "/volumes",
            json!({"name": "c4", "base_snapshot_id": sid, "clone": true}),
        )
        .await;
    let cid = c["id"].as_str().unwrap().to_owned();
    s.wait_clone(&cid).await;
    assert_eq!(
        s.delete(&format!("/volumes/{cid}?force=false")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.get(&format!("/snapshots/{sid}")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn groups_and_snapshot_groups() {
    let dir = TempDir::new("groups");
    let s = Server::start(dir.path()).await;
    let (st, l) = s.get("/volume_groups").await;
    assert_eq!((st, l), (StatusCode::OK, json!([])));
    assert_eq!(
        s.get("/volume_groups?name=g").await.0,
        StatusCode::NOT_FOUND
    );
    let (st, g) = s
        .post("/volume_groups", json!({"name": "g", "description": "grp"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{g}");
    let gid = g["id"].as_str().unwrap().to_owned();
    assert_eq!(g["volumes"], json!([]));
    let (st, g2) = s.post("/volume_groups", json!({"name": "g"})).await;
    assert_eq!((st, &g2["id"]), (StatusCode::OK, &json!(gid)));
    assert_eq!(
        s.post("/volume_groups", json!({})).await.0,
        StatusCode::BAD_REQUEST
    );
    let (st, byname) = s.get("/volume_groups?name=g").await;
    assert_eq!((st, &byname[0]["id"]), (StatusCode::OK, &json!(gid)));
    assert_eq!(
        s.get(&format!("/volume_groups/{gid}")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        s.get("/volume_groups/0123456789abcdef0123456789abcdef")
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Members: join with PUT, also at create.
    let a = s.volume("a", MIB).await;
    let aid = a["id"].as_str().unwrap().to_owned();
    let (st, a2) = s
        .put(&format!("/volumes/{aid}"), json!({"volume_group_id": gid}))
        .await;
    assert_eq!((st, &a2["volume_group_id"]), (StatusCode::OK, &json!(gid)));
    let (st, b) = s
        .post(
            "/volumes",
            json!({"name": "b", "size": MIB, "volume_group_id": gid}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let bid = b["id"].as_str().unwrap().to_owned();
    let (_, g) = s.get(&format!("/volume_groups/{gid}")).await;
    assert_eq!(g["volumes"].as_array().unwrap().len(), 2);
    assert_eq!(
        s.delete(&format!("/volume_groups/{gid}")).await.0,
        StatusCode::CONFLICT
    );

    // Snapshot groups.
    assert_eq!(s.get("/snapshot_groups").await.0, StatusCode::BAD_REQUEST);
    // An unknown group is a filter matching nothing: 200 [].
    let (st, l) = s
        .get("/snapshot_groups?volume_group_id=0123456789abcdef0123456789abcdef")
        .await;
    assert_eq!((st, l), (StatusCode::OK, json!([])));
    let (st, l) = s
        .get(&format!("/snapshot_groups?volume_group_id={gid}"))
        .await;
    assert_eq!((st, l), (StatusCode::OK, json!([])));
    let (st, sg) = s
        .post(
            "/snapshot_groups",
            json!({"name": "sg", "volume_group_id": gid}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{sg}");
    let sgid = sg["id"].as_str().unwrap().to_owned();
    let snaps = sg["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0]["creation_time"], snaps[1]["creation_time"]);
    assert_eq!(sg["volume_group_name"], "g");
    let (st, again) = s
        .post(
            "/snapshot_groups",
            json!({"name": "sg", "volume_group_id": gid}),
        )
        .await;
    assert_eq!((st, &again["id"]), (StatusCode::OK, &json!(sgid)));
    for snap in snaps {
        s.wait_ready(snap["id"].as_str().unwrap()).await;
    }
    let (_, l) = s
        .get(&format!("/snapshot_groups?volume_group_id={gid}"))
        .await;
    assert_eq!(l.as_array().unwrap().len(), 1);
    assert_eq!(
        s.get(&format!("/snapshot_groups/{sgid}")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        s.post(
            "/snapshot_groups",
            json!({"name": "x", "volume_group_id": "0123456789abcdef0123456789abcdef"})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    let (_, empty) = s.post("/volume_groups", json!({"name": "empty"})).await;
    assert_eq!(
        s.post(
            "/snapshot_groups",
            json!({"name": "x", "volume_group_id": empty["id"]})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.post(
            "/snapshot_groups",
            json!({"name": "sg", "volume_group_id": empty["id"]})
        )
        .await
        .0,
        StatusCode::CONFLICT
    );

    // A clone copy from a member makes P4 refuse nothing once done; P4 deletes members.
    assert_eq!(
        s.delete(&format!("/snapshot_groups/{sgid}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.get(&format!("/snapshot_groups/{sgid}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get(&format!("/snapshots?volume_id={aid}")).await.1,
        json!([])
    );
    assert_eq!(
        s.delete(&format!("/snapshot_groups/{sgid}")).await.0,
        StatusCode::NOT_FOUND
    );

    // Leave the group with null; then G4 works.
    let (st, a3) = s
        .put(&format!("/volumes/{aid}"), json!({"volume_group_id": null}))
        .await;
    assert_eq!((st, &a3["volume_group_id"]), (StatusCode::OK, &json!("")));
    assert_eq!(
        s.delete(&format!("/volumes/{bid}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.delete(&format!("/volume_groups/{gid}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.delete(&format!("/volume_groups/{gid}")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn capacity_partners_routing_and_errors() {
    let dir = TempDir::new("misc");
    let mut s = Server::start(dir.path()).await;
    let (st, c) = s.get("/capacity").await;
    assert_eq!(st, StatusCode::OK);
    assert!(c["total_bytes"].as_u64().unwrap() > 0);
    assert!(c["free_bytes"].as_u64().unwrap() <= c["total_bytes"].as_u64().unwrap());
    assert!(c["used_bytes"].is_u64());
    // The config keys whose change on an existing volume takes effect (volbridge checks
    // CSI mutable parameters against them); thick and access_protocol are fixed at create.
    assert_eq!(
        s.get("/mutable_config").await,
        (
            StatusCode::OK,
            json!({"volume": ["destroy_on_delete", "multi_initiator"]})
        )
    );
    assert_eq!(
        s.get("/replication_partners").await,
        (StatusCode::OK, json!([]))
    );
    assert_eq!(
        s.get("/replication_partners?name=x").await.0,
        StatusCode::NOT_FOUND
    );

    // Unknown route → 404 JSON; wrong method → 405 JSON (decode() checks the bodies).
    assert_eq!(s.get("/nothing").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        s.call(Method::PATCH, "/volumes", None).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        s.call(Method::DELETE, "/volumes", None).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Malformed JSON and wrong types → 400 JSON, also without a Content-Type.
    for body in [
        "{",
        "[]",
        "\"x\"",
        "{\"name\": 5, \"size\": 512}",
        "{\"name\":\"a\",\"size\":true}",
        "",
    ] {
        let resp = s
            .client
            .post(s.url("/volumes"))
            .header("x-auth-token", &s.token)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let (st, _) = decode(resp).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "body {body:?}");
    }
    let resp = s
        .client
        .post(s.url("/volumes"))
        .header("x-auth-token", &s.token)
        .body(json!({"name": "noct", "size": MIB}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = s
        .client
        .post(s.url("/tokens"))
        .header("content-type", "text/plain")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(decode(resp).await.0, StatusCode::BAD_REQUEST);

    // The /csp prefix and one trailing slash on collections.
    s.prefix = "/csp/containers/v1".into();
    let (st, l) = s.get("/volumes/").await;
    assert_eq!((st, l.as_array().unwrap().len()), (StatusCode::OK, 1));
    assert_eq!(s.get("/volumes?name=noct").await.0, StatusCode::OK);
}
