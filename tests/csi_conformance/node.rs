//! Node service: rules 1-3 for the node calls, 20-27, 31 and 36, and the node lifecycle end to
//! end in mount and block.

use crate::common::{self, mounts_under};
use crate::csi_support::*;
use crate::{MissingFields, IA};
use csi::volume_capability::access_mode::Mode;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;

/// Rule 1 for the node service: each required field left out answers INVALID_ARGUMENT, and
/// the refused calls change nothing (no mount, no target).
#[tokio::test]
async fn rule_01_missing_fields_invalid_argument() {
    if !common::require_root_and_tools("node::rule_01_missing_fields_invalid_argument") {
        return;
    }
    let Some(f) = MissingFields::start("r01-node").await else {
        return;
    };
    let MissingFields {
        r,
        v,
        ctx,
        staging,
        target,
    } = &f;
    let mut c = Checks::new();

    let good_stage = r.stage_req(v, ctx, staging, Access::Mount);
    let mut q = good_stage.clone();
    q.volume_id = String::new();
    c.code(
        t(r.node().node_stage_volume(q)).await,
        IA,
        "NodeStageVolume without volume_id",
    );
    let mut q = good_stage.clone();
    q.staging_target_path = String::new();
    c.code(
        t(r.node().node_stage_volume(q)).await,
        IA,
        "NodeStageVolume without staging_target_path",
    );
    let mut q = good_stage.clone();
    q.volume_capability = None;
    c.code(
        t(r.node().node_stage_volume(q)).await,
        IA,
        "NodeStageVolume without capability",
    );
    c.code(
        r.unstage("", staging).await,
        IA,
        "NodeUnstageVolume without volume_id",
    );
    c.code(
        r.unstage("v1", "").await,
        IA,
        "NodeUnstageVolume without staging_target_path",
    );
    let good_publish = r.publish_req(v, ctx, staging, target, Access::Mount, false);
    let mut q = good_publish.clone();
    q.volume_id = String::new();
    c.code(
        t(r.node().node_publish_volume(q)).await,
        IA,
        "NodePublishVolume without volume_id",
    );
    let mut q = good_publish.clone();
    q.target_path = String::new();
    c.code(
        t(r.node().node_publish_volume(q)).await,
        IA,
        "NodePublishVolume without target_path",
    );
    let mut q = good_publish.clone();
    q.volume_capability = None;
    c.code(
        t(r.node().node_publish_volume(q)).await,
        IA,
        "NodePublishVolume without capability",
    );
    let mut q = good_publish.clone();
    q.staging_target_path = String::new();
    c.code(
        t(r.node().node_publish_volume(q)).await,
        IA,
        "NodePublishVolume without staging_target_path (STAGE_UNSTAGE_VOLUME is advertised)",
    );
    c.code(
        r.unpublish("", target).await,
        IA,
        "NodeUnpublishVolume without volume_id",
    );
    c.code(
        r.unpublish("v1", "").await,
        IA,
        "NodeUnpublishVolume without target_path",
    );
    c.code(
        t(r.node()
            .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                volume_path: staging.clone(),
                ..Default::default()
            }))
        .await,
        IA,
        "NodeGetVolumeStats without volume_id",
    );
    c.code(
        t(r.node()
            .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                volume_id: "v1".into(),
                ..Default::default()
            }))
        .await,
        IA,
        "NodeGetVolumeStats without volume_path",
    );
    c.code(
        t(r.node().node_expand_volume(csi::NodeExpandVolumeRequest {
            volume_path: staging.clone(),
            capacity_range: range(128 * MIB, 0),
            ..Default::default()
        }))
        .await,
        IA,
        "NodeExpandVolume without volume_id",
    );
    c.code(
        t(r.node().node_expand_volume(csi::NodeExpandVolumeRequest {
            volume_id: "v1".into(),
            capacity_range: range(128 * MIB, 0),
            ..Default::default()
        }))
        .await,
        IA,
        "NodeExpandVolume without volume_path",
    );

    f.finish(c).await;
}

#[tokio::test]
async fn rule_02_idempotent_node_stage_unstage() {
    if !common::require_root_and_tools("rule_02_idempotent_node_stage_unstage") {
        return;
    }
    let Some(r) = Rig::start("r02-stage").await else {
        return;
    };
    for access in Access::BOTH {
        let v = r
            .create_ok(&format!("st-{}", access.tag()), Some(64 * MIB), access)
            .await;
        let ctx = r.cpublish_ok(&v, access).await;
        let staging = r.staging(&v.volume_id);
        for i in 1..=10 {
            ok(
                t(r.node()
                    .node_stage_volume(r.stage_req(&v, &ctx, &staging, access)))
                .await,
                &format!("NodeStageVolume #{i} ({access:?})"),
            );
        }
        assert_eq!(
            r.loops_of(&ctx).len(),
            1,
            "one loop device ({access:?}): {:?}",
            r.loops()
        );
        let want_mounts = if access == Access::Mount { 1 } else { 0 };
        assert_eq!(
            r.mounts_at(&staging),
            want_mounts,
            "mounts at the staging path ({access:?}): {:?}",
            mounts_under(r.dir.path())
        );
        for i in 1..=10 {
            ok(
                r.unstage(&v.volume_id, &staging).await,
                &format!("NodeUnstageVolume #{i} ({access:?})"),
            );
        }
        r.assert_nothing_left();
        r.cunpublish_ok(&v.volume_id).await;
        r.delete_ok(&v.volume_id).await;
    }
}

