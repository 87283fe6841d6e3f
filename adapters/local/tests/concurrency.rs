//! Concurrent creates of one name yield one object (B12), and the request rate.

mod common;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicate_creates_make_one_volume() {
    let dir = TempDir::new("dupes");
    let s = Arc::new(Server::start(dir.path()).await);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.post("/volumes", json!({"name": "same", "size": 64 * MIB}))
                .await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let (st, v) = t.await.unwrap();
        assert_eq!(st, StatusCode::OK, "{v}");
        ids.insert(v["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(s.get("/volumes").await.1.as_array().unwrap().len(), 1);
    assert_eq!(image_count(dir.path(), "volumes"), 1);

    // The same for snapshots of one volume.
    let vid = ids.into_iter().next().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (s, vid) = (s.clone(), vid.clone());
        tasks.push(tokio::spawn(async move {
            s.post("/snapshots", json!({"name": "snap", "volume_id": vid}))
                .await
        }));
    }
    let mut sids = std::collections::BTreeSet::new();
    for t in tasks {
        let (st, v) = t.await.unwrap();
        assert_eq!(st, StatusCode::OK, "{v}");
        sids.insert(v["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(sids.len(), 1);
    let sid = sids.into_iter().next().unwrap();
    s.wait_ready(&sid).await;
    assert_eq!(image_count(dir.path(), "snapshots"), 1);

    // And for clones of one name.
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (s, sid) = (s.clone(), sid.clone());
        tasks.push(tokio::spawn(async move {
            s.post(
                "/volumes",
                json!({"name": "clone", "base_snapshot_id": sid, "clone": true}),
            )
            .await
        }));
    }
    let mut cids = std::collections::BTreeSet::new();
    for t in tasks {
        let (st, v) = t.await.unwrap();
        assert_eq!(st, StatusCode::OK, "{v}");
        cids.insert(v["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(cids.len(), 1);
    s.wait_clone(cids.iter().next().unwrap()).await;
    assert_eq!(image_count(dir.path(), "volumes"), 2);
}

/// The client's create+delete pair (5 requests) at concurrency 16. The 2,000 pairs/s goal
/// is for release builds; debug builds only check that it works and report the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_delete_pairs_throughput() {
    let dir = TempDir::new("rate");
    let s = Arc::new(Server::start(dir.path()).await);
    let pairs_per_worker = 150;
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..pairs_per_worker {
                let name = format!("pvc-{w}-{i}");
                let (st, _) = s.get(&format!("/volumes?name={name}")).await;
                assert_eq!(st, StatusCode::NOT_FOUND);
                let v = s.volume(&name, GIB).await;
                let id = v["id"].as_str().unwrap();
                assert_eq!(s.get(&format!("/volumes/{id}")).await.0, StatusCode::OK);
                let (st, l) = s
                    .get(&format!("/snapshots?volume_id={id}&mode=exists"))
                    .await;
                assert_eq!((st, l), (StatusCode::OK, json!([])));
                assert_eq!(
                    s.delete(&format!("/volumes/{id}?force=false")).await.0,
                    StatusCode::NO_CONTENT
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = (16 * pairs_per_worker) as f64 / start.elapsed().as_secs_f64();
    eprintln!("create+delete pairs/s at concurrency 16: {rate:.0}");
    assert_eq!(image_count(dir.path(), "volumes"), 0);

    // p50 of a single create at concurrency 1.
    let mut lat = Vec::new();
    for i in 0..200 {
        let t = std::time::Instant::now();
        s.volume(&format!("lat-{i}"), GIB).await;
        lat.push(t.elapsed());
    }
    lat.sort();
    eprintln!("create p50 at concurrency 1: {:?}", lat[lat.len() / 2]);
    if !cfg!(debug_assertions) {
        assert!(rate >= 2000.0, "{rate:.0} pairs/s");
        assert!(lat[lat.len() / 2] < std::time::Duration::from_millis(1));
    }
}
