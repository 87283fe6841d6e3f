//! CSI-style node flows, one step at a time: stage, publish, unpublish, unstage of a
//! filesystem volume and of a raw block volume, each step repeated, read-only publishes, and a single writer kept to one target.

use super::{csi_key, filesystem, is_loop_attach, is_loop_detach, publish_request, Rig};
use crate::node_records::{Phase, PublishRecord, StageRecord, PUBLISHES, STAGES};
use crate::Wait;
use crate::{Access, PublishVolume};
use std::path::PathBuf;
use volbridge_base::error::ErrorKind;
use volbridge_host::Call;

#[tokio::test]
async fn filesystem_volume_full_cycle_with_repeats() {
    let rig = Rig::new().await;
    let v = rig.volume("fs1").await;
    let req = rig.stage_request(&v, filesystem(), false).await;
    let staging = PathBuf::from(&req.staging_path);
    let image = rig.image_of(&v);

    let staged = rig.engine.node_stage(req.clone(), Wait::No).await.unwrap();
    assert!(staged.formatted);
    assert_eq!(staged.fs_type.as_deref(), Some("ext4"));
    // A new sparse image is known blank: no blkid, one mkfs on the device just attached.
    assert!(rig.host.calls().contains(&Call::LoopAttach {
        file: image.clone(),
        read_only: false
    }));
    assert_eq!(rig.count(is_loop_attach), 1);
    assert!(
        rig.commands("blkid").is_empty(),
        "{:?}",
        rig.host.commands()
    );
    let device = staged.device.display().to_string();
    assert_eq!(rig.commands("mkfs").len(), 1);
    assert!(rig.commands("mkfs")[0].ends_with(&format!(" {device}")));
    let mounts = rig.mount_calls();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        (&mounts[0].source, &mounts[0].target),
        (&staged.device, &staging)
    );
    assert_eq!(mounts[0].fs_type.as_deref(), Some("ext4"));
    let record: StageRecord = rig
        .engine
        .store()
        .get(STAGES, &csi_key(&v))
        .unwrap()
        .unwrap();
    assert_eq!(record.phase, Phase::Ready);
    assert_eq!(record.fs_type.as_deref(), Some("ext4"));
    assert!(record.made_staging_dir, "the fake had no staging dir");

    // Staging again: the kernel already shows it; nothing runs, nothing is mounted.
    rig.host.clear_calls();
    let again = rig.engine.node_stage(req.clone(), Wait::No).await.unwrap();
    assert!(!again.formatted);
    assert_eq!(again.device, staged.device);
    assert!(rig.host.commands().is_empty(), "{:?}", rig.host.commands());
    assert!(rig.mount_calls().is_empty() && rig.count(is_loop_attach) == 0);

    // Publish: one bind of the staging mount; again: nothing.
    let target = rig.node_path("pods/a/volumes/fs1");
    rig.host.clear_calls();
    for _ in 0..2 {
        rig.engine
            .node_publish(publish_request(&v, &target, false), Wait::No)
            .await
            .unwrap();
    }
    let binds = rig.mount_calls();
    assert_eq!(binds.len(), 1, "{binds:?}");
    assert_eq!((&binds[0].source, &binds[0].target), (&staging, &target));
    assert!(binds[0].flags.bind && !binds[0].flags.remount && !binds[0].flags.read_only);

    // Unstage is refused while a publish stands, and touches nothing.
    rig.host.clear_calls();
    let key = csi_key(&v);
    let staging_arg = staging.display().to_string();
    let e = rig
        .engine
        .node_unstage(&key, &staging_arg, Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(e.message.contains("still published"), "{}", e.message);
    assert!(rig.host.calls().is_empty());

    // Unpublish unmounts, then removes the target (CSI); again: nothing to do.
    let target_arg = target.display().to_string();
    for _ in 0..2 {
        rig.engine
            .node_unpublish(&key, &target_arg, Wait::No)
            .await
            .unwrap();
    }
    assert_eq!(
        rig.host.calls(),
        [Call::Unmount(target.clone()), Call::Remove(target.clone())]
    );
    assert!(rig.is_mounted(&staging));

    // Unstage: unmount, detach, then the directory the stage made; again: nothing.
    rig.host.clear_calls();
    for _ in 0..2 {
        rig.engine
            .node_unstage(&key, &staging_arg, Wait::No)
            .await
            .unwrap();
    }
    let teardown: Vec<Call> = rig
        .host
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Unmount(_) | Call::LoopDetach(_) | Call::Remove(_)))
        .collect();
    assert_eq!(
        teardown,
        [
            Call::Unmount(staging.clone()),
            Call::LoopDetach(staged.device.clone()),
            Call::Remove(staging.clone()),
        ]
    );
    assert!(rig.loops_of(&v).is_empty());
    assert!(!rig.host.file_exists(&staging));
    assert!(rig.engine.stage(&key).unwrap().is_none());

    // A later stage finds the filesystem made the first time: probed, never formatted.
    rig.host.clear_calls();
    let restaged = rig.engine.node_stage(req, Wait::No).await.unwrap();
    assert!(!restaged.formatted);
    assert_eq!(rig.commands("blkid").len(), 1);
    assert!(rig.commands("mkfs").is_empty());
}