#[tokio::test]
async fn rule_02_idempotent_node_publish_unpublish() {
    if !common::require_root_and_tools("rule_02_idempotent_node_publish_unpublish") {
        return;
    }
    let Some(r) = Rig::start("r02-publish").await else {
        return;
    };
    for access in Access::BOTH {
        let v = r
            .create_ok(&format!("pb-{}", access.tag()), Some(64 * MIB), access)
            .await;
        let ctx = r.cpublish_ok(&v, access).await;
        let staging = r.staging(&v.volume_id);
        r.stage_ok(&v, &ctx, &staging, access).await;
        let target = r.target(&v.volume_id, "pod-a");
        for i in 1..=10 {
            ok(
                t(r.node().node_publish_volume(
                    r.publish_req(&v, &ctx, &staging, &target, access, false),
                ))
                .await,
                &format!("NodePublishVolume #{i} ({access:?})"),
            );
        }
        assert_eq!(
            r.mounts_at(&target),
            1,
            "one mount at the target ({access:?})"
        );
        assert_eq!(r.loops_of(&ctx).len(), 1, "one loop device ({access:?})");
        match access {
            Access::Mount => assert!(Path::new(&target).is_dir()),
            Access::Block => assert!(is_block_device(&target), "{target} is no block device"),
        }
        for i in 1..=10 {
            ok(
                r.unpublish(&v.volume_id, &target).await,
                &format!("NodeUnpublishVolume #{i} ({access:?})"),
            );
        }
        assert_eq!(r.mounts_at(&target), 0);
        assert!(!Path::new(&target).exists(), "the target is removed");
        r.unstage_ok(&v.volume_id, &staging).await;
        r.cunpublish_ok(&v.volume_id).await;
        r.delete_ok(&v.volume_id).await;
        r.assert_nothing_left();
    }
}

