//! Docker's refcounted mount table: references counted per mount ID over one mount, the
//! last one (at once, or after the unstage delay) tearing it down; references a reboot or a
//! lost Unmount left behind; other mount namespaces that still hold the volume.

use super::{is_loop_attach, Rig};
use crate::{DockerCreate, DockerSettings};
use std::time::Duration;
use volbridge_base::error::ErrorKind;
use volbridge_base::Reason;
use volbridge_host::{Call, Host};

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
    assert_eq!(refused.reason, Some(Reason::InUse));

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
    assert_eq!(rig.count(|c| *c == Call::RemoveEmptyDir(p1.clone())), 1);
    assert!(!rig.host.file_exists(&p1), "the empty mount point is gone");
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
    // The record says "available" only once the whole teardown (unmounts, detach, CSP
    // grant, mount point) is done.
    let deadline = std::time::Instant::now() + delay * 10;
    let state = || e.docker_get("cycle").unwrap().unwrap().state();
    while state() != "available" && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state(), "available", "torn down after the delay");
    assert_eq!(rig.unmount_calls().len(), 2);
}

#[tokio::test]
async fn release_drops_stale_references_and_unmounts() {
    let rig = docker_rig(Duration::ZERO).await;
    docker_volume(&rig, "stale").await;
    let e = &rig.engine;
    e.docker_mount("stale", "gone-1", None).await.unwrap();
    e.docker_mount("stale", "gone-1", None).await.unwrap();
    e.docker_mount("stale", "gone-2", None).await.unwrap();
    // No other mount namespace holds it (the fake says so): no `force` needed.
    let one = e
        .docker_release("stale", Some("gone-1"), false)
        .await
        .unwrap();
    assert_eq!((one.dropped, one.remaining, one.unmounted), (2, 1, false));
    assert!(rig.unmount_calls().is_empty());
    let all = e.docker_release("stale", None, false).await.unwrap();
    assert_eq!((all.dropped, all.remaining, all.unmounted), (1, 0, true));
    assert_eq!(rig.unmount_calls().len(), 2);
    assert_eq!(rig.count(|c| matches!(c, Call::LoopDetach(_))), 1);
    // Nothing left to release: a no-op.
    let again = e.docker_release("stale", None, false).await.unwrap();
    assert_eq!((again.dropped, again.unmounted), (0, false));
}

/// A mount point the user left a file in is kept: the teardown removes only empty ones.
#[tokio::test]
async fn a_mount_point_that_is_not_empty_is_kept() {
    let rig = docker_rig(Duration::ZERO).await;
    docker_volume(&rig, "kept").await;
    let e = &rig.engine;
    let point = e.docker_mount("kept", "c1", None).await.unwrap();
    rig.host.add_file(point.join("written-by-hand"), "data");
    e.docker_unmount("kept", "c1").await.unwrap();
    assert_eq!(rig.count(|c| *c == Call::RemoveEmptyDir(point.clone())), 1);
    assert!(rig.host.file_exists(&point.join("written-by-hand")));
    let record = e.docker_get("kept").unwrap().unwrap();
    assert_eq!(
        record.state(),
        "available",
        "unmounted and detached all the same"
    );
}

/// What a reboot leaves: the records, not the mounts or loop devices.
fn reboot(rig: &mut Rig, boot_id: Option<&str>) {
    for m in rig.host.mounts().unwrap().into_iter().rev() {
        rig.host.unmount(&m.target).unwrap();
    }
    for l in rig.host.loops().unwrap() {
        rig.host.loop_detach(&l.device).unwrap();
    }
    rig.host.set_boot_id(boot_id);
    rig.restart();
}

#[tokio::test]
async fn references_from_before_a_reboot_are_dropped_and_the_mount_point_removed() {
    let mut rig = docker_rig(Duration::ZERO).await;
    docker_volume(&rig, "booted").await;
    let point = rig.engine.docker_mount("booted", "c1", None).await.unwrap();
    reboot(&mut rig, Some("00000000-0000-4000-8000-000000000002"));
    let settings = DockerSettings {
        mount_base: Some(rig.node_path("docker")),
        unstage_delay: Duration::ZERO,
    };
    rig.engine.docker_open(settings).unwrap();
    let record = rig.engine.docker_get("booted").unwrap().unwrap();
    assert_eq!(record.total_refs(), 0, "no container survives a reboot");
    rig.host.clear_calls();

    let report = rig.engine.reconcile().await;
    let said = |words: &str| report.actions.iter().any(|a| a.contains(words));
    assert!(
        said("boot ID changed: dropped 1 Docker mount reference(s)"),
        "{:?}",
        report.actions
    );
    assert!(said("unmounted and detached"), "{:?}", report.actions);
    assert_eq!(rig.count(is_loop_attach), 0, "nothing restored for Docker");
    assert_eq!(rig.count(|c| *c == Call::RemoveEmptyDir(point.clone())), 1);
    assert!(!rig.host.file_exists(&point));
    let record = rig.engine.docker_get("booted").unwrap().unwrap();
    assert_eq!(record.state(), "available");
    assert!(rig.engine.attachments().unwrap().is_empty());
}

