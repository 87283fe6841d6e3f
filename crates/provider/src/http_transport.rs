//! The CSP over HTTP(S): reqwest with rustls (ring), retrying refused connections (§1.3).

use std::sync::Once;
use std::time::{Duration, Instant};

use backon::Retryable;
use tracing::warn;
use volbridge_base::{Error, ErrorKind, Result};

use crate::credentials::Credentials;
use crate::transport::{log_call, Reply};
use crate::transport::{Exchange, ReplyFuture, Transport};

/// Installs the process-wide rustls crypto provider once; call before building a client.
/// ring rather than aws-lc-rs: it builds without cmake and keeps the binary small.
pub fn init_tls() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A second install (by an embedding program) is harmless: keep whichever came first.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A reqwest client builder with the crypto provider in place.
pub fn client_builder() -> reqwest::ClientBuilder {
    init_tls();
    reqwest::Client::builder()
}

pub(crate) struct HttpTransport(reqwest::Client);

impl HttpTransport {
    pub(crate) fn new(creds: &Credentials, timeout: Duration) -> Result<HttpTransport> {
        let mut builder = client_builder().timeout(timeout);
        if creds.base_url().starts_with("http://") {
            // Plain HTTP needs no roots; without this the platform verifier would insist on
            // loading the system's CA bundle (absent in minimal images) for nothing.
            builder = builder.tls_certs_only(std::iter::empty());
        } else if !creds.is_service_mode() {
            if creds.tls_insecure() {
                builder = builder.danger_accept_invalid_certs(true);
            }
            if let Some(pem) = creds.ca_bundle() {
                let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                    .map_err(|e| Error::invalid("caBundle", e.to_string()))?;
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(HttpTransport(http))
    }
}

fn transport_error(e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::new(
            ErrorKind::DeadlineExceeded,
            format!("CSP did not answer in time: {e}"),
        )
    } else if e.is_connect() {
        Error::unavailable(format!("cannot connect to the CSP: {e}"))
    } else {
        Error::unavailable(format!("CSP request failed: {e}"))
    }
}

impl Transport for HttpTransport {
    fn send<'a>(&'a self, x: Exchange<'a>) -> ReplyFuture<'a> {
        Box::pin(async move {
            let x = &x;
            let attempt = || async move {
                let _permit = x.limit.acquire().await.expect("the limit is never closed");
                let mut req = self
                    .0
                    .request(x.method.clone(), x.url.clone())
                    .headers(x.headers.clone());
                if !x.query.is_empty() {
                    req = req.query(x.query);
                }
                if let Some(body) = x.body {
                    req = req.body(body.to_vec());
                }
                let start = Instant::now();
                let result = async {
                    let resp = req.send().await?;
                    let status = resp.status();
                    let body = resp.bytes().await?.to_vec();
                    Ok::<_, reqwest::Error>(Reply { status, body })
                }
                .await;
                log_call(x.method, x.url, start, result.as_ref().map(|r| r.status));
                result
            };
            attempt
                .retry(x.retry_delays.iter().copied())
                .when(|e: &reqwest::Error| e.is_connect() && !e.is_timeout())
                .notify(|e, delay| warn!(error = %e, ?delay, "CSP unreachable, retrying"))
                .await
                .map_err(transport_error)
        })
    }
}
