//! The stage never formats a device that holds something: a filesystem is mounted as it
//! is, another type or a foreign signature is refused, and a probe that fails is an error,
//! not "blank". Only volbridge's own interrupted mkfs may be redone.

use super::{csi_key, filesystem, is_loop_detach, Rig};
use crate::node_records::FORMATS;
use crate::Access;
use crate::{StageVolume, Wait};
use std::path::PathBuf;
use volbridge_base::error::ErrorKind;
use volbridge_host::CmdOutput;

/// After a refused stage: the device this call attached is gone again, no record, no mount
/// and no staging directory are left.
fn assert_nothing_left(rig: &Rig, v: &crate::Volume, req: &StageVolume) {
    assert!(rig.loops_of(v).is_empty(), "detached again");
    assert_eq!(rig.count(is_loop_detach), 1);
    assert!(rig.engine.stage(&csi_key(v)).unwrap().is_none());
    assert!(rig.mount_calls().is_empty());
    assert!(!rig.host.file_exists(&PathBuf::from(&req.staging_path)));
}

#[tokio::test]
async fn an_existing_filesystem_is_mounted_as_it_is() {
    let rig = Rig::new().await;
    let v = rig.volume("old-xfs").await;
    rig.host.add_signature(rig.image_of(&v), "xfs");
    let req = rig.stage_request(&v, filesystem(), false).await;
    let staged = rig.engine.node_stage(req, Wait::No).await.unwrap();
    assert!(!staged.formatted);
    assert_eq!(staged.fs_type.as_deref(), Some("xfs"));
    assert_eq!(rig.commands("blkid").len(), 1);
    assert!(rig.commands("mkfs").is_empty());
    assert_eq!(rig.mount_calls()[0].fs_type.as_deref(), Some("xfs"));
    // No owner or mode is imposed on a filesystem that was not made now.
    assert_eq!(
        rig.count(|c| matches!(
            c,
            volbridge_host::Call::Chown { .. } | volbridge_host::Call::Chmod { .. }
        )),
        0
    );
}

#[tokio::test]
async fn another_filesystem_than_asked_for_is_refused_never_reformatted() {
    let rig = Rig::new().await;
    let v = rig.volume("old-ext4").await;
    rig.host.add_signature(rig.image_of(&v), "ext4");
    let mut req = rig.stage_request(&v, filesystem(), false).await;
    req.access = Access::Mount {
        fs_type: "xfs".into(),
        mount_options: Vec::new(),
    };
    let e = rig
        .engine
        .node_stage(req.clone(), Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(e.message.contains("never reformats"), "{}", e.message);
    assert!(rig.commands("mkfs").is_empty());
    assert_eq!(
        rig.host.signature(&rig.image_of(&v)).as_deref(),
        Some("ext4")
    );
    assert_nothing_left(&rig, &v, &req);
}

#[tokio::test]
async fn a_foreign_signature_is_refused() {
    let rig = Rig::new().await;
    let v = rig.volume("lvm").await;
    // Data on the image, so that it is probed; blkid sees an LVM member there.
    rig.host.add_signature(rig.image_of(&v), "LVM2_member");
    rig.host.script(
        "blkid",
        &[],
        CmdOutput::ok("TYPE=LVM2_member\nUSAGE=raid\n"),
    );
    let req = rig.stage_request(&v, filesystem(), false).await;
    let e = rig
        .engine
        .node_stage(req.clone(), Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(e.message.contains("LVM2_member"), "{}", e.message);
    assert!(rig.commands("mkfs").is_empty());
    assert_nothing_left(&rig, &v, &req);
}

#[tokio::test]
async fn a_failed_probe_is_an_error_not_a_blank_device() {
    let rig = Rig::new().await;
    let v = rig.volume("unprobed").await;
    rig.host.add_signature(rig.image_of(&v), "ext4");
    rig.host.script(
        "blkid",
        &[],
        CmdOutput::failed(4, "blkid: cannot open device"),
    );
    let req = rig.stage_request(&v, filesystem(), false).await;
    let e = rig
        .engine
        .node_stage(req.clone(), Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal);
    assert!(e.message.contains("cannot probe"), "{}", e.message);
    assert_eq!(rig.commands("blkid").len(), 1);
    assert!(rig.commands("mkfs").is_empty());
    // Nothing marks the device as being formatted either.
    assert!(rig
        .engine
        .store()
        .get::<serde_json::Value>(FORMATS, &csi_key(&v))
        .unwrap()
        .is_none());
    assert_nothing_left(&rig, &v, &req);
}

#[tokio::test]
async fn a_blank_volume_staged_read_only_is_not_formatted() {
    let rig = Rig::new().await;
    let v = rig.volume("blank-ro").await;
    let req = rig.stage_request(&v, filesystem(), true).await;
    let e = rig
        .engine
        .node_stage(req.clone(), Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(e.message.contains("read-only"), "{}", e.message);
    assert!(rig.commands("mkfs").is_empty());
    assert_nothing_left(&rig, &v, &req);
}

#[tokio::test]
async fn only_our_own_interrupted_mkfs_is_redone_with_force() {
    let rig = Rig::new().await;
    let v = rig.volume("half-made").await;
    let image = rig.image_of(&v);
    // mkfs dies half-way (it wrote part of a signature), then works.
    rig.host
        .script("mkfs.ext4", &[], CmdOutput::failed(1, "mkfs.ext4: killed"))
        .script("mkfs.ext4", &[], CmdOutput::ok(""));
    let req = rig.stage_request(&v, filesystem(), false).await;
    let e = rig
        .engine
        .node_stage(req.clone(), Wait::No)
        .await
        .unwrap_err();
    assert!(e.message.contains("killed"), "{}", e.message);
    rig.host.add_signature(&image, "ext4");
    let key = csi_key(&v);
    assert!(
        rig.engine
            .store()
            .get::<serde_json::Value>(FORMATS, &key)
            .unwrap()
            .is_some(),
        "the marker written before mkfs outlives its failure"
    );

    // The marker allows overwriting the half-made signature: probed, then forced.
    rig.host.clear_calls();
    let staged = rig.engine.node_stage(req, Wait::No).await.unwrap();
    assert!(staged.formatted);
    assert_eq!(rig.commands("blkid").len(), 1);
    let mkfs = rig.commands("mkfs");
    assert_eq!(mkfs.len(), 1);
    assert!(mkfs[0].contains(" -F "), "{mkfs:?}");
    // Complete and mounted: from now on it may hold data, so the marker is gone.
    assert!(rig
        .engine
        .store()
        .get::<serde_json::Value>(FORMATS, &key)
        .unwrap()
        .is_none());
}
