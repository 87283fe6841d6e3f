//! The tower layer around every CSI service: a request id and a span, the request logged
//! with its secrets redacted, and required fields checked (INVALID_ARGUMENT before any
//! state is touched). Services behind it see only well-formed requests.
//!
//! Each call runs to its end on its own task, kept in the server's [`TaskTracker`]: a
//! caller that gives up (its deadline, a dropped connection) drops only the wait for the
//! answer, never the engine's work at an arbitrary step between its records and the
//! backend's state. The retry finds what was made.
//!
//! A second call on a busy volume is refused by the engine, not here: the engine's
//! operation guards are the one lock table, and every CSI call passes `Wait::No` (or
//! `Wait::Until` for creates), so the engine answers ABORTED at once.

use super::rpc::{self, Inspected};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};
use tracing::Instrument;

#[derive(Clone)]
pub struct CsiLayer {
    ready: watch::Receiver<bool>,
    tasks: TaskTracker,
}

impl CsiLayer {
    pub fn new(ready: watch::Receiver<bool>, tasks: TaskTracker) -> CsiLayer {
        CsiLayer { ready, tasks }
    }
}

impl<S> Layer<S> for CsiLayer {
    type Service = CsiService<S>;

    fn layer(&self, inner: S) -> CsiService<S> {
        CsiService {
            inner,
            ready: self.ready.clone(),
            tasks: self.tasks.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CsiService<S> {
    inner: S,
    ready: watch::Receiver<bool>,
    tasks: TaskTracker,
}

/// Identity answers at once, also during start-up (Probe reports it).
const IDENTITY: &str = "/csi.v1.Identity/";

static NEXT: AtomicU64 = AtomicU64::new(1);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for CsiService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The ready clone answers this call; a fresh clone waits for the next poll_ready.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let mut ready = self.ready.clone();
        let tasks = self.tasks.clone();
        Box::pin(async move {
            let id = format!("c{}", NEXT.fetch_add(1, Ordering::Relaxed));
            let started = Instant::now();
            let (parts, body) = req.into_parts();
            let bytes = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(status) => return Ok(status.into_http()),
            };
            let seen = match frame(&bytes).and_then(|msg| rpc::inspect(parts.uri.path(), msg)) {
                Some(Ok(seen)) => seen,
                Some(Err(status)) => {
                    log_rejected(&id, parts.uri.path(), &status);
                    let method = parts.uri.path().rsplit('/').next().unwrap_or_default();
                    count(method, status.code(), started);
                    return Ok(status.into_http());
                }
                // Not one of ours, or compressed: tonic gives the proper answer.
                None => {
                    let req = http::Request::from_parts(
                        parts,
                        Body::new(http_body_util::Full::new(bytes)),
                    );
                    return inner.call(req).await;
                }
            };
            if !parts.uri.path().starts_with(IDENTITY) {
                let _ = ready.wait_for(|r| *r).await;
            }
            let span = tracing::info_span!("csi", req = %id, rpc = %seen.method);
            span.in_scope(|| tracing::debug!(request = %seen.summary, "received"));
            let req = http::Request::from_parts(parts, Body::new(http_body_util::Full::new(bytes)));
            let method = seen.method;
            // The answer is scrubbed, logged and counted on the task too: a call whose
            // caller left still leaves its line and its metric.
            let work = tasks.spawn(
                async move {
                    let mut response = inner.call(req).await?;
                    if !seen.secrets.is_empty() {
                        scrub_answer(&mut response, &seen.secrets);
                    }
                    log_done(&seen, &response, started);
                    Ok(response)
                }
                .instrument(span),
            );
            match work.await {
                Ok(answer) => answer,
                // It panicked; tokio's hook logged where.
                Err(_) => Ok(Status::internal(format!(
                    "{method} failed inside the daemon; see its log, then retry"
                ))
                .into_http()),
            }
        })
    }
}

/// Replaces a failure's status with one whose message holds none of the request's secrets.
fn scrub_answer(response: &mut http::Response<Body>, secrets: &[String]) {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return;
    };
    let scrubbed = rpc::scrub(status.clone(), secrets);
    if scrubbed.message() != status.message() {
        let _ = scrubbed.add_header(response.headers_mut());
    }
}

/// The message of a unary gRPC request body: one uncompressed frame.
fn frame(body: &Bytes) -> Option<&[u8]> {
    let (head, rest) = body.split_at_checked(5)?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    (head[0] == 0 && rest.len() == len).then_some(rest)
}

/// Tonic answers failures "trailers-only": the status sits in the headers. A success has
/// no status header (it comes in the trailers).
fn log_done(seen: &Inspected, response: &http::Response<Body>, started: Instant) {
    let micros = started.elapsed().as_micros() as u64;
    let status = Status::from_header_map(response.headers());
    count(
        seen.method,
        status.as_ref().map_or(tonic::Code::Ok, Status::code),
        started,
    );
    match status {
        Some(s) if s.code() != tonic::Code::Ok => {
            tracing::info!(code = ?s.code(), micros, "{}", s.message())
        }
        _ if seen.quiet => tracing::debug!(micros, "ok"),
        _ => tracing::info!(micros, "ok"),
    }
}

fn count(method: &str, code: tonic::Code, started: Instant) {
    let result = crate::metrics::result_of_grpc(code);
    crate::metrics::operation("csi", method, result, started.elapsed());
}

fn log_rejected(id: &str, path: &str, status: &Status) {
    tracing::info!(req = %id, rpc = %path, code = ?status.code(), "{}", status.message());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::time::Duration;

    fn call(layer: &CsiLayer, path: &str) -> BoxFuture<Result<http::Response<Body>, Infallible>> {
        let inner = tower::service_fn(|_req: http::Request<Body>| async {
            Ok::<_, Infallible>(http::Response::new(Body::empty()))
        });
        let mut service = layer.layer(inner);
        // An empty message: one uncompressed frame of length 0.
        let body = Body::new(http_body_util::Full::new(Bytes::from_static(&[0; 5])));
        let req = http::Request::post(path).body(body).unwrap();
        service.call(req)
    }

    #[tokio::test]
    async fn calls_wait_for_start_up_but_identity_answers_at_once() {
        let (tx, rx) = watch::channel(false);
        let layer = CsiLayer::new(rx, TaskTracker::new());
        let info = call(&layer, "/csi.v1.Identity/GetPluginInfo");
        tokio::time::timeout(Duration::from_secs(5), info)
            .await
            .expect("Identity is not held")
            .unwrap();
        let mut node = call(&layer, "/csi.v1.Node/NodeGetCapabilities");
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut node)
                .await
                .is_err(),
            "a Node call must wait for the start-up reconciliation"
        );
        tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), node)
            .await
            .expect("released once ready")
            .unwrap();
    }
}
