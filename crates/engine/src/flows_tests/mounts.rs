//! The engine's own mount flows (CLI `volume mount`, `volume attach`) and Docker's
//! refcounted mount table: mounts of one volume share one stage and one CSP grant, and the
//! last one to go tears them down.

use super::{is_loop_attach, Rig};
use crate::mount_table::IN_USE;
use crate::node_records::engine_volume_key;
use crate::{DockerCreate, DockerSettings, MountVolume, Wait};
use std::path::PathBuf;
use std::time::Duration;
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

/// The rig's engine with Docker's table open; mount points under the rig's node dir.
async fn docker_rig(delay: Duration) -> Rig {
    let rig = Rig::new().await;
    rig.engine
        .docker_open(DockerSettings {
            mount_base: Some(rig.node_path("docker")),
            unstage_delay: delay,
        })
        .unwrap();
    rig
}

async fn docker_volume(rig: &Rig, name: &str) {
    let v = rig
        .engine
        .docker_create(DockerCreate {
            name: name.to_owned(),
            size: Some(64 << 20),
            ..DockerCreate::default()
        })
        .await
        .unwrap();
    rig.mirror_image(&v.volume_id, v.size_bytes);
}

#[tokio::test]
async fn docker_references_count_per_mount_id_and_the_last_one_unmounts() {
    let rig = docker_rig(Duration::ZERO).await;
    docker_volume(&rig, "web").await;
    let e = &rig.engine;
    let p1 = e.docker_mount("web", "id-a", None).await.unwrap();
    let p2 = e.docker_mount("web", "id-b", None).await.unwrap();
    let p3 = e.docker_mount("web", "id-a", None).await.unwrap();
    assert!(p1 == p2 && p2 == p3);
    assert_eq!(rig.count(is_loop_attach), 1);
    assert_eq!(rig.commands("mkfs").len(), 1);
    let record = e.docker_get("web").unwrap().unwrap();
    assert_eq!(record.refs.get("id-a"), Some(&2));
    assert_eq!(record.total_refs(), 3);
    assert_eq!(record.mountpoint(), Some(p1.as_path()));
    // Removing a volume a container uses is refused, marked as "in use".
    let refused = e.docker_remove("web").await.unwrap_err();
    assert_eq!(refused.field.as_deref(), Some(IN_USE));

    rig.host.clear_calls();
    e.docker_unmount("web", "id-b").await.unwrap();
    e.docker_unmount("web", "unknown-id").await.unwrap();
    e.docker_unmount("web", "id-a").await.unwrap();
    assert!(
        rig.host.calls().is_empty(),
        "references left: nothing unmounted"
    );
    assert_eq!(e.docker_get("web").unwrap().unwrap().total_refs(), 1);

    e.docker_unmount("web", "id-a").await.unwrap();
    let record = e.docker_get("web").unwrap().unwrap();
    assert_eq!(
        (record.state(), record.mounted_at.clone()),
        ("available", None)
    );
    assert_eq!(rig.unmount_calls().first(), Some(&p1));
    assert_eq!(
        rig.unmount_calls().len(),
        2,
        "the mount point, then the stage"
    );
    assert_eq!(rig.count(|c| matches!(c, Call::LoopDetach(_))), 1);
    assert!(e.attachments().unwrap().is_empty());
    e.docker_remove("web").await.unwrap();
    assert!(e.docker_get("web").unwrap().is_none());
}

#[tokio::test]
async fn a_mount_within_the_unstage_delay_reuses_the_stage() {
    // Long enough that the mount below always comes first on a loaded machine.
    let delay = Duration::from_secs(1);
    let rig = docker_rig(delay).await;
    docker_volume(&rig, "cycle").await;
    let e = &rig.engine;
    e.docker_mount("cycle", "copy-up", None).await.unwrap();
    e.docker_unmount("cycle", "copy-up").await.unwrap();
    // Zero references, still attached while the delay runs.
    assert_eq!(e.docker_get("cycle").unwrap().unwrap().state(), "attached");
    e.docker_mount("cycle", "run", None).await.unwrap();
    tokio::time::sleep(delay * 2).await;
    // The armed teardown was cancelled by the mount: one attach, nothing torn down.
    assert_eq!(rig.count(is_loop_attach), 1);
    assert!(rig.unmount_calls().is_empty());

    e.docker_unmount("cycle", "run").await.unwrap();
    assert!(rig.unmount_calls().is_empty(), "not before the delay");
    let deadline = std::time::Instant::now() + delay * 10;
    while rig.unmount_calls().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rig.unmount_calls().len(), 2, "torn down after the delay");
    assert_eq!(e.docker_get("cycle").unwrap().unwrap().state(), "available");
}

#[tokio::test]
async fn release_drops_stale_references_and_unmounts() {
    let rig = docker_rig(Duration::ZERO).await;
    docker_volume(&rig, "stale").await;
    let e = &rig.engine;
    e.docker_mount("stale", "gone-1", None).await.unwrap();
    e.docker_mount("stale", "gone-1", None).await.unwrap();
    e.docker_mount("stale", "gone-2", None).await.unwrap();
    // `force`: the check for other mount namespaces reads the real /proc, where an
    // unrelated loop device with the fake's numbers could be mounted.
    let one = e
        .docker_release("stale", Some("gone-1"), true)
        .await
        .unwrap();
    assert_eq!((one.dropped, one.remaining, one.unmounted), (2, 1, false));
    assert!(rig.unmount_calls().is_empty());
    let all = e.docker_release("stale", None, true).await.unwrap();
    assert_eq!((all.dropped, all.remaining, all.unmounted), (1, 0, true));
    assert_eq!(rig.unmount_calls().len(), 2);
    assert_eq!(rig.count(|c| matches!(c, Call::LoopDetach(_))), 1);
    // Nothing left to release: a no-op.
    let again = e.docker_release("stale", None, true).await.unwrap();
    assert_eq!((again.dropped, again.unmounted), (0, false));
}
