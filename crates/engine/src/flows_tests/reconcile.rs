//! The node reconciler against records left half-done (a crash) and a kernel that lost
//! state (a reboot): each pass repairs what the records say, and the pass after it finds
//! nothing to do and touches nothing.

use super::{csi_key, filesystem, is_loop_attach, publish_request, Rig};
use crate::node_records::{Phase, PublishRecord, StageRecord, FORMATS, PUBLISHES, STAGES};
use crate::{DockerCreate, DockerSettings, ReconcileReport, Volume, Wait};
use std::path::{Path, PathBuf};
use std::time::Duration;
use volbridge_host::{Call, Host};

/// Stages `v` as a filesystem (CSI) and, with a target, publishes it there.
async fn staged(rig: &Rig, v: &Volume, target: Option<&Path>) -> PathBuf {
    let req = rig.stage_request(v, filesystem(), false).await;
    rig.engine.node_stage(req.clone(), Wait::No).await.unwrap();
    if let Some(t) = target {
        rig.engine
            .node_publish(publish_request(v, t, false), Wait::No)
            .await
            .unwrap();
    }
    PathBuf::from(req.staging_path)
}

fn set_stage_phase(rig: &Rig, v: &Volume, phase: Phase) {
    let store = rig.engine.store();
    let mut r: StageRecord = store.get(STAGES, &csi_key(v)).unwrap().unwrap();
    r.phase = phase;
    store.put(STAGES, &csi_key(v), &r).unwrap();
}

fn set_publish_phase(rig: &Rig, target: &Path, phase: Phase) {
    let store = rig.engine.store();
    let key = target.display().to_string();
    let mut r: PublishRecord = store.get(PUBLISHES, &key).unwrap().unwrap();
    r.phase = phase;
    store.put(PUBLISHES, &key, &r).unwrap();
}

/// The pass after a repair: nothing to report, nothing touched on the host.
async fn assert_quiet_pass(rig: &Rig) {
    rig.host.clear_calls();
    let report = rig.engine.reconcile().await;
    assert!(report.actions.is_empty(), "{:?}", report.actions);
    assert_eq!(report.pending, 0);
    assert!(rig.host.calls().is_empty(), "{:?}", rig.host.calls());
}

fn said(report: &ReconcileReport, words: &str) -> bool {
    report.actions.iter().any(|a| a.contains(words))
}

#[tokio::test]
async fn a_reboot_is_repaired_stage_then_publish_without_formatting() {
    let mut rig = Rig::new().await;
    let v = rig.volume("rebooted").await;
    let target = rig.node_path("pods/r/vol");
    let staging = staged(&rig, &v, Some(&target)).await;
    let device = rig.loops_of(&v).pop().unwrap();
    // The reboot: mounts and the loop device are gone, the records stay.
    rig.host.unmount(&target).unwrap();
    rig.host.unmount(&staging).unwrap();
    rig.host.loop_detach(&device).unwrap();
    rig.restart();
    rig.host.clear_calls();

    let report = rig.engine.reconcile().await;
    assert_eq!(report.pending, 0, "{:?}", report.actions);
    assert_eq!(
        report
            .actions
            .iter()
            .filter(|a| a.contains("restored"))
            .count(),
        2,
        "{:?}",
        report.actions
    );
    assert_eq!(rig.count(is_loop_attach), 1);
    assert_eq!(
        rig.commands("blkid").len(),
        1,
        "the filesystem is found again"
    );
    assert!(rig.commands("mkfs").is_empty());
    let targets: Vec<PathBuf> = rig.mount_calls().into_iter().map(|m| m.target).collect();
    assert_eq!(
        targets,
        [staging.clone(), target.clone()],
        "stage before bind"
    );
    assert!(rig.is_mounted(&staging) && rig.is_mounted(&target));
    assert_quiet_pass(&rig).await;
}

