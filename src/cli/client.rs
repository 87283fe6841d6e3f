//! The admin API client over the daemon's unix socket (the CLI's only way in).

use crate::error::{Error, ErrorKind, Result};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use volbridge_proto::admin::ApiError;

pub struct AdminClient {
    http: reqwest::Client,
    socket: PathBuf,
}

impl AdminClient {
    pub fn new(socket: &Path) -> Result<AdminClient> {
        let http = crate::tls::client_builder()
            .unix_socket(socket.to_path_buf())
            // Clones and snapshot copies wait inside the daemon; leave room for them.
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| Error::internal(format!("cannot build the admin client: {e}")))?;
        Ok(AdminClient {
            http,
            socket: socket.to_path_buf(),
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&impl Serialize>,
    ) -> Result<reqwest::Response> {
        let mut req = self.http.request(method, format!("http://volbridge{path}"));
        let query: Vec<_> = query.iter().filter(|(_, v)| !v.is_empty()).collect();
        if !query.is_empty() {
            req = req.query(&query);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let response = req.send().await.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        Err(match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(api) => Error {
                field: api.error.field,
                ..Error::new(
                    api.error.kind.parse().unwrap_or(ErrorKind::Internal),
                    api.error.message,
                )
            },
            Err(_) => Error::internal(format!(
                "the daemon answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )),
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        if e.is_timeout() {
            return Error::new(
                ErrorKind::DeadlineExceeded,
                "the daemon did not answer within 600 s (a clone or snapshot may still be \
                 copying; `volbridge volume inspect` shows how far); run the same command \
                 again to keep waiting",
            );
        }
        // The HTTP client's error hides why the connection failed: ask the socket itself,
        // so that a running daemon the caller may not use is not mistaken for no daemon.
        match std::os::unix::net::UnixStream::connect(&self.socket) {
            Err(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                return permission_denied(&self.socket)
            }
            Err(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Error::unavailable(format!(
                    "no volbridge daemon listens on {} (the socket file is left from one that \
                     stopped); start it with `volbridge serve` (or `systemctl start volbridge`)",
                    self.socket.display()
                ))
            }
            _ => {}
        }
        Error::unavailable(format!(
            "cannot reach the volbridge daemon at {} ({cause}); start it with `volbridge serve` (or `systemctl start volbridge`), or point --socket / VOLBRIDGE_SOCKET at its socket",
            self.socket.display()
        ))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        decode(self.send(Method::GET, path, query, None::<&()>).await?).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: &B,
    ) -> Result<T> {
        decode(self.send(Method::POST, path, query, Some(body)).await?).await
    }

    pub async fn delete(&self, path: &str, query: &[(&str, &str)]) -> Result<()> {
        self.send(Method::DELETE, path, query, None::<&()>)
            .await
            .map(drop)
    }
}

async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Error::unavailable(format!("the daemon's answer was cut short: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::internal(format!(
            "the daemon's answer is not what this CLI expects ({e}); are both the same version?"
        ))
    })
}

pub use volbridge_proto::admin::path_segment as segment;

/// The daemon runs, but this user may not open its socket (mode 0660): say who may, and how
/// to become one of them.
fn permission_denied(socket: &Path) -> Error {
    use std::os::unix::fs::MetadataExt;
    let shown = socket.display();
    let Ok(meta) = std::fs::metadata(socket) else {
        return Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "permission denied: this user cannot reach {shown} (a directory on its path \
                 is closed to it); run the command with sudo, or as a user who can"
            ),
        );
    };
    let group = group_name(meta.gid()).unwrap_or_else(|| meta.gid().to_string());
    let owner = if meta.uid() == 0 {
        "root".to_owned()
    } else {
        format!("uid {}", meta.uid())
    };
    let fix = if meta.gid() == 0 {
        "run the command with sudo (e.g. sudo volbridge volume ls)".to_owned()
    } else {
        format!(
            "add yourself to group '{group}' (sudo usermod -aG {group} $USER, then log in \
             again), or run the command with sudo"
        )
    };
    Error::new(
        ErrorKind::FailedPrecondition,
        format!(
            "permission denied on {shown}: the daemon is running, but its socket (owner \
             {owner}, group {group}, mode {:04o}) admits only its owner and group; {fix}",
            meta.mode() & 0o7777
        ),
    )
}

/// A group's name from /etc/group.
fn group_name(gid: u32) -> Option<String> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?;
        (id.parse::<u32>().ok()? == gid).then(|| name.to_owned())
    })
}
