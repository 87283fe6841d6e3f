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
