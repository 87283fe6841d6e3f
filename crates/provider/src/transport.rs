//! How a request reaches a CSP. The client (tokens, retries of 401, error classification)
//! is the same whatever carries the bytes; the carriers are injected: HTTP(S) through
//! reqwest (feature `http`), the embedded CSP's router in-process (feature `in-process`), or
//! a test's own. The engine depends on this crate without either feature, which keeps
//! HTTP and server code out of its dependency tree.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use tokio::sync::Semaphore;
use url::Url;
use volbridge_base::Result;

/// One request, with the client's limits: a transport holds a permit of `limit` while the
/// request is in flight, and answers within `timeout`.
pub struct Exchange<'a> {
    pub method: &'a Method,
    pub url: &'a Url,
    pub query: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
    pub headers: HeaderMap,
    pub limit: &'a Semaphore,
    /// Delays between attempts after connection failures (never after timeouts).
    pub retry_delays: &'a [Duration],
    pub timeout: Duration,
}

pub type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Result<Reply>> + Send + 'a>>;

/// Carries one exchange to the CSP and brings back its answer, whatever the status.
/// Failures to reach the CSP are errors (Unavailable, DeadlineExceeded); the client
/// removes secrets from their text.
pub trait Transport: Send + Sync + 'static {
    fn send<'a>(&'a self, exchange: Exchange<'a>) -> ReplyFuture<'a>;
}

/// An HTTP answer of any status; 401 never reaches callers (A4 handles it).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

/// One debug line per CSP exchange (never a body: they may hold secrets).
#[cfg(any(feature = "http", feature = "in-process"))]
pub(crate) fn log_call<E: std::fmt::Display>(
    method: &Method,
    url: &Url,
    start: std::time::Instant,
    outcome: std::result::Result<StatusCode, E>,
) {
    let ms = start.elapsed().as_millis() as u64;
    match outcome {
        Ok(status) => {
            tracing::debug!(%method, path = url.path(), status = status.as_u16(), ms, "CSP call")
        }
        Err(e) => tracing::debug!(%method, path = url.path(), ms, error = %e, "CSP call failed"),
    }
}
