//! Our own CSI conformance suite: the numbered rules of `shared/specs/csi.md`, each as a test
//! named after its rule, against a real `volbridge serve` over its CSI unix socket, as root,
//! with real loop devices and mounts, in mount and block access types. Error cases assert
//! the exact gRPC code; idempotency cases repeat the call ten times and count volumes, loop
//! devices and mounts afterwards.

mod common;
mod csi_support;

use common::mounts_under;
use csi::volume_capability::access_mode::Mode;
use csi_support::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;

const IA: Code = Code::InvalidArgument;

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

// =======================================================================================
// Identity and capabilities
// =======================================================================================

#[tokio::test]
async fn identity_plugin_info_and_capabilities_exactly_as_listed() {
    if !common::require_root_and_tools("identity_plugin_info_and_capabilities_exactly_as_listed") {
        return;
    }
    let Some(r) = Rig::start("caps").await else {
        return;
    };
    let mut c = Checks::new();
    let info = ok(
        t(r.ident().get_plugin_info(csi::GetPluginInfoRequest {})).await,
        "GetPluginInfo",
    );
    c.eq(info.name.as_str(), DRIVER, "driver name");
    c.eq(
        info.vendor_version.as_str(),
        env!("CARGO_PKG_VERSION"),
        "vendor_version",
    );

    use csi::plugin_capability::Type as P;
    let caps = ok(
        t(r.ident()
            .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {}))
        .await,
        "GetPluginCapabilities",
    );
    let got: Vec<String> = caps
        .capabilities
        .iter()
        .map(|cap| match &cap.r#type {
            Some(P::Service(s)) => format!("service:{}", s.r#type().as_str_name()),
            Some(P::VolumeExpansion(e)) => format!("expansion:{}", e.r#type().as_str_name()),
            None => "none".into(),
        })
        .collect();
    let want = [
        "expansion:OFFLINE",
        "expansion:ONLINE",
        "service:CONTROLLER_SERVICE",
        "service:GROUP_CONTROLLER_SERVICE",
        // The embedded CSP serves the snapshot-metadata extension.
        "service:SNAPSHOT_METADATA_SERVICE",
        "service:VOLUME_ACCESSIBILITY_CONSTRAINTS",
    ];
    c.eq(
        sorted(got),
        want.map(String::from).to_vec(),
        "plugin capabilities",
    );

    use csi::controller_service_capability::Type as C;
    let caps = ok(
        t(r.ctrl()
            .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {}))
        .await,
        "ControllerGetCapabilities",
    );
    let got: Vec<String> = caps
        .capabilities
        .iter()
        .map(|cap| match &cap.r#type {
            Some(C::Rpc(rpc)) => rpc.r#type().as_str_name().to_owned(),
            None => "none".into(),
        })
        .collect();
    let want = [
        "CLONE_VOLUME",
        "CREATE_DELETE_SNAPSHOT",
        "CREATE_DELETE_VOLUME",
        "EXPAND_VOLUME",
        "GET_CAPACITY",
        "GET_SNAPSHOT",
        "GET_VOLUME",
        "LIST_SNAPSHOTS",
        "LIST_VOLUMES",
        "LIST_VOLUMES_PUBLISHED_NODES",
        "MODIFY_VOLUME",
        "PUBLISH_READONLY",
        "PUBLISH_UNPUBLISH_VOLUME",
        "SINGLE_NODE_MULTI_WRITER",
        "VOLUME_CONDITION",
    ];
    c.eq(
        sorted(got),
        want.map(String::from).to_vec(),
        "controller capabilities",
    );

    use csi::node_service_capability::Type as N;
    let caps = ok(
        t(r.node()
            .node_get_capabilities(csi::NodeGetCapabilitiesRequest {}))
        .await,
        "NodeGetCapabilities",
    );
    let got: Vec<String> = caps
        .capabilities
        .iter()
        .map(|cap| match &cap.r#type {
            Some(N::Rpc(rpc)) => rpc.r#type().as_str_name().to_owned(),
            None => "none".into(),
        })
        .collect();
    let want = [
        "EXPAND_VOLUME",
        "GET_VOLUME_STATS",
        "SINGLE_NODE_MULTI_WRITER",
        "STAGE_UNSTAGE_VOLUME",
        "VOLUME_CONDITION",
    ];
    c.eq(
        sorted(got),
        want.map(String::from).to_vec(),
        "node capabilities",
    );

    use csi::group_controller_service_capability::Type as G;
    let caps = ok(
        t(r.group()
            .group_controller_get_capabilities(csi::GroupControllerGetCapabilitiesRequest {}))
        .await,
        "GroupControllerGetCapabilities",
    );
    let got: Vec<String> = caps
        .capabilities
        .iter()
        .map(|cap| match &cap.r#type {
            Some(G::Rpc(rpc)) => rpc.r#type().as_str_name().to_owned(),
            None => "none".into(),
        })
        .collect();
    c.eq(
        got,
        vec!["CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT".to_owned()],
        "group controller capabilities",
    );

    let probe = ok(t(r.ident().probe(csi::ProbeRequest {})).await, "Probe");
    c.check(
        probe.ready != Some(false),
        format!("Probe with the embedded CSP up: ready = {:?}", probe.ready),
    );
    drop(r);

    // The driver name is configurable.
    let Some(r) = Rig::start_with(
        "caps-name",
        RigOptions {
            extra: &["--csi-driver-name", "block.example.com"],
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let info = ok(
        t(r.ident().get_plugin_info(csi::GetPluginInfoRequest {})).await,
        "GetPluginInfo",
    );
    c.eq(
        info.name.as_str(),
        "block.example.com",
        "driver name with --csi-driver-name",
    );
    c.finish();
}

#[tokio::test]
async fn identity_probe_not_ready_while_default_backend_unreachable() {
    if !common::require_root_and_tools("probe_unreachable") {
        return;
    }
    // A config whose default backend is a CSP nobody listens for.
    let port = free_port();
    let Some(r) = Rig::start_with(
        "probe",
        RigOptions {
            default_csp: Some(("dead", port, "p")),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let started = Instant::now();
    let probe = ok(t(r.ident().probe(csi::ProbeRequest {})).await, "Probe");
    assert_eq!(
        probe.ready,
        Some(false),
        "Probe must say not ready while the default backend is unreachable"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "Probe must be cheap; it took {:?}",
        started.elapsed()
    );
}

// =======================================================================================
// General rules 1-4
// =======================================================================================

#[tokio::test]
async fn rule_01_missing_fields_invalid_argument() {
    if !common::require_root_and_tools("rule_01_missing_fields_invalid_argument") {
        return;
    }
    let Some(r) = Rig::start("r01").await else {
        return;
    };
    let v = r.create_ok("v1", Some(64 * MIB), Access::Mount).await;
    let ctx = r.cpublish_ok(&v, Access::Mount).await;
    let staging = r.staging("v1");
    let target = r.target("v1", "pod-a");
    let mount = Access::Mount.cap();
    let mut c = Checks::new();

    // Controller
    let good_create = r.create_req("new-vol", Some(64 * MIB), vec![mount.clone()]);
    let mut q = good_create.clone();
    q.name = String::new();
    c.code(
        t(r.ctrl().create_volume(q)).await,
        IA,
        "CreateVolume without name",
    );
    let mut q = good_create.clone();
    q.volume_capabilities.clear();
    c.code(
        t(r.ctrl().create_volume(q)).await,
        IA,
        "CreateVolume without capabilities",
    );
    let mut q = good_create.clone();
    q.volume_capabilities[0].access_type = None;
    c.code(
        t(r.ctrl().create_volume(q)).await,
        IA,
        "CreateVolume, capability without access type",
    );
    let mut q = good_create.clone();
    q.volume_capabilities[0].access_mode = None;
    c.code(
        t(r.ctrl().create_volume(q)).await,
        IA,
        "CreateVolume, capability without access mode",
    );
    c.code(
        t(r.ctrl().delete_volume(csi::DeleteVolumeRequest::default())).await,
        IA,
        "DeleteVolume without volume_id",
    );
    let good_pub = r.cpublish_req(&v, Access::Mount, false);
    let mut q = good_pub.clone();
    q.volume_id = String::new();
    c.code(
        t(r.ctrl().controller_publish_volume(q)).await,
        IA,
        "ControllerPublishVolume without volume_id",
    );
    let mut q = good_pub.clone();
    q.node_id = String::new();
    c.code(
        t(r.ctrl().controller_publish_volume(q)).await,
        IA,
        "ControllerPublishVolume without node_id",
    );
    let mut q = good_pub.clone();
    q.volume_capability = None;
    c.code(
        t(r.ctrl().controller_publish_volume(q)).await,
        IA,
        "ControllerPublishVolume without capability",
    );
    c.code(
        t(r.ctrl()
            .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
                node_id: r.node_id.clone(),
                ..Default::default()
            }))
        .await,
        IA,
        "ControllerUnpublishVolume without volume_id",
    );
    c.code(
        t(r.ctrl()
            .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
                volume_capabilities: vec![mount.clone()],
                ..Default::default()
            }))
        .await,
        IA,
        "ValidateVolumeCapabilities without volume_id",
    );
    c.code(
        t(r.ctrl()
            .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
                volume_id: "v1".into(),
                ..Default::default()
            }))
        .await,
        IA,
        "ValidateVolumeCapabilities without capabilities",
    );
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
        t(r.ctrl()
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                capacity_range: range(128 * MIB, 0),
                volume_capability: Some(mount.clone()),
                ..Default::default()
            }))
        .await,
        IA,
        "ControllerExpandVolume without volume_id",
    );
    c.code(
        t(r.ctrl()
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id: "v1".into(),
                volume_capability: Some(mount.clone()),
                ..Default::default()
            }))
        .await,
        IA,
        "ControllerExpandVolume without capacity_range",
    );
    c.code(
        r.get_volume("").await,
        IA,
        "ControllerGetVolume without volume_id",
    );
    c.code(
        t(r.ctrl()
            .controller_modify_volume(csi::ControllerModifyVolumeRequest {
                mutable_parameters: map(&[("destroyOnDelete", "false")]),
                ..Default::default()
            }))
        .await,
        IA,
        "ControllerModifyVolume without volume_id",
    );
    c.code(
        t(r.ctrl()
            .controller_modify_volume(csi::ControllerModifyVolumeRequest {
                volume_id: "v1".into(),
                ..Default::default()
            }))
        .await,
        IA,
        "ControllerModifyVolume without mutable_parameters",
    );
    c.code(
        t(r.ctrl().get_snapshot(csi::GetSnapshotRequest::default())).await,
        IA,
        "GetSnapshot without snapshot_id",
    );

    // Node
    let good_stage = r.stage_req(&v, &ctx, &staging, Access::Mount);
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
        r.unstage("", &staging).await,
        IA,
        "NodeUnstageVolume without volume_id",
    );
    c.code(
        r.unstage("v1", "").await,
        IA,
        "NodeUnstageVolume without staging_target_path",
    );
    let good_publish = r.publish_req(&v, &ctx, &staging, &target, Access::Mount, false);
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
        r.unpublish("", &target).await,
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

    // GroupController
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

    // Arguments are checked before state is touched.
    c.eq(
        r.volume_ids().await,
        vec!["v1".to_owned()],
        "volumes after the refused calls",
    );
    c.eq(
        r.csp_volume_files().len(),
        1,
        "CSP volume files after the refused calls",
    );
    c.eq(
        r.csp_snapshot_files().len(),
        0,
        "CSP snapshot files after the refused calls",
    );
    c.eq(r.loops(), vec![], "loop devices after the refused calls");
    c.eq(
        mounts_under(r.dir.path()),
        Vec::<String>::new(),
        "mounts after the refused calls",
    );
    c.eq(
        r.published_nodes("v1").await,
        vec![r.node_id.clone()],
        "v1 stays published to this node only",
    );
    c.check(
        !Path::new(&target).exists(),
        "a refused NodePublish created the target",
    );

    r.cunpublish_ok("v1").await;
    r.delete_ok("v1").await;
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_02_idempotent_create_delete_volume() {
    if !common::require_root_and_tools("rule_02_idempotent_create_delete_volume") {
        return;
    }
    let Some(r) = Rig::start("r02-vol").await else {
        return;
    };
    for access in Access::BOTH {
        let name = format!("idem-{}", access.tag());
        let req = r.create_req(&name, Some(64 * MIB), vec![access.cap()]);
        let first = ok(r.create(req.clone()).await, "CreateVolume #1")
            .volume
            .unwrap();
        for i in 2..=10 {
            let again = ok(r.create(req.clone()).await, &format!("CreateVolume #{i}"))
                .volume
                .unwrap();
            assert_eq!(
                again, first,
                "CreateVolume #{i} ({access:?}) answered differently"
            );
        }
        assert_eq!(
            r.volume_ids().await,
            vec![name.clone()],
            "exactly one volume listed"
        );
        assert_eq!(r.csp_volume_files().len(), 1, "exactly one backing file");
        for i in 1..=10 {
            ok(
                t(r.ctrl().delete_volume(csi::DeleteVolumeRequest {
                    volume_id: name.clone(),
                    ..Default::default()
                }))
                .await,
                &format!("DeleteVolume #{i} ({access:?})"),
            );
        }
        assert!(r.volume_ids().await.is_empty(), "the volume is gone");
        assert!(r.csp_volume_files().is_empty(), "its backing file is gone");
    }
    r.assert_nothing_left();
}

