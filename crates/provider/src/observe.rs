//! What the client reports about each CSP call, for whoever counts them (the daemon's
//! metrics). One observer per process, set once at start; none by default.

use std::sync::OnceLock;
use std::time::Duration;

/// One finished CSP call. `route` names the resource family with ids replaced by `{id}`;
/// `failure` is the 5xx status, `timeout` or `unreachable`, `None` for any other answer.
pub struct CspCall<'a> {
    pub backend: &'a str,
    pub method: &'a str,
    pub route: &'a str,
    pub failure: Option<&'a str>,
    pub elapsed: Duration,
}

pub type Observer = fn(&CspCall);

static OBSERVER: OnceLock<Observer> = OnceLock::new();

/// Sets the process's observer; a second call keeps the first.
pub fn set_observer(observer: Observer) {
    let _ = OBSERVER.set(observer);
}

pub(crate) fn csp_call(call: &CspCall) {
    if let Some(observe) = OBSERVER.get() {
        observe(call);
    }
}

/// The route label of a path below the API prefix: the second segment is an id.
pub fn csp_route(segments: &[&str]) -> String {
    segments
        .iter()
        .enumerate()
        .map(|(i, s)| if i == 1 { "{id}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_hide_ids() {
        assert_eq!(csp_route(&["volumes"]), "volumes");
        assert_eq!(csp_route(&["volumes", "abc123"]), "volumes/{id}");
        assert_eq!(
            csp_route(&["volumes", "abc", "actions", "publish"]),
            "volumes/{id}/actions/publish"
        );
    }
}
