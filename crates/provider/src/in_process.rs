//! The embedded CSP's router, called in the daemon's own process: the same REST contract
//! (paths, tokens, JSON bodies, statuses) without a loopback connection, whose client and
//! server halves were most of the daemon's CPU per volume operation. The handlers run in
//! the caller's task, bounded by the same timeout an HTTP call has.

use std::time::Instant;

use tower::ServiceExt;
use volbridge_base::{Error, ErrorKind};

use crate::transport::{log_call, Reply};
use crate::transport::{Exchange, ReplyFuture, Transport};

pub(crate) struct InProcess(pub(crate) axum::Router);

impl Transport for InProcess {
    fn send<'a>(&'a self, x: Exchange<'a>) -> ReplyFuture<'a> {
        Box::pin(async move {
            let mut url = x.url.clone();
            if !x.query.is_empty() {
                url.query_pairs_mut().extend_pairs(x.query);
            }
            let _permit = x.limit.acquire().await.expect("the limit is never closed");
            let start = Instant::now();
            let body = axum::body::Body::from(x.body.map(<[u8]>::to_vec).unwrap_or_default());
            let mut req = http::Request::new(body);
            *req.method_mut() = x.method.clone();
            *req.uri_mut() = url
                .as_str()
                .parse()
                .map_err(|e| Error::internal(format!("cannot form a CSP request URI: {e}")))?;
            *req.headers_mut() = x.headers;
            let exchange = async {
                let resp = match self.0.clone().oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                };
                let status = resp.status();
                let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                    .await
                    .map_err(|e| Error::internal(format!("CSP answer unreadable: {e}")))?;
                Ok(Reply {
                    status,
                    // Takes the buffer over (no copy: the CSP's answer is one chunk).
                    body: Vec::from(body),
                })
            };
            let result = tokio::time::timeout(x.timeout, exchange)
                .await
                .map_err(|_| {
                    Error::new(
                        ErrorKind::DeadlineExceeded,
                        format!("CSP did not answer in time ({} s)", x.timeout.as_secs()),
                    )
                })
                .and_then(|r| r);
            log_call(x.method, &url, start, result.as_ref().map(|r| r.status));
            result
        })
    }
}
