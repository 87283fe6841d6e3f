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
                "the daemon did not answer in time",
            );
        }
        Error::unavailable(format!(
            "cannot reach the volbridge daemon at {} ({cause}); start it with `volbridge serve`, or point --socket / VOLBRIDGE_SOCKET at its socket",
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
