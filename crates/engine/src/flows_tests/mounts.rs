//! The engine's own mount flows (CLI `volume mount`, `volume attach`): mounts of one volume
//! share one stage and one CSP grant, and the last one to go tears them down.

use super::{is_loop_attach, Rig};
use crate::node_records::engine_volume_key;
use crate::{MountVolume, Wait};
use std::path::PathBuf;
use volbridge_base::error::ErrorKind;
use volbridge_host::Call;

fn mount_at(name: &str, target: &std::path::Path) -> MountVolume {
    MountVolume {
        name: name.to_owned(),
        target: target.display().to_string(),
        ..MountVolume::default()
    }
}

#[tokio::test]
async fn two_mounts_share_one_stage_and_the_last_unmount_tears_it_down() {
    let rig = Rig::new().await;
    let v = rig.volume("shared").await;
    let staging = rig
        .engine
        .staging_root()
        .join(engine_volume_key(&v.backend, &v.id));
    let (a, b) = (rig.node_path("mnt/a"), rig.node_path("mnt/b"));

    let first = rig
        .engine
        .mount_volume(mount_at("shared", &a), Wait::No)
        .await
        .unwrap();
    assert!(first.formatted);
    let second = rig
        .engine
        .mount_volume(mount_at("shared", &b), Wait::No)
        .await
        .unwrap();
    assert!(!second.formatted);
    assert_eq!(first.device, second.device);
    // Again at the first target: success, nothing new.
    rig.engine
        .mount_volume(mount_at("shared", &a), Wait::No)
        .await
        .unwrap();
    assert_eq!(rig.count(is_loop_attach), 1);
    assert_eq!(rig.commands("mkfs").len(), 1);
    let targets: Vec<PathBuf> = rig.mount_calls().into_iter().map(|m| m.target).collect();
    assert_eq!(targets, [staging.clone(), a.clone(), b.clone()]);
    assert_eq!(rig.engine.attachments().unwrap().len(), 1);

    // The first unmount leaves the stage, the loop and the CSP grant to the other mount.
    rig.host.clear_calls();
    let a_arg = a.display().to_string();
    assert!(rig
        .engine
        .unmount_volume("shared", None, &a_arg, Wait::No)
        .await
        .unwrap());
    // The CLI leaves the user's directory in place.
    assert_eq!(rig.host.calls(), [Call::Unmount(a.clone())]);
    assert!(rig.is_mounted(&staging) && rig.is_mounted(&b));
    assert_eq!(rig.engine.attachments().unwrap().len(), 1);
    // A path no longer (or never) mounted is success, reported as "not mounted".
    assert!(!rig
        .engine
        .unmount_volume("shared", None, &a_arg, Wait::No)
        .await
        .unwrap());

    // The last one: its bind, then the stage, then the loop; the grant is ended.
    rig.host.clear_calls();
    let b_arg = b.display().to_string();
    assert!(rig
        .engine
        .unmount_volume("shared", None, &b_arg, Wait::No)
        .await
        .unwrap());
    let teardown: Vec<Call> = rig
        .host
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Unmount(_) | Call::LoopDetach(_)))
        .collect();
    assert_eq!(
        teardown,
        [
            Call::Unmount(b),
            Call::Unmount(staging.clone()),
            Call::LoopDetach(first.device)
        ]
    );
    assert!(rig.host.calls().contains(&Call::Remove(staging)));
    assert!(rig.loops_of(&v).is_empty());
    assert!(rig.engine.attachments().unwrap().is_empty());
    assert!(rig.engine.stages().unwrap().is_empty());
}