#[tokio::test]
async fn references_survive_a_restart_and_a_kernel_without_a_boot_id() {
    let mut rig = docker_rig(Duration::ZERO).await;
    docker_volume(&rig, "running").await;
    rig.engine
        .docker_mount("running", "c1", None)
        .await
        .unwrap();
    let settings = DockerSettings {
        mount_base: Some(rig.node_path("docker")),
        unstage_delay: Duration::ZERO,
    };
    for boot_id in [
        Some("00000000-0000-4000-8000-000000000001"),
        None,
        Some("00000000-0000-4000-8000-000000000001"),
    ] {
        // A daemon restart, not a reboot: the kernel keeps the mounts.
        rig.host.set_boot_id(boot_id);
        rig.restart();
        rig.engine.docker_open(settings.clone()).unwrap();
        let record = rig.engine.docker_get("running").unwrap().unwrap();
        assert_eq!(record.total_refs(), 1, "boot ID {boot_id:?}");
        rig.host.clear_calls();
        let report = rig.engine.reconcile().await;
        assert!(report.actions.is_empty(), "{:?}", report.actions);
        assert!(rig.host.calls().is_empty(), "{:?}", rig.host.calls());
    }
}

#[tokio::test]
async fn release_is_refused_while_another_mount_namespace_holds_the_volume() {
    let rig = docker_rig(Duration::ZERO).await;
    docker_volume(&rig, "held").await;
    let e = &rig.engine;
    let point = e.docker_mount("held", "c1", None).await.unwrap();
    let dev = rig
        .host
        .mounts()
        .unwrap()
        .into_iter()
        .rfind(|m| m.target == point)
        .unwrap()
        .dev;
    // A container's namespace keeps the volume mounted after Docker lost track of it.
    rig.host.add_namespace_mount(4242, &dev);
    rig.host.add_namespace_mount(4343, "8:99");

    let refused = e.docker_release("held", None, false).await.unwrap_err();
    assert_eq!(refused.kind, ErrorKind::FailedPrecondition);
    assert_eq!(refused.reason, Some(Reason::InUse));
    assert!(
        refused.message.contains("process 4242"),
        "{}",
        refused.message
    );
    assert_eq!(e.docker_get("held").unwrap().unwrap().total_refs(), 1);
    assert!(rig.unmount_calls().is_empty());

    let forced = e.docker_release("held", None, true).await.unwrap();
    assert_eq!((forced.dropped, forced.unmounted), (1, true));
    assert_eq!(rig.unmount_calls().len(), 2);
}

/// A volume made outside Docker (the CLI's `create_volume`) is Docker's too: a Create
/// without options adopts it as it is, one whose options ask for something else is refused
/// naming it; Docker mounts it and removes it; the CLI's delete drops Docker's record.
#[tokio::test]
async fn volumes_made_by_other_front_ends_are_adopted() {
    let rig = docker_rig(Duration::ZERO).await;
    let e = &rig.engine;
    let made = rig.volume("clivol").await;
    let refused = e
        .docker_create(DockerCreate {
            name: "clivol".into(),
            size: Some(1 << 30),
            options: [("size".to_owned(), "1Gi".to_owned())].into(),
            ..DockerCreate::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.kind, ErrorKind::AlreadyExists);
    assert_eq!(
        refused.message,
        "\"clivol\" on backend \"local\" (64Mi, made outside Docker) does not match -o size=1Gi; leave out the -o options to use it as it is, or choose another name"
    );
    assert!(e.docker_get("clivol").unwrap().is_none());
    // Docker's implicit create (`docker run -v clivol:/d`): no options, the default size.
    let adopted = e
        .docker_create(DockerCreate {
            name: "clivol".into(),
            fs_type: "ext4".into(),
            ..DockerCreate::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (adopted.volume_id.as_str(), adopted.size_bytes),
        (made.id.as_str(), made.size_bytes)
    );
    assert_eq!(adopted.fs_type, "", "whatever the volume holds");
    // The same Create again, and one naming the volume's own size, find the record.
    for size in [None, Some("64Mi")] {
        let options = size
            .map(|s| [("size".to_owned(), s.to_owned())].into())
            .unwrap_or_default();
        e.docker_create(DockerCreate {
            name: "clivol".into(),
            size: size.map(|_| 64 << 20),
            options,
            ..DockerCreate::default()
        })
        .await
        .unwrap();
    }
    let p = e.docker_mount("clivol", "id-a", None).await.unwrap();
    assert_eq!(
        rig.commands("mkfs").len(),
        1,
        "a blank volume gets the default"
    );
    e.docker_unmount("clivol", "id-a").await.unwrap();
    assert!(!rig.host.file_exists(&p));
    // Removed through Docker: gone from the backend.
    e.docker_remove("clivol").await.unwrap();
    assert!(e.docker_get("clivol").unwrap().is_none());
    let gone = e.get_volume("clivol", None).await.unwrap_err();
    assert_eq!(gone.kind, ErrorKind::NotFound);

    // Adopted by a lookup (Get), then deleted by the CLI: Docker's record goes with it.
    let other = rig.volume("other").await;
    let record = e.docker_adopt("other", None).await.unwrap();
    assert_eq!(record.volume_id, other.id);
    e.delete_volume("other", None, crate::Wait::No)
        .await
        .unwrap();
    assert!(e.docker_get("other").unwrap().is_none());
    // Removed through Docker without ever being looked up there: gone too.
    rig.volume("unseen").await;
    e.docker_remove("unseen").await.unwrap();
    assert_eq!(
        e.get_volume("unseen", None).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
}