#[tokio::test]
async fn a_restore_never_formats_a_device_that_came_back_blank() {
    let mut rig = Rig::new().await;
    let v = rig.volume("wiped").await;
    let staging = staged(&rig, &v, None).await;
    rig.host.unmount(&staging).unwrap();
    rig.host.loop_detach(&rig.loops_of(&v)[0]).unwrap();
    // The image is blank now (e.g. the backend lost it): the filesystem is not remade.
    rig.host.add_image(rig.image_of(&v), v.size_bytes);
    rig.restart();
    rig.host.clear_calls();
    for _ in 0..2 {
        let report = rig.engine.reconcile().await;
        assert_eq!(report.pending, 1);
        assert!(
            said(&report, "a restore never formats"),
            "{:?}",
            report.actions
        );
    }
    assert!(rig.commands("mkfs").is_empty());
    assert!(
        rig.loops_of(&v).is_empty(),
        "the device it attached is detached"
    );
    let record = rig.engine.stage(&csi_key(&v)).unwrap().unwrap();
    assert_eq!(
        record.phase,
        Phase::Ready,
        "kept for a human or the next pass"
    );
}

#[tokio::test]
async fn interrupted_set_ups_are_rolled_back_and_tear_downs_finished() {
    let mut rig = Rig::new().await;
    let (a, b) = (rig.volume("half-up").await, rig.volume("half-down").await);
    let a_staging = staged(&rig, &a, None).await;
    let b_target = rig.node_path("pods/h/vol");
    let b_staging = staged(&rig, &b, Some(&b_target)).await;
    // Crashes: after a's stage mounted but before it was recorded ready; in the middle of
    // b's unpublish, before the bind was gone.
    set_stage_phase(&rig, &a, Phase::Creating);
    set_publish_phase(&rig, &b_target, Phase::Removing);
    rig.restart();
    rig.host.clear_calls();

    let report = rig.engine.reconcile().await;
    assert_eq!(report.pending, 0, "{:?}", report.actions);
    assert!(said(&report, "rolled back") && said(&report, "finished removing"));
    assert!(rig.engine.stage(&csi_key(&a)).unwrap().is_none());
    assert!(rig.loops_of(&a).is_empty() && !rig.is_mounted(&a_staging));
    assert!(rig.engine.publishes().unwrap().is_empty());
    assert!(!rig.is_mounted(&b_target) && !rig.host.file_exists(&b_target));
    // b itself stays staged: only its publish was being removed.
    assert!(rig.is_mounted(&b_staging));
    let unmounts = rig.unmount_calls();
    assert_eq!(unmounts.len(), 2);
    assert!(unmounts.contains(&a_staging) && unmounts.contains(&b_target));
    assert_eq!(rig.count(|c| matches!(c, Call::LoopDetach(_))), 1);
    assert_quiet_pass(&rig).await;
}

#[tokio::test]
async fn a_publish_whose_stage_is_gone_is_dropped() {
    let rig = Rig::new().await;
    let v = rig.volume("unstaged").await;
    let target = rig.node_path("pods/u/vol");
    staged(&rig, &v, Some(&target)).await;
    rig.host.unmount(&target).unwrap();
    rig.engine.store().remove(STAGES, &csi_key(&v)).unwrap();
    rig.host.clear_calls();
    let report = rig.engine.reconcile().await;
    assert!(said(&report, "no longer staged"), "{:?}", report.actions);
    assert!(rig.engine.publishes().unwrap().is_empty());
    assert!(rig.mount_calls().is_empty(), "never bound again");
}

