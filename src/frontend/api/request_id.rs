//! One request id per admin call: in a tracing span around the handler and in the
//! `x-request-id` response header, so a user's report can be found in the log.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tracing::Instrument;

static NEXT: AtomicU64 = AtomicU64::new(1);

pub async fn tag(req: Request, next: Next) -> Response {
    let id = format!(
        "a{:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let span =
        tracing::info_span!("admin", req = %id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "done"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}
