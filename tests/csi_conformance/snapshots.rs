//! Snapshot calls of the controller service: CreateSnapshot, DeleteSnapshot, ListSnapshots
//! and GetSnapshot (rules 1, 2, 13-15 and 35).

use crate::common;
use crate::csi_support::*;
use crate::{sorted, MissingFields, IA};
use tonic::Code;

/// Rule 1 for the snapshot calls: each required field left out answers INVALID_ARGUMENT,
/// and the refused calls change nothing.
#[tokio::test]
async fn rule_01_missing_fields_invalid_argument() {
    if !common::require_root_and_tools("snapshots::rule_01_missing_fields_invalid_argument") {
        return;
    }
    let Some(f) = MissingFields::start("r01-snap").await else {
        return;
    };
    let r = &f.r;
    let mut c = Checks::new();

    c.code(
        t(r.ctrl().create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: "v1".into(),
            ..Default::default()
        }))
        .await,
        IA,
        "CreateSnapshot without name",
    );
    c.code(
        t(r.ctrl().create_snapshot(csi::CreateSnapshotRequest {
            name: "s1".into(),
            ..Default::default()
        }))
        .await,
        IA,
        "CreateSnapshot without source_volume_id",
    );
    c.code(
        t(r.ctrl()
            .delete_snapshot(csi::DeleteSnapshotRequest::default()))
        .await,
        IA,
        "DeleteSnapshot without snapshot_id",
    );
    c.code(
        t(r.ctrl().get_snapshot(csi::GetSnapshotRequest::default())).await,
        IA,
        "GetSnapshot without snapshot_id",
    );

    f.finish(c).await;
}

#[tokio::test]
async fn rule_02_idempotent_create_delete_snapshot() {
    if !common::require_root_and_tools("rule_02_idempotent_create_delete_snapshot") {
        return;
    }
    let Some(r) = Rig::start("r02-snap").await else {
        return;
    };
    let v = r.create_ok("snap-src", Some(64 * MIB), Access::Block).await;
    let first = r.snapshot_ok("snap-idem", "snap-src").await;
    for i in 2..=10 {
        let again = r.snapshot_ok("snap-idem", "snap-src").await;
        assert_eq!(
            (
                &again.snapshot_id,
                &again.source_volume_id,
                again.size_bytes,
                &again.creation_time
            ),
            (
                &first.snapshot_id,
                &first.source_volume_id,
                first.size_bytes,
                &first.creation_time
            ),
            "CreateSnapshot #{i} answered differently"
        );
    }
    r.wait_snapshot_ready(&first.snapshot_id).await;
    let listed = ok(
        t(r.ctrl().list_snapshots(csi::ListSnapshotsRequest {
            source_volume_id: v.volume_id.clone(),
            ..Default::default()
        }))
        .await,
        "ListSnapshots",
    );
    assert_eq!(listed.entries.len(), 1, "exactly one snapshot: {listed:?}");
    assert_eq!(r.csp_snapshot_files().len(), 1, "exactly one snapshot file");
    for i in 1..=10 {
        ok(
            t(r.ctrl().delete_snapshot(csi::DeleteSnapshotRequest {
                snapshot_id: first.snapshot_id.clone(),
                ..Default::default()
            }))
            .await,
            &format!("DeleteSnapshot #{i}"),
        );
    }
    let listed = ok(
        t(r.ctrl().list_snapshots(csi::ListSnapshotsRequest {
            source_volume_id: v.volume_id.clone(),
            ..Default::default()
        }))
        .await,
        "ListSnapshots",
    );
    assert!(listed.entries.is_empty(), "{listed:?}");
    assert!(r.csp_snapshot_files().is_empty());
    r.delete_ok("snap-src").await;
}

