//! The one-step clone of a volume (extension `clone_from_volume`, docs/csp-local.md): one
//! reflink, no snapshot anywhere, the standard B11 rules for retries; a pool that cannot
//! reflink does not list the feature and refuses the form with the fix. Needs root (the
//! image pool is a loop-mounted xfs or btrfs file).

mod common;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::os::unix::fs::FileExt;
use std::process::Command;

fn features(cap: &Value) -> Vec<String> {
    cap["extensions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_clones_in_one_reflink_with_no_snapshot() {
    let dir = TempDir::new("vclone");
    let s = Server::start(dir.path()).await;
    let (st, cap) = s.get("/capacity").await;
    assert_eq!(st, StatusCode::OK, "{cap}");
    assert_eq!(cap["pool"]["reflink"], true, "{cap}");
    assert!(
        features(&cap).contains(&"clone_from_volume".to_owned()),
        "{cap}"
    );

    let parent = s.volume("data", 64 * MIB).await;
    let pid = id(&parent);
    let image = |vid: &str| images(dir.path()).join(format!("volumes/{vid}.img"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(image(&pid))
        .unwrap();
    f.write_all_at(&[0x5au8; 65536], 3 * MIB).unwrap();
    f.sync_all().unwrap();

    let (st, c) = s
        .post(
            "/volumes",
            json!({"name": "copy", "base_volume_id": pid, "clone": true}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert_eq!(c["clone"], true);
    assert_eq!(c["base_snapshot_id"], "");
    assert_eq!(c["parent_volume_id"], pid.as_str());
    assert_eq!(c["base_volume_id"], pid.as_str());
    assert_eq!(c["size"], 64 * MIB);
    assert_eq!(c["config"]["background_operation_status"], "Completed");
    let (_, snaps) = s.get("/snapshots").await;
    assert_eq!(snaps, json!([]), "a one-step clone makes no snapshot");
    let mut buf = vec![0u8; 65536];
    std::fs::File::open(image(&id(&c)))
        .unwrap()
        .read_exact_at(&mut buf, 3 * MIB)
        .unwrap();
    assert!(
        buf.iter().all(|b| *b == 0x5a),
        "the clone holds the parent's data"
    );

    // B11: the same request again is the same volume; another size or source is a conflict.
    let (st, again) = s
        .post(
            "/volumes",
            json!({"name": "copy", "base_volume_id": pid, "clone": true, "size": 64 * MIB}),
        )
        .await;
    assert_eq!((st, id(&again)), (StatusCode::OK, id(&c)));
    let (st, e) = s
        .post(
            "/volumes",
            json!({"name": "copy", "base_volume_id": pid, "clone": true, "size": 128 * MIB}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    let other = s.volume("other", 64 * MIB).await;
    let (st, e) = s
        .post(
            "/volumes",
            json!({"name": "copy", "base_volume_id": id(&other), "clone": true}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    let (st, e) = s
        .post("/volumes", json!({"name": "data", "size": 64 * MIB}))
        .await;
    assert_eq!(
        st,
        StatusCode::OK,
        "a plain volume stays a plain volume: {e}"
    );
    let (st, e) = s
        .post("/volumes", json!({"name": "copy", "size": 64 * MIB}))
        .await;
    assert_eq!(
        st,
        StatusCode::CONFLICT,
        "a clone is not a plain volume: {e}"
    );

    // The read-only fields of a clone stay read-only.
    let (st, e) = s
        .put(
            &format!("/volumes/{}", id(&c)),
            json!({"base_volume_id": id(&other)}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");

    // The clone is independent of its parent.
    let (st, _) = s.delete(&format!("/volumes/{pid}")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    std::fs::File::open(image(&id(&c)))
        .unwrap()
        .read_exact_at(&mut buf, 3 * MIB)
        .unwrap();
    assert!(buf.iter().all(|b| *b == 0x5a));
    drop(s.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_one_step_clone_requests_are_refused_and_make_nothing() {
    let dir = TempDir::new("vclone-bad");
    let s = Server::start(dir.path()).await;
    let parent = s.volume("data", 64 * MIB).await;
    let pid = id(&parent);
    let snap = s.snapshot("nightly", &pid).await;
    let cases = [
        (
            json!({"name": "x", "base_volume_id": pid, "base_snapshot_id": id(&snap), "clone": true}),
            "not both",
        ),
        (
            json!({"name": "x", "base_volume_id": pid, "clone": false}),
            "clone is false",
        ),
        (
            json!({"name": "x", "base_volume_id": "0123456789abcdef0123456789abcdef", "clone": true}),
            "not found",
        ),
        (
            json!({"name": "x", "base_volume_id": pid, "clone": true, "size": 32 * MIB}),
            "smaller than volume 'data'",
        ),
    ];
    for (body, said) in cases {
        let (st, e) = s.post("/volumes", body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert!(e.to_string().contains(said), "{body}: {e}");
    }
    let (_, vols) = s.get("/volumes").await;
    assert_eq!(vols.as_array().unwrap().len(), 1, "{vols}");
    assert_eq!(image_count(&images(dir.path()), "volumes"), 1);
    drop(s.stop().await);
}

/// A `dir` pool on a filesystem without reflink (tmpfs) cannot copy a live volume in one
/// step: the feature is not listed, and the form is refused with the standard way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_without_reflink_does_not_offer_the_one_step_clone() {
    let dir = TempDir::new("vclone-dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256m", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "mounting a tmpfs needs root (CI runs as root)");
    let s = Server::start_dir(&data).await;
    let (_, cap) = s.get("/capacity").await;
    assert_eq!(cap["pool"]["reflink"], false, "{cap}");
    assert!(
        !features(&cap).contains(&"clone_from_volume".to_owned()),
        "{cap}"
    );
    let parent = s.volume("data", 16 * MIB).await;
    let (st, e) = s
        .post(
            "/volumes",
            json!({"name": "copy", "base_volume_id": id(&parent), "clone": true}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    assert!(e.to_string().contains("clone from a snapshot"), "{e}");
    let (_, vols) = s.get("/volumes").await;
    assert_eq!(vols.as_array().unwrap().len(), 1, "{vols}");
    drop(s.stop().await);
}