#[tokio::test]
async fn block_volume_full_cycle_with_repeats() {
    let rig = Rig::new().await;
    let v = rig.volume("blk1").await;
    let req = rig.stage_request(&v, Access::Block, false).await;
    let key = csi_key(&v);
    let staging = PathBuf::from(&req.staging_path);

    for _ in 0..2 {
        let staged = rig.engine.node_stage(req.clone(), Wait::No).await.unwrap();
        assert_eq!(staged.fs_type, None);
        assert!(!staged.formatted);
    }
    // Attached once; a raw device is never probed, formatted or mounted.
    assert_eq!(rig.count(is_loop_attach), 1);
    assert!(rig.host.commands().is_empty(), "{:?}", rig.host.commands());
    assert!(rig.mount_calls().is_empty());
    assert!(!rig.host.file_exists(&staging));
    let device = rig.loops_of(&v).pop().expect("attached");

    // Published on a file: parent made, file made, device node bound; once.
    let target = rig.node_path("pods/b/volumeDevices/blk1");
    rig.host.clear_calls();
    for _ in 0..2 {
        rig.engine
            .node_publish(publish_request(&v, &target, false), Wait::No)
            .await
            .unwrap();
    }
    assert!(rig.host.calls().contains(&Call::CreateFile(target.clone())));
    let binds = rig.mount_calls();
    assert_eq!(binds.len(), 1, "{binds:?}");
    assert_eq!((&binds[0].source, &binds[0].target), (&device, &target));
    assert!(binds[0].flags.bind);

    rig.host.clear_calls();
    let target_arg = target.display().to_string();
    for _ in 0..2 {
        rig.engine
            .node_unpublish(&key, &target_arg, Wait::No)
            .await
            .unwrap();
    }
    assert_eq!(
        rig.host.calls(),
        [Call::Unmount(target.clone()), Call::Remove(target.clone())]
    );

    // Nothing is mounted at a block stage: unstage only detaches.
    rig.host.clear_calls();
    for _ in 0..2 {
        rig.engine
            .node_unstage(&key, &req.staging_path, Wait::No)
            .await
            .unwrap();
    }
    assert_eq!(rig.host.calls(), [Call::LoopDetach(device)]);
    assert!(rig.loops_of(&v).is_empty());
    assert!(rig.engine.stage(&key).unwrap().is_none());
}

