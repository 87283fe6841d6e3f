//! The network export rules a CSP client meets without a kernel target (the configfs set-up
//! itself runs against LIO and nvmet in the VM lane, tests/vm/two_hosts.rs): the protocols
//! served are `local` plus those given addresses; a volume's protocol is fixed at create
//! and names its target scope; a publish needs the host's initiator name for that
//! protocol, and is refused, with nothing granted, when it is missing or another protocol
//! is asked for.

mod common;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use volbridge_local_csp::{LocalCsp, LocalCspConfig, PoolChoice};

/// A CSP serving iscsi and nvmetcp, its configfs a directory where the fabrics' groups
/// exist (so it needs no kernel module to start; no publish here reaches configfs).
async fn exporting(dir: &TempDir) -> Server {
    let configfs = dir.path().join("configfs");
    std::fs::create_dir_all(configfs.join("target/iscsi")).unwrap();
    std::fs::create_dir_all(configfs.join("nvmet")).unwrap();
    let mut config = LocalCspConfig::new(dir.path().join("data"), USER, PASSWORD);
    config.pool = PoolChoice::Dir;
    config.export.configfs = configfs;
    config.export.iscsi_portals = vec!["10.0.0.1:3260".parse().unwrap()];
    config.export.nvme_addresses = vec!["10.0.0.1:4420".parse().unwrap()];
    Server::serve(LocalCsp::open(config).unwrap()).await
}

fn message(body: &serde_json::Value) -> String {
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_volume_takes_a_served_protocol_at_create() {
    let dir = TempDir::new("export-create");
    let s = exporting(&dir).await;
    let (st, v) = s
        .post(
            "/volumes",
            json!({"name": "a", "size": 1 << 20, "config": {"access_protocol": "ISCSI"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["config"]["access_protocol"], "iscsi");
    assert_eq!(v["config"]["target_scope"], "volume");

    let (st, e) = s
        .post(
            "/volumes",
            json!({"name": "b", "size": 1 << 20, "config": {"access_protocol": "fc"}}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        message(&e).contains("serves only 'local', 'iscsi', 'nvmetcp'"),
        "{e}"
    );
    // The protocol cannot change afterwards.
    let id = v["id"].as_str().unwrap();
    let (st, e) = s
        .put(
            &format!("/volumes/{id}"),
            json!({"config": {"access_protocol": "nvmetcp"}}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
}

#[tokio::test]
async fn without_addresses_only_local_is_served_and_the_fix_is_named() {
    let dir = TempDir::new("export-none");
    let s = Server::start_dir(dir.path()).await;
    let (st, e) = s
        .post(
            "/volumes",
            json!({"name": "a", "size": 1 << 20, "config": {"access_protocol": "nvmetcp"}}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let m = message(&e);
    assert!(
        m.contains("serves only 'local'") && m.contains("--nvme-address"),
        "{m}"
    );
    // Nothing of the exports exists in a data dir that never served the network.
    assert!(!dir.path().join("export-id").exists());
}

#[tokio::test]
async fn publish_needs_the_hosts_initiator_name_and_the_volumes_protocol() {
    let dir = TempDir::new("export-publish");
    let s = exporting(&dir).await;
    let (_, v) = s
        .post(
            "/volumes",
            json!({"name": "db", "size": 1 << 20, "config": {"access_protocol": "iscsi"}}),
        )
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    // A node without open-iscsi registers with no IQN.
    let (st, _) = s
        .post("/hosts", json!({"uuid": "node-1", "name": "node-1", "nqns": ["nqn.2014-08.org.nvmexpress:uuid:1"]}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let publish = format!("/volumes/{id}/actions/publish");
    let (st, e) = s.put(&publish, json!({"host_uuid": "node-1"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let m = message(&e);
    assert!(
        m.contains("host 'node-1' has no iSCSI initiator name (IQN)")
            && m.contains("volume 'db'")
            && m.contains("/etc/iscsi/initiatorname.iscsi"),
        "{m}"
    );
    let (_, v) = s.get(&format!("/volumes/{id}")).await;
    assert_eq!(v["published"], false, "nothing granted");

    // Another protocol than the volume's is refused, naming the volume's.
    let (st, e) = s
        .put(
            &publish,
            json!({"host_uuid": "node-1", "access_protocol": "nvmetcp"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(message(&e).contains("is served over iscsi"), "{e}");
    let (_, v) = s.get(&format!("/volumes/{id}")).await;
    assert_eq!(v["published"], false, "nothing granted");
}