#[tokio::test]
async fn an_attached_device_is_pinned_past_the_last_unmount() {
    let rig = Rig::new().await;
    let v = rig.volume("pinned").await;
    let a = rig.node_path("mnt/pinned");
    let mounted = rig
        .engine
        .mount_volume(mount_at("pinned", &a), Wait::No)
        .await
        .unwrap();
    let attached = rig
        .engine
        .attach_device("pinned", None, false, Wait::No)
        .await
        .unwrap();
    assert_eq!(attached.device, mounted.device);
    let e = rig
        .engine
        .detach_device("pinned", None, Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(e.message.contains("unmount it first"), "{}", e.message);

    rig.host.clear_calls();
    let a_arg = a.display().to_string();
    rig.engine
        .unmount_volume("pinned", None, &a_arg, Wait::No)
        .await
        .unwrap();
    assert_eq!(rig.count(|c| matches!(c, Call::LoopDetach(_))), 0);
    assert_eq!(rig.loops_of(&v), std::slice::from_ref(&mounted.device));

    rig.engine
        .detach_device("pinned", None, Wait::No)
        .await
        .unwrap();
    assert!(rig.loops_of(&v).is_empty());
    assert!(rig.engine.attachments().unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_mount_leaves_no_stage_and_ends_the_grant() {
    let rig = Rig::new().await;
    let v = rig.volume("foreign").await;
    rig.host.add_signature(rig.image_of(&v), "xfs");
    let mut req = mount_at("foreign", &rig.node_path("mnt/foreign"));
    req.fs_type = "ext4".into();
    let e = rig.engine.mount_volume(req, Wait::No).await.unwrap_err();
    assert!(e.message.contains("never reformats"), "{}", e.message);
    assert!(rig.commands("mkfs").is_empty());
    assert!(rig.loops_of(&v).is_empty());
    assert!(rig.engine.stages().unwrap().is_empty());
    assert!(rig.engine.attachments().unwrap().is_empty());
    // Nothing is left for the reconciler either (no intent, no grant, no record).
    let report = rig.engine.reconcile().await;
    assert!(report.actions.is_empty(), "{:?}", report.actions);
}

#[tokio::test]
async fn a_read_only_mount_joins_a_read_write_volume_and_block_is_refused() {
    let rig = Rig::new().await;
    rig.volume("data").await;
    let (rw, ro, raw) = (
        rig.node_path("mnt/rw"),
        rig.node_path("mnt/ro"),
        rig.node_path("mnt/raw"),
    );
    rig.engine
        .mount_volume(mount_at("data", &rw), Wait::No)
        .await
        .unwrap();
    // A read-only view of the same stage: one loop device, one grant.
    let mut read_only = mount_at("data", &ro);
    read_only.read_only = true;
    let m = rig.engine.mount_volume(read_only, Wait::No).await.unwrap();
    assert!(m.read_only);
    assert_eq!(rig.count(is_loop_attach), 1);
    assert_eq!(rig.engine.attachments().unwrap().len(), 1);
    // The raw device while the filesystem is mounted: refused by name, place and command,
    // before anything is touched.
    rig.host.clear_calls();
    let mut block = mount_at("data", &raw);
    block.block = true;
    let e = rig.engine.mount_volume(block, Wait::No).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition, "{}", e.message);
    assert_eq!(e.reason, Some(volbridge_base::Reason::InUse));
    assert!(
        e.message
            .contains(&format!("volbridge volume unmount data {}", rw.display())),
        "{}",
        e.message
    );
    assert!(rig.host.calls().is_empty(), "{:?}", rig.host.calls());
    // Read-write while the volume is attached read-only is refused the same way.
    for t in [&rw, &ro] {
        let t = t.display().to_string();
        rig.engine
            .unmount_volume("data", None, &t, Wait::No)
            .await
            .unwrap();
    }
    let mut read_only = mount_at("data", &ro);
    read_only.read_only = true;
    rig.engine.mount_volume(read_only, Wait::No).await.unwrap();
    let e = rig
        .engine
        .mount_volume(mount_at("data", &rw), Wait::No)
        .await
        .unwrap_err();
    assert!(
        e.message
            .contains("a volume is attached read-only or read-write as a whole"),
        "{}",
        e.message
    );
}
