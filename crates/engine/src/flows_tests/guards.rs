//! The engine's guards are the one lock table every front end goes through: a call made
//! with `Wait::No` (CSI) on a busy object is Aborted at once and touches nothing, and a
//! check the front end used to make before calling (a published volume is not deleted)
//! runs under the same guard as the operation.

use super::{filesystem, publish_request, Rig};
use crate::Wait;
use std::path::PathBuf;
use volbridge_base::error::ErrorKind;

#[tokio::test]
async fn a_busy_volume_is_aborted_at_once_and_left_untouched() {
    let rig = Rig::new().await;
    let v = rig.volume("busy").await;
    let req = rig.stage_request(&v, filesystem(), false).await;
    let target = rig.node_path("pods/a/busy");

    let held = rig
        .engine
        .node_guard(&req.volume_key, Wait::No)
        .await
        .unwrap();
    rig.host.clear_calls();
    let aborted = |r: volbridge_base::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.kind, ErrorKind::Aborted, "{what}: {e:?}");
        assert!(e.message.contains("in progress"), "{what}: {}", e.message);
    };
    aborted(
        rig.engine.node_stage(req.clone(), Wait::No).await.map(drop),
        "NodeStage",
    );
    aborted(
        rig.engine
            .node_publish(publish_request(&v, &target, false), Wait::No)
            .await,
        "NodePublish",
    );
    let target_text = target.display().to_string();
    aborted(
        rig.engine
            .node_unstage(&req.volume_key, &req.staging_path, Wait::No)
            .await,
        "NodeUnstage",
    );
    aborted(
        rig.engine
            .forget_target(&req.volume_key, &target_text, Wait::No)
            .await,
        "forgetting a target",
    );
    assert!(rig.host.calls().is_empty(), "{:?}", rig.host.calls());
    drop(held);

    rig.engine.node_stage(req.clone(), Wait::No).await.unwrap();
    let staging = PathBuf::from(&req.staging_path);
    assert!(rig.is_mounted(&staging));
    rig.engine
        .node_unstage(&req.volume_key, &req.staging_path, Wait::No)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_granted_volume_is_not_deleted_and_a_busy_one_is_aborted() {
    let rig = Rig::new().await;
    let v = rig.volume("granted").await;
    rig.stage_request(&v, filesystem(), false).await;

    let e = rig
        .engine
        .delete_ungranted_volume(&v.name, None, Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(
        e.message.contains("'granted' is still published to node"),
        "{}",
        e.message
    );

    let held = rig
        .engine
        .guard(&v.backend, &v.name, Wait::No)
        .await
        .unwrap();
    let e = rig
        .engine
        .revoke(&v.name, None, None, Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Aborted);
    let e = rig
        .engine
        .delete_ungranted_volume(&v.name, None, Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Aborted);
    drop(held);

    rig.engine
        .revoke(&v.name, None, None, Wait::No)
        .await
        .unwrap();
    rig.engine
        .delete_ungranted_volume(&v.name, None, Wait::No)
        .await
        .unwrap();
    assert!(!rig.image_of(&v).exists());
}