#[tokio::test]
async fn rule_13_list_snapshots_paging_and_filters() {
    if !common::require_root_and_tools("rule_13_list_snapshots_paging_and_filters") {
        return;
    }
    let Some(r) = Rig::start("r13-snap").await else {
        return;
    };
    let mut c = Checks::new();
    r.create_ok("sa", Some(64 * MIB), Access::Block).await;
    r.create_ok("sb", Some(64 * MIB), Access::Block).await;
    let mut ids = Vec::new();
    for name in ["sa-0", "sa-1", "sa-2"] {
        ids.push(r.snapshot_ok(name, "sa").await.snapshot_id);
    }
    ids.push(r.snapshot_ok("sb-0", "sb").await.snapshot_id);
    for id in &ids {
        r.wait_snapshot_ready(id).await;
    }
    let list = |max: i32, token: &str, source: &str, snap: &str| csi::ListSnapshotsRequest {
        max_entries: max,
        starting_token: token.to_owned(),
        source_volume_id: source.to_owned(),
        snapshot_id: snap.to_owned(),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    for pages in 1.. {
        let page = ok(
            t(r.ctrl().list_snapshots(list(2, &token, "", ""))).await,
            "ListSnapshots page",
        );
        c.check(
            page.entries.len() <= 2,
            format!("page of {} entries with max_entries 2", page.entries.len()),
        );
        seen.extend(
            page.entries
                .into_iter()
                .filter_map(|e| e.snapshot)
                .map(|s| s.snapshot_id),
        );
        if page.next_token.is_empty() || pages > 10 {
            break;
        }
        token = page.next_token;
    }
    c.eq(
        sorted(seen),
        sorted(ids.clone()),
        "every snapshot exactly once across pages",
    );
    c.code(
        t(r.ctrl().list_snapshots(list(2, "bogus-token", "", ""))).await,
        Code::Aborted,
        "ListSnapshots with an unknown starting_token",
    );
    let names = |resp: Option<csi::ListSnapshotsResponse>| {
        sorted(
            resp.map(|p| p.entries)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| e.snapshot)
                .map(|s| s.snapshot_id)
                .collect::<Vec<_>>(),
        )
    };
    let got = c.ok(
        t(r.ctrl().list_snapshots(list(0, "", "", "no-such-snapshot"))).await,
        "filter by an unknown snapshot_id",
    );
    c.eq(
        names(got),
        Vec::<String>::new(),
        "unknown snapshot_id: empty list",
    );
    let got = c.ok(
        t(r.ctrl().list_snapshots(list(0, "", "", "sa-1"))).await,
        "filter by snapshot_id",
    );
    c.eq(names(got), vec!["sa-1".to_owned()], "filter by snapshot_id");
    let got = c.ok(
        t(r.ctrl().list_snapshots(list(0, "", "sa", ""))).await,
        "filter by source_volume_id",
    );
    c.eq(
        names(got),
        vec!["sa-0".into(), "sa-1".into(), "sa-2".into()],
        "filter by source sa",
    );
    let got = c.ok(
        t(r.ctrl().list_snapshots(list(0, "", "sb", ""))).await,
        "filter by source_volume_id",
    );
    c.eq(names(got), vec!["sb-0".to_owned()], "filter by source sb");
    let got = c.ok(
        t(r.ctrl().list_snapshots(list(0, "", "no-such-volume", ""))).await,
        "filter by an unknown source",
    );
    c.eq(
        names(got),
        Vec::<String>::new(),
        "unknown source_volume_id: empty list",
    );
    for id in &ids {
        r.delete_snapshot_ok(id).await;
    }
    r.delete_ok("sa").await;
    r.delete_ok("sb").await;
    c.finish();
}

#[tokio::test]
async fn rule_14_create_snapshot() {
    if !common::require_root_and_tools("rule_14_create_snapshot") {
        return;
    }
    let Some(r) = Rig::start("r14").await else {
        return;
    };
    let mut c = Checks::new();
    r.create_ok("s-src", Some(64 * MIB), Access::Block).await;
    r.create_ok("s-other", Some(64 * MIB), Access::Block).await;
    let req = |name: &str, src: &str| csi::CreateSnapshotRequest {
        source_volume_id: src.to_owned(),
        name: name.to_owned(),
        ..Default::default()
    };
    c.code(
        t(r.ctrl().create_snapshot(req("orphan", "no-such-volume"))).await,
        Code::NotFound,
        "unknown source",
    );
    let s = r.snapshot_ok("snap-1", "s-src").await;
    c.eq(s.snapshot_id.as_str(), "snap-1", "snapshot_id is the name");
    c.eq(s.source_volume_id.as_str(), "s-src", "source_volume_id");
    c.eq(s.size_bytes, 64 * MIB, "size_bytes");
    c.check(
        timestamp_set(&s.creation_time),
        format!("creation_time {:?}", s.creation_time),
    );
    let ready = r.wait_snapshot_ready("snap-1").await;
    c.check(ready.ready_to_use, "ready_to_use");
    let again = r.snapshot_ok("snap-1", "s-src").await;
    c.check(
        again.ready_to_use,
        "CreateSnapshot again once ready: ready_to_use",
    );
    c.eq(again.creation_time, s.creation_time, "creation_time stable");
    c.code(
        t(r.ctrl().create_snapshot(req("snap-1", "s-other"))).await,
        Code::AlreadyExists,
        "the same name from another source",
    );
    r.delete_snapshot_ok("snap-1").await;
    r.delete_ok("s-src").await;
    r.delete_ok("s-other").await;
    c.finish();
}

