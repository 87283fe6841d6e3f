//! Rules that hold for every service: secrets never reach a log line (rule 4), the gRPC
//! server accepts any HTTP/2 `:authority` (rule 34), and secrets that hold no backend
//! credential leave the call on the default backend (rule 37).

use crate::common;
use crate::csi_support::*;
use std::time::{Duration, Instant};
use tonic::Code;

#[tokio::test]
async fn rule_04_secrets_never_logged() {
    if !common::require_root_and_tools("rule_04_secrets_never_logged") {
        return;
    }
    let Some(r) = Rig::start_with(
        "r04",
        RigOptions {
            csp_port: true,
            env: &[("RUST_LOG", "trace")],
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let planted_password = format!("planted-S3cret-{}", random_hex());
    let planted_user = format!("planted-User-{}", random_hex());
    let planted_extra = format!("planted-Extra-{}", random_hex());
    let port = r.csp_port.unwrap().to_string();
    // The embedded CSP's address with a wrong password: every controller call fails at login.
    let bad = map(&[
        ("backend", "local-by-secret"),
        ("serviceName", "127.0.0.1"),
        ("servicePort", &port),
        ("username", &planted_user),
        ("password", &planted_password),
        ("token", &planted_extra),
    ]);
    let good = r.local_secrets();
    let real_password = good["password"].clone();
    let mut c = Checks::new();
    let mut messages = Vec::new();

    // Valid secrets: a whole lifecycle on the backend the secrets select.
    let mut req = r.create_req("sec-vol", Some(64 * MIB), vec![Access::Mount.cap()]);
    req.secrets = good.clone();
    let vol = c.ok(r.create(req).await, "CreateVolume with valid secrets");
    if let Some(vol) = vol.and_then(|v| v.volume) {
        let mut q = r.cpublish_req(&vol, Access::Mount, false);
        q.secrets = good.clone();
        let ctx = c
            .ok(
                t(r.ctrl().controller_publish_volume(q)).await,
                "ControllerPublishVolume with secrets",
            )
            .map(|p| p.publish_context)
            .unwrap_or_default();
        let staging = r.staging("sec-vol");
        let target = r.target("sec-vol", "pod-a");
        let mut q = r.stage_req(&vol, &ctx, &staging, Access::Mount);
        q.secrets = good.clone();
        c.ok(
            t(r.node().node_stage_volume(q)).await,
            "NodeStageVolume with secrets",
        );
        let mut q = r.publish_req(&vol, &ctx, &staging, &target, Access::Mount, false);
        q.secrets = good.clone();
        c.ok(
            t(r.node().node_publish_volume(q)).await,
            "NodePublishVolume with secrets",
        );
        c.check(
            write_file(&target, "f", b"hello").is_ok(),
            "write into the volume published with secrets",
        );
        c.ok(
            t(r.ctrl().create_snapshot(csi::CreateSnapshotRequest {
                source_volume_id: "sec-vol".into(),
                name: "sec-snap".into(),
                secrets: good.clone(),
                ..Default::default()
            }))
            .await,
            "CreateSnapshot with secrets",
        );
        c.ok(
            t(r.ctrl().list_snapshots(csi::ListSnapshotsRequest {
                secrets: good.clone(),
                ..Default::default()
            }))
            .await,
            "ListSnapshots with secrets",
        );
        c.ok(
            t(r.ctrl()
                .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                    volume_id: "sec-vol".into(),
                    capacity_range: range(128 * MIB, 0),
                    secrets: good.clone(),
                    volume_capability: Some(Access::Mount.cap()),
                }))
            .await,
            "ControllerExpandVolume with secrets",
        );
        c.ok(
            t(r.node().node_expand_volume(csi::NodeExpandVolumeRequest {
                volume_id: "sec-vol".into(),
                volume_path: target.clone(),
                capacity_range: range(128 * MIB, 0),
                staging_target_path: staging.clone(),
                volume_capability: Some(Access::Mount.cap()),
                secrets: good.clone(),
            }))
            .await,
            "NodeExpandVolume with secrets",
        );
        c.ok(r.unpublish("sec-vol", &target).await, "NodeUnpublishVolume");
        c.ok(r.unstage("sec-vol", &staging).await, "NodeUnstageVolume");
        c.ok(
            t(r.ctrl()
                .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
                    volume_id: "sec-vol".into(),
                    node_id: r.node_id.clone(),
                    secrets: good.clone(),
                }))
            .await,
            "ControllerUnpublishVolume with secrets",
        );
        let snap = c.ok(
            t(r.ctrl().create_snapshot(csi::CreateSnapshotRequest {
                source_volume_id: "sec-vol".into(),
                name: "sec-snap".into(),
                secrets: good.clone(),
                ..Default::default()
            }))
            .await,
            "CreateSnapshot again with secrets",
        );
        // Let a background copy finish before deleting.
        if let Some(s) = snap.and_then(|s| s.snapshot) {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut ready = s.ready_to_use;
            while !ready && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                ready = t(r.ctrl().create_snapshot(csi::CreateSnapshotRequest {
                    source_volume_id: "sec-vol".into(),
                    name: "sec-snap".into(),
                    secrets: good.clone(),
                    ..Default::default()
                }))
                .await
                .map(|s| s.into_inner().snapshot.is_some_and(|s| s.ready_to_use))
                .unwrap_or(false);
            }
        }
        c.ok(
            t(r.ctrl().delete_snapshot(csi::DeleteSnapshotRequest {
                snapshot_id: "sec-snap".into(),
                secrets: good.clone(),
            }))
            .await,
            "DeleteSnapshot with secrets",
        );
        c.ok(
            t(r.ctrl().delete_volume(csi::DeleteVolumeRequest {
                volume_id: "sec-vol".into(),
                secrets: good.clone(),
            }))
            .await,
            "DeleteVolume with secrets",
        );
    }

    // Planted secrets on every RPC that carries a secrets map.
    let mut req = r.create_req("planted", Some(64 * MIB), vec![Access::Mount.cap()]);
    req.secrets = bad.clone();
    let res = t(r.ctrl().create_volume(req)).await;
    c.check(res.is_err(), "CreateVolume with a wrong password must fail");
    messages.push(describe(&res));
    messages.push(describe(
        &t(r.ctrl().delete_volume(csi::DeleteVolumeRequest {
            volume_id: "planted".into(),
            secrets: bad.clone(),
        }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl()
            .controller_publish_volume(csi::ControllerPublishVolumeRequest {
                volume_id: "planted".into(),
                node_id: r.node_id.clone(),
                volume_capability: Some(Access::Mount.cap()),
                secrets: bad.clone(),
                ..Default::default()
            }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl()
            .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
                volume_id: "planted".into(),
                node_id: r.node_id.clone(),
                secrets: bad.clone(),
            }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl()
            .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
                volume_id: "planted".into(),
                volume_capabilities: vec![Access::Mount.cap()],
                secrets: bad.clone(),
                ..Default::default()
            }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl().create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: "planted".into(),
            name: "planted-snap".into(),
            secrets: bad.clone(),
            ..Default::default()
        }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl().delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: "planted-snap".into(),
            secrets: bad.clone(),
        }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl().list_snapshots(csi::ListSnapshotsRequest {
            secrets: bad.clone(),
            ..Default::default()
        }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl()
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id: "planted".into(),
                capacity_range: range(128 * MIB, 0),
                secrets: bad.clone(),
                volume_capability: Some(Access::Mount.cap()),
            }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl()
            .controller_modify_volume(csi::ControllerModifyVolumeRequest {
                volume_id: "planted".into(),
                secrets: bad.clone(),
                mutable_parameters: map(&[("destroyOnDelete", "true")]),
            }))
        .await,
    ));
    let staging = r.staging("planted");
    let target = r.target("planted", "pod-p");
    let fake_vol = csi::Volume {
        volume_id: "planted".into(),
        ..Default::default()
    };
    let mut q = r.stage_req(&fake_vol, &Map::new(), &staging, Access::Mount);
    q.secrets = bad.clone();
    messages.push(describe(&t(r.node().node_stage_volume(q)).await));
    let mut q = r.publish_req(
        &fake_vol,
        &Map::new(),
        &staging,
        &target,
        Access::Mount,
        false,
    );
    q.secrets = bad.clone();
    messages.push(describe(&t(r.node().node_publish_volume(q)).await));
    messages.push(describe(
        &t(r.node().node_expand_volume(csi::NodeExpandVolumeRequest {
            volume_id: "planted".into(),
            volume_path: staging.clone(),
            capacity_range: range(128 * MIB, 0),
            secrets: bad.clone(),
            ..Default::default()
        }))
        .await,
    ));
    messages.push(describe(
        &t(r.group()
            .create_volume_group_snapshot(csi::CreateVolumeGroupSnapshotRequest {
                name: "planted-group".into(),
                source_volume_ids: vec!["planted".into()],
                secrets: bad.clone(),
                ..Default::default()
            }))
        .await,
    ));
    messages.push(describe(
        &t(r.group()
            .get_volume_group_snapshot(csi::GetVolumeGroupSnapshotRequest {
                group_snapshot_id: "planted-group".into(),
                secrets: bad.clone(),
                ..Default::default()
            }))
        .await,
    ));
    messages.push(describe(
        &t(r.group()
            .delete_volume_group_snapshot(csi::DeleteVolumeGroupSnapshotRequest {
                group_snapshot_id: "planted-group".into(),
                secrets: bad.clone(),
                ..Default::default()
            }))
        .await,
    ));
    // And a backend nobody listens for (the connection-failure path).
    let mut dead = bad.clone();
    dead.insert("servicePort".into(), free_port().to_string());
    let mut req = r.create_req("planted-dead", Some(64 * MIB), vec![Access::Mount.cap()]);
    req.secrets = dead;
    let res = t(r.ctrl().create_volume(req)).await;
    c.check(
        res.is_err(),
        "CreateVolume on an unreachable backend must fail",
    );
    messages.push(describe(&res));

    let log = r.d.log_text();
    c.check(
        !log.is_empty(),
        "the daemon logged nothing at RUST_LOG=trace",
    );
    for (what, value) in [
        ("planted password", planted_password.as_str()),
        ("planted username", planted_user.as_str()),
        ("planted extra secret key", planted_extra.as_str()),
        ("embedded CSP password", real_password.as_str()),
    ] {
        let hits: Vec<&str> = log.lines().filter(|l| l.contains(value)).take(3).collect();
        c.check(
            hits.is_empty(),
            format!("the {what} reached the log: {hits:?}"),
        );
        let in_answers: Vec<&String> = messages.iter().filter(|m| m.contains(value)).collect();
        c.check(
            in_answers.is_empty(),
            format!("the {what} reached a gRPC answer: {in_answers:?}"),
        );
    }
    r.assert_nothing_left();
    c.finish();
}

