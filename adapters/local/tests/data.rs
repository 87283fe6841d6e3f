//! Snapshot and clone copies carry the real bytes, stay sparse, and are point-in-time.

mod common;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

const SIZE: u64 = 256 * MIB;

/// Writes non-zero patterns at scattered offsets (about 4 MiB in all).
fn scribble(path: &Path, seed: u8) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let offsets = [
        0u64,
        4096 * 3 + 17,
        10 * MIB,
        33 * MIB + 4095,
        100 * MIB,
        200 * MIB + 1,
        SIZE - 512 * 1024,
    ];
    for (i, off) in offsets.iter().enumerate() {
        let chunk: Vec<u8> = (0..600_000u32)
            .map(|x| ((x.wrapping_mul(2654435761) >> 13) as u8) ^ seed ^ (i as u8) | 1)
            .collect();
        let n = chunk.len().min((SIZE - off) as usize);
        f.write_all_at(&chunk[..n], *off).unwrap();
    }
    f.sync_all().unwrap();
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

fn same_bytes(a: &Path, b: &Path, len: u64) -> bool {
    let (fa, fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let mut ba = vec![0u8; 4 << 20];
    let mut bb = vec![0u8; 4 << 20];
    let mut off = 0;
    while off < len {
        let n = ((len - off) as usize).min(ba.len());
        fa.read_exact_at(&mut ba[..n], off).unwrap();
        fb.read_exact_at(&mut bb[..n], off).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
        off += n as u64;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_clone_copy_real_data_sparsely() {
    let dir = TempDir::new("data");
    let s = Server::start(dir.path()).await;
    let v = s.volume("data", SIZE).await;
    let vid = v["id"].as_str().unwrap().to_owned();
    let vol_img = images(dir.path()).join(format!("volumes/{vid}.img"));
    scribble(&vol_img, 0x5a);
    let reference = dir.path().join("reference.bin");
    std::fs::copy(&vol_img, &reference).unwrap();

    let snap = s.snapshot("snap", &vid).await;
    let sid = snap["id"].as_str().unwrap().to_owned();
    if snap["ready_to_use"] == json!(false) {
        assert_eq!(snap["in_use"], true, "a copying snapshot reports in_use");
        // While its data is being read, the volume cannot be published.
        s.host("h").await;
        let (st, _) = s
            .put(
                &format!("/volumes/{vid}/actions/publish"),
                json!({"host_uuid": "h"}),
            )
            .await;
        assert!(st == StatusCode::CONFLICT || st == StatusCode::OK);
        let _ = s
            .put(
                &format!("/volumes/{vid}/actions/unpublish"),
                json!({"host_uuid": "h"}),
            )
            .await;
    }
    let snap = s.wait_ready(&sid).await;
    assert_eq!(snap["in_use"], false);
    let snap_img = images(dir.path()).join(format!("snapshots/{sid}.img"));
    assert_eq!(std::fs::metadata(&snap_img).unwrap().len(), SIZE);
    assert!(
        same_bytes(&reference, &snap_img, SIZE),
        "snapshot differs from the volume"
    );
    let used = allocated(&snap_img);
    assert!(
        used < 16 * MIB,
        "snapshot copy is not sparse: {used} bytes allocated"
    );

    // Change the volume afterwards: the snapshot keeps the old bytes.
    scribble(&vol_img, 0xa5);
    assert!(same_bytes(&reference, &snap_img, SIZE));

    // Clone, bigger than the snapshot.
    let (st, c) = s
        .post("/volumes", json!({"name": "clone", "base_snapshot_id": sid, "clone": true, "size": SIZE + 64 * MIB}))
        .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    let cid = c["id"].as_str().unwrap().to_owned();
    let status = c["config"]["background_operation_status"]
        .as_str()
        .unwrap()
        .to_owned();
    if status == "InProgress" {
        // Not usable until the copy is done (B39), and the snapshot is busy meanwhile.
        s.host("h").await;
        let (st, _) = s
            .put(
                &format!("/volumes/{cid}/actions/publish"),
                json!({"host_uuid": "h"}),
            )
            .await;
        assert!(st == StatusCode::CONFLICT || st == StatusCode::OK);
        let (st, _) = s.delete(&format!("/snapshots/{sid}")).await;
        assert!(st == StatusCode::CONFLICT || st == StatusCode::NO_CONTENT);
        if st == StatusCode::CONFLICT {
            // Still there, and still reported busy or just finished.
            assert_eq!(s.get(&format!("/snapshots/{sid}")).await.0, StatusCode::OK);
        }
        let _ = s
            .put(
                &format!("/volumes/{cid}/actions/unpublish"),
                json!({"host_uuid": "h"}),
            )
            .await;
    }
    let done = s.wait_clone(&cid).await;
    assert_eq!(done["config"]["background_operation_status"], "Completed");
    let clone_img = images(dir.path()).join(format!("volumes/{cid}.img"));
    assert_eq!(
        std::fs::metadata(&clone_img).unwrap().len(),
        SIZE + 64 * MIB
    );
    assert!(
        same_bytes(&reference, &clone_img, SIZE),
        "clone differs from the snapshot"
    );
    let tail = std::fs::File::open(&clone_img).unwrap();
    let mut buf = vec![1u8; MIB as usize];
    tail.read_exact_at(&mut buf, SIZE + MIB).unwrap();
    assert!(buf.iter().all(|b| *b == 0));
    let used = allocated(&clone_img);
    assert!(
        used < 16 * MIB,
        "clone copy is not sparse: {used} bytes allocated"
    );

    // The clone does not depend on the snapshot any more.
    if s.get(&format!("/snapshots/{sid}")).await.0 == StatusCode::OK {
        assert_eq!(
            s.delete(&format!("/snapshots/{sid}")).await.0,
            StatusCode::NO_CONTENT
        );
    }
    assert!(same_bytes(&reference, &clone_img, SIZE));
    assert_eq!(s.get(&format!("/volumes/{cid}")).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_clone_mid_copy_stops_it_cleanly() {
    let dir = TempDir::new("cancel");
    let s = Server::start(dir.path()).await;
    let v = s.volume("big", 512 * MIB).await;
    let vid = v["id"].as_str().unwrap().to_owned();
    let img = images(dir.path()).join(format!("volumes/{vid}.img"));
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let chunk = vec![7u8; MIB as usize];
    for i in 0..64 {
        f.write_all_at(&chunk, i * 8 * MIB).unwrap();
    }
    let snap = s.snapshot("s", &vid).await;
    let sid = snap["id"].as_str().unwrap().to_owned();
    let (_, c) = s
        .post("/volumes", json!({"name": "c", "base_snapshot_id": sid}))
        .await;
    let cid = c["id"].as_str().unwrap().to_owned();
    assert_eq!(
        s.delete(&format!("/volumes/{cid}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.get(&format!("/volumes/{cid}")).await.0,
        StatusCode::NOT_FOUND
    );
    s.wait_ready(&sid).await;
    // The snapshot becomes deletable once no copy from it runs.
    let mut deleted = false;
    for _ in 0..200 {
        let (st, _) = s.delete(&format!("/snapshots/{sid}")).await;
        if st == StatusCode::NO_CONTENT {
            deleted = true;
            break;
        }
        assert_eq!(st, StatusCode::CONFLICT);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(deleted);
    assert!(!images(dir.path())
        .join(format!("volumes/{cid}.img"))
        .exists());
}
