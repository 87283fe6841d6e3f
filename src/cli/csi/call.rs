//! One connection to a CSI endpoint, and one way to make a call: a time limit, a redacted
//! debug line, and a `tonic::Status` turned into the crate's error.

use super::convert::{scrub, Secrets};
use crate::error::{Error, ErrorKind, Result};
use crate::frontend::csi::Endpoint;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Status};
use volbridge_proto::csi::{
    controller_client::ControllerClient, group_controller_client::GroupControllerClient,
    identity_client::IdentityClient, node_client::NodeClient,
};

pub struct Conn {
    endpoint: Endpoint,
    channel: Channel,
    timeout: Duration,
}

impl Conn {
    /// Parses the endpoint; the connection itself is made by the first call.
    pub fn open(endpoint: Option<&str>, timeout: Duration) -> Result<Conn> {
        let text = endpoint.filter(|e| !e.trim().is_empty()).ok_or_else(|| {
            Error::invalid(
                "--endpoint",
                "no CSI endpoint: pass --endpoint unix:///path/csi.sock (or set CSI_ENDPOINT)",
            )
        })?;
        let endpoint = Endpoint::parse(text.trim())?;
        let channel = endpoint.channel()?;
        Ok(Conn {
            endpoint,
            channel,
            timeout,
        })
    }

    pub fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel.clone())
    }

    pub fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel.clone())
    }

    pub fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel.clone())
    }

    pub fn group(&self) -> GroupControllerClient<Channel> {
        GroupControllerClient::new(self.channel.clone())
    }

    /// Makes one call: `rpc` is the method's name (`CreateVolume`), `send` the client method.
    /// The request is logged at debug level with its secrets redacted; the call is bounded
    /// by the timeout (told to the server as `grpc-timeout` and enforced here too).
    pub async fn call<Req, Resp, F, Fut>(&self, rpc: &str, req: Req, send: F) -> Result<Resp>
    where
        Req: Secrets + Debug,
        F: FnOnce(tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, Status>>,
    {
        let secrets = req.secret_values();
        tracing::debug!(rpc, endpoint = %self.endpoint, request = ?req.redacted(), "CSI call");
        let mut request = tonic::Request::new(req);
        request.set_timeout(self.timeout);
        let start = std::time::Instant::now();
        match tokio::time::timeout(self.timeout, send(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            // A tonic server answers an expired grpc-timeout with CANCELLED; it may beat our
            // own timer by a hair.
            Ok(Err(status))
                if status.code() == Code::Cancelled && start.elapsed() >= self.timeout =>
            {
                Err(self.deadline_error(rpc))
            }
            Ok(Err(status)) => Err(self.status_error(rpc, &status, &secrets)),
            Err(_) => Err(self.deadline_error(rpc)),
        }
    }

    fn deadline_error(&self, rpc: &str) -> Error {
        Error::new(
            ErrorKind::DeadlineExceeded,
            format!(
                "{rpc}: DeadlineExceeded: no answer from {} within {}; raise --timeout",
                self.endpoint,
                humantime::format_duration(self.timeout)
            ),
        )
    }

    fn status_error(&self, rpc: &str, status: &Status, secrets: &[String]) -> Error {
        let mut e = status_error(rpc, status, secrets);
        // Transport failures (nothing listening, connection refused) carry their cause as
        // the status's source; the plugin's own errors do not.
        if status.code() == Code::Unavailable && std::error::Error::source(status).is_some() {
            e.message
                .push_str(&format!(" (is a CSI plugin serving {}?)", self.endpoint));
        }
        e
    }
}

/// The error kind of a gRPC code; codes with no kind of their own are Internal.
pub fn kind(code: Code) -> ErrorKind {
    match code {
        Code::InvalidArgument => ErrorKind::InvalidArgument,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::Aborted => ErrorKind::Aborted,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        Code::OutOfRange => ErrorKind::OutOfRange,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        Code::Unimplemented => ErrorKind::Unimplemented,
        _ => ErrorKind::Internal,
    }
}

/// `"<rpc>: <Code>: <message>"` on one line, secret values scrubbed; the root cause of a
/// transport failure is added when the message does not already say it.
pub fn status_error(rpc: &str, status: &Status, secrets: &[String]) -> Error {
    let mut message = status.message().to_owned();
    let mut root = std::error::Error::source(status);
    while let Some(next) = root.and_then(|e| e.source()) {
        root = Some(next);
    }
    if let Some(cause) = root.map(|e| e.to_string()) {
        if message.is_empty() {
            message = cause;
        } else if !message.contains(&cause) {
            message = format!("{message}: {cause}");
        }
    }
    let message = scrub(&message, secrets)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let message = if message.is_empty() {
        "(no message)".to_owned()
    } else {
        message
    };
    Error::new(
        kind(status.code()),
        format!("{rpc}: {:?}: {message}", status.code()),
    )
}
