//! The admin API client: hyper's HTTP/1.1 client connection over the daemon's unix socket,
//! on the current-thread runtime the command built. One connection per invocation, kept
//! alive across the command's requests.

use crate::errors::{DaemonError, Failure};
use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use volbridge_proto::admin::ApiError;

/// How often a missing or refusing socket is tried again while connecting.
const CONNECT_RETRY: Duration = Duration::from_millis(500);

/// A failed call: the daemon's own error answer, or a failure to get one.
#[derive(Debug)]
pub enum CallError {
    Daemon(DaemonError),
    Local(Failure),
}

impl From<Failure> for CallError {
    fn from(f: Failure) -> Self {
        CallError::Local(f)
    }
}

impl CallError {
    pub fn into_failure(self) -> Failure {
        match self {
            CallError::Daemon(e) => crate::errors::from_daemon(&e),
            CallError::Local(f) => f,
        }
    }
}

pub struct Daemon {
    socket: PathBuf,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// `x-request-id` of every answer, for the log line.
    pub request_ids: Vec<String>,
    /// `METHOD path status ms` per round trip (`log_level = "debug"`).
    pub timings: Vec<String>,
}

impl Daemon {
    pub fn new(socket: &Path) -> Daemon {
        Daemon {
            socket: socket.to_path_buf(),
            sender: None,
            request_ids: Vec::new(),
            timings: Vec::new(),
        }
    }

    /// Connects, retrying a missing socket or a refused connection every 500 ms within
    /// `budget` (a daemon that is starting); then says which socket and what to do.
    pub async fn connect(&mut self, budget: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + budget;
        loop {
            let error = match tokio::net::UnixStream::connect(&self.socket).await {
                Ok(stream) => return self.handshake(stream).await,
                Err(e) => e,
            };
            let retryable = matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            );
            let now = Instant::now();
            if retryable && now < deadline {
                tokio::time::sleep(CONNECT_RETRY.min(deadline - now)).await;
                continue;
            }
            return Err(self.unreachable(&error));
        }
    }

    async fn handshake(&mut self, stream: tokio::net::UnixStream) -> Result<(), Failure> {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| {
                Failure::new(
                    "node daemon unreachable",
                    format!("HTTP handshake on {} failed: {e}", self.socket.display()),
                )
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    fn unreachable(&self, e: &std::io::Error) -> Failure {
        let socket = self.socket.display();
        match e.kind() {
            std::io::ErrorKind::NotFound => Failure::new(
                "node daemon not running",
                format!("no socket at {socket}"),
            )
            .hint("start the volbridge service on this node (systemctl start volbridge, or volbridge serve)"),
            std::io::ErrorKind::ConnectionRefused => Failure::new(
                "node daemon not accepting connections",
                format!("at {socket} (connection refused)"),
            )
            .hint("check that the volbridge service is running (systemctl status volbridge)"),
            std::io::ErrorKind::PermissionDenied => Failure::new(
                "permission denied",
                format!("on {socket}"),
            )
            .hint("the FlexVolume driver must run as root"),
            _ => Failure::new("node daemon unreachable", format!("{socket}: {e}"))
                .hint("start the volbridge service on this node"),
        }
    }

    pub async fn get<T: DeserializeOwned>(&mut self, path: &str) -> Result<T, CallError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &mut self,
        path: &str,
        body: &B,
    ) -> Result<T, CallError> {
        let body = serde_json::to_vec(body).map_err(|e| {
            Failure::new("internal error", format!("cannot encode the request: {e}"))
        })?;
        self.call(Method::POST, path, Some(body)).await
    }

    async fn call<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, CallError> {
        let started = Instant::now();
        let sender = self.ready_sender().await?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, "volbridge")
            .header(
                header::USER_AGENT,
                concat!("volbridge-flex/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Failure::new("internal error", format!("bad request {path}: {e}")))?;
        let response = sender.send_request(request).await.map_err(|e| {
            self.sender = None;
            Failure::new(
                "node daemon unreachable",
                format!("the daemon closed the connection during {method} {path}: {e}"),
            )
            .hint("check the daemon log; kubelet will retry")
        })?;
        let status = response.status();
        if let Some(id) = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
        {
            self.request_ids.push(id.to_owned());
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                Failure::new(
                    "node daemon unreachable",
                    format!("the daemon's answer to {method} {path} was cut short: {e}"),
                )
            })?
            .to_bytes();
        self.timings.push(format!(
            "{method} {path} {} {:.1}ms",
            status.as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        ));
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                CallError::Local(
                    Failure::new(
                        "admin API mismatch",
                        format!("the daemon's answer to {method} {path} is not what this driver expects ({e})"),
                    )
                    .hint("install volbridge-flex from the same release as the daemon"),
                )
            });
        }
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(api)
                if api.error.kind == "NotFound"
                    && api.error.message.starts_with("no such admin API endpoint") =>
            {
                Err(CallError::Local(
                    Failure::new(
                        "admin API mismatch",
                        format!(
                            "the daemon does not serve {method} {}",
                            path.split('?').next().unwrap_or(path)
                        ),
                    )
                    .hint("install volbridge-flex from the same release as the daemon"),
                ))
            }
            Ok(api) => Err(CallError::Daemon(DaemonError {
                status: status.as_u16(),
                kind: api.error.kind,
                message: api.error.message,
                field: api.error.field,
            })),
            Err(_) => Err(CallError::Local(Failure::new(
                "internal error",
                format!(
                    "the daemon answered {status} to {method} {path}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            ))),
        }
    }

    /// The connection's sender, reconnected once if the daemon closed it.
    async fn ready_sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Failure> {
        let usable = match self.sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.sender = None;
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|e| self.unreachable(&e))?;
            self.handshake(stream).await?;
        }
        self.sender
            .as_mut()
            .ok_or_else(|| Failure::new("internal error", "no connection to the daemon"))
    }
}

pub use volbridge_proto::admin::path_segment as segment;

/// `/v1/volumes/<name>[/<action>]`.
pub fn volume_path(name: &str, action: Option<&str>) -> String {
    match action {
        Some(a) => format!("/v1/volumes/{}/{a}", segment(name)),
        None => format!("/v1/volumes/{}", segment(name)),
    }
}

/// `?backend=<name>` when a backend is named.
pub fn backend_query(backend: Option<&str>) -> String {
    match backend {
        Some(b) if !b.is_empty() => format!("?backend={}", segment(b)),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded() {
        assert_eq!(
            volume_path("pv-data", Some("mount")),
            "/v1/volumes/pv-data/mount"
        );
        assert_eq!(volume_path("a b", None), "/v1/volumes/a%20b");
        assert_eq!(
            backend_query(Some("admin@10.0.0.5")),
            "?backend=admin%4010.0.0.5"
        );
        assert_eq!(backend_query(None), "");
    }

    #[test]
    fn a_missing_socket_says_which_and_what_to_do() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut d = Daemon::new(Path::new("/nonexistent/volbridge-test.sock"));
        let started = Instant::now();
        let f = rt
            .block_on(d.connect(Duration::from_millis(600)))
            .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert_eq!(
            f.message(),
            "volbridge: node daemon not running: no socket at /nonexistent/volbridge-test.sock; start the volbridge service on this node (systemctl start volbridge, or volbridge serve)"
        );
    }
}
