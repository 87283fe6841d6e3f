//! GroupController service: volume group snapshots (rules 1, 2, 28 and 29).

use crate::common;
use crate::csi_support::*;
use crate::{sorted, MissingFields, IA};
use std::time::{Duration, Instant};
use tonic::Code;

/// Rule 1 for the group controller service: each required field left out answers
/// INVALID_ARGUMENT, and the refused calls change nothing.
#[tokio::test]
async fn rule_01_missing_fields_invalid_argument() {
    if !common::require_root_and_tools("groups::rule_01_missing_fields_invalid_argument") {
        return;
    }
    let Some(f) = MissingFields::start("r01-group").await else {
        return;
    };
    let r = &f.r;
    let mut c = Checks::new();

    c.code(
        t(r.group()
            .create_volume_group_snapshot(csi::CreateVolumeGroupSnapshotRequest {
                source_volume_ids: vec!["v1".into()],
                ..Default::default()
            }))
        .await,
        IA,
        "CreateVolumeGroupSnapshot without name",
    );
    c.code(
        t(r.group()
            .create_volume_group_snapshot(csi::CreateVolumeGroupSnapshotRequest {
                name: "g1".into(),
                ..Default::default()
            }))
        .await,
        IA,
        "CreateVolumeGroupSnapshot without source_volume_ids",
    );
    c.code(
        t(r.group()
            .delete_volume_group_snapshot(csi::DeleteVolumeGroupSnapshotRequest::default()))
        .await,
        IA,
        "DeleteVolumeGroupSnapshot without group_snapshot_id",
    );
    c.code(
        t(r.group()
            .get_volume_group_snapshot(csi::GetVolumeGroupSnapshotRequest::default()))
        .await,
        IA,
        "GetVolumeGroupSnapshot without group_snapshot_id",
    );

    f.finish(c).await;
}

#[tokio::test]
async fn rule_02_idempotent_group_snapshot_create_delete() {
    if !common::require_root_and_tools("rule_02_idempotent_group_snapshot_create_delete") {
        return;
    }
    let Some(r) = Rig::start("r02-group").await else {
        return;
    };
    r.create_ok("ga", Some(64 * MIB), Access::Block).await;
    r.create_ok("gb", Some(64 * MIB), Access::Mount).await;
    let req = csi::CreateVolumeGroupSnapshotRequest {
        name: "gs-idem".into(),
        source_volume_ids: vec!["ga".into(), "gb".into()],
        ..Default::default()
    };
    let key = |g: &csi::VolumeGroupSnapshot| {
        (
            g.group_snapshot_id.clone(),
            sorted(
                g.snapshots
                    .iter()
                    .map(|s| s.snapshot_id.clone())
                    .collect::<Vec<_>>(),
            ),
            g.creation_time,
        )
    };
    let first = ok(
        t(r.group().create_volume_group_snapshot(req.clone())).await,
        "CreateVolumeGroupSnapshot #1",
    )
    .group_snapshot
    .expect("group_snapshot");
    for i in 2..=10 {
        let again = ok(
            t(r.group().create_volume_group_snapshot(req.clone())).await,
            &format!("CreateVolumeGroupSnapshot #{i}"),
        )
        .group_snapshot
        .expect("group_snapshot");
        assert_eq!(
            key(&again),
            key(&first),
            "CreateVolumeGroupSnapshot #{i} answered differently"
        );
    }
    assert_eq!(
        r.csp_snapshot_files().len(),
        2,
        "one snapshot per member, once"
    );
    let gid = first.group_snapshot_id.clone();
    let ids: Vec<String> = first
        .snapshots
        .iter()
        .map(|s| s.snapshot_id.clone())
        .collect();
    for i in 1..=10 {
        ok(
            t(r.group()
                .delete_volume_group_snapshot(csi::DeleteVolumeGroupSnapshotRequest {
                    group_snapshot_id: gid.clone(),
                    snapshot_ids: ids.clone(),
                    ..Default::default()
                }))
            .await,
            &format!("DeleteVolumeGroupSnapshot #{i}"),
        );
    }
    err(
        t(r.group()
            .get_volume_group_snapshot(csi::GetVolumeGroupSnapshotRequest {
                group_snapshot_id: gid.clone(),
                ..Default::default()
            }))
        .await,
        Code::NotFound,
        "GetVolumeGroupSnapshot after delete",
    );
    assert!(
        r.csp_snapshot_files().is_empty(),
        "member snapshots deleted"
    );
    r.delete_ok("ga").await;
    r.delete_ok("gb").await;
}