#[tokio::test]
async fn rule_02_idempotent_controller_publish_unpublish() {
    if !common::require_root_and_tools("rule_02_idempotent_controller_publish_unpublish") {
        return;
    }
    let Some(r) = Rig::start("r02-cpub").await else {
        return;
    };
    for access in Access::BOTH {
        let v = r
            .create_ok(&format!("cp-{}", access.tag()), Some(64 * MIB), access)
            .await;
        let first = r.cpublish_ok(&v, access).await;
        for i in 2..=10 {
            let again = ok(
                t(r.ctrl()
                    .controller_publish_volume(r.cpublish_req(&v, access, false)))
                .await,
                &format!("ControllerPublishVolume #{i}"),
            );
            assert_eq!(
                again.publish_context, first,
                "ControllerPublishVolume #{i} ({access:?}) answered differently"
            );
        }
        assert_eq!(
            r.published_nodes(&v.volume_id).await,
            vec![r.node_id.clone()],
            "published once, to this node"
        );
        assert!(r.loops().is_empty(), "the controller side attaches nothing");
        for i in 1..=10 {
            ok(
                r.cunpublish(&v.volume_id, &r.node_id).await,
                &format!("ControllerUnpublishVolume #{i} ({access:?})"),
            );
        }
        assert!(r.published_nodes(&v.volume_id).await.is_empty());
        r.delete_ok(&v.volume_id).await;
    }
    r.assert_nothing_left();
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
async fn rule_03_parallel_create_of_one_name_x32_makes_one_volume() {
    if !common::require_root_and_tools("rule_03_parallel_create_of_one_name_x32_makes_one_volume") {
        return;
    }
    let Some(r) = Rig::start("r03-par").await else {
        return;
    };
    let req = r.create_req("racy", Some(64 * MIB), vec![Access::Mount.cap()]);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let mut client = csi::controller_client::ControllerClient::new(r.ch.clone());
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            t(client.create_volume(req)).await.map(|r| r.into_inner())
        }));
    }
    let mut oks = Vec::new();
    let mut c = Checks::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(resp) => oks.push(resp.volume.expect("volume")),
            Err(s) => c.eq(
                s.code(),
                Code::Aborted,
                &format!("a failed parallel CreateVolume ({})", s.message()),
            ),
        }
    }
    c.check(!oks.is_empty(), "no parallel CreateVolume succeeded");
    for v in &oks {
        c.eq(v.volume_id.as_str(), "racy", "volume_id of an OK answer");
        c.eq(v.capacity_bytes, 64 * MIB, "capacity of an OK answer");
    }
    c.eq(
        r.volume_ids().await,
        vec!["racy".to_owned()],
        "volumes after 32 parallel creates",
    );
    c.eq(
        r.csp_volume_files().len(),
        1,
        "CSP backing files after 32 parallel creates",
    );
    // The CO's retry of an aborted call gets the same volume.
    let again = r.create_ok("racy", Some(64 * MIB), Access::Mount).await;
    c.eq(again.volume_id.as_str(), "racy", "retry after the race");
    r.delete_ok("racy").await;
    c.finish();
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
async fn rule_04_secrets_never_logged() {
    if !common::require_root_and_tools("rule_04_secrets_never_logged") {
        return;
    }
    let Some(r) = Rig::start_with(
        "r04",
        RigOptions {
            csp_port: true,
            env: &[("RUST_LOG", "trace")],
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let planted_password = format!("planted-S3cret-{}", random_hex());
    let planted_user = format!("planted-User-{}", random_hex());
    let planted_extra = format!("planted-Extra-{}", random_hex());
    let port = r.csp_port.unwrap().to_string();
    // The embedded CSP's address with a wrong password: every controller call fails at login.
    let bad = map(&[
        ("backend", "local-by-secret"),
        ("serviceName", "127.0.0.1"),
        ("servicePort", &port),
        ("username", &planted_user),
        ("password", &planted_password),
        ("token", &planted_extra),
    ]);
    let good = r.local_secrets();
    let real_password = good["password"].clone();
    let mut c = Checks::new();
    let mut messages = Vec::new();

    // Valid secrets: a whole lifecycle on the backend the secrets select.
    let mut req = r.create_req("sec-vol", Some(64 * MIB), vec![Access::Mount.cap()]);
    req.secrets = good.clone();
    let vol = c.ok(r.create(req).await, "CreateVolume with valid secrets");
    if let Some(vol) = vol.and_then(|v| v.volume) {
        let mut q = r.cpublish_req(&vol, Access::Mount, false);
        q.secrets = good.clone();
        let ctx = c
            .ok(
                t(r.ctrl().controller_publish_volume(q)).await,
                "ControllerPublishVolume with secrets",
            )
            .map(|p| p.publish_context)
            .unwrap_or_default();
        let staging = r.staging("sec-vol");
        let target = r.target("sec-vol", "pod-a");
        let mut q = r.stage_req(&vol, &ctx, &staging, Access::Mount);
        q.secrets = good.clone();
        c.ok(
            t(r.node().node_stage_volume(q)).await,
            "NodeStageVolume with secrets",
        );
        let mut q = r.publish_req(&vol, &ctx, &staging, &target, Access::Mount, false);
        q.secrets = good.clone();
        c.ok(
            t(r.node().node_publish_volume(q)).await,
            "NodePublishVolume with secrets",
        );
        c.check(
            write_file(&target, "f", b"hello").is_ok(),
            "write into the volume published with secrets",
        );
        c.ok(
            t(r.ctrl().create_snapshot(csi::CreateSnapshotRequest {
                source_volume_id: "sec-vol".into(),
                name: "sec-snap".into(),
                secrets: good.clone(),
                ..Default::default()
            }))
            .await,
            "CreateSnapshot with secrets",
        );
        c.ok(
            t(r.ctrl().list_snapshots(csi::ListSnapshotsRequest {
                secrets: good.clone(),
                ..Default::default()
            }))
            .await,
            "ListSnapshots with secrets",
        );
        c.ok(
            t(r.ctrl()
                .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                    volume_id: "sec-vol".into(),
                    capacity_range: range(128 * MIB, 0),
                    secrets: good.clone(),
                    volume_capability: Some(Access::Mount.cap()),
                }))
            .await,
            "ControllerExpandVolume with secrets",
        );
        c.ok(
            t(r.node().node_expand_volume(csi::NodeExpandVolumeRequest {
                volume_id: "sec-vol".into(),
                volume_path: target.clone(),
                capacity_range: range(128 * MIB, 0),
                staging_target_path: staging.clone(),
                volume_capability: Some(Access::Mount.cap()),
                secrets: good.clone(),
            }))
            .await,
            "NodeExpandVolume with secrets",
        );
        c.ok(r.unpublish("sec-vol", &target).await, "NodeUnpublishVolume");
        c.ok(r.unstage("sec-vol", &staging).await, "NodeUnstageVolume");
        c.ok(
            t(r.ctrl()
                .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
                    volume_id: "sec-vol".into(),
                    node_id: r.node_id.clone(),
                    secrets: good.clone(),
                }))
            .await,
            "ControllerUnpublishVolume with secrets",
        );
        let snap = c.ok(
            t(r.ctrl().create_snapshot(csi::CreateSnapshotRequest {
                source_volume_id: "sec-vol".into(),
                name: "sec-snap".into(),
                secrets: good.clone(),
                ..Default::default()
            }))
            .await,
            "CreateSnapshot again with secrets",
        );
        // Let a background copy finish before deleting.
        if let Some(s) = snap.and_then(|s| s.snapshot) {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut ready = s.ready_to_use;
            while !ready && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                ready = t(r.ctrl().create_snapshot(csi::CreateSnapshotRequest {
                    source_volume_id: "sec-vol".into(),
                    name: "sec-snap".into(),
                    secrets: good.clone(),
                    ..Default::default()
                }))
                .await
                .map(|s| s.into_inner().snapshot.is_some_and(|s| s.ready_to_use))
                .unwrap_or(false);
            }
        }
        c.ok(
            t(r.ctrl().delete_snapshot(csi::DeleteSnapshotRequest {
                snapshot_id: "sec-snap".into(),
                secrets: good.clone(),
            }))
            .await,
            "DeleteSnapshot with secrets",
        );
        c.ok(
            t(r.ctrl().delete_volume(csi::DeleteVolumeRequest {
                volume_id: "sec-vol".into(),
                secrets: good.clone(),
            }))
            .await,
            "DeleteVolume with secrets",
        );
    }

    // Planted secrets on every RPC that carries a secrets map.
    let mut req = r.create_req("planted", Some(64 * MIB), vec![Access::Mount.cap()]);
    req.secrets = bad.clone();
    let res = t(r.ctrl().create_volume(req)).await;
    c.check(res.is_err(), "CreateVolume with a wrong password must fail");
    messages.push(describe(&res));
    messages.push(describe(
        &t(r.ctrl().delete_volume(csi::DeleteVolumeRequest {
            volume_id: "planted".into(),
            secrets: bad.clone(),
        }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl()
            .controller_publish_volume(csi::ControllerPublishVolumeRequest {
                volume_id: "planted".into(),
                node_id: r.node_id.clone(),
                volume_capability: Some(Access::Mount.cap()),
                secrets: bad.clone(),
                ..Default::default()
            }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl()
            .controller_unpublish_volume(csi::ControllerUnpublishVolumeRequest {
                volume_id: "planted".into(),
                node_id: r.node_id.clone(),
                secrets: bad.clone(),
            }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl()
            .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
                volume_id: "planted".into(),
                volume_capabilities: vec![Access::Mount.cap()],
                secrets: bad.clone(),
                ..Default::default()
            }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl().create_snapshot(csi::CreateSnapshotRequest {
            source_volume_id: "planted".into(),
            name: "planted-snap".into(),
            secrets: bad.clone(),
            ..Default::default()
        }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl().delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: "planted-snap".into(),
            secrets: bad.clone(),
        }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl().list_snapshots(csi::ListSnapshotsRequest {
            secrets: bad.clone(),
            ..Default::default()
        }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl()
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id: "planted".into(),
                capacity_range: range(128 * MIB, 0),
                secrets: bad.clone(),
                volume_capability: Some(Access::Mount.cap()),
            }))
        .await,
    ));
    messages.push(describe(
        &t(r.ctrl()
            .controller_modify_volume(csi::ControllerModifyVolumeRequest {
                volume_id: "planted".into(),
                secrets: bad.clone(),
                mutable_parameters: map(&[("destroyOnDelete", "true")]),
            }))
        .await,
    ));
    let staging = r.staging("planted");
    let target = r.target("planted", "pod-p");
    let fake_vol = csi::Volume {
        volume_id: "planted".into(),
        ..Default::default()
    };
    let mut q = r.stage_req(&fake_vol, &Map::new(), &staging, Access::Mount);
    q.secrets = bad.clone();
    messages.push(describe(&t(r.node().node_stage_volume(q)).await));
    let mut q = r.publish_req(
        &fake_vol,
        &Map::new(),
        &staging,
        &target,
        Access::Mount,
        false,
    );
    q.secrets = bad.clone();
    messages.push(describe(&t(r.node().node_publish_volume(q)).await));
    messages.push(describe(
        &t(r.node().node_expand_volume(csi::NodeExpandVolumeRequest {
            volume_id: "planted".into(),
            volume_path: staging.clone(),
            capacity_range: range(128 * MIB, 0),
            secrets: bad.clone(),
            ..Default::default()
        }))
        .await,
    ));
    messages.push(describe(
        &t(r.group()
            .create_volume_group_snapshot(csi::CreateVolumeGroupSnapshotRequest {
                name: "planted-group".into(),
                source_volume_ids: vec!["planted".into()],
                secrets: bad.clone(),
                ..Default::default()
            }))
        .await,
    ));
    messages.push(describe(
        &t(r.group()
            .get_volume_group_snapshot(csi::GetVolumeGroupSnapshotRequest {
                group_snapshot_id: "planted-group".into(),
                secrets: bad.clone(),
                ..Default::default()
            }))
        .await,
    ));
    messages.push(describe(
        &t(r.group()
            .delete_volume_group_snapshot(csi::DeleteVolumeGroupSnapshotRequest {
                group_snapshot_id: "planted-group".into(),
                secrets: bad.clone(),
                ..Default::default()
            }))
        .await,
    ));
    // And a backend nobody listens for (the connection-failure path).
    let mut dead = bad.clone();
    dead.insert("servicePort".into(), free_port().to_string());
    let mut req = r.create_req("planted-dead", Some(64 * MIB), vec![Access::Mount.cap()]);
    req.secrets = dead;
    let res = t(r.ctrl().create_volume(req)).await;
    c.check(
        res.is_err(),
        "CreateVolume on an unreachable backend must fail",
    );
    messages.push(describe(&res));

    let log = r.d.log_text();
    c.check(
        !log.is_empty(),
        "the daemon logged nothing at RUST_LOG=trace",
    );
    for (what, value) in [
        ("planted password", planted_password.as_str()),
        ("planted username", planted_user.as_str()),
        ("planted extra secret key", planted_extra.as_str()),
        ("embedded CSP password", real_password.as_str()),
    ] {
        let hits: Vec<&str> = log.lines().filter(|l| l.contains(value)).take(3).collect();
        c.check(
            hits.is_empty(),
            format!("the {what} reached the log: {hits:?}"),
        );
        let in_answers: Vec<&String> = messages.iter().filter(|m| m.contains(value)).collect();
        c.check(
            in_answers.is_empty(),
            format!("the {what} reached a gRPC answer: {in_answers:?}"),
        );
    }
    r.assert_nothing_left();
    c.finish();
}

