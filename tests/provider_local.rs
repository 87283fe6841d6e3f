//! The CSP client against the real embedded local CSP, served on 127.0.0.1.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use volbridge::error::{ErrorKind, Result};
use volbridge::host::target::{AttachTarget, LocalTarget};
use volbridge::host::PublishedVolume;
use volbridge::provider::{
    publish_context, volume_context, ClientOptions, CloneSource, Credentials, CspClient, Host,
    PublishContextInput, SnapshotCreate, VolumeCreate,
};
use volbridge_local_csp::{LocalCsp, LocalCspConfig};

const MIB: u64 = 1 << 20;
const USER: &str = "vbadmin";
const PASSWORD: &str = "local-test-pw-1234";

/// A served local CSP with its data directory, removed on drop.
struct Served {
    csp: LocalCsp,
    client: CspClient,
    dir: PathBuf,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn serve() -> Served {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vb-provider-local-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let csp = LocalCsp::open(LocalCspConfig::new(&dir, USER, PASSWORD)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = csp.clone();
    tokio::spawn(async move {
        let _ = server
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await;
    });
    let map: BTreeMap<String, String> = [
        ("serviceName", "127.0.0.1".to_owned()),
        ("servicePort", port.to_string()),
        ("backend", "local".to_owned()),
        ("username", USER.to_owned()),
        ("password", PASSWORD.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let opts = ClientOptions {
        retry_delays: vec![Duration::from_millis(50); 3],
        ..ClientOptions::default()
    };
    let client = CspClient::new(Credentials::from_map(&map).unwrap(), opts).unwrap();
    Served {
        csp,
        client,
        dir,
        _stop: stop,
    }
}

/// Retries while the CSP reports background work (B39, snapshot copies: the client's
/// "in progress", kind Aborted), as the engine does.
async fn settle<T, F, Fut>(mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f().await {
            Err(e) if e.is(ErrorKind::Aborted) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

async fn wait_snapshot_ready(c: &CspClient, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.get_snapshot(id).await.unwrap().ready_to_use == Some(false) {
        assert!(
            Instant::now() < deadline,
            "snapshot {id} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn create(name: &str, size: u64) -> VolumeCreate {
    VolumeCreate {
        name: name.into(),
        size: Some(size),
        description: Some(format!("test volume {name}")),
        params: [("destroyOnDelete".to_owned(), "true".to_owned())].into(),
        multi_initiator: false,
    }
}

fn node(uuid: &str) -> Host {
    Host {
        uuid: Some(uuid.into()),
        name: Some(format!("host-{uuid}")),
        ..Host::default()
    }
}

fn id(v: &volbridge::provider::Volume) -> String {
    v.id.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle() {
    let s = serve().await;
    let c = &s.client;

    let vol = c
        .create_volume(&create("pvc-life", 64 * MIB))
        .await
        .unwrap();
    let vol_id = id(&vol);
    assert_eq!(vol.size, Some(64 * MIB));
    assert_eq!(vol.published, Some(false));
    let vc = volume_context(&vol);
    assert_eq!(vc.get("destroyOnDelete").map(String::as_str), Some("true"));
    // Idempotent create: same id, no second volume.
    let again = c
        .create_volume(&create("pvc-life", 64 * MIB))
        .await
        .unwrap();
    assert_eq!(id(&again), vol_id);
    let e = c
        .create_volume(&create("pvc-life", 128 * MIB))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    let found = c.find_volume("pvc-life").await.unwrap().unwrap();
    assert_eq!(id(&found), vol_id);
    assert_eq!(id(&c.get_volume(&vol_id).await.unwrap()), vol_id);

    // Snapshot (idempotent by name and volume).
    let snap_req = SnapshotCreate {
        name: "snap-life".into(),
        volume_id: vol_id.clone(),
        description: None,
        params: BTreeMap::new(),
    };
    let snap = c.create_snapshot(&snap_req).await.unwrap();
    let snap_id = snap.id.clone().unwrap();
    assert_eq!(snap.volume_id.as_deref(), Some(vol_id.as_str()));
    assert_eq!(id_of(&c.create_snapshot(&snap_req).await.unwrap()), snap_id);
    wait_snapshot_ready(c, &snap_id).await;
    let found = c
        .find_snapshot("snap-life", Some(&vol_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id_of(&found), snap_id);

    // Clone from the snapshot, size inherited.
    let from_snap = CloneSource::Snapshot(snap_id.clone());
    let mut req = create("pvc-from-snap", 0);
    req.size = None;
    let clone_s = settle(|| c.clone_volume(&req, &from_snap)).await.unwrap();
    assert_eq!(clone_s.clone, Some(true));
    assert_eq!(clone_s.base_snapshot_id.as_deref(), Some(snap_id.as_str()));
    assert!(clone_s.size.unwrap() >= 64 * MIB);
    let small = create("pvc-too-small", MIB);
    let e = c.clone_volume(&small, &from_snap).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);

    // Clone from the volume: the temporary snapshot is removed once the clone is complete.
    let from_vol = CloneSource::Volume(vol_id.clone());
    let vol_clone_req = create("pvc-from-vol", 64 * MIB);
    let clone_v = settle(|| c.clone_volume(&vol_clone_req, &from_vol))
        .await
        .unwrap();
    assert_eq!(clone_v.clone, Some(true));
    let again = settle(|| c.clone_volume(&vol_clone_req, &from_vol))
        .await
        .unwrap();
    assert_eq!(id(&again), id(&clone_v));
    let snaps = c.list_snapshots(Some(&vol_id)).await.unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(id_of(&snaps[0]), snap_id);

    // Expand; a smaller size is answered without a call and changes nothing.
    let grown = c.expand_volume(&vol_id, 128 * MIB).await.unwrap();
    assert_eq!(grown.size, Some(128 * MIB));
    let same = c.expand_volume(&vol_id, 64 * MIB).await.unwrap();
    assert_eq!(same.size, Some(128 * MIB));

    // Publish with protocol local.
    let info = c
        .publish_volume(&vol_id, &node("node-a"), Some("local"))
        .await
        .unwrap();
    assert_eq!(info.access_protocol, "local");
    assert_eq!(info.serial_number, vol_id);
    assert_eq!(info.lun_id, Some(0));
    let path = PathBuf::from(info.local_path.clone().unwrap());
    assert!(path.is_absolute());
    assert!(path.is_file(), "{path:?}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 128 * MIB);
    let again = c
        .publish_volume(&vol_id, &node("node-a"), Some("local"))
        .await
        .unwrap();
    assert_eq!(again, info);
    let volume = c.get_volume(&vol_id).await.unwrap();
    assert_eq!(volume.published, Some(true));
    let vc = volume_context(&volume);
    let ctx = publish_context(&PublishContextInput {
        info: &info,
        volume: &volume,
        read_only: false,
        fs_type: Some("ext4"),
        volume_context: &vc,
    })
    .unwrap();
    for (k, v) in [
        ("serialNumber", vol_id.as_str()),
        ("accessProtocol", "local"),
        ("lunId", "0"),
        ("targetNames", ""),
        ("discoveryIps", ""),
        ("targetScope", "group"),
        ("readOnly", "false"),
        ("fsType", "ext4"),
        ("localPath", path.to_str().unwrap()),
    ] {
        assert_eq!(ctx.get(k).map(String::as_str), Some(v), "{k}: {ctx:?}");
    }
    let parsed = PublishedVolume::parse(&vol_id, &ctx).unwrap();
    assert_eq!(
        parsed.target,
        AttachTarget::Local(LocalTarget {
            file: path.clone(),
            read_only: false
        })
    );
    assert_eq!(parsed.filesystem.fs_type, "ext4");

    // Delete while published is refused; unpublish twice is fine.
    let e = c.delete_volume(&vol_id).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    c.unpublish_volume(&vol_id, "node-a").await.unwrap();
    c.unpublish_volume(&vol_id, "node-a").await.unwrap();
    assert_eq!(c.get_volume(&vol_id).await.unwrap().published, Some(false));

    // Delete with a snapshot is refused; then delete everything in order.
    let e = c.delete_volume(&vol_id).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    c.delete_volume(&id(&clone_s)).await.unwrap();
    c.delete_volume(&id(&clone_v)).await.unwrap();
    settle(|| c.delete_snapshot(&snap_id)).await.unwrap();
    c.delete_snapshot(&snap_id).await.unwrap();
    c.delete_volume(&vol_id).await.unwrap();
    c.delete_volume(&vol_id).await.unwrap();
    assert_eq!(
        c.get_volume(&vol_id).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(c.find_volume("pvc-life").await.unwrap(), None);
    assert!(c.list_volumes().await.unwrap().is_empty());
    assert!(c.list_snapshots(None).await.unwrap().is_empty());
    c.logout().await;
}

fn id_of(s: &volbridge::provider::Snapshot) -> String {
    s.id.clone().unwrap()
}

#[tokio::test]
async fn revoked_tokens_lead_to_one_relogin() {
    let s = serve().await;
    s.client.list_volumes().await.unwrap();
    s.csp.revoke_tokens();
    s.client.list_volumes().await.unwrap();
    s.csp.revoke_tokens();
    let v = s
        .client
        .create_volume(&create("pvc-relogin", 8 * MIB))
        .await
        .unwrap();
    assert_eq!(v.name.as_deref(), Some("pvc-relogin"));
}

#[tokio::test]
async fn not_found_versus_empty() {
    let s = serve().await;
    let c = &s.client;
    assert_eq!(c.find_volume("pvc-none").await.unwrap(), None);
    assert_eq!(
        c.get_volume("0123456789abcdef0123456789abcdef")
            .await
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        c.get_volume("not-an-id").await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(c.find_snapshot("snap-none", None).await.unwrap(), None);
    assert_eq!(c.find_volume_group("vg-none").await.unwrap(), None);
    let v = c
        .create_volume(&create("pvc-empty", 8 * MIB))
        .await
        .unwrap();
    // A filter that matches nothing lists nothing: a volume without snapshots and an
    // unknown volume both list [] (the CSP answers 200 []); a name lookup finds nothing.
    assert!(c.list_snapshots(Some(&id(&v))).await.unwrap().is_empty());
    assert_eq!(
        c.find_snapshot("snap-none", Some(&id(&v))).await.unwrap(),
        None
    );
    assert!(c
        .list_snapshots(Some("0123456789abcdef0123456789abcdef"))
        .await
        .unwrap()
        .is_empty());
    assert!(c
        .list_snapshot_groups("0123456789abcdef0123456789abcdef")
        .await
        .unwrap()
        .is_empty());
    // Deletes of gone objects succeed.
    c.delete_snapshot("0123456789abcdef0123456789abcdef")
        .await
        .unwrap();
    c.delete_volume("0123456789abcdef0123456789abcdef")
        .await
        .unwrap();
    c.destroy_volume("0123456789abcdef0123456789abcdef")
        .await
        .unwrap();
    c.unpublish_volume("0123456789abcdef0123456789abcdef", "node-x")
        .await
        .unwrap();
    assert!(c.replication_partners().await.unwrap().is_empty());
    assert!(c.capacity().await.unwrap().is_some());
    c.delete_volume(&id(&v)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_creates_make_one_volume() {
    let s = serve().await;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let c = s.client.clone();
            tokio::spawn(async move { c.create_volume(&create("pvc-race", 16 * MIB)).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(id(&t.await.unwrap().unwrap()));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let all = s.client.list_volumes().await.unwrap();
    assert_eq!(
        all.iter()
            .filter(|v| v.name.as_deref() == Some("pvc-race"))
            .count(),
        1
    );
}

#[tokio::test]
async fn groups_round_trip() {
    let s = serve().await;
    let c = &s.client;
    let v = c
        .create_volume(&create("pvc-grouped", 8 * MIB))
        .await
        .unwrap();
    let g = c
        .create_volume_group("vg-1", Some("group"), &BTreeMap::new())
        .await
        .unwrap();
    let g_id = g.id.clone().unwrap();
    assert_eq!(c.find_volume_group("vg-1").await.unwrap().unwrap().id, g.id);
    let edit = volbridge::provider::VolumeEdit {
        volume_group_id: Some(Some(g_id.clone())),
        ..Default::default()
    };
    let edited = c.edit_volume(&id(&v), &edit).await.unwrap();
    assert_eq!(edited.group_id(), Some(g_id.as_str()));
    let sg = settle(|| c.create_snapshot_group("sg-1", &g_id))
        .await
        .unwrap();
    assert_eq!(sg.snapshots.as_ref().map(Vec::len), Some(1));
    for member in sg.snapshots.iter().flatten() {
        wait_snapshot_ready(c, member.id.as_deref().unwrap()).await;
    }
    assert_eq!(c.list_snapshot_groups(&g_id).await.unwrap().len(), 1);
    let e = c.delete_volume_group(&g_id).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    settle(|| c.delete_snapshot_group(sg.id.as_deref().unwrap()))
        .await
        .unwrap();
    let leave = volbridge::provider::VolumeEdit {
        volume_group_id: Some(None),
        ..Default::default()
    };
    assert_eq!(
        c.edit_volume(&id(&v), &leave).await.unwrap().group_id(),
        None
    );
    c.delete_volume_group(&g_id).await.unwrap();
    c.delete_volume_group(&g_id).await.unwrap();
    c.delete_volume(&id(&v)).await.unwrap();
}

/// A node with an initiator name registers with its protocol (as the HPE CSI driver does
/// once open-iscsi is installed): the local CSP stores it; publishing over that protocol is
/// refused with a sentence that names the step and what the CSP serves; `local` works.
#[tokio::test]
async fn hosts_of_any_protocol_register_and_publish_refuses_what_is_not_served() {
    let s = serve().await;
    let c = &s.client;
    let v = c
        .create_volume(&create("pvc-proto", 8 * MIB))
        .await
        .unwrap();
    let node = Host {
        uuid: Some("6f1c2a34-0d5e-4b7a-9c8d-1e2f3a4b5c6d".into()),
        name: Some("worker-1".into()),
        iqns: vec!["iqn.1994-05.com.redhat:worker-1".into()],
        access_protocol: Some("iscsi".into()),
        ..Host::default()
    };
    c.upsert_host(&node).await.unwrap();
    assert_eq!(
        c.host_registered(node.uuid.as_deref().unwrap())
            .await
            .unwrap(),
        Some(true)
    );
    let e = c
        .publish_volume(&id(&v), &node, Some("iscsi"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{}", e.message);
    for part in [
        "refused to publish volume",
        "worker-1",
        "access protocol 'iscsi'",
        "serves only 'local'",
    ] {
        let shown = part.replace("worker-1", node.uuid.as_deref().unwrap());
        assert!(e.message.contains(&shown), "{shown} in: {}", e.message);
    }
    assert_eq!(c.get_volume(&id(&v)).await.unwrap().published, Some(false));
    // The same host, the CSP's own protocol: published.
    let info = c.publish_volume(&id(&v), &node, None).await.unwrap();
    assert_eq!(info.access_protocol, "local");
    c.unpublish_volume(&id(&v), node.uuid.as_deref().unwrap())
        .await
        .unwrap();
    c.delete_volume(&id(&v)).await.unwrap();
}
