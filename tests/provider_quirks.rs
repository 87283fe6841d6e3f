//! The CSP client against a small fake CSP that behaves like a quirky real array.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use volbridge::error::ErrorKind;
use volbridge::provider::{
    publish_context, ClientOptions, CloneSource, Credentials, CspClient, Host, Provider,
    PublishContextInput, VolumeCreate,
};

const USER: &str = "admin";
const PASSWORD: &str = "Pl4nted-Secr3t-pw";
const CHAP: &str = "Ch4p-S3cret-value";
const BACKEND: &str = "array-1.example";

#[derive(Default)]
struct Fake {
    logins: AtomicUsize,
    unauthorized: AtomicUsize,
    tokens: Mutex<HashSet<String>>,
    always_401: AtomicBool,
    /// When set, requests with a stale token wait here before their 401, so that all of
    /// them hold the old token when the first re-login starts.
    barrier: Mutex<Option<Arc<tokio::sync::Barrier>>>,
    calls: Mutex<Vec<String>>,
    header_faults: Mutex<Vec<String>>,
    hosts: Mutex<Vec<Value>>,
}

impl Fake {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn revoke(&self) {
        self.tokens.lock().unwrap().clear();
    }
}

fn json_reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    let code = status.canonical_reason().unwrap_or("");
    json_reply(
        status,
        json!({"errors": [{"code": code, "message": message}]}),
    )
}

fn volume(id: &str, name: &str, extra: Value) -> Value {
    let mut v = json!({"id": id, "name": name, "size": 1073741824u64, "published": false,
                       "config": {}});
    if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        v.extend(extra.clone());
    }
    v
}

