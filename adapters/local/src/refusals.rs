//! Bodies for the requests hyper refuses itself. hyper answers a request it cannot parse
//! before any handler runs, with a canned head and no body: 400 (a malformed request line
//! or header, a path with bytes that are not printable ASCII), 414 (a path over 64 KiB),
//! 431 (headers too large). A client of a JSON API then gets an answer without the error
//! shape it reads everywhere else.
//!
//! [`RefusalBodies`] wraps a listener; on each connection it watches what hyper writes and
//! sends, in place of such a canned head, the same status with a body made by the server
//! (`Connection: close`: hyper closes the connection after a parse error anyway). The
//! connection writes one flat buffer per flush (`is_write_vectored` is false) so that a head
//! is seen whole. The admin API, the Docker endpoint and this CSP's own listener use it, each
//! with its own error shape.

use axum::response::IntoResponse;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The body of a refusal: `(content type, body)` for a status hyper answered itself.
pub type RefusalBody = fn(u16) -> (&'static str, String);

/// A listener whose connections give hyper's own refusals a body ([module docs](self)).
pub struct RefusalBodies<L> {
    inner: L,
    body: RefusalBody,
}

impl<L> RefusalBodies<L> {
    pub fn new(inner: L, body: RefusalBody) -> Self {
        RefusalBodies { inner, body }
    }
}

impl<L: axum::serve::Listener> axum::serve::Listener for RefusalBodies<L> {
    type Io = RefusalIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        (RefusalIo::new(io, self.body), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// One connection of [`RefusalBodies`].
pub struct RefusalIo<T> {
    inner: T,
    body: RefusalBody,
    /// A replacement being written, and how much of it went out.
    pending: Vec<u8>,
    sent: usize,
}

impl<T> RefusalIo<T> {
    pub fn new(inner: T, body: RefusalBody) -> Self {
        RefusalIo {
            inner,
            body,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> RefusalIo<T> {
    /// Writes what is left of a replacement.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for RefusalIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for RefusalIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        ready!(me.drain(cx))?;
        if let Some(status) = canned_refusal(buf) {
            let (content_type, body) = (me.body)(status);
            me.pending = replacement(status, content_type, &body);
            me.sent = 0;
            // The canned head counts as written; the replacement goes out now or at the
            // next write, flush or shutdown.
            if let Poll::Ready(Err(e)) = me.drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut me.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// The most header bytes a request may carry (names, values and line framing). hyper's own
/// limit (about 400 KiB of read buffer) is not a bound on the headers: a head that arrives
/// in one large read is parsed whole, so the same request got 431 or 200 depending on how
/// the kernel handed it over. This limit, well below hyper's, is checked on every request.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// Answers 431 with `body`'s shape for a request whose headers exceed [`MAX_HEADER_BYTES`]
/// ([`with_header_limit`] installs it).
async fn header_limit(
    axum::extract::State(body): axum::extract::State<RefusalBody>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size <= MAX_HEADER_BYTES {
        return next.run(req).await;
    }
    let (content_type, text) = body(431);
    (
        axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (axum::http::header::CONNECTION, "close"),
        ],
        text,
    )
        .into_response()
}

/// `router` with the header limit answered in the server's own error shape.
pub fn with_header_limit<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    body: RefusalBody,
) -> axum::Router<S> {
    router.layer(axum::middleware::from_fn_with_state(body, header_limit))
}

/// The statuses hyper answers itself after a parse error.
const CANNED: [u16; 3] = [400, 414, 431];

/// The status of `buf` when it is exactly one of hyper's canned refusals: a status line
/// with one of [`CANNED`], headers without a content type, and nothing after the head.
fn canned_refusal(buf: &[u8]) -> Option<u16> {
    let rest = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    let status: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    if !CANNED.contains(&status) || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = std::str::from_utf8(buf).ok()?;
    // One head only, and no body: the first blank line is the end of the buffer.
    if head.find("\r\n\r\n")? + 4 != head.len() {
        return None;
    }
    let lower = head.to_ascii_lowercase();
    if lower.contains("\r\ncontent-type:") || lower.contains("\r\ntransfer-encoding:") {
        return None;
    }
    let has_body = lower
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("content-length:"))
        .any(|v| v.trim() != "0");
    (!has_body).then_some(status)
}

fn replacement(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The local CSP's own refusal bodies: the wrapped CSP error (csp-api.md §4.10).
pub fn csp_body(status: u16) -> (&'static str, String) {
    let code = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = volbridge_proto::csp::ErrorBody::new(code, refusal_sentence(status));
    (
        "application/json",
        serde_json::to_string(&body).unwrap_or_default(),
    )
}

/// What went wrong, for a status hyper answered itself (or a request whose task panicked).
pub fn refusal_sentence(status: u16) -> &'static str {
    match status {
        414 => "the request's path is longer than the server reads (64 KiB); names and ids are short: check what built the URL",
        431 => "the request's headers are larger than the server reads (64 KiB); send fewer or shorter headers",
        500 => "the server failed while answering; see its log, then retry",
        _ => "the request is not valid HTTP/1.1: check the request line (a method, a path of printable ASCII with other bytes percent-encoded, the version) and the headers",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canned_heads_are_replaced() {
        let canned = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
        assert_eq!(canned_refusal(canned), Some(414));
        assert_eq!(
            canned_refusal(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            canned_refusal(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n"),
            Some(431)
        );
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            b"{\"errors\":[]}",
            b"",
        ] {
            assert_eq!(canned_refusal(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn the_replacement_is_framed() {
        let (ct, body) = csp_body(414);
        let text = String::from_utf8(replacement(414, ct, &body)).unwrap();
        assert!(text.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{text}");
        let (head, rest) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", rest.len())));
        let v: serde_json::Value = serde_json::from_str(rest).unwrap();
        assert_eq!(v["errors"][0]["code"], "URI Too Long");
    }

    #[tokio::test]
    async fn a_canned_head_goes_out_with_a_body() {
        use tokio::io::AsyncWriteExt;
        let (client, server) = tokio::io::duplex(4096);
        let mut io = RefusalIo::new(server, csp_body);
        io.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        io.flush().await.unwrap();
        io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        let mut out = String::new();
        use tokio::io::AsyncReadExt;
        let mut client = client;
        client.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"),
            "{out}"
        );
        assert!(out.contains("\"errors\""), "{out}");
        assert!(
            out.ends_with("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            "{out}"
        );
    }
}
