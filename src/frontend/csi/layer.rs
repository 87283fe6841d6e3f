//! The tower layer around every CSI service: a request id and a span, the request logged
//! with its secrets redacted, required fields checked (INVALID_ARGUMENT before any state is
//! touched), and the per-volume guard (a second call on a busy volume gets ABORTED at once).
//! Services behind it see only well-formed requests on a volume nobody else is working on.

use super::rpc::{self, Inspected};
use crate::engine::OpGuards;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};
use tracing::Instrument;

#[derive(Clone, Default)]
pub struct CsiLayer {
    guards: OpGuards,
}

impl<S> Layer<S> for CsiLayer {
    type Service = CsiService<S>;

    fn layer(&self, inner: S) -> CsiService<S> {
        CsiService {
            inner,
            guards: self.guards.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CsiService<S> {
    inner: S,
    guards: OpGuards,
}

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
        let guards = self.guards.clone();
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
            let span = tracing::info_span!("csi", req = %id, rpc = %seen.method);
            let _guard = match &seen.guard {
                None => None,
                Some(key) => match guards.try_lock(key) {
                    Ok(g) => Some(g),
                    Err(_) => {
                        let status = Status::aborted(format!(
                            "an operation on {key} is already in progress; retry later"
                        ));
                        span.in_scope(
                            || tracing::info!(code = ?status.code(), "{}", status.message()),
                        );
                        return Ok(status.into_http());
                    }
                },
            };
            span.in_scope(|| tracing::debug!(request = %seen.summary, "received"));
            let req = http::Request::from_parts(parts, Body::new(http_body_util::Full::new(bytes)));
            let mut response = inner.call(req).instrument(span.clone()).await?;
            if !seen.secrets.is_empty() {
                scrub_answer(&mut response, &seen.secrets);
            }
            span.in_scope(|| log_done(&seen, &response, started));
            Ok(response)
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
    match Status::from_header_map(response.headers()) {
        Some(s) if s.code() != tonic::Code::Ok => {
            tracing::info!(code = ?s.code(), micros, "{}", s.message())
        }
        _ if seen.quiet => tracing::debug!(micros, "ok"),
        _ => tracing::info!(micros, "ok"),
    }
}

fn log_rejected(id: &str, path: &str, status: &Status) {
    tracing::info!(req = %id, rpc = %path, code = ?status.code(), "{}", status.message());
}
