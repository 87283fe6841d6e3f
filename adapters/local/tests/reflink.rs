//! Reflink snapshots and clones on a filesystem that has them (btrfs or xfs on a loop
//! image). Needs root and mkfs.btrfs or mkfs.xfs; without them it fails
//! (skips only with VOLBRIDGE_ALLOW_SKIP=1), like every test that needs the machine.

mod common;
use common::*;
use reqwest::StatusCode;
use serde_json::json;
use std::os::unix::fs::FileExt;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Mounted(std::path::PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflink_snapshots_and_clones_are_immediate() {
    let is_root = rustix_is_root();
    let mkfs = ["mkfs.btrfs", "mkfs.xfs"].into_iter().find(|t| have(t));
    let (true, Some(mkfs)) = (is_root, mkfs) else {
        let why =
            "the reflink test needs root and mkfs.btrfs or mkfs.xfs (scripts/test installs them)";
        if std::env::var_os("VOLBRIDGE_ALLOW_SKIP").is_some_and(|v| v == "1") {
            eprintln!("skipping (VOLBRIDGE_ALLOW_SKIP=1): {why}");
            return;
        }
        panic!("{why}; set VOLBRIDGE_ALLOW_SKIP=1 to skip on a developer machine");
    };
    let dir = TempDir::new("reflink");
    let img = dir.path().join("fs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(512 * MIB)
        .unwrap();
    let mut args = vec!["-q"];
    if mkfs == "mkfs.xfs" {
        args.extend(["-m", "reflink=1"]);
    }
    assert!(Command::new(mkfs)
        .args(&args)
        .arg(&img)
        .status()
        .unwrap()
        .success());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    assert!(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    let _m = Mounted(mnt.clone());

    let data = mnt.join("data");
    let s = Server::start(&data).await;
    let v = s.volume("v", 64 * MIB).await;
    let vid = v["id"].as_str().unwrap().to_owned();
    let vol_img = data.join(format!("volumes/{vid}.img"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&vol_img)
        .unwrap();
    f.write_all_at(&[0xabu8; 65536], 5 * MIB).unwrap();
    f.sync_all().unwrap();
    let snap = s.snapshot("s", &vid).await;
    assert_eq!(
        snap["ready_to_use"], true,
        "reflink snapshots are ready at once"
    );
    let sid = snap["id"].as_str().unwrap().to_owned();
    let (st, c) = s
        .post(
            "/volumes",
            json!({"name": "c", "base_snapshot_id": sid, "clone": true}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(c["config"]["background_operation_status"], "Completed");
    let cimg = data.join(format!("volumes/{}.img", c["id"].as_str().unwrap()));
    let mut buf = vec![0u8; 65536];
    std::fs::File::open(&cimg)
        .unwrap()
        .read_exact_at(&mut buf, 5 * MIB)
        .unwrap();
    assert!(buf.iter().all(|b| *b == 0xab));
    let csp = s.stop().await;
    drop(csp);
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