#[tokio::test]
async fn read_only_filesystem_publish_is_a_read_only_remount_of_the_bind() {
    let rig = Rig::new().await;
    let v = rig.volume("ro1").await;
    let req = rig.stage_request(&v, filesystem(), false).await;
    let staging = PathBuf::from(&req.staging_path);
    rig.engine.node_stage(req, Wait::No).await.unwrap();
    let target = rig.node_path("pods/c/ro1");
    rig.host.clear_calls();
    for _ in 0..2 {
        rig.engine
            .node_publish(publish_request(&v, &target, true), Wait::No)
            .await
            .unwrap();
    }
    let mounts = rig.mount_calls();
    assert_eq!(
        mounts.len(),
        2,
        "a bind, then its read-only remount: {mounts:?}"
    );
    assert_eq!(mounts[0].source, staging);
    assert!(mounts[0].flags.bind && !mounts[0].flags.read_only);
    assert_eq!(mounts[1].target, target);
    assert!(mounts[1].flags.bind && mounts[1].flags.remount && mounts[1].flags.read_only);
    // The staging mount stays writable; only the target is read-only.
    use volbridge_host::Host;
    let table = rig.host.mounts().unwrap();
    let options = |p: &PathBuf| {
        table
            .iter()
            .find(|m| &m.target == p)
            .unwrap()
            .options
            .clone()
    };
    assert_eq!(
        (options(&staging), options(&target)),
        ("rw".into(), "ro".into())
    );

    // The same target read-write is another publish: refused, nothing touched.
    rig.host.clear_calls();
    let e = rig
        .engine
        .node_publish(publish_request(&v, &target, false), Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    assert!(rig.mount_calls().is_empty());
}

#[tokio::test]
async fn read_only_block_publish_binds_a_read_only_view_detached_at_unpublish() {
    let rig = Rig::new().await;
    let v = rig.volume("robk").await;
    let req = rig.stage_request(&v, Access::Block, false).await;
    rig.engine.node_stage(req, Wait::No).await.unwrap();
    let device = rig.loops_of(&v).pop().unwrap();
    let target = rig.node_path("pods/d/robk");
    rig.host.clear_calls();
    for _ in 0..2 {
        rig.engine
            .node_publish(publish_request(&v, &target, true), Wait::No)
            .await
            .unwrap();
    }
    // One view per target, found again on the repeat: a read-only loop over the device.
    let views: Vec<Call> = rig
        .host
        .calls()
        .into_iter()
        .filter(is_loop_attach)
        .collect();
    assert_eq!(
        views,
        [Call::LoopAttach {
            file: device.clone(),
            read_only: true
        }]
    );
    let binds = rig.mount_calls();
    assert_eq!(binds.len(), 2, "bind and read-only remount: {binds:?}");
    let view = binds[0].source.clone();
    assert_ne!(view, device, "the view is bound, not the device");

    rig.host.clear_calls();
    rig.engine
        .node_unpublish(&csi_key(&v), &target.display().to_string(), Wait::No)
        .await
        .unwrap();
    assert_eq!(
        rig.host.calls(),
        [
            Call::Unmount(target.clone()),
            Call::Remove(target),
            Call::LoopDetach(view)
        ]
    );
    assert_eq!(rig.loops_of(&v), [device], "the staged device stays");
}

#[tokio::test]
async fn a_second_stage_with_other_settings_is_refused() {
    let rig = Rig::new().await;
    let v = rig.volume("twice").await;
    let req = rig.stage_request(&v, filesystem(), false).await;
    rig.engine.node_stage(req.clone(), Wait::No).await.unwrap();
    rig.host.clear_calls();
    let elsewhere = crate::StageVolume {
        staging_path: rig.node_path("staging/other").display().to_string(),
        ..req.clone()
    };
    let as_block = crate::StageVolume {
        access: Access::Block,
        ..req.clone()
    };
    let other_fs = crate::StageVolume {
        access: Access::Mount {
            fs_type: "xfs".into(),
            mount_options: Vec::new(),
        },
        ..req
    };
    for other in [elsewhere, as_block, other_fs] {
        let e = rig.engine.node_stage(other, Wait::No).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists, "{}", e.message);
    }
    assert!(rig.host.calls().is_empty(), "{:?}", rig.host.calls());
    assert_eq!(rig.count(is_loop_detach), 0);
}

