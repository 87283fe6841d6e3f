//! A request runs to its end even when its client goes away. hyper drops a handler's future
//! when the connection closes (a CLI's Ctrl-C, dockerd giving up on a plugin call, an array
//! client retrying on a new connection), which would stop it at an arbitrary await: an
//! image made but not recorded, a mount made and its record not written. Each request runs
//! on a task in a [`TaskTracker`]; the server waits for the tracker at stop.

use crate::refusals::RefusalBody;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// `router` with every request run on its own task in `tasks`; a request whose task
/// panicked answers 500 in `body`'s shape.
pub fn run_to_the_end<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    tasks: TaskTracker,
    body: RefusalBody,
) -> Router<S> {
    router.layer(axum::middleware::from_fn_with_state(
        (tasks, body),
        whole_request,
    ))
}

async fn whole_request(
    State((tasks, body)): State<(TaskTracker, RefusalBody)>,
    req: Request,
    next: Next,
) -> Response {
    match tasks.spawn(next.run(req)).await {
        Ok(response) => response,
        // It panicked; tokio's hook logged where.
        Err(_) => {
            let (content_type, text) = body(500);
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                [(axum::http::header::CONTENT_TYPE, content_type)],
                text,
            )
                .into_response()
        }
    }
}

/// How long a server's stop waits for the requests still running. The daemon's whole stop
/// (every server, the backends' logout, the pool's unmount) stays under systemd's
/// TimeoutStopSec and Kubernetes' 30 s grace period.
pub const FINISH_LIMIT: Duration = Duration::from_secs(6);

/// Closes `tasks` and waits for the requests still running, up to `limit`; `false` (and a
/// warning naming `server`) when some still run then. They are the next start's, as after
/// a crash.
pub async fn finish(tasks: &TaskTracker, limit: Duration, server: &str) -> bool {
    tasks.close();
    if tokio::time::timeout(limit, tasks.wait()).await.is_ok() {
        return true;
    }
    tracing::warn!(
        server,
        running = tasks.len(),
        "requests still running at shutdown; the next start's recovery finishes them"
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_request_whose_client_left_still_ends() {
        let ended = Arc::new(AtomicBool::new(false));
        let seen = ended.clone();
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
        let router = Router::new().route(
            "/slow",
            axum::routing::post(move || {
                let seen = seen.clone();
                let started_tx = started_tx.clone();
                async move {
                    if let Some(tx) = started_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    seen.store(true, Ordering::SeqCst);
                    "done"
                }
            }),
        );
        let tasks = TaskTracker::new();
        let app = run_to_the_end(router, tasks.clone(), crate::refusals::csp_body);
        let req = Request::post("/slow")
            .body(axum::body::Body::empty())
            .unwrap();
        let call = tokio::spawn(tower::ServiceExt::oneshot(app, req));
        started.await.unwrap();
        // The client goes away: its side of the call is dropped.
        call.abort();
        assert!(finish(&tasks, Duration::from_secs(5), "test").await);
        assert!(ended.load(Ordering::SeqCst), "the request was cut off");
    }

    #[tokio::test]
    async fn a_panic_answers_500_in_the_servers_shape() {
        let router = Router::new().route(
            "/bad",
            axum::routing::get(|| async {
                if true {
                    panic!("a bug");
                }
                "never"
            }),
        );
        let app = run_to_the_end(router, TaskTracker::new(), crate::refusals::csp_body);
        let req = Request::get("/bad")
            .body(axum::body::Body::empty())
            .unwrap();
        let answer = tower::ServiceExt::oneshot(app, req).await.unwrap();
        assert_eq!(answer.status(), 500);
        let body = axum::body::to_bytes(answer.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("see its log"), "{text}");
    }
}
