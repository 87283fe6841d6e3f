//! The operator's manual session with `volbridge csi` against a real daemon serving CSI on
//! its unix socket, as root with real loop devices and mounts: create, publish to the node,
//! stage, publish, write, unpublish, unstage, snapshot, clone from the snapshot (same
//! bytes), expand (controller and node), delete; and nothing left mounted or attached.

mod common;

use common::{
    loops_under, mounts_under, require_root_and_tools, run, Daemon, HostCleanup, TempDir,
};
use serde_json::Value;
use std::time::{Duration, Instant};

struct Session {
    d: Daemon,
    endpoint: String,
    dir: TempDir,
    _cleanup: HostCleanup,
}

impl Session {
    fn path(&self, p: &str) -> String {
        self.dir.path().join(p).display().to_string()
    }

    fn csi_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["csi", "--endpoint", self.endpoint.as_str()];
        all.extend_from_slice(args);
        all
    }

    fn json(&self, args: &[&str]) -> Value {
        self.d.json(&self.csi_args(args))
    }

    /// Retries while the plugin answers Aborted (a copy still running when the call's
    /// deadline came), as a CO does.
    fn json_retrying(&self, args: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut all = self.csi_args(args);
            all.extend(["--output", "json"]);
            let (code, out, err) = run(&self.d, &all);
            if code == 0 {
                return serde_json::from_str(&out).unwrap();
            }
            assert!(
                err.contains("Aborted") && Instant::now() < deadline,
                "volbridge {all:?}: exit {code}: {err}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn publish_context_args(&self, volume: &str, node: &str) -> Vec<String> {
        let published = self.json(&["controller", "publish", volume, "--node-id", node]);
        published["publish_context"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(k, v)| {
                [
                    "--publish-context".to_owned(),
                    format!("{k}={}", v.as_str().unwrap()),
                ]
            })
            .collect()
    }

    fn stage_and_publish(&self, volume: &str, node: &str, stage: &str, target: &str) {
        let ctx = self.publish_context_args(volume, node);
        std::fs::create_dir_all(stage).unwrap();
        std::fs::create_dir_all(std::path::Path::new(target).parent().unwrap()).unwrap();
        let mut args = vec!["node", "stage", volume, "--staging-path", stage];
        args.extend(ctx.iter().map(String::as_str));
        self.json(&args);
        let mut args = vec![
            "node",
            "publish",
            volume,
            "--staging-path",
            stage,
            "--target-path",
            target,
        ];
        args.extend(ctx.iter().map(String::as_str));
        self.json(&args);
    }

    fn unpublish_and_unstage(&self, volume: &str, node: &str, stage: &str, target: &str) {
        self.json(&["node", "unpublish", volume, "--target-path", target]);
        assert!(
            !std::path::Path::new(target).exists(),
            "the SP removes the target it made"
        );
        self.json(&["node", "unstage", volume, "--staging-path", stage]);
        self.json(&["controller", "unpublish", volume, "--node-id", node]);
    }
}

#[test]
fn manual_session_with_volbridge_csi() {
    if !require_root_and_tools("manual_session_with_volbridge_csi") {
        return;
    }
    let dir = TempDir::new("csi-cli");
    let cleanup = HostCleanup(dir.path().to_path_buf());
    let socket = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", socket.display());
    let d = Daemon::start(dir.path(), &["--csi-endpoint", &endpoint]);
    let s = Session {
        d,
        endpoint,
        dir,
        _cleanup: cleanup,
    };

    let info = s.json(&["identity", "info"]);
    assert_eq!(info["name"], "csi.volbridge.io");
    let node = s.json(&["node", "info"])["node_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let created = s.json(&["controller", "create", "web-data", "--size", "64Mi"]);
    assert_eq!(created["volume_id"], "web-data");
    assert_eq!(created["capacity_bytes"], 64 << 20);

    let (stage, target) = (
        s.path("kubelet/globalmount"),
        s.path("kubelet/pods/p1/mount"),
    );
    s.stage_and_publish("web-data", &node, &stage, &target);
    let payload: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(format!("{target}/payload"), &payload).unwrap();
    let stats = s.json(&["node", "stats", "web-data", "--path", &target]);
    assert!(
        stats["usage"][0]["used"].as_i64().unwrap() >= 3 << 20,
        "{stats}"
    );
    s.unpublish_and_unstage("web-data", &node, &stage, &target);

    let snap = s.json(&["controller", "snapshot", "web-snap", "--source", "web-data"]);
    assert_eq!(snap["source_volume_id"], "web-data");
    let clone = s.json_retrying(&[
        "controller",
        "create",
        "web-clone",
        "--from-snapshot",
        "web-snap",
    ]);
    assert_eq!(
        clone["content_source"]["snapshot"]["snapshot_id"], "web-snap",
        "{clone}"
    );
    let (cstage, ctarget) = (
        s.path("kubelet/clone-global"),
        s.path("kubelet/pods/p2/mount"),
    );
    s.stage_and_publish("web-clone", &node, &cstage, &ctarget);
    assert!(
        std::fs::read(format!("{ctarget}/payload")).unwrap() == payload,
        "the clone holds the snapshot's bytes"
    );
    s.unpublish_and_unstage("web-clone", &node, &cstage, &ctarget);

    let grown = s.json(&["controller", "expand", "web-data", "--size", "128Mi"]);
    assert_eq!(grown["capacity_bytes"], 128 << 20);
    assert_eq!(grown["node_expansion_required"], true);
    s.stage_and_publish("web-data", &node, &stage, &target);
    let expanded = s.json(&["node", "expand", "web-data", "--path", &target]);
    assert_eq!(expanded["capacity_bytes"], 128 << 20);
    let stats = s.json(&["node", "stats", "web-data", "--path", &target]);
    assert!(
        stats["usage"][0]["total"].as_i64().unwrap() > 100 << 20,
        "the filesystem grew: {stats}"
    );
    assert!(std::fs::read(format!("{target}/payload")).unwrap() == payload);
    s.unpublish_and_unstage("web-data", &node, &stage, &target);

    s.json(&["controller", "delete", "web-clone"]);
    s.json(&["controller", "delete-snapshot", "web-snap"]);
    s.json(&["controller", "delete", "web-data"]);
    let listed = s.json(&["controller", "list"]);
    assert_eq!(
        listed["entries"].as_array().map_or(0, Vec::len),
        0,
        "{listed}"
    );
    assert!(
        mounts_under(s.dir.path()).is_empty(),
        "{:?}",
        mounts_under(s.dir.path())
    );
    assert!(
        loops_under(s.dir.path()).is_empty(),
        "{:?}",
        loops_under(s.dir.path())
    );
}
