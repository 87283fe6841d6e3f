//! HTTP core of the CSP client: headers, tokens (csp-api.md §2), transport retries and the
//! one place where CSP answers become [`Error`]s (B40–B42).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};
use tracing::debug;
use url::Url;
use volbridge_proto::csp::{
    AccessToken, ErrorBody, API_PREFIX, ARRAY_HEADER, AUTH_HEADER, INSUFFICIENT_SPACE,
};

use crate::credentials::Credentials;
use crate::transport::{Exchange, Reply, Transport};
use volbridge_base::{Error, ErrorKind, Result};

/// Proactive renewal margin (A7).
const RENEW_MARGIN_SECS: i64 = 60;

/// Tuning of one backend's client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Per-backend limit on concurrent CSP calls.
    pub max_inflight: usize,
    /// Overrides the credentials' `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// Delays between attempts after connection failures (never after timeouts).
    pub retry_delays: Vec<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_inflight: 64,
            timeout: None,
            retry_delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(3),
            ],
        }
    }
}

/// Which B41 row a 409 falls in: only creates (V2, S2, P2) mean "name taken".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Create,
    Other,
}

#[derive(Clone)]
struct Token {
    id: Option<String>,
    value: String,
    /// Local instant after which the token should be renewed, if the CSP told its lifetime.
    renew_at: Option<i64>,
}

impl Token {
    fn from_answer(t: AccessToken) -> Result<Token> {
        let value = t
            .session_token
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::unavailable("CSP login answered without a session token"))?;
        let now = unix_now();
        // Measured against the CSP's own creation time when present, so clock skew between
        // the hosts cannot make every token look expired.
        let renew_at = t.expiry_time.map(|exp| match t.creation_time {
            Some(created) => {
                let lifetime = exp - created;
                now + lifetime - RENEW_MARGIN_SECS.min(lifetime / 2).max(0)
            }
            None => exp - RENEW_MARGIN_SECS,
        });
        Ok(Token {
            id: t.id.filter(|i| !i.is_empty()),
            value,
            renew_at,
        })
    }

    fn fresh(&self) -> bool {
        self.renew_at.is_none_or(|at| unix_now() < at)
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct Inner {
    creds: Credentials,
    base_url: String,
    api: Url,
    transport: Arc<dyn Transport>,
    timeout: Duration,
    limit: Semaphore,
    retry_delays: Vec<Duration>,
    /// Held across a login, which is what makes logins single-flight (A5).
    token: Mutex<Option<Token>>,
    /// Bumped before and after every call that may change the CSP (any method but GET).
    writes: AtomicU64,
}

/// A client for one backend; cheap to clone, all clones share the token and the limit.
#[derive(Clone)]
pub struct CspClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CspClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CspClient")
            .field("base_url", &self.inner.base_url)
            .field("backend", &self.inner.creds.backend())
            .finish()
    }
}

/// Builds the error of a non-2xx answer (B40–B42); every flow goes through here.
pub(crate) fn classify(status: StatusCode, body: &[u8], op: Op) -> Error {
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("");
    let head = format!("CSP answered {code} {reason}")
        .trim_end()
        .to_owned();
    // Gateways answer with their own pages; nothing in them is a CSP error.
    if matches!(code, 502..=504) {
        return Error::unavailable(head);
    }
    let details = ErrorBody::parse(body, reason).message();
    let message = if details.is_empty() {
        head
    } else {
        format!("{head}: {details}")
    };
    if message.to_ascii_lowercase().contains(INSUFFICIENT_SPACE) {
        return Error::new(ErrorKind::ResourceExhausted, message);
    }
    let kind = match code {
        400 | 413 | 414 | 422 => ErrorKind::InvalidArgument,
        401 | 403 | 429 => ErrorKind::Unavailable,
        404 | 410 => ErrorKind::NotFound,
        408 => ErrorKind::DeadlineExceeded,
        409 if op == Op::Create => ErrorKind::AlreadyExists,
        409 | 412 | 423 => ErrorKind::FailedPrecondition,
        405 | 501 => ErrorKind::Unimplemented,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, message)
}

/// Bumps a write counter when made and again when dropped (however the call ends).
struct WriteMark<'a>(&'a AtomicU64);

