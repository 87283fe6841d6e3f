//! `volbridge csp check` against real CSPs: the embedded local CSP must pass every check,
//! S-level included; a deliberately broken fake must be caught.

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use volbridge::conformance::{self, CheckOptions, CheckResult, Outcome, Report};
use volbridge_local_csp::{LocalCsp, LocalCspConfig};

const USER: &str = "vbcheck-admin";
const PASSWORD: &str = "pw-7c1e5f0a93d2";

/// Serves `app` on a free loopback port until the returned sender is dropped or fired.
async fn serve_router(app: Router) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    (addr, tx)
}

/// Runs the checker and returns the report and the printed lines.
async fn check(opts: CheckOptions) -> (Report, Vec<String>) {
    let mut lines = Vec::new();
    let report = {
        let mut on_result = |r: &CheckResult| lines.push(r.to_string());
        conformance::run(&opts, &mut on_result)
            .await
            .expect("the run starts")
    };
    for l in &lines {
        eprintln!("{l}");
    }
    eprintln!("{}", report.summary());
    (report, lines)
}

fn result<'a>(report: &'a Report, id: &str) -> &'a CheckResult {
    report.results.iter().find(|r| r.id == id).unwrap()
}

/// Lists the names of every volume and snapshot, through the raw API.
async fn leftover_names(base: &str) -> Vec<String> {
    let client = volbridge::tls::client_builder().build().unwrap();
    let login: Value = client
        .post(format!("{base}/containers/v1/tokens"))
        .json(&json!({ "username": USER, "password": PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["session_token"].as_str().unwrap().to_owned();
    let mut names = Vec::new();
    for what in ["volumes", "snapshots", "volume_groups"] {
        let list: Value = client
            .get(format!("{base}/containers/v1/{what}"))
            .header("x-auth-token", &token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in list.as_array().unwrap() {
            names.push(format!("{what}/{}", item["name"].as_str().unwrap_or("?")));
        }
    }
    names
}

// ---- the embedded local CSP ----

/// A scratch data directory, removed on drop; the CSP opened on it is closed first, so its
/// image pool is unmounted and its loop device freed even when an assertion failed (the
/// server task still holds the CSP then, and the test process ends without dropping it).
struct Scratch(std::path::PathBuf, Option<LocalCsp>);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "vbcheck-test-{tag}-{}-{nanos:x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir, None)
    }

    fn open_csp(&mut self) -> LocalCsp {
        let csp = LocalCsp::open(LocalCspConfig::new(self.0.clone(), USER, PASSWORD))
            .expect("open the local CSP");
        self.1 = Some(csp.clone());
        csp
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(csp) = self.1.take() {
            csp.close();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Image files left in a data subdirectory (`volumes`, `snapshots`, `retained`).
fn files_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_csp_passes_every_check() {
    let mut data = Scratch::new("local");
    let csp = data.open_csp();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(csp.clone().serve(listener, async {
        let _ = stopped.await;
    }));

    let base = format!("http://{addr}");
    let mut opts = CheckOptions::new(base.clone(), USER, PASSWORD);
    opts.protocol = "local".into();
    let (report, lines) = check(opts).await;

    let not_passed: Vec<&String> = lines.iter().filter(|l| !l.starts_with("pass")).collect();
    assert_eq!(report.failed(), 0, "{not_passed:#?}");
    assert_eq!(report.warned(), 0, "{not_passed:#?}");
    assert_eq!(report.passed(), 40, "{not_passed:#?}");
    for l in &lines {
        assert!(!l.contains(PASSWORD), "password in {l}");
    }

    let left: Vec<String> = leftover_names(&base)
        .await
        .into_iter()
        .filter(|n| n.contains("vbcheck-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    for sub in ["volumes", "snapshots", "retained"] {
        let files = files_in(&data.0.join(sub));
        assert!(files.is_empty(), "{sub}/ still holds {files:?}");
    }

    let _ = stop.send(());
    let _ = server.await;
}

/// Checked for iSCSI, the local CSP registers the hosts with their IQNs (a host record is
/// information) and refuses the publish, naming what it serves; nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_csp_checked_for_iscsi_stores_hosts_and_refuses_publish() {
    let mut data = Scratch::new("iscsi");
    let csp = data.open_csp();
    let (addr, _stop) = serve_router(csp.router()).await;
    let base = format!("http://{addr}");
    let mut opts = CheckOptions::new(base.clone(), USER, PASSWORD);
    opts.protocol = "iscsi".into();
    let (report, _) = check(opts).await;
    for id in ["C09", "C10", "C14", "C40"] {
        let r = result(&report, id);
        assert_eq!(r.outcome, Outcome::Pass, "{id}: {}", r.detail);
    }
    let c18 = result(&report, "C18");
    assert_eq!(c18.outcome, Outcome::Fail);
    assert!(
        c18.detail.contains("400") && c18.detail.contains("serves only 'local'"),
        "{}",
        c18.detail
    );
    let left: Vec<String> = leftover_names(&base)
        .await
        .into_iter()
        .filter(|n| n.contains("vbcheck-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// B3 broken on purpose: an empty snapshot list of an existing volume answers 404.
async fn empty_snapshot_list_is_404(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let listing = req.method() == axum::http::Method::GET
        && req.uri().path().ends_with("/snapshots")
        && req.uri().query().is_some_and(|q| q.contains("volume_id="));
    let resp = next.run(req).await;
    if !listing || resp.status() != StatusCode::OK {
        return resp;
    }
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    if body.as_ref() == b"[]" {
        let err = json!({ "errors": [{ "code": "Not Found", "message": "no snapshots" }] });
        return (StatusCode::NOT_FOUND, Json(err)).into_response();
    }
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fault_in_the_local_csp_fails_only_its_checks() {
    let mut data = Scratch::new("fault");
    let csp = data.open_csp();
    let app = csp
        .router()
        .layer(axum::middleware::from_fn(empty_snapshot_list_is_404));
    let (addr, _stop) = serve_router(app).await;
    let base = format!("http://{addr}");
    let mut opts = CheckOptions::new(base.clone(), USER, PASSWORD);
    opts.protocol = "local".into();
    let (report, _) = check(opts).await;

    let failed: Vec<&str> = report
        .results
        .iter()
        .filter(|r| r.outcome != Outcome::Pass)
        .map(|r| r.id)
        .collect();
    // C14 lists V1 before any snapshot, C35 after S1 is gone: both hit the empty list.
    assert_eq!(failed, ["C14", "C35"]);
    assert!(result(&report, "C14").detail.contains("(want 200)"));
    let left: Vec<String> = leftover_names(&base)
        .await
        .into_iter()
        .filter(|n| n.contains("vbcheck-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

// ---- a deliberately broken CSP ----

fn bare(status: StatusCode, message: &str) -> axum::response::Response {
    // The bare error form: accepted by clients, but not what a CSP should send (C05).
    (
        status,
        Json(json!({ "code": status.canonical_reason(), "message": message })),
    )
        .into_response()
}

const FAKE_TOKEN: &str = "fake-session-0f3b9a2c77d14e58";

async fn fake_tokens(Json(body): Json<Value>) -> axum::response::Response {
    if body["password"] == PASSWORD {
        Json(json!({ "id": "t1", "username": USER, "session_token": FAKE_TOKEN })).into_response()
    } else {
        bare(StatusCode::UNAUTHORIZED, "bad credentials")
    }
}

async fn fake_volumes(headers: HeaderMap) -> axum::response::Response {
    if headers.get("x-auth-token").and_then(|v| v.to_str().ok()) != Some(FAKE_TOKEN) {
        return bare(StatusCode::UNAUTHORIZED, "no session");
    }
    // The fault under test: a name lookup that matches nothing answers 200 [] (B1).
    Json(json!([])).into_response()
}

fn broken_csp() -> Router {
    Router::new()
        .route("/containers/v1/tokens", post(fake_tokens))
        .route("/containers/v1/volumes", get(fake_volumes))
        .fallback(|| async { bare(StatusCode::NOT_FOUND, "no such thing") })
}

#[tokio::test]
async fn a_broken_csp_is_caught() {
    let (addr, _stop) = serve_router(broken_csp()).await;
    let mut opts = CheckOptions::new(format!("http://{addr}"), USER, PASSWORD);
    opts.protocol = "local".into();
    opts.poll_limit = Duration::from_secs(2);
    let (report, lines) = check(opts).await;

    assert_eq!(report.results.len(), 40);
    let ids: Vec<&str> = report.results.iter().map(|r| r.id).collect();
    assert_eq!(ids[0], "C01");
    assert_eq!(ids[39], "C40");
    assert_eq!(result(&report, "C01").outcome, Outcome::Pass);
    let c07 = result(&report, "C07");
    assert_eq!(c07.outcome, Outcome::Fail, "{c07}");
    assert_eq!(
        c07.to_string(),
        "FAIL  C07 M  lookup of an unused name: got 200 [] (want 404)"
    );
    let c05 = result(&report, "C05");
    assert_eq!(c05.outcome, Outcome::Warn, "{c05}");
    assert!(result(&report, "C08").outcome == Outcome::Pass);
    assert!(!report.ok());
    assert!(report.failed() > 0);
    // S-level failures warn, never fail.
    assert!(report
        .results
        .iter()
        .all(|r| r.level == 'M' || r.outcome != Outcome::Fail));
    for l in &lines {
        assert!(
            !l.contains(PASSWORD) && !l.contains(FAKE_TOKEN),
            "secret in {l}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_csp_fails_without_an_error() {
    // Bind and drop: nothing listens on that port afterwards.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let opts = CheckOptions::new(format!("http://{addr}"), USER, PASSWORD);
    let (report, _) = check(opts).await;
    assert_eq!(result(&report, "C01").outcome, Outcome::Fail);
    assert_eq!(result(&report, "C11").outcome, Outcome::Skip);
    assert!(!report.ok());
}

#[tokio::test]
async fn a_bad_url_is_an_error() {
    let opts = CheckOptions::new("ftp://example", USER, PASSWORD);
    let mut ignore = |_: &CheckResult| {};
    assert!(conformance::run(&opts, &mut ignore).await.is_err());
}
