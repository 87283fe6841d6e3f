//! Controller service, volume calls: rules 1-3 for CreateVolume, DeleteVolume and
//! ControllerPublish/Unpublish, rules 5-13 and 16-19, mutable parameters (32) and capacity
//! limits (33). Copy states (rule 30) are in [`copy_states`]; the snapshot calls of the
//! controller service are in `crate::snapshots`.

mod copy_states;
mod slow_backend;

use crate::common;
use crate::csi_support::*;
use crate::{sorted, MissingFields, IA};
use csi::volume_capability::access_mode::Mode;
use std::path::Path;
use tonic::Code;

/// Rule 1 for the volume calls of the controller service: each required field left out
/// answers INVALID_ARGUMENT, and the refused calls change nothing.
#[tokio::test]
async fn rule_01_missing_fields_invalid_argument() {
    if !common::require_root_and_tools("controller::rule_01_missing_fields_invalid_argument") {
        return;
    }
    let Some(f) = MissingFields::start("r01-ctrl").await else {
        return;
    };
    let MissingFields { r, v, .. } = &f;
    let mount = Access::Mount.cap();
    let mut c = Checks::new();

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
    let good_pub = r.cpublish_req(v, Access::Mount, false);
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

    f.finish(c).await;
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
    // No mutable parameters asks for no change (csi-sanity's default run): the volume is
    // looked up all the same.
    c.code(
        t(r.ctrl().controller_modify_volume(modify("no-such", &[]))).await,
        Code::NotFound,
        "unknown volume, no mutable parameters",
    );
    r.create_ok("mod", Some(64 * MIB), Access::Mount).await;
    c.ok(
        t(r.ctrl().controller_modify_volume(modify("mod", &[]))).await,
        "ControllerModifyVolume with no mutable parameters",
    );
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