#[tokio::test]
async fn orphaned_loops_and_staging_mounts_are_cleared_on_the_first_pass() {
    let rig = Rig::new().await;
    let kept = rig.volume("kept").await;
    let orphan = rig.volume("orphan").await;
    staged(&rig, &kept, None).await;
    let kept_device = rig.loops_of(&kept).pop().unwrap();
    let orphan_image = rig.image_of(&orphan);
    rig.host
        .add_loop("/dev/loop40", &orphan_image.display().to_string(), "7:40")
        .add_loop("/dev/loop41", "/srv/not-ours.img", "7:41");
    let ghost = rig.engine.staging_root().join("ghost");
    rig.host.add_dir(&ghost);
    rig.host
        .add_mount("/dev/loop42", &ghost.display().to_string(), "ext4", "7:42");
    rig.host.clear_calls();

    let report = rig.engine.reconcile().await;
    assert!(
        said(&report, "detached orphaned loop device /dev/loop40"),
        "{:?}",
        report.actions
    );
    assert!(said(&report, "unmounted orphaned staging mount"));
    assert_eq!(
        rig.host.calls(),
        [
            Call::Unmount(ghost),
            Call::LoopDetach(PathBuf::from("/dev/loop40"))
        ]
    );
    // A stage's own loop and a loop on a file outside the CSP's roots are not ours to clear.
    let left: Vec<PathBuf> = rig
        .host
        .loops()
        .unwrap()
        .into_iter()
        .map(|l| l.device)
        .collect();
    assert_eq!(left, [kept_device, PathBuf::from("/dev/loop41")]);
    assert_quiet_pass(&rig).await;
}

#[tokio::test]
async fn a_periodic_pass_clears_an_orphan_only_once_seen_twice() {
    let rig = Rig::new().await;
    let orphan = rig.volume("late-orphan").await;
    rig.engine.reconcile().await;
    // Appears after the start-up pass: maybe a stage that is just starting.
    rig.host.add_loop(
        "/dev/loop50",
        &rig.image_of(&orphan).display().to_string(),
        "7:50",
    );
    rig.host.clear_calls();
    let seen = rig.engine.reconcile().await;
    assert!(seen.actions.is_empty(), "{:?}", seen.actions);
    assert!(rig.host.calls().is_empty());
    let cleared = rig.engine.reconcile().await;
    assert!(said(&cleared, "/dev/loop50"), "{:?}", cleared.actions);
    assert_eq!(
        rig.host.calls(),
        [Call::LoopDetach(PathBuf::from("/dev/loop50"))]
    );
    assert_quiet_pass(&rig).await;
}

#[tokio::test]
async fn a_format_marker_left_after_a_finished_stage_is_cleared() {
    let rig = Rig::new().await;
    let v = rig.volume("marked").await;
    staged(&rig, &v, None).await;
    // A crash right after the stage was recorded ready, before the marker went.
    let marker = serde_json::json!({"device_was_blank": true});
    rig.engine
        .store()
        .put(FORMATS, &csi_key(&v), &marker)
        .unwrap();
    let report = rig.engine.reconcile().await;
    assert!(
        said(&report, "cleared the format marker"),
        "{:?}",
        report.actions
    );
    let left: Option<serde_json::Value> = rig.engine.store().get(FORMATS, &csi_key(&v)).unwrap();
    assert!(left.is_none());
    assert_quiet_pass(&rig).await;
}

#[tokio::test]
async fn a_grant_taken_for_a_mount_that_never_staged_is_ended() {
    let rig = Rig::new().await;
    rig.volume("granted").await;
    // A crash between the CSP grant of `volume mount` and its stage.
    rig.engine
        .attach_volume("granted", None, false, Wait::No)
        .await
        .unwrap();
    let report = rig.engine.reconcile().await;
    assert!(
        said(&report, "CSP grant of 'granted'"),
        "{:?}",
        report.actions
    );
    assert!(rig.engine.attachments().unwrap().is_empty());
    assert_quiet_pass(&rig).await;
}

