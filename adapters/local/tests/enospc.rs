//! Out of space → 500 with "insufficient storage space", partial files removed (B42).
//! Needs root to mount a small tmpfs; fails unless VOLBRIDGE_ALLOW_SKIP=1 when it cannot.

mod common;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::os::unix::fs::FileExt;
use std::process::Command;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn small_tmpfs(dir: &std::path::Path, size: &str) -> Option<Mount> {
    let ok = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(Mount(dir.to_owned()));
    }
    if std::env::var("VOLBRIDGE_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("skipping: cannot mount a tmpfs (needs root)");
        return None;
    }
    panic!("cannot mount a tmpfs for the out-of-space test (needs root); set VOLBRIDGE_ALLOW_SKIP=1 to skip");
}

fn message(v: &serde_json::Value) -> String {
    v["errors"][0]["message"].as_str().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_space_is_reported_and_cleaned_up() {
    let dir = TempDir::new("enospc");
    let Some(_mount) = small_tmpfs(dir.path(), "24m") else {
        return;
    };
    let data = dir.path().join("data");
    let s = Server::start(&data).await;

    // Thick create larger than the filesystem.
    let (st, e) = s
        .post(
            "/volumes",
            json!({"name": "thick", "size": 64 * MIB, "config": {"thick": "true"}}),
        )
        .await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR, "{e}");
    assert!(message(&e).contains("insufficient storage space"), "{e}");
    assert_eq!(image_count(&data, "volumes"), 0);
    assert_eq!(s.get("/volumes?name=thick").await.0, StatusCode::NOT_FOUND);

    // Thick expand beyond the space: 500, size unchanged.
    let (st, t) = s
        .post(
            "/volumes",
            json!({"name": "t2", "size": 4 * MIB, "config": {"thick": "true"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{t}");
    let tid = t["id"].as_str().unwrap().to_owned();
    let (st, e) = s
        .put(&format!("/volumes/{tid}"), json!({"size": 64 * MIB}))
        .await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR, "{e}");
    assert!(message(&e).contains("insufficient storage space"), "{e}");
    assert_eq!(s.get(&format!("/volumes/{tid}")).await.1["size"], 4 * MIB);
    assert_eq!(
        std::fs::metadata(data.join(format!("volumes/{tid}.img")))
            .unwrap()
            .len(),
        4 * MIB
    );
    assert_eq!(
        s.delete(&format!("/volumes/{tid}")).await.0,
        StatusCode::NO_CONTENT
    );

    // A sparse volume holding 14 MiB: its snapshot copy cannot fit → the snapshot goes away.
    let v = s.volume("sparse", 64 * MIB).await;
    let vid = v["id"].as_str().unwrap().to_owned();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(data.join(format!("volumes/{vid}.img")))
        .unwrap();
    let chunk = vec![9u8; MIB as usize];
    for i in 0..14 {
        f.write_all_at(&chunk, i * 4 * MIB).unwrap();
    }
    let (st, snap) = s
        .post("/snapshots", json!({"name": "snap", "volume_id": vid}))
        .await;
    assert!(
        st == StatusCode::OK || st == StatusCode::INTERNAL_SERVER_ERROR,
        "{snap}"
    );
    if st == StatusCode::OK {
        let sid = snap["id"].as_str().unwrap().to_owned();
        let mut gone = false;
        for _ in 0..400 {
            if s.get(&format!("/snapshots/{sid}")).await.0 == StatusCode::NOT_FOUND {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(gone, "a snapshot whose copy failed must be removed");
    } else {
        assert!(
            message(&snap).contains("insufficient storage space"),
            "{snap}"
        );
    }
    assert_eq!(image_count(&data, "snapshots"), 0);
    assert_eq!(
        s.get(&format!("/snapshots?volume_id={vid}")).await.1,
        json!([])
    );

    // A snapshot that fits, then a clone that does not: the clone reports Failed.
    f.set_len(0).unwrap();
    f.set_len(64 * MIB).unwrap();
    for i in 0..8 {
        f.write_all_at(&chunk, i * 4 * MIB).unwrap();
    }
    let snap = s.snapshot("snap2", &vid).await;
    let sid = snap["id"].as_str().unwrap().to_owned();
    s.wait_ready(&sid).await;
    let (st, c) = s
        .post(
            "/volumes",
            json!({"name": "clone", "base_snapshot_id": sid}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    let cid = c["id"].as_str().unwrap().to_owned();
    let done = s.wait_clone(&cid).await;
    let status = done["config"]["background_operation_status"]
        .as_str()
        .unwrap();
    assert!(
        status.starts_with("Failed") && status.contains("insufficient storage space"),
        "{status}"
    );
    s.host("x").await;
    let (st, _) = s
        .put(
            &format!("/volumes/{cid}/actions/publish"),
            json!({"host_uuid": "x"}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(
        s.delete(&format!("/volumes/{cid}?force=true")).await.0,
        StatusCode::NO_CONTENT
    );
    assert!(!data.join(format!("volumes/{cid}.img")).exists());

    drop(f);

    // A full disk under the journal: the create fails with a 500, and once space returns
    // the server recovers on its own and the state is durable again.
    let filler = dir.path().join("filler");
    {
        let ff = std::fs::File::create(&filler).unwrap();
        let mut off = 0u64;
        while ff.write_all_at(&chunk, off).is_ok() {
            off += MIB;
        }
        let small = vec![1u8; 4096];
        while ff.write_all_at(&small, off).is_ok() {
            off += 4096;
        }
    }
    let mut failed = None;
    for i in 0..200 {
        let (st, e) = s
            .post(
                "/volumes",
                json!({"name": format!("full-{i}"), "size": MIB}),
            )
            .await;
        if st != StatusCode::OK {
            failed = Some((st, e));
            break;
        }
    }
    let (st, e) = failed.expect("a journal append must eventually hit the full disk");
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR, "{e}");
    assert!(message(&e).contains("insufficient storage space"), "{e}");
    std::fs::remove_file(&filler).unwrap();
    let mut healthy = false;
    for _ in 0..100 {
        if s.get("/volumes").await.0 == StatusCode::OK {
            healthy = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(healthy, "the server must recover once space is back");
    let before = s.get("/volumes").await.1;
    let csp = s.stop().await;
    drop(csp);
    let s = Server::start(&data).await;
    let after = s.get("/volumes").await.1;
    let names = |v: &serde_json::Value| {
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&before), names(&after));
    assert_eq!(
        image_count(&data, "volumes"),
        after.as_array().unwrap().len()
    );
    let csp = s.stop().await;
    drop(csp);
}
