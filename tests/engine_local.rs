//! The engine against a real local CSP over HTTP, in-process: idempotency under
//! concurrency, attachments, groups, intent replay after a simulated crash.

mod common;

use common::TempDir;
use std::collections::BTreeMap;
use std::sync::Arc;
use volbridge::engine::{
    intent, Backend, Backends, CreateVolume, Engine, EngineConfig, StateStore, VolumeSource, Wait,
};
use volbridge::provider::{ClientOptions, Credentials, CspClient, SnapshotCreate};
use volbridge::ErrorKind;
use volbridge_local_csp::{LocalCsp, LocalCspConfig};

struct Rig {
    engine: Arc<Engine>,
    client: CspClient,
    state: std::path::PathBuf,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: TempDir,
}

async fn rig(tag: &str) -> Rig {
    let dir = TempDir::new(tag);
    let csp = LocalCsp::open(LocalCspConfig::new(
        dir.path().join("csp"),
        "u",
        "engine-test-pw",
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener_addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(csp.serve(listener, async move {
        let _ = stopped.await;
    }));
    let creds = Credentials::service("local", listener_addr, "u", "engine-test-pw").unwrap();
    let client = CspClient::new(creds, ClientOptions::default()).unwrap();
    let mut backends = Backends::new("local");
    backends.add(Backend {
        name: "local".into(),
        client: client.clone(),
        embedded: true,
    });
    let state = dir.path().join("state");
    let engine = Engine::new(
        backends,
        StateStore::open(&state).unwrap(),
        EngineConfig::default(),
    )
    .unwrap();
    Rig {
        engine: Arc::new(engine),
        client,
        state,
        _stop: stop,
        _dir: dir,
    }
}

fn create(name: &str, size: Option<u64>) -> CreateVolume {
    CreateVolume {
        name: name.into(),
        size,
        ..CreateVolume::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_creates_make_one_volume() {
    let rig = rig("dupes").await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let engine = rig.engine.clone();
        tasks.spawn(async move {
            engine
                .create_volume(create("same", Some(1 << 30)), Wait::Bounded)
                .await
        });
    }
    let ids: Vec<String> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("create").id)
        .collect();
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    let all = rig.engine.list_volumes(None).await.unwrap();
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn defaults_and_refusals() {
    let rig = rig("defaults").await;
    let v = rig
        .engine
        .create_volume(create("dflt", None), Wait::No)
        .await
        .unwrap();
    assert_eq!(v.size_bytes, 1 << 30, "the default size is 1 GiB");
    // Sizes are aligned to 1 MiB before the CSP sees them.
    let v = rig
        .engine
        .create_volume(create("odd", Some(1_000_000)), Wait::No)
        .await
        .unwrap();
    assert_eq!(v.size_bytes, 1 << 20);
    let e = rig
        .engine
        .create_volume(
            CreateVolume {
                backend: Some("nope".into()),
                ..create("x", None)
            },
            Wait::No,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::InvalidArgument, Some("backend"))
    );
    let e = rig
        .engine
        .create_volume(create("../x", None), Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    let e = rig
        .engine
        .create_volume(
            CreateVolume {
                source: Some(VolumeSource::Snapshot("ghost".into())),
                ..create("c", None)
            },
            Wait::No,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = rig
        .engine
        .expand_volume("ghost", 1 << 30, None, Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    rig.engine
        .delete_volume("ghost", None, Wait::No)
        .await
        .unwrap();
    rig.engine
        .delete_snapshot("ghost", None, Wait::No)
        .await
        .unwrap();
}

#[tokio::test]
async fn attach_records_the_publish_context() {
    let rig = rig("attach").await;
    rig.engine
        .create_volume(create("att", Some(64 << 20)), Wait::No)
        .await
        .unwrap();
    let a = rig
        .engine
        .attach_volume("att", None, false, Wait::No)
        .await
        .unwrap();
    assert_eq!(a.context["accessProtocol"], "local");
    assert_eq!(a.context["readOnly"], "false");
    let path = std::path::Path::new(&a.context["localPath"]);
    assert!(path.is_absolute() && path.exists(), "{path:?}");
    assert_eq!(a.node_uuid, rig.engine.node().uuid);
    // Idempotent; another read-only setting is a conflict.
    assert_eq!(
        rig.engine
            .attach_volume("att", None, false, Wait::No)
            .await
            .unwrap(),
        a
    );
    let e = rig
        .engine
        .attach_volume("att", None, true, Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    assert!(rig.engine.get_volume("att", None).await.unwrap().published);
    assert_eq!(rig.engine.attachments().unwrap().len(), 1);
    // A published volume cannot be deleted.
    let e = rig
        .engine
        .delete_volume("att", None, Wait::No)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    rig.engine
        .detach_volume("att", None, Wait::No)
        .await
        .unwrap();
    rig.engine
        .detach_volume("att", None, Wait::No)
        .await
        .unwrap();
    assert!(!rig.engine.get_volume("att", None).await.unwrap().published);
    assert!(rig.engine.attachments().unwrap().is_empty());
    rig.engine
        .delete_volume("att", None, Wait::No)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_grant_nothing_uses_is_ended_by_the_reconciler() {
    // A crash between the CSP publish and the node stage leaves a grant and its record.
    let rig = rig("grant").await;
    rig.engine
        .create_volume(create("left", Some(64 << 20)), Wait::No)
        .await
        .unwrap();
    rig.engine
        .attach_volume("left", None, false, Wait::No)
        .await
        .unwrap();
    let report = rig.engine.reconcile().await;
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.contains("CSP grant of 'left'")),
        "{:?}",
        report.actions
    );
    assert!(rig.engine.attachments().unwrap().is_empty());
    assert!(!rig.engine.get_volume("left", None).await.unwrap().published);
    rig.engine
        .delete_volume("left", None, Wait::No)
        .await
        .unwrap();
}

#[tokio::test]
async fn snapshot_groups_cover_every_member() {
    let rig = rig("groups").await;
    for n in ["g1", "g2"] {
        rig.engine
            .create_volume(create(n, Some(32 << 20)), Wait::No)
            .await
            .unwrap();
    }
    let group = rig
        .engine
        .create_volume_group("grp", &["g1".into(), "g2".into()], None, Wait::No)
        .await
        .unwrap();
    assert_eq!(group.members, ["g1", "g2"]);
    let sg = rig
        .engine
        .create_snapshot_group("grp-snap", "grp", None, Wait::Bounded)
        .await
        .unwrap();
    assert_eq!(sg.snapshots.len(), 2);
    assert_eq!(sg.volume_group_id, group.id);
    rig.engine
        .delete_snapshot_group(&sg.id, None)
        .await
        .unwrap();
    rig.engine
        .delete_volume_group("grp", None, Wait::No)
        .await
        .unwrap();
    rig.engine
        .delete_volume_group("grp", None, Wait::No)
        .await
        .unwrap();
    for n in ["g1", "g2"] {
        rig.engine.delete_volume(n, None, Wait::No).await.unwrap();
    }
}

#[tokio::test]
async fn an_interrupted_clone_leaves_no_temporary_snapshot() {
    let rig = rig("intent").await;
    let parent = rig
        .engine
        .create_volume(create("parent", Some(16 << 20)), Wait::No)
        .await
        .unwrap();
    // The state a crash leaves after B16 step 2: the intent and the temporary snapshot.
    let store = StateStore::open(&rig.state).unwrap();
    store
        .put(
            intent::COLLECTION,
            "clone-local-child",
            &intent::Intent::CloneFromVolume {
                backend: "local".into(),
                name: "child".into(),
                parent_id: parent.id.clone(),
            },
        )
        .unwrap();
    rig.client
        .create_snapshot(&SnapshotCreate {
            name: "snap-for-clone-2026-11-21T00:00:00Z-0badc0de".into(),
            volume_id: parent.id.clone(),
            description: Some("child".into()),
            params: BTreeMap::new(),
        })
        .await
        .unwrap();
    // Someone else's snapshot on the same volume stays.
    rig.engine
        .create_snapshot("keep-me", "parent", None, None, Wait::Bounded)
        .await
        .unwrap();
    let report = rig.engine.reconcile().await;
    assert_eq!(report.pending, 0, "{:?}", report.actions);
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.contains("removed 1 temporary")),
        "{:?}",
        report.actions
    );
    let left: Vec<String> = rig
        .engine
        .list_snapshots(Some("parent"), None)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(left, ["keep-me"]);
    assert!(store
        .list::<intent::Intent>(intent::COLLECTION)
        .unwrap()
        .is_empty());

    // The full clone leaves no temporary snapshot and no intent either.
    let child = rig
        .engine
        .create_volume(
            CreateVolume {
                source: Some(VolumeSource::Volume("parent".into())),
                ..create("child", None)
            },
            Wait::Bounded,
        )
        .await
        .unwrap();
    assert_eq!(child.size_bytes, 16 << 20);
    let left: Vec<String> = rig
        .engine
        .list_snapshots(Some("parent"), None)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(left, ["keep-me"]);
    assert!(store
        .list::<intent::Intent>(intent::COLLECTION)
        .unwrap()
        .is_empty());
}
