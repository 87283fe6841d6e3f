//! What a conformance run is pointed at and how it behaves.

use std::fmt;
use std::time::Duration;

/// How long polled conditions (snapshot `ready_to_use`, background operations) may take.
pub const DEFAULT_POLL_LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct CheckOptions {
    /// Base URL without `/containers/v1`: `http://host:port` (service mode) or
    /// `https://array/csp` (direct mode).
    pub url: String,
    pub username: String,
    pub password: String,
    /// Sent as `array_ip` / `x-array-ip`: service mode only.
    pub array_ip: Option<String>,
    /// Access protocol to publish with: `iscsi` by default, `local` for the embedded CSP.
    pub protocol: String,
    /// Leave what the run created in place.
    pub keep: bool,
    /// Skip TLS certificate verification (direct mode against self-signed arrays).
    pub insecure: bool,
    pub poll_limit: Duration,
}

impl CheckOptions {
    /// Options with the defaults of the CLI: protocol `iscsi`, cleanup on, TLS verified.
    pub fn new(
        url: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        CheckOptions {
            url: url.into(),
            username: username.into(),
            password: password.into(),
            array_ip: None,
            protocol: "iscsi".into(),
            keep: false,
            insecure: false,
            poll_limit: DEFAULT_POLL_LIMIT,
        }
    }
}

// By hand, so that a debug print of the options never shows the password.
impl fmt::Debug for CheckOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckOptions")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &"***")
            .field("array_ip", &self.array_ip)
            .field("protocol", &self.protocol)
            .field("keep", &self.keep)
            .field("insecure", &self.insecure)
            .field("poll_limit", &self.poll_limit)
            .finish()
    }
}