async fn handler(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let path = uri
        .path()
        .strip_prefix("/containers/v1/")
        .unwrap_or("")
        .to_owned();
    let segs: Vec<&str> = path.split('/').collect();
    fake.calls
        .lock()
        .unwrap()
        .push(format!("{method} {}", uri.path_and_query().unwrap()));
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut faults = Vec::new();
    if header("accept").as_deref() != Some("application/json") {
        faults.push(format!("{method} {path}: accept"));
    }
    if header("content-type").as_deref() != Some("application/json") {
        faults.push(format!("{method} {path}: content-type"));
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    if method == Method::POST && path == "tokens" {
        if header("x-auth-token").is_some() || header("x-array-ip").is_some() {
            faults.push("login carried auth headers".into());
        }
        if body["array_ip"] != BACKEND {
            faults.push(format!("login array_ip {}", body["array_ip"]));
        }
        fake.header_faults.lock().unwrap().extend(faults);
        if body["username"] != USER || body["password"] != PASSWORD {
            return error(StatusCode::UNAUTHORIZED, "bad credentials");
        }
        let n = fake.logins.fetch_add(1, Ordering::SeqCst) + 1;
        if fake.barrier.lock().unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let token = format!("session-{n}");
        fake.tokens.lock().unwrap().insert(token.clone());
        return json_reply(
            StatusCode::OK,
            json!({"id": format!("tok{n}"), "username": USER, "session_token": token,
                   "creation_time": 1000, "expiry_time": 2800}),
        );
    }
    if header("x-array-ip").as_deref() != Some(BACKEND) {
        faults.push(format!("{method} {path}: x-array-ip"));
    }
    fake.header_faults.lock().unwrap().extend(faults);
    let token = header("x-auth-token").unwrap_or_default();
    let valid = fake.tokens.lock().unwrap().contains(&token);
    if !valid || fake.always_401.load(Ordering::SeqCst) {
        let barrier = fake.barrier.lock().unwrap().clone();
        if let Some(b) = barrier.filter(|_| !valid) {
            b.wait().await;
        }
        fake.unauthorized.fetch_add(1, Ordering::SeqCst);
        return error(StatusCode::UNAUTHORIZED, "token expired");
    }

    let name = q.get("name").map(String::as_str).unwrap_or("");
    match (method.as_str(), segs.as_slice()) {
        ("DELETE", ["tokens", _]) => StatusCode::NO_CONTENT.into_response(),
        ("GET", ["volumes"]) => match name {
            "" => json_reply(StatusCode::OK, json!([volume("v1", "one", json!({}))])),
            // Arrays that answer 200 [] instead of 404 (D21).
            "missing" => json_reply(StatusCode::OK, json!([])),
            "strsize" => json_reply(
                StatusCode::OK,
                json!([{"id": "v-str", "name": "strsize", "size": "1073741824", "config": {}}]),
            ),
            "bare404" => json_reply(
                StatusCode::NOT_FOUND,
                json!({"code": "Not Found", "message": "no volume"}),
            ),
            "dup" => json_reply(
                StatusCode::OK,
                json!([
                    volume("d1", "dup", json!({})),
                    volume("d2", "dup", json!({}))
                ]),
            ),
            // A CSP that ignores the filter and lists everything.
            "unfiltered" => json_reply(
                StatusCode::OK,
                json!([
                    volume("x1", "other", json!({})),
                    volume("x2", "Unfiltered", json!({}))
                ]),
            ),
            "a b&c=d/é" => json_reply(StatusCode::OK, json!([volume("enc", name, json!({}))])),
            "clone-1" => json_reply(
                StatusCode::OK,
                json!([volume(
                    "c1",
                    "clone-1",
                    json!({"base_snapshot_id": "s1", "clone": "true"})
                )]),
            ),
            _ => error(StatusCode::NOT_FOUND, "no such volume"),
        },
        ("POST", ["volumes"]) => match body["name"].as_str().unwrap_or("") {
            "gw" => (
                StatusCode::BAD_GATEWAY,
                [("content-type", "text/html")],
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
                .into_response(),
            "conflict" => json_reply(
                StatusCode::CONFLICT,
                json!({"code": "Conflict", "message": "volume conflict exists"}),
            ),
            "full" => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "pool A: Insufficient storage space for 1 GiB",
            ),
            "failed-bg" => json_reply(
                StatusCode::CREATED,
                volume(
                    "v-failed",
                    "failed-bg",
                    json!({"config": {"background_operation_status": "Failed: disk error"}}),
                ),
            ),
            "busy-bg" => json_reply(
                StatusCode::OK,
                volume(
                    "v-busy",
                    "busy-bg",
                    json!({"config": {"background_operation_status": "InProgress"}}),
                ),
            ),
            n => json_reply(
                StatusCode::OK,
                volume("v-new", n, json!({"config": body["config"]})),
            ),
        },
        ("GET", ["volumes", id]) => match *id {
            "slow" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                json_reply(StatusCode::OK, volume("slow", "slow", json!({})))
            }
            "v-pub" => json_reply(
                StatusCode::OK,
                volume("v-pub", "pub", json!({"published": true})),
            ),
            "v-comma" | "v-neg" | "v1" | "v-snap" => json_reply(
                StatusCode::OK,
                volume(
                    id,
                    id,
                    json!({"config": {"access_protocol": "ISCSI", "target_scope": "volume"}}),
                ),
            ),
            _ => error(StatusCode::NOT_FOUND, "no such volume"),
        },
        ("PUT", ["volumes", _id]) => json_reply(
            StatusCode::OK,
            volume("v1", "one", json!({"size": body["size"]})),
        ),
        ("DELETE", ["volumes", _]) => StatusCode::NO_CONTENT.into_response(),
        ("POST", ["hosts"]) => {
            fake.hosts.lock().unwrap().push(body.clone());
            if body["name"] == "echo" {
                // A careless CSP that echoes the request in its error.
                return error(StatusCode::BAD_REQUEST, &format!("bad host {body}"));
            }
            json_reply(StatusCode::OK, body)
        }
        ("PUT", ["volumes", id, "actions", "publish"]) => match *id {
            "v-comma" => json_reply(
                StatusCode::OK,
                json!({"serial_number": "600A0B80", "access_protocol": "iscsi",
                       "target_names": ["iqn.2001-05.com.x:a, iqn.2001-05.com.x:b"],
                       "discovery_ips": "10.0.0.1,10.0.0.2",
                       "chap_user": "chapuser", "chap_password": CHAP}),
            ),
            "v-neg" => json_reply(
                StatusCode::OK,
                json!({"serial_number": "600A0B81", "access_protocol": "iscsi", "lun_id": -1,
                       "target_names": ["iqn.x"], "discovery_ips": ["10.0.0.1"]}),
            ),
            _ => error(StatusCode::NOT_FOUND, "no such host"),
        },
        // An array that answers 404 to a volume filter naming no volume (old B3).
        ("GET", ["snapshots"]) if q.get("volume_id").map(String::as_str) == Some("v-gone") => {
            error(StatusCode::NOT_FOUND, "no such volume")
        }
        ("GET", ["snapshots"]) => json_reply(StatusCode::OK, json!([])),
        ("GET", ["snapshots", "s1"]) => json_reply(
            StatusCode::OK,
            json!({"id": "s1", "name": "snap", "volume_id": "v1", "size": "2147483648",
                   "ready_to_use": "true"}),
        ),
        ("GET", ["volume_groups"]) => json_reply(
            StatusCode::OK,
            json!({"id": "g1", "name": name, "volumes": []}),
        ),
        ("DELETE", ["volume_groups", _]) => json_reply(
            StatusCode::CONFLICT,
            json!({"code": "Conflict", "message": "group has members"}),
        ),
        ("DELETE", ["snapshot_groups", _]) => error(StatusCode::NOT_FOUND, "gone"),
        ("GET", ["replication_partners"]) => json_reply(
            StatusCode::OK,
            json!([{"id": "p1", "partner_name": "peer", "alive": "true", "repl_direction": "upstream"}]),
        ),
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

async fn start() -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake::default());
    let app = Router::new().fallback(handler).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (fake, addr)
}

