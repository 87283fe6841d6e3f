//! `volbridge csp check`: the conformance checklist of csp-api.md §9 against any CSP.
//!
//! The checker speaks raw HTTP on purpose: the provider client hides exactly the statuses
//! and body shapes a conformance check has to judge. Everything it creates is named
//! `vbcheck-<8 hex>-…` and removed again at the end unless `keep` is set.

mod checks;
mod http;
mod report;

pub use report::{CheckResult, Outcome, Report};

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

/// Runs every check; `on_result` is called as each check finishes (the CLI prints a line per
/// check). An error means the run could not start (bad URL, no HTTP client); an unreachable
/// or misbehaving CSP shows up as failed checks instead.
pub async fn run(
    opts: &CheckOptions,
    on_result: &mut (dyn FnMut(&CheckResult) + Send),
) -> crate::Result<Report> {
    checks::run(opts, on_result).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_can_be_spawned_and_hides_the_password() {
        fn is_send<T: Send>(_: &T) {}
        let opts = CheckOptions::new("http://127.0.0.1:1", "u", "hunter2-pw");
        let mut print = |_: &CheckResult| {};
        let fut = run(&opts, &mut print);
        is_send(&fut);
        assert!(!format!("{opts:?}").contains("hunter2-pw"));
    }
}
