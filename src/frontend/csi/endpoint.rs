//! Where a CSI server listens or a client connects: `unix:///path`, an absolute path, or
//! `tcp://host:port` (the CSI spec's two transports).

use crate::error::{Error, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use tonic::transport::{Channel, Endpoint as TonicEndpoint, Uri};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint> {
        let bad = |why: &str| Error::invalid("csi endpoint", format!("'{text}' {why}"));
        if let Some(rest) = text.strip_prefix("unix://") {
            // `unix:///run/x.sock` (empty authority) and `unix:/run/x.sock` both occur.
            return Self::unix(rest).ok_or_else(|| bad("is not unix:///absolute/path"));
        }
        if let Some(rest) = text.strip_prefix("unix:") {
            return Self::unix(rest).ok_or_else(|| bad("is not unix:///absolute/path"));
        }
        if let Some(rest) = text.strip_prefix("tcp://") {
            return rest
                .trim_end_matches('/')
                .parse()
                .map(Endpoint::Tcp)
                .map_err(|_| bad("is not tcp://ip:port"));
        }
        Self::unix(text)
            .ok_or_else(|| bad("is neither unix:///path, an absolute path nor tcp://ip:port"))
    }

    fn unix(path: &str) -> Option<Endpoint> {
        let path = PathBuf::from(path);
        let normal = path.is_absolute()
            && path
                .components()
                .all(|c| !matches!(c, std::path::Component::ParentDir));
        (normal && path.file_name().is_some()).then_some(Endpoint::Unix(path))
    }

    /// A client channel. The connection is made lazily, on the first call.
    pub fn channel(&self) -> Result<Channel> {
        match self {
            Endpoint::Tcp(addr) => Ok(TonicEndpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| Error::invalid("csi endpoint", e.to_string()))?
                .connect_lazy()),
            Endpoint::Unix(path) => {
                let path = path.clone();
                // The URI is not used for unix sockets, but the endpoint needs a valid one.
                let connector = tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                });
                Ok(TonicEndpoint::from_static("http://[::1]:50051")
                    .connect_with_connector_lazy(connector))
            }
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let sock = Endpoint::Unix("/run/csi/csi.sock".into());
        assert_eq!(Endpoint::parse("unix:///run/csi/csi.sock").unwrap(), sock);
        assert_eq!(Endpoint::parse("unix:/run/csi/csi.sock").unwrap(), sock);
        assert_eq!(Endpoint::parse("/run/csi/csi.sock").unwrap(), sock);
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:10000").unwrap(),
            Endpoint::Tcp("127.0.0.1:10000".parse().unwrap())
        );
        for bad in [
            "",
            "csi.sock",
            "unix://relative/x",
            "unix:///a/../b",
            "tcp://host",
            "/",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