#[tokio::test]
async fn a_docker_volume_left_mounted_with_no_reference_is_torn_down() {
    let mut rig = Rig::new().await;
    let settings = DockerSettings {
        mount_base: Some(rig.node_path("docker")),
        unstage_delay: Duration::from_secs(3600),
    };
    rig.engine.docker_open(settings.clone()).unwrap();
    let v = rig
        .engine
        .docker_create(DockerCreate {
            name: "crashed".into(),
            ..DockerCreate::default()
        })
        .await
        .unwrap();
    rig.mirror_image(&v.volume_id, v.size_bytes);
    rig.engine
        .docker_mount("crashed", "c1", None)
        .await
        .unwrap();
    rig.engine.docker_unmount("crashed", "c1").await.unwrap();
    // The daemon dies inside the unstage delay: the teardown it armed never runs.
    rig.restart();
    rig.engine.docker_open(settings).unwrap();
    rig.host.clear_calls();
    let report = rig.engine.reconcile().await;
    assert!(
        said(&report, "unmounted and detached"),
        "{:?}",
        report.actions
    );
    assert_eq!(rig.unmount_calls().len(), 2);
    assert_eq!(rig.count(|c| matches!(c, Call::LoopDetach(_))), 1);
    let record = rig.engine.docker_get("crashed").unwrap().unwrap();
    assert_eq!(record.state(), "available");
    assert!(rig.engine.attachments().unwrap().is_empty());
    assert_quiet_pass(&rig).await;
    // Still usable: mounting again finds the filesystem made the first time.
    rig.engine
        .docker_mount("crashed", "c2", None)
        .await
        .unwrap();
    assert!(rig.commands("mkfs").is_empty());
}

#[tokio::test]
async fn a_reboot_restores_a_read_only_block_publish_through_a_new_view() {
    let mut rig = Rig::new().await;
    let v = rig.volume("ro-block").await;
    let req = rig.stage_request(&v, crate::Access::Block, false).await;
    rig.engine.node_stage(req, Wait::No).await.unwrap();
    let target = rig.node_path("pods/v/dev");
    rig.engine
        .node_publish(publish_request(&v, &target, true), Wait::No)
        .await
        .unwrap();
    rig.host.unmount(&target).unwrap();
    for l in rig.host.loops().unwrap() {
        rig.host.loop_detach(&l.device).unwrap();
    }
    rig.restart();
    rig.host.clear_calls();
    let report = rig.engine.reconcile().await;
    assert_eq!(report.pending, 0, "{:?}", report.actions);
    // The device first, then a read-only view over it, which the target binds.
    let device = rig.loops_of(&v).pop().unwrap();
    let attaches: Vec<Call> = rig
        .host
        .calls()
        .into_iter()
        .filter(is_loop_attach)
        .collect();
    assert_eq!(attaches.len(), 2);
    assert_eq!(
        attaches[1],
        Call::LoopAttach {
            file: device,
            read_only: true
        }
    );
    assert!(rig.mount_calls().iter().all(|m| m.target == target));
    // The view is in use: later passes leave it.
    assert_quiet_pass(&rig).await;
    assert_quiet_pass(&rig).await;
}

/// A stage rolled back by the reconciler removes the staging directory it made: its
/// transitional record says it would make it before it does.
#[tokio::test]
async fn a_staging_directory_made_by_a_crashed_stage_is_not_left_behind() {
    let mut rig = Rig::new().await;
    let v = rig.volume("crashed-stage").await;
    let staging = staged(&rig, &v, None).await;
    // The record as stage_locked writes it before touching the host, left by a crash after
    // the host work (directory made, device attached and mounted).
    let store = rig.engine.store();
    let mut r: StageRecord = store.get(STAGES, &csi_key(&v)).unwrap().unwrap();
    assert!(r.made_staging_dir);
    r.phase = Phase::Creating;
    r.fs_type = None;
    store.put(STAGES, &csi_key(&v), &r).unwrap();
    rig.restart();
    let report = rig.engine.reconcile().await;
    assert!(said(&report, "rolled back"), "{:?}", report.actions);
    assert!(!rig.is_mounted(&staging) && rig.loops_of(&v).is_empty());
    assert!(
        !rig.host.file_exists(&staging),
        "the directory the crashed stage made is still there"
    );
}
