//! The CSP client's side of the snapshot-metadata extension (docs/snapshot-metadata.md M2)
//! against small fake CSPs: one that does not list the extension is never asked for
//! ranges, and a vendor's untidy pages are made sorted, merged and clipped before anyone
//! sees them; a page that would make a walk loop is refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use volbridge::error::ErrorKind;
use volbridge::provider::{ClientOptions, Credentials, CspClient};
use volbridge_proto::ranges::ByteRange;

/// What the fake answers at `/capacity` and at the range endpoints.
struct Fake {
    capacity: Option<Value>,
    pages: HashMap<String, Value>,
    calls: Mutex<Vec<String>>,
}

async fn handler(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let path = uri.path().trim_start_matches("/containers/v1/").to_owned();
    fake.calls.lock().unwrap().push(format!("{method} {path}"));
    let reply = |status: StatusCode, body: Value| {
        (
            status,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response()
    };
    let missing = || {
        reply(
            StatusCode::NOT_FOUND,
            json!({"errors": [{"code": "Not Found", "message": "no such thing"}]}),
        )
    };
    match (method.as_str(), path.as_str()) {
        ("POST", "tokens") => reply(
            StatusCode::OK,
            json!({"id": "t1", "session_token": "s1", "username": "u"}),
        ),
        ("GET", "capacity") => match &fake.capacity {
            Some(c) => reply(StatusCode::OK, c.clone()),
            None => missing(),
        },
        ("GET", p) if p.starts_with("snapshots/") => {
            let key = format!("{p}@{}", q.get("offset").map(String::as_str).unwrap_or("0"));
            match fake.pages.get(&key) {
                Some(page) => reply(StatusCode::OK, page.clone()),
                None => missing(),
            }
        }
        _ => missing(),
    }
}

async fn client(fake: Fake) -> (Arc<Fake>, CspClient) {
    let fake = Arc::new(fake);
    let app = Router::new().fallback(handler).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let map: BTreeMap<String, String> = [
        ("backend", "array"),
        ("username", "u"),
        ("password", "p4ssword-x"),
        ("serviceName", "127.0.0.1"),
        ("servicePort", &port.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let creds = Credentials::from_map(&map).unwrap();
    (
        fake,
        CspClient::new(creds, ClientOptions::default()).unwrap(),
    )
}

#[tokio::test]
async fn a_csp_that_does_not_list_the_extension_offers_none() {
    for capacity in [
        None,
        Some(json!({"total_bytes": 1, "free_bytes": 1, "used_bytes": 0})),
        Some(json!({"total_bytes": 1, "extensions": ["something_else"]})),
    ] {
        let (fake, c) = client(Fake {
            capacity: capacity.clone(),
            pages: HashMap::new(),
            calls: Mutex::default(),
        })
        .await;
        assert!(!c.offers_snapshot_metadata().await.unwrap(), "{capacity:?}");
        let calls = fake.calls.lock().unwrap().clone();
        assert!(
            calls.iter().all(|c| !c.contains("snapshots")),
            "asked for ranges: {calls:?}"
        );
    }
    let (_, c) = client(Fake {
        capacity: Some(json!({"extensions": "snapshot_metadata"})),
        pages: HashMap::new(),
        calls: Mutex::default(),
    })
    .await;
    assert!(c.offers_snapshot_metadata().await.unwrap());
}

#[tokio::test]
async fn untidy_pages_are_sorted_merged_and_clipped() {
    let pages = HashMap::from([(
        "snapshots/s1/allocated@100".to_owned(),
        // Unsorted, overlapping, touching, before the offset, past the end, as strings.
        json!({"volume_size": "1000", "ranges": [
            {"offset": 500, "length": 100},
            {"offset": "0", "length": "150"},
            {"offset": 140, "length": 60},
            {"offset": 200, "length": 10},
            {"offset": 950, "length": 100},
            {"offset": 300, "length": 0}
        ], "next_offset": 960}),
    )]);
    let (_, c) = client(Fake {
        capacity: Some(json!({"extensions": ["snapshot_metadata"]})),
        pages,
        calls: Mutex::default(),
    })
    .await;
    let page = c.snapshot_allocated("s1", 100, 10).await.unwrap();
    assert_eq!(page.volume_size, 1000);
    assert_eq!(
        page.ranges,
        vec![
            ByteRange::new(100, 110),
            ByteRange::new(500, 100),
            ByteRange::new(950, 50)
        ]
    );
    assert_eq!(page.next_offset, Some(960));
}

#[tokio::test]
async fn a_page_that_would_loop_or_leave_the_snapshot_is_refused() {
    let pages = HashMap::from([
        (
            "snapshots/s1/allocated@100".to_owned(),
            json!({"volume_size": 1000, "ranges": [], "next_offset": 100}),
        ),
        (
            "snapshots/s2/changes@0".to_owned(),
            json!({"volume_size": 1000, "ranges": [], "next_offset": 4000}),
        ),
    ]);
    let (_, c) = client(Fake {
        capacity: Some(json!({"extensions": ["snapshot_metadata"]})),
        pages,
        calls: Mutex::default(),
    })
    .await;
    let e = c.snapshot_allocated("s1", 100, 0).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal);
    assert!(
        e.message.contains("next_offset 100 after offset 100"),
        "{e}"
    );
    let e = c.snapshot_changes("s1", "s2", 0, 0).await.unwrap_err();
    assert!(e.message.contains("next_offset 4000"), "{e}");
    // Unknown snapshots are NotFound, as for every by-id call.
    let e = c.snapshot_allocated("s9", 0, 0).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
}
