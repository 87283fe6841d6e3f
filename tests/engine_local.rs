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
use volbridge_local_csp::{LocalCsp, LocalCspConfig, PoolChoice};

struct Rig {
    engine: Arc<Engine>,
    client: CspClient,
    state: std::path::PathBuf,
    _stop: tokio::sync::oneshot::Sender<()>,
    dir: TempDir,
}

async fn rig(tag: &str) -> Rig {
    rig_with(tag, PoolChoice::Auto, EngineConfig::default()).await
}

async fn rig_with(tag: &str, pool: PoolChoice, config: EngineConfig) -> Rig {
    let dir = TempDir::new(tag);
    let mut csp_config = LocalCspConfig::new(dir.path().join("csp"), "u", "engine-test-pw");
    csp_config.pool = pool;
    let csp = LocalCsp::open(csp_config).unwrap();
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
    let engine = Engine::new(backends, StateStore::open(&state).unwrap(), config).unwrap();
    Rig {
        engine: Arc::new(engine),
        client,
        state,
        _stop: stop,
        dir,
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

/// docs/copy-semantics.md rules 1, 3 and 4 for the CLI, Docker and Flex (Wait::Bounded),
/// in both pool modes: a snapshot create waits until ready; a clone whose copies outlast
/// `copy_wait` is DeadlineExceeded with the copy's bytes in the message and the progress on
/// the volume, and the next call goes on with the same copy (one temporary snapshot, one
/// clone) and answers once the data is complete.
async fn copy_wait(pool: PoolChoice) {
    let short = EngineConfig {
        copy_wait: std::time::Duration::from_millis(300),
        ..EngineConfig::default()
    };
    let rig = rig_with("copywait", pool, short).await;
    let copies = pool == PoolChoice::Dir;
    let parent = rig
        .engine
        .create_volume(create("parent", Some(512 << 20)), Wait::Bounded)
        .await
        .unwrap();
    let data = rig.dir.path().join("csp");
    let images = if data.join("pool.json").exists() {
        data.join("pool")
    } else {
        data
    };
    let img = images.join(format!("volumes/{}.img", parent.id));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8 | 1).collect();
        for i in 0..256u64 {
            f.write_all_at(&chunk, i << 20).unwrap();
        }
        f.sync_all().unwrap();
    }
    // Rule 1, bounded: the snapshot answers ready (its copy outlasts 300 ms only rarely;
    // then the bound answers, and the snapshot still becomes ready).
    match rig
        .engine
        .create_snapshot("s", "parent", None, None, Wait::Bounded)
        .await
    {
        Ok(s) => assert!(s.ready_to_use),
        Err(e) => assert!(copies, "{e}"),
    }
    let clone = || CreateVolume {
        source: Some(VolumeSource::Volume("parent".into())),
        ..create("child", None)
    };
    let temporary = || async {
        rig.client
            .list_snapshots(Some(&parent.id))
            .await
            .unwrap()
            .into_iter()
            .filter(|s| {
                s.name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("snap-for-clone-"))
            })
            .map(|s| s.id.unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let first = rig.engine.create_volume(clone(), Wait::Bounded).await;
    if !copies {
        let v = first.unwrap();
        assert_eq!(v.status, "ready");
        assert!(temporary().await.is_empty());
        return;
    }
    let e = first.unwrap_err();
    assert_eq!(e.kind, ErrorKind::DeadlineExceeded, "{e}");
    assert!(e.message.contains("still being copied"), "{e}");
    assert!(e.message.contains("run the same command again"), "{e}");
    let seen = temporary().await;
    assert_eq!(seen.len(), 1, "one temporary snapshot: {seen:?}");
    let during = rig.engine.get_volume("child", None).await.unwrap();
    if during.status != "ready" {
        let (done, total) = during
            .copy_progress
            .expect("a running copy reports its bytes");
        assert!(done <= total, "{done} of {total}");
    }
    // A second call with the same bound: the same copy, no second one.
    let again = rig.engine.create_volume(clone(), Wait::Bounded).await;
    if let Err(e) = &again {
        assert_eq!(e.kind, ErrorKind::DeadlineExceeded, "{e}");
        let now = temporary().await;
        assert!(
            now.iter().all(|id| seen.contains(id)),
            "{seen:?} then {now:?}"
        );
    }
    let same = rig.engine.get_volume("child", None).await.unwrap();
    assert_eq!(same.id, during.id, "the retry found the same clone");
    // An engine with the default bound (one more daemon over the same state) finishes it.
    let patient = Engine::new(
        {
            let mut b = Backends::new("local");
            b.add(Backend {
                name: "local".into(),
                client: rig.client.clone(),
                embedded: true,
            });
            b
        },
        StateStore::open(&rig.state).unwrap(),
        EngineConfig::default(),
    )
    .unwrap();
    let done = patient.create_volume(clone(), Wait::Bounded).await.unwrap();
    assert_eq!(done.id, during.id);
    assert_eq!(done.status, "ready");
    assert_eq!(done.copy_progress, None);
    assert!(
        temporary().await.is_empty(),
        "no temporary snapshot once complete"
    );
    let clone_img = images.join(format!("volumes/{}.img", done.id));
    let (a, b) = (
        std::fs::read(&img).unwrap(),
        std::fs::read(&clone_img).unwrap(),
    );
    assert!(
        a[..256 << 20] == b[..256 << 20],
        "the clone holds the parent's data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_wait_bounds_a_clone_and_the_retry_finds_the_same_copy_dir() {
    copy_wait(PoolChoice::Dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_wait_bounds_a_clone_and_the_retry_finds_the_same_copy_image_pool() {
    copy_wait(PoolChoice::Auto).await
}
