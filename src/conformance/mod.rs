//! `volbridge csp check`: the conformance checklist of csp-api.md §9 against any CSP.
//!
//! The checker speaks raw HTTP on purpose: the provider client hides exactly the statuses
//! and body shapes a conformance check has to judge. Everything it creates is named
//! `vbcheck-<8 hex>-…` and removed again at the end unless `keep` is set.

mod checks;
mod http;
mod options;
mod report;
mod verdict;

pub use options::{CheckOptions, DEFAULT_POLL_LIMIT};
pub use report::{CheckResult, Outcome, Report};

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
