//! The snapshot-metadata extension over HTTP (docs/snapshot-metadata.md): known blocks are
//! written into a volume's image, snapshots are taken, and `GET /snapshots/{id}/allocated`
//! and `GET /snapshots/{id}/changes` must answer exactly those ranges, page by page, in
//! every pool mode: reflink pools compare extents (FIEMAP), a `dir` pool on this host's ext4
//! compares bytes. Image pools need root and their mkfs; without them the test fails
//! (skips only with VOLBRIDGE_ALLOW_SKIP=1).

mod common;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::os::unix::fs::FileExt;
use volbridge_local_csp::PoolChoice;

const K64: u64 = 64 << 10;

fn need(what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    let why = format!("{what} (scripts/test installs the tools; run as root)");
    if std::env::var_os("VOLBRIDGE_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("skipping (VOLBRIDGE_ALLOW_SKIP=1): {why}");
        return false;
    }
    panic!("{why}; set VOLBRIDGE_ALLOW_SKIP=1 to skip on a developer machine");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
            .unwrap_or(false)
    })
}

fn have(tool: &str) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| std::path::Path::new(d).join(tool).exists())
}

/// Writes 64 KiB blocks `(index, count, seed)` into an image and makes them durable.
fn write_blocks(image: &std::path::Path, blocks: &[(u64, u64, u8)]) {
    let f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    for &(index, count, seed) in blocks {
        let data: Vec<u8> = (0..count * K64)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed | 1)
            .collect();
        f.write_all_at(&data, index * K64).unwrap();
    }
    f.sync_all().unwrap();
}

fn ranges(page: &Value) -> Vec<(u64, u64)> {
    page["ranges"]
        .as_array()
        .unwrap_or_else(|| panic!("no ranges in {page}"))
        .iter()
        .map(|r| (r["offset"].as_u64().unwrap(), r["length"].as_u64().unwrap()))
        .collect()
}

/// Every page from `offset`, concatenated; and how many pages it took.
async fn walk(
    s: &Server,
    path: &str,
    offset: u64,
    limit: u32,
    size: u64,
) -> (Vec<(u64, u64)>, usize) {
    let mut out = Vec::new();
    let mut offset = offset;
    let mut pages = 0;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (st, page) = s
            .get(&format!("{path}{sep}offset={offset}&limit={limit}"))
            .await;
        assert_eq!(st, StatusCode::OK, "{path} at {offset}: {page}");
        assert_eq!(page["volume_size"].as_u64(), Some(size), "{page}");
        let got = ranges(&page);
        assert!(limit == 0 || got.len() <= limit as usize, "{page}");
        out.extend(got);
        pages += 1;
        match page["next_offset"].as_u64() {
            Some(n) => {
                assert!(n > offset, "next_offset {n} does not advance past {offset}");
                offset = n
            }
            None => break,
        }
    }
    // Sorted, never overlapping, never touching: merged.
    for w in out.windows(2) {
        assert!(w[0].0 + w[0].1 < w[1].0, "not merged: {out:?}");
    }
    (out, pages)
}

fn k64(blocks: &[(u64, u64)]) -> Vec<(u64, u64)> {
    blocks.iter().map(|&(i, n)| (i * K64, n * K64)).collect()
}

