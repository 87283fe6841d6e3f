//! Probes and metrics: `/healthz` (the process answers), `/readyz` (start-up reconciliation
//! done and the default backend answers), `/metrics` (Prometheus), and the middleware
//! that counts every admin API call. Also served on `--metrics-listen` (TCP, read-only).

use super::AdminState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::time::{Duration, Instant};

/// Paths answered during start-up too: probes must see the daemon starting.
pub const UNGATED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// 503 while the start-up reconciliation runs or the default backend does not answer
/// within 2 s; 200 otherwise.
pub async fn readyz(State(state): State<AdminState>) -> Response {
    if !*state.ready.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: reconciling the node\n",
        )
            .into_response();
    }
    let asked = tokio::time::timeout(Duration::from_secs(2), state.engine.capacity(None)).await;
    match asked {
        Ok(Ok(_)) => "ok\n".into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("default backend: {}\n", e.message),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "default backend: no answer in 2 s\n",
        )
            .into_response(),
    }
}

pub async fn metrics(State(state): State<AdminState>) -> Response {
    let attached = state.engine.attachments().map_or(0, |a| a.len());
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(attached),
    )
        .into_response()
}

/// Counts a routed call as `<METHOD> <route template>` with its HTTP status.
pub async fn count(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let operation = match request.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", request.method(), path.as_str()),
        None => format!("{} (unrouted)", request.method()),
    };
    let response = next.run(request).await;
    crate::metrics::operation(
        "admin",
        &operation,
        crate::metrics::result_of_http(response.status().as_u16()),
        started.elapsed(),
    );
    response
}

/// The `--metrics-listen` router: probes and metrics only, nothing that changes state.
pub fn probes(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}