#[tokio::test]
async fn rule_28_create_volume_group_snapshot() {
    if !common::require_root_and_tools("rule_28_create_volume_group_snapshot") {
        return;
    }
    let Some(r) = Rig::start("r28").await else {
        return;
    };
    let mut c = Checks::new();
    let data = pattern(1 << 20, 8);
    let ga = r.create_ok("grp-a", Some(64 * MIB), Access::Block).await;
    let a = r.attach(&ga, Access::Block, "pod-a").await;
    write_at(&a.target, 0, &data).unwrap();
    r.detach(&a).await;
    r.create_ok("grp-b", Some(64 * MIB), Access::Mount).await;
    r.create_ok("grp-c", Some(64 * MIB), Access::Mount).await;
    let req = |name: &str, ids: &[&str]| csi::CreateVolumeGroupSnapshotRequest {
        name: name.to_owned(),
        source_volume_ids: ids.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    c.code(
        t(r.group()
            .create_volume_group_snapshot(req("gs-bad", &["grp-a", "no-such"])))
        .await,
        Code::NotFound,
        "an unknown source volume",
    );
    let Some(g) = c
        .ok(
            t(r.group()
                .create_volume_group_snapshot(req("gs-1", &["grp-a", "grp-b"])))
            .await,
            "CreateVolumeGroupSnapshot",
        )
        .and_then(|g| g.group_snapshot)
    else {
        c.finish();
        return;
    };
    c.check(!g.group_snapshot_id.is_empty(), "group_snapshot_id");
    c.check(timestamp_set(&g.creation_time), "group creation_time");
    c.eq(g.snapshots.len(), 2, "one snapshot per source volume");
    c.eq(
        sorted(
            g.snapshots
                .iter()
                .map(|s| s.source_volume_id.clone())
                .collect(),
        ),
        vec!["grp-a".to_owned(), "grp-b".to_owned()],
        "snapshot sources",
    );
    for s in &g.snapshots {
        c.eq(
            &s.group_snapshot_id,
            &g.group_snapshot_id,
            "member group_snapshot_id",
        );
        c.check(
            s.snapshot_id.starts_with("gs-1/"),
            format!(
                "member snapshot_id {:?} is <group name>/<id>",
                s.snapshot_id
            ),
        );
        c.eq(s.size_bytes, 64 * MIB, "member size_bytes");
    }
    c.code(
        t(r.group()
            .create_volume_group_snapshot(req("gs-1", &["grp-a", "grp-c"])))
        .await,
        Code::AlreadyExists,
        "the same name with other sources",
    );
    // Spec 1.12: each member is retrievable on its own with GetSnapshot, group id included;
    // its CSP id under another group's name names nothing.
    for s in &g.snapshots {
        let get = |id: &str| csi::GetSnapshotRequest {
            snapshot_id: id.to_owned(),
            ..Default::default()
        };
        if let Some(got) = c
            .ok(
                t(r.ctrl().get_snapshot(get(&s.snapshot_id))).await,
                "GetSnapshot of a group member",
            )
            .and_then(|x| x.snapshot)
        {
            c.eq(
                (
                    &got.snapshot_id,
                    &got.source_volume_id,
                    &got.group_snapshot_id,
                ),
                (&s.snapshot_id, &s.source_volume_id, &g.group_snapshot_id),
                "GetSnapshot of a member: id, source and group",
            );
            c.eq(
                got.size_bytes,
                s.size_bytes,
                "GetSnapshot of a member: size",
            );
        }
        let csp_id = s.snapshot_id.split_once('/').map_or("", |(_, id)| id);
        c.code(
            t(r.ctrl().get_snapshot(get(&format!("gs-other/{csp_id}")))).await,
            Code::NotFound,
            "GetSnapshot of a member's id under another group's name",
        );
    }
    // Ready, and Get returns the same group.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = None;
    while Instant::now() < deadline {
        let r2 = t(r
            .group()
            .get_volume_group_snapshot(csi::GetVolumeGroupSnapshotRequest {
                group_snapshot_id: g.group_snapshot_id.clone(),
                ..Default::default()
            }))
        .await;
        match c
            .ok(r2, "GetVolumeGroupSnapshot")
            .and_then(|x| x.group_snapshot)
        {
            Some(x) if x.ready_to_use => {
                got = Some(x);
                break;
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            None => break,
        }
    }
    if let Some(x) = &got {
        c.eq(
            sorted(x.snapshots.iter().map(|s| s.snapshot_id.clone()).collect()),
            sorted(g.snapshots.iter().map(|s| s.snapshot_id.clone()).collect()),
            "Get: members",
        );
        c.check(
            x.snapshots.iter().all(|s| s.ready_to_use),
            "Get: every member ready",
        );
    } else {
        c.check(false, "the group snapshot never became ready");
    }
    // A member is a usable clone source: the data is there.
    if let Some(member) = g.snapshots.iter().find(|s| s.source_volume_id == "grp-a") {
        let mut q = r.create_req("from-member", None, vec![Access::Block.cap()]);
        q.volume_content_source = snapshot_source(&member.snapshot_id);
        if let Some(v) = c
            .ok(r.create(q).await, "clone from a group member")
            .and_then(|v| v.volume)
        {
            let a = r.attach(&v, Access::Block, "pod-a").await;
            c.check(
                read_at(&a.target, 0, data.len()) == data,
                "a group member holds the data",
            );
            r.detach(&a).await;
            r.delete_ok("from-member").await;
        }
    }
    c.ok(
        t(r.group()
            .delete_volume_group_snapshot(csi::DeleteVolumeGroupSnapshotRequest {
                group_snapshot_id: g.group_snapshot_id.clone(),
                snapshot_ids: g.snapshots.iter().map(|s| s.snapshot_id.clone()).collect(),
                ..Default::default()
            }))
        .await,
        "DeleteVolumeGroupSnapshot",
    );
    for id in ["grp-a", "grp-b", "grp-c"] {
        c.ok(
            t(r.ctrl().delete_volume(csi::DeleteVolumeRequest {
                volume_id: id.to_owned(),
                ..Default::default()
            }))
            .await,
            &format!("DeleteVolume {id} after its group snapshot is gone"),
        );
    }
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_29_group_snapshot_delete_and_get_unknown() {
    if !common::require_root_and_tools("rule_29_group_snapshot_delete_and_get_unknown") {
        return;
    }
    let Some(r) = Rig::start("r29").await else {
        return;
    };
    let mut c = Checks::new();
    c.ok(
        t(r.group()
            .delete_volume_group_snapshot(csi::DeleteVolumeGroupSnapshotRequest {
                group_snapshot_id: "never-existed".into(),
                ..Default::default()
            }))
        .await,
        "DeleteVolumeGroupSnapshot of an unknown group",
    );
    c.code(
        t(r.group()
            .get_volume_group_snapshot(csi::GetVolumeGroupSnapshotRequest {
                group_snapshot_id: "never-existed".into(),
                ..Default::default()
            }))
        .await,
        Code::NotFound,
        "GetVolumeGroupSnapshot of an unknown group",
    );
    c.finish();
}