impl<'a> WriteMark<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        WriteMark(counter)
    }
}

impl Drop for WriteMark<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

impl CspClient {
    /// A client over HTTP(S) (reqwest with rustls).
    #[cfg(feature = "http")]
    pub fn new(creds: Credentials, opts: ClientOptions) -> Result<CspClient> {
        let timeout = opts.timeout.unwrap_or(creds.timeout());
        let transport = crate::http_transport::HttpTransport::new(&creds, timeout)?;
        Self::with_transport(creds, opts, Arc::new(transport))
    }

    /// A client of an embedded CSP that calls `router` directly. `creds` still name the
    /// CSP's listening address (shown to operators) and its user: logins and tokens work
    /// exactly as over HTTP.
    #[cfg(feature = "in-process")]
    pub fn in_process(
        creds: Credentials,
        opts: ClientOptions,
        router: axum::Router,
    ) -> Result<CspClient> {
        let transport = crate::in_process::InProcess(router);
        Self::with_transport(creds, opts, Arc::new(transport))
    }

    /// A client whose requests go through `transport` (tests inject their own).
    pub fn with_transport(
        creds: Credentials,
        opts: ClientOptions,
        transport: Arc<dyn Transport>,
    ) -> Result<CspClient> {
        let base_url = creds.base_url();
        let api = Url::parse(&format!("{base_url}{API_PREFIX}"))
            .map_err(|e| Error::invalid("backend", format!("cannot form a CSP URL: {e}")))?;
        Ok(CspClient {
            inner: Arc::new(Inner {
                timeout: opts.timeout.unwrap_or(creds.timeout()),
                creds,
                base_url,
                api,
                transport,
                limit: Semaphore::new(opts.max_inflight.max(1)),
                retry_delays: opts.retry_delays,
                token: Mutex::new(None),
                writes: AtomicU64::new(0),
            }),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    pub fn credentials(&self) -> &Credentials {
        &self.inner.creds
    }

    /// A counter of the changes this client made: bumped when a call that may change the
    /// CSP (anything but GET) starts and again when it ends. A listing read between two
    /// equal values misses no change made through this client (other clients of the same
    /// CSP are not seen).
    pub fn write_generation(&self) -> u64 {
        self.inner.writes.load(Ordering::Acquire)
    }

    /// Best-effort logout (A8): forgets the token and deletes it on the CSP.
    pub async fn logout(&self) {
        let Some(token) = self.inner.token.lock().await.take() else {
            return;
        };
        let Some(id) = token.id.clone() else {
            return;
        };
        let url = self.url(&["tokens", &id]);
        match self
            .send(&Method::DELETE, &url, &[], None, Some(&token.value))
            .await
        {
            Ok(r) if r.status.is_success() || r.status == StatusCode::NOT_FOUND => {}
            Ok(r) => debug!(status = r.status.as_u16(), "CSP logout refused"),
            Err(e) => debug!(error = %e.message, "CSP logout failed"),
        }
    }

    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.api.clone();
        url.path_segments_mut()
            .expect("http(s) URLs have a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// Removes every secret this client knows of from text that came from the CSP, as whole
    /// tokens (see [`volbridge_base::redact::redact_values`]), however short.
    pub(crate) fn scrub(&self, mut err: Error, extra: &[&str]) -> Error {
        let password = self.inner.creds.password();
        let secrets: Vec<&str> = std::iter::once(password)
            .chain(extra.iter().copied())
            .collect();
        err.message = volbridge_base::redact::redact_values(&err.message, &secrets);
        err
    }

    /// One exchange with the CSP: over HTTP with transport retries on connection failures
    /// (§1.3), or in-process.
    async fn send(
        &self,
        method: &Method,
        url: &Url,
        query: &[(&str, &str)],
        body: Option<&[u8]>,
        token: Option<&str>,
    ) -> Result<Reply> {
        let inner = &*self.inner;
        let mut headers = HeaderMap::new();
        let json = HeaderValue::from_static("application/json");
        headers.insert(ACCEPT, json.clone());
        headers.insert(CONTENT_TYPE, json);
        if let Some(token) = token {
            let value = HeaderValue::from_str(token).map_err(|_| {
                Error::internal("the CSP issued a token that is not a header value")
            })?;
            headers.insert(AUTH_HEADER, value);
            if inner.creds.is_service_mode() {
                let array = HeaderValue::from_str(inner.creds.backend())
                    .map_err(|_| Error::invalid("backend", "is not a valid header value"))?;
                headers.insert(ARRAY_HEADER, array);
            }
        }
        let started = Instant::now();
        let exchange = Exchange {
            method,
            url,
            query,
            body,
            headers,
            limit: &inner.limit,
            retry_delays: &inner.retry_delays,
            timeout: inner.timeout,
        };
        let result = inner
            .transport
            .send(exchange)
            .await
            .map_err(|e| self.scrub(e, &[]));
        self.count(method, url, &result, started.elapsed());
        result
    }

    fn count(&self, method: &Method, url: &Url, result: &Result<Reply>, elapsed: Duration) {
        let path = url.path();
        let rest = path
            .find(API_PREFIX)
            .map_or(path, |i| &path[i + API_PREFIX.len()..]);
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let failure = match result {
            Ok(r) if r.status.is_server_error() => Some(r.status.as_str().to_owned()),
            Ok(_) => None,
            Err(e) if e.kind == ErrorKind::DeadlineExceeded => Some("timeout".to_owned()),
            Err(_) => Some("unreachable".to_owned()),
        };
        crate::observe::csp_call(&crate::observe::CspCall {
            backend: self.inner.creds.backend(),
            method: method.as_str(),
            route: &crate::observe::csp_route(&segments),
            failure: failure.as_deref(),
            elapsed,
        });
    }

    /// A1/A2: one login; the caller holds the token lock.
    async fn login(&self) -> Result<Token> {
        let creds = &self.inner.creds;
        let body = AccessToken {
            username: Some(creds.username().to_owned()),
            password: Some(creds.password().to_owned()),
            array_ip: creds.is_service_mode().then(|| creds.backend().to_owned()),
            ..AccessToken::default()
        };
        let body = serde_json::to_vec(&body).expect("tokens serialise");
        let url = self.url(&["tokens"]);
        let reply = self
            .send(&Method::POST, &url, &[], Some(&body), None)
            .await?;
        debug!(
            backend = creds.backend(),
            status = reply.status.as_u16(),
            "CSP login"
        );
        match reply.status.as_u16() {
            200 | 201 => {
                let answer: AccessToken = self.decode(&reply, "login answer")?;
                Token::from_answer(answer)
            }
            401 => {
                let e = classify(reply.status, &reply.body, Op::Other);
                Err(self.scrub(e.context("CSP authentication failed"), &[]))
            }
            _ => Err(self.scrub(classify(reply.status, &reply.body, Op::Other), &[])),
        }
    }

    /// A6/A7: the cached token, logging in first when there is none or it is about to expire.
    async fn token(&self) -> Result<String> {
        let mut slot = self.inner.token.lock().await;
        if let Some(t) = slot.as_ref().filter(|t| t.fresh()) {
            return Ok(t.value.clone());
        }
        let t = self.login().await?;
        let value = t.value.clone();
        *slot = Some(t);
        Ok(value)
    }

    /// A4/A5: replaces `stale` unless another request already did.
    async fn relogin(&self, stale: &str) -> Result<String> {
        let mut slot = self.inner.token.lock().await;
        if let Some(t) = slot.as_ref().filter(|t| t.value != stale && t.fresh()) {
            return Ok(t.value.clone());
        }
        *slot = None;
        let t = self.login().await?;
        let value = t.value.clone();
        *slot = Some(t);
        Ok(value)
    }

    /// An authenticated call; answers of any status come back except 401 (A3, A4).
    pub(crate) async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply> {
        let _write = (method != Method::GET).then(|| WriteMark::new(&self.inner.writes));
        let url = self.url(segments);
        let token = self.token().await?;
        let reply = self.send(&method, &url, query, body, Some(&token)).await?;
        if reply.status != StatusCode::UNAUTHORIZED {
            return Ok(reply);
        }
        debug!(%method, path = url.path(), "CSP token refused, logging in again");
        let token = self.relogin(&token).await?;
        let reply = self.send(&method, &url, query, body, Some(&token)).await?;
        if reply.status == StatusCode::UNAUTHORIZED {
            let e = classify(reply.status, &reply.body, Op::Other);
            return Err(self.scrub(e.context("CSP authentication failed"), &[]));
        }
        Ok(reply)
    }

    pub(crate) fn decode<T: DeserializeOwned>(&self, reply: &Reply, what: &str) -> Result<T> {
        serde_json::from_slice(&reply.body).map_err(|e| {
            self.scrub(
                Error::internal(format!("CSP sent an unreadable {what}: {e}")),
                &[],
            )
        })
    }

    /// Any 2xx passes (D24); anything else is classified.
    pub(crate) fn check(&self, reply: Reply, op: Op) -> Result<Reply> {
        if reply.status.is_success() {
            Ok(reply)
        } else {
            Err(self.scrub(classify(reply.status, &reply.body, op), &[]))
        }
    }

    /// GET of a by-id object where 404 means "gone".
    pub(crate) async fn get_opt<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        what: &str,
    ) -> Result<Option<T>> {
        let reply = self.call(Method::GET, segments, &[], None).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let reply = self.check(reply, Op::Other)?;
        self.decode(&reply, what).map(Some)
    }

    /// GET of a collection; accepts a bare object as a one-element list (D10).
    pub(crate) async fn list<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<Vec<T>> {
        let reply = self.call(Method::GET, segments, query, None).await?;
        let reply = self.check(reply, Op::Other)?;
        self.decode_list(&reply, what)
    }

    /// GET of a collection with a filter (not a name lookup): a 404 means the filter
    /// names nothing, which lists nothing.
    pub(crate) async fn list_filtered<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<Vec<T>> {
        let reply = self.call(Method::GET, segments, query, None).await?;
        if reply.status == StatusCode::NOT_FOUND && !query.is_empty() {
            return Ok(Vec::new());
        }
        let reply = self.check(reply, Op::Other)?;
        self.decode_list(&reply, what)
    }

    pub(crate) fn decode_list<T: DeserializeOwned>(
        &self,
        reply: &Reply,
        what: &str,
    ) -> Result<Vec<T>> {
        // An array or a single object, told apart by the first byte: an untagged enum would
        // first copy the whole answer into serde's buffer of generic values (for a listing
        // of 10,000 volumes, tens of MiB and most of the decoding time).
        match reply.body.iter().find(|b| !b.is_ascii_whitespace()) {
            None => Ok(Vec::new()),
            Some(b'{') => self.decode::<T>(reply, what).map(|item| vec![item]),
            Some(_) => self.decode::<Vec<T>>(reply, what),
        }
    }

    /// A lookup by name (B1, B6): 404 or no exact match → `None`; several exact → Internal.
    pub(crate) async fn lookup<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        name: &str,
        name_of: impl Fn(&T) -> Option<&str>,
        what: &str,
    ) -> Result<Option<T>> {
        let reply = self.call(Method::GET, segments, query, None).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let reply = self.check(reply, Op::Other)?;
        let items: Vec<T> = self.decode_list(&reply, what)?;
        pick_exact(items, name, name_of, what)
    }

    /// A call with a JSON body whose answer is decoded.
    pub(crate) async fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
        op: Op,
        what: &str,
    ) -> Result<T> {
        let body = serde_json::to_vec(body).expect("request bodies serialise");
        let reply = self.call(method, segments, &[], Some(&body)).await?;
        let reply = self.check(reply, op)?;
        self.decode(&reply, what)
    }
}

pub(crate) fn pick_exact<T>(
    items: Vec<T>,
    name: &str,
    name_of: impl Fn(&T) -> Option<&str>,
    what: &str,
) -> Result<Option<T>> {
    let mut exact: Vec<T> = items
        .into_iter()
        .filter(|i| name_of(i) == Some(name))
        .collect();
    match exact.len() {
        0 => Ok(None),
        1 => Ok(exact.pop()),
        n => Err(Error::internal(format!(
            "CSP returned {n} {what}s named '{name}'"
        ))),
    }
}

#[cfg(test)]
mod tests;