async fn allocated_and_changes(tag: &str, pool: PoolChoice, mode: &str) {
    let dir = TempDir::new(tag);
    let s = Server::start_with(dir.path(), pool).await;
    let (st, cap) = s.get("/capacity").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(cap["pool"]["mode"], mode, "{cap}");
    let listed = cap["extensions"].as_array().cloned().unwrap_or_default();
    assert!(listed.contains(&json!("snapshot_metadata")), "{cap}");
    // The one-step clone needs reflink; snapshot metadata does not.
    assert_eq!(
        listed.contains(&json!("clone_from_volume")),
        cap["pool"]["reflink"] == json!(true),
        "{cap}"
    );

    let size = 64 * MIB;
    let v = s.volume("data", size).await;
    let vid = v["id"].as_str().unwrap().to_owned();
    let image = images(dir.path())
        .join("volumes")
        .join(format!("{vid}.img"));
    // First: blocks 0, 16-19, 100, 1000-1001.
    write_blocks(&image, &[(0, 1, 1), (16, 4, 2), (100, 1, 3), (1000, 2, 4)]);
    let s1 = s.snapshot("one", &vid).await;
    let s1 = s1["id"].as_str().unwrap().to_owned();
    s.wait_ready(&s1).await;
    // Then: overwrite 17 and 1001, write 20 (extends 16-19), 500, 1023.
    write_blocks(
        &image,
        &[
            (17, 1, 9),
            (1001, 1, 9),
            (20, 1, 9),
            (500, 1, 9),
            (1023, 1, 9),
        ],
    );
    let s2 = s.snapshot("two", &vid).await;
    let s2 = s2["id"].as_str().unwrap().to_owned();
    s.wait_ready(&s2).await;

    let first = k64(&[(0, 1), (16, 4), (100, 1), (1000, 2)]);
    let second = k64(&[(0, 1), (16, 5), (100, 1), (500, 1), (1000, 2), (1023, 1)]);
    let delta = k64(&[(17, 1), (20, 1), (500, 1), (1001, 1), (1023, 1)]);

    let alloc1 = format!("/snapshots/{s1}/allocated");
    let alloc2 = format!("/snapshots/{s2}/allocated");
    let changes = format!("/snapshots/{s2}/changes?base={s1}");
    assert_eq!(walk(&s, &alloc1, 0, 0, size).await, (first.clone(), 1));
    assert_eq!(walk(&s, &alloc2, 0, 0, size).await.0, second);
    assert_eq!(walk(&s, &changes, 0, 0, size).await, (delta.clone(), 1));
    // Small pages concatenate to the same ranges.
    assert_eq!(walk(&s, &alloc2, 0, 2, size).await, (second.clone(), 3));
    assert_eq!(walk(&s, &changes, 0, 2, size).await, (delta.clone(), 3));
    // Starting inside a range clips it; ranges that ended before are left out.
    let mid = 18 * K64 + 4096;
    assert_eq!(
        walk(&s, &alloc2, mid, 1, size).await.0,
        vec![(mid, 21 * K64 - mid)]
            .into_iter()
            .chain(k64(&[(100, 1), (500, 1), (1000, 2), (1023, 1)]))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        walk(&s, &changes, 20 * K64 + 8192, 1, size).await.0,
        vec![(20 * K64 + 8192, K64 - 8192)]
            .into_iter()
            .chain(k64(&[(500, 1), (1001, 1), (1023, 1)]))
            .collect::<Vec<_>>()
    );
    // At the end: nothing, and no error; past it: a sentence.
    assert_eq!(walk(&s, &alloc2, size, 5, size).await, (vec![], 1));
    let (st, e) = s.get(&format!("{alloc2}?offset={}", size + 512)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    assert_error_body(&e);
    assert!(
        e.to_string().contains("past the end of snapshot 'two'"),
        "{e}"
    );

    // Errors: unknown snapshots, a base of another volume, no base, bad numbers.
    let other = s.volume("other", size).await;
    let other_snap = s.snapshot("elsewhere", other["id"].as_str().unwrap()).await;
    let other_snap = other_snap["id"].as_str().unwrap();
    let unknown = "0123456789abcdef0123456789abcdef";
    for (path, want) in [
        (
            format!("/snapshots/{unknown}/allocated"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/snapshots/{unknown}/changes?base={s1}"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/snapshots/{s2}/changes?base={unknown}"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/snapshots/{s2}/changes?base={other_snap}"),
            StatusCode::BAD_REQUEST,
        ),
        (format!("/snapshots/{s2}/changes"), StatusCode::BAD_REQUEST),
        (format!("{alloc2}?limit=-1"), StatusCode::BAD_REQUEST),
        (format!("{alloc2}?offset=x"), StatusCode::BAD_REQUEST),
    ] {
        let (st, e) = s.get(&path).await;
        assert_eq!(st, want, "{path}: {e}");
        assert_error_body(&e);
    }
    let (_, e) = s
        .get(&format!("/snapshots/{s2}/changes?base={other_snap}"))
        .await;
    assert!(e.to_string().contains("not of one volume"), "{e}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocated_and_changes_in_an_xfs_image_pool() {
    if !need(
        "the xfs pool test needs root and mkfs.xfs",
        is_root() && have("mkfs.xfs"),
    ) {
        return;
    }
    allocated_and_changes("meta-xfs", PoolChoice::XfsImage, "xfs-image").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocated_and_changes_in_a_btrfs_image_pool() {
    if !need(
        "the btrfs pool test needs root and mkfs.btrfs",
        is_root() && have("mkfs.btrfs"),
    ) {
        return;
    }
    allocated_and_changes("meta-btrfs", PoolChoice::BtrfsImage, "btrfs-image").await;
}

/// A `dir` pool: on this host's ext4 snapshots are copies, compared byte by byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocated_and_changes_in_a_dir_pool() {
    allocated_and_changes("meta-dir", PoolChoice::Dir, "dir").await;
}