fn creds(port: u16, password: &str) -> Credentials {
    let map: BTreeMap<String, String> = [
        ("backend", BACKEND),
        ("username", USER),
        ("password", password),
        ("serviceName", "127.0.0.1"),
        ("servicePort", &port.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Credentials::from_map(&map).unwrap()
}

fn quick() -> ClientOptions {
    ClientOptions {
        retry_delays: vec![Duration::from_millis(10); 3],
        ..ClientOptions::default()
    }
}

async fn client() -> (Arc<Fake>, CspClient) {
    let (fake, addr) = start().await;
    let c = CspClient::new(creds(addr.port(), PASSWORD), quick()).unwrap();
    (fake, c)
}

fn host(uuid: &str, name: &str) -> Host {
    Host {
        uuid: Some(uuid.into()),
        name: Some(name.into()),
        iqns: vec!["iqn.1994-05.com.redhat:node1".into()],
        chap_user: Some("chapuser".into()),
        chap_password: Some(CHAP.into()),
        ..Host::default()
    }
}

#[tokio::test]
async fn headers_and_login_follow_the_contract() {
    let (fake, c) = client().await;
    assert!(c.base_url().starts_with("http://127.0.0.1:"));
    c.list_volumes().await.unwrap();
    c.find_volume("missing").await.unwrap();
    c.logout().await;
    assert!(
        fake.header_faults.lock().unwrap().is_empty(),
        "{:?}",
        fake.header_faults.lock().unwrap()
    );
    assert_eq!(fake.logins.load(Ordering::SeqCst), 1);
    assert!(fake
        .calls()
        .contains(&"DELETE /containers/v1/tokens/tok1".to_owned()));
    // After logout the next call logs in again.
    c.list_volumes().await.unwrap();
    assert_eq!(fake.logins.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn name_lookups_accept_quirky_answers() {
    let (fake, c) = client().await;
    assert_eq!(c.find_volume("missing").await.unwrap(), None);
    assert_eq!(c.find_volume("bare404").await.unwrap(), None);
    assert_eq!(c.find_volume("nothing").await.unwrap(), None);
    assert_eq!(c.find_volume("unfiltered").await.unwrap(), None);
    let e = c.find_volume("dup").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal);
    let v = c.find_volume("strsize").await.unwrap().unwrap();
    assert_eq!(v.size, Some(1 << 30));
    let v = c.find_volume("a b&c=d/é").await.unwrap().unwrap();
    assert_eq!(v.id.as_deref(), Some("enc"));
    assert!(fake
        .calls()
        .iter()
        .any(|c| c.contains("name=a+b%26c%3Dd%2F%C3%A9")
            || c.contains("name=a%20b%26c%3Dd%2F%C3%A9")));
    // Reuse by name with a size sent as a string: no POST.
    let req = VolumeCreate {
        name: "strsize".into(),
        size: Some(1 << 30),
        ..VolumeCreate::default()
    };
    assert_eq!(
        c.create_volume(&req).await.unwrap().id.as_deref(),
        Some("v-str")
    );
    let bigger = VolumeCreate {
        size: Some(2 << 30),
        ..req
    };
    assert_eq!(
        c.create_volume(&bigger).await.unwrap_err().kind,
        ErrorKind::AlreadyExists
    );
    assert!(!fake
        .calls()
        .iter()
        .any(|c| c.starts_with("POST /containers/v1/volumes")));
    // D10: a volume group lookup answered with a bare object.
    let g = c.find_volume_group("grp").await.unwrap().unwrap();
    assert_eq!(g.id.as_deref(), Some("g1"));
    let partners = c.replication_partners().await.unwrap();
    assert_eq!(partners[0].name.as_deref(), Some("peer"));
    assert_eq!(partners[0].is_alive, Some(true));
    // A filter that names nothing lists nothing, also from an array that answers 404.
    assert!(c.list_snapshots(Some("v-gone")).await.unwrap().is_empty());
}

#[tokio::test]
async fn error_answers_are_classified() {
    let (fake, c) = client().await;
    let mk = |name: &str| VolumeCreate {
        name: name.into(),
        size: Some(1 << 30),
        ..VolumeCreate::default()
    };
    let e = c.create_volume(&mk("gw")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert_eq!(e.message, "CSP answered 502 Bad Gateway");
    let e = c.create_volume(&mk("conflict")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    assert_eq!(
        e.message,
        "CSP answered 409 Conflict: volume conflict exists"
    );
    let e = c.create_volume(&mk("full")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ResourceExhausted);
    // A copy still running is "in progress" (docs/copy-semantics.md rule 3), never
    // Unavailable: the engine waits for it.
    let e = c.create_volume(&mk("busy-bg")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Aborted);
    let e = c.create_volume(&mk("failed-bg")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal);
    assert!(fake
        .calls()
        .contains(&"DELETE /containers/v1/volumes/v-failed?force=true".to_owned()));
    let e = c
        .create_volume(&VolumeCreate {
            size: None,
            ..mk("x")
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    let e = c.delete_volume_group("g1").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert_eq!(e.message, "CSP answered 409 Conflict: group has members");
    c.delete_snapshot_group("gone").await.unwrap();
    assert_eq!(
        c.get_volume("nope").await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(c.capacity().await.unwrap(), None);
    // A CSP without the extension names no mutable keys (the engine then refuses them all).
    assert_eq!(c.mutable_config().await.unwrap(), None);
    // Published: refused without calling V5.
    let e = c.delete_volume("v-pub").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(!fake
        .calls()
        .iter()
        .any(|c| c.starts_with("DELETE /containers/v1/volumes/v-pub")));
    c.delete_volume("nope").await.unwrap();
    // B19: never sends a shrink.
    let v = c.expand_volume("v1", 1 << 20).await.unwrap();
    assert_eq!(v.size, Some(1 << 30));
    assert!(!fake.calls().iter().any(|c| c.starts_with("PUT")));
    // Clone: an existing clone found by name with the same source is reused.
    let cl = c
        .clone_volume(&mk("clone-1"), &CloneSource::Snapshot("s1".into()))
        .await
        .unwrap();
    assert_eq!(cl.id.as_deref(), Some("c1"));
    let e = c
        .clone_volume(&mk("clone-1"), &CloneSource::Snapshot("s2".into()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    // Clone below the snapshot size (2 GiB, sent as a string) is refused before V2.
    let e = c
        .clone_volume(&mk("small-clone"), &CloneSource::Snapshot("s1".into()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    let e = c
        .clone_volume(&mk("orphan"), &CloneSource::Snapshot("nope".into()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn publish_tolerates_shapes_and_refuses_negative_luns() {
    let (fake, c) = client().await;
    let info = c
        .publish_volume("v-comma", &host("node-1", "n1"), None)
        .await
        .unwrap();
    assert_eq!(
        info.target_names,
        ["iqn.2001-05.com.x:a", "iqn.2001-05.com.x:b"]
    );
    assert_eq!(info.discovery_ips, ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(info.lun_id, Some(0));
    // B22: the host was upserted first, with the volume's protocol in lower case.
    let hosts = fake.hosts.lock().unwrap().clone();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["access_protocol"], "iscsi");
    let v = c.get_volume("v-comma").await.unwrap();
    let vc = volbridge::provider::volume_context(&v);
    let ctx = publish_context(&PublishContextInput {
        info: &info,
        volume: &v,
        read_only: false,
        fs_type: Some("xfs"),
        volume_context: &vc,
    })
    .unwrap();
    assert_eq!(
        ctx["targetNames"],
        "iqn.2001-05.com.x:a,iqn.2001-05.com.x:b"
    );
    assert_eq!(ctx["lunId"], "0");
    assert_eq!(ctx["targetScope"], "volume");
    assert_eq!(ctx["chapUser"], "chapuser");
    let e = c
        .publish_volume("v-neg", &host("node-1", "n1"), Some("iSCSI"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal);
    assert!(e.message.contains("invalid LUN"), "{}", e.message);
    // 404 from V6 while the volume exists names the host.
    let e = c
        .publish_volume("v1", &host("node-9", "n9"), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("node-9"));
    let e = c
        .publish_volume("gone", &host("node-1", "n1"), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    // Unpublish of an unpublished or vanished volume needs no V7.
    c.unpublish_volume("v1", "node-1").await.unwrap();
    c.unpublish_volume("gone", "node-1").await.unwrap();
    assert!(!fake.calls().iter().any(|c| c.contains("unpublish")));
}

#[tokio::test]
async fn relogin_once_then_fail() {
    let (fake, c) = client().await;
    c.list_volumes().await.unwrap();
    fake.revoke();
    c.list_volumes().await.unwrap();
    assert_eq!(fake.logins.load(Ordering::SeqCst), 2);
    fake.always_401.store(true, Ordering::SeqCst);
    let e = c.list_volumes().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(e.message.contains("authentication failed"), "{}", e.message);
    assert_eq!(
        fake.logins.load(Ordering::SeqCst),
        3,
        "exactly one re-login"
    );
    assert_eq!(fake.unauthorized.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn bad_password_is_unavailable_and_a_new_password_means_a_new_client() {
    let (fake, addr) = start().await;
    let provider = Provider::with_options(quick());
    let wrong = provider
        .client(&creds(addr.port(), "wrong-password"))
        .unwrap();
    let e = wrong.list_volumes().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(!e.message.contains("wrong-password"));
    let right = provider.client(&creds(addr.port(), PASSWORD)).unwrap();
    right.list_volumes().await.unwrap();
    let again = provider.client(&creds(addr.port(), PASSWORD)).unwrap();
    again.list_volumes().await.unwrap();
    assert_eq!(
        fake.logins.load(Ordering::SeqCst),
        1,
        "clients share the token"
    );
    provider.insert("main", right.clone());
    assert_eq!(provider.names(), ["main"]);
    assert!(provider.named("main").is_some());
    provider.logout_all().await;
    assert!(fake
        .calls()
        .contains(&"DELETE /containers/v1/tokens/tok1".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_401s_share_one_login() {
    let (fake, c) = client().await;
    c.list_volumes().await.unwrap();
    *fake.barrier.lock().unwrap() = Some(Arc::new(tokio::sync::Barrier::new(32)));
    fake.revoke();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.list_volumes().await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(fake.unauthorized.load(Ordering::SeqCst), 32);
    assert_eq!(
        fake.logins.load(Ordering::SeqCst),
        2,
        "one re-login for 32 requests"
    );
}

#[tokio::test]
async fn slow_answers_are_deadline_exceeded() {
    let (_fake, addr) = start().await;
    let opts = ClientOptions {
        timeout: Some(Duration::from_millis(300)),
        ..quick()
    };
    let c = CspClient::new(creds(addr.port(), PASSWORD), opts).unwrap();
    let start = Instant::now();
    let e = c.get_volume("slow").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::DeadlineExceeded, "{}", e.message);
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn refused_connections_are_retried_then_unavailable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let opts = ClientOptions {
        retry_delays: vec![
            Duration::from_millis(50),
            Duration::from_millis(100),
            Duration::from_millis(150),
        ],
        ..ClientOptions::default()
    };
    let c = CspClient::new(creds(port, PASSWORD), opts).unwrap();
    let start = Instant::now();
    let e = c.list_volumes().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{}", e.message);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_reach_logs_or_errors() {
    let buf = Captured::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (fake, c) = client().await;
    let mut messages = Vec::new();
    tracing::debug!(credentials = ?c.credentials(), "client made");
    c.list_volumes().await.unwrap();
    fake.revoke();
    let info = c
        .publish_volume("v-comma", &host("node-1", "n1"), None)
        .await
        .unwrap();
    tracing::debug!(?info.serial_number, "published");
    let e = c
        .publish_volume("v-comma", &host("node-2", "echo"), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    messages.push(e.message);
    for name in ["gw", "conflict", "full", "failed-bg"] {
        let req = VolumeCreate {
            name: name.into(),
            size: Some(1 << 30),
            params: [("chapPassword".to_owned(), CHAP.to_owned())].into(),
            ..VolumeCreate::default()
        };
        messages.push(c.create_volume(&req).await.unwrap_err().message);
    }
    fake.always_401.store(true, Ordering::SeqCst);
    messages.push(c.list_volumes().await.unwrap_err().message);
    let wrong = CspClient::new(
        creds(
            c.base_url().rsplit(':').next().unwrap().parse().unwrap(),
            "wrong-Secr3t",
        ),
        quick(),
    )
    .unwrap();
    messages.push(wrong.list_volumes().await.unwrap_err().message);

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("CSP call"), "the capture works");
    for secret in [PASSWORD, CHAP, "wrong-Secr3t", "session-1", "session-2"] {
        assert!(!logs.contains(secret), "{secret} leaked into logs");
        for m in &messages {
            assert!(!m.contains(secret), "{secret} leaked into error: {m}");
        }
    }
    // The fake saw the CHAP secret only in the host upsert, never in a volume config.
    assert!(!fake.calls().iter().any(|c| c.contains(CHAP)));
}
