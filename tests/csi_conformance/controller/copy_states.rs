//! Rule 30: copy states (docs/copy-semantics.md rules 1-3 and 5 through CSI): clones and
//! snapshots still being copied, as a CO sees them, in both pool modes and access types.

use crate::common;
use crate::csi_support::*;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Code;

/// Data written into the source volume: enough that the `dir` pool's copies are still
/// running when the next call comes.
const COPY_DATA: usize = 256 << 20;

/// The rules as a CO sees them, in one pool mode and one access type. `dir`: the daemon
/// runs with `--csp-pool dir` (this host's ext4 has no reflink: background copies); else
/// the default image pool (reflink: every copy complete inside the call).
async fn copy_states(tag: &str, dir: bool, access: Access) {
    let extra: &[&str] = if dir { &["--csp-pool", "dir"] } else { &[] };
    let Some(mut r) = Rig::start_with(
        tag,
        RigOptions {
            extra,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let mut c = Checks::new();
    let data = pattern(COPY_DATA, 0x5c);
    let src = r.create_ok("src", Some(1024 * MIB), access).await;
    let a = r.attach(&src, access, "pod-a").await;
    match access {
        Access::Mount => write_file(&a.target, "data.bin", &data).unwrap(),
        Access::Block => write_at(&a.target, 0, &data).unwrap(),
    }
    r.detach(&a).await;
    // Reads a volume back through a node and compares it with what the source held.
    async fn holds_the_data(r: &Rig, v: &csi::Volume, access: Access, data: &[u8]) -> bool {
        let a = r.attach(v, access, "pod-b").await;
        let back = match access {
            Access::Mount => {
                std::fs::read(Path::new(&a.target).join("data.bin")).unwrap_or_default()
            }
            Access::Block => read_at(&a.target, 0, data.len()),
        };
        r.detach(&a).await;
        back == data
    }
    let by_source = |source: &str| csi::ListSnapshotsRequest {
        source_volume_id: source.to_owned(),
        ..Default::default()
    };
    let by_id = |id: &str| csi::ListSnapshotsRequest {
        snapshot_id: id.to_owned(),
        ..Default::default()
    };
    let temporary = |list: &[csi::Snapshot]| -> Vec<String> {
        list.iter()
            .filter(|s| s.snapshot_id.starts_with("snap-for-clone-"))
            .map(|s| s.snapshot_id.clone())
            .collect()
    };

    // Rule 1: ready_to_use false at once while a copy is needed, true once done; the
    // retried CreateSnapshot and ListSnapshots say so. With reflink: true at once.
    let snap = r.snapshot_ok("snap", "src").await;
    c.eq(
        snap.ready_to_use,
        !dir,
        "rule 1: ready_to_use in the first answer",
    );
    c.check(snap.size_bytes >= 1024 * MIB, "rule 1: size_bytes filled");
    let again = r.snapshot_ok("snap", "src").await;
    c.eq(
        &again.snapshot_id,
        &snap.snapshot_id,
        "rule 1: the retry names the same snapshot",
    );
    r.wait_snapshot_ready(&snap.snapshot_id).await;
    let again = r.snapshot_ok("snap", "src").await;
    c.check(
        again.ready_to_use,
        "rule 1: the retried CreateSnapshot says ready",
    );
    let listed = r.list_snapshots(by_source("src")).await;
    c.check(
        listed
            .iter()
            .any(|s| s.snapshot_id == snap.snapshot_id && s.ready_to_use),
        format!("rule 1: ListSnapshots by source shows it ready: {listed:?}"),
    );

    // Rule 2: DeleteSnapshot of a snapshot whose copy still runs cancels the copy: OK, and
    // nothing is left of it (csi-sanity deletes its snapshots right after making them).
    let doomed = r.snapshot_ok("doomed", "src").await;
    c.eq(
        doomed.ready_to_use,
        !dir,
        "rule 2: a copy runs for the doomed snapshot",
    );
    // Spec 1.12: a snapshot still being cut is retrievable with GetSnapshot, as it is.
    if let Some(got) = c
        .ok(
            t(r.ctrl().get_snapshot(csi::GetSnapshotRequest {
                snapshot_id: doomed.snapshot_id.clone(),
                ..Default::default()
            }))
            .await,
            "rule 35: GetSnapshot of a snapshot being copied",
        )
        .and_then(|g| g.snapshot)
    {
        c.eq(
            (got.snapshot_id.as_str(), got.source_volume_id.as_str()),
            ("doomed", "src"),
            "rule 35: GetSnapshot during the copy names it and its source",
        );
        c.check(
            timestamp_set(&got.creation_time) && got.size_bytes >= 1024 * MIB,
            format!("rule 35: GetSnapshot during the copy: time and size filled: {got:?}"),
        );
    }
    let listed = r.list_snapshots(by_source("src")).await;
    c.eq(
        listed.len(),
        2,
        "rule 2: ListSnapshots by source during the copy",
    );
    c.ok(
        t(r.ctrl().delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: doomed.snapshot_id.clone(),
            ..Default::default()
        }))
        .await,
        "rule 2: DeleteSnapshot of a snapshot being copied",
    );
    c.eq(
        r.list_snapshots(by_id(&doomed.snapshot_id)).await.len(),
        0,
        "rule 2: the deleted snapshot is not listed",
    );
    c.eq(r.csp_snapshot_files().len(), 1, "rule 2: its image is gone");

    let clone_req = |name: &str, source| {
        let mut q = r.create_req(name, None, vec![access.cap()]);
        q.volume_content_source = source;
        q
    };

    // Rule 3: from a snapshot, no deadline: the answer comes when the data is complete.
    let from_snap = c
        .ok(
            r.create(clone_req("from-snap", snapshot_source(&snap.snapshot_id)))
                .await,
            "rule 3: CreateVolume from a snapshot",
        )
        .and_then(|v| v.volume);
    if let Some(v) = &from_snap {
        c.eq(
            v.content_source.clone(),
            snapshot_source(&snap.snapshot_id),
            "rule 3: content_source echoed",
        );
        c.check(
            v.capacity_bytes >= 1024 * MIB,
            "rule 3: capacity of the clone",
        );
        c.check(
            holds_the_data(&r, v, access, &data).await,
            "rule 3: the clone from a snapshot holds the data",
        );
        r.delete_ok("from-snap").await;
    }

    // Rule 3: from a volume, with a deadline shorter than the copies: ABORTED, and every
    // retry finds the same copy (one temporary snapshot, one clone).
    let req = clone_req("from-vol", volume_source("src"));
    let first = r
        .create_within(req.clone(), Duration::from_millis(600))
        .await;
    if dir {
        if let Some(st) = c.code(first, Code::Aborted, "rule 3: a short deadline") {
            c.check(
                st.message()
                    .contains("retry CreateVolume with the same name"),
                format!("rule 3: the message says what to do: {}", st.message()),
            );
        }
        let seen = temporary(&r.list_snapshots(by_source("src")).await);
        c.eq(seen.len(), 1, "rule 3: one temporary snapshot");
        let second = r
            .create_within(req.clone(), Duration::from_millis(600))
            .await;
        if second.is_err() {
            c.code(
                second,
                Code::Aborted,
                "rule 3: a retry with a short deadline",
            );
        }
        let now = temporary(&r.list_snapshots(by_source("src")).await);
        c.check(
            now.iter().all(|id| seen.contains(id)),
            format!("rule 3: the retry started a second copy: {seen:?} then {now:?}"),
        );
        c.check(
            r.volume_ids()
                .await
                .iter()
                .filter(|v| *v == "from-vol")
                .count()
                <= 1,
            "rule 3: one clone",
        );
        // Rule 5: a crash while the copies run. Mount: at once (most likely during the
        // temporary snapshot's copy: the snapshot is dropped, the clone fails with its
        // source lost, and the retry starts the clone over). Block: once the temporary
        // snapshot is complete (during the clone's copy, which starts over from it). The
        // CO's retry after the restart answers a clone that holds the data.
        let deadline = Instant::now() + Duration::from_secs(120);
        while access == Access::Block
            && r.list_snapshots(by_source("src"))
                .await
                .iter()
                .any(|s| seen.contains(&s.snapshot_id) && !s.ready_to_use)
        {
            assert!(
                Instant::now() < deadline,
                "the temporary snapshot never became ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        r.d.crash_and_restart();
        r.reconnect();
    } else {
        c.ok(
            first,
            "rule 3: reflink clones are complete within a short deadline",
        );
    }
    let last = c
        .ok(
            r.create(req.clone()).await,
            "rule 3: the retry without a deadline",
        )
        .and_then(|v| v.volume);
    if let Some(v) = &last {
        c.eq(
            v.content_source.clone(),
            volume_source("src"),
            "rule 3: content_source echoed (from a volume)",
        );
        c.check(
            holds_the_data(&r, v, access, &data).await,
            "rule 3: the clone from a volume holds the data",
        );
    }
    let all = r.list_snapshots(csi::ListSnapshotsRequest::default()).await;
    c.eq(
        temporary(&all),
        Vec::<String>::new(),
        "rule 3: no temporary snapshot once the clone is complete",
    );
    if dir {
        let names: Vec<String> = all.iter().map(|s| s.snapshot_id.clone()).collect();
        c.eq(names, vec!["snap".to_owned()], "snapshots after the clone");
    }
    r.delete_ok("from-vol").await;
    r.delete_snapshot_ok(&snap.snapshot_id).await;
    r.delete_ok("src").await;
    c.eq(r.volume_ids().await, Vec::<String>::new(), "volumes left");
    c.eq(r.csp_snapshot_files().len(), 0, "snapshot images left");
    c.eq(r.csp_volume_files().len(), 0, "volume images left");
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_30_copy_states_dir_pool_mount() {
    if !common::require_root_and_tools("rule_30_copy_states_dir_pool_mount") {
        return;
    }
    copy_states("r30-dm", true, Access::Mount).await;
}

#[tokio::test]
async fn rule_30_copy_states_dir_pool_block() {
    if !common::require_root_and_tools("rule_30_copy_states_dir_pool_block") {
        return;
    }
    copy_states("r30-db", true, Access::Block).await;
}

#[tokio::test]
async fn rule_30_copy_states_image_pool_mount() {
    if !common::require_root_and_tools("rule_30_copy_states_image_pool_mount") {
        return;
    }
    copy_states("r30-im", false, Access::Mount).await;
}

#[tokio::test]
async fn rule_30_copy_states_image_pool_block() {
    if !common::require_root_and_tools("rule_30_copy_states_image_pool_block") {
        return;
    }
    copy_states("r30-ib", false, Access::Block).await;
}