/// Stats are asked at the staging path or a target the volume is published at; a target
/// that vanished behind the records (the fake's file system: no real path is looked at) is
/// NotFound, with what to do about it.
#[tokio::test]
async fn stats_at_the_staging_path_or_a_target_that_still_exists() {
    use volbridge_host::Host;
    let rig = Rig::new().await;
    let v = rig.volume("counted").await;
    let req = rig.stage_request(&v, filesystem(), false).await;
    rig.engine.node_stage(req.clone(), Wait::No).await.unwrap();
    let target = rig.node_path("pods/p/counted");
    rig.engine
        .node_publish(publish_request(&v, &target, false), Wait::No)
        .await
        .unwrap();
    let key = csi_key(&v);
    for path in [req.staging_path.clone(), target.display().to_string()] {
        let stats = rig.engine.node_stats(&key, &path).await.unwrap();
        assert!(stats.healthy, "{path}: {}", stats.message);
        assert_eq!(stats.usage.map(|u| u.total_bytes), Some(1 << 30));
    }
    let elsewhere = rig.node_path("pods/q/counted").display().to_string();
    let unknown = rig.engine.node_stats(&key, &elsewhere).await.unwrap_err();
    assert_eq!(unknown.kind, ErrorKind::NotFound);

    // Something removed the target behind volbridge's back.
    rig.host.unmount(&target).unwrap();
    rig.host.remove(&target).unwrap();
    let gone = rig
        .engine
        .node_stats(&key, &target.display().to_string())
        .await
        .unwrap_err();
    assert_eq!(gone.kind, ErrorKind::NotFound);
    assert!(gone.message.contains("does not exist"), "{}", gone.message);
}

#[tokio::test]
async fn a_single_writer_is_published_at_one_target_only() {
    let rig = Rig::new().await;
    let v = rig.volume("sw1").await;
    let req = rig.stage_request(&v, filesystem(), false).await;
    rig.engine.node_stage(req, Wait::No).await.unwrap();
    let first = rig.node_path("pods/a/sw1");
    let second = rig.node_path("pods/b/sw1");
    let single = |target: &PathBuf| PublishVolume {
        single_writer: true,
        ..publish_request(&v, target, false)
    };
    rig.engine
        .node_publish(single(&first), Wait::No)
        .await
        .unwrap();
    rig.host.clear_calls();
    for req in [single(&second), publish_request(&v, &second, false)] {
        let e = rig.engine.node_publish(req, Wait::No).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition, "{e:?}");
        assert!(e.message.contains("'sw1'"), "{}", e.message);
    }
    assert!(rig.host.calls().is_empty(), "{:?}", rig.host.calls());
    // The same target again is the idempotent answer, not a second writer; the same target
    // with other access is an incompatible publish.
    rig.engine
        .node_publish(single(&first), Wait::No)
        .await
        .unwrap();
    let e = rig
        .engine
        .node_publish(publish_request(&v, &first, false), Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists, "{e:?}");
}

#[tokio::test]
async fn a_publish_recorded_before_the_single_writer_flag_takes_either_access_and_learns_it() {
    let rig = Rig::new().await;
    let v = rig.volume("old1").await;
    let req = rig.stage_request(&v, filesystem(), false).await;
    rig.engine.node_stage(req, Wait::No).await.unwrap();
    let target = rig.node_path("pods/a/old1");
    rig.engine
        .node_publish(publish_request(&v, &target, false), Wait::No)
        .await
        .unwrap();
    // The record as an older volbridge wrote it: no `single_writer` at all.
    let key = target.display().to_string();
    let store = rig.engine.store();
    let record: PublishRecord = store.get(PUBLISHES, &key).unwrap().unwrap();
    let mut old = serde_json::to_value(&record).unwrap();
    old.as_object_mut().unwrap().remove("single_writer");
    let old: PublishRecord = serde_json::from_value(old).unwrap();
    assert_eq!(old.single_writer, None);
    store.put(PUBLISHES, &key, &old).unwrap();
    // kubelet publishing a ReadWriteOncePod volume again after the upgrade.
    rig.engine
        .node_publish(
            PublishVolume {
                single_writer: true,
                ..publish_request(&v, &target, false)
            },
            Wait::No,
        )
        .await
        .unwrap();
    // The record learned the flag: a publish at a second target is now refused.
    let learned: PublishRecord = store.get(PUBLISHES, &key).unwrap().unwrap();
    assert_eq!(learned.single_writer, Some(true));
    let second = rig.node_path("pods/b/old1");
    let e = rig
        .engine
        .node_publish(publish_request(&v, &second, false), Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition, "{e:?}");
}