/// The words of a message: runs of letters, digits and `_`.
fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect()
}

#[tokio::test]
async fn rule_04_short_secrets_redacted_as_whole_tokens_only() {
    if !common::require_root_and_tools("rule_04_short_secrets_redacted_as_whole_tokens_only") {
        return;
    }
    let Some(r) = Rig::start_with(
        "r04-short",
        RigOptions {
            env: &[("RUST_LOG", "trace")],
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let mut c = Checks::new();
    // Port 1 of the loopback address: nobody listens, the connection is refused.
    let short = map(&[
        ("backend", "127.0.0.1"),
        ("username", "u"),
        ("password", "p"),
        ("servicePort", "1"),
    ]);
    let mut answers = Vec::new();
    for access in Access::BOTH {
        let mut req = r.create_req(
            &format!("short-{}", access.tag()),
            Some(64 * MIB),
            vec![access.cap()],
        );
        req.secrets = short.clone();
        answers.push((
            format!("CreateVolume ({access:?})"),
            t(r.ctrl().create_volume(req)).await.map(|_| ()),
        ));
        let published =
            t(r.ctrl()
                .controller_publish_volume(csi::ControllerPublishVolumeRequest {
                    volume_id: format!("short-{}", access.tag()),
                    node_id: r.node_id.clone(),
                    volume_capability: Some(access.cap()),
                    secrets: short.clone(),
                    ..Default::default()
                }))
            .await;
        answers.push((
            format!("ControllerPublishVolume ({access:?})"),
            published.map(|_| ()),
        ));
    }
    let deleted = t(r.ctrl().delete_volume(csi::DeleteVolumeRequest {
        volume_id: "short-mnt".into(),
        secrets: short.clone(),
    }))
    .await;
    answers.push(("DeleteVolume".into(), deleted.map(|_| ())));
    for (what, answer) in answers {
        let Err(s) = answer else {
            c.check(
                false,
                format!("{what} on an unreachable backend answered OK"),
            );
            continue;
        };
        let m = s.message();
        c.eq(s.code(), Code::Unavailable, &format!("{what}: {m}"));
        c.check(
            m.contains("error sending request for url"),
            format!("{what}: the message is garbled: {m}"),
        );
        c.check(
            m.contains("<redacted>"),
            format!("{what}: no secret was redacted in: {m}"),
        );
        let leaked: Vec<&str> = words(m)
            .into_iter()
            .filter(|w| ["u", "p", "1"].contains(w))
            .collect();
        c.check(
            leaked.is_empty() && !m.contains("127.0.0.1"),
            format!("{what}: secrets {leaked:?} in: {m}"),
        );
    }
    // Nor the credentials in the daemon's log lines of those calls, as words (the log names
    // the CSP's address: that is where an operator looks first).
    let log = r.d.log_text();
    let leaked: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("error sending request"))
        .filter(|l| words(l).iter().any(|w| ["u", "p"].contains(w)))
        .take(3)
        .collect();
    c.check(
        leaked.is_empty(),
        format!("secrets in log lines: {leaked:?}"),
    );
    c.eq(r.volume_ids().await, Vec::<String>::new(), "volumes left");
    c.finish();
}

/// Two GetPluginInfo calls with this `:authority` on a fresh connection (see
/// `h2_unary_twice`); both must answer the driver name.
fn plugin_info_with_authority<S: std::io::Read + std::io::Write>(
    c: &mut Checks,
    conn: S,
    authority: &[u8],
    what: &str,
) {
    use prost::Message;
    let shown = String::from_utf8_lossy(authority);
    match h2_unary_twice(conn, authority, "/csi.v1.Identity/GetPluginInfo", &[]) {
        Ok(answers) => {
            for (i, a) in answers.iter().enumerate() {
                let name = csi::GetPluginInfoResponse::decode(a.as_slice()).map(|r| r.name);
                c.eq(
                    name.as_deref().map_err(|e| e.to_string()),
                    Ok(DRIVER),
                    &format!("{what}, :authority {shown:?}, call {}", i + 1),
                );
            }
        }
        Err(e) => c.check(false, format!("{what}, :authority {shown:?}: {e}")),
    }
}

/// Rule 37 (csi-sanity `--csi.secrets`): a CO passes every secret a class names to every
/// call, and those may be for something else (an encryption key, a token). Secrets without
/// any backend credential key select no backend: the call runs on the default one. A map
/// with some credential keys but not all is refused, naming the missing key.
#[tokio::test]
async fn rule_37_secrets_without_backend_credentials_use_the_default_backend() {
    if !common::require_root_and_tools("rule_37_secrets_without_backend_credentials") {
        return;
    }
    let Some(r) = Rig::start("r37").await else {
        return;
    };
    let mut c = Checks::new();
    let other = map(&[("secretKey", "secretval1")]);
    let mut req = r.create_req("sec37", Some(64 * MIB), vec![Access::Mount.cap()]);
    req.secrets = other.clone();
    c.ok(
        r.create(req).await,
        "CreateVolume with secrets for something else",
    );
    c.ok(
        t(r.ctrl().create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: "sec37".into(),
            name: "sec37-snap".into(),
            secrets: other.clone(),
            ..Default::default()
        }))
        .await,
        "CreateSnapshot with secrets for something else",
    );
    let listed = t(r.ctrl().list_snapshots(csi::ListSnapshotsRequest {
        secrets: other.clone(),
        ..Default::default()
    }))
    .await;
    c.check(
        listed
            .as_ref()
            .is_ok_and(|l| l.get_ref().entries.len() == 1),
        format!("ListSnapshots with other secrets lists the default backend's: {listed:?}"),
    );
    let partial = map(&[("secretKey", "secretval1"), ("username", "admin")]);
    let mut req = r.create_req("sec37-partial", Some(64 * MIB), vec![Access::Mount.cap()]);
    req.secrets = partial;
    if let Some(st) = c.code(
        r.create(req).await,
        Code::InvalidArgument,
        "CreateVolume with a partial backend credential",
    ) {
        c.check(
            st.message().contains("backend") && !st.message().contains("secretval1"),
            format!(
                "the refusal names the missing key, not the values: {}",
                st.message()
            ),
        );
    }
    c.ok(
        t(r.ctrl().delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: "sec37-snap".into(),
            secrets: other.clone(),
        }))
        .await,
        "DeleteSnapshot with secrets for something else",
    );
    c.ok(
        t(r.ctrl().delete_volume(csi::DeleteVolumeRequest {
            volume_id: "sec37".into(),
            secrets: other,
        }))
        .await,
        "DeleteVolume with secrets for something else",
    );
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_34_any_http2_authority_on_unix_and_tcp() {
    if !common::require_root_and_tools("rule_34_any_http2_authority_on_unix_and_tcp") {
        return;
    }
    let Some(r) = Rig::start("r34").await else {
        return;
    };
    let mut c = Checks::new();
    let socket = r.path("csi.sock").display().to_string();
    // gRPC C-core (Python, C++, Ruby, PHP): the path without its first slash, '/' as %2F.
    let c_core = socket.trim_start_matches('/').replace('/', "%2F");
    let connect = || {
        let s = std::os::unix::net::UnixStream::connect(&socket).expect("connect the CSI socket");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    for (authority, who) in [
        (c_core.as_bytes(), "gRPC C-core"),
        (socket.as_bytes(), "grpc-java"),
        (b"localhost".as_slice(), "grpc-go"),
        (b"", "an empty authority"),
        (b"unix:/run/x.sock?a b", "junk"),
    ] {
        plugin_info_with_authority(&mut c, connect(), authority, &format!("unix socket, {who}"));
    }
    // The server still answers tonic over the same socket afterwards.
    c.ok(
        t(r.ident().get_plugin_info(csi::GetPluginInfoRequest {})).await,
        "GetPluginInfo from tonic after the raw clients",
    );

    // The same over TCP.
    let dir = common::TempDir::new("csi-r34-tcp");
    let port = free_port();
    let _d = common::Daemon::start(
        dir.path(),
        &["--csi-endpoint", &format!("tcp://127.0.0.1:{port}")],
    );
    let connect = || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    return s;
                }
                Err(e) if Instant::now() > deadline => panic!("connect 127.0.0.1:{port}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    };
    let addr = format!("127.0.0.1:{port}");
    for (authority, who) in [
        (addr.as_bytes(), "host:port"),
        (c_core.as_bytes(), "a socket path, percent-encoded"),
        (socket.as_bytes(), "a socket path"),
        (b"".as_slice(), "an empty authority"),
    ] {
        plugin_info_with_authority(&mut c, connect(), authority, &format!("TCP, {who}"));
    }
    c.finish();
}