/// The words of a message: runs of letters, digits and `_`.
fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect()
}

#[tokio::test]
async fn rule_04_short_secrets_redacted_as_whole_tokens_only() {
    if !common::require_root_and_tools("rule_04_short_secrets_redacted_as_whole_tokens_only") {
        return;
    }
    let Some(r) = Rig::start_with(
        "r04-short",
        RigOptions {
            env: &[("RUST_LOG", "trace")],
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let mut c = Checks::new();
    // Port 1 of the loopback address: nobody listens, the connection is refused.
    let short = map(&[
        ("backend", "127.0.0.1"),
        ("username", "u"),
        ("password", "p"),
        ("servicePort", "1"),
    ]);
    let mut answers = Vec::new();
    for access in Access::BOTH {
        let mut req = r.create_req(
            &format!("short-{}", access.tag()),
            Some(64 * MIB),
            vec![access.cap()],
        );
        req.secrets = short.clone();
        answers.push((
            format!("CreateVolume ({access:?})"),
            t(r.ctrl().create_volume(req)).await.map(|_| ()),
        ));
        let published =
            t(r.ctrl()
                .controller_publish_volume(csi::ControllerPublishVolumeRequest {
                    volume_id: format!("short-{}", access.tag()),
                    node_id: r.node_id.clone(),
                    volume_capability: Some(access.cap()),
                    secrets: short.clone(),
                    ..Default::default()
                }))
            .await;
        answers.push((
            format!("ControllerPublishVolume ({access:?})"),
            published.map(|_| ()),
        ));
    }
    let deleted = t(r.ctrl().delete_volume(csi::DeleteVolumeRequest {
        volume_id: "short-mnt".into(),
        secrets: short.clone(),
    }))
    .await;
    answers.push(("DeleteVolume".into(), deleted.map(|_| ())));
    for (what, answer) in answers {
        let Err(s) = answer else {
            c.check(
                false,
                format!("{what} on an unreachable backend answered OK"),
            );
            continue;
        };
        let m = s.message();
        c.eq(s.code(), Code::Unavailable, &format!("{what}: {m}"));
        c.check(
            m.contains("error sending request for url"),
            format!("{what}: the message is garbled: {m}"),
        );
        c.check(
            m.contains("<redacted>"),
            format!("{what}: no secret was redacted in: {m}"),
        );
        let leaked: Vec<&str> = words(m)
            .into_iter()
            .filter(|w| ["u", "p", "1"].contains(w))
            .collect();
        c.check(
            leaked.is_empty() && !m.contains("127.0.0.1"),
            format!("{what}: secrets {leaked:?} in: {m}"),
        );
    }
    // Nor the credentials in the daemon's log lines of those calls, as words (the log names
    // the CSP's address: that is where an operator looks first).
    let log = r.d.log_text();
    let leaked: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("error sending request"))
        .filter(|l| words(l).iter().any(|w| ["u", "p"].contains(w)))
        .take(3)
        .collect();
    c.check(
        leaked.is_empty(),
        format!("secrets in log lines: {leaked:?}"),
    );
    c.eq(r.volume_ids().await, Vec::<String>::new(), "volumes left");
    c.finish();
}

// =======================================================================================
// Controller rules 5-19
// =======================================================================================

#[tokio::test]
async fn rule_05_default_size_and_capacity_range() {
    if !common::require_root_and_tools("rule_05_default_size_and_capacity_range") {
        return;
    }
    let Some(r) = Rig::start("r05").await else {
        return;
    };
    let mut c = Checks::new();
    for access in Access::BOTH {
        let name = format!("default-{}", access.tag());
        let v = r.create_ok(&name, None, access).await;
        c.eq(
            v.capacity_bytes,
            GIB,
            &format!("capacity without capacity_range ({access:?})"),
        );
        let got = ok(r.get_volume(&name).await, "ControllerGetVolume");
        c.eq(
            got.volume.map(|v| v.capacity_bytes),
            Some(GIB),
            &format!("ControllerGetVolume capacity ({access:?})"),
        );
        c.eq(
            v.volume_context.get(CONTEXT_BACKEND).map(String::as_str),
            Some("local"),
            "volume_context backend",
        );
        let want_topology = vec![csi::Topology {
            segments: map(&[(TOPOLOGY_KEY, &r.node_id)]),
        }];
        c.eq(v.accessible_topology, want_topology, "accessible_topology");
    }
    // The block device a node sees has that size too.
    let v = r.create_ok("default-blk", None, Access::Block).await;
    let a = r.attach(&v, Access::Block, "pod-a").await;
    c.eq(
        blockdev_size(&a.target) as i64,
        GIB,
        "size of the published default block device",
    );
    r.detach(&a).await;
    r.delete_ok("default-blk").await;
    r.delete_ok("default-mnt").await;

    let mk = |name: &str, required: i64, limit: i64| {
        let mut q = r.create_req(name, None, vec![Access::Mount.cap()]);
        q.capacity_range = range(required, limit);
        q
    };
    c.code(
        r.create(mk("req-gt-limit", 128 * MIB, 64 * MIB)).await,
        IA,
        "required_bytes > limit_bytes",
    );
    c.code(
        r.create(mk("negative", -MIB, 0)).await,
        IA,
        "negative required_bytes",
    );
    c.code(
        r.create(mk("tiny-limit", 0, 1000)).await,
        Code::OutOfRange,
        "limit_bytes below the allocation unit (1 MiB)",
    );
    c.code(
        r.create(mk("unaligned", 10 * MIB + 1, 10 * MIB + 100))
            .await,
        Code::OutOfRange,
        "a range that holds no 1 MiB multiple",
    );
    if let Some(v) = c
        .ok(
            r.create(mk("in-range", 10 * MIB + 1, 20 * MIB)).await,
            "a satisfiable range",
        )
        .and_then(|v| v.volume)
    {
        c.check(
            v.capacity_bytes > 10 * MIB && v.capacity_bytes <= 20 * MIB,
            format!("capacity {} outside [10 MiB + 1, 20 MiB]", v.capacity_bytes),
        );
        r.delete_ok("in-range").await;
    }
    if let Some(v) = c
        .ok(
            r.create(mk("exact", 64 * MIB, 64 * MIB)).await,
            "an exact size",
        )
        .and_then(|v| v.volume)
    {
        c.eq(v.capacity_bytes, 64 * MIB, "exact size");
        r.delete_ok("exact").await;
    }
    if let Some(v) = c
        .ok(
            r.create(mk("limit-only", 0, 64 * MIB)).await,
            "only a limit below the default size",
        )
        .and_then(|v| v.volume)
    {
        c.check(
            v.capacity_bytes > 0 && v.capacity_bytes <= 64 * MIB,
            format!("capacity {} with limit 64 MiB", v.capacity_bytes),
        );
        r.delete_ok("limit-only").await;
    }
    c.eq(r.volume_ids().await, Vec::<String>::new(), "volumes left");
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_06_create_existing_name() {
    if !common::require_root_and_tools("rule_06_create_existing_name") {
        return;
    }
    let Some(r) = Rig::start("r06").await else {
        return;
    };
    let mut c = Checks::new();
    let mut base = r.create_req("named", Some(64 * MIB), vec![Access::Mount.cap()]);
    base.parameters = map(&[("tier", "gold")]);
    let first = ok(r.create(base.clone()).await, "CreateVolume")
        .volume
        .unwrap();
    let again = ok(r.create(base.clone()).await, "CreateVolume, same request").volume;
    c.eq(again.as_ref(), Some(&first), "same request, same volume");
    let mut q = base.clone();
    q.capacity_range = range(128 * MIB, 0);
    c.code(
        r.create(q).await,
        Code::AlreadyExists,
        "same name, other capacity",
    );
    let mut q = base.clone();
    q.parameters = map(&[("tier", "silver")]);
    c.code(
        r.create(q).await,
        Code::AlreadyExists,
        "same name, other parameter value",
    );
    let mut q = base.clone();
    q.parameters.clear();
    c.code(
        r.create(q).await,
        Code::AlreadyExists,
        "same name, parameters left out",
    );
    // Another source.
    r.create_ok("other-src", Some(64 * MIB), Access::Mount)
        .await;
    let snap = r.snapshot_ok("other-snap", "other-src").await;
    r.wait_snapshot_ready(&snap.snapshot_id).await;
    let mut q = base.clone();
    q.volume_content_source = snapshot_source(&snap.snapshot_id);
    c.code(
        r.create(q).await,
        Code::AlreadyExists,
        "same name, a snapshot source",
    );
    let mut q = base.clone();
    q.volume_content_source = volume_source("other-src");
    c.code(
        r.create(q).await,
        Code::AlreadyExists,
        "same name, a volume source",
    );
    // And a clone asked again with another source.
    let mut clone = r.create_req("cloned", Some(64 * MIB), vec![Access::Mount.cap()]);
    clone.volume_content_source = snapshot_source(&snap.snapshot_id);
    c.ok(r.create(clone.clone()).await, "clone from a snapshot");
    c.ok(r.create(clone.clone()).await, "the same clone again");
    let mut q = clone.clone();
    q.volume_content_source = None;
    c.code(
        r.create(q).await,
        Code::AlreadyExists,
        "the clone's name without a source",
    );
    let mut q = clone.clone();
    q.volume_content_source = volume_source("other-src");
    c.code(
        r.create(q).await,
        Code::AlreadyExists,
        "the clone's name from another source",
    );

    c.eq(
        r.volume_ids().await,
        vec![
            "cloned".to_owned(),
            "named".to_owned(),
            "other-src".to_owned(),
        ],
        "volumes",
    );
    r.delete_ok("cloned").await;
    r.delete_snapshot_ok(&snap.snapshot_id).await;
    r.delete_ok("other-src").await;
    r.delete_ok("named").await;
    c.finish();
}

#[tokio::test]
async fn rule_07_content_source_clone_from_snapshot_and_volume() {
    if !common::require_root_and_tools("rule_07_content_source_clone_from_snapshot_and_volume") {
        return;
    }
    let Some(r) = Rig::start("r07").await else {
        return;
    };
    let mut c = Checks::new();
    // A block source with data at two places.
    let head = pattern(1 << 20, 3);
    let tail = pattern(1 << 20, 9);
    let src = r.create_ok("src", Some(64 * MIB), Access::Block).await;
    let a = r.attach(&src, Access::Block, "pod-a").await;
    write_at(&a.target, 0, &head).unwrap();
    write_at(&a.target, 40 << 20, &tail).unwrap();
    r.detach(&a).await;
    // A mount source with a file.
    let file = pattern(3 << 20, 5);
    let fsrc = r.create_ok("fsrc", Some(64 * MIB), Access::Mount).await;
    let a = r.attach(&fsrc, Access::Mount, "pod-a").await;
    write_file(&a.target, "data.bin", &file).unwrap();
    r.detach(&a).await;

    let snap = r.snapshot_ok("src-snap", "src").await;
    let snap = r.wait_snapshot_ready(&snap.snapshot_id).await;

    let clone_req = |name: &str, size: Option<i64>, access: Access, source| {
        let mut q = r.create_req(name, size, vec![access.cap()]);
        q.volume_content_source = source;
        q
    };
    c.code(
        r.create(clone_req(
            "x1",
            None,
            Access::Block,
            snapshot_source("no-such-snapshot"),
        ))
        .await,
        Code::NotFound,
        "clone from an unknown snapshot",
    );
    c.code(
        r.create(clone_req(
            "x2",
            None,
            Access::Block,
            volume_source("no-such-volume"),
        ))
        .await,
        Code::NotFound,
        "clone from an unknown volume",
    );
    // Smaller than the source, with a limit that forbids rounding up to the source size.
    for (name, source, what) in [
        (
            "x3",
            snapshot_source(&snap.snapshot_id),
            "clone smaller than its snapshot",
        ),
        ("x4", volume_source("src"), "clone smaller than its volume"),
    ] {
        let mut q = clone_req(name, None, Access::Block, source);
        q.capacity_range = range(32 * MIB, 32 * MIB);
        if c.code(r.create(q).await, Code::OutOfRange, what).is_none() {
            r.delete_ok(name).await;
        }
    }

    // From a snapshot, the same size and larger; from a volume; all block, data compared.
    // Without a capacity range a clone is at least as large as its source.
    for (name, size, source) in [
        ("from-snap", None, snapshot_source(&snap.snapshot_id)),
        (
            "from-snap-big",
            Some(128 * MIB),
            snapshot_source(&snap.snapshot_id),
        ),
        ("from-vol", None, volume_source("src")),
    ] {
        let q = clone_req(name, size, Access::Block, source.clone());
        let Some(v) = c
            .ok(r.create(q).await, &format!("clone {name}"))
            .and_then(|v| v.volume)
        else {
            continue;
        };
        c.eq(
            v.content_source.as_ref(),
            source.as_ref(),
            &format!("{name}: content_source echoed"),
        );
        match size {
            Some(want) => c.eq(v.capacity_bytes, want, &format!("{name}: capacity")),
            None => c.check(
                v.capacity_bytes >= 64 * MIB,
                format!(
                    "{name}: capacity {} below its source's 64 MiB",
                    v.capacity_bytes
                ),
            ),
        }
        let a = r.attach(&v, Access::Block, "pod-a").await;
        c.eq(
            blockdev_size(&a.target) as i64,
            v.capacity_bytes,
            &format!("{name}: device size"),
        );
        c.check(
            read_at(&a.target, 0, head.len()) == head,
            format!("{name}: data at 0 differs"),
        );
        c.check(
            read_at(&a.target, 40 << 20, tail.len()) == tail,
            format!("{name}: data at 40 MiB differs"),
        );
        r.detach(&a).await;
        r.delete_ok(name).await;
    }
    // A source larger than the default size (1 GiB): a clone without a capacity range is
    // never smaller than it.
    r.create_ok("big-src", Some(1536 * MIB), Access::Block)
        .await;
    let big_snap = r.snapshot_ok("big-snap", "big-src").await;
    let big_snap = r.wait_snapshot_ready(&big_snap.snapshot_id).await;
    for (name, source) in [
        ("big-from-snap", snapshot_source(&big_snap.snapshot_id)),
        ("big-from-vol", volume_source("big-src")),
    ] {
        let q = clone_req(name, None, Access::Block, source);
        if let Some(v) = c
            .ok(r.create(q).await, &format!("clone {name}"))
            .and_then(|v| v.volume)
        {
            c.check(
                v.capacity_bytes >= 1536 * MIB,
                format!(
                    "{name}: capacity {} below its source's 1536 MiB",
                    v.capacity_bytes
                ),
            );
            r.delete_ok(name).await;
        }
    }
    r.delete_snapshot_ok(&big_snap.snapshot_id).await;
    r.delete_ok("big-src").await;

    // A filesystem clone from a volume: the file is there, equal.
    let q = clone_req("fclone", None, Access::Mount, volume_source("fsrc"));
    if let Some(v) = c
        .ok(r.create(q).await, "clone fclone")
        .and_then(|v| v.volume)
    {
        c.eq(
            v.content_source.clone(),
            volume_source("fsrc"),
            "fclone: content_source echoed",
        );
        let a = r.attach(&v, Access::Mount, "pod-a").await;
        let back = std::fs::read(Path::new(&a.target).join("data.bin")).unwrap_or_default();
        c.check(back == file, "fclone: the file differs from its source's");
        r.detach(&a).await;
        r.delete_ok("fclone").await;
    }
    r.delete_snapshot_ok(&snap.snapshot_id).await;
    r.delete_ok("src").await;
    r.delete_ok("fsrc").await;
    c.eq(r.volume_ids().await, Vec::<String>::new(), "volumes left");
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_08_unsupported_access_type_or_mode() {
    if !common::require_root_and_tools("rule_08_unsupported_access_type_or_mode") {
        return;
    }
    let Some(r) = Rig::start("r08").await else {
        return;
    };
    let mut c = Checks::new();
    let with_cap =
        |name: &str, cap: csi::VolumeCapability| r.create_req(name, Some(64 * MIB), vec![cap]);
    c.code(
        r.create(with_cap("m-unknown", cap(Access::Mount, Mode::Unknown)))
            .await,
        IA,
        "access mode UNKNOWN",
    );
    c.code(
        r.create(with_cap(
            "m-mnmw",
            cap(Access::Mount, Mode::MultiNodeMultiWriter),
        ))
        .await,
        IA,
        "MULTI_NODE_MULTI_WRITER with mount (no shared filesystem)",
    );
    c.code(
        r.create(with_cap(
            "m-mnro",
            cap(Access::Mount, Mode::MultiNodeReaderOnly),
        ))
        .await,
        IA,
        "MULTI_NODE_READER_ONLY with mount",
    );
    c.code(
        r.create(with_cap(
            "m-mnsw",
            cap(Access::Mount, Mode::MultiNodeSingleWriter),
        ))
        .await,
        IA,
        "MULTI_NODE_SINGLE_WRITER with mount",
    );
    c.code(
        r.create(with_cap(
            "m-ntfs",
            mount_cap("ntfs", Mode::SingleNodeWriter),
        ))
        .await,
        IA,
        "mount with an unsupported fs_type",
    );
    let mut q = with_cap("m-mixed", Access::Mount.cap());
    q.volume_capabilities
        .push(cap(Access::Mount, Mode::MultiNodeMultiWriter));
    c.code(
        r.create(q).await,
        IA,
        "one supported and one unsupported capability",
    );
    c.eq(
        r.volume_ids().await,
        Vec::<String>::new(),
        "nothing created by refused requests",
    );
    // What is supported.
    c.ok(
        r.create(with_cap(
            "ok-snmw",
            cap(Access::Mount, Mode::SingleNodeMultiWriter),
        ))
        .await,
        "SINGLE_NODE_MULTI_WRITER with mount",
    );
    c.ok(
        r.create(with_cap(
            "ok-snsw",
            cap(Access::Mount, Mode::SingleNodeSingleWriter),
        ))
        .await,
        "SINGLE_NODE_SINGLE_WRITER with mount",
    );
    c.ok(
        r.create(with_cap(
            "ok-blk-mnmw",
            cap(Access::Block, Mode::MultiNodeMultiWriter),
        ))
        .await,
        "MULTI_NODE_MULTI_WRITER with block",
    );
    // Publish and stage refuse an unsupported capability too.
    let v = r.create_ok("plain", Some(64 * MIB), Access::Mount).await;
    let mut q = r.cpublish_req(&v, Access::Mount, false);
    q.volume_capability = Some(cap(Access::Mount, Mode::MultiNodeMultiWriter));
    c.code(
        t(r.ctrl().controller_publish_volume(q)).await,
        IA,
        "ControllerPublishVolume, MULTI_NODE mount",
    );
    let ctx = r.cpublish_ok(&v, Access::Mount).await;
    let staging = r.staging("plain");
    let mut q = r.stage_req(&v, &ctx, &staging, Access::Mount);
    q.volume_capability = Some(mount_cap("ntfs", Mode::SingleNodeWriter));
    c.code(
        t(r.node().node_stage_volume(q)).await,
        IA,
        "NodeStageVolume with fs_type ntfs",
    );
    let mut q = r.stage_req(&v, &ctx, &staging, Access::Mount);
    q.volume_capability = Some(cap(Access::Mount, Mode::Unknown));
    c.code(
        t(r.node().node_stage_volume(q)).await,
        IA,
        "NodeStageVolume with access mode UNKNOWN",
    );
    c.eq(r.loops(), vec![], "loop devices after refused stages");
    r.cunpublish_ok("plain").await;
    for id in r.volume_ids().await {
        r.delete_ok(&id).await;
    }
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_09_delete_volume() {
    if !common::require_root_and_tools("rule_09_delete_volume") {
        return;
    }
    let Some(r) = Rig::start("r09").await else {
        return;
    };
    let mut c = Checks::new();
    c.ok(
        t(r.ctrl().delete_volume(csi::DeleteVolumeRequest {
            volume_id: "never-existed".into(),
            ..Default::default()
        }))
        .await,
        "DeleteVolume of an unknown id",
    );
    r.create_ok("with-snap", Some(64 * MIB), Access::Block)
        .await;
    let snap = r.snapshot_ok("keep-snap", "with-snap").await;
    r.wait_snapshot_ready(&snap.snapshot_id).await;
    let del = |id: &str| csi::DeleteVolumeRequest {
        volume_id: id.to_owned(),
        ..Default::default()
    };
    c.code(
        t(r.ctrl().delete_volume(del("with-snap"))).await,
        Code::FailedPrecondition,
        "DeleteVolume of a volume with a snapshot",
    );
    let pubd = r
        .create_ok("published", Some(64 * MIB), Access::Mount)
        .await;
    r.cpublish_ok(&pubd, Access::Mount).await;
    c.code(
        t(r.ctrl().delete_volume(del("published"))).await,
        Code::FailedPrecondition,
        "DeleteVolume of a published volume",
    );
    c.eq(
        r.volume_ids().await,
        vec!["published".to_owned(), "with-snap".to_owned()],
        "refused deletes keep the volumes",
    );
    r.delete_snapshot_ok(&snap.snapshot_id).await;
    c.ok(
        t(r.ctrl().delete_volume(del("with-snap"))).await,
        "DeleteVolume once the snapshot is gone",
    );
    r.cunpublish_ok("published").await;
    c.ok(
        t(r.ctrl().delete_volume(del("published"))).await,
        "DeleteVolume once unpublished",
    );
    c.eq(r.volume_ids().await, Vec::<String>::new(), "volumes left");
    c.finish();
}

#[tokio::test]
async fn rule_10_controller_publish_volume() {
    if !common::require_root_and_tools("rule_10_controller_publish_volume") {
        return;
    }
    let Some(r) = Rig::start_with(
        "r10",
        RigOptions {
            extra: &["--csi-max-volumes-per-node", "2"],
            csp_port: true,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let mut c = Checks::new();
    let a = r.create_ok("va", Some(64 * MIB), Access::Mount).await;
    let b = r.create_ok("vb", Some(64 * MIB), Access::Block).await;
    let x = r.create_ok("vc", Some(64 * MIB), Access::Mount).await;

    let mut q = r.cpublish_req(&a, Access::Mount, false);
    q.volume_id = "no-such-volume".into();
    c.code(
        t(r.ctrl().controller_publish_volume(q)).await,
        Code::NotFound,
        "unknown volume",
    );
    // An id no node could have (what csi-sanity sends), and a UUID no node ever reported
    // (neither this node nor a host the CSP knows).
    let stranger = random_uuid();
    for node in ["some-fake-node-id", stranger.as_str()] {
        let mut q = r.cpublish_req(&a, Access::Mount, false);
        q.node_id = node.to_owned();
        c.code(
            t(r.ctrl().controller_publish_volume(q)).await,
            Code::NotFound,
            &format!("unknown node {node}"),
        );
    }
    c.eq(
        r.published_nodes("va").await,
        Vec::<String>::new(),
        "va after refused publishes",
    );
    // If a publish to the stranger went through, take it back so the rest can run.
    ok(
        r.cunpublish("va", &stranger).await,
        "ControllerUnpublishVolume of the stranger",
    );

    let ctx = r.cpublish_ok(&a, Access::Mount).await;
    let get = |k: &str| ctx.get(k).cloned().unwrap_or_default();
    c.eq(
        get("accessProtocol").as_str(),
        "local",
        "publish_context accessProtocol",
    );
    c.check(
        !get("serialNumber").is_empty(),
        format!("publish_context serialNumber: {ctx:?}"),
    );
    c.eq(
        get("readOnly").as_str(),
        "false",
        "publish_context readOnly",
    );
    c.eq(get("lunId").as_str(), "0", "publish_context lunId");
    c.eq(get("fsType").as_str(), "ext4", "publish_context fsType");
    let local_path = get("localPath");
    c.check(
        Path::new(&local_path).is_file() && Path::new(&local_path).starts_with(&r.d.state),
        format!("publish_context localPath {local_path:?} is no file in the state dir"),
    );
    let again = r.cpublish_ok(&a, Access::Mount).await;
    c.eq(&again, &ctx, "the same publish again");
    c.code(
        t(r.ctrl()
            .controller_publish_volume(r.cpublish_req(&a, Access::Mount, true)))
        .await,
        Code::AlreadyExists,
        "published again read-only",
    );
    c.code(
        t(r.ctrl()
            .controller_publish_volume(r.cpublish_req(&a, Access::Block, false)))
        .await,
        Code::AlreadyExists,
        "published again with another access type",
    );
    // A SINGLE_NODE volume published here cannot go to another (known) node.
    let other = r.register_other_node();
    let mut q = r.cpublish_req(&a, Access::Mount, false);
    q.node_id = other.clone();
    c.code(
        t(r.ctrl().controller_publish_volume(q)).await,
        Code::FailedPrecondition,
        "SINGLE_NODE_WRITER volume already published elsewhere",
    );
    c.eq(
        r.published_nodes("va").await,
        vec![r.node_id.clone()],
        "va's nodes",
    );
    // The per-node limit (2): the third volume is refused, a repeat is not counted twice.
    r.cpublish_ok(&b, Access::Block).await;
    c.code(
        t(r.ctrl()
            .controller_publish_volume(r.cpublish_req(&x, Access::Mount, false)))
        .await,
        Code::ResourceExhausted,
        "a third volume with --csi-max-volumes-per-node 2",
    );
    c.ok(
        t(r.ctrl()
            .controller_publish_volume(r.cpublish_req(&a, Access::Mount, false)))
        .await,
        "repeating a publish at the limit",
    );
    c.eq(
        r.published_nodes("vc").await,
        Vec::<String>::new(),
        "vc after the refused publish",
    );
    // The publish context is what the node needs: it stages with it.
    let staging = r.staging("va");
    c.ok(
        t(r.node()
            .node_stage_volume(r.stage_req(&a, &ctx, &staging, Access::Mount)))
        .await,
        "NodeStageVolume with the publish context",
    );
    c.ok(r.unstage("va", &staging).await, "NodeUnstageVolume");
    r.cunpublish_ok("va").await;
    r.cunpublish_ok("vb").await;
    c.ok(
        t(r.ctrl()
            .controller_publish_volume(r.cpublish_req(&x, Access::Mount, false)))
        .await,
        "publishing vc once under the limit",
    );
    r.cunpublish_ok("vc").await;
    // A node that another driver registered with iSCSI and its IQN (the HPE CSI driver does
    // once open-iscsi is installed) is a host like any other: granted with `local`.
    let iscsi_node = r.register_other_node_as(
        r#""access_protocol":"iscsi","iqns":["iqn.1994-05.com.redhat:other"]"#,
    );
    let mut q = r.cpublish_req(&x, Access::Mount, false);
    q.node_id = iscsi_node.clone();
    if let Some(p) = c.ok(
        t(r.ctrl().controller_publish_volume(q)).await,
        "publishing vc to a node registered with iscsi",
    ) {
        c.eq(
            p.publish_context.get("accessProtocol").map(String::as_str),
            Some("local"),
            "its access protocol",
        );
    }
    c.ok(r.cunpublish("vc", &iscsi_node).await, "and back");
    // A class asking for a protocol the backend does not serve: a sentence naming it.
    let mut q = r.create_req("v-iscsi", Some(64 * MIB), vec![Access::Mount.cap()]);
    q.parameters = map(&[("accessProtocol", "iscsi")]);
    match t(r.ctrl().create_volume(q)).await {
        Err(s) => {
            c.eq(s.code(), Code::InvalidArgument, "accessProtocol iscsi");
            c.check(
                s.message().contains("'iscsi'") && s.message().contains("serves only 'local'"),
                format!("accessProtocol iscsi: {}", s.message()),
            );
        }
        Ok(_) => {
            c.check(false, "accessProtocol iscsi: created");
            r.delete_ok("v-iscsi").await;
        }
    }
    for id in ["va", "vb", "vc"] {
        r.delete_ok(id).await;
    }
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_11_controller_unpublish_volume() {
    if !common::require_root_and_tools("rule_11_controller_unpublish_volume") {
        return;
    }
    let Some(r) = Rig::start_with(
        "r11",
        RigOptions {
            csp_port: true,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let mut c = Checks::new();
    c.ok(
        r.cunpublish("no-such-volume", &r.node_id).await,
        "unknown volume",
    );
    let v = r.create_ok("single", Some(64 * MIB), Access::Mount).await;
    c.ok(r.cunpublish("single", &random_uuid()).await, "unknown node");
    c.ok(
        r.cunpublish("single", &r.node_id).await,
        "a pair never published",
    );
    // A multi-node block volume published to two nodes: unpublish removes one node only.
    let mn = cap(Access::Block, Mode::MultiNodeMultiWriter);
    let shared = ok(
        r.create(r.create_req("shared", Some(64 * MIB), vec![mn.clone()]))
            .await,
        "CreateVolume MULTI_NODE_MULTI_WRITER block",
    )
    .volume
    .unwrap();
    let other = r.register_other_node();
    let mut q = r.cpublish_req(&shared, Access::Block, false);
    q.volume_capability = Some(mn.clone());
    let ctx = ok(
        t(r.ctrl().controller_publish_volume(q.clone())).await,
        "publish here",
    )
    .publish_context;
    q.node_id = other.clone();
    c.ok(
        t(r.ctrl().controller_publish_volume(q)).await,
        "publish to the other node",
    );
    c.eq(
        r.published_nodes("shared").await,
        sorted(vec![r.node_id.clone(), other.clone()]),
        "published to both",
    );
    // This node uses it meanwhile.
    let staging = r.staging("shared");
    let mut sq = r.stage_req(&shared, &ctx, &staging, Access::Block);
    sq.volume_capability = Some(mn.clone());
    ok(
        t(r.node().node_stage_volume(sq)).await,
        "NodeStageVolume here",
    );
    let target = r.target("shared", "pod-a");
    let mut pq = r.publish_req(&shared, &ctx, &staging, &target, Access::Block, false);
    pq.volume_capability = Some(mn.clone());
    ok(
        t(r.node().node_publish_volume(pq)).await,
        "NodePublishVolume here",
    );
    c.ok(
        r.cunpublish("shared", &other).await,
        "unpublish the other node",
    );
    c.eq(
        r.published_nodes("shared").await,
        vec![r.node_id.clone()],
        "only this node is left",
    );
    c.check(
        write_at(&target, 0, &pattern(4096, 1)).is_ok(),
        "this node lost access when another node was unpublished",
    );
    r.unpublish_ok("shared", &target).await;
    r.unstage_ok("shared", &staging).await;
    c.ok(
        r.cunpublish("shared", &r.node_id).await,
        "unpublish this node",
    );
    c.eq(
        r.published_nodes("shared").await,
        Vec::<String>::new(),
        "no node left",
    );
    r.delete_ok("shared").await;
    r.delete_ok(&v.volume_id).await;
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_12_validate_volume_capabilities() {
    if !common::require_root_and_tools("rule_12_validate_volume_capabilities") {
        return;
    }
    let Some(r) = Rig::start("r12").await else {
        return;
    };
    let mut c = Checks::new();
    let v = r.create_ok("val", Some(64 * MIB), Access::Mount).await;
    let validate =
        |caps: Vec<csi::VolumeCapability>, id: &str| csi::ValidateVolumeCapabilitiesRequest {
            volume_id: id.to_owned(),
            volume_context: v.volume_context.clone(),
            volume_capabilities: caps,
            ..Default::default()
        };
    c.code(
        t(r.ctrl()
            .validate_volume_capabilities(validate(vec![Access::Mount.cap()], "no-such")))
        .await,
        Code::NotFound,
        "unknown volume",
    );
    for caps in [
        vec![Access::Mount.cap()],
        vec![Access::Block.cap()],
        vec![
            Access::Mount.cap(),
            cap(Access::Mount, Mode::SingleNodeMultiWriter),
        ],
    ] {
        let got = c.ok(
            t(r.ctrl()
                .validate_volume_capabilities(validate(caps.clone(), "val")))
            .await,
            &format!("validate {caps:?}"),
        );
        if let Some(got) = got {
            let confirmed = got.confirmed.map(|c| c.volume_capabilities);
            c.eq(confirmed, Some(caps.clone()), "confirmed capabilities");
        }
    }
    for caps in [
        vec![cap(Access::Mount, Mode::MultiNodeMultiWriter)],
        vec![
            Access::Mount.cap(),
            cap(Access::Mount, Mode::MultiNodeReaderOnly),
        ],
        vec![mount_cap("ntfs", Mode::SingleNodeWriter)],
    ] {
        let got = c.ok(
            t(r.ctrl()
                .validate_volume_capabilities(validate(caps.clone(), "val")))
            .await,
            &format!("validate {caps:?}"),
        );
        if let Some(got) = got {
            c.check(
                got.confirmed.is_none(),
                format!("{caps:?} must not be confirmed: {:?}", got.confirmed),
            );
            if got.confirmed.is_none() {
                c.check(!got.message.is_empty(), "an unconfirmed answer says why");
            }
        }
    }
    r.delete_ok("val").await;
    c.finish();
}

#[tokio::test]
async fn rule_13_list_volumes_paging_and_status() {
    if !common::require_root_and_tools("rule_13_list_volumes_paging_and_status") {
        return;
    }
    let Some(r) = Rig::start("r13-vol").await else {
        return;
    };
    let mut c = Checks::new();
    let mut want = Vec::new();
    for i in 0..5 {
        let access = if i % 2 == 0 {
            Access::Mount
        } else {
            Access::Block
        };
        r.create_ok(&format!("lv-{i}"), Some(64 * MIB), access)
            .await;
        want.push(format!("lv-{i}"));
    }
    let v1 = ok(r.get_volume("lv-1").await, "ControllerGetVolume")
        .volume
        .unwrap();
    r.cpublish_ok(&v1, Access::Block).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = ok(
            t(r.ctrl().list_volumes(csi::ListVolumesRequest {
                max_entries: 2,
                starting_token: token.clone(),
            }))
            .await,
            "ListVolumes page",
        );
        pages += 1;
        c.check(
            page.entries.len() <= 2,
            format!("page of {} entries with max_entries 2", page.entries.len()),
        );
        for e in &page.entries {
            let id = e
                .volume
                .as_ref()
                .map(|v| v.volume_id.clone())
                .unwrap_or_default();
            match &e.status {
                None => c.check(false, format!("{id}: entry without status")),
                Some(s) => {
                    let want_nodes = if id == "lv-1" {
                        vec![r.node_id.clone()]
                    } else {
                        vec![]
                    };
                    c.eq(
                        s.published_node_ids.clone(),
                        want_nodes,
                        &format!("{id}: published nodes"),
                    );
                    c.check(
                        s.volume_condition.as_ref().is_some_and(|vc| !vc.abnormal),
                        format!("{id}: condition {:?}", s.volume_condition),
                    );
                }
            }
            seen.push(id);
        }
        if page.next_token.is_empty() {
            break;
        }
        if pages > 10 {
            c.check(false, "ListVolumes paging never ended");
            break;
        }
        token = page.next_token;
    }
    c.eq(pages, 3, "pages of 2 for 5 volumes");
    c.eq(
        sorted(seen),
        want.clone(),
        "every volume exactly once across pages",
    );
    let all = ok(
        t(r.ctrl().list_volumes(csi::ListVolumesRequest::default())).await,
        "ListVolumes",
    );
    c.eq(all.entries.len(), 5, "max_entries 0: all volumes");
    c.eq(all.next_token.as_str(), "", "max_entries 0: no next_token");
    c.code(
        t(r.ctrl().list_volumes(csi::ListVolumesRequest {
            max_entries: 2,
            starting_token: "bogus-token".into(),
        }))
        .await,
        Code::Aborted,
        "ListVolumes with an unknown starting_token",
    );
    // A walk's later pages come from its first page's listing only while nothing changes
    // through the daemon: a create and a delete between two pages show on the next one.
    let names = |p: &csi::ListVolumesResponse| -> Vec<String> {
        p.entries
            .iter()
            .filter_map(|e| e.volume.as_ref().map(|v| v.volume_id.clone()))
            .collect()
    };
    let page = |token: &str| csi::ListVolumesRequest {
        max_entries: 2,
        starting_token: token.to_owned(),
    };
    let first = ok(
        t(r.ctrl().list_volumes(page(""))).await,
        "ListVolumes, first page",
    );
    c.eq(names(&first).join(","), "lv-0,lv-1".into(), "first page");
    r.create_ok("lv-1a", Some(64 * MIB), Access::Mount).await;
    r.delete_ok("lv-2").await;
    let second = ok(
        t(r.ctrl().list_volumes(page(&first.next_token))).await,
        "ListVolumes, second page",
    );
    c.eq(
        names(&second).join(","),
        "lv-1a,lv-3".into(),
        "second page after a create and a delete",
    );
    let again = ok(
        t(r.ctrl().list_volumes(page(&first.next_token))).await,
        "ListVolumes, the same token again",
    );
    c.eq(names(&again), names(&second), "the same token again");
    let last = ok(
        t(r.ctrl().list_volumes(page(&second.next_token))).await,
        "ListVolumes, last page",
    );
    c.eq(names(&last).join(","), "lv-4".into(), "last page");
    c.eq(last.next_token.as_str(), "", "no token after the last page");
    r.cunpublish_ok("lv-1").await;
    for id in want.iter().chain(&["lv-1a".to_owned()]) {
        r.delete_ok(id).await;
    }
    c.finish();
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
async fn rule_16_controller_expand_online_and_offline() {
    if !common::require_root_and_tools("rule_16_controller_expand_online_and_offline") {
        return;
    }
    let Some(r) = Rig::start("r16").await else {
        return;
    };
    let mut c = Checks::new();
    let expand = |id: &str, size: i64, access: Access| csi::ControllerExpandVolumeRequest {
        volume_id: id.to_owned(),
        capacity_range: range(size, 0),
        volume_capability: Some(access.cap()),
        ..Default::default()
    };
    c.code(
        t(r.ctrl()
            .controller_expand_volume(expand("no-such", 128 * MIB, Access::Mount)))
        .await,
        Code::NotFound,
        "unknown volume",
    );
    let v = r.create_ok("grow", Some(256 * MIB), Access::Mount).await;
    let a = r.attach(&v, Access::Mount, "pod-a").await;
    write_file(&a.target, "keep", b"kept").unwrap();
    let before = df_bytes(&a.target);
    // Online: published and mounted.
    if let Some(got) = c.ok(
        t(r.ctrl()
            .controller_expand_volume(expand("grow", 512 * MIB, Access::Mount)))
        .await,
        "ControllerExpandVolume online",
    ) {
        c.eq(got.capacity_bytes, 512 * MIB, "online: capacity");
        c.check(
            got.node_expansion_required,
            "online: node_expansion_required for mount",
        );
    }
    let node_expand = |size: i64| csi::NodeExpandVolumeRequest {
        volume_id: "grow".into(),
        volume_path: a.target.clone(),
        capacity_range: range(size, 0),
        staging_target_path: a.staging.clone(),
        volume_capability: Some(Access::Mount.cap()),
        ..Default::default()
    };
    if let Some(got) = c.ok(
        t(r.node().node_expand_volume(node_expand(512 * MIB))).await,
        "NodeExpandVolume online",
    ) {
        c.check(
            got.capacity_bytes >= 512 * MIB,
            format!("NodeExpandVolume capacity {}", got.capacity_bytes),
        );
    }
    let after = df_bytes(&a.target);
    c.check(
        after > before + (200 << 20),
        format!("online: df {before} -> {after}"),
    );
    // At or below the current size: OK with the current size.
    for size in [128 * MIB, 512 * MIB] {
        if let Some(got) = c.ok(
            t(r.ctrl()
                .controller_expand_volume(expand("grow", size, Access::Mount)))
            .await,
            &format!("ControllerExpandVolume to {size} (not larger)"),
        ) {
            c.eq(got.capacity_bytes, 512 * MIB, "capacity when not growing");
        }
    }
    r.detach(&a).await;
    // Offline: not published anywhere.
    if let Some(got) = c.ok(
        t(r.ctrl()
            .controller_expand_volume(expand("grow", 768 * MIB, Access::Mount)))
        .await,
        "ControllerExpandVolume offline",
    ) {
        c.eq(got.capacity_bytes, 768 * MIB, "offline: capacity");
        c.check(
            got.node_expansion_required,
            "offline: node_expansion_required for mount",
        );
    }
    let a = r.attach(&v, Access::Mount, "pod-a").await;
    let got = t(r.node().node_expand_volume(csi::NodeExpandVolumeRequest {
        volume_path: a.target.clone(),
        staging_target_path: a.staging.clone(),
        capacity_range: range(768 * MIB, 0),
        ..node_expand(768 * MIB)
    }))
    .await;
    c.ok(got, "NodeExpandVolume after the offline expansion");
    let offline = df_bytes(&a.target);
    c.check(
        offline > after + (200 << 20),
        format!("offline: df {after} -> {offline}"),
    );
    c.eq(
        std::fs::read(Path::new(&a.target).join("keep")).ok(),
        Some(b"kept".to_vec()),
        "data kept through both expansions",
    );
    c.eq(
        ok(r.get_volume("grow").await, "ControllerGetVolume")
            .volume
            .map(|v| v.capacity_bytes),
        Some(768 * MIB),
        "ControllerGetVolume capacity",
    );
    r.detach(&a).await;
    r.delete_ok("grow").await;
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_17_controller_get_volume() {
    if !common::require_root_and_tools("rule_17_controller_get_volume") {
        return;
    }
    let Some(r) = Rig::start("r17").await else {
        return;
    };
    let mut c = Checks::new();
    c.code(
        r.get_volume("no-such").await,
        Code::NotFound,
        "unknown volume",
    );
    let v = r.create_ok("gv", Some(64 * MIB), Access::Mount).await;
    let got = ok(r.get_volume("gv").await, "ControllerGetVolume");
    let vol = got.volume.clone().unwrap_or_default();
    c.eq(vol.volume_id.as_str(), "gv", "volume_id");
    c.eq(vol.capacity_bytes, 64 * MIB, "capacity");
    c.eq(
        vol.volume_context.get(CONTEXT_BACKEND).map(String::as_str),
        Some("local"),
        "volume_context backend",
    );
    let status = got.status.unwrap_or_default();
    c.eq(
        status.published_node_ids,
        Vec::<String>::new(),
        "not published yet",
    );
    c.check(
        status.volume_condition.is_some_and(|vc| !vc.abnormal),
        "a healthy volume's condition",
    );
    r.cpublish_ok(&v, Access::Mount).await;
    c.eq(
        r.published_nodes("gv").await,
        vec![r.node_id.clone()],
        "published nodes",
    );
    r.cunpublish_ok("gv").await;
    c.eq(
        r.published_nodes("gv").await,
        Vec::<String>::new(),
        "published nodes after unpublish",
    );
    r.delete_ok("gv").await;
    c.code(r.get_volume("gv").await, Code::NotFound, "after delete");
    c.finish();
}

#[tokio::test]
async fn rule_18_controller_modify_volume() {
    if !common::require_root_and_tools("rule_18_controller_modify_volume") {
        return;
    }
    let Some(r) = Rig::start("r18").await else {
        return;
    };
    let mut c = Checks::new();
    let modify = |id: &str, params: &[(&str, &str)]| csi::ControllerModifyVolumeRequest {
        volume_id: id.to_owned(),
        mutable_parameters: map(params),
        ..Default::default()
    };
    c.code(
        t(r.ctrl()
            .controller_modify_volume(modify("no-such", &[("destroyOnDelete", "false")])))
        .await,
        Code::NotFound,
        "unknown volume",
    );
    r.create_ok("mod", Some(64 * MIB), Access::Mount).await;
    for i in 1..=10 {
        c.ok(
            t(r.ctrl()
                .controller_modify_volume(modify("mod", &[("destroyOnDelete", "false")])))
            .await,
            &format!("ControllerModifyVolume destroyOnDelete=false #{i}"),
        );
    }
    let ctx = ok(r.get_volume("mod").await, "ControllerGetVolume")
        .volume
        .map(|v| v.volume_context)
        .unwrap_or_default();
    c.eq(
        ctx.get("destroyOnDelete").map(String::as_str),
        Some("false"),
        "the edit reached the CSP config",
    );
    c.code(
        t(r.ctrl()
            .controller_modify_volume(modify("mod", &[("thick", "true")])))
        .await,
        IA,
        "an immutable key (thick)",
    );
    c.code(
        t(r.ctrl()
            .controller_modify_volume(modify("mod", &[("accessProtocol", "iscsi")])))
        .await,
        IA,
        "an immutable key (accessProtocol)",
    );
    let ctx = ok(r.get_volume("mod").await, "ControllerGetVolume")
        .volume
        .map(|v| v.volume_context)
        .unwrap_or_default();
    c.check(
        ctx.get("thick").map(String::as_str) != Some("true"),
        "a refused edit changed nothing",
    );
    c.ok(
        t(r.ctrl()
            .controller_modify_volume(modify("mod", &[("destroyOnDelete", "true")])))
        .await,
        "ControllerModifyVolume destroyOnDelete=true",
    );
    r.delete_ok("mod").await;
    c.finish();
}

#[tokio::test]
async fn rule_19_get_capacity() {
    if !common::require_root_and_tools("rule_19_get_capacity") {
        return;
    }
    let Some(r) = Rig::start("r19").await else {
        return;
    };
    let mut c = Checks::new();
    let data_dir = r.d.state.join("csp");
    let mut free = df_avail(&data_dir.display().to_string()) as i64;
    if data_dir.join("pool.json").exists() {
        // An image pool can grow into the host's free space less its reserve for the host
        // (docs/pool.md P5): 2 % of the filesystem, at least 512 MiB.
        let total = df_size(&data_dir.display().to_string()) as i64;
        free -= (total / 50).max(512 * MIB);
    }
    let close = |got: i64| {
        let slack = free / 20 + 512 * MIB;
        got > 0 && (got - free).abs() <= slack
    };
    for (what, req) in [
        ("no arguments", csi::GetCapacityRequest::default()),
        (
            "capabilities and parameters",
            csi::GetCapacityRequest {
                volume_capabilities: vec![Access::Mount.cap()],
                parameters: map(&[("tier", "gold")]),
                ..Default::default()
            },
        ),
        (
            "this node's topology",
            csi::GetCapacityRequest {
                volume_capabilities: vec![Access::Block.cap()],
                accessible_topology: Some(csi::Topology {
                    segments: map(&[(TOPOLOGY_KEY, &r.node_id)]),
                }),
                ..Default::default()
            },
        ),
    ] {
        if let Some(got) = c.ok(
            t(r.ctrl().get_capacity(req)).await,
            &format!("GetCapacity, {what}"),
        ) {
            c.check(
                close(got.available_capacity),
                format!(
                    "GetCapacity, {what}: {} vs free space {free}",
                    got.available_capacity
                ),
            );
        }
    }
    c.finish();
}

// =======================================================================================
// Node rules 20-27
// =======================================================================================

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

// =======================================================================================
// GroupController rules 28-29
// =======================================================================================

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

// =======================================================================================
// Added after real clients were run (csi-sanity, Python grpcio)
// =======================================================================================

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

/// Rule 32 in one access type: mutable parameters are checked key by key before anything
/// is created or changed; one unsupported key refuses the whole request and applies
/// nothing, on a volume created with or without mutable parameters (a VolumeAttributeClass),
/// while it is published and holds data.
async fn mutable_parameters(access: Access) {
    let tag = format!("r32{}", &access.tag()[..1]);
    let Some(r) = Rig::start(&tag).await else {
        return;
    };
    let mut c = Checks::new();
    let vac = format!("vac-{}", access.tag());
    let plain = format!("plain-{}", access.tag());
    let create = |name: &str, params: &[(&str, &str)], mutable: &[(&str, &str)]| {
        let mut q = r.create_req(name, Some(64 * MIB), vec![access.cap()]);
        q.parameters = map(params);
        q.mutable_parameters = map(mutable);
        q
    };
    let modify = |id: &str, params: &[(&str, &str)]| csi::ControllerModifyVolumeRequest {
        volume_id: id.to_owned(),
        mutable_parameters: map(params),
        ..Default::default()
    };
    let context = |resp: Option<csi::ControllerGetVolumeResponse>| {
        resp.and_then(|g| g.volume).map(|v| {
            (
                v.capacity_bytes,
                sorted(v.volume_context.into_iter().collect()),
            )
        })
    };

    // CreateVolume: an unsupported key, alone or beside a supported one → INVALID_ARGUMENT,
    // a sentence naming the key and the keys that are mutable, and no volume.
    let files = r.csp_volume_files().len();
    for (what, mutable) in [
        ("an unknown key", vec![("XXX_FakeKey", "XXX_FakeValue")]),
        (
            "an unknown key beside a mutable one",
            vec![
                ("destroyOnDelete", "false"),
                ("XXX_FakeKey", "XXX_FakeValue"),
            ],
        ),
        ("an immutable key (thick)", vec![("thick", "true")]),
        ("volbridge's own description", vec![("description", "x")]),
    ] {
        if let Some(e) = c.code(r.create(create(&vac, &[], &mutable)).await, IA, what) {
            let key = mutable.last().unwrap().0;
            c.check(
                e.message().contains(&format!("'{key}'"))
                    && e.message().contains("destroyOnDelete, multiInitiator")
                    && e.message().contains("nothing was created"),
                format!(
                    "CreateVolume with {what}: the message names the key and the mutable keys: {}",
                    e.message()
                ),
            );
        }
    }
    c.eq(
        r.csp_volume_files().len(),
        files,
        "a refused CreateVolume made no image",
    );
    c.check(
        !r.volume_ids().await.contains(&vac),
        "a refused CreateVolume made no volume",
    );

    // With a VolumeAttributeClass: mutable parameters win over parameters; the retry with
    // the same request is the same volume, with other mutable values ALREADY_EXISTS.
    let q = create(
        &vac,
        &[("destroyOnDelete", "true")],
        &[("destroyOnDelete", "false")],
    );
    let Some(v) = c
        .ok(
            r.create(q.clone()).await,
            "CreateVolume with mutable parameters",
        )
        .and_then(|v| v.volume)
    else {
        c.finish();
        return;
    };
    c.eq(
        v.volume_context.get("destroyOnDelete").map(String::as_str),
        Some("false"),
        "mutable_parameters take precedence over parameters",
    );
    c.eq(
        r.create(q.clone())
            .await
            .ok()
            .and_then(|x| x.into_inner().volume)
            .map(|x| x.volume_id),
        Some(vac.clone()),
        "CreateVolume retried with the same mutable parameters",
    );
    c.code(
        r.create(create(
            &vac,
            &[("destroyOnDelete", "true")],
            &[("destroyOnDelete", "true")],
        ))
        .await,
        Code::AlreadyExists,
        "CreateVolume again with other mutable parameters",
    );
    r.create_ok(&plain, Some(64 * MIB), access).await;

    // ValidateVolumeCapabilities confirms supported mutable parameters only.
    let validate = |mutable: &[(&str, &str)]| csi::ValidateVolumeCapabilitiesRequest {
        volume_id: vac.clone(),
        volume_capabilities: vec![access.cap()],
        mutable_parameters: map(mutable),
        ..Default::default()
    };
    let answer = ok(
        t(r.ctrl()
            .validate_volume_capabilities(validate(&[("XXX_FakeKey", "v")])))
        .await,
        "ValidateVolumeCapabilities with an unknown mutable key",
    );
    c.check(
        answer.confirmed.is_none() && answer.message.contains("XXX_FakeKey"),
        format!("an unknown mutable key is not confirmed: {answer:?}"),
    );
    let answer = ok(
        t(r.ctrl()
            .validate_volume_capabilities(validate(&[("multiInitiator", "true")])))
        .await,
        "ValidateVolumeCapabilities with a mutable key",
    );
    c.eq(
        answer.confirmed.map(|x| x.mutable_parameters),
        Some(map(&[("multiInitiator", "true")])),
        "a mutable key is confirmed",
    );

    // Published, staged and holding data: refused modifications change nothing at all.
    let data = pattern(1 << 20, 32);
    let a = r.attach(&v, access, "pod-a").await;
    let file = match access {
        Access::Mount => Path::new(&a.target).join("data.bin").display().to_string(),
        Access::Block => a.target.clone(),
    };
    if access == Access::Mount {
        std::fs::write(&file, &data).unwrap();
    } else {
        write_at(&file, 0, &data).unwrap();
    }
    for id in [&vac, &plain] {
        let before = context(r.get_volume(id).await.ok().map(|x| x.into_inner()));
        // (what, parameters, refused for its key rather than by the CSP for its value)
        for (what, params, by_key) in [
            (
                "an unknown key",
                vec![("XXX_FakeKey", "XXX_FakeValue")],
                true,
            ),
            (
                "an unknown key beside mutable ones",
                vec![
                    ("destroyOnDelete", "true"),
                    ("multiInitiator", "true"),
                    ("XXX_FakeKey", "XXX_FakeValue"),
                ],
                true,
            ),
            ("an immutable key", vec![("accessProtocol", "iscsi")], true),
            (
                "a value the CSP refuses",
                vec![("destroyOnDelete", "maybe")],
                false,
            ),
        ] {
            let what = format!("ControllerModifyVolume {id} with {what}");
            let answer = t(r.ctrl().controller_modify_volume(modify(id, &params))).await;
            if let Some(e) = c.code(answer, IA, &what) {
                let key = params.last().unwrap().0;
                c.check(
                    !by_key
                        || (e.message().contains(&format!("'{key}'"))
                            && e.message().contains(&format!("volume '{id}'"))
                            && e.message().contains("nothing was changed")),
                    format!(
                        "{what}: names the key and the volume, says nothing was changed: {}",
                        e.message()
                    ),
                );
            }
            c.eq(
                context(r.get_volume(id).await.ok().map(|x| x.into_inner())),
                before.clone(),
                &format!("{what}: the volume is unchanged"),
            );
        }
    }
    let back = match access {
        Access::Mount => std::fs::read(&file).unwrap_or_default(),
        Access::Block => read_at(&file, 0, data.len()),
    };
    c.check(
        back == data,
        "the data is intact after the refused modifications",
    );

    // The supported keys apply, on both volumes, repeatedly.
    for id in [&vac, &plain] {
        for i in 1..=3 {
            c.ok(
                t(r.ctrl().controller_modify_volume(modify(
                    id,
                    &[("destroyOnDelete", "true"), ("multiInitiator", "true")],
                )))
                .await,
                &format!("ControllerModifyVolume {id} with mutable keys #{i}"),
            );
        }
        let ctx = r
            .get_volume(id)
            .await
            .ok()
            .and_then(|x| x.into_inner().volume)
            .map(|v| v.volume_context)
            .unwrap_or_default();
        c.eq(
            (
                ctx.get("destroyOnDelete").map(String::as_str),
                ctx.get("multiInitiator").map(String::as_str),
            ),
            (Some("true"), Some("true")),
            &format!("ControllerModifyVolume {id}: both keys applied"),
        );
    }
    r.detach(&a).await;
    r.delete_ok(&vac).await;
    r.delete_ok(&plain).await;
    r.assert_nothing_left();
    c.finish();
}

#[tokio::test]
async fn rule_32_mutable_parameters_mount() {
    if !common::require_root_and_tools("rule_32_mutable_parameters_mount") {
        return;
    }
    mutable_parameters(Access::Mount).await;
}

#[tokio::test]
async fn rule_32_mutable_parameters_block() {
    if !common::require_root_and_tools("rule_32_mutable_parameters_block") {
        return;
    }
    mutable_parameters(Access::Block).await;
}

#[tokio::test]
async fn rule_33_capacity_limits_checked_before_any_backend_call() {
    if !common::require_root_and_tools("rule_33_capacity_limits_checked_before_any_backend_call") {
        return;
    }
    let Some(r) = Rig::start("r33").await else {
        return;
    };
    let mut c = Checks::new();
    const LARGEST: i64 = 1 << 60;
    // A backend nobody listens for: an answer other than UNAVAILABLE came before any call.
    let unreachable = map(&[
        ("backend", "r33-unreachable"),
        ("serviceName", "127.0.0.1"),
        ("servicePort", &free_port().to_string()),
        ("username", "r33-user"),
        ("password", "r33-password"),
    ]);
    let too_large = [
        (i64::MAX, 0, "required_bytes 2^63-1"),
        (
            i64::MAX - 1,
            i64::MAX,
            "required_bytes 2^63-2, limit_bytes 2^63-1",
        ),
        (LARGEST + 1, 0, "required_bytes 2^60+1"),
        (0, i64::MAX, "limit_bytes only, 2^63-1"),
    ];
    for access in Access::BOTH {
        let tag = access.tag();
        let mk = |name: &str, required: i64, limit: i64, secrets: &Map| {
            let mut q = r.create_req(name, None, vec![access.cap()]);
            q.capacity_range = range(required, limit);
            q.secrets = secrets.clone();
            q
        };
        for (required, limit, what) in too_large {
            if limit == i64::MAX && required == 0 {
                // Only a limit: the default size (1 GiB) fits under it.
                continue;
            }
            for secrets in [Map::new(), unreachable.clone()] {
                let backend = if secrets.is_empty() {
                    "default"
                } else {
                    "unreachable"
                };
                let what = format!("CreateVolume {what} ({access:?}, {backend} backend)");
                if let Some(s) = c.code(
                    r.create(mk(&format!("huge-{tag}"), required, limit, &secrets))
                        .await,
                    Code::OutOfRange,
                    &what,
                ) {
                    c.check(
                        s.message().contains(&LARGEST.to_string()) && !s.message().contains("CSP"),
                        format!(
                            "{what}: the message names the largest size: {}",
                            s.message()
                        ),
                    );
                }
            }
        }
        c.code(
            r.create(mk(
                &format!("limit-below-{tag}"),
                10 * MIB + 1,
                10 * MIB + 100,
                &unreachable,
            ))
            .await,
            Code::OutOfRange,
            &format!("CreateVolume limit_bytes below the rounded size ({access:?})"),
        );
        if let Some(v) = c.ok(
            r.create(mk(&format!("limit-only-{tag}"), 0, i64::MAX, &Map::new()))
                .await,
            &format!("CreateVolume with only limit_bytes 2^63-1 ({access:?})"),
        ) {
            let v = v.volume.unwrap_or_default();
            c.eq(v.capacity_bytes, GIB, "the default size under a huge limit");
            r.delete_ok(&v.volume_id).await;
        }

        let name = format!("grow33-{tag}");
        r.create_ok(&name, Some(64 * MIB), access).await;
        let expand =
            |required: i64, limit: i64, secrets: &Map| csi::ControllerExpandVolumeRequest {
                volume_id: name.clone(),
                capacity_range: range(required, limit),
                volume_capability: Some(access.cap()),
                secrets: secrets.clone(),
            };
        for (required, limit, what) in too_large {
            if required == 0 {
                continue;
            }
            for secrets in [Map::new(), unreachable.clone()] {
                let what = format!("ControllerExpandVolume {what} ({access:?})");
                if let Some(s) = c.code(
                    t(r.ctrl()
                        .controller_expand_volume(expand(required, limit, &secrets)))
                    .await,
                    Code::OutOfRange,
                    &what,
                ) {
                    c.check(
                        s.message().contains(&LARGEST.to_string()),
                        format!(
                            "{what}: the message names the largest size: {}",
                            s.message()
                        ),
                    );
                }
            }
        }
        c.code(
            t(r.ctrl().controller_expand_volume(expand(
                64 * MIB + 1,
                64 * MIB + 100,
                &unreachable,
            )))
            .await,
            Code::OutOfRange,
            &format!("ControllerExpandVolume limit_bytes below the rounded size ({access:?})"),
        );
        let got = ok(r.get_volume(&name).await, "ControllerGetVolume");
        c.eq(
            got.volume.map(|v| v.capacity_bytes),
            Some(64 * MIB),
            &format!("size after the refused expansions ({access:?})"),
        );
        r.delete_ok(&name).await;
    }
    c.eq(r.volume_ids().await, Vec::<String>::new(), "volumes left");
    c.finish();
}

/// Two GetPluginInfo calls with this `:authority` on a fresh connection (see
/// `h2_unary_twice`); both must answer the driver name.
fn plugin_info_with_authority<S: std::io::Read + std::io::Write>(
    c: &mut Checks,
    conn: S,
    authority: &[u8],
    what: &str,
) {
    use prost::Message;
    let shown = String::from_utf8_lossy(authority);
    match h2_unary_twice(conn, authority, "/csi.v1.Identity/GetPluginInfo", &[]) {
        Ok(answers) => {
            for (i, a) in answers.iter().enumerate() {
                let name = csi::GetPluginInfoResponse::decode(a.as_slice()).map(|r| r.name);
                c.eq(
                    name.as_deref().map_err(|e| e.to_string()),
                    Ok(DRIVER),
                    &format!("{what}, :authority {shown:?}, call {}", i + 1),
                );
            }
        }
        Err(e) => c.check(false, format!("{what}, :authority {shown:?}: {e}")),
    }
}

#[tokio::test]
async fn rule_34_any_http2_authority_on_unix_and_tcp() {
    if !common::require_root_and_tools("rule_34_any_http2_authority_on_unix_and_tcp") {
        return;
    }
    let Some(r) = Rig::start("r34").await else {
        return;
    };
    let mut c = Checks::new();
    let socket = r.path("csi.sock").display().to_string();
    // gRPC C-core (Python, C++, Ruby, PHP): the path without its first slash, '/' as %2F.
    let c_core = socket.trim_start_matches('/').replace('/', "%2F");
    let connect = || {
        let s = std::os::unix::net::UnixStream::connect(&socket).expect("connect the CSI socket");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    for (authority, who) in [
        (c_core.as_bytes(), "gRPC C-core"),
        (socket.as_bytes(), "grpc-java"),
        (b"localhost".as_slice(), "grpc-go"),
        (b"", "an empty authority"),
        (b"unix:/run/x.sock?a b", "junk"),
    ] {
        plugin_info_with_authority(&mut c, connect(), authority, &format!("unix socket, {who}"));
    }
    // The server still answers tonic over the same socket afterwards.
    c.ok(
        t(r.ident().get_plugin_info(csi::GetPluginInfoRequest {})).await,
        "GetPluginInfo from tonic after the raw clients",
    );

    // The same over TCP.
    let dir = common::TempDir::new("csi-r34-tcp");
    let port = free_port();
    let _d = common::Daemon::start(
        dir.path(),
        &["--csi-endpoint", &format!("tcp://127.0.0.1:{port}")],
    );
    let connect = || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    return s;
                }
                Err(e) if Instant::now() > deadline => panic!("connect 127.0.0.1:{port}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    };
    let addr = format!("127.0.0.1:{port}");
    for (authority, who) in [
        (addr.as_bytes(), "host:port"),
        (c_core.as_bytes(), "a socket path, percent-encoded"),
        (socket.as_bytes(), "a socket path"),
        (b"".as_slice(), "an empty authority"),
    ] {
        plugin_info_with_authority(&mut c, connect(), authority, &format!("TCP, {who}"));
    }
    c.finish();
}

// =======================================================================================
// Rule 30: copy states (docs/copy-semantics.md rules 1-3 and 5 through CSI)
// =======================================================================================

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

// =======================================================================================
// The node lifecycle, end to end
// =======================================================================================

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