#[tokio::test]
async fn rule_03_concurrent_calls_on_one_volume_are_aborted() {
    if !common::require_root_and_tools("r03_concurrent") {
        return;
    }
    // A slow mkfs makes NodeStageVolume of a blank volume take seconds, deterministically.
    let bin_dir = common::TempDir::new("csi-slowmkfs");
    let real = [
        "/usr/sbin/mkfs.ext4",
        "/sbin/mkfs.ext4",
        "/usr/bin/mkfs.ext4",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("mkfs.ext4");
    let fake = bin_dir.path().join("mkfs.ext4");
    std::fs::write(&fake, format!("#!/bin/sh\nsleep 3\nexec {real} \"$@\"\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let Some(r) = Rig::start_with(
        "r03-conc",
        RigOptions {
            env: &[("PATH", &path)],
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    // No capacity range: the default 1 GiB.
    let v = r.create_ok("busy", None, Access::Mount).await;
    let ctx = r.cpublish_ok(&v, Access::Mount).await;
    let staging = r.staging("busy");
    let target = r.target("busy", "pod-a");
    let started = Instant::now();
    let mut first_client = r.node();
    let first_req = r.stage_req(&v, &ctx, &staging, Access::Mount);
    let first = tokio::spawn(async move { t(first_client.node_stage_volume(first_req)).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut c = Checks::new();
    c.code(
        t(r.node()
            .node_stage_volume(r.stage_req(&v, &ctx, &staging, Access::Mount)))
        .await,
        Code::Aborted,
        "a second NodeStageVolume while the first runs",
    );
    c.code(
        r.unstage("busy", &staging).await,
        Code::Aborted,
        "NodeUnstageVolume while NodeStageVolume runs",
    );
    c.code(
        t(r.node().node_publish_volume(r.publish_req(
            &v,
            &ctx,
            &staging,
            &target,
            Access::Mount,
            false,
        )))
        .await,
        Code::Aborted,
        "NodePublishVolume while NodeStageVolume runs",
    );
    c.check(
        started.elapsed() < Duration::from_secs(3),
        format!(
            "the concurrent calls must answer at once, not wait: {:?}",
            started.elapsed()
        ),
    );
    let first = first.await.unwrap();
    c.ok(first, "the first NodeStageVolume");
    // The retry after the first finished succeeds.
    c.ok(
        t(r.node()
            .node_stage_volume(r.stage_req(&v, &ctx, &staging, Access::Mount)))
        .await,
        "NodeStageVolume retried after the first finished",
    );
    c.eq(r.loops_of(&ctx).len(), 1, "loop devices");
    c.eq(r.mounts_at(&staging), 1, "mounts at the staging path");
    c.check(
        !Path::new(&target).exists(),
        "an aborted NodePublish created the target",
    );
    r.unstage_ok("busy", &staging).await;
    r.cunpublish_ok("busy").await;
    r.delete_ok("busy").await;
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_20_node_get_info_stable_across_restart() {
    if !common::require_root_and_tools("rule_20_node_get_info_stable_across_restart") {
        return;
    }
    let Some(mut r) = Rig::start_with(
        "r20",
        RigOptions {
            extra: &["--csi-max-volumes-per-node", "7"],
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let mut c = Checks::new();
    let info = ok(
        t(r.node().node_get_info(csi::NodeGetInfoRequest {})).await,
        "NodeGetInfo",
    );
    let id = info.node_id.clone();
    c.check(
        id.len() == 36 && id.chars().filter(|&ch| ch == '-').count() == 4,
        format!("node_id {id:?} is no UUID"),
    );
    c.eq(info.max_volumes_per_node, 7, "max_volumes_per_node");
    c.eq(
        info.accessible_topology.map(|t| t.segments),
        Some(map(&[(TOPOLOGY_KEY, &id)])),
        "accessible_topology",
    );
    // A restart (without the limit this time) keeps the id.
    r.d.extra
        .retain(|a| a != "--csi-max-volumes-per-node" && a != "7");
    r.d.restart();
    r.reconnect();
    let info = ok(
        t(r.node().node_get_info(csi::NodeGetInfoRequest {})).await,
        "NodeGetInfo after restart",
    );
    c.eq(
        info.node_id.as_str(),
        id.as_str(),
        "node_id across a restart",
    );
    c.eq(
        info.max_volumes_per_node,
        0,
        "max_volumes_per_node without the flag",
    );
    r.d.crash_and_restart();
    r.reconnect();
    let info = ok(
        t(r.node().node_get_info(csi::NodeGetInfoRequest {})).await,
        "NodeGetInfo after kill -9",
    );
    c.eq(info.node_id.as_str(), id.as_str(), "node_id across a crash");
    c.finish();
}

#[tokio::test]
async fn rule_21_node_stage_volume() {
    if !common::require_root_and_tools("rule_21_node_stage_volume") {
        return;
    }
    let Some(r) = Rig::start("r21").await else {
        return;
    };
    let mut c = Checks::new();
    // Mount: attached, formatted (blank), mounted at the staging path.
    let m = r.create_ok("stg-m", Some(64 * MIB), Access::Mount).await;
    let mctx = r.cpublish_ok(&m, Access::Mount).await;
    let mstaging = r.staging("stg-m");
    r.stage_ok(&m, &mctx, &mstaging, Access::Mount).await;
    let devs = r.loops_of(&mctx);
    c.eq(devs.len(), 1, "mount: loop devices");
    if let Some(dev) = devs.first() {
        c.eq(
            blkid_type(dev).as_str(),
            "ext4",
            "mount: filesystem made on the blank device",
        );
    }
    c.eq(
        r.mounts_at(&mstaging),
        1,
        "mount: mounted at the staging path",
    );
    c.ok(
        t(r.node()
            .node_stage_volume(r.stage_req(&m, &mctx, &mstaging, Access::Mount)))
        .await,
        "re-stage with the same arguments",
    );
    c.code(
        t(r.node()
            .node_stage_volume(r.stage_req(&m, &mctx, &mstaging, Access::Block)))
        .await,
        Code::AlreadyExists,
        "re-stage as block",
    );
    let mut q = r.stage_req(&m, &mctx, &mstaging, Access::Mount);
    q.volume_capability = Some(mount_cap("xfs", Mode::SingleNodeWriter));
    c.code(
        t(r.node().node_stage_volume(q)).await,
        Code::AlreadyExists,
        "re-stage with another fs_type",
    );
    c.eq(
        r.mounts_at(&mstaging),
        1,
        "mount: still one mount after refused re-stages",
    );

    // Block: attached only; never formatted.
    let b = r.create_ok("stg-b", Some(64 * MIB), Access::Block).await;
    let bctx = r.cpublish_ok(&b, Access::Block).await;
    let bstaging = r.staging("stg-b");
    r.stage_ok(&b, &bctx, &bstaging, Access::Block).await;
    let devs = r.loops_of(&bctx);
    c.eq(devs.len(), 1, "block: loop devices");
    c.eq(
        r.mounts_at(&bstaging),
        0,
        "block: nothing mounted at the staging path",
    );
    if let Some(dev) = devs.first() {
        c.eq(
            blkid_type(dev).as_str(),
            "",
            "block: the device stays blank",
        );
        // Someone makes a filesystem on the raw device; a later mount stage must keep it.
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "keepme", dev])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    r.unstage_ok("stg-b", &bstaging).await;
    r.cunpublish_ok("stg-b").await;
    let bctx = r.cpublish_ok(&b, Access::Mount).await;
    r.stage_ok(&b, &bctx, &bstaging, Access::Mount).await;
    if let Some(dev) = r.loops_of(&bctx).first() {
        let label = Command::new("blkid")
            .args(["-p", "-o", "value", "-s", "LABEL", dev])
            .output()
            .unwrap();
        c.eq(
            String::from_utf8_lossy(&label.stdout).trim(),
            "keepme",
            "a device with a filesystem must never be reformatted",
        );
    }
    r.unstage_ok("stg-b", &bstaging).await;
    r.cunpublish_ok("stg-b").await;

    // A volume that is gone: attach fails with NOT_FOUND and leaves nothing.
    let g = r.create_ok("stg-gone", Some(64 * MIB), Access::Block).await;
    let gctx = r.cpublish_ok(&g, Access::Block).await;
    r.cunpublish_ok("stg-gone").await;
    r.delete_ok("stg-gone").await;
    let gstaging = r.staging("stg-gone");
    if let Some(s) = c.code(
        t(r.node()
            .node_stage_volume(r.stage_req(&g, &gctx, &gstaging, Access::Block)))
        .await,
        Code::NotFound,
        "stage of a deleted volume",
    ) {
        c.check(!s.message().is_empty(), "NOT_FOUND names the failed step");
    }
    r.unstage_ok("stg-m", &mstaging).await;
    r.cunpublish_ok("stg-m").await;
    r.delete_ok("stg-m").await;
    r.delete_ok("stg-b").await;
    c.eq(r.loops(), vec![], "loop devices left");
    c.eq(
        mounts_under(r.dir.path()),
        Vec::<String>::new(),
        "mounts left",
    );
    c.finish();
}

#[tokio::test]
async fn rule_22_node_unstage_volume() {
    if !common::require_root_and_tools("rule_22_node_unstage_volume") {
        return;
    }
    let Some(r) = Rig::start("r22").await else {
        return;
    };
    let mut c = Checks::new();
    let staging = r.staging("never");
    c.ok(
        r.unstage("never", &staging).await,
        "unstage of an unknown volume",
    );
    for access in Access::BOTH {
        let v = r
            .create_ok(&format!("us-{}", access.tag()), Some(64 * MIB), access)
            .await;
        let ctx = r.cpublish_ok(&v, access).await;
        let staging = r.staging(&v.volume_id);
        c.ok(
            r.unstage(&v.volume_id, &staging).await,
            &format!("unstage before any stage ({access:?})"),
        );
        r.stage_ok(&v, &ctx, &staging, access).await;
        c.eq(
            r.loops_of(&ctx).len(),
            1,
            &format!("staged ({access:?}): loop devices"),
        );
        c.ok(
            r.unstage(&v.volume_id, &staging).await,
            &format!("unstage ({access:?})"),
        );
        c.eq(
            r.loops(),
            vec![],
            &format!("unstaged ({access:?}): loop devices"),
        );
        c.eq(
            mounts_under(r.dir.path()),
            Vec::<String>::new(),
            &format!("unstaged ({access:?}): mounts"),
        );
        r.cunpublish_ok(&v.volume_id).await;
        r.delete_ok(&v.volume_id).await;
    }
    c.finish();
}

#[tokio::test]
async fn rule_23_node_publish_volume() {
    if !common::require_root_and_tools("rule_23_node_publish_volume") {
        return;
    }
    let Some(r) = Rig::start("r23").await else {
        return;
    };
    let mut c = Checks::new();
    for access in Access::BOTH {
        let v = r
            .create_ok(&format!("np-{}", access.tag()), Some(64 * MIB), access)
            .await;
        let ctx = r.cpublish_ok(&v, access).await;
        let staging = r.staging(&v.volume_id);
        let target = r.target(&v.volume_id, "pod-a");
        c.code(
            t(r.node()
                .node_publish_volume(r.publish_req(&v, &ctx, &staging, &target, access, false)))
            .await,
            Code::FailedPrecondition,
            &format!("publish of an unstaged volume ({access:?})"),
        );
        c.check(
            !Path::new(&target).exists(),
            format!("a refused publish created the target ({access:?})"),
        );
        r.stage_ok(&v, &ctx, &staging, access).await;
        r.publish_ok(&v, &ctx, &staging, &target, access, false)
            .await;
        match access {
            Access::Mount => {
                c.check(
                    Path::new(&target).is_dir(),
                    "mount: the target is a directory",
                );
                c.check(
                    write_file(&target, "rw", b"rw").is_ok(),
                    "mount: the target is writable",
                );
            }
            Access::Block => {
                let meta = std::fs::symlink_metadata(&target);
                c.check(meta.is_ok(), "block: the target exists");
                c.check(
                    is_block_device(&target),
                    "block: a block device is bound onto the target",
                );
                // Under the bind, the SP made a regular file (readdir shows the directory's
                // own entry, not the mounted device).
                let underlying = std::fs::read_dir(Path::new(&target).parent().unwrap())
                    .unwrap()
                    .flatten()
                    .find(|e| e.path() == Path::new(&target))
                    .and_then(|e| e.file_type().ok());
                c.check(
                    underlying.is_some_and(|t| t.is_file()),
                    format!("block: the target under the bind is a file: {underlying:?}"),
                );
                c.eq(
                    blockdev_size(&target) as i64,
                    64 * MIB,
                    "block: device size",
                );
                c.check(
                    write_at(&target, 0, &pattern(4096, 2)).is_ok(),
                    "block: the target is writable",
                );
            }
        }
        c.eq(
            r.mounts_at(&target),
            1,
            &format!("one mount at the target ({access:?})"),
        );
        c.code(
            t(r.node()
                .node_publish_volume(r.publish_req(&v, &ctx, &staging, &target, access, true)))
            .await,
            Code::AlreadyExists,
            &format!("re-publish read-only at the same target ({access:?})"),
        );
        // A second, read-only target.
        let ro = r.target(&v.volume_id, "pod-ro");
        r.publish_ok(&v, &ctx, &staging, &ro, access, true).await;
        match access {
            Access::Mount => {
                let e = write_file(&ro, "nope", b"x");
                c.eq(
                    e.as_ref().err().and_then(|e| e.raw_os_error()),
                    Some(30),
                    "mount: a write into the read-only target fails with EROFS",
                );
                c.check(
                    Path::new(&ro).join("rw").exists(),
                    "mount: the read-only target shows the volume",
                );
            }
            Access::Block => {
                c.check(
                    is_block_device(&ro),
                    "block: read-only target is a block device",
                );
                c.check(
                    mount_is_read_only(&ro),
                    "block: the read-only target is mounted read-only",
                );
                // Writes through the device node itself are refused too (the target binds
                // a read-only view of the device, not the device).
                // (The kernel may let the open succeed; the write fails with EPERM.)
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&ro)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, &[0xA5; 4096]))
                    .and_then(|()| std::fs::File::open(&ro)?.sync_all());
                c.check(
                    written.is_err(),
                    "block: a write through the read-only target's device node fails",
                );
                let mut head = [0u8; 512];
                let read = std::fs::File::open(&ro)
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
                c.check(read.is_ok(), "block: the read-only target reads");
                // The read-write target still writes.
                let rw = std::fs::OpenOptions::new().write(true).open(&target);
                c.check(
                    rw.is_ok(),
                    "block: the read-write target still opens for writing",
                );
            }
        }
        r.unpublish_ok(&v.volume_id, &ro).await;
        r.unpublish_ok(&v.volume_id, &target).await;
        r.unstage_ok(&v.volume_id, &staging).await;
        r.cunpublish_ok(&v.volume_id).await;
        r.delete_ok(&v.volume_id).await;
    }
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_24_node_unpublish_volume() {
    if !common::require_root_and_tools("rule_24_node_unpublish_volume") {
        return;
    }
    let Some(r) = Rig::start("r24").await else {
        return;
    };
    let mut c = Checks::new();
    let missing = r.target("ghost", "pod-a");
    c.ok(
        r.unpublish("ghost", &missing).await,
        "unpublish of a target that does not exist",
    );
    let empty = r.target("ghost", "pod-b");
    std::fs::create_dir_all(&empty).unwrap();
    c.ok(
        r.unpublish("ghost", &empty).await,
        "unpublish of a target that is not mounted",
    );
    c.check(
        !Path::new(&empty).exists(),
        "the unmounted target is removed",
    );
    for access in Access::BOTH {
        let v = r
            .create_ok(&format!("nu-{}", access.tag()), Some(64 * MIB), access)
            .await;
        let a = r.attach(&v, access, "pod-c").await;
        c.ok(
            r.unpublish(&v.volume_id, &a.target).await,
            &format!("unpublish ({access:?})"),
        );
        c.check(
            !Path::new(&a.target).exists(),
            format!("the target is removed ({access:?})"),
        );
        c.eq(
            r.mounts_at(&a.target),
            0,
            &format!("nothing mounted at the target ({access:?})"),
        );
        c.ok(
            r.unpublish(&v.volume_id, &a.target).await,
            &format!("unpublish again ({access:?})"),
        );
        r.unstage_ok(&v.volume_id, &a.staging).await;
        r.cunpublish_ok(&v.volume_id).await;
        r.delete_ok(&v.volume_id).await;
    }
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_25_node_get_volume_stats() {
    if !common::require_root_and_tools("rule_25_node_get_volume_stats") {
        return;
    }
    let Some(r) = Rig::start("r25").await else {
        return;
    };
    use csi::volume_usage::Unit;
    let mut c = Checks::new();
    let stats = |id: &str, path: &str, staging: &str| csi::NodeGetVolumeStatsRequest {
        volume_id: id.to_owned(),
        volume_path: path.to_owned(),
        staging_target_path: staging.to_owned(),
    };
    let m = r.create_ok("stat-m", Some(64 * MIB), Access::Mount).await;
    let ma = r.attach(&m, Access::Mount, "pod-a").await;
    let b = r.create_ok("stat-b", Some(64 * MIB), Access::Block).await;
    let ba = r.attach(&b, Access::Block, "pod-a").await;
    if let Some(s) = c.ok(
        t(r.node()
            .node_get_volume_stats(stats("stat-m", &ma.target, &ma.staging)))
        .await,
        "stats of a mount volume",
    ) {
        let bytes = s.usage.iter().find(|u| u.unit() == Unit::Bytes);
        let inodes = s.usage.iter().find(|u| u.unit() == Unit::Inodes);
        c.check(
            bytes.is_some_and(|u| u.total > 0 && u.available > 0 && u.used >= 0),
            format!("mount: bytes usage {:?}", s.usage),
        );
        c.check(
            inodes.is_some_and(|u| u.total > 0),
            format!("mount: inode usage {:?}", s.usage),
        );
        c.check(
            s.volume_condition.as_ref().is_some_and(|vc| !vc.abnormal),
            format!("mount: condition {:?}", s.volume_condition),
        );
    }
    if let Some(s) = c.ok(
        t(r.node()
            .node_get_volume_stats(stats("stat-b", &ba.target, &ba.staging)))
        .await,
        "stats of a block volume",
    ) {
        let bytes = s.usage.iter().find(|u| u.unit() == Unit::Bytes);
        c.eq(bytes.map(|u| u.total), Some(64 * MIB), "block: total bytes");
        c.check(
            s.volume_condition.as_ref().is_some_and(|vc| !vc.abnormal),
            format!("block: condition {:?}", s.volume_condition),
        );
    }
    c.code(
        t(r.node().node_get_volume_stats(stats("stat-m", "", ""))).await,
        IA,
        "missing volume_path",
    );
    c.code(
        t(r.node()
            .node_get_volume_stats(stats("no-such", &ma.target, "")))
        .await,
        Code::NotFound,
        "unknown volume",
    );
    let nowhere = r.path("nowhere").display().to_string();
    c.code(
        t(r.node()
            .node_get_volume_stats(stats("stat-m", &nowhere, "")))
        .await,
        Code::NotFound,
        "unknown path",
    );
    r.detach(&ma).await;
    r.detach(&ba).await;
    // The device vanishes under a staged block volume.
    let ctx = r.cpublish_ok(&b, Access::Block).await;
    let staging = r.staging("stat-b");
    r.stage_ok(&b, &ctx, &staging, Access::Block).await;
    for dev in r.loops_of(&ctx) {
        let st = Command::new("losetup").args(["-d", &dev]).status().unwrap();
        assert!(st.success(), "losetup -d {dev}");
    }
    if let Some(s) = c.ok(
        t(r.node()
            .node_get_volume_stats(stats("stat-b", &staging, &staging)))
        .await,
        "stats after the device vanished",
    ) {
        c.check(
            s.volume_condition
                .as_ref()
                .is_some_and(|vc| vc.abnormal && !vc.message.is_empty()),
            format!(
                "condition after the device vanished: {:?}",
                s.volume_condition
            ),
        );
    }
    c.ok(
        r.unstage("stat-b", &staging).await,
        "unstage after the device vanished",
    );
    r.cunpublish_ok("stat-b").await;
    r.delete_ok("stat-m").await;
    r.delete_ok("stat-b").await;
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_26_node_expand_volume_block() {
    if !common::require_root_and_tools("rule_26_node_expand_volume_block") {
        return;
    }
    let Some(r) = Rig::start("r26").await else {
        return;
    };
    let mut c = Checks::new();
    let v = r.create_ok("nx", Some(64 * MIB), Access::Block).await;
    let a = r.attach(&v, Access::Block, "pod-a").await;
    let data = pattern(1 << 20, 6);
    write_at(&a.target, (63 << 20) as u64, &data).unwrap();
    c.ok(
        t(r.ctrl()
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id: "nx".into(),
                capacity_range: range(128 * MIB, 0),
                volume_capability: Some(Access::Block.cap()),
                ..Default::default()
            }))
        .await,
        "ControllerExpandVolume (block, published)",
    );
    if let Some(got) = c.ok(
        t(r.node().node_expand_volume(csi::NodeExpandVolumeRequest {
            volume_id: "nx".into(),
            volume_path: a.target.clone(),
            capacity_range: range(128 * MIB, 0),
            staging_target_path: a.staging.clone(),
            volume_capability: Some(Access::Block.cap()),
            ..Default::default()
        }))
        .await,
        "NodeExpandVolume (block)",
    ) {
        c.eq(got.capacity_bytes, 128 * MIB, "NodeExpandVolume capacity");
    }
    c.eq(
        blockdev_size(&a.target) as i64,
        128 * MIB,
        "the device the pod sees grew",
    );
    c.check(
        read_at(&a.target, 63 << 20, data.len()) == data,
        "data before the old end kept",
    );
    c.check(
        write_at(&a.target, 127 << 20, &data).is_ok(),
        "the new range is writable",
    );
    r.detach(&a).await;
    r.delete_ok("nx").await;
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_27_ephemeral_inline_volume() {
    if !common::require_root_and_tools("rule_27_ephemeral_inline_volume") {
        return;
    }
    let Some(r) = Rig::start("r27").await else {
        return;
    };
    let mut c = Checks::new();
    let id = format!("csi-{}", random_hex());
    let target = r.target(&id, "pod-eph");
    let req = csi::NodePublishVolumeRequest {
        volume_id: id.clone(),
        target_path: target.clone(),
        volume_capability: Some(Access::Mount.cap()),
        volume_context: map(&[
            (EPHEMERAL_KEY, "true"),
            ("csi.storage.k8s.io/pod.name", "pod-eph"),
            ("csi.storage.k8s.io/pod.namespace", "default"),
        ]),
        ..Default::default()
    };
    for i in 1..=10 {
        c.ok(
            t(r.node().node_publish_volume(req.clone())).await,
            &format!("ephemeral NodePublishVolume #{i}"),
        );
    }
    c.eq(r.mounts_at(&target), 1, "one mount at the target");
    c.eq(r.loops().len(), 1, "one loop device");
    c.eq(r.volume_ids().await.len(), 1, "one volume created for it");
    c.check(
        write_file(&target, "f", b"ephemeral").is_ok(),
        "the ephemeral volume is writable",
    );
    for i in 1..=10 {
        c.ok(
            r.unpublish(&id, &target).await,
            &format!("ephemeral NodeUnpublishVolume #{i}"),
        );
    }
    c.check(!Path::new(&target).exists(), "the target is removed");
    c.eq(
        r.volume_ids().await,
        Vec::<String>::new(),
        "the ephemeral volume is deleted",
    );
    c.eq(r.csp_volume_files().len(), 0, "its backing file is gone");
    c.eq(r.loops(), vec![], "loop devices left");
    c.eq(
        mounts_under(r.dir.path()),
        Vec::<String>::new(),
        "mounts left",
    );
    c.finish();
}

#[tokio::test]
async fn rule_31_node_get_volume_stats_volume_first_then_path() {
    if !common::require_root_and_tools("rule_31_node_get_volume_stats_volume_first_then_path") {
        return;
    }
    let Some(r) = Rig::start("r31").await else {
        return;
    };
    let mut c = Checks::new();
    let stats = |id: &str, path: &str| csi::NodeGetVolumeStatsRequest {
        volume_id: id.to_owned(),
        volume_path: path.to_owned(),
        staging_target_path: String::new(),
    };
    let nowhere = r.path("nowhere/at/all").display().to_string();
    // csi-sanity: an unknown volume with a relative path that does not exist.
    for path in ["some/path", nowhere.as_str(), "/proc/1", "/a/../b"] {
        c.code(
            t(r.node()
                .node_get_volume_stats(stats("no-such-volume", path)))
            .await,
            Code::NotFound,
            &format!("unknown volume, path {path:?}"),
        );
    }
    c.code(
        t(r.node().node_get_volume_stats(stats("", "some/path"))).await,
        IA,
        "empty volume_id",
    );
    c.code(
        t(r.node().node_get_volume_stats(stats("no-such-volume", ""))).await,
        IA,
        "unknown volume, empty volume_path",
    );
    for access in Access::BOTH {
        let name = format!("stat31-{}", access.tag());
        let v = r.create_ok(&name, Some(64 * MIB), access).await;
        let a = r.attach(&v, access, "pod-a").await;
        for path in ["some/path", nowhere.as_str(), "/a/../b"] {
            c.code(
                t(r.node().node_get_volume_stats(stats(&name, path))).await,
                Code::NotFound,
                &format!("{access:?} volume, path {path:?} it is not at"),
            );
        }
        c.code(
            t(r.node().node_get_volume_stats(stats(&name, ""))).await,
            IA,
            &format!("{access:?} volume, empty volume_path"),
        );
        c.ok(
            t(r.node().node_get_volume_stats(stats(&name, &a.target))).await,
            &format!("{access:?} volume at its target"),
        );
        r.detach(&a).await;
        c.code(
            t(r.node().node_get_volume_stats(stats(&name, &a.target))).await,
            Code::NotFound,
            &format!("{access:?} volume after unstage, at its old target"),
        );
        r.delete_ok(&name).await;
    }
    r.assert_nothing_left();
    c.finish();
}

/// Rule 36 (spec: the second table under NodePublishVolume; csi-sanity v5.5): a volume
/// published for a single writer (SINGLE_NODE_SINGLE_WRITER, Kubernetes ReadWriteOncePod)
/// is refused at a second target with FAILED_PRECONDITION, whichever publish asked for it;
/// the first target is left as it was, and SINGLE_NODE_WRITER (ReadWriteOnce: several pods
/// of one node) and SINGLE_NODE_MULTI_WRITER keep taking second targets.
#[tokio::test]
async fn rule_36_single_writer_refuses_a_second_target() {
    if !common::require_root_and_tools("rule_36_single_writer_refuses_a_second_target") {
        return;
    }
    let Some(r) = Rig::start("r36").await else {
        return;
    };
    let mut c = Checks::new();
    for access in Access::BOTH {
        let v = r
            .create_ok(&format!("sw-{}", access.tag()), Some(64 * MIB), access)
            .await;
        let ctx = r.cpublish_ok(&v, access).await;
        let staging = r.staging(&v.volume_id);
        r.stage_ok(&v, &ctx, &staging, access).await;
        let publish = |target: &str, mode: Mode| {
            let mut q = r.publish_req(&v, &ctx, &staging, target, access, false);
            q.volume_capability = Some(cap(access, mode));
            q
        };
        let first = r.target(&v.volume_id, "pod-a");
        let second = r.target(&v.volume_id, "pod-b");
        c.ok(
            t(r.node()
                .node_publish_volume(publish(&first, Mode::SingleNodeSingleWriter)))
            .await,
            &format!("{access:?}: the single writer's publish"),
        );
        c.ok(
            t(r.node()
                .node_publish_volume(publish(&first, Mode::SingleNodeSingleWriter)))
            .await,
            &format!("{access:?}: the same publish again (idempotent)"),
        );
        c.code(
            t(r.node()
                .node_publish_volume(publish(&first, Mode::SingleNodeMultiWriter)))
            .await,
            Code::AlreadyExists,
            &format!("{access:?}: the same target with shared access"),
        );
        for mode in [
            Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter,
            Mode::SingleNodeWriter,
        ] {
            let refused = c.code(
                t(r.node().node_publish_volume(publish(&second, mode))).await,
                Code::FailedPrecondition,
                &format!("{access:?}: a second target with {mode:?}"),
            );
            if let Some(st) = refused {
                c.check(
                    st.message().contains(&first) && st.message().contains("unpublished"),
                    format!("{access:?}: the refusal names the target and the fix: {st:?}"),
                );
            }
            c.check(
                !Path::new(&second).exists(),
                format!("{access:?}: the refused target was not made ({mode:?})"),
            );
        }
        c.eq(
            r.mounts_at(&first),
            1,
            &format!("{access:?}: the first target is still published"),
        );
        r.unpublish_ok(&v.volume_id, &first).await;
        // Once it is gone, the single writer may be published elsewhere.
        c.ok(
            t(r.node()
                .node_publish_volume(publish(&second, Mode::SingleNodeSingleWriter)))
            .await,
            &format!("{access:?}: the single writer at another target after unpublish"),
        );
        r.unpublish_ok(&v.volume_id, &second).await;
        // A multi-writer publish first: a single writer may not join it.
        for (mode, join_ok) in [
            (Mode::SingleNodeMultiWriter, true),
            (Mode::SingleNodeWriter, true),
            (Mode::SingleNodeSingleWriter, false),
        ] {
            c.ok(
                t(r.node()
                    .node_publish_volume(publish(&first, Mode::SingleNodeMultiWriter)))
                .await,
                &format!("{access:?}: a multi-writer publish"),
            );
            let joined = t(r.node().node_publish_volume(publish(&second, mode))).await;
            if join_ok {
                c.ok(
                    joined,
                    &format!("{access:?}: {mode:?} joins a multi-writer"),
                );
                r.unpublish_ok(&v.volume_id, &second).await;
            } else {
                c.code(
                    joined,
                    Code::FailedPrecondition,
                    &format!("{access:?}: a single writer joining a multi-writer"),
                );
            }
            r.unpublish_ok(&v.volume_id, &first).await;
        }
        r.unstage_ok(&v.volume_id, &staging).await;
        r.cunpublish_ok(&v.volume_id).await;
        r.delete_ok(&v.volume_id).await;
    }
    r.assert_nothing_left();
    c.finish();
}

async fn lifecycle(tag: &str, access: Access) {
    let Some(r) = Rig::start(tag).await else {
        return;
    };
    let v = r.create_ok("life", Some(64 * MIB), access).await;
    let a = r.attach(&v, access, "pod-a").await;
    let data = pattern(3 << 20, 11);
    match access {
        Access::Mount => write_file(&a.target, "payload.bin", &data).unwrap(),
        Access::Block => write_at(&a.target, 8 << 20, &data).unwrap(),
    }
    r.unpublish_ok("life", &a.target).await;
    r.unstage_ok("life", &a.staging).await;
    r.assert_nothing_left();
    assert!(!Path::new(&a.target).exists(), "the target is removed");
    // Restage (the controller grant is still there) and read back.
    r.stage_ok(&v, &a.ctx, &a.staging, access).await;
    r.publish_ok(&v, &a.ctx, &a.staging, &a.target, access, false)
        .await;
    let back = match access {
        Access::Mount => std::fs::read(Path::new(&a.target).join("payload.bin")).unwrap(),
        Access::Block => read_at(&a.target, 8 << 20, data.len()),
    };
    assert!(
        back == data,
        "data changed across unstage and restage ({access:?})"
    );
    r.detach(&a).await;
    r.assert_nothing_left();
    r.delete_ok("life").await;
    assert!(r.volume_ids().await.is_empty());
    assert!(r.csp_volume_files().is_empty());
}

#[tokio::test]
async fn lifecycle_mount_stage_publish_write_unpublish_unstage_restage() {
    if !common::require_root_and_tools(
        "lifecycle_mount_stage_publish_write_unpublish_unstage_restage",
    ) {
        return;
    }
    lifecycle("life-mnt", Access::Mount).await;
}

#[tokio::test]
async fn lifecycle_block_stage_publish_write_unpublish_unstage_restage() {
    if !common::require_root_and_tools(
        "lifecycle_block_stage_publish_write_unpublish_unstage_restage",
    ) {
        return;
    }
    lifecycle("life-blk", Access::Block).await;
}
