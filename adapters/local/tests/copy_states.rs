//! The copy-state rules of docs/copy-semantics.md at the CSP level, each in both pool modes:
//! `dir` (no reflink on this ext4 host: snapshots and clones are background copies) and the
//! default image pool (reflink: everything is complete inside the request).
//!
//! The copies move real data: volumes hold a few hundred MiB written through their image
//! files, so a copy is still running when the next request arrives. Assertions that depend
//! on that hold whichever way a race goes; the states each rule forbids are checked always.

mod common;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use volbridge_local_csp::PoolChoice;

const SIZE: u64 = 512 * MIB;
/// Data written into a source volume: enough that a copy takes a while.
const DATA_MIB: u64 = 320;

/// Fills `mib` MiB at the start of an image with a pattern derived from `seed`.
fn fill(path: &Path, mib: u64, seed: u8) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut chunk = vec![0u8; MIB as usize];
    for i in 0..mib {
        for (j, b) in chunk.iter_mut().enumerate() {
            *b = ((j as u64 ^ (i * 7919)) as u8) ^ seed | 1;
        }
        f.write_all_at(&chunk, i * MIB).unwrap();
    }
    f.sync_all().unwrap();
}

fn same_bytes(a: &Path, b: &Path, len: u64) -> bool {
    let (fa, fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
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

/// One server in one pool mode over a fresh data dir, with a source volume full of data
/// and a reference copy of its bytes.
struct Setup {
    dir: TempDir,
    pool: PoolChoice,
    s: Server,
    vid: String,
    reference: PathBuf,
}

impl Setup {
    async fn new(tag: &str, pool: PoolChoice) -> Setup {
        let dir = TempDir::new(tag);
        let s = Server::start_with(dir.path(), pool).await;
        let v = s.volume("source", SIZE).await;
        let vid = v["id"].as_str().unwrap().to_owned();
        let img = images(dir.path()).join(format!("volumes/{vid}.img"));
        fill(&img, DATA_MIB, 0x3c);
        let reference = dir.path().join("reference.bin");
        std::fs::copy(&img, &reference).unwrap();
        Setup {
            dir,
            pool,
            s,
            vid,
            reference,
        }
    }

    /// Whether snapshots and clones copy (a `dir` pool here) instead of reflinking.
    fn copies(&self) -> bool {
        self.pool == PoolChoice::Dir
    }

    fn image(&self, kind: &str, id: &str) -> PathBuf {
        images(self.dir.path()).join(format!("{kind}/{id}.img"))
    }

    fn snapshot_images(&self) -> usize {
        image_count(self.dir.path(), "snapshots")
    }

    async fn clone_of(&self, name: &str, sid: &str) -> Value {
        let (st, c) = self
            .s
            .post(
                "/volumes",
                json!({"name": name, "base_snapshot_id": sid, "clone": true}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{c}");
        c
    }
}

fn status(v: &Value) -> &str {
    v["config"]["background_operation_status"]
        .as_str()
        .unwrap_or("")
}

/// Waits (generously) until `check` holds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..1200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within a minute");
}

// Rule 1: CreateSnapshot answers ready_to_use=false at once while a copy is needed, true
// once done (S3, S1 and a repeated S2 all say so); with reflink true at once.
async fn rule1(pool: PoolChoice) {
    let t = Setup::new("rule1", pool).await;
    let snap = t.s.snapshot("r1", &t.vid).await;
    let sid = snap["id"].as_str().unwrap().to_owned();
    if t.copies() {
        assert_eq!(snap["ready_to_use"], false, "a copy was needed: {snap}");
        assert_eq!(
            snap["in_use"], false,
            "a delete would not be refused: {snap}"
        );
        let p = &snap["copy_progress"];
        assert!(
            p["bytes_total"].as_u64().unwrap() >= DATA_MIB * MIB,
            "the progress counts the volume's data: {snap}"
        );
        assert!(p["bytes_done"].as_u64().unwrap() <= p["bytes_total"].as_u64().unwrap());
    } else {
        assert_eq!(
            snap["ready_to_use"], true,
            "reflink is complete at once: {snap}"
        );
        assert!(snap.get("copy_progress").is_none(), "{snap}");
    }
    let ready = t.s.wait_ready(&sid).await;
    assert!(ready.get("copy_progress").is_none(), "{ready}");
    let again = t.s.snapshot("r1", &t.vid).await;
    assert_eq!(again["id"], sid.as_str());
    assert_eq!(again["ready_to_use"], true);
    let (_, listed) = t.s.get(&format!("/snapshots?volume_id={}", t.vid)).await;
    assert_eq!(listed[0]["ready_to_use"], true, "{listed}");
    assert!(same_bytes(&t.reference, &t.image("snapshots", &sid), SIZE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule1_snapshot_ready_states_dir() {
    rule1(PoolChoice::Dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule1_snapshot_ready_states_image_pool() {
    rule1(PoolChoice::Auto).await
}

// Rule 2: S4 of a snapshot whose copy runs cancels the copy and answers 204, leaving no
// record and no image; in_use is never true on this CSP.
async fn rule2_cancel(pool: PoolChoice) {
    let t = Setup::new("rule2c", pool).await;
    let snap = t.s.snapshot("r2", &t.vid).await;
    let sid = snap["id"].as_str().unwrap().to_owned();
    let (st, got) = t.s.get(&format!("/snapshots/{sid}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got["in_use"], false, "{got}");
    let (st, e) = t.s.delete(&format!("/snapshots/{sid}")).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{e}");
    assert_eq!(
        t.s.get(&format!("/snapshots/{sid}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.s.get(&format!("/snapshots?volume_id={}", t.vid)).await.1,
        json!([])
    );
    assert_eq!(t.snapshot_images(), 0, "the image goes before the 204");
    // The volume has no snapshot any more: it can be deleted at once.
    let (st, e) = t.s.delete(&format!("/volumes/{}", t.vid)).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{e}");
    // The cancelled copy never brings anything back, not even after a restart.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.snapshot_images(), 0);
    let Setup { dir, pool, s, .. } = t;
    drop(s.stop().await);
    let s = Server::start_with(dir.path(), pool).await;
    assert_eq!(s.get("/snapshots").await.1, json!([]));
    assert_eq!(image_count(dir.path(), "snapshots"), 0);
    assert_eq!(image_count(dir.path(), "volumes"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule2_delete_cancels_a_running_snapshot_copy_dir() {
    rule2_cancel(PoolChoice::Dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule2_delete_cancels_a_running_snapshot_copy_image_pool() {
    rule2_cancel(PoolChoice::Auto).await
}

// Rule 2: a snapshot that clones are being copied from is deleted for the API at once
// (204, 404 after, its name free), and the clones keep their data source: they complete
// with the snapshot's bytes; its image goes when the last of them is done.
async fn rule2_source(pool: PoolChoice) {
    let t = Setup::new("rule2s", pool).await;
    let snap = t.s.snapshot("r2s", &t.vid).await;
    let sid = snap["id"].as_str().unwrap().to_owned();
    // One clone made while the snapshot is still copying, one after it is ready.
    let early = t.clone_of("early", &sid).await;
    t.s.wait_ready(&sid).await;
    let late = t.clone_of("late", &sid).await;
    if t.copies() {
        assert_eq!(status(&late), "InProgress", "{late}");
        let p = &late["copy_progress"];
        assert!(
            p["bytes_total"].as_u64().unwrap() >= DATA_MIB * MIB,
            "{late}"
        );
    } else {
        assert_eq!(status(&early), "Completed", "{early}");
        assert_eq!(status(&late), "Completed", "{late}");
        assert!(late.get("copy_progress").is_none(), "{late}");
    }
    let (st, got) = t.s.get(&format!("/snapshots/{sid}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got["in_use"], false, "a delete is not refused: {got}");
    // Meanwhile the source volume changes: the clones must still get the snapshot's bytes.
    fill(&t.image("volumes", &t.vid), 8, 0x77);
    let (st, e) = t.s.delete(&format!("/snapshots/{sid}")).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{e}");
    assert_eq!(
        t.s.get(&format!("/snapshots/{sid}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.s.get(&format!("/snapshots?volume_id={}", t.vid)).await.1,
        json!([])
    );
    assert_eq!(
        t.s.get("/snapshots?name=r2s").await.0,
        StatusCode::NOT_FOUND
    );
    // The name is free again, and the source volume has no snapshot in the API's eyes.
    let other = t.s.snapshot("r2s", &t.vid).await;
    assert_ne!(other["id"], sid.as_str());
    let oid = other["id"].as_str().unwrap().to_owned();
    assert_eq!(
        t.s.delete(&format!("/snapshots/{oid}")).await.0,
        StatusCode::NO_CONTENT
    );
    // A clone of the deleted snapshot cannot be made any more.
    let (st, _) =
        t.s.post(
            "/volumes",
            json!({"name": "third", "base_snapshot_id": sid}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    for c in [&early, &late] {
        let cid = c["id"].as_str().unwrap();
        let done = t.s.wait_clone(cid).await;
        assert_eq!(status(&done), "Completed", "{done}");
        assert!(done.get("copy_progress").is_none(), "{done}");
        assert!(
            same_bytes(&t.reference, &t.image("volumes", cid), SIZE),
            "clone {} differs from the snapshot",
            c["name"]
        );
    }
    eventually("the deleted snapshot's image going", async || {
        t.snapshot_images() == 0
    })
    .await;
    // Nothing of it comes back after a restart.
    let Setup { dir, pool, s, .. } = t;
    drop(s.stop().await);
    let s = Server::start_with(dir.path(), pool).await;
    assert_eq!(s.get("/snapshots").await.1, json!([]));
    assert_eq!(image_count(dir.path(), "snapshots"), 0);
    assert_eq!(s.get("/volumes").await.1.as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule2_clones_keep_their_data_source_dir() {
    rule2_source(PoolChoice::Dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule2_clones_keep_their_data_source_image_pool() {
    rule2_source(PoolChoice::Auto).await
}

// Rule 2: deleting the clone instead releases a deleted (hidden) source at once.
async fn rule2_release(pool: PoolChoice) {
    let t = Setup::new("rule2r", pool).await;
    let snap = t.s.snapshot("r2r", &t.vid).await;
    let sid = snap["id"].as_str().unwrap().to_owned();
    t.s.wait_ready(&sid).await;
    let c = t.clone_of("c", &sid).await;
    let cid = c["id"].as_str().unwrap().to_owned();
    assert_eq!(
        t.s.delete(&format!("/snapshots/{sid}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        t.s.delete(&format!("/volumes/{cid}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(t.snapshot_images(), 0, "released with its last clone");
    assert!(!t.image("volumes", &cid).exists());
    assert_eq!(
        t.s.delete(&format!("/volumes/{}", t.vid)).await.0,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule2_deleting_the_clone_releases_a_deleted_source_dir() {
    rule2_release(PoolChoice::Dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule2_deleting_the_clone_releases_a_deleted_source_image_pool() {
    rule2_release(PoolChoice::Auto).await
}

// Rule 3 (the CSP's share): the temporary snapshot B16 makes for one clone (name prefix,
// description = the clone's name) goes in the commit that completes that clone, so it is
// never visible once the clone is complete, whoever is or is not waiting for it.
async fn rule3_temporary(pool: PoolChoice) {
    let t = Setup::new("rule3t", pool).await;
    let (st, snap) =
        t.s.post(
            "/snapshots",
            json!({"name": "snap-for-clone-2026-12-06T00:00:00Z-0a1b2c3d", "description": "c",
                   "volume_id": t.vid}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{snap}");
    let sid = snap["id"].as_str().unwrap().to_owned();
    let c = t.clone_of("c", &sid).await;
    let cid = c["id"].as_str().unwrap().to_owned();
    let mut visible_while_copying = false;
    loop {
        let (_, v) = t.s.get(&format!("/volumes/{cid}")).await;
        let gone = t.s.get(&format!("/snapshots/{sid}")).await.0 == StatusCode::NOT_FOUND;
        if status(&v) == "Completed" {
            // Read after the volume: completion and removal are one commit.
            assert!(
                t.s.get(&format!("/snapshots/{sid}")).await.0 == StatusCode::NOT_FOUND,
                "the temporary snapshot is still visible with its clone complete"
            );
            break;
        }
        assert_eq!(status(&v), "InProgress", "{v}");
        visible_while_copying |= !gone;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(visible_while_copying || !t.copies());
    eventually("the temporary snapshot's image going", async || {
        t.snapshot_images() == 0
    })
    .await;
    assert!(same_bytes(&t.reference, &t.image("volumes", &cid), SIZE));
    // One made for another clone, or a plain snapshot, stays.
    let other =
        t.s.post(
            "/snapshots",
            json!({"name": "snap-for-clone-2026-12-06T00:00:01Z-0a1b2c3e", "description": "x",
                   "volume_id": t.vid}),
        )
        .await
        .1;
    let oid = other["id"].as_str().unwrap().to_owned();
    let d = t.clone_of("d", &oid).await;
    t.s.wait_clone(d["id"].as_str().unwrap()).await;
    assert_eq!(
        t.s.get(&format!("/snapshots/{oid}")).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule3_a_temporary_snapshot_goes_when_its_clone_completes_dir() {
    rule3_temporary(PoolChoice::Dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule3_a_temporary_snapshot_goes_when_its_clone_completes_image_pool() {
    rule3_temporary(PoolChoice::Auto).await
}

// Rule 4: a copy reports its bytes on the object being filled, moving forward, and the
// field is gone once the object is complete.
async fn rule4(pool: PoolChoice) {
    let t = Setup::new("rule4", pool).await;
    let snap = t.s.snapshot("r4", &t.vid).await;
    let sid = snap["id"].as_str().unwrap().to_owned();
    let mut last = 0;
    loop {
        let (_, s) = t.s.get(&format!("/snapshots/{sid}")).await;
        if s["ready_to_use"] == true {
            assert!(s.get("copy_progress").is_none(), "{s}");
            break;
        }
        let p = &s["copy_progress"];
        let (done, total) = (
            p["bytes_done"].as_u64().unwrap(),
            p["bytes_total"].as_u64().unwrap(),
        );
        assert!(done >= last && done <= total, "{s}");
        last = done;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(t.copies() || last == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule4_copy_progress_dir() {
    rule4(PoolChoice::Dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule4_copy_progress_image_pool() {
    rule4(PoolChoice::Auto).await
}

// Rule 5: kill -9 in the middle of a snapshot copy and of a clone copy. After the restart
// no image is left without a record, no record points at partial data: the interrupted
// snapshot is dropped (never shown ready), the interrupted clone copy starts over and
// completes with the right bytes, a deleted source kept for it goes once it is done.
async fn rule5(pool: PoolChoice) {
    let dir = TempDir::new("rule5");
    let child = Child::start(dir.path(), pool).await;
    let c = &child;
    let v = c
        .post("/volumes", json!({"name": "src", "size": SIZE}))
        .await;
    let vid = v["id"].as_str().unwrap().to_owned();
    let img = images(dir.path()).join(format!("volumes/{vid}.img"));
    fill(&img, DATA_MIB, 0x42);
    let reference = dir.path().join("reference.bin");
    std::fs::copy(&img, &reference).unwrap();
    // A ready snapshot, a clone copying from it, the snapshot deleted (kept for the clone),
    // then a second snapshot whose copy runs when the kill comes.
    let s1 = c
        .post("/snapshots", json!({"name": "s1", "volume_id": vid}))
        .await;
    let s1id = s1["id"].as_str().unwrap().to_owned();
    c.wait_ready(&s1id).await;
    let clone = c
        .post(
            "/volumes",
            json!({"name": "clone", "base_snapshot_id": s1id}),
        )
        .await;
    let cid = clone["id"].as_str().unwrap().to_owned();
    assert_eq!(
        c.delete(&format!("/snapshots/{s1id}")).await,
        StatusCode::NO_CONTENT
    );
    fill(&img, 16, 0x99);
    let s2 = c
        .post("/snapshots", json!({"name": "s2", "volume_id": vid}))
        .await;
    let s2id = s2["id"].as_str().unwrap().to_owned();
    let interrupted = s2["ready_to_use"] == false;
    assert_eq!(interrupted, pool == PoolChoice::Dir, "{s2}");
    // A clone of it waits for its copy.
    let waiting = c
        .post(
            "/volumes",
            json!({"name": "waiting", "base_snapshot_id": s2id}),
        )
        .await;
    let wid = waiting["id"].as_str().unwrap().to_owned();
    child.kill();

    let s = Server::start_with(dir.path(), pool).await;
    let (st, got) = s.get(&format!("/snapshots/{s2id}")).await;
    if interrupted {
        // Dropped: not shown at all (never as ready), its image removed.
        assert_eq!(st, StatusCode::NOT_FOUND, "{got}");
        assert_eq!(s.get("/snapshots?name=s2").await.0, StatusCode::NOT_FOUND);
    } else {
        assert_eq!(got["ready_to_use"], true, "{got}");
    }
    assert_eq!(
        s.get(&format!("/snapshots/{s1id}")).await.0,
        StatusCode::NOT_FOUND,
        "a deleted snapshot stays deleted"
    );
    // Every snapshot image has a record the API shows, or is the deleted source the
    // restarted clone copy reads.
    let (_, listed) = s.get("/snapshots").await;
    let listed = listed.as_array().unwrap().len();
    let images_now = image_count(dir.path(), "snapshots");
    assert!(
        images_now <= listed + 1,
        "{images_now} images, {listed} snapshots"
    );
    let done = s.wait_clone(&cid).await;
    assert_eq!(status(&done), "Completed", "{done}");
    let clone_img = images(dir.path()).join(format!("volumes/{cid}.img"));
    assert!(
        same_bytes(&reference, &clone_img, SIZE),
        "the restarted clone copy must hold the snapshot's bytes"
    );
    eventually(
        "the deleted source going after the restarted copy",
        async || image_count(dir.path(), "snapshots") == listed,
    )
    .await;
    // The clone of the dropped snapshot cannot get its data: Failed, saying why (a clone
    // from a volume starts over on it, see the engine).
    let w = s.wait_clone(&wid).await;
    if interrupted {
        assert!(
            status(&w).starts_with("Failed") && status(&w).contains("source snapshot lost"),
            "{w}"
        );
        assert_eq!(
            s.delete(&format!("/volumes/{wid}?force=true")).await.0,
            StatusCode::NO_CONTENT
        );
    } else {
        assert_eq!(status(&w), "Completed", "{w}");
        assert_eq!(
            s.delete(&format!("/volumes/{wid}")).await.0,
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(image_count(dir.path(), "volumes"), 2);
    drop(s.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule5_kill_9_during_copies_dir() {
    rule5(PoolChoice::Dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule5_kill_9_during_copies_image_pool() {
    rule5(PoolChoice::Auto).await
}

/// A local CSP in a child process (this test binary, running `child_server`), killed with
/// SIGKILL by [`Child::kill`].
struct Child {
    process: std::cell::RefCell<std::process::Child>,
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Child {
    async fn start(dir: &Path, pool: PoolChoice) -> Child {
        let exe = std::env::current_exe().unwrap();
        let process = std::process::Command::new(exe)
            .args([
                "--exact",
                "child_server",
                "--nocapture",
                "--include-ignored",
            ])
            .env("VB_CHILD_DATA_DIR", dir)
            .env("VB_CHILD_POOL", pool.as_str())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let port_file = dir.join("port");
        let mut port = None;
        for _ in 0..600 {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse::<u16>().ok())
            {
                port = Some(p);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let port = port.expect("the child server did not start within 30 s");
        std::fs::remove_file(&port_file).unwrap();
        let client = http_client().build().unwrap();
        let base = format!("http://127.0.0.1:{port}/containers/v1");
        let login: Value = client
            .post(format!("{base}/tokens"))
            .json(&json!({"username": USER, "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Child {
            process: std::cell::RefCell::new(process),
            client,
            base,
            token: login["session_token"].as_str().unwrap().to_owned(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("x-auth-token", &self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    async fn delete(&self, path: &str) -> StatusCode {
        self.client
            .delete(format!("{}{path}", self.base))
            .header("x-auth-token", &self.token)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn wait_ready(&self, id: &str) {
        for _ in 0..1200 {
            let s: Value = self
                .client
                .get(format!("{}/snapshots/{id}", self.base))
                .header("x-auth-token", &self.token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if s["ready_to_use"] == true {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("snapshot {id} never became ready");
    }

    fn kill(&self) {
        let mut p = self.process.borrow_mut();
        p.kill().unwrap();
        p.wait().unwrap();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let mut p = self.process.borrow_mut();
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// Not a test on its own: the server process of the kill -9 tests.
#[test]
#[ignore]
fn child_server() {
    let Some(dir) = std::env::var_os("VB_CHILD_DATA_DIR") else {
        return;
    };
    let pool: PoolChoice = std::env::var("VB_CHILD_POOL")
        .unwrap_or_default()
        .parse()
        .unwrap_or_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let dir = PathBuf::from(dir);
        let mut config = volbridge_local_csp::LocalCspConfig::new(&dir, USER, PASSWORD);
        config.pool = pool;
        let csp = volbridge_local_csp::LocalCsp::open(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        std::fs::write(dir.join("port.tmp"), port.to_string()).unwrap();
        std::fs::rename(dir.join("port.tmp"), dir.join("port")).unwrap();
        csp.serve(listener, std::future::pending()).await.unwrap();
    });
}