#[tokio::test]
async fn rule_15_delete_unknown_snapshot_is_ok() {
    if !common::require_root_and_tools("rule_15_delete_unknown_snapshot_is_ok") {
        return;
    }
    let Some(r) = Rig::start("r15").await else {
        return;
    };
    let mut c = Checks::new();
    for id in ["never-existed", "no-group/0123456789abcdef0123456789abcdef"] {
        c.ok(
            t(r.ctrl().delete_snapshot(csi::DeleteSnapshotRequest {
                snapshot_id: id.to_owned(),
                ..Default::default()
            }))
            .await,
            &format!("DeleteSnapshot {id}"),
        );
    }
    c.finish();
}

#[tokio::test]
async fn rule_35_get_snapshot_mount_and_block() {
    if !common::require_root_and_tools("rule_35_get_snapshot_mount_and_block") {
        return;
    }
    let opts = RigOptions {
        csp_port: true,
        ..Default::default()
    };
    let Some(r) = Rig::start_with("r35g", opts).await else {
        return;
    };
    let mut c = Checks::new();
    let get = |id: &str| csi::GetSnapshotRequest {
        snapshot_id: id.to_owned(),
        ..Default::default()
    };
    for id in [
        "never-existed",
        "no-group/0123456789abcdef0123456789abcdef",
        "no such name",
        "group/",
        "/0123456789abcdef0123456789abcdef",
    ] {
        c.code(
            t(r.ctrl().get_snapshot(get(id))).await,
            Code::NotFound,
            &format!("GetSnapshot of unknown id {id:?}"),
        );
    }
    for access in Access::BOTH {
        let vol = format!("gs-src-{}", access.tag());
        let snap = format!("gs-snap-{}", access.tag());
        r.create_ok(&vol, Some(64 * MIB), access).await;
        r.snapshot_ok(&snap, &vol).await;
        let ready = r.wait_snapshot_ready(&snap).await;
        let listed = r
            .list_snapshots(csi::ListSnapshotsRequest {
                snapshot_id: snap.clone(),
                ..Default::default()
            })
            .await;
        for i in 1..=10 {
            let got = c
                .ok(
                    t(r.ctrl().get_snapshot(get(&snap))).await,
                    &format!("GetSnapshot {snap} #{i}"),
                )
                .and_then(|g| g.snapshot);
            c.eq(
                got.as_ref(),
                listed.first(),
                &format!("GetSnapshot {snap} #{i} answers the ListSnapshots entry"),
            );
        }
        c.check(ready.ready_to_use, format!("{snap} ready_to_use"));
        let mut with_secrets = get(&snap);
        with_secrets.secrets = r.local_secrets();
        c.eq(
            t(r.ctrl().get_snapshot(with_secrets))
                .await
                .ok()
                .and_then(|g| g.into_inner().snapshot)
                .map(|s| (s.snapshot_id, s.source_volume_id, s.ready_to_use)),
            Some((snap.clone(), vol.clone(), true)),
            "GetSnapshot with the backend's secrets",
        );
        r.delete_snapshot_ok(&snap).await;
        c.code(
            t(r.ctrl().get_snapshot(get(&snap))).await,
            Code::NotFound,
            &format!("GetSnapshot {snap} after DeleteSnapshot"),
        );
        r.delete_ok(&vol).await;
    }
    r.assert_nothing_left();
    c.finish();
}
