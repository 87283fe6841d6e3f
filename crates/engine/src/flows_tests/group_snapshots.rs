//! A group snapshot is one engine operation over two CSP steps (a volume group, then its
//! snapshot group), with an intent record between them: a crash at either step of a create
//! or a delete is rolled back or finished by the reconciler, against the real local CSP.

use super::Rig;
use crate::records::intent::{self, Intent};
use crate::Wait;
use volbridge_base::ErrorKind;

const BACKEND: &str = super::BACKEND;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// What a crash leaves of an operation that had written its intent.
fn leave_intent(rig: &Rig, intent: Intent) {
    rig.engine
        .store()
        .put(intent::COLLECTION, &intent::new_key(), &intent)
        .unwrap();
}

fn intents(rig: &Rig) -> usize {
    rig.engine
        .store()
        .list::<Intent>(intent::COLLECTION)
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_group_snapshot_is_made_once_and_another_member_set_is_refused() {
    let rig = Rig::new().await;
    rig.volume("a").await;
    rig.volume("b").await;
    rig.volume("c").await;
    let members = names(&["b", "a"]);
    let first = rig
        .engine
        .create_group_snapshot("gs", &members, None)
        .await
        .unwrap();
    assert_eq!(first.snapshots.len(), 2);
    assert_eq!(intents(&rig), 0, "no intent outlives a finished create");
    let again = rig
        .engine
        .create_group_snapshot("gs", &names(&["a", "b"]), None)
        .await
        .unwrap();
    assert_eq!(
        again.id, first.id,
        "a retry answers the same group snapshot"
    );
    let other = rig
        .engine
        .create_group_snapshot("gs", &names(&["a", "c"]), None)
        .await
        .unwrap_err();
    assert_eq!(other.kind, ErrorKind::AlreadyExists, "{other:?}");
    let missing = rig
        .engine
        .create_group_snapshot("gs2", &names(&["a", "nosuch"]), None)
        .await
        .unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);
    assert_eq!(missing.message, "volume 'nosuch' does not exist");
    assert!(rig
        .engine
        .find_volume_group("gs2", None)
        .await
        .unwrap()
        .is_none());

    rig.engine
        .delete_group_snapshot(&first.id, None)
        .await
        .unwrap();
    assert!(rig
        .engine
        .find_volume_group("gs", None)
        .await
        .unwrap()
        .is_none());
    assert_eq!(intents(&rig), 0);
    // Deleting what is gone is done.
    rig.engine
        .delete_group_snapshot(&first.id, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_create_cut_after_the_volume_group_is_rolled_back_at_start() {
    let mut rig = Rig::new().await;
    rig.volume("a").await;
    rig.volume("b").await;
    // What a crash between the two steps leaves: the intent, and a volume group holding
    // the members, without a snapshot group.
    leave_intent(
        &rig,
        Intent::CreateGroupSnapshot {
            backend: BACKEND.into(),
            name: "gs".into(),
            made_volume_group: true,
        },
    );
    rig.engine
        .create_volume_group("gs", &names(&["a", "b"]), None, Wait::No)
        .await
        .unwrap();
    rig.restart();
    let report = rig.engine.reconcile().await;
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.contains("group snapshot 'gs'") && a.contains("removed the volume group")),
        "{:?}",
        report.actions
    );
    assert!(rig
        .engine
        .find_volume_group("gs", None)
        .await
        .unwrap()
        .is_none());
    assert_eq!(intents(&rig), 0);
    // The members left the group: the CO's retry makes the group snapshot from scratch.
    let made = rig
        .engine
        .create_group_snapshot("gs", &names(&["a", "b"]), None)
        .await
        .unwrap();
    assert_eq!(made.snapshots.len(), 2);
}

#[tokio::test]
async fn a_create_cut_after_both_steps_is_found_complete() {
    let mut rig = Rig::new().await;
    rig.volume("a").await;
    let made = rig
        .engine
        .create_group_snapshot("gs", &names(&["a"]), None)
        .await
        .unwrap();
    leave_intent(
        &rig,
        Intent::CreateGroupSnapshot {
            backend: BACKEND.into(),
            name: "gs".into(),
            made_volume_group: true,
        },
    );
    rig.restart();
    let report = rig.engine.reconcile().await;
    assert!(
        report.actions.iter().any(|a| a.contains("had completed")),
        "{:?}",
        report.actions
    );
    let kept = rig.engine.find_snapshot_group("gs", None).await.unwrap();
    assert_eq!(kept.map(|g| g.id), Some(made.id));
    assert_eq!(intents(&rig), 0);
}

#[tokio::test]
async fn a_delete_cut_after_the_snapshot_group_is_finished_at_start() {
    let mut rig = Rig::new().await;
    rig.volume("a").await;
    let made = rig
        .engine
        .create_group_snapshot("gs", &names(&["a"]), None)
        .await
        .unwrap();
    leave_intent(
        &rig,
        Intent::DeleteGroupSnapshot {
            backend: BACKEND.into(),
            name: "gs".into(),
            id: made.id.clone(),
        },
    );
    rig.engine
        .delete_snapshot_group(&made.id, None)
        .await
        .unwrap();
    rig.restart();
    let report = rig.engine.reconcile().await;
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.contains("deletion of group snapshot 'gs'") && a.contains("finished")),
        "{:?}",
        report.actions
    );
    assert!(rig
        .engine
        .find_volume_group("gs", None)
        .await
        .unwrap()
        .is_none());
    assert_eq!(intents(&rig), 0);
}
